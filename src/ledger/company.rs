//! One company's statement: its spend over a day range per key (departed
//! keys included, with how they left) and per model.

use std::collections::HashMap;

use chrono::NaiveDate;
use rusqlite::{Connection, OptionalExtension as _};

use super::names::Names;
use super::range::oldest_kept;
use super::range::{day_from_number, day_number, DayRange};
use super::statement::{
    last_past_day, CompanyStatement, Departure, KeyLine, ModelLine, PeriodStatus, Spend,
};
use super::status::{load_coverage, Statuses};
use super::{Failure, Ledger, LedgerError};

impl Ledger {
    /// One company's spend over `range` per key (departed keys included) and
    /// per model; `None` when the ledger has never seen the company.
    pub fn company_statement(
        &self,
        range: DayRange,
        company: &str,
        today: NaiveDate,
    ) -> Result<Option<CompanyStatement>, LedgerError> {
        let oldest = day_number(oldest_kept(today, self.retention_days));
        self.read(|conn, names| {
            let Some(id) = names.find_company(company) else {
                return Ok(None);
            };
            company_statement(conn, names, range, id, today, oldest).map(Some)
        })
    }
}

pub(crate) fn company_statement(
    conn: &Connection,
    names: &Names,
    range: DayRange,
    company: i64,
    today: NaiveDate,
    oldest: i64,
) -> Result<CompanyStatement, Failure> {
    let (from, to) = (day_number(range.from), day_number(range.to));
    let Sums {
        mut per_key,
        per_model,
        total,
    } = sums(conn, from, to, company)?;
    let keys = load_coverage(conn)?;
    let last = last_past_day(range, today);
    let st = Statuses::of(&keys, from, last, oldest, Some(company));
    let days = st.companies.get(&company);
    for key in days.into_iter().flat_map(|c| c.keys.iter()) {
        per_key.entry(*key).or_default();
    }
    let held_days = st.settled_days(None);
    let mut key_lines = Vec::with_capacity(per_key.len());
    for (key, spend) in per_key {
        let unsettled = days
            .and_then(|c| c.key_unsettled.get(&key))
            .copied()
            .unwrap_or(0);
        let days_settled = held_days.saturating_sub(unsettled);
        if let Some(line) = key_line(
            conn,
            key,
            spend,
            days_settled,
            PeriodStatus::of(range, today, days_settled),
        )? {
            key_lines.push(line);
        }
    }
    key_lines.sort_by(|a, b| {
        b.spend
            .usage
            .cmp(&a.spend.usage)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.hash.cmp(&b.hash))
    });
    let mut models: Vec<ModelLine> = per_model
        .into_iter()
        .map(|(id, spend)| ModelLine {
            model: names.model(id).to_string(),
            spend,
        })
        .collect();
    models.sort_by(|a, b| {
        b.spend
            .usage
            .cmp(&a.spend.usage)
            .then_with(|| a.model.cmp(&b.model))
    });
    let days_settled = st.company_settled(company);
    Ok(CompanyStatement {
        company: names.company(company).to_string(),
        range,
        status: PeriodStatus::of(range, today, days_settled),
        days_settled,
        spend: total,
        keys: key_lines,
        models,
    })
}

/// The company's spend rows of `from..=to` added up per key, per model and in all.
#[derive(Default)]
struct Sums {
    per_key: HashMap<i64, Spend>,
    per_model: HashMap<i64, Spend>,
    total: Spend,
}

fn sums(conn: &Connection, from: i64, to: i64, company: i64) -> rusqlite::Result<Sums> {
    let mut out = Sums::default();
    let mut stmt = conn.prepare_cached(
        "SELECT key_id, model_id, usage_nanos, byok_nanos, requests, prompt_tokens, completion_tokens, \
         reasoning_tokens FROM spend WHERE day BETWEEN ?1 AND ?2 AND company_id = ?3",
    )?;
    let mut rows = stmt.query([from, to, company])?;
    while let Some(r) = rows.next()? {
        let mut one = Spend::default();
        one.add_columns(r, 2)?;
        out.per_key.entry(r.get(0)?).or_default().add(&one);
        out.per_model.entry(r.get(1)?).or_default().add(&one);
        out.total.add(&one);
    }
    Ok(out)
}

/// A key's line, with its metadata; `None` if the key row is gone (pruned).
fn key_line(
    conn: &Connection,
    key: i64,
    spend: Spend,
    days_settled: u32,
    status: PeriodStatus,
) -> rusqlite::Result<Option<KeyLine>> {
    conn.prepare_cached(
        "SELECT hash, name, label, workspace, creator, departed_on, departed_reason FROM keys WHERE id = ?1",
    )?
    .query_row([key], |r| {
        let departed_on: Option<i64> = r.get(5)?;
        let reason: Option<String> = r.get(6)?;
        Ok(KeyLine {
            hash: r.get(0)?,
            name: r.get(1)?,
            label: r.get(2)?,
            workspace: r.get(3)?,
            creator: r.get(4)?,
            departed: departed_on.and_then(day_from_number).map(|on| Departure {
                on,
                reason: reason.unwrap_or_else(|| "deleted".to_string()),
            }),
            spend,
            days_settled,
            status,
        })
    })
    .optional()
}
