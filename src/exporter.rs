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
use chrono::{DateTime, NaiveDate, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use secrecy::SecretString;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::activity::{self, ActivityCache};
use crate::config::{Config, ConfigError, SecretError};
use crate::exposition::{write_snapshot, write_status, ActivityStatus, MetricWriter, Status};
use crate::snapshot::{DirectKey, Extras, Snapshot};
use crate::telemetry::Telemetry;
use crate::upstream::{Client, Endpoint, RetryPolicy, UpstreamData, UpstreamError};

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
    #[error("direct key {0:?}: {1}")]
    DirectKey(String, SecretError),
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
    /// One client per direct key, authenticating with that key's own secret.
    direct_clients: Arc<Vec<DirectClient>>,
    last_data: Option<Arc<UpstreamData>>,
    /// When `last_data` was fetched: the snapshot's clock for calendar windows.
    taken_at: Option<DateTime<Utc>>,
    direct: Arc<Vec<DirectKey>>,
    activity: Option<Arc<ActivityCache>>,
    snapshot: Rendered,
    status: Status,
    last_success: Option<Instant>,
}

#[derive(Clone)]
struct DirectClient {
    company: usize,
    name: String,
    client: Client,
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
        let direct_clients = Arc::new(make_direct_clients(&config, &client)?);
        let status = Status {
            up: false,
            last_success: None,
            last_duration_seconds: None,
            refresh_interval_seconds: config.refresh_interval.as_secs_f64(),
            reload_successful: true,
            activity: config.activity.enabled.then(ActivityStatus::default),
        };
        let (config_changed, _) = watch::channel(config.refresh_interval);
        let exporter = Exporter {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    config: Arc::new(config),
                    client,
                    direct_clients,
                    last_data: None,
                    taken_at: None,
                    direct: Arc::new(Vec::new()),
                    activity: None,
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
        let (client, config, direct_clients, previous_direct, activity) = {
            let state = lock(&self.shared.state);
            (
                state.client.clone(),
                Arc::clone(&state.config),
                Arc::clone(&state.direct_clients),
                Arc::clone(&state.direct),
                state.activity.clone(),
            )
        };
        let started = Instant::now();
        // The whole refresh must end before the next one is due.
        let deadline = config
            .refresh_interval
            .mul_f64(0.9)
            .max(Duration::from_millis(500));
        let work = async {
            let data = match config.openrouter.management_key {
                Some(_) => client.fetch_all(&config.openrouter.workspaces).await?,
                None => UpstreamData::default(),
            };
            let direct = poll_direct(&direct_clients, &previous_direct).await;
            Ok::<_, UpstreamError>((data, direct))
        };
        let fetched = match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Deadline(deadline)),
        };
        let outcome = match fetched {
            Ok((data, direct)) => {
                let data = Arc::new(data);
                let extras = Extras {
                    direct: Arc::new(direct),
                    activity,
                };
                let now = Utc::now();
                let rendered =
                    render_snapshot(Arc::clone(&config), Arc::clone(&data), extras.clone(), now)
                        .await;
                match rendered {
                    Ok(rendered) => {
                        let mut state = lock(&self.shared.state);
                        state.last_data = Some(data);
                        state.taken_at = Some(now);
                        state.direct = extras.direct;
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
        let (old, client) = {
            let state = lock(&self.shared.state);
            (Arc::clone(&state.config), state.client.clone())
        };
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
                self.reload_failed();
                return Err(e);
            }
        };
        let config = Arc::new(config);
        {
            let mut state = lock(&self.shared.state);
            state.config = Arc::clone(&config);
            state.client = client;
            state.direct_clients = Arc::new(direct_clients);
            // Direct keys keep their last figures only while they stay in the config.
            let kept: Vec<DirectKey> = state
                .direct
                .iter()
                .filter_map(|d| {
                    let (company, _, _) =
                        config.direct_keys().find(|(_, name, _)| *name == d.name)?;
                    Some(DirectKey {
                        company,
                        ..d.clone()
                    })
                })
                .collect();
            state.direct = Arc::new(kept);
            state.status.reload_successful = true;
            state.status.refresh_interval_seconds = config.refresh_interval.as_secs_f64();
            state.status.activity = match (config.activity.enabled, state.status.activity) {
                (true, Some(a)) => Some(a),
                (true, None) => Some(ActivityStatus::default()),
                (false, _) => None,
            };
            if !config.activity.enabled {
                state.activity = None;
            }
        }
        self.rerender().await;
        self.shared
            .config_changed
            .send_replace(config.refresh_interval);
        self.publish();
        info!(companies = config.companies.len(), "configuration applied");
        Ok(())
    }

    /// Re-renders the snapshot from the last listing with the current config
    /// and activity data (after a reload or an activity run). Caller holds `refresh_lock`.
    async fn rerender(&self) {
        let (config, data, taken_at, extras) = {
            let state = lock(&self.shared.state);
            let Some(data) = state.last_data.clone() else {
                return;
            };
            let extras = Extras {
                direct: Arc::clone(&state.direct),
                activity: state.activity.clone(),
            };
            (
                Arc::clone(&state.config),
                data,
                state.taken_at.unwrap_or_else(Utc::now),
                extras,
            )
        };
        match render_snapshot(config, data, extras, taken_at).await {
            Ok(rendered) => lock(&self.shared.state).snapshot = rendered,
            Err(e) => {
                warn!(error = %e, "re-rendering the snapshot failed; keeping the previous one")
            }
        }
    }

    /// One activity run: fetches the days each listed key is missing, then
    /// re-renders with the new cache. All-or-nothing: on failure the previous
    /// activity data stays and `openrouter_activity_up` is 0. Returns the calls made.
    pub async fn refresh_activity(&self) -> Result<usize, UpstreamError> {
        self.refresh_activity_on(Utc::now().date_naive()).await
    }

    /// [`Exporter::refresh_activity`] as if the current UTC date were `today`.
    pub async fn refresh_activity_on(&self, today: NaiveDate) -> Result<usize, UpstreamError> {
        let (client, config, data, cache) = {
            let state = lock(&self.shared.state);
            (
                state.client.clone(),
                Arc::clone(&state.config),
                state.last_data.clone(),
                state.activity.clone().unwrap_or_default(),
            )
        };
        if !config.activity.enabled || config.openrouter.management_key.is_none() {
            return Ok(0);
        }
        // Nothing is listed before the first refresh.
        let Some(data) = data else { return Ok(0) };
        let plan = cache.plan(data.keys.iter().map(|k| k.hash.as_str()), today);
        let calls = plan.len();
        let fetched = activity::fetch(&client, plan, config.activity.concurrency).await;
        let _serial = self.shared.refresh_lock.lock().await;
        match fetched {
            Ok(results) => {
                let mut cache = (*cache).clone();
                for (hash, what, rows) in &results {
                    cache.apply(hash, what, rows, today);
                }
                let listed = data.keys.iter().map(|k| k.hash.as_str()).collect();
                cache.prune(&listed, today);
                {
                    let mut state = lock(&self.shared.state);
                    let cached_keys = cache.keys();
                    state.activity = Some(Arc::new(cache));
                    state.status.activity = Some(ActivityStatus {
                        up: true,
                        last_success: Some(Utc::now()),
                        cached_keys,
                    });
                }
                self.rerender().await;
                self.publish();
                info!(calls, "activity run succeeded");
                Ok(calls)
            }
            Err(e) => {
                {
                    let mut state = lock(&self.shared.state);
                    if let Some(status) = state.status.activity.as_mut() {
                        status.up = false;
                    }
                }
                self.shared.telemetry.count_refresh_failure("activity");
                warn!(error = %e, "activity run failed; keeping the previous activity data");
                self.publish();
                Err(e)
            }
        }
    }

    /// Runs activity collection every `activity.refresh_interval` and shortly
    /// after each UTC midnight (when a day completes), until `shutdown`.
    pub async fn run_activity(&self, mut shutdown: watch::Receiver<bool>) {
        let mut config_changed = self.shared.config_changed.subscribe();
        loop {
            let config = self.config();
            let listed = lock(&self.shared.state).last_data.is_some();
            let wait = if config.activity.enabled && !listed {
                // Activity is per listed key: wait for the first listing.
                Duration::from_millis(250)
            } else if config.activity.enabled {
                let _ = self.refresh_activity().await;
                let now = Utc::now();
                let after_midnight = crate::snapshot::Window::Daily
                    .end(now)
                    .map(|end| end + chrono::Duration::minutes(10) - now)
                    .and_then(|d| d.to_std().ok())
                    .unwrap_or(config.activity.refresh_interval);
                config.activity.refresh_interval.min(after_midnight)
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = config_changed.changed() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
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

fn make_direct_clients(config: &Config, base: &Client) -> Result<Vec<DirectClient>, ReloadError> {
    config
        .direct_keys()
        .map(|(company, name, secret)| {
            let key = secret
                .load()
                .map_err(|e| ReloadError::DirectKey(name.to_string(), e))?;
            Ok(DirectClient {
                company,
                name: name.to_string(),
                client: base.with_bearer(key),
            })
        })
        .collect()
}

/// Polls every direct key with its own secret. Never fails as a whole: a key
/// that fails keeps its last good figures and is marked down.
async fn poll_direct(clients: &[DirectClient], previous: &[DirectKey]) -> Vec<DirectKey> {
    let mut tasks = tokio::task::JoinSet::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
    for (index, direct) in clients.iter().cloned().enumerate() {
        let semaphore = Arc::clone(&semaphore);
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let result: Result<serde_json::Value, _> =
                direct.client.get_data(Endpoint::Key, "/key").await;
            let key = result.and_then(|mut value| {
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("hash".into(), format!("direct:{}", direct.name).into());
                    obj.insert("name".into(), direct.name.clone().into());
                }
                serde_json::from_value::<crate::upstream::ApiKey>(value).map_err(|e| {
                    UpstreamError::Decode {
                        endpoint: Endpoint::Key,
                        message: e.to_string(),
                    }
                })
            });
            (index, direct, key)
        });
    }
    let mut polled = Vec::with_capacity(clients.len());
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, direct, key)) = joined else {
            continue;
        };
        let entry = match key {
            Ok(key) => DirectKey {
                company: direct.company,
                name: direct.name,
                key: Some(key),
                up: true,
            },
            Err(e) => {
                warn!(key = %direct.name, error = %e, "direct key poll failed; keeping its last figures");
                DirectKey {
                    company: direct.company,
                    key: previous
                        .iter()
                        .find(|p| p.name == direct.name)
                        .and_then(|p| p.key.clone()),
                    name: direct.name,
                    up: false,
                }
            }
        };
        polled.push((index, entry));
    }
    polled.sort_by_key(|(i, _)| *i);
    polled.into_iter().map(|(_, d)| d).collect()
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
    )?)
}

/// Builds and renders a snapshot off the async threads: at 100k keys it is real CPU work.
async fn render_snapshot(
    config: Arc<Config>,
    data: Arc<UpstreamData>,
    extras: Extras,
    taken_at: DateTime<Utc>,
) -> std::io::Result<Rendered> {
    let job = move || {
        let snapshot = Snapshot::build(&config, data, &extras, taken_at);
        render(|w| write_snapshot(w, &snapshot, config.metrics))
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(e)),
    }
}
