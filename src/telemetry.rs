//! The exporter's own counters, kept in a private `prometheus` registry.
//!
//! They change only while a refresh runs, so they are encoded into the
//! published body once per refresh attempt, never per scrape.

use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};

use crate::upstream::Endpoint;

/// The bounded `reason` values of `openrouter_refresh_failures_total`.
pub const FAILURE_REASONS: [&str; 9] = [
    "unauthorized",
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "connection",
    "invalid_response",
    "pagination",
    "activity",
];

pub struct Telemetry {
    registry: Registry,
    upstream_requests: IntCounterVec,
    refresh_failures: IntCounterVec,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
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
            Opts::new(
                "openrouter_upstream_requests_total",
                "HTTP calls made to the OpenRouter API by the exporter, retries included, \
                 by endpoint and HTTP status code (\"error\" or \"timeout\" when no response came).",
            ),
            &["endpoint", "code"],
        )
        .expect("static metric definition is valid");
        let refresh_failures = IntCounterVec::new(
            Opts::new(
                "openrouter_refresh_failures_total",
                "Refreshes that failed and kept the previous data, by reason.",
            ),
            &["reason"],
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(upstream_requests.clone()))
            .expect("first registration of a unique name");
        registry
            .register(Box::new(refresh_failures.clone()))
            .expect("first registration of a unique name");
        // Every reason exists from the start at 0, so rules and panels see the
        // family before the first failure and `increase()` catches the first one.
        for reason in FAILURE_REASONS {
            refresh_failures.with_label_values(&[reason]);
        }
        Telemetry {
            registry,
            upstream_requests,
            refresh_failures,
        }
    }

    pub fn count_request(&self, endpoint: Endpoint, code: &str) {
        self.upstream_requests
            .with_label_values(&[endpoint.as_str(), code])
            .inc();
    }

    pub fn count_refresh_failure(&self, reason: &str) {
        self.refresh_failures.with_label_values(&[reason]).inc();
    }

    /// Total upstream calls so far, for logs and tests.
    pub fn total_requests(&self) -> u64 {
        use prometheus::core::Collector;
        self.upstream_requests
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Text exposition of the counters.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Encoding static, valid families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), out);
    }
}
