//! The OpenRouter management API client: workspaces, paginated key listings,
//! credits, activity (per key and account-wide), the organization lists, and
//! `GET /key` for direct keys. Wire types stop here ([`wire`]): the snapshot
//! converts them once (`snapshot::Listing`).
//!
//! One `reqwest` client with explicit timeouts. Every HTTP call is counted in
//! `openrouter_upstream_requests_total`; 429, 5xx, connection errors and
//! timeouts are retried with bounded exponential backoff and jitter, honouring
//! `Retry-After` (or, on a 429 without it, the body's `X-RateLimit-Reset`) up
//! to the refresh deadline. 401/403 are never retried.
//!
//! Over a real network every page costs a round trip, so a workspace's pages
//! are fetched ahead in a sliding window once the first page has shown the
//! page size ([`Client::list_keys`]), and assembled in offset order; each
//! overlaps the one before by one key, so a list that shifts under deletion
//! never drops an item unseen. Every call of every clone of a client shares
//! one [`Limiter`]: at most `openrouter.max_concurrent_requests` calls in
//! flight, fewer after a 429 or 503 (the window halves, the calls the
//! back-off holds wait it out: an activity call's holds activity calls only;
//! then the window grows back by one per window of successful calls).
//!
//! | file | concern |
//! |---|---|
//! | `wire.rs` | what OpenRouter sends: every JSON shape |
//! | `error.rs` | why a call failed, with the key kept out of the text |
//! | `limiter.rs` | how calls are budgeted: retries and calls in flight |
//! | `http.rs` | how one call is made |
//! | `continuity.rs` | how a paged listing proves it missed nothing (one item of overlap) |
//! | `keys.rs` | how the keys are listed (the parallel pager) |
//! | `organization.rs` | how a counted list is paged, and the organization lists |
//! | `report.rs` | why a refresh was slow |

mod continuity;
mod error;
mod http;
mod keys;
mod limiter;
mod organization;
mod report;
pub mod wire;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::config::DEFAULT_MAX_CONCURRENT_REQUESTS;
use crate::telemetry::Telemetry;

pub use error::{Endpoint, UpstreamError, MAX_BODY_BYTES};
pub use keys::UpstreamData;
pub use limiter::{Limiter, RetryPolicy};
pub use report::{CallStats, DeadlineReport, RefreshRecord};
pub use wire::{
    parse_keys_page, ActivityRow, ApiKey, CountedPage, Credits, Guardrail, GuardrailKeyAssignment,
    KeyCheck, Member, Workspace, WorkspaceBudget,
};

use report::Stats;

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
            // OpenRouter's API never redirects. A followed redirect could
            // carry the key to another origin (a second same-origin hop gets
            // `Authorization` back), so a 3xx fails the call instead.
            .redirect(reqwest::redirect::Policy::none())
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

    pub async fn credits(&self) -> Result<Credits, UpstreamError> {
        let body = self
            .get(Endpoint::Credits, "/credits", &[] as &[(&str, &str)])
            .await?;
        let credits: Credits = self.decode(Endpoint::Credits, &body)?;
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
        let mut value: serde_json::Value = self.decode(Endpoint::Key, &body)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("hash".into(), hash.into());
            obj.insert("name".into(), name.into());
        }
        serde_json::from_value(value).map_err(|e| UpstreamError::Decode {
            endpoint: Endpoint::Key,
            message: error::redact_keys(&e.to_string()).into_owned(),
        })
    }

    /// `GET /key` with the management key: is it one?
    pub async fn check_key(&self) -> Result<KeyCheck, UpstreamError> {
        let body = self
            .get(Endpoint::Key, "/key", &[] as &[(&str, &str)])
            .await?;
        self.decode(Endpoint::Key, &body)
    }

    /// `GET /activity?api_key_hash=…`: one key's per-model rows of the last
    /// 30 completed UTC days (`T` is `Vec<ActivityRow>`; the scale test
    /// reads them as raw JSON values).
    pub async fn activity<T: DeserializeOwned>(&self, key_hash: &str) -> Result<T, UpstreamError> {
        let body = self
            .get(
                Endpoint::Activity,
                "/activity",
                &[("api_key_hash", key_hash)],
            )
            .await?;
        self.decode(Endpoint::Activity, &body)
    }

    /// `GET /activity` without `api_key_hash`: the whole account's rows of
    /// the last 30 completed UTC days (every key's, deleted ones included,
    /// summed per date, model and endpoint), in the per-key call's shape:
    /// what OpenRouter bills. The same endpoint, limiter class and retries as
    /// [`Client::activity`]; the rows name no key, so they cannot be split per key.
    pub async fn account_activity(&self) -> Result<Vec<ActivityRow>, UpstreamError> {
        let body = self
            .get(Endpoint::Activity, "/activity", &[] as &[(&str, &str)])
            .await?;
        self.decode(Endpoint::Activity, &body)
    }
}
