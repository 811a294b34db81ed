//! The exporter's own state as it is published: whether the last refresh,
//! the account read and the activity runs succeeded. Plain data on the model
//! floor: the exporter writes it, `body`, `page` and `exposition` read it.

use chrono::{DateTime, Utc};

/// The exporter's own state, written after the snapshot on every refresh attempt.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub up: bool,
    /// Whether the last listing's `GET /credits` succeeded; `None` when the
    /// management API is not used (direct keys only) or before the first listing.
    pub account_up: Option<bool>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration_seconds: Option<f64>,
    pub refresh_interval_seconds: f64,
    pub reload_successful: bool,
    /// `None` when activity collection is off.
    pub activity: Option<ActivityStatus>,
    /// `None` when the exporter runs without a ledger (`Exporter::with_ledger` not called).
    pub ledger: Option<LedgerStatus>,
}

/// The statements ledger as shown (`openrouter_ledger_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStatus {
    /// Open, and its last write (if any since the start) succeeded.
    pub up: bool,
    /// When a write last committed (from the file: survives restarts).
    pub last_write: Option<DateTime<Utc>>,
    /// `None` while the ledger cannot be opened or read.
    pub figures: Option<LedgerFigures>,
}

/// What the ledger holds, as last read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerFigures {
    /// Past days on which every key is settled (read 6 h or more after the day ended).
    pub days_settled: u32,
    /// Past days held with some key still provisional.
    pub days_provisional: u32,
    /// The SQLite file and its write-ahead log.
    pub size_bytes: u64,
    /// Settled key-days whose figures a later read changed, ever.
    pub restated_days_total: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ActivityStatus {
    pub up: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub cached_keys: usize,
    /// Listed keys by where their history stands; `None` before the first run.
    pub keys: Option<Progress>,
}

/// How far the listed keys' activity histories are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The history read for today: rolling windows published.
    pub complete: usize,
    /// To read (not yet tried in this fill, or a new day).
    pub pending: usize,
    /// The last call failed; retried on the next run.
    pub failed: usize,
    /// Answered 404 (deleted since the listing); skipped.
    pub gone: usize,
}
