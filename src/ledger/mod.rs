//! The ledger (issue #23): every key's settled daily spend, kept in a SQLite
//! file for as long as `--storage.retention`, so that a month can be invoiced
//! exactly after `/activity` (30 days), the calendar windows (reset on the
//! 1st) and Prometheus (15 days) have let it go, and after a key was deleted.
//!
//! - **What is kept.** Per UTC day, key and model, what `/activity` reported
//!   ([`Ledger::record_reads`]), with the company the key was attributed to
//!   on that day; the keys' metadata and departures, and today's listing
//!   figure before `/activity` has the day ([`Ledger::record_listing`]); the
//!   account's own spend per day ([`Ledger::record_account`]).
//! - **Status.** A key-day is *provisional* until it is read at least 6 h
//!   after it ended, then *settled*. A re-read that changes a settled day
//!   replaces it and is counted (`restated_days_total`) and logged. A period
//!   is *final* once every day of it is settled for every key.
//! - **Durable.** One file, `ledger.sqlite3` in `--storage.path`; each call
//!   is one transaction (WAL, `synchronous=FULL`): a crash loses nothing
//!   committed. The file stays locked while the exporter runs, so a second
//!   exporter on the same path fails at start with [`LedgerError::Locked`].
//! - **Restart.** [`Ledger::restore`] hands activity collection back every
//!   key whose 30 days the ledger holds, so only what it lacks is read again.
//! - **Statements.** [`Ledger::statement`] (per company, any day range),
//!   [`Ledger::company_statement`] (per key and model), [`Ledger::months`].
//!
//! Every method blocks on SQLite (a month's statement at 100k keys takes
//! about a second): call them from `tokio::task::spawn_blocking`. The ledger
//! sits below the exporter (which writes it) and the pages and server (which
//! read it), and above `activity` (whose rows it takes and gives back).

mod company;
mod coverage;
mod error;
mod health;
mod keys;
mod names;
mod range;
mod restore;
mod schema;
mod statement;
mod status;
mod write;

pub mod billing;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use self::names::Names;
use self::schema::FileState;

pub use self::billing::Markup;
pub use self::error::LedgerError;
pub use self::health::LedgerHealth;
pub use self::keys::{ListedKey, ListingSummary};
pub use self::range::{
    oldest_kept, parse_range_query, validate_range, DayRange, Month, RangeError,
};
pub use self::restore::{PruneSummary, RestoreSummary, RestoredKey};
pub use self::statement::{
    AccountLine, CompanyLine, CompanyStatement, Departure, KeyLine, ModelLine, MonthStatus,
    PeriodStatus, Spend, Statement,
};
pub use self::write::{AccountRead, KeyRead, WriteSummary};

/// The ledger's file name inside `--storage.path`.
pub const FILE_NAME: &str = "ledger.sqlite3";
/// `--storage.retention` by default: 13 months and a bit, for "the same month last year".
pub const DEFAULT_RETENTION_DAYS: u32 = 400;

/// The open ledger. Cheap to share (`Arc<Ledger>`); calls are serialised.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    retention_days: u32,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    names: Names,
    /// Bumped by every committed write: cached figures older than it are stale.
    generation: u64,
    /// Why the last write failed, until one succeeds (`openrouter_ledger_up`).
    last_error: Option<String>,
    health: health::Cache,
}

impl Ledger {
    /// Opens (creating if need be) `dir/ledger.sqlite3` and locks it for this
    /// process. Errors say why in words: an unusable directory, a file held
    /// by another process, a corrupt or foreign file.
    pub fn open(dir: &Path, retention_days: u32) -> Result<Ledger, LedgerError> {
        let unusable = |reason: String| LedgerError::PathUnusable {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| unusable(e.to_string()))?;
        if !dir.is_dir() {
            return Err(unusable("not a directory".to_string()));
        }
        let path = dir.join(FILE_NAME);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|e| LedgerError::sqlite(&path, e))?;
        match schema::prepare(&conn).map_err(|e| LedgerError::sqlite(&path, e))? {
            FileState::Ready => {}
            FileState::Incompatible(reason) => {
                return Err(LedgerError::Incompatible { path, reason })
            }
        }
        let names = Names::load(&conn).map_err(|e| LedgerError::sqlite(&path, e))?;
        Ok(Ledger {
            path,
            retention_days,
            inner: Mutex::new(Inner {
                conn,
                names,
                generation: 0,
                last_error: None,
                health: health::Cache::default(),
            }),
        })
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `--storage.retention` in days.
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// A panic while the lock was held rolled its transaction back: the
    /// state is the last commit, so the lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one immediate write transaction and commits it, with the
    /// time of the write. On failure nothing is written, the name caches are
    /// reloaded (they may hold ids of the rolled-back rows) and the error is
    /// kept for [`Ledger::health`].
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Names) -> Result<T, Failure>,
    ) -> Result<T, LedgerError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let result = run_write(&mut inner.conn, &mut inner.names, &self.path, f);
        match &result {
            Ok(_) => {
                inner.generation += 1;
                inner.last_error = None;
            }
            Err(e) => {
                if let Ok(names) = Names::load(&inner.conn) {
                    inner.names = names;
                }
                inner.last_error = Some(e.to_string());
            }
        }
        result
    }

    /// Runs `f` on the connection (reads see the last commit).
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection, &Names) -> Result<T, Failure>,
    ) -> Result<T, LedgerError> {
        let guard = self.lock();
        f(&guard.conn, &guard.names).map_err(|e| e.at(&self.path))
    }
}

/// An error inside a call, before it is given the file's path.
#[derive(Debug)]
enum Failure {
    Sqlite(rusqlite::Error),
    Ledger(LedgerError),
}

impl Failure {
    fn at(self, path: &Path) -> LedgerError {
        match self {
            Failure::Sqlite(e) => LedgerError::sqlite(path, e),
            Failure::Ledger(e) => e,
        }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Sqlite(e)
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Failure {
        Failure::Ledger(e)
    }
}

fn run_write<T>(
    conn: &mut Connection,
    names: &mut Names,
    path: &Path,
    f: impl FnOnce(&Transaction<'_>, &mut Names) -> Result<T, Failure>,
) -> Result<T, LedgerError> {
    let err = |e| LedgerError::sqlite(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let value = f(&tx, names).map_err(|e| e.at(path))?;
    set_meta(&tx, "last_write", chrono::Utc::now().timestamp()).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(value)
}

fn set_meta(conn: &Connection, name: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2")?
        .execute(rusqlite::params![name, value])?;
    Ok(())
}

fn get_meta(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension as _;
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()
}

/// An amount as stored: nano-dollars in an `i64`, or [`LedgerError::Overflow`].
fn nanos_i64(amount: crate::money::Usd, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(amount.nanos()).map_err(|_| LedgerError::overflow(format!("{what} {amount}")))
}

#[cfg(test)]
mod tests;
