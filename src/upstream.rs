//! The OpenRouter management API client: workspaces, paginated key listings, credits.
//!
//! One `reqwest` client with explicit timeouts. Every HTTP call is counted in
//! `openrouter_upstream_requests_total`; 429, 5xx, connection errors and
//! timeouts are retried with bounded exponential backoff and jitter, honouring
//! `Retry-After`. 401/403 are never retried.

use std::collections::hash_map::{Entry, HashMap};
use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tracing::{debug, warn};

use crate::config::Workspaces;
use crate::telemetry::Telemetry;

/// OpenRouter returns at most this many keys per page; a shorter page is the last one.
pub const PAGE_SIZE: usize = 100;
/// Bodies above this are refused: a key page is ~100 KiB, so this is a hostile or broken upstream.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Pagination guard: 100,000 pages is 10 million keys per workspace.
const MAX_PAGES: usize = 100_000;
/// Workspaces listed at once.
const WORKSPACE_CONCURRENCY: usize = 4;

/// One key as listed by `GET /keys`. Every field that is nullable or newer than
/// the first API revision is optional, so older or partial responses still parse.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ApiKey {
    pub hash: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub limit: Option<f64>,
    #[serde(default)]
    pub limit_remaining: Option<f64>,
    #[serde(default)]
    pub limit_reset: Option<String>,
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
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Workspace {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
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
    let mut keys = Vec::new();
    parse_keys_page_into(bytes, &mut keys)?;
    Ok(keys)
}

/// [`parse_keys_page`], appending the page's keys to `keys` (no page-sized
/// vector in between): what the client runs on every page. Returns how many
/// keys it appended; on error `keys` is left as it was.
pub fn parse_keys_page_into(bytes: &[u8], keys: &mut Vec<ApiKey>) -> Result<usize, UpstreamError> {
    let before = keys.len();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = KeysEnvelope(keys)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match parsed {
        Ok(()) => Ok(keys.len() - before),
        Err(e) => {
            keys.truncate(before);
            Err(UpstreamError::Decode {
                endpoint: Endpoint::Keys,
                message: e.to_string(),
            })
        }
    }
}

/// `{"data": [key, ...], ...}` decoded straight into a caller's vector; the
/// same document shapes and errors as `DataEnvelope<Vec<ApiKey>>`.
struct KeysEnvelope<'a>(&'a mut Vec<ApiKey>);

impl<'de> DeserializeSeed<'de> for KeysEnvelope<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_struct("DataEnvelope", &["data"], self)
    }
}

impl<'de> Visitor<'de> for KeysEnvelope<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("struct DataEnvelope")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match seq.next_element_seed(KeysList(self.0))? {
            Some(()) => Ok(()),
            None => Err(serde::de::Error::invalid_length(
                0,
                &"struct DataEnvelope with 1 element",
            )),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen_data = false;
        while let Some(field) = map.next_key::<EnvelopeField>()? {
            match field {
                EnvelopeField::Data if seen_data => {
                    return Err(serde::de::Error::duplicate_field("data"));
                }
                EnvelopeField::Data => {
                    map.next_value_seed(KeysList(&mut *self.0))?;
                    seen_data = true;
                }
                EnvelopeField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if seen_data {
            Ok(())
        } else {
            Err(serde::de::Error::missing_field("data"))
        }
    }
}

/// A field name of the envelope: only `data` matters.
enum EnvelopeField {
    Data,
    Other,
}

impl<'de> Deserialize<'de> for EnvelopeField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = EnvelopeField;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EnvelopeField, E> {
                Ok(if v == "data" {
                    EnvelopeField::Data
                } else {
                    EnvelopeField::Other
                })
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<EnvelopeField, E> {
                Ok(if v == b"data" {
                    EnvelopeField::Data
                } else {
                    EnvelopeField::Other
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EnvelopeField, E> {
                Ok(if v == 0 {
                    EnvelopeField::Data
                } else {
                    EnvelopeField::Other
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// The `data` array, each key pushed onto the vector as it is decoded.
struct KeysList<'a>(&'a mut Vec<ApiKey>);

impl<'de> DeserializeSeed<'de> for KeysList<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for KeysList<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(hint) = seq.size_hint() {
            self.0.reserve(hint.min(PAGE_SIZE));
        }
        while let Some(key) = seq.next_element::<ApiKey>()? {
            self.0.push(key);
        }
        Ok(())
    }
}

/// The key hashes already listed, found without copying one: a map from a
/// 64-bit fingerprint (SipHash with a per-set random key) to the index of the
/// first key with it, checked against that key's hash. Two different hashes
/// with one fingerprint (~2^-64 per pair) fall back to a scan, so the answer
/// is always exact.
struct SeenHashes {
    state: RandomState,
    first: HashMap<u64, usize, BuildHasherDefault<Fingerprint>>,
}

impl SeenHashes {
    fn with_capacity(capacity: usize) -> SeenHashes {
        SeenHashes {
            state: RandomState::new(),
            first: HashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// Whether `hash` is not among `listed`, the keys kept so far; if so it is
    /// recorded as the key about to be stored at index `listed.len()`.
    fn insert(&mut self, listed: &[ApiKey], hash: &str) -> bool {
        match self.first.entry(self.state.hash_one(hash)) {
            Entry::Vacant(slot) => {
                slot.insert(listed.len());
                true
            }
            Entry::Occupied(slot) => match listed.get(*slot.get()) {
                Some(first) if first.hash == hash => false,
                // Another hash with the same fingerprint: look at every key.
                _ => !listed.iter().any(|k| k.hash == hash),
            },
        }
    }
}

/// The fingerprints are already SipHash outputs: used as they are.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
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
#[derive(Debug, Clone, Default)]
pub struct UpstreamData {
    /// Every listed key once, in listing order, with the workspace it was listed under.
    pub keys: Vec<ApiKey>,
    pub credits: Option<Credits>,
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
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Workspaces => "workspaces",
            Endpoint::Keys => "keys",
            Endpoint::Credits => "credits",
            Endpoint::Activity => "activity",
            Endpoint::Key => "key",
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
    #[error("refresh did not finish within its deadline of {0:?}")]
    Deadline(Duration),
}

impl UpstreamError {
    /// Bounded `reason` label for `openrouter_refresh_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Unauthorized { .. } => "unauthorized",
            UpstreamError::Status { status: 429, .. } => "rate_limited",
            UpstreamError::Status { status, .. } if *status >= 500 => "server_error",
            UpstreamError::Status { .. } => "client_error",
            UpstreamError::Timeout { .. } | UpstreamError::Deadline(_) => "timeout",
            UpstreamError::Transport { .. } => "connection",
            UpstreamError::Decode { .. } | UpstreamError::TooLarge { .. } => "invalid_response",
            UpstreamError::Pagination { .. } => "pagination",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => *status == 429 || *status >= 500,
            UpstreamError::Timeout { .. } | UpstreamError::Transport { .. } => true,
            _ => false,
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
    /// Delay before retry number `retry` (1-based): exponential, capped, with 50–100% jitter.
    /// A server's `Retry-After` wins when it is longer, up to `max_delay`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_delay);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        match retry_after {
            Some(after) => after.min(self.max_delay).max(jittered),
            None => jittered,
        }
    }
}

/// The management API client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    management_key: SecretString,
    retry: RetryPolicy,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("management_key", &"[REDACTED]")
            .finish()
    }
}

impl Client {
    pub fn new(
        base_url: &str,
        management_key: SecretString,
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
            .map_err(|e| UpstreamError::Transport {
                endpoint: Endpoint::Keys,
                message: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(Client {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            management_key,
            retry,
            telemetry,
        })
    }

    /// One full pass: workspaces, every key page of every workspace, then credits.
    /// Fails whole if any call fails, so callers never see a partial account.
    pub async fn fetch_all(&self, workspaces: &Workspaces) -> Result<UpstreamData, UpstreamError> {
        let workspace_ids: Vec<Option<String>> = match workspaces {
            Workspaces::Only(ids) => ids.iter().cloned().map(Some).collect(),
            Workspaces::All => match self.list_workspaces().await? {
                Some(list) => list.into_iter().map(|w| Some(w.id)).collect(),
                // No workspaces API on this server: the default listing is everything.
                None => vec![None],
            },
        };

        let semaphore = Arc::new(tokio::sync::Semaphore::new(WORKSPACE_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, workspace) in workspace_ids.into_iter().enumerate() {
            let client = self.clone();
            let semaphore = Arc::clone(&semaphore);
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                (index, client.list_keys(workspace.as_deref()).await)
            });
        }
        let mut per_workspace = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (index, result) = joined.map_err(|e| UpstreamError::Transport {
                endpoint: Endpoint::Keys,
                message: format!("listing task failed: {e}"),
            })?;
            per_workspace.push((index, result?));
        }
        per_workspace.sort_by_key(|(index, _)| *index);

        // A key listed twice (offsets shift when keys are created mid-listing,
        // or a key moves between workspaces) counts once. Each workspace's
        // listing has no duplicates already; the others are appended to the first.
        let total: usize = per_workspace.iter().map(|(_, listed)| listed.len()).sum();
        let mut listings = per_workspace.into_iter().map(|(_, listed)| listed);
        let mut keys = listings.next().unwrap_or_default();
        if keys.len() < total {
            keys.reserve_exact(total - keys.len());
            let mut seen = SeenHashes::with_capacity(total);
            for i in 0..keys.len() {
                seen.insert(&keys[..i], &keys[i].hash);
            }
            for listed in listings {
                for key in listed {
                    if seen.insert(&keys, &key.hash) {
                        keys.push(key);
                    }
                }
            }
        }
        let credits = self.credits().await?;
        Ok(UpstreamData {
            keys,
            credits: Some(credits),
        })
    }

    /// `None` when the server has no workspaces API (404).
    async fn list_workspaces(&self) -> Result<Option<Vec<Workspace>>, UpstreamError> {
        let mut all: Vec<Workspace> = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0;
        loop {
            let path = format!("/workspaces?offset={offset}&limit={PAGE_SIZE}");
            let page: Vec<Workspace> = match self.get(Endpoint::Workspaces, &path).await {
                Ok(page) => page,
                Err(UpstreamError::Status { status: 404, .. }) if offset == 0 => {
                    warn!("GET /workspaces answered 404; listing the default workspace only");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let len = page.len();
            let before = all.len();
            // A workspace listed twice would have its keys listed twice.
            all.extend(page.into_iter().filter(|w| seen.insert(w.id.clone())));
            if len < PAGE_SIZE {
                return Ok(Some(all));
            }
            if all.len() == before {
                // A full page of workspaces we already have: the server ignores `offset`.
                return Err(UpstreamError::Pagination {
                    listing: "/workspaces".into(),
                    message: format!("page at offset {offset} repeats earlier workspaces"),
                });
            }
            offset += len;
            if offset / PAGE_SIZE > MAX_PAGES {
                return Err(UpstreamError::Pagination {
                    listing: "/workspaces".into(),
                    message: format!("more than {MAX_PAGES} pages"),
                });
            }
        }
    }

    /// Every key of one workspace (or the default one), disabled keys included.
    pub async fn list_keys(&self, workspace: Option<&str>) -> Result<Vec<ApiKey>, UpstreamError> {
        let ws_query = workspace
            .map(|w| format!("&workspace_id={}", urlencode(w)))
            .unwrap_or_default();
        let ws_label = match workspace {
            Some(w) => format!("/keys?workspace_id={w}"),
            None => "/keys".to_string(),
        };
        let mut keys: Vec<ApiKey> = Vec::new();
        let mut seen = SeenHashes::with_capacity(PAGE_SIZE);
        // One body buffer for every page of the listing.
        let mut body = Vec::new();
        for page_number in 0..MAX_PAGES {
            let offset = page_number * PAGE_SIZE;
            let path = format!("/keys?include_disabled=true&offset={offset}{ws_query}");
            self.get_body_into(Endpoint::Keys, &path, &mut body).await?;
            let start = keys.len();
            let len = parse_keys_page_into(&body, &mut keys)?;
            // Keep the page's keys not listed before, in order, in place.
            let mut kept = start;
            for next in start..keys.len() {
                if seen.insert(&keys[..kept], &keys[next].hash) {
                    if kept != next {
                        keys.swap(kept, next);
                    }
                    kept += 1;
                }
            }
            keys.truncate(kept);
            let new_on_page = kept - start;
            for key in &mut keys[start..] {
                if key.workspace_id.is_none() {
                    key.workspace_id = workspace.map(str::to_string);
                }
            }
            if len < PAGE_SIZE {
                debug!(
                    workspace = workspace.unwrap_or("default"),
                    keys = keys.len(),
                    "listed keys"
                );
                return Ok(keys);
            }
            if new_on_page == 0 {
                // A full page of keys we already have: the server ignores `offset`.
                return Err(UpstreamError::Pagination {
                    listing: ws_label,
                    message: format!("page at offset {offset} repeats earlier keys"),
                });
            }
        }
        Err(UpstreamError::Pagination {
            listing: ws_label,
            message: format!("more than {MAX_PAGES} pages"),
        })
    }

    pub async fn credits(&self) -> Result<Credits, UpstreamError> {
        let credits: Credits = self.get(Endpoint::Credits, "/credits").await?;
        if !credits.total_credits.is_finite() || !credits.total_usage.is_finite() {
            return Err(UpstreamError::Decode {
                endpoint: Endpoint::Credits,
                message: "non-finite amount".into(),
            });
        }
        Ok(credits)
    }

    /// The same client, authenticating with another key (direct-key mode).
    pub fn with_bearer(&self, key: SecretString) -> Client {
        Client {
            management_key: key,
            ..self.clone()
        }
    }

    /// GET `path` (relative to the base URL) with retries; decodes `{"data": T}`.
    pub async fn get_data<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
    ) -> Result<T, UpstreamError> {
        self.get(endpoint, path).await
    }

    /// GET with retries; decodes `{"data": T}`.
    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
    ) -> Result<T, UpstreamError> {
        let mut body = Vec::new();
        self.get_body_into(endpoint, path, &mut body).await?;
        decode(endpoint, &body)
    }

    /// GET with retries; `body` ends up holding the raw body of the first
    /// successful answer (its allocation is reused from call to call).
    async fn get_body_into(
        &self,
        endpoint: Endpoint,
        path: &str,
        body: &mut Vec<u8>,
    ) -> Result<(), UpstreamError> {
        let mut retry = 0;
        loop {
            match self.get_once(endpoint, path, body).await {
                Ok(()) => return Ok(()),
                Err((error, retry_after)) => {
                    retry += 1;
                    if !error.retryable() || retry >= self.retry.attempts {
                        return Err(error);
                    }
                    let delay = self.retry.delay(retry, retry_after);
                    warn!(%error, retry, delay_ms = delay.as_millis() as u64, "retrying OpenRouter call");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One HTTP call; on failure also returns the server's `Retry-After`.
    async fn get_once(
        &self,
        endpoint: Endpoint,
        path: &str,
        body: &mut Vec<u8>,
    ) -> Result<(), (UpstreamError, Option<Duration>)> {
        let url = format!("{}{}", self.base_url, path);
        let sent = self
            .http
            .get(&url)
            .bearer_auth(self.management_key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let code = if e.is_timeout() { "timeout" } else { "error" };
                self.telemetry.count_request(endpoint, code);
                return Err((transport_error(endpoint, e), None));
            }
        };
        let status = response.status().as_u16();
        self.telemetry.count_request(endpoint, &status.to_string());
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

        read_capped(endpoint, &mut response, body)
            .await
            .map_err(|e| (e, retry_after))?;
        if !(200..300).contains(&status) {
            let message = upstream_message(body, self.management_key.expose_secret());
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
                            self.management_key.expose_secret(),
                        ),
                    },
                    None,
                ));
            }
        }
        Ok(())
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

fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_with_only_required_fields_parses_and_nulls_stay_unknown() {
        let key: ApiKey = serde_json::from_str(
            r#"{"hash":"h","name":"n","label":"l","disabled":false,"limit":null,
                "limit_remaining":null,"limit_reset":null,"usage":1.5,"usage_daily":null,
                "created_at":"2025-01-01T00:00:00Z","some_future_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(key.usage, Some(1.5));
        assert_eq!(key.usage_daily, None);
        assert_eq!(key.limit, None);
        assert_eq!(key.workspace_id, None);
        assert_eq!(key.expires_at, None);
    }

    #[test]
    fn pages_decode_into_a_vector_exactly_as_the_envelope_type_does() {
        let key = r#"{"hash":"h1","name":"n","usage":928.8842562579999,"usage_daily":19.117597195000002}"#;
        let documents = [
            format!(r#"{{"data":[{key},{key}]}}"#),
            format!(r#"{{"total_count":2,"data":[{key}],"next":{{"a":[1,2]}}}}"#),
            r#"{"data":[]}"#.to_string(),
            format!(r#"[[{key}]]"#),
            // Errors: no data, data twice, data null, a bad key, trailing bytes, not JSON.
            r#"{"total_count":0}"#.to_string(),
            r#"{"data":[],"data":[]}"#.to_string(),
            r#"{"data":null}"#.to_string(),
            r#"{"data":[{"name":"no hash"}]}"#.to_string(),
            format!(r#"{{"data":[{key}]}} x"#),
            "[]".to_string(),
            "".to_string(),
        ];
        for doc in &documents {
            let expected = decode::<Vec<ApiKey>>(Endpoint::Keys, doc.as_bytes());
            let mut keys = vec![serde_json::from_str::<ApiKey>(key).unwrap()];
            let got = parse_keys_page_into(doc.as_bytes(), &mut keys);
            match (expected, got) {
                (Ok(expected), Ok(n)) => {
                    assert_eq!(n, expected.len(), "{doc}");
                    assert_eq!(keys[1..], expected[..], "{doc}");
                }
                (Err(expected), Err(got)) => {
                    assert_eq!(got.to_string(), expected.to_string(), "{doc}");
                    assert_eq!(keys.len(), 1, "an error leaves the vector as it was: {doc}");
                }
                (expected, got) => panic!("{doc}: {expected:?} vs {got:?}"),
            }
        }
        // Money stays bit-exact.
        let keys = parse_keys_page(documents[0].as_bytes()).unwrap();
        assert_eq!(
            keys[0].usage.unwrap().to_bits(),
            928.8842562579999f64.to_bits()
        );
    }

    #[test]
    fn seen_hashes_are_exact_even_when_fingerprints_collide() {
        let key = |hash: &str| -> ApiKey {
            serde_json::from_value(serde_json::json!({"hash": hash})).unwrap()
        };
        let mut listed: Vec<ApiKey> = Vec::new();
        let mut seen = SeenHashes::with_capacity(4);
        for hash in ["a", "b", "a", "c", "b"] {
            if seen.insert(&listed, hash) {
                listed.push(key(hash));
            }
        }
        let hashes: Vec<&str> = listed.iter().map(|k| k.hash.as_str()).collect();
        assert_eq!(hashes, ["a", "b", "c"]);

        // Forge a collision: "x" and "y" both map to the fingerprint of "x".
        let mut seen = SeenHashes::with_capacity(4);
        let mut listed: Vec<ApiKey> = Vec::new();
        assert!(seen.insert(&listed, "x"));
        listed.push(key("x"));
        let y = seen.state.hash_one("y");
        let x = seen.state.hash_one("x");
        seen.first.remove(&y);
        seen.first.insert(y, 0);
        assert_ne!(x, y);
        assert!(seen.insert(&listed, "y"), "a colliding new hash is new");
        listed.push(key("y"));
        assert!(!seen.insert(&listed, "y"), "and then it is known");
        assert!(!seen.insert(&listed, "x"));
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
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
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

    #[test]
    fn workspace_ids_are_url_encoded() {
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
        assert_eq!(
            urlencode("0df9e665-d932-5740-b2c7-b52af166bc11"),
            "0df9e665-d932-5740-b2c7-b52af166bc11"
        );
    }
}
