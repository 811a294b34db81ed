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
                        activity: state.activity.clone(),
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
                activity: state.activity.clone(),
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

    /// One activity run: fetches the days each listed key is missing or due
    /// to re-read, at most `activity.calls_per_second`, keeping each key's
    /// result as it arrives. Returns the calls planned; `Err` (the first
    /// failure) when any key's call failed: the other keys' results are kept,
    /// and `openrouter_activity_up` is 0 until a run succeeds for every key.
    pub async fn refresh_activity(&self) -> Result<usize, UpstreamError> {
        self.refresh_activity_at(Utc::now()).await
    }

    /// [`Exporter::refresh_activity`] as if the current UTC date were `today`
    /// (at the current time of day).
    pub async fn refresh_activity_on(&self, today: NaiveDate) -> Result<usize, UpstreamError> {
        let at = today.and_time(Utc::now().time()).and_utc();
        self.refresh_activity_at(at).await
    }

    /// [`Exporter::refresh_activity`] as if it were `now`: the run's days are
    /// those completed before `now`'s UTC date, even if it crosses midnight.
    pub async fn refresh_activity_at(&self, now: DateTime<Utc>) -> Result<usize, UpstreamError> {
        let config = self.config();
        if !config.activity.enabled || config.openrouter.management_key.is_none() {
            return Ok(0);
        }
        let today = now.date_naive();
        let started = Instant::now();
        // Prune and plan against the latest listing; under the lock no
        // snapshot build holds the cache, so it is updated in place, never copied.
        let (client, listing, plan) = {
            let _serial = self.shared.refresh_lock.lock().await;
            let mut state = lock(&self.shared.state);
            // Nothing is listed before the first refresh.
            let Some(listing) = state.listing.clone() else {
                return Ok(0);
            };
            let client = state.client.clone();
            let cache = Arc::make_mut(state.activity.get_or_insert_with(Default::default));
            let listed = listing.keys.iter().map(|k| k.hash.as_str()).collect();
            cache.prune(&listed, today);
            let plan = cache.plan(listing.keys.iter().map(|k| k.hash.as_str()), now);
            (client, listing, plan)
        };
        let calls = plan.len();
        let rate = config.activity.calls_per_second.max(1);
        if calls > 0 {
            info!(
                calls,
                calls_per_second = rate,
                eta_seconds = calls.div_ceil(rate as usize),
                "activity run started"
            );
        }
        let mut fetcher = activity::Fetcher::new(client, plan, config.activity.concurrency, rate);
        let mut batch: Vec<ActivityResult> = Vec::new();
        let mut first_error: Option<UpstreamError> = None;
        let (mut failed, mut gone, mut unreadable) = (0usize, 0usize, 0usize);
        let mut last_flush = Instant::now();
        let mut last_publish = Instant::now();
        while let Some((hash, fetch, result)) = fetcher.next().await {
            let read_at = now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
            match result {
                Ok(rows) => batch.push(ActivityResult::Rows(hash, fetch, rows, read_at)),
                Err(e) if e.status() == Some(404) => {
                    gone += 1;
                    debug!(key_hash = %hash, "activity: 404, the key is gone since the listing; skipped");
                    batch.push(ActivityResult::Gone(hash, read_at));
                }
                Err(e) => {
                    failed += 1;
                    if failed <= 3 {
                        warn!(key_hash = %hash, error = %e, "activity call failed; the key's missing days stay unknown until the next run");
                    }
                    if matches!(e, UpstreamError::Unauthorized { .. }) {
                        // Every other call would be refused too.
                        fetcher.stop();
                    }
                    first_error.get_or_insert(e);
                    batch.push(ActivityResult::Failed(hash));
                }
            }
            let finished = fetcher.remaining() == 0;
            if last_flush.elapsed() >= ACTIVITY_FLUSH_EVERY || finished {
                // Never waits for a refresh in progress: the batch just grows.
                if let Ok(_serial) = self.shared.refresh_lock.try_lock() {
                    unreadable += self.apply_activity(&mut batch, &listing, today, None);
                    last_flush = Instant::now();
                    if last_publish.elapsed() >= ACTIVITY_PUBLISH_EVERY && !finished {
                        self.rebuild_snapshot().await;
                        self.publish().await;
                        last_publish = Instant::now();
                        let p = lock(&self.shared.state)
                            .status
                            .activity
                            .and_then(|a| a.keys)
                            .unwrap_or_default();
                        info!(
                            complete = p.complete,
                            pending = p.pending,
                            failed = p.failed,
                            gone = p.gone,
                            calls_left = fetcher.remaining(),
                            eta_seconds = fetcher.remaining().div_ceil(rate as usize),
                            "activity fill in progress"
                        );
                    }
                }
            }
        }
        let _serial = self.shared.refresh_lock.lock().await;
        let ok = failed == 0;
        let mut last = None;
        unreadable += self.apply_activity(&mut batch, &listing, today, Some(&mut last));
        let ok = ok && unreadable == 0;
        if let Some(status) = lock(&self.shared.state).status.activity.as_mut() {
            status.up = ok;
            if ok {
                status.last_success = Some(Utc::now());
            }
        }
        if !ok {
            self.shared
                .telemetry
                .count_refresh_failure(FailureReason::Activity);
        }
        self.rebuild_snapshot().await;
        self.publish().await;
        let p = last.unwrap_or_default();
        let seconds = started.elapsed().as_secs();
        if ok {
            info!(
                calls,
                gone,
                complete = p.complete,
                seconds,
                "activity run succeeded"
            );
            Ok(calls)
        } else {
            warn!(
                calls,
                failed,
                unreadable,
                gone,
                complete = p.complete,
                seconds,
                "activity run incomplete; the other keys' results are kept, the failed keys are retried next run"
            );
            Err(first_error.unwrap_or_else(|| UpstreamError::Decode {
                endpoint: crate::upstream::Endpoint::Activity,
                message: format!(
                    "{unreadable} key(s) answered rows without a readable date or usage; their days stay unknown"
                ),
            }))
        }
    }

    /// Records finished activity calls in the cache and the progress in the
    /// status. Caller holds `refresh_lock`. Returns the keys whose rows could not be read.
    fn apply_activity(
        &self,
        batch: &mut Vec<ActivityResult>,
        listing: &Listing,
        today: NaiveDate,
        progress: Option<&mut Option<activity::Progress>>,
    ) -> usize {
        let mut state = lock(&self.shared.state);
        let cache = Arc::make_mut(state.activity.get_or_insert_with(Default::default));
        let mut unreadable = 0;
        for result in batch.drain(..) {
            match result {
                ActivityResult::Rows(hash, fetch, rows, read_at) => {
                    if let Err(e) = cache.apply_at(&hash, &fetch, &rows, today, read_at) {
                        warn!(key_hash = %hash, rows = e.rows, "activity rows without a readable date or usage; the key's days stay unknown");
                        unreadable += 1;
                    }
                }
                ActivityResult::Gone(hash, at) => cache.mark_gone(&hash, at),
                ActivityResult::Failed(hash) => cache.mark_failed(&hash),
            }
        }
        let keys = cache.progress(listing.keys.iter().map(|k| k.hash.as_str()), today);
        let cached_keys = cache.keys();
        if let Some(out) = progress {
            *out = Some(keys);
        }
        if let Some(status) = state.status.activity.as_mut() {
            status.cached_keys = cached_keys;
            status.keys = Some(keys);
        }
        unreadable
    }

    /// Runs activity collection every `activity.refresh_interval` and shortly
    /// after each UTC midnight (when a day completes), until `shutdown`. A
    /// long first fill runs in the background of the refresh loop; shutdown
    /// stops it at once, keeping what has arrived.
    pub async fn run_activity(&self, mut shutdown: watch::Receiver<bool>) {
        let mut config_changed = self.watch_config();
        loop {
            let config = self.config();
            let listed = lock(&self.shared.state).listing.is_some();
            let wait = if config.activity.enabled && !listed {
                // Activity is per listed key: wait for the first listing.
                Duration::from_millis(250)
            } else if config.activity.enabled {
                tokio::select! {
                    _ = self.refresh_activity() => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
                let now = Utc::now();
                let after_midnight = Window::Daily
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

    /// Reads workspaces, members (when a company has a `creator` selector),
    /// guardrails, their key assignments and workspace budgets, then re-attributes
    /// the last listing and publishes. Each list that fails keeps its last good
    /// value and is marked stale; no failure here fails a key refresh.
    pub async fn refresh_organization(&self) {
        self.read_organization().await;
        let _serial = self.shared.refresh_lock.lock().await;
        self.rebuild_snapshot().await;
        self.publish().await;
    }

    /// The reading part of [`Exporter::refresh_organization`]: stores the lists
    /// in the state for the next snapshot (the caller rebuilds or refreshes).
    async fn read_organization(&self) {
        let config = self.config();
        if config.openrouter.management_key.is_none() {
            return;
        }
        let (client, previous) = {
            let state = lock(&self.shared.state);
            (state.client.clone(), Arc::clone(&state.organization))
        };
        let budget = config
            .refresh_interval
            .mul_f64(0.45)
            .max(Duration::from_millis(250));
        let deadline = tokio::time::Instant::now() + budget;
        let client = client.with_deadline(deadline);
        let mut org = (*previous).clone();
        let mut lists = vec![OrgList::Workspaces];
        if has_creator_selectors(&config) {
            lists.push(OrgList::Members);
        }
        lists.extend([
            OrgList::Guardrails,
            OrgList::GuardrailAssignments,
            OrgList::WorkspaceBudgets,
        ]);
        let mut done = Vec::new();
        let work = read_lists(&client, &lists, &mut org, &mut done);
        if tokio::time::timeout_at(deadline, work).await.is_err() {
            warn!(
                seconds = budget.as_secs_f64(),
                "reading workspaces, members and caps did not finish in time; the unread lists keep their last values"
            );
        }
        for list in lists {
            if !done.contains(&list) {
                org.mark(list, false);
            }
        }
        lock(&self.shared.state).organization = Arc::new(org);
    }

    /// At start: says plainly when the management key is not one (`GET /key`
    /// answers `is_management_key: false`) or is refused, instead of leaving
    /// it to a generic 401/403 from `/keys`. Logs once; never fails.
    pub async fn check_management_key(&self) {
        let config = self.config();
        let Some(source) = config.openrouter.management_key.clone() else {
            return;
        };
        let client = lock(&self.shared.state).client.clone();
        match client.check_key().await {
            Ok(check) if check.is_management_key == Some(false) => error!(
                key_source = %source,
                "the key in {source} is not a management key (GET /key answers is_management_key: false); \
                 the exporter needs one: create a management key at https://openrouter.ai/settings/management-keys \
                 and put it in {source}"
            ),
            Ok(_) => debug!("management key check passed"),
            Err(e @ UpstreamError::Unauthorized { .. }) => error!(
                key_source = %source, error = %e,
                "OpenRouter refuses the key in {source}: it is revoked, mistyped or not a management key; \
                 create a management key at https://openrouter.ai/settings/management-keys and put it in {source}"
            ),
            Err(e) => {
                debug!(error = %e, "management key check inconclusive; the refresh will tell")
            }
        }
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

/// How often a long activity run records what has arrived, and publishes it.
const ACTIVITY_FLUSH_EVERY: Duration = Duration::from_secs(1);
const ACTIVITY_PUBLISH_EVERY: Duration = Duration::from_secs(30);

/// One finished activity call, waiting to be recorded.
enum ActivityResult {
    Rows(
        String,
        activity::Fetch,
        Vec<activity::ActivityRow>,
        DateTime<Utc>,
    ),
    Gone(String, DateTime<Utc>),
    Failed(String),
}

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

fn has_creator_selectors(config: &Config) -> bool {
    config
        .companies
        .iter()
        .flat_map(|c| &c.selectors)
        .any(|s| matches!(s, Selector::Creator(_)))
}

/// Reads `lists` into `org`, recording each one read in `done`.
async fn read_lists(
    client: &Client,
    lists: &[OrgList],
    org: &mut Organization,
    done: &mut Vec<OrgList>,
) {
    for &list in lists {
        let result: Result<(), UpstreamError> = async {
            match list {
                OrgList::Workspaces => {
                    let listed = client.list_workspaces().await?.unwrap_or_default();
                    org.set_workspaces(listed);
                }
                OrgList::Members => org.set_members(client.list_members().await?),
                OrgList::Guardrails => org.set_guardrails(client.list_guardrails().await?),
                OrgList::GuardrailAssignments => {
                    org.set_guardrail_assignments(client.list_guardrail_key_assignments().await?)
                }
                OrgList::WorkspaceBudgets => {
                    let Some(slugs) = org.workspace_slugs.as_ref() else {
                        return Err(UpstreamError::Transport {
                            endpoint: crate::upstream::Endpoint::WorkspaceBudgets,
                            message: "the workspace list was never read, so which workspaces to ask is unknown".into(),
                        });
                    };
                    let mut ids: Vec<String> = slugs.keys().cloned().collect();
                    ids.sort();
                    let mut budgets = Vec::new();
                    for id in ids {
                        budgets.extend(client.workspace_budgets(&id).await?);
                    }
                    org.set_workspace_budgets(budgets);
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            warn!(list = list.as_str(), error = %e, "reading an organization list failed; keeping its last good values (openrouter_organization_list_stale 1)");
        }
        org.mark(list, result.is_ok());
        done.push(list);
    }
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
