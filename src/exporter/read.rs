//! The narrow handle the HTTP server reads through: the published body, the
//! config, readiness and the counters. It cannot refresh, reload or publish.

use std::sync::Arc;

use super::state::Shared;
use super::Exporter;
use crate::body::Published;
use crate::config::Config;
use crate::sync::lock;
use crate::telemetry::Telemetry;

/// What the server may see of the exporter.
#[derive(Clone)]
pub struct ReadHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadHandle")
    }
}

impl ReadHandle {
    /// The body to serve. Never blocks on a refresh.
    pub fn published(&self) -> Arc<Published> {
        self.shared.published.load_full()
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.shared.config.borrow())
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.shared.telemetry
    }

    /// Ready once a refresh fully succeeded and while that data is not older
    /// than [`Config::stale_after`].
    pub fn is_ready(&self) -> bool {
        let max_age = self.config().stale_after();
        let last_success = lock(&self.shared.state).last_success;
        last_success.is_some_and(|t| t.elapsed() <= max_age)
    }
}

impl Exporter {
    /// The handle the HTTP server reads through.
    pub fn read_handle(&self) -> ReadHandle {
        ReadHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl From<Exporter> for ReadHandle {
    fn from(exporter: Exporter) -> ReadHandle {
        exporter.read_handle()
    }
}
