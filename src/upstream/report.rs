//! Why a refresh was slow: what its calls cost ([`CallStats`]), the last
//! completed refresh ([`RefreshRecord`]) and the one-line report of a missed
//! deadline ([`DeadlineReport`]), with the [`Client`] methods that read them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::Client;
use crate::sync::lock;

/// What one refresh's calls cost so far (every clone made by
/// [`Client::with_deadline`] counts into a fresh one).
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) calls: AtomicU64,
    pub(super) key_pages: AtomicU64,
    pub(super) latency_micros: AtomicU64,
    pub(super) peak_in_flight: AtomicUsize,
    pub(super) throttled: AtomicU64,
    pub(super) lone_surrogates: AtomicU64,
}

/// [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CallStats {
    /// HTTP calls answered or failed, retries included.
    pub calls: u64,
    /// Of which `/keys` pages.
    pub key_pages: u64,
    /// Mean time from sending a call to its whole answer.
    pub mean_latency: Duration,
    /// The most calls in flight at once (every clone of the client counted).
    pub peak_in_flight: usize,
    /// Calls answered 429 or 503.
    pub throttled: u64,
    /// `openrouter.max_concurrent_requests`.
    pub limit: usize,
    /// The calls allowed in flight at the end (below `limit` after throttling).
    pub window: usize,
    /// Unpaired UTF-16 surrogate escapes in answers, read as U+FFFD (a name
    /// that serde_json alone would refuse, failing the whole listing).
    pub lone_surrogates: u64,
}

impl CallStats {
    /// Seconds `calls` calls take at this latency with `limit` in flight: the floor.
    pub fn floor_seconds(&self, calls: u64) -> f64 {
        calls as f64 * self.mean_latency.as_secs_f64() / self.limit.max(1) as f64
    }
}

/// The last refresh that completed: its calls and how long it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshRecord {
    pub stats: CallStats,
    pub duration: Duration,
}

impl RefreshRecord {
    /// One line for the log: what the next refresh should take and why, and
    /// whether it fits `budget` (the refresh deadline).
    pub fn estimate(&self, budget: Duration) -> String {
        let s = &self.stats;
        let share = self.duration.as_secs_f64() / budget.as_secs_f64().max(0.001) * 100.0;
        format!(
            "next refresh estimated at {:.1}s from this one ({} calls × {} ms mean round trip ÷ {} in flight = {:.1}s of waiting), {:.0}% of its {:.0}s deadline",
            self.duration.as_secs_f64(),
            s.calls,
            s.mean_latency.as_millis(),
            s.limit,
            s.floor_seconds(s.calls),
            share,
            budget.as_secs_f64(),
        )
    }
}

/// Why a refresh ran out of time, in one line: how many calls it made and
/// needed, at what latency, with how many in flight, and what would fit.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineReport {
    pub budget: Duration,
    pub stats: CallStats,
    pub previous: Option<RefreshRecord>,
}

impl std::fmt::Display for DeadlineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        let latency = s.mean_latency.as_millis();
        write!(
            f,
            "{:.1}s: {} calls made ({} key pages), mean round trip {latency} ms, at most {} in flight \
             (limit {}, window {}, {} throttled)",
            self.budget.as_secs_f64(),
            s.calls,
            s.key_pages,
            s.peak_in_flight,
            s.limit,
            s.window,
            s.throttled,
        )?;
        // The deadline is 0.9 × refresh_interval; leave a quarter spare.
        let interval = |seconds: f64| (seconds / 0.9 * 1.25).ceil();
        match self.previous {
            Some(previous) if previous.stats.calls > s.calls => {
                let needed = previous.stats.calls;
                let floor = s.floor_seconds(needed);
                write!(
                    f,
                    "; the last full refresh made {needed} calls: ≥ {needed} × {latency} ms ÷ {} = {floor:.1}s; \
                     raise refresh_interval to at least {:.0}s or openrouter.max_concurrent_requests",
                    s.limit,
                    interval(floor.max(previous.duration.as_secs_f64())),
                )
            }
            Some(previous) => write!(
                f,
                "; the account grew past the {} calls of the last full refresh: \
                 raise refresh_interval to at least {:.0}s or openrouter.max_concurrent_requests",
                previous.stats.calls,
                interval(2.0 * self.budget.as_secs_f64()),
            ),
            None => write!(
                f,
                "; no earlier refresh to size the account: \
                 raise refresh_interval to at least {:.0}s or openrouter.max_concurrent_requests",
                interval(2.0 * self.budget.as_secs_f64()),
            ),
        }
    }
}

impl Client {
    /// This client's calls so far (since [`Client::with_deadline`] made it).
    pub fn call_stats(&self) -> CallStats {
        let s = &self.stats;
        let calls = s.calls.load(Ordering::Relaxed);
        let micros = s.latency_micros.load(Ordering::Relaxed);
        CallStats {
            calls,
            key_pages: s.key_pages.load(Ordering::Relaxed),
            mean_latency: Duration::from_micros(micros.checked_div(calls).unwrap_or(0)),
            peak_in_flight: s.peak_in_flight.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
            limit: self.limiter.limit(),
            window: self.limiter.window(),
            lone_surrogates: s.lone_surrogates.load(Ordering::Relaxed),
        }
    }

    /// Remembers this client's calls as the last completed refresh, which
    /// took `duration`; the next refresh's estimate and deadline report read it.
    pub fn record_refresh(&self, duration: Duration) -> RefreshRecord {
        let record = RefreshRecord {
            stats: self.call_stats(),
            duration,
        };
        *lock(&self.previous) = Some(record);
        record
    }

    /// The last completed refresh, if any (since this client was built).
    pub fn previous_refresh(&self) -> Option<RefreshRecord> {
        *lock(&self.previous)
    }

    /// Why the refresh this client serves ran out of `budget`, in one line.
    pub fn deadline_report(&self, budget: Duration) -> DeadlineReport {
        DeadlineReport {
            budget,
            stats: self.call_stats(),
            previous: self.previous_refresh(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_report_names_calls_latency_and_concurrency() {
        let stats = CallStats {
            calls: 400,
            key_pages: 398,
            mean_latency: Duration::from_millis(250),
            peak_in_flight: 8,
            throttled: 0,
            limit: 8,
            window: 8,
            lone_surrogates: 0,
        };
        let previous = RefreshRecord {
            stats: CallStats {
                calls: 1004,
                ..stats
            },
            duration: Duration::from_secs(33),
        };
        let report = DeadlineReport {
            budget: Duration::from_secs(27),
            stats,
            previous: Some(previous),
        };
        assert_eq!(
            report.to_string(),
            "27.0s: 400 calls made (398 key pages), mean round trip 250 ms, at most 8 in flight \
             (limit 8, window 8, 0 throttled); the last full refresh made 1004 calls: \
             ≥ 1004 × 250 ms ÷ 8 = 31.4s; raise refresh_interval to at least 46s or \
             openrouter.max_concurrent_requests"
        );
        assert!(previous
            .estimate(Duration::from_secs(270))
            .starts_with("next refresh estimated at 33.0s from this one (1004 calls × 250 ms mean round trip ÷ 8 in flight = 31.4s of waiting), 12% of its 270s deadline"));
    }
}
