//! Statements: each company's exact spend over any day range (a month, or
//! `from..=to`), with its keys, days settled and status, the account's own
//! spend to tie it to; one company's spend per key and per model; the months
//! the ledger holds.

use std::collections::{HashMap, HashSet};

use chrono::{Duration, NaiveDate};
use rusqlite::{Connection, Row};

use super::names::Names;
use super::range::{day_from_number, day_number, oldest_kept, DayRange, Month};
use super::status::{load_coverage, Statuses};
use super::{Failure, Ledger, LedgerError};
use crate::money::Usd;

/// Spend added up exactly: nano-dollars in `i128`, counts saturating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub usage: Usd,
    pub byok_usage: Usd,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Spend {
    /// Adds a stored row read from `columns` (usage, byok, requests, prompt, completion, reasoning).
    pub(crate) fn add_columns(&mut self, row: &Row<'_>, first: usize) -> rusqlite::Result<()> {
        let count = |i: usize| -> rusqlite::Result<u64> {
            Ok(u64::try_from(row.get::<_, i64>(first + i)?).unwrap_or(0))
        };
        let usage = Usd::from_nanos(row.get::<_, i64>(first)?.into());
        let byok = Usd::from_nanos(row.get::<_, i64>(first + 1)?.into());
        self.add(&Spend {
            usage,
            byok_usage: byok,
            requests: count(2)?,
            prompt_tokens: count(3)?,
            completion_tokens: count(4)?,
            reasoning_tokens: count(5)?,
        });
        Ok(())
    }

    /// `i128` nano-dollars hold 1.7e20 dollars: sums of `i64` rows cannot overflow them.
    pub fn add(&mut self, o: &Spend) {
        self.usage = Usd::from_nanos(self.usage.nanos().saturating_add(o.usage.nanos()));
        self.byok_usage =
            Usd::from_nanos(self.byok_usage.nanos().saturating_add(o.byok_usage.nanos()));
        self.requests = self.requests.saturating_add(o.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
    }
}

/// Where a period stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeriodStatus {
    /// It reaches today or later: days are still being spent.
    Open,
    /// Over, but some day is not settled yet (or not held).
    Provisional,
    /// Every day settled: the figures will not change.
    Final,
}

impl PeriodStatus {
    pub fn of(range: DayRange, today: NaiveDate, days_settled: u32) -> PeriodStatus {
        if range.to >= today {
            PeriodStatus::Open
        } else if days_settled >= range.len() {
            PeriodStatus::Final
        } else {
            PeriodStatus::Provisional
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeriodStatus::Open => "open",
            PeriodStatus::Provisional => "provisional",
            PeriodStatus::Final => "final",
        }
    }
}

/// One company's line of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyLine {
    pub company: String,
    pub spend: Spend,
    /// Keys with a day of the period attributed to the company (departed ones included).
    pub keys: u64,
    pub days_settled: u32,
    pub status: PeriodStatus,
}

/// The account's own spend over the period (undated `/activity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountLine {
    pub usage: Usd,
    pub byok_usage: Usd,
    pub requests: u64,
    /// Days of the period the ledger has the account's figure for, and of them settled.
    pub days_read: u32,
    pub days_settled: u32,
}

/// Every company's spend over a day range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub range: DayRange,
    pub status: PeriodStatus,
    /// Days on which every key of the account is settled.
    pub days_settled: u32,
    /// Companies by name (the unassigned company among them, under its name).
    pub companies: Vec<CompanyLine>,
    pub total: Spend,
    pub total_keys: u64,
    pub account: AccountLine,
}

impl Statement {
    /// The account's spend that no key's days explain (keys the ledger never
    /// saw, days it could not read), when the account's figure is known for
    /// every day of the period: what makes the statement tie to the bill.
    pub fn unattributed(&self) -> Option<Usd> {
        (self.account.days_read >= self.range.len()).then(|| {
            Usd::from_nanos(
                self.account
                    .usage
                    .nanos()
                    .saturating_sub(self.total.usage.nanos()),
            )
        })
    }
}

/// How a key left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    pub on: NaiveDate,
    /// `deleted` or `expired`.
    pub reason: String,
}

/// One key's line of a company statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    pub hash: String,
    pub name: String,
    pub label: String,
    pub workspace: Option<String>,
    pub creator: Option<String>,
    pub departed: Option<Departure>,
    pub spend: Spend,
    pub days_settled: u32,
    pub status: PeriodStatus,
}

/// One model's line of a company statement (`(listing figure)` for listing days).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLine {
    pub model: String,
    pub spend: Spend,
}

/// One company's spend over a day range, per key and per model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyStatement {
    pub company: String,
    pub range: DayRange,
    pub status: PeriodStatus,
    pub days_settled: u32,
    pub spend: Spend,
    /// Most spend first.
    pub keys: Vec<KeyLine>,
    /// Most spend first.
    pub models: Vec<ModelLine>,
}

/// A month the ledger holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthStatus {
    pub month: Month,
    pub status: PeriodStatus,
    pub days_settled: u32,
}

impl Ledger {
    /// Every company's exact spend over `range` (spend from every day held,
    /// settled or not: `status` and `days_settled` say how far it is final).
    pub fn statement(&self, range: DayRange, today: NaiveDate) -> Result<Statement, LedgerError> {
        let oldest = day_number(oldest_kept(today, self.retention_days));
        self.read(|conn, names| statement(conn, names, range, today, oldest))
    }

    /// The months the ledger holds, newest first, each with its status.
    pub fn months(&self, today: NaiveDate) -> Result<Vec<MonthStatus>, LedgerError> {
        let oldest = day_number(oldest_kept(today, self.retention_days));
        self.read(|conn, _| {
            let keys = load_coverage(conn)?;
            let yesterday = day_number(today) - 1;
            let st = Statuses::of(&keys, oldest, yesterday, oldest, None);
            let Some(first) = st.held_from.and_then(day_from_number) else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            let mut month = Month::of(first);
            while month <= Month::of(today) {
                let range = month.days();
                let (from, to) = (
                    day_number(range.from) - st.from,
                    day_number(range.to).min(yesterday) - st.from,
                );
                let unsettled = |i: i64| {
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| st.unsettled.get(i))
                        .copied()
                        .unwrap_or(true)
                };
                let held = |i: i64| st.from + i >= st.held_from.unwrap_or(i64::MAX);
                let days_settled = (from..=to).filter(|i| held(*i) && !unsettled(*i)).count();
                let days_settled = u32::try_from(days_settled).unwrap_or(0);
                out.push(MonthStatus {
                    month,
                    status: PeriodStatus::of(range, today, days_settled),
                    days_settled,
                });
                month = month.next();
            }
            out.reverse();
            Ok(out)
        })
    }

    /// One company's spend per day over `range` (for its chart): `None` for
    /// days before the ledger's first day.
    pub fn company_daily(
        &self,
        company: &str,
        range: DayRange,
    ) -> Result<Vec<(NaiveDate, Option<Usd>)>, LedgerError> {
        self.read(|conn, names| {
            let first: Option<i64> = conn.query_row(
                "SELECT min(d) FROM (SELECT min(first_day) AS d FROM coverage UNION ALL SELECT min(first_seen) FROM keys)",
                [],
                |r| r.get(0),
            )?;
            let mut sums: HashMap<i64, i128> = HashMap::new();
            if let Some(id) = names.find_company(company) {
                let mut stmt = conn.prepare_cached(
                    "SELECT day, usage_nanos FROM spend WHERE day BETWEEN ?1 AND ?2 AND company_id = ?3",
                )?;
                let mut rows = stmt.query([day_number(range.from), day_number(range.to), id])?;
                while let Some(r) = rows.next()? {
                    *sums.entry(r.get(0)?).or_default() += i128::from(r.get::<_, i64>(1)?);
                }
            }
            Ok(range
                .iter()
                .map(|d| {
                    let n = day_number(d);
                    let held = first.is_some_and(|f| n >= f);
                    (d, held.then(|| Usd::from_nanos(sums.get(&n).copied().unwrap_or(0))))
                })
                .collect())
        })
    }
}

/// The last past day of `range` on `today`.
pub(crate) fn last_past_day(range: DayRange, today: NaiveDate) -> i64 {
    day_number(range.to.min(today - Duration::days(1)))
}

fn statement(
    conn: &Connection,
    names: &Names,
    range: DayRange,
    today: NaiveDate,
    oldest: i64,
) -> Result<Statement, Failure> {
    let (from, to) = (day_number(range.from), day_number(range.to));
    let mut spend: HashMap<i64, (Spend, HashSet<i64>)> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT company_id, key_id, usage_nanos, byok_nanos, requests, prompt_tokens, completion_tokens, \
         reasoning_tokens FROM spend WHERE day BETWEEN ?1 AND ?2",
    )?;
    let mut rows = stmt.query([from, to])?;
    while let Some(r) = rows.next()? {
        let entry = spend.entry(r.get(0)?).or_default();
        entry.0.add_columns(r, 2)?;
        entry.1.insert(r.get(1)?);
    }
    let keys = load_coverage(conn)?;
    let st = Statuses::of(&keys, from, last_past_day(range, today), oldest, None);
    let mut ids: HashSet<i64> = spend.keys().copied().collect();
    ids.extend(st.companies.keys().copied());
    let mut total = Spend::default();
    let mut all_keys = HashSet::new();
    let mut companies: Vec<CompanyLine> = ids
        .into_iter()
        .map(|id| {
            let (money, mut key_ids) = spend.remove(&id).unwrap_or_default();
            key_ids.extend(
                st.companies
                    .get(&id)
                    .into_iter()
                    .flat_map(|c| c.keys.iter().copied()),
            );
            total.add(&money);
            all_keys.extend(key_ids.iter().copied());
            let days_settled = st.company_settled(id);
            CompanyLine {
                company: names.company(id).to_string(),
                spend: money,
                keys: key_ids.len() as u64,
                days_settled,
                status: PeriodStatus::of(range, today, days_settled),
            }
        })
        .collect();
    companies.sort_by(|a, b| a.company.cmp(&b.company));
    let days_settled = st.account_settled();
    Ok(Statement {
        range,
        status: PeriodStatus::of(range, today, days_settled),
        days_settled,
        companies,
        total,
        total_keys: all_keys.len() as u64,
        account: account_line(conn, from, to)?,
    })
}

fn account_line(conn: &Connection, from: i64, to: i64) -> rusqlite::Result<AccountLine> {
    conn.query_row(
        "SELECT count(*), coalesce(sum(settled), 0), coalesce(sum(usage_nanos), 0), coalesce(sum(byok_nanos), 0), \
         coalesce(sum(requests), 0) FROM account_days WHERE day BETWEEN ?1 AND ?2",
        [from, to],
        |r| {
            Ok(AccountLine {
                days_read: u32::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                days_settled: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                usage: Usd::from_nanos(r.get::<_, i64>(2)?.into()),
                byok_usage: Usd::from_nanos(r.get::<_, i64>(3)?.into()),
                requests: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
            })
        },
    )
}
