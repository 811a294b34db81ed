//! Giving activity collection back what the ledger holds after a restart
//! (so only what it lacks is read again), and pruning days past retention.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rusqlite::{params, Connection};

use super::coverage::{run_at, Run};
use super::range::{day_from_number, day_number, oldest_kept};
use super::schema::LISTING_MODEL;
use super::write::{load_runs, window};
use super::{Failure, Ledger, LedgerError};
use crate::activity::{ActivityRow, REREAD_AFTER_HOURS};

/// A key whose whole `/activity` window before `today` the ledger holds, as
/// the rows that read would have returned (one per day and model).
#[derive(Debug, Clone)]
pub struct RestoredKey {
    pub hash: String,
    /// Today's 6 h re-read time if the window's last day is settled (no
    /// re-read needed today), else today's midnight (re-read at 6 h).
    pub read_at: DateTime<Utc>,
    pub rows: Vec<ActivityRow>,
}

/// What [`Ledger::restore`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Listed keys handed back whole.
    pub restored: usize,
    /// Listed keys with a day of the window missing: to be read.
    pub lacking: usize,
}

/// What [`Ledger::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneSummary {
    pub spend_rows: usize,
    pub account_days: usize,
    /// Departed keys with no day left.
    pub keys: usize,
}

impl Ledger {
    /// Calls `each` with every listed (not departed) key whose window
    /// before `today` the ledger covers, so that activity collection can
    /// take it as read (`ActivityCache::apply_at(&k.hash, &k.rows, today,
    /// k.read_at)`) and read only the keys it lacks. Runs under the ledger's
    /// lock: at start, before anything writes.
    pub fn restore(
        &self,
        today: NaiveDate,
        mut each: impl FnMut(RestoredKey),
    ) -> Result<RestoreSummary, LedgerError> {
        self.read(|conn, names| {
            let (from, to) = window(today);
            let midnight = today
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or_default();
            let mut summary = RestoreSummary::default();
            let mut stmt =
                conn.prepare("SELECT id, hash FROM keys WHERE departed_on IS NULL ORDER BY id")?;
            let keys: Vec<(i64, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (key, hash) in keys {
                let runs = load_runs(conn, key)?;
                if !covers(&runs, from, to) {
                    summary.lacking += 1;
                    continue;
                }
                let settled = run_at(&runs, to).is_some_and(|r| r.settled);
                let read_at = if settled {
                    midnight + Duration::hours(REREAD_AFTER_HOURS)
                } else {
                    midnight
                };
                let rows = window_rows(conn, names, key, from, to)?;
                each(RestoredKey {
                    hash,
                    read_at,
                    rows,
                });
                summary.restored += 1;
            }
            Ok(summary)
        })
    }

    /// When the ledger holds the account's own spend ([`Ledger::record_account`])
    /// for every day of the window before `today`: the time the account-wide
    /// read that wrote it counts as (as for [`RestoredKey::read_at`]: today's
    /// 6 h re-read if the window's last day is settled, else today's
    /// midnight), so that it is read again only when due. `None` when a day
    /// is missing: the account is to be read.
    pub fn restore_account(&self, today: NaiveDate) -> Result<Option<DateTime<Utc>>, LedgerError> {
        self.read(|conn, _| {
            let (from, to) = window(today);
            let (held, last_settled): (i64, Option<bool>) = conn.query_row(
                "SELECT count(*), (SELECT settled FROM account_days WHERE day = ?2) \
                 FROM account_days WHERE day BETWEEN ?1 AND ?2",
                [from, to],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if held < to - from + 1 {
                return Ok(None);
            }
            let midnight = today
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or_default();
            Ok(Some(if last_settled == Some(true) {
                midnight + Duration::hours(REREAD_AFTER_HOURS)
            } else {
                midnight
            }))
        })
    }

    /// Removes days older than `--storage.retention` before `today`, and
    /// departed keys left with none. Call at start and once a day.
    pub fn prune(&self, today: NaiveDate) -> Result<PruneSummary, LedgerError> {
        let horizon = day_number(oldest_kept(today, self.retention_days));
        self.write(|tx, _| {
            let spend_rows = tx.execute("DELETE FROM spend WHERE day < ?1", [horizon])?;
            let account_days = tx.execute("DELETE FROM account_days WHERE day < ?1", [horizon])?;
            tx.execute("DELETE FROM coverage WHERE last_day < ?1", [horizon])?;
            // Runs are disjoint: at most one per key straddles the horizon.
            tx.execute("UPDATE coverage SET first_day = ?1 WHERE first_day < ?1", [horizon])?;
            tx.execute("UPDATE keys SET first_seen = ?1 WHERE first_seen < ?1", [horizon])?;
            // Activity days are covered; listing days end when the key departs.
            let keys = tx.execute(
                "DELETE FROM keys WHERE departed_on < ?1 AND id NOT IN (SELECT key_id FROM coverage)",
                [horizon],
            )?;
            Ok(PruneSummary { spend_rows, account_days, keys })
        })
    }
}

/// Whether `runs` cover every day of `from..=to`.
fn covers(runs: &[Run], from: i64, to: i64) -> bool {
    let mut next = from;
    for r in runs {
        if r.first > next {
            break;
        }
        next = next.max(r.last + 1);
    }
    next > to
}

/// The key's rows of `from..=to` as `/activity` rows (listing figures excluded).
fn window_rows(
    conn: &Connection,
    names: &super::names::Names,
    key: i64,
    from: i64,
    to: i64,
) -> Result<Vec<ActivityRow>, Failure> {
    let mut stmt = conn.prepare_cached(
        "SELECT model_id, usage_nanos, byok_nanos, requests, prompt_tokens, completion_tokens, reasoning_tokens \
         FROM spend WHERE day = ?1 AND key_id = ?2 AND model_id != ?3",
    )?;
    let mut out = Vec::new();
    for day in from..=to {
        let Some(date) = day_from_number(day) else {
            continue;
        };
        let date = date.format("%Y-%m-%d").to_string();
        let mut rows = stmt.query(params![day, key, LISTING_MODEL])?;
        while let Some(r) = rows.next()? {
            let count = |i: usize| -> rusqlite::Result<u64> {
                Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
            };
            out.push(ActivityRow {
                date: date.clone(),
                model: names.model(r.get(0)?).to_string(),
                // `Usd::from_f64` gives the nano-dollars back exactly below $2M a row.
                usage: Some(r.get::<_, i64>(1)? as f64 / 1e9),
                byok_usage_inference: r.get::<_, i64>(2)? as f64 / 1e9,
                requests: count(3)?,
                prompt_tokens: count(4)?,
                completion_tokens: count(5)?,
                reasoning_tokens: count(6)?,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_of_a_window_needs_every_day() {
        let run = |first, last| Run {
            first,
            last,
            settled: true,
            company: 1,
        };
        assert!(covers(&[run(0, 10)], 2, 9));
        assert!(covers(&[run(0, 4), run(5, 10)], 2, 9));
        assert!(!covers(&[run(0, 4), run(6, 10)], 2, 9));
        assert!(!covers(&[run(3, 10)], 2, 9));
        assert!(!covers(&[], 2, 9));
    }
}
