//! A simulated OpenRouter management API on loopback.
//!
//! It serves the same HTTP shapes as the real API (`/workspaces`, paginated
//! `/keys`, `/credits`, `/activity`, the organization lists, bearer auth,
//! OpenRouter error bodies), so the demo and the tests exercise the real
//! client end to end. Tests can also script faults to make any call fail,
//! hang or return garbage: the `faults` module, compiled only for tests and
//! tools (`cfg(test)` or the `testing` feature, which `cargo test` turns on),
//! never into the release binary.
//!
//! One file per concern: `account` (the simulated account and its switches),
//! `http` (request, body, JSON and error responses, paging), one file per
//! endpoint group (`keys`, `workspaces`, `organization`, `activity`), and
//! `faults`; this file runs the server and routes each request.
//!
//! Beyond faults, [`SimState`] has modes for the shapes the real API is known
//! or documented to serve, which the real client must take in its stride:
//!
//! | mode | how to turn it on |
//! |---|---|
//! | `/keys` page size (real: undocumented; newer endpoints default to 50) | `state.keys_page_size = 50` (default [`DEFAULT_PAGE_SIZE`]); a `limit` query parameter can only shrink it |
//! | keys listed most recent first, like the real API | `state.newest_first = true` |
//! | expired keys left out of `/keys` unless `include_expired=true` (newer API) | an `expires_at` in the past ([`SimKey::set`]) |
//! | an item deleted while its list is paged (a key, a workspace, a member, a guardrail, an assignment) | `state.deletions.push(`[`Deletion`]`::new("/keys", 100, &hash))`: deleted as the first request to that path asking from `offset` 100 or beyond arrives |
//! | null or absent fields on chosen keys | [`SimKey::null`], [`SimKey::nulls`], [`SimKey::without`], [`SimKey::without_all`] with [`KEY_LIMIT_FIELDS`], [`KEY_DATE_FIELDS`], [`KEY_BYOK_FIELDS`], … |
//! | a key listed in two workspaces | [`SimKey::also_in`] |
//! | `/workspaces` empty, 403 or 404 | `state.workspaces_mode = `[`WorkspacesMode::Empty`] / [`WorkspacesMode::Status`]`(403)`; `workspaces_api = false` is the older spelling of `Status(404)` |
//! | `/workspaces` without the default workspace | `state.list_default_workspace = false` |
//! | `/workspaces` paged below the asked `limit` (stop on `total_count`) | `state.workspaces_page_size = 50` (default 100, the documented maximum; default `limit` 50) |
//! | workspace slug vs UUID | every workspace has a slug ([`SimState::slug_of`]); `GET /workspaces/{id or slug}` resolves both; `/keys?workspace_id=<slug>` is a 400, as for any non-UUID |
//! | organization members, guardrails (per workspace: `workspace_id`, `null` = the default one), their key assignments, workspace budgets | `state.members`, `state.guardrails`, `state.guardrail_key_assignments` (spec shapes, paged on `offset`/`limit` with `total_count`, at most `state.org_page_size` per page); `state.workspace_budgets[workspace id]` ([`member_json`], [`guardrail_json`], [`assignment_json`], [`budget_json`]) |
//! | a management key that is not one (`GET /key` answers `is_management_key: false`, `/keys` a 401) | `state.management_key_is_management = false` |
//! | a real network's round trip: every call answered after a delay | `state.latency = Duration::from_millis(250)` |
//! | the account-wide `/activity` (no `api_key_hash`): every key's rows, deleted and never-listed keys included, summed per date, model and endpoint | always on; rows under a hash not in `state.keys` are spend no listed key explains; `state.account_activity_failure = Some(500)` makes that call alone fail |
//! | `/activity`'s today (its 30-day window) other than the wall clock's | `state.today = Some(day)` |
//! | how many requests were in flight at once | `state.max_in_flight` (peak since start or since reset), `state.in_flight` (now); `state.answered`: each request with when it was answered |

mod account;
mod activity;
#[cfg(any(test, feature = "testing"))]
mod faults;
mod http;
mod keys;
mod organization;
mod workspaces;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

pub use account::{
    Deletion, SimKey, SimState, WorkspacesMode, DEFAULT_PAGE_SIZE, KEY_BYOK_FIELDS,
    KEY_DATE_FIELDS, KEY_IDENTITY_FIELDS, KEY_LIMIT_FIELDS,
};
#[cfg(any(test, feature = "testing"))]
pub use faults::{Fault, FaultResponse};
pub use http::{SimBody, WORKSPACES_DEFAULT_LIMIT, WORKSPACES_MAX_LIMIT};
pub use organization::{assignment_json, budget_json, guardrail_json, member_json};

use http::{error_response, json_response, SimRequest};

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

/// One request: counted in flight, held for `latency`, then answered.
async fn handle(
    req: Request<Incoming>,
    state: &Mutex<SimState>,
) -> Result<Response<SimBody>, std::io::Error> {
    let _in_flight = InFlight::enter(state);
    let latency = lock(state).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    respond(SimRequest::read(&req), state).await
}

/// Records the request, then answers it.
#[cfg(not(any(test, feature = "testing")))]
async fn respond(
    request: SimRequest,
    state: &Mutex<SimState>,
) -> Result<Response<SimBody>, std::io::Error> {
    {
        let mut st = lock(state);
        st.record(&request);
        st.delete_on_arrival(&request);
    }
    Ok(answer(&request, &lock(state)))
}

/// Records the request, then answers it as a scripted fault says, or normally.
#[cfg(any(test, feature = "testing"))]
async fn respond(
    mut request: SimRequest,
    state: &Mutex<SimState>,
) -> Result<Response<SimBody>, std::io::Error> {
    // Pick a fault (consuming one use) under the lock that records the request; act on it after.
    let fault = {
        let mut st = lock(state);
        st.record(&request);
        st.delete_on_arrival(&request);
        faults::take(&mut st.faults, &request)
    };
    if let Some(replaced) = fault
        .as_ref()
        .and_then(|f| faults::replacement(f, &request))
    {
        return replaced;
    }
    let mut content_type = None;
    match fault {
        Some(FaultResponse::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultResponse::ContentType(ct)) => content_type = Some(ct),
        Some(FaultResponse::IgnoreOffset) => {
            request.params.remove("offset");
        }
        _ => {}
    }
    let mut response = answer(&request, &lock(state));
    if let Some(ct) = content_type.and_then(|ct| ct.parse().ok()) {
        response.headers_mut().insert("content-type", ct);
    }
    Ok(response)
}

/// The normal, fault-free answer: the route table.
fn answer(request: &SimRequest, st: &SimState) -> Response<SimBody> {
    let auth = request.auth.as_deref();
    // `GET /key` answers for any key: the key that authenticates.
    if request.path == "/key" {
        return keys::current(auth, st);
    }
    if auth != Some(format!("Bearer {}", st.management_key).as_str()) {
        return error_response(401, "No auth credentials found");
    }
    if !st.management_key_is_management {
        return error_response(401, "Only management keys can perform this operation");
    }
    let params = &request.params;
    match request.path.as_str() {
        "/organization/members" => organization::list(&st.members, params, st),
        "/guardrails" => organization::guardrails(params, st),
        "/guardrails/assignments/keys" => {
            organization::list(&st.guardrail_key_assignments, params, st)
        }
        "/workspaces" => workspaces::list(params, st),
        "/keys" => keys::list(params, st),
        "/credits" => json_response(
            200,
            json!({"data": {"total_credits": st.total_credits, "total_usage": st.total_usage}}),
        ),
        "/activity" => activity::list(params, st),
        other => match other.strip_prefix("/workspaces/") {
            Some(rest) => match rest.strip_suffix("/budgets") {
                Some(id) => organization::budgets(id, st),
                None if !rest.contains('/') => workspaces::get(rest, st),
                None => error_response(404, "Not Found"),
            },
            None => error_response(404, "Not Found"),
        },
    }
}
