//! The ledger's health for `/metrics` (`openrouter_ledger_*`): up, last
//! write, days held, settled and provisional, size, restatements.

use chrono::{DateTime, NaiveDate, Utc};

use super::range::{day_number, oldest_kept};
use super::status::{load_coverage, Statuses};
use super::{get_meta, Ledger, LedgerError};

/// What `openrouter_ledger_*` publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerHealth {
    /// The last write succeeded (or none failed since the start).
    pub up: bool,
    /// Why the last write failed, while it is the last one.
    pub last_error: Option<String>,
    pub last_write: Option<DateTime<Utc>>,
    /// Past days from the ledger's first (within retention) to yesterday.
    pub days_held: u32,
    /// Of them, days on which every key is settled.
    pub days_settled: u32,
    pub days_provisional: u32,
    /// The database file and its write-ahead log.
    pub size_bytes: u64,
    /// Settled key-days (and account days) whose figures a re-read changed, ever.
    pub restated_days_total: u64,
    /// Keys held, and of them departed.
    pub keys: u64,
    pub departed_keys: u64,
}

/// Day counts, recomputed only after a write or on a new day (they scan
/// every key's coverage: ~0.1 s at 100k keys).
#[derive(Debug, Clone, Default)]
pub(crate) struct Cache {
    at: Option<(u64, NaiveDate)>,
    days: (u32, u32),
}

impl Ledger {
    /// The ledger's health on `today`.
    pub fn health(&self, today: NaiveDate) -> Result<LedgerHealth, LedgerError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let err = |e| LedgerError::sqlite(&self.path, e);
        let conn = &inner.conn;
        if inner.health.at != Some((inner.generation, today)) {
            let oldest = day_number(oldest_kept(today, self.retention_days));
            let keys = load_coverage(conn).map_err(err)?;
            let st = Statuses::of(&keys, oldest, day_number(today) - 1, oldest, None);
            let held = st.held_from.map_or(0, |f| day_number(today) - f);
            let held = u32::try_from(held).unwrap_or(0);
            inner.health = Cache {
                at: Some((inner.generation, today)),
                days: (held, st.account_settled()),
            };
        }
        let (days_held, days_settled) = inner.health.days;
        let (keys, departed_keys): (i64, i64) = conn
            .query_row("SELECT count(*), count(departed_on) FROM keys", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(err)?;
        let last_write = get_meta(conn, "last_write")
            .map_err(err)?
            .and_then(|t| DateTime::from_timestamp(t, 0));
        let restated = get_meta(conn, "restated_days").map_err(err)?.unwrap_or(0);
        let size = |suffix: &str| {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            std::fs::metadata(name).map_or(0, |m| m.len())
        };
        Ok(LedgerHealth {
            up: inner.last_error.is_none(),
            last_error: inner.last_error.clone(),
            last_write,
            days_held,
            days_settled,
            days_provisional: days_held.saturating_sub(days_settled),
            size_bytes: size("") + size("-wal"),
            restated_days_total: u64::try_from(restated).unwrap_or(0),
            keys: u64::try_from(keys).unwrap_or(0),
            departed_keys: u64::try_from(departed_keys).unwrap_or(0),
        })
    }
}
