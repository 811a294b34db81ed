//! A simulated OpenRouter management API on loopback.
//!
//! It serves the same HTTP shapes as the real API (`/workspaces`, paginated
//! `/keys`, `/credits`, bearer auth, OpenRouter error bodies), so the demo and
//! the tests exercise the real client end to end. Faults can be scripted to
//! make any call fail, hang or return garbage.
//!
//! Beyond faults, [`SimState`] has modes for the shapes the real API is known
//! or documented to serve (see `../shared/research/reviews/openrouter_reality.md`):
//!
//! | mode | how to turn it on |
//! |---|---|
//! | `/keys` page size (real: undocumented; newer endpoints default to 50) | `state.keys_page_size = 50` (default [`DEFAULT_PAGE_SIZE`]); a `limit` query parameter can only shrink it |
//! | keys listed most recent first, like the real API | `state.newest_first = true` |
//! | null or absent fields on chosen keys | [`SimKey::null`], [`SimKey::nulls`], [`SimKey::without`], [`SimKey::without_all`] with [`KEY_LIMIT_FIELDS`], [`KEY_DATE_FIELDS`], [`KEY_BYOK_FIELDS`], … |
//! | a key listed in two workspaces | [`SimKey::also_in`] |
//! | `/credits` failing forever (500, 403, …) | [`SimState::fail_forever`]`("/credits", 500)` (a [`Fault`] with no `times`) |
//! | `/workspaces` empty, 403 or 404 | `state.workspaces_mode = `[`WorkspacesMode::Empty`] / [`WorkspacesMode::Status`]`(403)`; `workspaces_api = false` is the older spelling of `Status(404)` |
//! | `/workspaces` without the default workspace | `state.list_default_workspace = false` |
//! | `/workspaces` paged below the asked `limit` (stop on `total_count`) | `state.workspaces_page_size = 50` (default 100, the documented maximum; default `limit` 50) |
//! | workspace slug vs UUID | every workspace has a slug ([`SimState::slug_of`]); `GET /workspaces/{id or slug}` resolves both; `/keys?workspace_id=<slug>` is a 400, as for any non-UUID |
//! | a recorded body (any status) served verbatim | [`FaultResponse::Reply`]`{status, body}` |
//! | organization members, guardrails, their key assignments, workspace budgets | `state.members`, `state.guardrails`, `state.guardrail_key_assignments` (spec shapes, paged on `offset`/`limit` with `total_count`, at most `state.org_page_size` per page); `state.workspace_budgets[workspace id]` ([`member_json`], [`guardrail_json`], [`assignment_json`], [`budget_json`]) |
//! | a management key that is not one (`GET /key` answers `is_management_key: false`, `/keys` a 401) | `state.management_key_is_management = false` |
//! | `Retry-After` in seconds, as an HTTP date, or garbage | [`FaultResponse::Error`]`{retry_after: Some(secs)}` or [`FaultResponse::ErrorRetryAfter`]`{value}` |
//! | a real network's round trip: every call answered after a delay | `state.latency = Duration::from_millis(250)` |
//! | how many requests were in flight at once | `state.max_in_flight` (peak since start or since reset), `state.in_flight` (now); `state.answered`: each request with when it was answered |

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::config::is_uuid;

/// Keys per `/keys` page unless [`SimState::keys_page_size`] says otherwise:
/// the 100 that OpenRouter's guide prose mentions. The simulator owns this
/// number; the client must not rely on it (issue 12: stop on an empty page).
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// `/workspaces` `limit`: its documented maximum and its default.
pub const WORKSPACES_MAX_LIMIT: usize = 100;
pub const WORKSPACES_DEFAULT_LIMIT: usize = 50;

/// `limit`, `limit_remaining`, `limit_reset`: nullable per the spec.
pub const KEY_LIMIT_FIELDS: &[&str] = &["limit", "limit_remaining", "limit_reset"];
/// Date fields of a listed key.
pub const KEY_DATE_FIELDS: &[&str] = &["created_at", "updated_at", "expires_at"];
/// Every BYOK field of a listed key.
pub const KEY_BYOK_FIELDS: &[&str] = &[
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
    "include_byok_in_limit",
];
/// Identity fields the spec marks required and non-null, which some clients type as nullable.
pub const KEY_IDENTITY_FIELDS: &[&str] = &["name", "label", "disabled"];

/// One key as the simulated server lists it: its workspace and its JSON object,
/// which tests may shape freely (missing fields, odd values).
#[derive(Debug, Clone)]
pub struct SimKey {
    pub workspace: String,
    pub fields: Map<String, Value>,
    /// Further workspaces whose `/keys` listing also returns this key (a key
    /// listed twice must count once).
    pub also_listed_in: Vec<String>,
}

impl SimKey {
    /// A key with every field of the current API and zero usage.
    pub fn new(workspace: &str, hash: &str, name: &str) -> SimKey {
        let fields = json!({
            "hash": hash, "name": name, "label": format!("sk-or-v1-{}...{}", &hash[..3.min(hash.len())], "abcd"),
            "disabled": false, "limit": null, "limit_remaining": null, "limit_reset": null,
            "include_byok_in_limit": false,
            "usage": 0.0, "usage_daily": 0.0, "usage_weekly": 0.0, "usage_monthly": 0.0,
            "byok_usage": 0.0, "byok_usage_daily": 0.0, "byok_usage_weekly": 0.0, "byok_usage_monthly": 0.0,
            "created_at": "2025-08-24T10:30:00Z", "updated_at": null, "creator_user_id": null,
            "workspace_id": workspace, "expires_at": null,
        });
        let Value::Object(fields) = fields else {
            unreachable!("json! of an object literal is an object")
        };
        SimKey {
            workspace: workspace.to_string(),
            fields,
            also_listed_in: Vec::new(),
        }
    }

    /// Sets `field` to JSON `null`.
    pub fn null(self, field: &str) -> SimKey {
        self.set(field, Value::Null)
    }

    /// Sets each of `fields` to JSON `null` (e.g. [`KEY_BYOK_FIELDS`]).
    pub fn nulls(self, fields: &[&str]) -> SimKey {
        fields.iter().fold(self, |key, f| key.null(f))
    }

    /// Removes each of `fields` from the JSON object.
    pub fn without_all(self, fields: &[&str]) -> SimKey {
        fields.iter().fold(self, |key, f| key.without(f))
    }

    /// Also lists this key under `workspace` (its `workspace_id` field stays the first).
    pub fn also_in(mut self, workspace: &str) -> SimKey {
        self.also_listed_in.push(workspace.to_string());
        self
    }

    fn listed_in(&self, workspace: &str) -> bool {
        self.workspace == workspace || self.also_listed_in.iter().any(|w| w == workspace)
    }

    pub fn set(mut self, field: &str, value: Value) -> SimKey {
        self.fields.insert(field.to_string(), value);
        self
    }

    pub fn without(mut self, field: &str) -> SimKey {
        self.fields.remove(field);
        self
    }

    /// Sets usage for all windows: daily, weekly, monthly, lifetime.
    pub fn usage(self, daily: f64, weekly: f64, monthly: f64, lifetime: f64) -> SimKey {
        self.set("usage_daily", json!(daily))
            .set("usage_weekly", json!(weekly))
            .set("usage_monthly", json!(monthly))
            .set("usage", json!(lifetime))
    }

    pub fn byok(self, daily: f64, weekly: f64, monthly: f64, lifetime: f64) -> SimKey {
        self.set("byok_usage_daily", json!(daily))
            .set("byok_usage_weekly", json!(weekly))
            .set("byok_usage_monthly", json!(monthly))
            .set("byok_usage", json!(lifetime))
    }

    pub fn hash(&self) -> &str {
        self.fields
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn num(&self, field: &str) -> Option<f64> {
        self.fields.get(field).and_then(Value::as_f64)
    }
}

/// What a scripted fault answers instead of the normal response.
#[derive(Debug, Clone)]
pub enum FaultResponse {
    /// An OpenRouter error body with this status and optional `Retry-After` seconds.
    Error {
        status: u16,
        retry_after: Option<u64>,
    },
    /// An OpenRouter error body with this status and a verbatim `Retry-After`
    /// header: an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`), a huge number, garbage.
    ErrorRetryAfter { status: u16, value: String },
    /// A 200 with this body and content type.
    Raw { content_type: String, body: String },
    /// Any status with this body verbatim (e.g. a recorded error body from
    /// `tests/fixtures/`), as `application/json`.
    Reply { status: u16, body: String },
    /// Wait, then answer normally (longer than the client timeout = a timeout).
    Delay(Duration),
    /// Answer normally, but with this `Content-Type`.
    ContentType(String),
    /// Answer as if the request had no `offset`: a server that repeats its first page forever.
    IgnoreOffset,
    /// A 200 whose body is `bytes` bytes of filler, streamed from one small
    /// buffer (cheap at any size). With `content_length` the size is announced
    /// up front; without, it is sent chunked and only its length gives it away.
    Stream { bytes: u64, content_length: bool },
    /// A 200 that announces `declared` bytes, sends `body`, then drops the connection.
    CutOff { body: String, declared: u64 },
    /// Read the request, then close the connection without answering.
    Disconnect,
    /// A broken proxy: this status with a plain-text body echoing the request
    /// line and its `Authorization` header (the management key).
    EchoRequest { status: u16 },
}

/// A fault for requests whose path (after `/api/v1`) equals `path` and, when
/// set, whose `offset` query parameter equals `offset` and whose
/// `workspace_id` equals `workspace`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub path: String,
    pub offset: Option<usize>,
    pub workspace: Option<String>,
    pub response: FaultResponse,
    /// How many matching requests it answers; `None` = all of them.
    pub times: Option<u32>,
}

impl Fault {
    /// Every request to `path` answers `status` (an OpenRouter error body), forever.
    pub fn status(path: &str, status: u16) -> Fault {
        Fault::new(
            path,
            FaultResponse::Error {
                status,
                retry_after: None,
            },
        )
    }

    /// Every request to `path` answers `status` with `Retry-After: seconds`.
    pub fn retry_after(path: &str, status: u16, seconds: u64) -> Fault {
        Fault::new(
            path,
            FaultResponse::Error {
                status,
                retry_after: Some(seconds),
            },
        )
    }

    pub fn new(path: &str, response: FaultResponse) -> Fault {
        Fault {
            path: path.to_string(),
            offset: None,
            workspace: None,
            response,
            times: None,
        }
    }

    pub fn at_offset(mut self, offset: usize) -> Fault {
        self.offset = Some(offset);
        self
    }

    /// Only requests for this `workspace_id` (e.g. a workspace deleted mid-refresh).
    pub fn for_workspace(mut self, workspace: &str) -> Fault {
        self.workspace = Some(workspace.to_string());
        self
    }

    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }

    fn matches(&self, path: &str, offset: Option<usize>, workspace: Option<&str>) -> bool {
        self.times != Some(0)
            && self.path == path
            && (self.offset.is_none() || self.offset == Some(offset.unwrap_or(0)))
            && (self.workspace.is_none() || self.workspace.as_deref() == workspace)
    }
}

/// The simulated server's response body: a buffer, a cheap stream of filler,
/// or a body that breaks off.
pub struct SimBody {
    kind: BodyKind,
}

enum BodyKind {
    Full(Option<Bytes>),
    Repeat {
        chunk: Bytes,
        remaining: u64,
        exact: bool,
    },
    /// Sends its data, pauses (so the head and data reach the client), then breaks.
    CutOff {
        data: Option<Bytes>,
        pause: Pin<Box<tokio::time::Sleep>>,
    },
}

impl SimBody {
    fn full(bytes: impl Into<Bytes>) -> SimBody {
        SimBody {
            kind: BodyKind::Full(Some(bytes.into())),
        }
    }
}

impl Default for SimBody {
    fn default() -> Self {
        SimBody::full(Bytes::new())
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let frame = match &mut self.kind {
            BodyKind::Full(data) => data
                .take()
                .filter(|d| !d.is_empty())
                .map(|d| Ok(Frame::data(d))),
            BodyKind::Repeat {
                chunk, remaining, ..
            } => {
                if *remaining == 0 {
                    None
                } else {
                    let n = (*remaining).min(chunk.len() as u64);
                    *remaining -= n;
                    Some(Ok(Frame::data(chunk.slice(..n as usize))))
                }
            }
            BodyKind::CutOff { data, pause } => match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => {
                    if pause.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "simulated cut-off",
                    )))
                }
            },
        };
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(data) => !matches!(data, Some(d) if !d.is_empty()),
            BodyKind::Repeat { remaining, .. } => *remaining == 0,
            BodyKind::CutOff { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Repeat {
                remaining,
                exact: true,
                ..
            } => SizeHint::with_exact(*remaining),
            _ => SizeHint::default(),
        }
    }
}

/// The simulated account.
#[derive(Debug, Clone)]
pub struct SimState {
    pub management_key: String,
    /// (id, name); the first is the default workspace (listed by `/keys`
    /// without `workspace_id`). Each has a slug: [`SimState::slug_of`].
    pub workspaces: Vec<(String, String)>,
    /// When false, `/workspaces` answers 404 like an older API (same as
    /// `workspaces_mode = WorkspacesMode::Status(404)`).
    pub workspaces_api: bool,
    /// What `GET /workspaces` answers.
    pub workspaces_mode: WorkspacesMode,
    /// When false, `GET /workspaces` leaves the default workspace (the first) out.
    pub list_default_workspace: bool,
    /// Most workspaces per `/workspaces` page, whatever `limit` asks
    /// (default [`WORKSPACES_MAX_LIMIT`]). `total_count` is always the full count.
    pub workspaces_page_size: usize,
    /// Keys per `/keys` page (default [`DEFAULT_PAGE_SIZE`]). The client sends
    /// no `limit`; if one is sent it can only make pages smaller.
    pub keys_page_size: usize,
    /// List keys most recent first (reverse insertion order), as the real API does.
    pub newest_first: bool,
    pub keys: Vec<SimKey>,
    pub total_credits: f64,
    pub total_usage: f64,
    pub faults: Vec<Fault>,
    /// Every request's path and query, in order.
    pub requests: Vec<String>,
    /// Every request's path and query with when it was answered (after
    /// `latency`), in order: `requests` with times.
    pub answered: Vec<(std::time::Instant, String)>,
    /// `GET /activity` rows per key hash (`date`, `model`, `usage`, …). A
    /// `date` may carry a time part (`"2026-07-27 00:00:00"`, as live accounts
    /// send it): the day is its first 10 characters. A hash that is not a
    /// listed key answers 404, as upstream does for a deleted key (remove
    /// its rows here too).
    pub activity: std::collections::HashMap<String, Vec<Value>>,
    /// `GET /activity` for these key hashes answers this status instead.
    pub activity_failures: std::collections::HashMap<String, u16>,
    /// Rows (without `date`) that every listed key not in `activity` answers
    /// for each of its 30 completed days: a dense account for benchmarks.
    pub activity_every_day: Vec<Value>,
    /// Inference keys' secrets → the hash of the key they belong to (`GET /key`).
    pub inference_keys: std::collections::HashMap<String, String>,
    /// Every request waits this long before it is answered (faults included):
    /// a network round trip. Zero by default.
    pub latency: Duration,
    /// Requests being handled right now (counted from arrival to answer).
    pub in_flight: usize,
    /// The most requests ever handled at once; a test may reset it to 0.
    pub max_in_flight: usize,
    /// `GET /organization/members` items ([`member_json`]).
    pub members: Vec<Value>,
    /// `GET /guardrails` items ([`guardrail_json`]).
    pub guardrails: Vec<Value>,
    /// `GET /guardrails/assignments/keys` items ([`assignment_json`]).
    pub guardrail_key_assignments: Vec<Value>,
    /// Workspace id → `GET /workspaces/{id}/budgets` items ([`budget_json`]).
    pub workspace_budgets: std::collections::HashMap<String, Vec<Value>>,
    /// Most items per page of the member and guardrail lists, whatever `limit` asks.
    pub org_page_size: usize,
    /// When false, the management key is an ordinary key: `GET /key` says
    /// `is_management_key: false` and the management endpoints answer 401.
    pub management_key_is_management: bool,
}

impl SimState {
    pub fn new(management_key: &str) -> SimState {
        SimState {
            management_key: management_key.to_string(),
            workspaces: Vec::new(),
            workspaces_api: true,
            workspaces_mode: WorkspacesMode::List,
            list_default_workspace: true,
            workspaces_page_size: WORKSPACES_MAX_LIMIT,
            keys_page_size: DEFAULT_PAGE_SIZE,
            newest_first: false,
            keys: Vec::new(),
            total_credits: 0.0,
            total_usage: 0.0,
            faults: Vec::new(),
            requests: Vec::new(),
            answered: Vec::new(),
            activity: Default::default(),
            activity_failures: Default::default(),
            activity_every_day: Vec::new(),
            inference_keys: Default::default(),
            latency: Duration::ZERO,
            in_flight: 0,
            max_in_flight: 0,
            members: Vec::new(),
            guardrails: Vec::new(),
            guardrail_key_assignments: Vec::new(),
            workspace_budgets: Default::default(),
            org_page_size: WORKSPACES_MAX_LIMIT,
            management_key_is_management: true,
        }
    }

    pub fn key_mut(&mut self, hash: &str) -> Option<&mut SimKey> {
        self.keys.iter_mut().find(|k| k.hash() == hash)
    }

    /// Makes every request to `path` (e.g. `"/credits"`) answer `status` from now on.
    pub fn fail_forever(&mut self, path: &str, status: u16) {
        self.faults.push(Fault::status(path, status));
    }

    /// The slug of workspace `id`: its name, lowercased, spaces as dashes
    /// (the default workspace's real slug is `default`).
    pub fn slug_of(&self, id: &str) -> Option<String> {
        self.workspaces
            .iter()
            .find(|(w, _)| w == id)
            .map(|(_, name)| slugify(name))
    }

    /// Sum of `usage` over all keys: what `/credits` would report with nothing deleted.
    pub fn keys_lifetime_usage(&self) -> f64 {
        self.keys.iter().filter_map(|k| k.num("usage")).sum()
    }
}

/// What `GET /workspaces` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkspacesMode {
    /// The workspaces, paged, with `total_count`.
    #[default]
    List,
    /// `{"data": [], "total_count": 0}`.
    Empty,
    /// An OpenRouter error body with this status (403, 404, 500, …), forever.
    Status(u16),
}

fn slugify(name: &str) -> String {
    name.trim().to_lowercase().replace(char::is_whitespace, "-")
}

/// A running simulated server. Dropping it stops the accept loop.
pub struct SimServer {
    addr: SocketAddr,
    state: Arc<Mutex<SimState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimServer {
    /// Binds `127.0.0.1:0` and serves `state`.
    pub async fn start(state: SimState) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(state));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    // An `Err` from the service makes hyper drop the connection unanswered.
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { handle(req, &state).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(SimServer { addr, state, task })
    }

    /// The base URL to put in `openrouter.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Locks the state to read or change the account between refreshes.
    pub fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.state)
    }

    pub fn shared_state(&self) -> Arc<Mutex<SimState>> {
        Arc::clone(&self.state)
    }
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    // A panicking test thread must not wedge the server for the others.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn query_params(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (k.to_string(), percent_decode(v)),
            None => (pair.to_string(), String::new()),
        })
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: u16, body: Value) -> Response<SimBody> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(SimBody::full(body.to_string()))
        .unwrap_or_default()
}

fn json_body_response(status: u16, body: String) -> Response<SimBody> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(SimBody::full(body))
        .unwrap_or_default()
}

/// `offset` and `limit` of a list endpoint with `total_count` (workspaces,
/// members, guardrails): limit defaults to 50 and must be 1–100, as
/// documented; `None` for a limit out of range.
fn offset_and_limit(params: &HashMap<String, String>) -> Option<(usize, usize)> {
    let offset = params
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    match params.get("limit").map(|l| l.parse::<usize>()) {
        None => Some((offset, WORKSPACES_DEFAULT_LIMIT)),
        Some(Ok(l)) if (1..=WORKSPACES_MAX_LIMIT).contains(&l) => Some((offset, l)),
        Some(_) => None,
    }
}

fn error_response(status: u16, message: &str) -> Response<SimBody> {
    json_response(
        status,
        json!({"error": {"code": status, "message": message}}),
    )
}

/// Counts one request in flight from its arrival until its answer is made.
struct InFlight<'a>(&'a Mutex<SimState>);

impl<'a> InFlight<'a> {
    fn enter(state: &'a Mutex<SimState>) -> InFlight<'a> {
        let mut st = lock(state);
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = lock(self.0);
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

async fn handle(
    req: Request<Incoming>,
    state: &Mutex<SimState>,
) -> Result<Response<SimBody>, std::io::Error> {
    let _in_flight = InFlight::enter(state);
    let latency = lock(state).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = req
        .uri()
        .path()
        .strip_prefix("/api/v1")
        .unwrap_or(req.uri().path())
        .to_string();
    let mut params = query_params(req.uri().query());
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    // Pick a fault (consuming one use) while holding the lock, act on it after.
    let fault = {
        let mut st = lock(state);
        let request = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        st.answered
            .push((std::time::Instant::now(), request.clone()));
        st.requests.push(request);
        let offset: Option<usize> = params.get("offset").and_then(|o| o.parse().ok());
        let workspace = params.get("workspace_id").map(String::as_str);
        let hit = st
            .faults
            .iter()
            .position(|f| f.matches(&path, offset, workspace));
        match hit {
            Some(i) => {
                let response = st.faults[i].response.clone();
                if let Some(times) = st.faults[i].times.as_mut() {
                    *times = times.saturating_sub(1);
                    if *times == 0 {
                        st.faults.remove(i);
                    }
                }
                Some(response)
            }
            None => None,
        }
    };
    let mut content_type = None;
    match fault {
        Some(FaultResponse::Error {
            status,
            retry_after,
        }) => {
            let mut response = error_response(status, "simulated failure");
            if let Some(after) = retry_after {
                if let Ok(v) = after.to_string().parse() {
                    response.headers_mut().insert("retry-after", v);
                }
            }
            return Ok(response);
        }
        Some(FaultResponse::ErrorRetryAfter { status, value }) => {
            let mut response = error_response(status, "simulated failure");
            if let Ok(v) = value.parse() {
                response.headers_mut().insert("retry-after", v);
            }
            return Ok(response);
        }
        Some(FaultResponse::Reply { status, body }) => {
            return Ok(json_body_response(status, body));
        }
        Some(FaultResponse::Raw { content_type, body }) => {
            return Ok(Response::builder()
                .header("content-type", content_type)
                .body(SimBody::full(body))
                .unwrap_or_default());
        }
        Some(FaultResponse::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultResponse::ContentType(ct)) => content_type = Some(ct),
        Some(FaultResponse::IgnoreOffset) => {
            params.remove("offset");
        }
        Some(FaultResponse::Stream {
            bytes,
            content_length,
        }) => {
            // 64 KiB of JSON-ish filler, sliced and re-sent: no allocation per byte sent.
            let chunk = Bytes::from(b"[0,".repeat(64 * 1024 / 3));
            return Ok(Response::builder()
                .header("content-type", "application/json")
                .body(SimBody {
                    kind: BodyKind::Repeat {
                        chunk,
                        remaining: bytes,
                        exact: content_length,
                    },
                })
                .unwrap_or_default());
        }
        Some(FaultResponse::CutOff { body, declared }) => {
            return Ok(Response::builder()
                .header("content-type", "application/json")
                .header("content-length", declared)
                .body(SimBody {
                    kind: BodyKind::CutOff {
                        data: Some(Bytes::from(body)),
                        pause: Box::pin(tokio::time::sleep(Duration::from_millis(20))),
                    },
                })
                .unwrap_or_default());
        }
        Some(FaultResponse::EchoRequest { status }) => {
            let echo = format!(
                "bad gateway; request was: GET {}\nauthorization: {}\n",
                req.uri(),
                auth.as_deref().unwrap_or("")
            );
            return Ok(Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
                .header("content-type", "text/plain")
                .body(SimBody::full(echo))
                .unwrap_or_default());
        }
        Some(FaultResponse::Disconnect) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "simulated disconnect",
            ));
        }
        None => {}
    }

    let mut response = answer(&path, &params, auth.as_deref(), &lock(state));
    if let Some(ct) = content_type {
        if let Ok(v) = ct.parse() {
            response.headers_mut().insert("content-type", v);
        }
    }
    Ok(response)
}

/// The normal, fault-free answer.
fn answer(
    path: &str,
    params: &HashMap<String, String>,
    auth: Option<&str>,
    st: &SimState,
) -> Response<SimBody> {
    // `GET /key` answers for any key: the key that authenticates.
    if path == "/key" {
        let secret = auth.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        if secret == st.management_key {
            return json_response(
                200,
                json!({"data": {
                    "label": "sk-or-v1-man...agmt", "limit": null, "limit_remaining": null,
                    "limit_reset": null, "usage": 0.0, "usage_daily": 0.0, "usage_weekly": 0.0,
                    "usage_monthly": 0.0, "is_free_tier": false,
                    "is_management_key": st.management_key_is_management,
                    "is_provisioning_key": st.management_key_is_management,
                    "creator_user_id": null, "expires_at": null,
                }}),
            );
        }
        let Some(hash) = st.inference_keys.get(secret) else {
            return error_response(401, "User not found.");
        };
        let Some(key) = st.keys.iter().find(|k| k.hash() == hash) else {
            return error_response(401, "User not found.");
        };
        let mut fields = key.fields.clone();
        for hidden in [
            "hash",
            "name",
            "disabled",
            "workspace_id",
            "created_at",
            "updated_at",
        ] {
            fields.remove(hidden);
        }
        fields.insert("is_free_tier".into(), json!(false));
        fields.insert("is_management_key".into(), json!(false));
        fields.insert("is_provisioning_key".into(), json!(false));
        return json_response(200, json!({ "data": fields }));
    }
    let expected = format!("Bearer {}", st.management_key);
    if auth != Some(expected.as_str()) {
        return error_response(401, "No auth credentials found");
    }
    if !st.management_key_is_management {
        return error_response(401, "Only management keys can perform this operation");
    }
    let counted = |items: &[Value]| {
        let Some((offset, limit)) = offset_and_limit(params) else {
            return error_response(400, "limit must be between 1 and 100");
        };
        let page: Vec<Value> = items
            .iter()
            .skip(offset)
            .take(limit.min(st.org_page_size))
            .cloned()
            .collect();
        json_response(200, json!({"data": page, "total_count": items.len()}))
    };
    match path {
        "/organization/members" => return counted(&st.members),
        "/guardrails" => return counted(&st.guardrails),
        "/guardrails/assignments/keys" => return counted(&st.guardrail_key_assignments),
        _ => {}
    }
    if let Some(id) = path
        .strip_prefix("/workspaces/")
        .and_then(|rest| rest.strip_suffix("/budgets"))
    {
        let id = percent_decode(id);
        let Some((id, _)) = st
            .workspaces
            .iter()
            .find(|(w, name)| *w == id || slugify(name) == id)
        else {
            return error_response(404, "Workspace not found");
        };
        let budgets = st.workspace_budgets.get(id).cloned().unwrap_or_default();
        return json_response(
            200,
            json!({"data": budgets, "include_byok_in_budgets": false}),
        );
    }
    match path {
        "/workspaces" => {
            let mode = if st.workspaces_api {
                st.workspaces_mode
            } else {
                WorkspacesMode::Status(404)
            };
            let listed: Vec<&(String, String)> = match mode {
                WorkspacesMode::Status(status) => {
                    return error_response(status, "simulated /workspaces failure")
                }
                WorkspacesMode::Empty => Vec::new(),
                WorkspacesMode::List => st
                    .workspaces
                    .iter()
                    .skip(usize::from(!st.list_default_workspace))
                    .collect(),
            };
            let Some((offset, limit)) = offset_and_limit(params) else {
                return error_response(400, "limit must be between 1 and 100");
            };
            let page: Vec<Value> = listed
                .iter()
                .skip(offset)
                .take(limit.min(st.workspaces_page_size))
                .map(|(id, name)| workspace_json(id, name))
                .collect();
            json_response(200, json!({"data": page, "total_count": listed.len()}))
        }
        "/keys" => {
            let workspace = match params.get("workspace_id") {
                Some(ws) => {
                    if !st.workspaces.iter().any(|(id, _)| id == ws) {
                        if !is_uuid(ws) {
                            // The spec types `workspace_id` as `format: uuid`; a slug is refused.
                            return error_response(400, "Invalid workspace_id: expected a UUID");
                        }
                        return error_response(404, "Workspace not found");
                    }
                    ws.clone()
                }
                None => st
                    .workspaces
                    .first()
                    .map(|(id, _)| id.clone())
                    .unwrap_or_default(),
            };
            let include_disabled =
                params.get("include_disabled").map(String::as_str) == Some("true");
            let offset: usize = params
                .get("offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            let page_size = params
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .map_or(st.keys_page_size, |l| l.min(st.keys_page_size));
            let listed = st
                .keys
                .iter()
                .filter(|k| k.listed_in(&workspace))
                .filter(|k| {
                    include_disabled
                        || !k
                            .fields
                            .get("disabled")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                });
            let ordered: Vec<&SimKey> = if st.newest_first {
                listed.rev().collect()
            } else {
                listed.collect()
            };
            let page: Vec<Value> = ordered
                .into_iter()
                .skip(offset)
                .take(page_size)
                .map(|k| Value::Object(k.fields.clone()))
                .collect();
            json_response(200, json!({ "data": page }))
        }
        "/credits" => json_response(
            200,
            json!({"data": {"total_credits": st.total_credits, "total_usage": st.total_usage}}),
        ),
        "/activity" => {
            // The last 30 completed UTC days; today or older dates are a 400, as upstream.
            let today = chrono::Utc::now().date_naive();
            let oldest = today - chrono::Duration::days(30);
            let date = match params.get("date") {
                Some(d) => match chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                    Ok(d) if d < today && d >= oldest => Some(d),
                    _ => {
                        return error_response(
                            400,
                            "Date must be within the last 30 (completed) UTC days",
                        )
                    }
                },
                None => None,
            };
            let hash = params.get("api_key_hash").cloned().unwrap_or_default();
            if let Some(status) = st.activity_failures.get(&hash) {
                return error_response(*status, "Simulated activity failure");
            }
            if !st.activity.contains_key(&hash) && !st.keys.iter().any(|k| k.hash() == hash) {
                return error_response(404, "Resource not found");
            }
            let every_day: Vec<Value> = if st.activity.contains_key(&hash) {
                Vec::new()
            } else {
                let days = (1..=30).map(|back| today - chrono::Duration::days(back));
                days.flat_map(|day| {
                    st.activity_every_day.iter().map(move |row| {
                        let mut row = row.clone();
                        row["date"] = json!(format!("{day} 00:00:00"));
                        row
                    })
                })
                .collect()
            };
            let rows: Vec<Value> = st
                .activity
                .get(&hash)
                .into_iter()
                .flatten()
                .chain(&every_day)
                .filter(|row| {
                    let d = row
                        .get("date")
                        .and_then(Value::as_str)
                        .and_then(|d| d.get(..10))
                        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
                    match (d, date) {
                        (Some(d), Some(want)) => d == want,
                        (Some(d), None) => d < today && d >= oldest,
                        // An unreadable date is served as is: the client must not take it for a zero.
                        (None, _) => true,
                    }
                })
                .cloned()
                .collect();
            json_response(200, json!({ "data": rows }))
        }
        other => match other.strip_prefix("/workspaces/") {
            // `GET /workspaces/{id}` takes "the workspace ID (UUID) or slug".
            Some(wanted) if !wanted.contains('/') => {
                let wanted = percent_decode(wanted);
                match st
                    .workspaces
                    .iter()
                    .find(|(id, name)| *id == wanted || slugify(name) == wanted)
                {
                    Some((id, name)) => {
                        json_response(200, json!({"data": workspace_json(id, name)}))
                    }
                    None => error_response(404, "Workspace not found"),
                }
            }
            _ => error_response(404, "Not Found"),
        },
    }
}

/// A member as `GET /organization/members` lists it (spec shape).
pub fn member_json(id: &str, email: &str, first_name: &str, last_name: &str) -> Value {
    json!({"id": id, "email": email, "first_name": first_name, "last_name": last_name, "role": "org:member"})
}

/// A guardrail as `GET /guardrails` lists it; `limit_usd` and `reset_interval` may be `None` (null).
pub fn guardrail_json(id: &str, name: &str, limit_usd: Option<f64>, reset: Option<&str>) -> Value {
    json!({
        "id": id, "name": name, "description": null, "limit_usd": limit_usd,
        "reset_interval": reset, "allowed_providers": null, "allowed_models": null,
        "enforce_zdr": false, "workspace_id": null,
        "created_at": "2026-04-20T00:00:00Z", "updated_at": null,
    })
}

/// One key assignment as `GET /guardrails/assignments/keys` lists it (spec shape).
pub fn assignment_json(id: &str, key_hash: &str, guardrail_id: &str) -> Value {
    json!({
        "id": id, "key_hash": key_hash, "guardrail_id": guardrail_id, "key_name": null,
        "key_label": null, "assigned_by": "user_sim", "created_at": "2026-04-20T00:00:00Z",
    })
}

/// One workspace budget as `GET /workspaces/{id}/budgets` lists it (spec
/// shape; `reset` `None` = lifetime).
pub fn budget_json(id: &str, workspace_id: &str, limit_usd: f64, reset: Option<&str>) -> Value {
    json!({
        "id": id, "workspace_id": workspace_id, "limit_usd": limit_usd, "reset_interval": reset,
        "created_at": "2026-04-20T00:00:00Z", "updated_at": null,
    })
}

/// A workspace object with the spec's required fields.
fn workspace_json(id: &str, name: &str) -> Value {
    json!({
        "id": id, "name": name, "slug": slugify(name), "description": null,
        "default_text_model": null, "default_image_model": null, "default_provider_sort": null,
        "default_guardrail_id": null,
        "is_observability_io_logging_enabled": false, "is_observability_broadcast_enabled": false,
        "is_data_discount_logging_enabled": false, "io_logging_sampling_rate": 1,
        "io_logging_api_key_ids": null,
        "created_at": "2026-04-20T00:00:00Z", "updated_at": null, "created_by": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let p = query_params(Some("offset=100&workspace_id=a%20b&flag"));
        assert_eq!(p["offset"], "100");
        assert_eq!(p["workspace_id"], "a b");
        assert_eq!(p["flag"], "");
    }

    #[test]
    fn uuids_and_slugs() {
        assert!(is_uuid("11111111-1111-4111-8111-111111111111"));
        assert!(is_uuid("ABCDEF01-1111-4111-8111-111111111111"));
        assert!(!is_uuid("default"));
        assert!(!is_uuid("11111111-1111-4111-8111-11111111111"));
        assert_eq!(slugify("Research Lab"), "research-lab");
        let mut state = SimState::new("k");
        state.workspaces = vec![("w".into(), "Default".into())];
        assert_eq!(state.slug_of("w").as_deref(), Some("default"));
        assert_eq!(state.slug_of("x"), None);
    }

    #[test]
    fn key_shaping_helpers() {
        let key = SimKey::new("ws", "abcdef", "n")
            .nulls(KEY_BYOK_FIELDS)
            .without_all(KEY_DATE_FIELDS)
            .null("label")
            .also_in("other");
        assert_eq!(key.fields["byok_usage"], Value::Null);
        assert_eq!(key.fields["label"], Value::Null);
        assert!(!key.fields.contains_key("created_at"));
        assert!(key.listed_in("ws") && key.listed_in("other") && !key.listed_in("third"));
    }
}
