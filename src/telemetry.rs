//! The exporter's own counters: upstream calls, throttled calls and failed refreshes.
//!
//! They change while a refresh runs and are rendered into the published body
//! with everything else (see `exposition::write_status`), never per scrape.
//! This module sits at the bottom of the crate: it takes plain labels.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

/// Why a refresh (or one optional part of it) failed: the bounded `reason`
/// label of `openrouter_refresh_failures_total`, one list for the counter, the
/// logs and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureReason {
    Unauthorized,
    RateLimited,
    ServerError,
    ClientError,
    Timeout,
    Connection,
    InvalidResponse,
    Pagination,
    /// The refresh did not finish before its deadline (0.9 × refresh interval).
    Deadline,
    /// `GET /credits` failed: account families are absent, key figures still published.
    Credits,
    /// An activity run failed.
    Activity,
    /// Rendering the body failed (an internal error, not an upstream one).
    Render,
}

impl FailureReason {
    pub const ALL: [FailureReason; 12] = [
        FailureReason::Unauthorized,
        FailureReason::RateLimited,
        FailureReason::ServerError,
        FailureReason::ClientError,
        FailureReason::Timeout,
        FailureReason::Connection,
        FailureReason::InvalidResponse,
        FailureReason::Pagination,
        FailureReason::Deadline,
        FailureReason::Credits,
        FailureReason::Activity,
        FailureReason::Render,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Unauthorized => "unauthorized",
            FailureReason::RateLimited => "rate_limited",
            FailureReason::ServerError => "server_error",
            FailureReason::ClientError => "client_error",
            FailureReason::Timeout => "timeout",
            FailureReason::Connection => "connection",
            FailureReason::InvalidResponse => "invalid_response",
            FailureReason::Pagination => "pagination",
            FailureReason::Deadline => "deadline",
            FailureReason::Credits => "credits",
            FailureReason::Activity => "activity",
            FailureReason::Render => "render",
        }
    }
}

/// Compares with the label value, as tests and logs read it.
impl PartialEq<&str> for FailureReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counter values at one moment, in label order, for rendering.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// ((endpoint, code), calls).
    pub upstream_requests: Vec<((&'static str, String), u64)>,
    /// Every reason, 0 included.
    pub refresh_failures: Vec<(FailureReason, u64)>,
    /// Calls answered 429 or 503, which slowed every call down.
    pub upstream_throttled: u64,
}

#[derive(Debug, Default)]
pub struct Telemetry {
    upstream_requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    refresh_failures: Mutex<BTreeMap<FailureReason, u64>>,
    upstream_throttled: AtomicU64,
}

impl Telemetry {
    pub fn new() -> Telemetry {
        Telemetry::default()
    }

    /// One HTTP call to `endpoint` answered with `code` (a status, or "error"/"timeout").
    pub fn count_request(&self, endpoint: &'static str, code: &str) {
        *lock(&self.upstream_requests)
            .entry((endpoint, code.to_string()))
            .or_default() += 1;
    }

    pub fn count_refresh_failure(&self, reason: FailureReason) {
        *lock(&self.refresh_failures).entry(reason).or_default() += 1;
    }

    /// One call answered 429 or 503: the client backed every call off.
    pub fn count_throttled(&self) {
        self.upstream_throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Throttled calls so far, for logs and tests.
    pub fn throttled(&self) -> u64 {
        self.upstream_throttled.load(Ordering::Relaxed)
    }

    /// Total upstream calls so far, for logs and tests.
    pub fn total_requests(&self) -> u64 {
        lock(&self.upstream_requests).values().sum()
    }

    /// The current values. Every failure reason is present from the start at
    /// 0, so rules see the family before the first failure and `increase()`
    /// catches the first one.
    pub fn counters(&self) -> Counters {
        let failures = lock(&self.refresh_failures);
        Counters {
            upstream_requests: lock(&self.upstream_requests)
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            refresh_failures: FailureReason::ALL
                .iter()
                .map(|r| (*r, failures.get(r).copied().unwrap_or(0)))
                .collect(),
            upstream_throttled: self.throttled(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_starts_at_zero_and_counts() {
        let t = Telemetry::new();
        t.count_refresh_failure(FailureReason::Credits);
        t.count_request("keys", "200");
        t.count_request("keys", "200");
        assert_eq!(t.counters().upstream_throttled, 0);
        t.count_throttled();
        let c = t.counters();
        assert_eq!(c.upstream_throttled, 1);
        assert_eq!(c.refresh_failures.len(), FailureReason::ALL.len());
        assert!(c.refresh_failures.contains(&(FailureReason::Credits, 1)));
        assert!(c.refresh_failures.contains(&(FailureReason::Timeout, 0)));
        assert_eq!(t.total_requests(), 2);
    }
}
