//! Recording `/activity` reads: each key's days (per model), their status
//! and company, restatements counted; and the account's own days.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rusqlite::{params, Connection, Transaction};

use super::coverage::{paint, run_at, Run};
use super::names::{find_key, Names};
use super::range::day_number;
use super::{get_meta, set_meta, Failure, Ledger, LedgerError};
use crate::activity::{ActivityRow, HISTORY_DAYS, REREAD_AFTER_HOURS};
use crate::money::Usd;

/// One answered `GET /activity?api_key_hash=…`: the rows of the 30 days
/// before `today`, read at `read_at`, for a key attributed to `company` now.
#[derive(Debug, Clone, Copy)]
pub struct KeyRead<'a> {
    pub hash: &'a str,
    pub company: &'a str,
    /// The UTC day the history was read for (its window ends the day before).
    pub today: NaiveDate,
    pub read_at: DateTime<Utc>,
    pub rows: &'a [ActivityRow],
}

/// One answered undated `GET /activity` for the whole account.
#[derive(Debug, Clone, Copy)]
pub struct AccountRead<'a> {
    pub today: NaiveDate,
    pub read_at: DateTime<Utc>,
    pub rows: &'a [ActivityRow],
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Reads recorded.
    pub keys: usize,
    /// Key-days (or account days) whose rows were written: new or changed.
    pub days_written: usize,
    /// Settled days whose figures changed (counted in `restated_days_total`).
    pub restated_days: usize,
    /// Reads refused whole (a row without a date or a finite usage, or sums
    /// over the 64-bit range), by key hash: nothing of them was written.
    pub refused: Vec<String>,
}

/// One model's figures for one key and day, as stored (nano-dollars, counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    pub usage: i64,
    pub byok: i64,
    pub requests: i64,
    pub prompt: i64,
    pub completion: i64,
    pub reasoning: i64,
}

impl Figures {
    fn of(row: &ActivityRow) -> Option<Figures> {
        let usd = |v: f64| Usd::from_f64(v).and_then(|u| i64::try_from(u.nanos()).ok());
        Some(Figures {
            usage: usd(row.usage?)?,
            byok: usd(row.byok_usage_inference)?,
            requests: i64::try_from(row.requests).ok()?,
            prompt: i64::try_from(row.prompt_tokens).ok()?,
            completion: i64::try_from(row.completion_tokens).ok()?,
            reasoning: i64::try_from(row.reasoning_tokens).ok()?,
        })
    }

    fn checked_add(self, o: Figures) -> Option<Figures> {
        Some(Figures {
            usage: self.usage.checked_add(o.usage)?,
            byok: self.byok.checked_add(o.byok)?,
            requests: self.requests.checked_add(o.requests)?,
            prompt: self.prompt.checked_add(o.prompt)?,
            completion: self.completion.checked_add(o.completion)?,
            reasoning: self.reasoning.checked_add(o.reasoning)?,
        })
    }

    fn is_zero(&self) -> bool {
        *self == Figures::default()
    }
}

/// A stored spend row of one key-day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DayRow {
    model: i64,
    company: i64,
    figures: Figures,
}

/// The rows of one read by day and model (endpoints summed), for days
/// `from..=to` only; `None` when a row is unreadable or a sum overflows.
fn by_day(
    rows: &[ActivityRow],
    from: i64,
    to: i64,
) -> Option<BTreeMap<i64, BTreeMap<&str, Figures>>> {
    let mut days: BTreeMap<i64, BTreeMap<&str, Figures>> = BTreeMap::new();
    for row in rows {
        let day = day_number(row.day()?);
        let figures = Figures::of(row)?;
        if day < from || day > to {
            continue;
        }
        let slot = days
            .entry(day)
            .or_default()
            .entry(row.model.as_str())
            .or_default();
        *slot = slot.checked_add(figures)?;
    }
    Some(days)
}

/// The last day a read at `read_at` settles: days that ended at least
/// [`REREAD_AFTER_HOURS`] before it.
pub(crate) fn settled_through(read_at: DateTime<Utc>) -> i64 {
    day_number((read_at - Duration::hours(REREAD_AFTER_HOURS)).date_naive()) - 1
}

/// The window a read for `today` covers: the [`HISTORY_DAYS`] days before it.
pub(crate) fn window(today: NaiveDate) -> (i64, i64) {
    let today = day_number(today);
    (today - HISTORY_DAYS, today - 1)
}

impl Ledger {
    /// Records key reads in one transaction: for each day of each read's
    /// window, the rows replace what the ledger had when they differ (a
    /// settled day that changes is a restatement: counted and logged), and
    /// the key's coverage gains the window. Days keep the company they were
    /// first recorded with. A read with an unreadable row is refused whole.
    pub fn record_reads(&self, reads: &[KeyRead<'_>]) -> Result<WriteSummary, LedgerError> {
        self.write(|tx, names| {
            let mut summary = WriteSummary::default();
            for read in reads {
                record_key(tx, names, read, &mut summary)?;
            }
            add_restated(tx, summary.restated_days)?;
            Ok(summary)
        })
    }

    /// Records the account's own spend per day (requests and amounts summed
    /// over models), with the same settling and restatement rules.
    pub fn record_account(&self, read: AccountRead<'_>) -> Result<WriteSummary, LedgerError> {
        self.write(|tx, _| {
            let mut summary = WriteSummary::default();
            let (from, to) = window(read.today);
            let Some(days) = by_day(read.rows, from, to) else {
                summary.refused.push("(account)".to_string());
                return Ok(summary);
            };
            let settled = settled_through(read.read_at);
            for day in from..=to {
                let total = days
                    .get(&day)
                    .into_iter()
                    .flat_map(|models| models.values())
                    .try_fold(Figures::default(), |sum, f| sum.checked_add(*f))
                    .ok_or_else(|| {
                        LedgerError::overflow(format!("the account's spend on day {day}"))
                    })?;
                record_account_day(tx, day, day <= settled, total, &mut summary)?;
            }
            summary.keys = 1;
            add_restated(tx, summary.restated_days)?;
            Ok(summary)
        })
    }
}

fn add_restated(tx: &Transaction<'_>, days: usize) -> rusqlite::Result<()> {
    if days == 0 {
        return Ok(());
    }
    let before = get_meta(tx, "restated_days")?.unwrap_or(0);
    let days = i64::try_from(days).unwrap_or(i64::MAX);
    set_meta(tx, "restated_days", before.saturating_add(days))
}

/// Records one key's read (see [`Ledger::record_reads`]).
fn record_key(
    tx: &Transaction<'_>,
    names: &mut Names,
    read: &KeyRead<'_>,
    summary: &mut WriteSummary,
) -> Result<(), Failure> {
    let (from, to) = window(read.today);
    let Some(days) = by_day(read.rows, from, to) else {
        tracing::warn!(
            key = read.hash,
            "ledger: activity read refused (unreadable row or overflow)"
        );
        summary.refused.push(read.hash.to_string());
        return Ok(());
    };
    let company = names.company_id(tx, read.company)?;
    let key = key_for_read(
        tx,
        read.hash,
        company,
        day_number(read.read_at.date_naive()),
    )?;
    let old_runs = load_runs(tx, key)?;
    let runs = paint(&old_runs, from, to, settled_through(read.read_at), company);
    for day in from..=to {
        let day_company = run_at(&runs, day).map_or(company, |r| r.company);
        let mut rows = Vec::new();
        for (model, figures) in days.get(&day).into_iter().flatten() {
            if !figures.is_zero() {
                let model = names.model_id(tx, model)?;
                rows.push(DayRow {
                    model,
                    company: day_company,
                    figures: *figures,
                });
            }
        }
        rows.sort_by_key(|r| r.model);
        let old = load_day(tx, day, key)?;
        if old == rows {
            continue;
        }
        if run_at(&old_runs, day).is_some_and(|r| r.settled) {
            summary.restated_days += 1;
            tracing::info!(
                key = read.hash,
                day,
                "ledger: settled day restated by a re-read; replaced"
            );
        }
        replace_day(tx, day, key, &rows)?;
        summary.days_written += 1;
    }
    if runs != old_runs {
        store_runs(tx, key, &runs)?;
    }
    summary.keys += 1;
    Ok(())
}

/// The key's id, adding a bare key (metadata comes with the next listing).
fn key_for_read(conn: &Connection, hash: &str, company: i64, today: i64) -> rusqlite::Result<i64> {
    if let Some(id) = find_key(conn, hash)? {
        return Ok(id);
    }
    conn.prepare_cached(
        "INSERT INTO keys (hash, company_id, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
    )?
    .execute(params![hash, company, today])?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn load_runs(conn: &Connection, key: i64) -> rusqlite::Result<Vec<Run>> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_day, last_day, settled, company_id FROM coverage WHERE key_id = ?1 ORDER BY first_day",
    )?;
    let rows = stmt.query_map([key], |r| {
        Ok(Run {
            first: r.get(0)?,
            last: r.get(1)?,
            settled: r.get(2)?,
            company: r.get(3)?,
        })
    })?;
    rows.collect()
}

fn store_runs(conn: &Connection, key: i64, runs: &[Run]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM coverage WHERE key_id = ?1")?
        .execute([key])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO coverage (key_id, first_day, last_day, settled, company_id) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for r in runs {
        insert.execute(params![key, r.first, r.last, r.settled, r.company])?;
    }
    Ok(())
}

fn load_day(conn: &Connection, day: i64, key: i64) -> rusqlite::Result<Vec<DayRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT model_id, company_id, usage_nanos, byok_nanos, requests, prompt_tokens, completion_tokens, \
         reasoning_tokens FROM spend WHERE day = ?1 AND key_id = ?2 ORDER BY model_id",
    )?;
    let rows = stmt.query_map([day, key], |r| {
        Ok(DayRow {
            model: r.get(0)?,
            company: r.get(1)?,
            figures: Figures {
                usage: r.get(2)?,
                byok: r.get(3)?,
                requests: r.get(4)?,
                prompt: r.get(5)?,
                completion: r.get(6)?,
                reasoning: r.get(7)?,
            },
        })
    })?;
    rows.collect()
}

fn replace_day(conn: &Connection, day: i64, key: i64, rows: &[DayRow]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM spend WHERE day = ?1 AND key_id = ?2")?
        .execute([day, key])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO spend (day, key_id, model_id, company_id, usage_nanos, byok_nanos, requests, \
         prompt_tokens, completion_tokens, reasoning_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for r in rows {
        let f = r.figures;
        insert.execute(params![
            day,
            key,
            r.model,
            r.company,
            f.usage,
            f.byok,
            f.requests,
            f.prompt,
            f.completion,
            f.reasoning
        ])?;
    }
    Ok(())
}

/// Upserts one account day; a settled day stays settled, and a change to it is a restatement.
fn record_account_day(
    tx: &Transaction<'_>,
    day: i64,
    settled: bool,
    total: Figures,
    summary: &mut WriteSummary,
) -> rusqlite::Result<()> {
    use rusqlite::OptionalExtension as _;
    let old: Option<(bool, i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT settled, usage_nanos, byok_nanos, requests FROM account_days WHERE day = ?1",
        )?
        .query_row([day], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let figures = (total.usage, total.byok, total.requests);
    if let Some((was_settled, usage, byok, requests)) = old {
        let same = (usage, byok, requests) == figures;
        if same && (was_settled || !settled) {
            return Ok(());
        }
        if was_settled && !same {
            summary.restated_days += 1;
            tracing::info!(
                day,
                "ledger: settled account day restated by a re-read; replaced"
            );
        }
    }
    let settled = settled || old.is_some_and(|o| o.0);
    tx.prepare_cached(
        "INSERT INTO account_days (day, settled, usage_nanos, byok_nanos, requests) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (day) DO UPDATE SET settled = ?2, usage_nanos = ?3, byok_nanos = ?4, requests = ?5",
    )?
    .execute(params![day, settled, total.usage, total.byok, total.requests])?;
    summary.days_written += 1;
    Ok(())
}
