//! The exporter's state machine: refresh from OpenRouter, build a snapshot,
//! render it once, publish it atomically; reload the config safely.
//!
//! Data flows one way: config + upstream data → [`Listing`] → [`Snapshot`] →
//! rendered body ([`Published`]) → HTTP. A scrape only loads an `Arc` to the
//! last body. `docs/architecture.md` draws the tasks and locks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::SecretString;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::activity::{self, ActivityCache};
use crate::body::{self, Published};
use crate::config::{Config, ConfigError, SecretError, Selector};
use crate::direct::{self, DirectClient};
use crate::exposition::{write_snapshot, write_status, ActivityStatus, Status};
use crate::snapshot::{DirectKey, Extras, Listing, OrgList, Organization, Snapshot, Window};
use crate::telemetry::{FailureReason, Telemetry};
mod activity_runs;
mod organization;

use organization::has_creator_selectors;

use crate::upstream::{Client, DeadlineReport, RetryPolicy, UpstreamError};

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

/// Where the management key comes from: the config's source, or a fixed key (demo).
#[derive(Clone)]
enum KeyProvider {
    FromConfig,
    Fixed(SecretString),
}

struct State {
    client: Client,
    /// One client per direct key, authenticating with that key's own secret.
    direct_clients: Arc<Vec<DirectClient>>,
    /// The last complete listing, converted from the wire.
    listing: Option<Arc<Listing>>,
    /// When `listing` was fetched: the snapshot's clock for calendar windows.
    taken_at: Option<DateTime<Utc>>,
    direct: Arc<Vec<DirectKey>>,
    activity: Option<Arc<ActivityCache>>,
    /// What the published body shows; re-rendered with every status change.
    snapshot: Option<Arc<Snapshot>>,
    status: Status,
    /// When a refresh last fully succeeded and its body was published (readiness).
    last_success: Option<Instant>,
    /// Workspaces, members and caps as last read (`organization_refresh_intervals`).
    organization: Arc<Organization>,
    /// Refreshes with a listing so far: the organization lists are read when
    /// this is a multiple of `organization_refresh_intervals`.
    listings: u64,
}

struct Shared {
    state: Mutex<State>,
    /// The one source of the config: every loop watches it.
    config: watch::Sender<Arc<Config>>,
    published: ArcSwap<Published>,
    telemetry: Arc<Telemetry>,
    keys: KeyProvider,
    config_path: Option<PathBuf>,
    retry: RetryPolicy,
    /// Serialises refreshes, reloads and publishes so they never go out of order.
    refresh_lock: tokio::sync::Mutex<()>,
    /// The wall clock of refreshes (replaceable in tests, to cross a UTC boundary).
    clock: Mutex<Clock>,
}

/// A source of the current UTC time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

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
            account_up: None,
            last_success: None,
            last_duration_seconds: None,
            refresh_interval_seconds: config.refresh_interval.as_secs_f64(),
            reload_successful: true,
            activity: config.activity.enabled.then(ActivityStatus::default),
        };
        let (config, _) = watch::channel(Arc::new(config));
        let exporter = Exporter {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    client,
                    direct_clients,
                    listing: None,
                    taken_at: None,
                    direct: Arc::new(Vec::new()),
                    activity: None,
                    snapshot: None,
                    status,
                    last_success: None,
                    organization: Arc::new(Organization::default()),
                    listings: 0,
                }),
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
    /// than `stale_after_intervals` refresh intervals.
    pub fn is_ready(&self) -> bool {
        let config = self.config();
        let max_age = config
            .refresh_interval
            .saturating_mul(config.stale_after_intervals);
        let last_success = lock(&self.shared.state).last_success;
        last_success.is_some_and(|t| t.elapsed() <= max_age)
    }

    /// One refresh attempt. On success the new snapshot is published; on
    /// failure the previous snapshot stays exactly as it was and
    /// `openrouter_up` drops to 0. A failing `/credits` or direct key is not a
    /// failed listing: the new figures are published, and the failing part
    /// shows in its own metric (and `openrouter_up 0` for a direct key).
    pub async fn refresh(&self) -> Result<(), RefreshError> {
        let _serial = self.shared.refresh_lock.lock().await;
        let config = self.config();
        let (client, direct_clients, previous_direct) = {
            let state = lock(&self.shared.state);
            (
                state.client.clone(),
                Arc::clone(&state.direct_clients),
                Arc::clone(&state.direct),
            )
        };
        let started = Instant::now();
        // The whole refresh must end before the next one is due.
        let budget = config
            .refresh_interval
            .mul_f64(0.9)
            .max(Duration::from_millis(500));
        let deadline = tokio::time::Instant::now() + budget;
        let client = client.with_deadline(deadline);
        if client.previous_refresh().is_none() && config.openrouter.management_key.is_some() {
            info!(
                max_concurrent_requests = client.limiter().limit(),
                deadline_s = budget.as_secs(),
                "first refresh: no estimate of its duration yet; each later one is estimated from the one before"
            );
        }
        // The snapshot's clock starts with the fetch: no figure read before a
        // UTC boundary is published under the window that boundary opened.
        let fetch_started = self.now();
        let work = async {
            let data = match config.openrouter.management_key {
                Some(_) => Some(client.fetch_all(&config.openrouter.workspaces).await?),
                None => None,
            };
            let direct = direct::poll(&direct_clients, &previous_direct).await;
            Ok::<_, UpstreamError>((data, direct))
        };
        let fetched = match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result.map_err(RefreshError::from),
            Err(_) => Err(RefreshError::Deadline(client.deadline_report(budget))),
        };
        let outcome = match fetched {
            Ok((data, direct)) => {
                let taken_at = self.now();
                let direct = Arc::new(direct);
                let mut account_up = None;
                let mut listing = match data {
                    Some(mut data) => {
                        if let Some(e) = data.credits_error.take() {
                            self.shared
                                .telemetry
                                .count_refresh_failure(FailureReason::Credits);
                            warn!(error = %e, "GET /credits failed; publishing key and company figures without the account families");
                            account_up = Some(false);
                        } else {
                            account_up = Some(true);
                        }
                        Listing::from_upstream(data)
                    }
                    None => Listing::default(),
                };
                let crossed = crossed_windows(fetch_started, taken_at);
                if !crossed.is_empty() {
                    warn!(windows = ?crossed, "a UTC boundary passed during the fetch; those windows are omitted until the next refresh");
                    listing.omit_windows(&crossed);
                }
                let listing = Arc::new(listing);
                let direct_up = direct.iter().all(|d| d.up);
                let extras = {
                    let mut state = lock(&self.shared.state);
                    // The old snapshot goes before the new one is built, so
                    // that for a large account the two listings are never both
                    // alive (~50 MB each at 100k keys); the pages say
                    // "rebuilding" meanwhile. Small accounts keep it on show.
                    state.snapshot = None;
                    if listing.keys.len() >= LARGE_LISTING {
                        let current = self.published();
                        self.shared.published.store(Arc::new(Published {
                            snapshot: None,
                            ..(*current).clone()
                        }));
                    }
                    state.listing = Some(Arc::clone(&listing));
                    state.taken_at = Some(taken_at);
                    state.direct = Arc::clone(&direct);
                    state.status.account_up = account_up;
                    Extras {
                        direct,
                        activity: state.activity.clone().map(|cache| cache as _),
                        organization: Arc::clone(&state.organization),
                    }
                };
                match build_snapshot(Arc::clone(&config), listing, extras, taken_at).await {
                    Ok(snapshot) => {
                        let mut state = lock(&self.shared.state);
                        state.snapshot = Some(snapshot);
                        state.status.up = direct_up;
                        if direct_up {
                            state.status.last_success = Some(taken_at);
                        }
                        Ok(direct_up)
                    }
                    Err(e) => Err(e),
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
            Ok(direct_up) => {
                let keys = lock(&self.shared.state)
                    .listing
                    .as_ref()
                    .map_or(0, |l| l.keys.len());
                let record = client.record_refresh(Duration::from_secs_f64(elapsed));
                info!(
                    keys,
                    duration_ms = (elapsed * 1000.0) as u64,
                    calls = record.stats.calls,
                    peak_in_flight = record.stats.peak_in_flight,
                    direct_keys_up = direct_up,
                    "refresh succeeded"
                );
                // Half the deadline is the point to act, not the point of failure.
                if record.duration * 2 > budget {
                    warn!("{}; raise refresh_interval or openrouter.max_concurrent_requests (README: large accounts)", record.estimate(budget));
                } else {
                    info!("{}", record.estimate(budget));
                }
            }
            Err(e) => {
                self.shared.telemetry.count_refresh_failure(e.reason());
                if matches!(e.upstream(), Some(UpstreamError::Unauthorized { .. })) {
                    error!(error = %e, "refresh failed; keeping the previous data");
                } else {
                    warn!(error = %e, reason = %e.reason(), "refresh failed; keeping the previous data");
                }
            }
        }
        self.publish().await;
        if matches!(outcome, Ok(true)) {
            // Ready only once the new body is what scrapes get.
            lock(&self.shared.state).last_success = Some(Instant::now());
        }
        outcome.map(|_| ())
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
                lock(&self.shared.state).status.reload_successful = false;
                self.publish().await;
                return Err(e);
            }
        };
        let config = Arc::new(config);
        {
            let mut state = lock(&self.shared.state);
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
            state.status.activity = match (config.activity.enabled, state.status.activity) {
                (true, Some(a)) => Some(a),
                (true, None) => Some(ActivityStatus::default()),
                (false, _) => None,
            };
            if !config.activity.enabled {
                state.activity = None;
            }
        }
        if has_creator_selectors(&config) && !has_creator_selectors(&old) {
            // Creator selectors need the member list: read it with the next refresh.
            lock(&self.shared.state).listings = 0;
        }
        self.shared.config.send_replace(Arc::clone(&config));
        self.rebuild_snapshot().await;
        self.publish().await;
        info!(companies = config.companies.len(), "configuration applied");
        Ok(())
    }

    /// Rebuilds the snapshot from the last listing with the current config
    /// and activity data (after a reload or an activity run). Caller holds `refresh_lock`.
    async fn rebuild_snapshot(&self) {
        let config = self.config();
        let (listing, taken_at, extras) = {
            let state = lock(&self.shared.state);
            let Some(listing) = state.listing.clone() else {
                return;
            };
            let extras = Extras {
                direct: Arc::clone(&state.direct),
                activity: state.activity.clone().map(|cache| cache as _),
                organization: Arc::clone(&state.organization),
            };
            (listing, state.taken_at.unwrap_or_else(Utc::now), extras)
        };
        match build_snapshot(config, listing, extras, taken_at).await {
            Ok(snapshot) => lock(&self.shared.state).snapshot = Some(snapshot),
            Err(e) => {
                warn!(error = %e, "rebuilding the snapshot failed; keeping the previous one")
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
                let _serial = self.shared.refresh_lock.lock().await;
                lock(&self.shared.state).status.reload_successful = false;
                self.publish().await;
                Err(e.into())
            }
        }
    }

    /// Renders the snapshot and the status into a new body and swaps it in.
    /// Callers hold `refresh_lock`, so publishes never go out of order.
    async fn publish(&self) {
        let (snapshot, mut status) = {
            let state = lock(&self.shared.state);
            (state.snapshot.clone(), state.status)
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
        let counters = self.shared.telemetry.counters();
        let options = self.config().metrics;
        let estimate = snapshot
            .as_deref()
            .map_or(0, |s| crate::exposition::text_estimate(s, options));
        let mut published = body::render(&self.published(), estimate, |w| {
            if let Some(snapshot) = &snapshot {
                write_snapshot(w, snapshot, options)?;
            }
            write_status(w, &status, &counters)
        })?;
        published.snapshot = snapshot;
        published.status = Some(status);
        Ok(published)
    }

    /// Refreshes now and then every `refresh_interval` until `shutdown` turns
    /// true; before the first refresh and every `organization_refresh_intervals`
    /// refreshes, reads workspaces, members and caps first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut config_changed = self.watch_config();
        self.check_management_key().await;
        loop {
            let started = tokio::time::Instant::now();
            let due = {
                let mut state = lock(&self.shared.state);
                let every = u64::from(self.config().organization_refresh_intervals.max(1));
                let due = state.listings % every == 0;
                state.listings += 1;
                due
            };
            if due {
                self.read_organization().await;
            }
            let _ = self.refresh().await;
            // A reload re-renders at once from the last listing; it only moves
            // the next refresh to `started + new interval`, never triggers one.
            loop {
                let interval = config_changed.borrow_and_update().refresh_interval;
                tokio::select! {
                    _ = tokio::time::sleep_until(started + interval) => break,
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

/// Listings of at least this many keys let their old snapshot go before the
/// new one is built (memory over a brief "rebuilding" on the pages).
const LARGE_LISTING: usize = 20_000;

/// The calendar windows whose UTC boundary passed between `from` and `to`.
fn crossed_windows(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Window> {
    Window::ALL
        .into_iter()
        .filter(|w| w.end(from).is_some_and(|end| end <= to))
        .collect()
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

/// Builds a snapshot off the async threads: at 100k keys it is real CPU work.
async fn build_snapshot(
    config: Arc<Config>,
    listing: Arc<Listing>,
    extras: Extras,
    taken_at: DateTime<Utc>,
) -> Result<Arc<Snapshot>, RefreshError> {
    let job = move || Arc::new(Snapshot::build(&config, listing, &extras, taken_at));
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| RefreshError::Render(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use chrono::TimeZone;

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
        assert_eq!(gunzip(&empty.gzip), empty.plain.to_vec());
        assert!(String::from_utf8_lossy(&empty.plain).contains("\nopenrouter_up 0\n"));
        exporter.refresh().await.unwrap();
        let first = exporter.published();
        assert!(first.has_plain());
        assert_eq!(gunzip(&first.gzip), first.plain.to_vec());
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
        assert_eq!(gunzip(&failed.gzip), failed.plain.to_vec());
        assert_eq!(snapshot_part(&first.plain), snapshot_part(&failed.plain));
        let text = String::from_utf8_lossy(&failed.plain);
        assert!(text.contains("\nopenrouter_up 0\n"));
        assert!(text.contains("openrouter_refresh_failures_total{reason=\"server_error\"} 1\n"));
    }

    #[test]
    fn crossed_windows_are_the_boundaries_inside_the_fetch() {
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 11, 29, h, m, s).unwrap();
        // Sunday 23:59:59 → Monday 00:00:01 (not a month end): day and week.
        let monday = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 1).unwrap();
        assert_eq!(
            crossed_windows(at(23, 59, 59), monday),
            vec![Window::Daily, Window::Weekly]
        );
        assert!(crossed_windows(at(12, 0, 0), at(12, 0, 5)).is_empty());
        let december = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap();
        assert_eq!(
            crossed_windows(
                Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59).unwrap(),
                december
            ),
            vec![Window::Daily, Window::Monthly]
        );
    }
}
