//! The OpenRouter management API client: workspaces, paginated key listings,
//! credits, and `GET /key` for direct keys. Wire types stop here: the snapshot
//! converts them once (`snapshot::Listing`).
//!
//! One `reqwest` client with explicit timeouts. Every HTTP call is counted in
//! `openrouter_upstream_requests_total`; 429, 5xx, connection errors and
//! timeouts are retried with bounded exponential backoff and jitter, honouring
//! `Retry-After` up to the refresh deadline. 401/403 are never retried.
//!
//! The API documents no page size for `/keys` (newer list endpoints default
//! to 50), so a listing never trusts one: it ends on an empty page. A
//! non-empty page that adds no new key means the server ignores `offset`:
//! that fails the refresh (`reason="pagination"`) rather than drop keys.
//!
//! Over a real network every page costs a round trip, so a workspace's pages
//! are fetched ahead in a sliding window once the first page has shown the
//! page size ([`Client::list_keys`]), and assembled in offset order. Every
//! call of every clone of a client shares one [`Limiter`]: at most
//! `openrouter.max_concurrent_requests` calls in flight, fewer after a 429 or
//! 503 (the window halves, every call waits out the back-off, then the window
//! grows back by one per window of successful calls).

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::{is_uuid, Workspaces, DEFAULT_MAX_CONCURRENT_REQUESTS};
use crate::telemetry::{FailureReason, Telemetry};

/// Bodies above this are refused: a key page is ~100 KiB, so this is a hostile or broken upstream.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Pagination guard: 1,000,000 pages is far beyond any real account.
const MAX_PAGES: usize = 1_000_000;
/// Workspaces asked for per page (the documented maximum is 100).
const WORKSPACE_PAGE: usize = 100;

/// `null` reads as the type's default (an empty name or label is "not reported").
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One key as listed by `GET /keys`. Every field but `hash` may be `null` or
/// absent (older or partial responses): unknown stays unknown (`None`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ApiKey {
    pub hash: Box<str>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: Box<str>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub label: Box<str>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub limit: Option<f64>,
    #[serde(default)]
    pub limit_remaining: Option<f64>,
    #[serde(default)]
    pub limit_reset: Option<Box<str>>,
    #[serde(default)]
    pub usage: Option<f64>,
    #[serde(default)]
    pub usage_daily: Option<f64>,
    #[serde(default)]
    pub usage_weekly: Option<f64>,
    #[serde(default)]
    pub usage_monthly: Option<f64>,
    #[serde(default)]
    pub byok_usage: Option<f64>,
    #[serde(default)]
    pub byok_usage_daily: Option<f64>,
    #[serde(default)]
    pub byok_usage_weekly: Option<f64>,
    #[serde(default)]
    pub byok_usage_monthly: Option<f64>,
    #[serde(default)]
    pub workspace_id: Option<Box<str>>,
    #[serde(default)]
    pub expires_at: Option<Box<str>>,
    /// The organization member who created the key (`GET /organization/members` ids).
    #[serde(default)]
    pub creator_user_id: Option<Box<str>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Workspace {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub slug: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct Credits {
    pub total_credits: f64,
    pub total_usage: f64,
}

#[derive(Debug, Deserialize)]
struct DataEnvelope<T> {
    data: T,
}

#[derive(Debug, Deserialize)]
struct WorkspacePage {
    data: Vec<Workspace>,
    #[serde(default)]
    total_count: Option<u64>,
}

/// One organization member (`GET /organization/members`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Member {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
}

/// One guardrail (`GET /guardrails`): a spending cap (`limit_usd`, per
/// `reset_interval`; `null` = lifetime) and/or model and provider rules.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Guardrail {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub limit_usd: Option<f64>,
    #[serde(default)]
    pub reset_interval: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
}

/// One guardrail assigned to one key (`GET /guardrails/assignments/keys`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct GuardrailKeyAssignment {
    pub key_hash: String,
    pub guardrail_id: String,
}

/// One budget OpenRouter enforces on a workspace (`GET /workspaces/{id}/budgets`;
/// `reset_interval` `null` = lifetime).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WorkspaceBudget {
    #[serde(default)]
    pub id: Option<String>,
    pub workspace_id: String,
    pub limit_usd: f64,
    #[serde(default)]
    pub reset_interval: Option<String>,
}

/// What `GET /key` says about the calling key (the management-key check at start).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct KeyCheck {
    #[serde(default)]
    pub is_management_key: Option<bool>,
    #[serde(default)]
    pub is_provisioning_key: Option<bool>,
}

/// One page of a list endpoint that reports `total_count`.
#[derive(Debug, Deserialize)]
pub struct CountedPage<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub total_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

/// Decodes one `GET /keys` page body (`{"data": [key, ...]}`): the code the
/// client runs on every page, exposed for fuzzing. Never panics.
pub fn parse_keys_page(bytes: &[u8]) -> Result<Vec<ApiKey>, UpstreamError> {
    decode(Endpoint::Keys, bytes)
}

fn decode<T: DeserializeOwned>(endpoint: Endpoint, bytes: &[u8]) -> Result<T, UpstreamError> {
    serde_json::from_slice::<DataEnvelope<T>>(bytes)
        .map(|envelope| envelope.data)
        .map_err(|e| UpstreamError::Decode {
            endpoint,
            message: e.to_string(),
        })
}

/// Everything one refresh learned from OpenRouter.
#[derive(Debug, Default)]
pub struct UpstreamData {
    /// Every listed key once, in listing order, with the workspace it was listed under.
    pub keys: Vec<ApiKey>,
    /// `None` when `/credits` could not be read (see `credits_error`).
    pub credits: Option<Credits>,
    /// Why `/credits` failed: the listing is still complete and published,
    /// only the account figures are unknown.
    pub credits_error: Option<UpstreamError>,
}

/// Which API call failed; a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Workspaces,
    Keys,
    Credits,
    Activity,
    /// `GET /key`: the calling key itself (direct-key mode).
    Key,
    /// `GET /organization/members`.
    Members,
    /// `GET /guardrails`.
    Guardrails,
    /// `GET /guardrails/assignments/keys`.
    GuardrailAssignments,
    /// `GET /workspaces/{id}/budgets`.
    WorkspaceBudgets,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Workspaces => "workspaces",
            Endpoint::Keys => "keys",
            Endpoint::Credits => "credits",
            Endpoint::Activity => "activity",
            Endpoint::Key => "key",
            Endpoint::Members => "organization/members",
            Endpoint::Guardrails => "guardrails",
            Endpoint::GuardrailAssignments => "guardrails/assignments/keys",
            Endpoint::WorkspaceBudgets => "workspaces/{id}/budgets",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "GET /{endpoint}: HTTP {status}: {message} (OpenRouter needs a management key here, \
         created at https://openrouter.ai/settings/management-keys; an inference key is refused)"
    )]
    Unauthorized {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    #[error("GET /{endpoint}: HTTP {status}: {message}")]
    Status {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    #[error("GET /{endpoint}: rate limited: the server asks to wait {retry_after:?}, past the refresh deadline")]
    RetryAfterPastDeadline {
        endpoint: Endpoint,
        retry_after: Duration,
    },
    #[error("GET /{endpoint}: timed out")]
    Timeout { endpoint: Endpoint },
    #[error("GET /{endpoint}: {message}")]
    Transport { endpoint: Endpoint, message: String },
    #[error("GET /{endpoint}: invalid response: {message}")]
    Decode { endpoint: Endpoint, message: String },
    #[error("GET /{endpoint}: response body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { endpoint: Endpoint },
    /// `listing` names what was being listed: `/workspaces` or `/keys?workspace_id=…`.
    #[error("GET {listing}: pagination did not end: {message}")]
    Pagination { listing: String, message: String },
    #[error(
        "workspace {0:?} is neither a workspace id nor the slug of a workspace of this account"
    )]
    UnknownWorkspace(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl UpstreamError {
    /// Bounded `reason` label for `openrouter_refresh_failures_total`.
    pub fn reason(&self) -> FailureReason {
        match self {
            UpstreamError::Unauthorized { .. } => FailureReason::Unauthorized,
            UpstreamError::Status { status: 429, .. }
            | UpstreamError::RetryAfterPastDeadline { .. } => FailureReason::RateLimited,
            UpstreamError::Status { status, .. } if *status >= 500 => FailureReason::ServerError,
            UpstreamError::Status { .. } | UpstreamError::UnknownWorkspace(_) => {
                FailureReason::ClientError
            }
            UpstreamError::Timeout { .. } => FailureReason::Timeout,
            UpstreamError::Transport { .. } | UpstreamError::Client(_) => FailureReason::Connection,
            UpstreamError::Decode { .. } | UpstreamError::TooLarge { .. } => {
                FailureReason::InvalidResponse
            }
            UpstreamError::Pagination { .. } => FailureReason::Pagination,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => *status == 429 || *status >= 500,
            UpstreamError::Timeout { .. } | UpstreamError::Transport { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Unauthorized { status, .. } | UpstreamError::Status { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// Bounded exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based): exponential, capped at
    /// `max_delay`, with 50–100% jitter. A server's `Retry-After` wins when it
    /// is longer, uncapped: the caller checks it against the refresh deadline.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_delay);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        match retry_after {
            Some(after) => after.max(jittered),
            None => jittered,
        }
    }
}

/// The one budget of calls in flight that every clone of a [`Client`] shares
/// (listing, `/credits`, direct keys, activity), and the shared back-off.
///
/// Additive increase, multiplicative decrease: the window starts at the limit;
/// a 429 or 503 halves it (once per back-off: answers to calls sent before the
/// last decrease do not shrink it again) and pauses every call for the
/// back-off; each successful call then adds `1 / window`, so the window grows
/// back by about one call per round trip.
#[derive(Debug)]
pub struct Limiter {
    limit: usize,
    state: Mutex<LimiterState>,
    released: tokio::sync::Notify,
}

#[derive(Debug)]
struct LimiterState {
    in_flight: usize,
    window: f64,
    paused_until: Option<Instant>,
    last_decrease: Option<Instant>,
}

/// One call's place in the budget; dropping it frees the place.
struct Permit {
    limiter: Arc<Limiter>,
    sent: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        lock(&self.limiter.state).in_flight -= 1;
        self.limiter.released.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Limiter {
    pub fn new(limit: usize) -> Limiter {
        let limit = limit.max(1);
        Limiter {
            limit,
            state: Mutex::new(LimiterState {
                in_flight: 0,
                window: limit as f64,
                paused_until: None,
                last_decrease: None,
            }),
            released: tokio::sync::Notify::new(),
        }
    }

    /// The configured most calls in flight.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The calls allowed in flight now (the limit, or fewer after throttling).
    pub fn window(&self) -> usize {
        lock(&self.state).window as usize
    }

    /// Waits for a place, and out any shared back-off. A back-off that ends
    /// past `deadline` fails at once, as the call that started it did.
    async fn acquire(
        self: &Arc<Self>,
        endpoint: Endpoint,
        deadline: Option<Instant>,
    ) -> Result<(Permit, usize), UpstreamError> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let pause = {
                let mut st = lock(&self.state);
                let now = Instant::now();
                match st.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => {
                        if st.in_flight < (st.window as usize).max(1) {
                            st.in_flight += 1;
                            let permit = Permit {
                                limiter: Arc::clone(self),
                                sent: now,
                            };
                            return Ok((permit, st.in_flight));
                        }
                        None
                    }
                }
            };
            match pause {
                Some(until) => {
                    if let Some(deadline) = deadline {
                        if until > deadline {
                            return Err(UpstreamError::RetryAfterPastDeadline {
                                endpoint,
                                retry_after: until - Instant::now(),
                            });
                        }
                    }
                    tokio::time::sleep_until(until).await;
                }
                None => released.await,
            }
        }
    }

    /// A call answered: the window grows back by `1 / window`.
    fn succeeded(&self) {
        let mut st = lock(&self.state);
        if st.window < self.limit as f64 {
            let grown = st.window + 1.0 / st.window.max(1.0);
            st.window = grown.min(self.limit as f64);
            drop(st);
            self.released.notify_waiters();
        }
    }

    /// A call sent at `sent` was answered 429 or 503: halve the window (once
    /// per back-off) and, when `pause` is given, hold every call until it ends.
    fn throttled(&self, sent: Instant, pause: Option<Duration>) {
        let mut st = lock(&self.state);
        let now = Instant::now();
        if st.last_decrease.map_or(true, |t| sent >= t) {
            st.window = (st.window / 2.0).max(1.0);
            st.last_decrease = Some(now);
        }
        if let Some(pause) = pause {
            let until = now + pause;
            if st.paused_until.map_or(true, |t| t < until) {
                st.paused_until = Some(until);
            }
        }
    }
}

/// What one refresh's calls cost so far (every clone made by
/// [`Client::with_deadline`] counts into a fresh one).
#[derive(Debug, Default)]
struct Stats {
    calls: AtomicU64,
    key_pages: AtomicU64,
    latency_micros: AtomicU64,
    peak_in_flight: AtomicUsize,
    throttled: AtomicU64,
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

/// The management API client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    bearer: SecretString,
    retry: RetryPolicy,
    telemetry: Arc<Telemetry>,
    /// Retries never wait past this (the running refresh's deadline).
    deadline: Option<Instant>,
    /// Shared by every clone: the budget of calls in flight.
    limiter: Arc<Limiter>,
    /// This refresh's calls (fresh for each [`Client::with_deadline`]).
    stats: Arc<Stats>,
    /// The last completed refresh, shared by every clone.
    previous: Arc<Mutex<Option<RefreshRecord>>>,
    /// Set when the calls of this clone are no longer wanted (pages fetched
    /// ahead of a listing that ended): a call not yet sent is not sent.
    cancel: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("bearer", &"[REDACTED]")
            .finish()
    }
}

impl Client {
    pub fn new(
        base_url: &str,
        bearer: SecretString,
        request_timeout: Duration,
        retry: RetryPolicy,
        telemetry: Arc<Telemetry>,
    ) -> Result<Client, UpstreamError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            .timeout(request_timeout)
            .build()
            .map_err(|e| UpstreamError::Client(e.to_string()))?;
        Ok(Client {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            bearer,
            retry,
            telemetry,
            deadline: None,
            limiter: Arc::new(Limiter::new(DEFAULT_MAX_CONCURRENT_REQUESTS)),
            stats: Arc::default(),
            previous: Arc::default(),
            cancel: None,
        })
    }

    /// The same client with its own budget of `limit` calls in flight
    /// (`openrouter.max_concurrent_requests`), shared by its clones from then on.
    pub fn with_max_concurrent_requests(&self, limit: usize) -> Client {
        Client {
            limiter: Arc::new(Limiter::new(limit)),
            ..self.clone()
        }
    }

    /// The budget every clone of this client shares.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

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

    /// The same client, authenticating with another key (direct-key mode).
    pub fn with_bearer(&self, key: SecretString) -> Client {
        Client {
            bearer: key,
            ..self.clone()
        }
    }

    /// The same client, whose retries give up rather than wait past
    /// `deadline`, counting its calls afresh ([`Client::call_stats`]).
    pub fn with_deadline(&self, deadline: Instant) -> Client {
        Client {
            deadline: Some(deadline),
            stats: Arc::default(),
            ..self.clone()
        }
    }

    /// One full pass: workspaces, every key page of every workspace, then
    /// credits. Fails whole if any listing call fails, so callers never see a
    /// partial listing; a failing `/credits` only leaves the credits unknown.
    pub async fn fetch_all(&self, workspaces: &Workspaces) -> Result<UpstreamData, UpstreamError> {
        let workspace_ids: Vec<Option<String>> = match workspaces {
            Workspaces::Only(entries) => self.resolve_workspaces(entries).await?,
            Workspaces::All => match self.list_workspaces().await? {
                Some(list) if !list.is_empty() => list.into_iter().map(|w| Some(w.id)).collect(),
                // No workspaces API here, or none listed: the default listing is everything.
                _ => vec![None],
            },
        };

        // Workspaces are listed side by side; the limiter bounds the calls.
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.limiter.limit()));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, workspace) in workspace_ids.into_iter().enumerate() {
            let client = self.clone();
            let semaphore = Arc::clone(&semaphore);
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                (index, client.list_keys(workspace.as_deref()).await)
            });
        }
        let listing = async {
            let mut per_workspace = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                let (index, result) = joined.map_err(|e| UpstreamError::Transport {
                    endpoint: Endpoint::Keys,
                    message: format!("listing task failed: {e}"),
                })?;
                per_workspace.push((index, result?));
            }
            per_workspace.sort_by_key(|(index, _)| *index);
            Ok::<_, UpstreamError>(per_workspace)
        };
        // `/credits` goes out beside the listing: one round trip fewer.
        let (per_workspace, credits) = tokio::join!(listing, self.credits());
        let per_workspace = per_workspace?;

        // A key listed twice (offsets shift when keys are created mid-listing,
        // or a key moves between workspaces) counts once, where first listed.
        // The lists are joined into the first one, never copied whole.
        let mut lists = per_workspace.into_iter().map(|(_, listed)| listed);
        let mut keys = lists.next().unwrap_or_default();
        for listed in lists {
            keys.extend(listed);
        }
        let mut seen = Seen::default();
        let first_listed: Vec<bool> = (0..keys.len()).map(|i| seen.insert(&keys, i)).collect();
        let mut first = first_listed.into_iter();
        keys.retain(|_| first.next().unwrap_or(false));
        let (credits, credits_error) = match credits {
            Ok(credits) => (Some(credits), None),
            Err(e) => (None, Some(e)),
        };
        Ok(UpstreamData {
            keys,
            credits,
            credits_error,
        })
    }

    /// Configured workspace entries as ids: UUIDs as they are, slugs looked
    /// up in the account's workspace list (never sent where an id is required).
    async fn resolve_workspaces(
        &self,
        entries: &[String],
    ) -> Result<Vec<Option<String>>, UpstreamError> {
        if entries.iter().all(|e| is_uuid(e)) {
            return Ok(entries.iter().cloned().map(Some).collect());
        }
        let listed = self.list_workspaces().await?.unwrap_or_default();
        entries
            .iter()
            .map(|entry| {
                if is_uuid(entry) {
                    return Ok(Some(entry.clone()));
                }
                listed
                    .iter()
                    .find(|w| w.slug.as_deref() == Some(entry.as_str()))
                    .map(|w| Some(w.id.clone()))
                    .ok_or_else(|| UpstreamError::UnknownWorkspace(entry.clone()))
            })
            .collect()
    }

    /// Every workspace, paged until `total_count` (or an empty page). `None`
    /// when this account cannot list workspaces (403 or 404): the caller falls
    /// back to the default listing, with a warning.
    pub async fn list_workspaces(&self) -> Result<Option<Vec<Workspace>>, UpstreamError> {
        let mut all: Vec<Workspace> = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let query = [("offset", offset), ("limit", WORKSPACE_PAGE)];
            let body = match self.get(Endpoint::Workspaces, "/workspaces", &query).await {
                Ok(body) => body,
                Err(e) if offset == 0 && matches!(e.status(), Some(403 | 404)) => {
                    warn!(error = %e, "cannot list workspaces; listing the default workspace only");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let page: WorkspacePage =
                serde_json::from_slice(&body).map_err(|e| UpstreamError::Decode {
                    endpoint: Endpoint::Workspaces,
                    message: e.to_string(),
                })?;
            let len = page.data.len();
            let before = all.len();
            // A workspace listed twice would have its keys listed twice.
            all.extend(page.data.into_iter().filter(|w| seen.insert(w.id.clone())));
            let complete = match page.total_count {
                Some(total) => all.len() as u64 >= total,
                None => false,
            };
            if len == 0 || complete {
                if all.is_empty() {
                    warn!(
                        "GET /workspaces listed no workspace; listing the default workspace only"
                    );
                }
                return Ok(Some(all));
            }
            if all.len() == before {
                return Err(UpstreamError::Pagination {
                    listing: "/workspaces".into(),
                    message: format!(
                        "page at offset {offset} repeats earlier workspaces before total_count {:?}",
                        page.total_count
                    ),
                });
            }
            // The server may serve fewer than asked: advance by what came.
            offset += len;
        }
        Err(UpstreamError::Pagination {
            listing: "/workspaces".into(),
            message: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// Every key of one workspace (or the default one), disabled keys
    /// included. Pages are read until one is empty.
    ///
    /// The first page alone shows the page size; the next offsets are then
    /// fetched ahead, up to the limiter's limit at once (growing from 1 by one
    /// per full page, so a small workspace costs what it did one page at a
    /// time). No new offset is issued once a page comes back short or empty.
    /// Pages are assembled in offset order: an empty page ends the listing
    /// only once every page before it is in; a short page leaves a gap that is
    /// fetched at its exact offset. So the keys, their order, the de-duplication
    /// and the "no new key" guard are those of a page-by-page listing.
    pub async fn list_keys(&self, workspace: Option<&str>) -> Result<Vec<ApiKey>, UpstreamError> {
        let ws_label = match workspace {
            Some(w) => format!("/keys?workspace_id={w}"),
            None => "/keys".to_string(),
        };
        let mut listing = Assembly {
            keys: Vec::new(),
            seen: Seen::default(),
            covered: 0,
            workspace,
        };
        let first = self.keys_page(workspace, 0).await?;
        let step = first.len();
        if listing
            .add(0, first)
            .map_err(|m| pagination(&ws_label, m))?
        {
            return Ok(listing.done());
        }

        let most = self.limiter.limit().max(1);
        let mut window = 1;
        let mut next_offset = step;
        let mut issuing = true;
        let mut pages = 1;
        // Pages in flight (by offset) and pages in but not yet assembled.
        let mut in_flight: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
        let mut arrived: BTreeMap<usize, Vec<ApiKey>> = BTreeMap::new();
        // Pages still out when the listing ends are not cut off: a call already
        // sent finishes (keeping its place in the budget until answered, so
        // the server never sees more than the limit), one not yet sent is dropped.
        let mut pages_out = PagesOut {
            tasks: tokio::task::JoinSet::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let pager = Client {
            cancel: Some(Arc::clone(&pages_out.stop)),
            ..self.clone()
        };
        let spawn = |pages_out: &mut PagesOut, offset: usize| {
            let client = pager.clone();
            let workspace = workspace.map(str::to_string);
            pages_out.tasks.spawn(async move {
                (offset, client.keys_page(workspace.as_deref(), offset).await)
            });
        };
        loop {
            // A gap (a short page before later ones) is fetched at its exact offset.
            let lowest = match (in_flight.first(), arrived.keys().next()) {
                (Some(a), Some(b)) => Some(*a.min(b)),
                (a, b) => a.or(b).copied(),
            };
            let covered = listing.covered;
            if lowest.map_or(true, |o| o > covered) && !in_flight.contains(&covered) {
                spawn(&mut pages_out, covered);
                in_flight.insert(covered);
                pages += 1;
                if covered >= next_offset {
                    next_offset = covered + step;
                }
            }
            while issuing && in_flight.len() + arrived.len() < window {
                spawn(&mut pages_out, next_offset);
                in_flight.insert(next_offset);
                next_offset += step;
                pages += 1;
            }
            if pages > MAX_PAGES {
                return Err(pagination(
                    &ws_label,
                    format!("more than {MAX_PAGES} pages"),
                ));
            }
            let Some(joined) = pages_out.tasks.join_next().await else {
                // Not reached: a page is always out here (the gap fill above).
                return Err(pagination(&ws_label, "no page left to fetch".into()));
            };
            let (offset, page) = joined.map_err(|e| UpstreamError::Transport {
                endpoint: Endpoint::Keys,
                message: format!("listing task failed: {e}"),
            })?;
            let page = page?;
            in_flight.remove(&offset);
            if page.len() < step {
                issuing = false;
            } else {
                window = (window + 1).min(most);
            }
            arrived.insert(offset, page);
            while let Some(entry) = arrived.first_entry() {
                if *entry.key() > listing.covered {
                    break;
                }
                let (offset, page) = entry.remove_entry();
                if listing
                    .add(offset, page)
                    .map_err(|m| pagination(&ws_label, m))?
                {
                    // Pages still out past the end: see `PagesOut`.
                    return Ok(listing.done());
                }
            }
        }
    }

    /// One `GET /keys` page at `offset`.
    async fn keys_page(
        &self,
        workspace: Option<&str>,
        offset: usize,
    ) -> Result<Vec<ApiKey>, UpstreamError> {
        let mut query = vec![
            ("include_disabled", "true".to_string()),
            ("offset", offset.to_string()),
        ];
        if let Some(ws) = workspace {
            query.push(("workspace_id", ws.to_string()));
        }
        let body = self.get(Endpoint::Keys, "/keys", &query).await?;
        self.stats.key_pages.fetch_add(1, Ordering::Relaxed);
        parse_keys_page(&body)
    }

    pub async fn credits(&self) -> Result<Credits, UpstreamError> {
        let body = self
            .get(Endpoint::Credits, "/credits", &[] as &[(&str, &str)])
            .await?;
        let credits: Credits = decode(Endpoint::Credits, &body)?;
        if !credits.total_credits.is_finite() || !credits.total_usage.is_finite() {
            return Err(UpstreamError::Decode {
                endpoint: Endpoint::Credits,
                message: "non-finite amount".into(),
            });
        }
        Ok(credits)
    }

    /// `GET /key` with this client's bearer (direct-key mode): the key's own
    /// figures, as a listed key named `name` with the hash `hash`.
    pub async fn current_key(&self, hash: &str, name: &str) -> Result<ApiKey, UpstreamError> {
        let body = self
            .get(Endpoint::Key, "/key", &[] as &[(&str, &str)])
            .await?;
        let mut value: serde_json::Value = decode(Endpoint::Key, &body)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("hash".into(), hash.into());
            obj.insert("name".into(), name.into());
        }
        serde_json::from_value(value).map_err(|e| UpstreamError::Decode {
            endpoint: Endpoint::Key,
            message: e.to_string(),
        })
    }

    /// `GET /activity?api_key_hash=…`: one key's per-model rows of the last
    /// 30 completed UTC days.
    pub async fn activity<T: DeserializeOwned>(&self, key_hash: &str) -> Result<T, UpstreamError> {
        let body = self
            .get(
                Endpoint::Activity,
                "/activity",
                &[("api_key_hash", key_hash)],
            )
            .await?;
        decode(Endpoint::Activity, &body)
    }

    /// GET `path` with `query`, with retries; the raw body of the first success.
    /// Each attempt takes a place in the shared budget; a 429 or 503 shrinks
    /// the window and, when its back-off fits the deadline, holds every call.
    async fn get<Q: serde::Serialize + ?Sized>(
        &self,
        endpoint: Endpoint,
        path: &str,
        query: &Q,
    ) -> Result<Vec<u8>, UpstreamError> {
        let mut retry = 0;
        loop {
            let (permit, in_flight) = self.limiter.acquire(endpoint, self.deadline).await?;
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(UpstreamError::Transport {
                    endpoint,
                    message: "no longer needed".into(),
                });
            }
            self.stats
                .peak_in_flight
                .fetch_max(in_flight, Ordering::Relaxed);
            let result = self.get_once(endpoint, path, query).await;
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            let took = permit.sent.elapsed();
            self.stats.latency_micros.fetch_add(
                u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            match result {
                Ok(body) => {
                    self.limiter.succeeded();
                    return Ok(body);
                }
                Err((error, retry_after)) => {
                    retry += 1;
                    let delay = self.retry.delay(retry, retry_after);
                    let fits = self
                        .deadline
                        .map_or(true, |deadline| Instant::now() + delay <= deadline);
                    if matches!(error.status(), Some(429 | 503)) {
                        self.telemetry.count_throttled();
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        // Everyone waits out a back-off the refresh can afford.
                        self.limiter.throttled(permit.sent, fits.then_some(delay));
                    }
                    drop(permit);
                    if !error.retryable() || retry >= self.retry.attempts {
                        return Err(error);
                    }
                    if let (false, Some(after)) = (fits, retry_after) {
                        return Err(UpstreamError::RetryAfterPastDeadline {
                            endpoint,
                            retry_after: after,
                        });
                    }
                    warn!(%error, retry, delay_ms = delay.as_millis() as u64, "retrying OpenRouter call");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One HTTP call; on failure also returns the server's `Retry-After`.
    async fn get_once<Q: serde::Serialize + ?Sized>(
        &self,
        endpoint: Endpoint,
        path: &str,
        query: &Q,
    ) -> Result<Vec<u8>, (UpstreamError, Option<Duration>)> {
        let url = format!("{}{}", self.base_url, path);
        let sent = self
            .http
            .get(&url)
            .query(query)
            .bearer_auth(self.bearer.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let code = if e.is_timeout() { "timeout" } else { "error" };
                self.telemetry.count_request(endpoint.as_str(), code);
                return Err((transport_error(endpoint, e), None));
            }
        };
        let status = response.status().as_u16();
        self.telemetry
            .count_request(endpoint.as_str(), &status.to_string());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);

        let mut body = Vec::new();
        read_capped(endpoint, &mut response, &mut body)
            .await
            .map_err(|e| (e, retry_after))?;
        if !(200..300).contains(&status) {
            let message = upstream_message(&body, self.bearer.expose_secret());
            let error = if status == 401 || status == 403 {
                UpstreamError::Unauthorized {
                    endpoint,
                    status,
                    message,
                }
            } else {
                UpstreamError::Status {
                    endpoint,
                    status,
                    message,
                }
            };
            return Err((error, retry_after));
        }
        if let Some(ct) = content_type {
            if !ct.contains("json") {
                return Err((
                    UpstreamError::Decode {
                        endpoint,
                        message: redact(
                            &format!("expected JSON, got content type {ct:?}"),
                            self.bearer.expose_secret(),
                        ),
                    },
                    None,
                ));
            }
        }
        Ok(body)
    }

    /// Every item of a list endpoint paged with `offset`/`limit` (at most
    /// 100), until `total_count` items are in (or a page is empty). A page
    /// that adds nothing new fails the listing (`reason="pagination"`).
    pub async fn list_counted<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
        id_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, UpstreamError> {
        let mut all: Vec<T> = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let query = [("offset", offset), ("limit", WORKSPACE_PAGE)];
            let body = self.get(endpoint, path, &query).await?;
            let page: CountedPage<T> =
                serde_json::from_slice(&body).map_err(|e| UpstreamError::Decode {
                    endpoint,
                    message: e.to_string(),
                })?;
            let len = page.data.len();
            let before = all.len();
            all.extend(
                page.data
                    .into_iter()
                    .filter(|item| seen.insert(id_of(item))),
            );
            let complete = page
                .total_count
                .is_some_and(|total| all.len() as u64 >= total);
            if len == 0 || complete {
                return Ok(all);
            }
            if all.len() == before {
                return Err(UpstreamError::Pagination {
                    listing: path.to_string(),
                    message: format!(
                        "page at offset {offset} repeats earlier items before total_count {:?}",
                        page.total_count
                    ),
                });
            }
            offset += len;
        }
        Err(UpstreamError::Pagination {
            listing: path.to_string(),
            message: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// Every member of the organization (`GET /organization/members`).
    pub async fn list_members(&self) -> Result<Vec<Member>, UpstreamError> {
        self.list_counted(Endpoint::Members, "/organization/members", |m: &Member| {
            m.id.clone()
        })
        .await
    }

    /// Every guardrail (`GET /guardrails`).
    pub async fn list_guardrails(&self) -> Result<Vec<Guardrail>, UpstreamError> {
        self.list_counted(Endpoint::Guardrails, "/guardrails", |g: &Guardrail| {
            g.id.clone()
        })
        .await
    }

    /// Every guardrail assigned to a key (`GET /guardrails/assignments/keys`).
    pub async fn list_guardrail_key_assignments(
        &self,
    ) -> Result<Vec<GuardrailKeyAssignment>, UpstreamError> {
        self.list_counted(
            Endpoint::GuardrailAssignments,
            "/guardrails/assignments/keys",
            |a: &GuardrailKeyAssignment| format!("{}/{}", a.key_hash, a.guardrail_id),
        )
        .await
    }

    /// The budgets of one workspace (`GET /workspaces/{id}/budgets`, not paged).
    pub async fn workspace_budgets(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<WorkspaceBudget>, UpstreamError> {
        let path = format!("/workspaces/{workspace_id}/budgets");
        let body = self
            .get(Endpoint::WorkspaceBudgets, &path, &[] as &[(&str, &str)])
            .await?;
        decode(Endpoint::WorkspaceBudgets, &body)
    }

    /// `GET /key` with the management key: is it one?
    pub async fn check_key(&self) -> Result<KeyCheck, UpstreamError> {
        let body = self
            .get(Endpoint::Key, "/key", &[] as &[(&str, &str)])
            .await?;
        decode(Endpoint::Key, &body)
    }
}

/// Reads the body into `body` (cleared first), refusing more than
/// `MAX_BODY_BYTES`. Each chunk is copied and dropped at once, so that the
/// connection's read buffer is free to be reused for the next response
/// (holding on to it made every page a fresh 64 KiB mapping); `body` is sized
/// once from `Content-Length`.
async fn read_capped(
    endpoint: Endpoint,
    response: &mut reqwest::Response,
    body: &mut Vec<u8>,
) -> Result<(), UpstreamError> {
    body.clear();
    let declared = response.content_length();
    if let Some(len) = declared {
        if len > MAX_BODY_BYTES as u64 {
            return Err(UpstreamError::TooLarge { endpoint });
        }
        body.reserve(len as usize);
    }
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(UpstreamError::TooLarge { endpoint });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(transport_error(endpoint, e)),
        }
    }
}

/// The page fetches of one listing. Dropped (the listing ended, failed or
/// was itself dropped at the deadline), it lets calls already sent finish in
/// the background and makes the others return before they are sent.
struct PagesOut {
    tasks: tokio::task::JoinSet<(usize, Result<Vec<ApiKey>, UpstreamError>)>,
    stop: Arc<AtomicBool>,
}

impl Drop for PagesOut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.detach_all();
    }
}

/// Which keys of a list have been seen, by hash: positions into the list,
/// so that no hash is copied (100k copied hashes were ~12 MB per listing).
#[derive(Default)]
struct Seen {
    positions: hashbrown::HashTable<usize>,
    hasher: std::hash::RandomState,
}

impl Seen {
    /// Records `keys[at]` unless a key with its hash was recorded before
    /// (`true`: first seen). `keys` is the list every recorded position points into.
    fn insert(&mut self, keys: &[ApiKey], at: usize) -> bool {
        let hash = keys[at].hash.as_ref();
        let hasher = &self.hasher;
        let h = hasher.hash_one(hash);
        if self
            .positions
            .find(h, |&i| &*keys[i].hash == hash)
            .is_some()
        {
            return false;
        }
        self.positions
            .insert_unique(h, at, |&i| hasher.hash_one(keys[i].hash.as_ref()));
        true
    }
}

/// The keys of one workspace assembled in offset order.
struct Assembly<'a> {
    keys: Vec<ApiKey>,
    seen: Seen,
    /// Keys `0..covered` are listed without a gap.
    covered: usize,
    workspace: Option<&'a str>,
}

impl Assembly<'_> {
    /// Adds the page at `offset` (never past `covered`). `Ok(true)`: the
    /// listing is complete (an empty page right after what is listed).
    fn add(&mut self, offset: usize, page: Vec<ApiKey>) -> Result<bool, String> {
        let len = page.len();
        if len == 0 {
            // An empty page inside what is listed (keys deleted meanwhile) ends nothing.
            return Ok(offset == self.covered);
        }
        let before = self.keys.len();
        for key in page {
            self.keys.push(key);
            if !self.seen.insert(&self.keys, self.keys.len() - 1) {
                self.keys.pop();
            }
        }
        for key in &mut self.keys[before..] {
            if key.workspace_id.is_none() {
                key.workspace_id = self.workspace.map(Box::from);
            }
        }
        if self.keys.len() == before && offset + len > self.covered {
            // A whole page of keys already listed where new ones were due: the
            // server ignores `offset`. Stopping here could drop keys; fail loudly instead.
            return Err(format!("page at offset {offset} repeats earlier keys"));
        }
        self.covered = self.covered.max(offset + len);
        Ok(false)
    }

    fn done(self) -> Vec<ApiKey> {
        debug!(
            workspace = self.workspace.unwrap_or("default"),
            keys = self.keys.len(),
            "listed keys"
        );
        self.keys
    }
}

fn pagination(listing: &str, message: String) -> UpstreamError {
    UpstreamError::Pagination {
        listing: listing.to_string(),
        message,
    }
}

fn transport_error(endpoint: Endpoint, error: reqwest::Error) -> UpstreamError {
    if error.is_timeout() {
        return UpstreamError::Timeout { endpoint };
    }
    // The URL holds no secret, but the error chain is what operators need.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    UpstreamError::Transport { endpoint, message }
}

/// The `error.message` of an OpenRouter error body, or a short excerpt of
/// whatever came back, with the management key (`secret`) redacted.
fn upstream_message(body: &[u8], secret: &str) -> String {
    // Redact before truncating, so no prefix of the key survives a cut.
    let text = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => redact(&envelope.error.message, secret),
        Err(_) => redact(String::from_utf8_lossy(body).trim(), secret),
    };
    if text.is_empty() {
        "empty body".to_string()
    } else {
        truncate(&text, 300)
    }
}

/// A proxy or server that echoes the request (headers included) into its
/// error body must not carry the management key into our logs and errors.
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        return text.to_string();
    }
    text.replace(secret, "[REDACTED]")
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_with_only_required_fields_parses_and_nulls_stay_unknown() {
        let key: ApiKey = serde_json::from_str(
            r#"{"hash":"h","name":null,"label":null,"disabled":null,"limit":null,
                "limit_remaining":null,"limit_reset":null,"usage":1.5,"usage_daily":null,
                "created_at":"2025-01-01T00:00:00Z","some_future_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(key.usage, Some(1.5));
        assert_eq!(key.usage_daily, None);
        assert_eq!(key.limit, None);
        assert_eq!(key.disabled, None);
        assert_eq!(&*key.name, "");
        assert_eq!(&*key.label, "");
        assert_eq!(key.workspace_id, None);
        assert_eq!(key.expires_at, None);
        let bare: ApiKey = serde_json::from_str(r#"{"hash":"h"}"#).unwrap();
        assert_eq!(bare.disabled, None);
        assert_eq!(bare.usage, None);
    }

    #[test]
    fn a_page_without_data_is_an_invalid_response() {
        let e = parse_keys_page(br#"{"keys":[]}"#).unwrap_err();
        assert_eq!(e.reason(), FailureReason::InvalidResponse);
        assert!(parse_keys_page(br#"{"data":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn the_window_halves_once_per_back_off_and_grows_back_by_one_per_window() {
        let limiter = Limiter::new(8);
        assert_eq!((limiter.limit(), limiter.window()), (8, 8));
        let before = Instant::now();
        limiter.throttled(before, None);
        assert_eq!(limiter.window(), 4);
        // Another answer to a call sent before that decrease: the same congestion.
        limiter.throttled(before, None);
        assert_eq!(limiter.window(), 4);
        let later = lock(&limiter.state).last_decrease.unwrap_or(before);
        limiter.throttled(later, Some(Duration::from_millis(50)));
        assert_eq!(limiter.window(), 2);
        assert!(lock(&limiter.state).paused_until.is_some());
        for _ in 0..3 {
            limiter.throttled(Instant::now() + Duration::from_secs(1), None);
        }
        assert_eq!(limiter.window(), 1, "never below one call");
        // About one more call per window of answers: 1 → 2 after one answer,
        // 2 → 3 after three more (2.5, 2.9, 3.24).
        limiter.succeeded();
        assert_eq!(limiter.window(), 2);
        limiter.succeeded();
        limiter.succeeded();
        assert_eq!(limiter.window(), 2);
        limiter.succeeded();
        assert_eq!(limiter.window(), 3);
        for _ in 0..100 {
            limiter.succeeded();
        }
        assert_eq!(limiter.window(), 8, "never above the limit");
    }

    #[tokio::test]
    async fn a_back_off_past_the_deadline_fails_at_once() {
        let limiter = Arc::new(Limiter::new(2));
        limiter.throttled(Instant::now(), Some(Duration::from_secs(3600)));
        let deadline = Instant::now() + Duration::from_secs(10);
        let Err(e) = limiter.acquire(Endpoint::Keys, Some(deadline)).await else {
            panic!("a place was given during the back-off");
        };
        assert_eq!(e.reason(), FailureReason::RateLimited);
    }

    fn listed(hashes: &[&str]) -> Vec<ApiKey> {
        hashes
            .iter()
            .map(|h| serde_json::from_str(&format!(r#"{{"hash":"{h}"}}"#)).unwrap())
            .collect()
    }

    #[test]
    fn pages_assemble_by_offset_and_only_an_empty_page_at_the_end_ends_them() {
        let mut a = Assembly {
            keys: Vec::new(),
            seen: Seen::default(),
            covered: 0,
            workspace: Some("ws"),
        };
        assert_eq!(a.add(0, listed(&["a", "b"])), Ok(false));
        // A page overlapping what is listed (the server served more): repeats are fine.
        assert_eq!(a.add(1, listed(&["b", "c"])), Ok(false));
        assert_eq!(a.covered, 3);
        // An empty page inside what is listed ends nothing.
        assert_eq!(a.add(2, Vec::new()), Ok(false));
        // A page of repeats where new keys were due: offset ignored.
        assert!(a.add(3, listed(&["a", "b"])).is_err());
        assert_eq!(a.add(3, Vec::new()), Ok(true));
        let keys = a.done();
        let hashes: Vec<&str> = keys.iter().map(|k| k.hash.as_ref()).collect();
        assert_eq!(hashes, ["a", "b", "c"]);
        assert!(keys.iter().all(|k| k.workspace_id.as_deref() == Some("ws")));
    }

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

    #[test]
    fn workspace_ids_and_slugs_are_told_apart() {
        assert!(is_uuid("550e8400-e29b-41d4-a716-446655440000"));
        assert!(!is_uuid("production"));
        assert!(!is_uuid("550e8400-e29b-41d4-a716-44665544000g"));
        assert!(!is_uuid("550e8400e29b41d4a716446655440000"));
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        for retry in 1..10 {
            let d = policy.delay(retry, None);
            assert!(d <= Duration::from_secs(2), "{d:?}");
            assert!(d >= Duration::from_millis(50));
        }
        assert!(policy.delay(1, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        // Retry-After is not capped here: the caller holds it against the deadline.
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn error_messages_are_extracted_and_truncated() {
        assert_eq!(
            upstream_message(br#"{"error":{"code":500,"message":"boom"}}"#, "k"),
            "boom"
        );
        assert_eq!(upstream_message(b"", "k"), "empty body");
        let long = "x".repeat(1000);
        assert!(upstream_message(long.as_bytes(), "k").chars().count() <= 301);
    }

    #[test]
    fn an_echoed_management_key_is_redacted_before_truncation() {
        let secret = "sk-or-v1-SECRET-abcdef";
        let echo = format!("{}Authorization: Bearer {secret}", "x".repeat(290));
        let message = upstream_message(echo.as_bytes(), secret);
        assert!(!message.contains("sk-or-v1-SECRET"), "{message}");
        let json = format!(r#"{{"error":{{"code":400,"message":"bad header Bearer {secret}"}}}}"#);
        assert_eq!(
            upstream_message(json.as_bytes(), secret),
            "bad header Bearer [REDACTED]"
        );
    }
}
