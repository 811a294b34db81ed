//! The exporter's state machine: refresh from OpenRouter, build a snapshot,
//! render it once, publish it atomically; reload the config safely.
//!
//! Data flows one way: config + upstream data → [`Snapshot`] → rendered body
//! ([`Published`]) → HTTP. A scrape only clones an `Arc` to the last body.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use secrecy::SecretString;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{Config, ConfigError, SecretError};
use crate::exposition::{write_snapshot, write_status, MetricWriter, Status};
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use crate::upstream::{Client, RetryPolicy, UpstreamData, UpstreamError};

/// The body `/metrics` serves, in both encodings, rendered once per refresh attempt.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub plain: Bytes,
    /// A gzip stream of `plain` (two gzip members: snapshot, then status).
    pub gzip: Bytes,
}

/// A rendered piece of the body. The snapshot piece is kept byte-for-byte
/// across failed refreshes; the status piece is re-rendered every attempt.
#[derive(Debug, Clone, Default)]
struct Rendered {
    plain: Vec<u8>,
    gzip: Vec<u8>,
}

/// Writes to a plain buffer and a gzip stream at once, so the body is produced in one pass.
struct Tee {
    plain: Vec<u8>,
    gzip: GzEncoder<Vec<u8>>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.plain.extend_from_slice(buf);
        self.gzip.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render(
    f: impl FnOnce(&mut MetricWriter<&mut Tee>) -> std::io::Result<()>,
) -> std::io::Result<Rendered> {
    let mut tee = Tee {
        plain: Vec::new(),
        gzip: GzEncoder::new(Vec::new(), Compression::fast()),
    };
    f(&mut MetricWriter::new(&mut tee))?;
    Ok(Rendered {
        plain: tee.plain,
        gzip: tee.gzip.finish()?,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot build the OpenRouter client: {0}")]
    Client(#[from] UpstreamError),
}

/// Where the management key comes from: the config's source, or a fixed key (demo).
#[derive(Clone)]
enum KeyProvider {
    FromConfig,
    Fixed(SecretString),
}

struct State {
    config: Arc<Config>,
    client: Client,
    last_data: Option<Arc<UpstreamData>>,
    snapshot: Rendered,
    status: Status,
    last_success: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    published: RwLock<Arc<Published>>,
    telemetry: Arc<Telemetry>,
    keys: KeyProvider,
    config_path: Option<PathBuf>,
    retry: RetryPolicy,
    /// Serialises refreshes and reloads so they never publish out of order.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Wakes the refresh loop when the interval may have changed.
    config_changed: watch::Sender<Duration>,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let status = Status {
            up: false,
            last_success: None,
            last_duration_seconds: None,
            refresh_interval_seconds: config.refresh_interval.as_secs_f64(),
            reload_successful: true,
        };
        let (config_changed, _) = watch::channel(config.refresh_interval);
        let exporter = Exporter {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    config: Arc::new(config),
                    client,
                    last_data: None,
                    snapshot: Rendered::default(),
                    status,
                    last_success: None,
                }),
                published: RwLock::new(Arc::new(Published::default())),
                telemetry,
                keys,
                config_path,
                retry,
                refresh_lock: tokio::sync::Mutex::new(()),
                config_changed,
            }),
        };
        exporter.publish();
        Ok(exporter)
    }

    /// The body to serve. Never blocks on a refresh.
    pub fn published(&self) -> Arc<Published> {
        self.shared
            .published
            .read()
            .map(|p| Arc::clone(&p))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&lock(&self.shared.state).config)
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.shared.telemetry
    }

    /// Ready once a refresh succeeded and while that data is not older than
    /// `stale_after_intervals` refresh intervals.
    pub fn is_ready(&self) -> bool {
        let state = lock(&self.shared.state);
        let max_age = state
            .config
            .refresh_interval
            .saturating_mul(state.config.stale_after_intervals);
        state.last_success.is_some_and(|t| t.elapsed() <= max_age)
    }

    /// One refresh attempt. On success the new snapshot is published; on
    /// failure the previous snapshot stays exactly as it was and `openrouter_up` drops to 0.
    pub async fn refresh(&self) -> Result<(), UpstreamError> {
        let _serial = self.shared.refresh_lock.lock().await;
        let (client, config) = {
            let state = lock(&self.shared.state);
            (state.client.clone(), Arc::clone(&state.config))
        };
        let started = Instant::now();
        // The whole refresh must end before the next one is due.
        let deadline = config
            .refresh_interval
            .mul_f64(0.9)
            .max(Duration::from_millis(500));
        let fetched =
            match tokio::time::timeout(deadline, client.fetch_all(&config.openrouter.workspaces))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(UpstreamError::Deadline(deadline)),
            };
        let outcome = match fetched {
            Ok(data) => {
                let data = Arc::new(data);
                let now = Utc::now();
                let rendered = render_snapshot(Arc::clone(&config), Arc::clone(&data), now).await;
                match rendered {
                    Ok(rendered) => {
                        let mut state = lock(&self.shared.state);
                        state.last_data = Some(data);
                        state.snapshot = rendered;
                        state.last_success = Some(Instant::now());
                        state.status.up = true;
                        state.status.last_success = Some(now);
                        Ok(())
                    }
                    Err(e) => Err(UpstreamError::Decode {
                        endpoint: crate::upstream::Endpoint::Keys,
                        message: format!("rendering failed: {e}"),
                    }),
                }
            }
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed().as_secs_f64();
        {
            let mut state = lock(&self.shared.state);
            state.status.last_duration_seconds = Some(elapsed);
            if outcome.is_err() {
                state.status.up = false;
            }
        }
        match &outcome {
            Ok(()) => {
                let state = lock(&self.shared.state);
                let keys = state.last_data.as_ref().map_or(0, |d| d.keys.len());
                info!(
                    keys,
                    duration_ms = (elapsed * 1000.0) as u64,
                    "refresh succeeded"
                );
            }
            Err(e) => {
                self.shared.telemetry.count_refresh_failure(e.reason());
                if matches!(e, UpstreamError::Unauthorized { .. }) {
                    error!(error = %e, "refresh failed; keeping the previous data");
                } else {
                    warn!(error = %e, reason = e.reason(), "refresh failed; keeping the previous data");
                }
            }
        }
        self.publish();
        outcome
    }

    /// Applies a new, already validated config: rebuilds the client if the
    /// upstream settings changed, and re-attributes the last listing at once.
    /// On error nothing changes except `openrouter_config_last_reload_successful 0`.
    pub async fn apply_config(&self, config: Config) -> Result<(), ReloadError> {
        let _serial = self.shared.refresh_lock.lock().await;
        let (old, last_data) = {
            let state = lock(&self.shared.state);
            (Arc::clone(&state.config), state.last_data.clone())
        };
        let client = if old.openrouter == config.openrouter
            && matches!(self.shared.keys, KeyProvider::Fixed(_))
        {
            None
        } else {
            match make_client(
                &config,
                &self.shared.keys,
                self.shared.retry,
                &self.shared.telemetry,
            ) {
                Ok(client) => Some(client),
                Err(e) => {
                    self.reload_failed();
                    return Err(e);
                }
            }
        };
        let config = Arc::new(config);
        let snapshot = match last_data {
            Some(data) => {
                let taken_at = lock(&self.shared.state)
                    .status
                    .last_success
                    .unwrap_or_else(Utc::now);
                match render_snapshot(Arc::clone(&config), data, taken_at).await {
                    Ok(r) => Some(r),
                    Err(e) => {
                        warn!(error = %e, "re-rendering after reload failed");
                        None
                    }
                }
            }
            None => None,
        };
        {
            let mut state = lock(&self.shared.state);
            state.config = Arc::clone(&config);
            if let Some(client) = client {
                state.client = client;
            }
            if let Some(snapshot) = snapshot {
                state.snapshot = snapshot;
            }
            state.status.reload_successful = true;
            state.status.refresh_interval_seconds = config.refresh_interval.as_secs_f64();
        }
        self.shared
            .config_changed
            .send_replace(config.refresh_interval);
        self.publish();
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
                self.reload_failed();
                Err(e.into())
            }
        }
    }

    fn reload_failed(&self) {
        lock(&self.shared.state).status.reload_successful = false;
        self.publish();
    }

    /// Renders the status piece and swaps in snapshot + status as one body.
    fn publish(&self) {
        let (snapshot, status) = {
            let state = lock(&self.shared.state);
            (state.snapshot.clone(), state.status)
        };
        let telemetry = &self.shared.telemetry;
        let status_part = render(|w| {
            write_status(w, &status)?;
            let mut counters = Vec::new();
            telemetry.encode(&mut counters);
            w.raw(&counters)
        });
        let status_part = match status_part {
            Ok(part) => part,
            Err(e) => {
                error!(error = %e, "cannot render status metrics");
                return;
            }
        };
        let mut plain = Vec::with_capacity(snapshot.plain.len() + status_part.plain.len());
        plain.extend_from_slice(&snapshot.plain);
        plain.extend_from_slice(&status_part.plain);
        let mut gzip = Vec::with_capacity(snapshot.gzip.len() + status_part.gzip.len());
        gzip.extend_from_slice(&snapshot.gzip);
        gzip.extend_from_slice(&status_part.gzip);
        let published = Arc::new(Published {
            plain: Bytes::from(plain),
            gzip: Bytes::from(gzip),
        });
        match self.shared.published.write() {
            Ok(mut slot) => *slot = published,
            Err(poisoned) => *poisoned.into_inner() = published,
        }
        debug!("published new /metrics body");
    }

    /// Refreshes now and then every `refresh_interval` until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut interval_changed = self.shared.config_changed.subscribe();
        loop {
            let _ = self.refresh().await;
            let interval = *interval_changed.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = interval_changed.changed() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

fn make_client(
    config: &Config,
    keys: &KeyProvider,
    retry: RetryPolicy,
    telemetry: &Arc<Telemetry>,
) -> Result<Client, ReloadError> {
    let key = match keys {
        KeyProvider::Fixed(key) => key.clone(),
        KeyProvider::FromConfig => config.openrouter.management_key.load()?,
    };
    Ok(Client::new(
        &config.openrouter.base_url,
        key,
        config.openrouter.request_timeout,
        retry,
        Arc::clone(telemetry),
    )?)
}

/// Builds and renders a snapshot off the async threads: at 100k keys it is real CPU work.
async fn render_snapshot(
    config: Arc<Config>,
    data: Arc<UpstreamData>,
    taken_at: DateTime<Utc>,
) -> std::io::Result<Rendered> {
    let job = move || {
        let snapshot = Snapshot::build(&config, data, taken_at);
        render(|w| write_snapshot(w, &snapshot, config.metrics))
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(e)),
    }
}
