//! The exporter's state machine: refresh from OpenRouter, build a snapshot,
//! render it once, publish it atomically; reload the config safely.
//!
//! Data flows one way: config + upstream data → [`Listing`] → [`Snapshot`] →
//! rendered body ([`Published`]) → HTTP. A scrape only loads an `Arc` to the
//! last body. `docs/architecture.md` draws the tasks and locks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::body::{self, Published};
use crate::config::{Config, ConfigError, SecretError};
use crate::direct::{self, DirectClient};
use crate::exposition::{write_snapshot, write_status};
use crate::snapshot::Snapshot;
use crate::status::{ActivityStatus, Status};
use crate::sync::lock;
use crate::telemetry::{FailureReason, Telemetry};
use crate::upstream::{Client, DeadlineReport, RetryPolicy, UpstreamError};
use organization::has_creator_selectors;
use state::{KeyProvider, Shared, State};

pub use read::ReadHandle;
pub use state::Clock;

mod account;
mod activity_fetch;
mod activity_runs;
mod ledger;
mod organization;
mod read;
mod rebuild;
mod refresh;
mod state;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("management key: {0}")]
    Secret(#[from] SecretError),
    #[error("direct key {0:?}: {1}")]
    DirectKey(String, SecretError),
    #[error("cannot build the OpenRouter client: {0}")]
    Client(#[from] UpstreamError),
}

/// Why a refresh failed. The previous data stays published either way.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Says why in one line: calls made and needed, latency, concurrency.
    #[error("refresh did not finish within its deadline of {0}")]
    Deadline(DeadlineReport),
    #[error("building or rendering the snapshot failed: {0}")]
    Render(std::io::Error),
}

impl RefreshError {
    pub fn reason(&self) -> FailureReason {
        match self {
            RefreshError::Upstream(e) => e.reason(),
            RefreshError::Deadline(_) => FailureReason::Deadline,
            RefreshError::Render(_) => FailureReason::Render,
        }
    }

    /// The upstream error, when OpenRouter caused the failure.
    pub fn upstream(&self) -> Option<&UpstreamError> {
        match self {
            RefreshError::Upstream(e) => Some(e),
            _ => None,
        }
    }
}

/// A cheap handle to the running exporter.
#[derive(Clone)]
pub struct Exporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

impl Exporter {
    /// An exporter whose management key comes from the config's source
    /// (`management_key_env` or `management_key_file`). `config_path` is re-read on reload.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Exporter, ReloadError> {
        Exporter::build(
            config,
            config_path,
            KeyProvider::FromConfig,
            RetryPolicy::default(),
        )
    }

    /// An exporter with a fixed management key (the demo, tests).
    pub fn with_key(
        config: Config,
        key: SecretString,
        retry: RetryPolicy,
    ) -> Result<Exporter, ReloadError> {
        Exporter::build(config, None, KeyProvider::Fixed(key), retry)
    }

    fn build(
        config: Config,
        config_path: Option<PathBuf>,
        keys: KeyProvider,
        retry: RetryPolicy,
    ) -> Result<Exporter, ReloadError> {
        let telemetry = Arc::new(Telemetry::new());
        let client = make_client(&config, &keys, retry, &telemetry)?;
        let direct_clients = Arc::new(make_direct_clients(&config, &client)?);
        let status = Status {
            up: false,
            account_up: None,
            last_success: None,
            last_duration_seconds: None,
            refresh_interval_seconds: config.refresh_interval.as_secs_f64(),
            reload_successful: true,
            activity: config.activity.enabled.then(ActivityStatus::default),
            ledger: None,
        };
        let (config, _) = watch::channel(Arc::new(config));
        let exporter = Exporter {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(client, direct_clients, status)),
                config,
                published: ArcSwap::from_pointee(Published::default()),
                telemetry,
                keys,
                config_path,
                retry,
                refresh_lock: tokio::sync::Mutex::new(()),
                clock: Mutex::new(Arc::new(Utc::now)),
            }),
        };
        // The status families are there from the first scrape, before any refresh.
        let first = exporter.render_body(None, status);
        match first {
            Ok(published) => exporter.shared.published.store(Arc::new(published)),
            Err(e) => error!(error = %e, "cannot render the status metrics"),
        }
        Ok(exporter)
    }

    /// Replaces the clock that refreshes read (tests: a refresh across a UTC boundary).
    #[doc(hidden)]
    pub fn set_clock(&self, clock: Clock) {
        *lock(&self.shared.clock) = clock;
    }

    fn now(&self) -> DateTime<Utc> {
        let clock = Arc::clone(&lock(&self.shared.clock));
        clock()
    }

    /// The body to serve. Never blocks on a refresh.
    pub fn published(&self) -> Arc<Published> {
        self.shared.published.load_full()
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.shared.config.borrow())
    }

    /// Notified whenever a new config is applied.
    pub fn watch_config(&self) -> watch::Receiver<Arc<Config>> {
        self.shared.config.subscribe()
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.shared.telemetry
    }

    /// Ready once a refresh fully succeeded and while that data is not older
    /// than [`Config::stale_after`].
    pub fn is_ready(&self) -> bool {
        self.read_handle().is_ready()
    }

    /// Applies a new, already validated config: rebuilds the client (to
    /// re-read the management key's source, or when the upstream settings
    /// changed), and re-attributes the last listing at once.
    /// On error nothing changes except `openrouter_config_last_reload_successful 0`.
    pub async fn apply_config(&self, config: Config) -> Result<(), ReloadError> {
        let _serial = self.shared.refresh_lock.lock().await;
        let old = self.config();
        let client = lock(&self.shared.state).client.clone();
        let rebuilt = if old.openrouter == config.openrouter
            && matches!(self.shared.keys, KeyProvider::Fixed(_))
        {
            Ok(client)
        } else {
            make_client(
                &config,
                &self.shared.keys,
                self.shared.retry,
                &self.shared.telemetry,
            )
        };
        let clients = rebuilt.and_then(|client| {
            let direct = make_direct_clients(&config, &client)?;
            Ok((client, direct))
        });
        let (client, direct_clients) = match clients {
            Ok(pair) => pair,
            Err(e) => {
                lock(&self.shared.state).reload_failed();
                self.publish().await;
                return Err(e);
            }
        };
        let config = Arc::new(config);
        lock(&self.shared.state).apply_config(&config, client, direct_clients);
        if has_creator_selectors(&config) && !has_creator_selectors(&old) {
            // Creator selectors need the member list: read it with the next refresh.
            lock(&self.shared.state).read_organization_next();
        }
        self.shared.config.send_replace(Arc::clone(&config));
        self.rebuild_snapshot().await;
        self.publish().await;
        info!(companies = config.companies.len(), "configuration applied");
        Ok(())
    }

    /// Re-reads the config file given at start (SIGHUP, file change).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let Some(path) = self.shared.config_path.clone() else {
            return Ok(());
        };
        match Config::load(&path) {
            Ok(config) => self.apply_config(config).await,
            Err(e) => {
                let _serial = self.shared.refresh_lock.lock().await;
                lock(&self.shared.state).reload_failed();
                self.publish().await;
                Err(e.into())
            }
        }
    }

    /// Renders the snapshot and the status into a new body and swaps it in,
    /// rebuilt first as of now when a UTC boundary passed since it was built.
    /// Callers hold `refresh_lock`, so publishes never go out of order.
    async fn publish(&self) {
        let now = self.now();
        if self.outdated(now) {
            self.rebuild_snapshot_at(now).await;
        }
        let (snapshot, mut status) = {
            let state = lock(&self.shared.state);
            (state.snapshot.clone(), state.status_at(now))
        };
        status.refresh_interval_seconds = self.config().refresh_interval.as_secs_f64();
        let exporter = self.clone();
        let rendered =
            tokio::task::spawn_blocking(move || exporter.render_body(snapshot, status)).await;
        match rendered {
            Ok(Ok(published)) => {
                self.shared.published.store(Arc::new(published));
                debug!("published new /metrics body");
            }
            Ok(Err(e)) => self.render_failed(e),
            Err(e) => self.render_failed(std::io::Error::other(e)),
        }
    }

    fn render_failed(&self, e: std::io::Error) {
        self.shared
            .telemetry
            .count_refresh_failure(FailureReason::Render);
        error!(error = %e, "rendering /metrics failed; the previous body is still served");
    }

    fn render_body(
        &self,
        snapshot: Option<Arc<Snapshot>>,
        status: Status,
    ) -> std::io::Result<Published> {
        let options = self.config().metrics;
        let estimate = snapshot
            .as_deref()
            .map_or(0, |s| crate::exposition::text_estimate(s, options));
        let mut published = body::render(&self.published(), estimate, |w| {
            if let Some(snapshot) = &snapshot {
                write_snapshot(w, snapshot, options)?;
            }
            write_status(w, &status)
        })?;
        published.snapshot = snapshot;
        published.status = Some(status);
        Ok(published)
    }

    /// Refreshes now and then every `refresh_interval` until `shutdown` turns
    /// true; before the first refresh and every `organization_refresh_intervals`
    /// refreshes, reads workspaces, members and caps first. At each UTC
    /// midnight in between, re-publishes the last data without the windows
    /// that ended, whether or not OpenRouter answers.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut config_changed = self.watch_config();
        self.check_management_key().await;
        loop {
            let started = tokio::time::Instant::now();
            let every = self.config().organization_refresh_intervals;
            let due = lock(&self.shared.state).organization_due(every);
            if due {
                self.read_organization().await;
            }
            let _ = self.refresh().await;
            // A reload re-renders at once from the last listing; it only moves
            // the next refresh to `started + new interval`, never triggers one.
            loop {
                let interval = config_changed.borrow_and_update().refresh_interval;
                let boundary = self.until_next_boundary();
                tokio::select! {
                    _ = tokio::time::sleep_until(started + interval) => break,
                    _ = tokio::time::sleep(boundary) => self.republish_as_of_now().await,
                    _ = config_changed.changed() => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

fn make_direct_clients(config: &Config, base: &Client) -> Result<Vec<DirectClient>, ReloadError> {
    direct::clients(config, base).map_err(|(name, e)| ReloadError::DirectKey(name, e))
}

fn make_client(
    config: &Config,
    keys: &KeyProvider,
    retry: RetryPolicy,
    telemetry: &Arc<Telemetry>,
) -> Result<Client, ReloadError> {
    let key = match keys {
        KeyProvider::Fixed(key) => key.clone(),
        KeyProvider::FromConfig => match &config.openrouter.management_key {
            Some(source) => source.load()?,
            // Direct-key mode: the management API is never called.
            None => SecretString::from(String::new()),
        },
    };
    Ok(Client::new(
        &config.openrouter.base_url,
        key,
        config.openrouter.request_timeout,
        retry,
        Arc::clone(telemetry),
    )?
    .with_max_concurrent_requests(config.openrouter.max_concurrent_requests))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;
    use crate::sim::{Fault, FaultResponse, SimKey, SimServer, SimState};

    const KEY: &str = "sk-or-v1-exporter-unit-test";

    async fn account(keys: usize) -> SimServer {
        let mut state = SimState::new(KEY);
        state.workspaces = vec![("ws-1".to_string(), "One".to_string())];
        state.keys = (0..keys)
            .map(|i| {
                SimKey::new("ws-1", &format!("{i:064x}"), &format!("acme-{i}")).usage(
                    0.5,
                    1.25,
                    3.0,
                    10.0 + i as f64,
                )
            })
            .collect();
        state.total_credits = 1e6;
        state.total_usage = 1e5;
        SimServer::start(state).await.unwrap()
    }

    fn exporter(sim: &SimServer) -> Exporter {
        let yaml = format!(
            "refresh_interval: 30s\nopenrouter:\n  base_url: {}\n  request_timeout: 2s\ncompanies:\n  acme:\n    keys: [{{name_glob: 'acme-*'}}]\n",
            sim.base_url()
        );
        let retry = RetryPolicy {
            attempts: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        Exporter::with_key(
            Config::parse(&yaml, "test").unwrap(),
            SecretString::from(KEY.to_string()),
            retry,
        )
        .unwrap()
    }

    fn gunzip(gzip: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gzip)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn snapshot_part(text: &[u8]) -> &[u8] {
        let text = std::str::from_utf8(text).unwrap();
        let end = text.find("# HELP openrouter_up ").unwrap();
        &text.as_bytes()[..end]
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_snapshot_byte_for_byte() {
        let sim = account(800).await;
        let exporter = exporter(&sim);
        let empty = exporter.published();
        assert_eq!(gunzip(&empty.gzip()), empty.plain.to_vec());
        assert!(String::from_utf8_lossy(&empty.plain).contains("\nopenrouter_up 0\n"));
        exporter.refresh().await.unwrap();
        let first = exporter.published();
        assert!(first.has_plain());
        assert_eq!(gunzip(&first.gzip()), first.plain.to_vec());
        assert!(String::from_utf8_lossy(&first.plain).contains("\nopenrouter_up 1\n"));

        sim.state().faults.push(Fault::new(
            "/keys",
            FaultResponse::Error {
                status: 500,
                retry_after: None,
            },
        ));
        let err = exporter.refresh().await.unwrap_err();
        assert_eq!(err.reason(), FailureReason::ServerError);
        let failed = exporter.published();
        assert_eq!(gunzip(&failed.gzip()), failed.plain.to_vec());
        assert_eq!(snapshot_part(&first.plain), snapshot_part(&failed.plain));
        let text = String::from_utf8_lossy(&failed.plain);
        assert!(text.contains("\nopenrouter_up 0\n"));
        // The counters are fresh at every scrape, after the published text.
        let counters = String::from_utf8(exporter.telemetry().render()).unwrap();
        assert!(counters.contains("openrouter_refresh_failures_total{reason=\"server_error\"} 1\n"));
    }
}
