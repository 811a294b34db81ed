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
