//! The exporter's own counters: upstream calls, throttled calls and failed refreshes.
//!
//! They live in a `prometheus` registry with the standard process collector
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...) and are
//! rendered at every scrape, after the render-once OpenRouter body.
//! This module sits at the bottom of the crate: it takes plain labels.

use prometheus::core::Collector;
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

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

/// The exporter's own counters, in a `prometheus` registry beside the
/// standard process collector: rendered fresh at every scrape and appended to
/// the render-once body.
pub struct Telemetry {
    registry: Registry,
    upstream_requests: IntCounterVec,
    refresh_failures: IntCounterVec,
    upstream_throttled: IntCounter,
}

/// The counters' families, name and HELP: the README's metrics table lists
/// them beside the render-once families (`exposition::families`).
pub const UPSTREAM_REQUESTS: (&str, &str) = (
    "openrouter_upstream_requests_total",
    "HTTP calls made to the OpenRouter API by the exporter, retries included, \
     by endpoint and HTTP status code (\"error\" or \"timeout\" when no response came).",
);
pub const UPSTREAM_THROTTLED: (&str, &str) = (
    "openrouter_upstream_throttled_total",
    "HTTP calls to the OpenRouter API answered 429 or 503: each one backs every call \
     off (Retry-After honoured) and halves the number of calls in flight.",
);
pub const REFRESH_FAILURES: (&str, &str) = (
    "openrouter_refresh_failures_total",
    "Refreshes (or optional parts of one: credits, activity) that failed, by reason. \
     A failed listing keeps the previous data; see the README's failure table.",
);
pub const COUNTER_FAMILIES: [&str; 3] = [
    UPSTREAM_REQUESTS.0,
    UPSTREAM_THROTTLED.0,
    REFRESH_FAILURES.0,
];

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("upstream_requests", &self.total_requests())
            .field("upstream_throttled", &self.throttled())
            .finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let registry = Registry::new();
        let upstream_requests = IntCounterVec::new(
            Opts::new(UPSTREAM_REQUESTS.0, UPSTREAM_REQUESTS.1),
            &["endpoint", "code"],
        )
        .expect("a valid counter definition");
        let upstream_throttled = IntCounter::new(UPSTREAM_THROTTLED.0, UPSTREAM_THROTTLED.1)
            .expect("a valid counter definition");
        let refresh_failures = IntCounterVec::new(
            Opts::new(REFRESH_FAILURES.0, REFRESH_FAILURES.1),
            &["reason"],
        )
        .expect("a valid counter definition");
        // Every reason is there from the start at 0, so rules see the family
        // before the first failure and `increase()` catches the first one.
        for reason in FailureReason::ALL {
            refresh_failures.with_label_values(&[reason.as_str()]);
        }
        let collectors: [Box<dyn Collector>; 3] = [
            Box::new(upstream_requests.clone()),
            Box::new(upstream_throttled.clone()),
            Box::new(refresh_failures.clone()),
        ];
        for collector in collectors {
            // Distinct names in a new registry: registering cannot clash.
            let _ = registry.register(collector);
        }
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Telemetry {
            registry,
            upstream_requests,
            refresh_failures,
            upstream_throttled,
        }
    }

    /// One HTTP call to `endpoint` answered with `code` (a status, or "error"/"timeout").
    pub fn count_request(&self, endpoint: &'static str, code: &str) {
        self.upstream_requests
            .with_label_values(&[endpoint, code])
            .inc();
    }

    pub fn count_refresh_failure(&self, reason: FailureReason) {
        self.refresh_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// One call answered 429 or 503: the client backed every call off.
    pub fn count_throttled(&self) {
        self.upstream_throttled.inc();
    }

    /// Throttled calls so far, for logs and tests.
    pub fn throttled(&self) -> u64 {
        self.upstream_throttled.get()
    }

    /// Total upstream calls so far, for logs and tests.
    pub fn total_requests(&self) -> u64 {
        self.upstream_requests
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Failures counted for `reason` so far.
    pub fn refresh_failures(&self, reason: FailureReason) -> u64 {
        self.refresh_failures
            .with_label_values(&[reason.as_str()])
            .get()
    }

    /// The counters and process families in the text format, as of now.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot render the exporter's own counters");
            out.clear();
        }
        out
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
        assert_eq!(t.throttled(), 0);
        t.count_throttled();
        assert_eq!(t.throttled(), 1);
        assert_eq!(t.refresh_failures(FailureReason::Credits), 1);
        assert_eq!(t.refresh_failures(FailureReason::Timeout), 0);
        assert_eq!(t.total_requests(), 2);
        let text = String::from_utf8(t.render()).unwrap();
        for reason in FailureReason::ALL {
            let line = format!("openrouter_refresh_failures_total{{reason=\"{reason}\"}} ");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert!(text.contains("openrouter_refresh_failures_total{reason=\"credits\"} 1\n"));
        assert!(text.contains("openrouter_upstream_throttled_total 1\n"));
        assert!(text.contains("# TYPE openrouter_upstream_requests_total counter\n"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_families_are_rendered() {
        let text = String::from_utf8(Telemetry::new().render()).unwrap();
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{family} ")),
                "{family} missing from\n{text}"
            );
        }
    }
}
