//! A simulated OpenRouter management API on loopback.
//!
//! It serves the same HTTP shapes as the real API (`/workspaces`, paginated
//! `/keys`, `/credits`, bearer auth, OpenRouter error bodies), so the demo and
//! the tests exercise the real client end to end. Faults can be scripted to
//! make any call fail, hang or return garbage.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::upstream::PAGE_SIZE;

/// One key as the simulated server lists it: its workspace and its JSON object,
/// which tests may shape freely (missing fields, odd values).
#[derive(Debug, Clone)]
pub struct SimKey {
    pub workspace: String,
    pub fields: Map<String, Value>,
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
        }
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
    /// A 200 with this body and content type.
    Raw { content_type: String, body: String },
    /// Wait, then answer normally (longer than the client timeout = a timeout).
    Delay(Duration),
}

/// A fault for requests whose path (after `/api/v1`) equals `path` and, when
/// set, whose `offset` query parameter equals `offset`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub path: String,
    pub offset: Option<usize>,
    pub response: FaultResponse,
    /// How many matching requests it answers; `None` = all of them.
    pub times: Option<u32>,
}

impl Fault {
    pub fn new(path: &str, response: FaultResponse) -> Fault {
        Fault {
            path: path.to_string(),
            offset: None,
            response,
            times: None,
        }
    }

    pub fn at_offset(mut self, offset: usize) -> Fault {
        self.offset = Some(offset);
        self
    }

    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }
}

/// The simulated account.
#[derive(Debug, Clone)]
pub struct SimState {
    pub management_key: String,
    /// (id, name); the first is the default workspace.
    pub workspaces: Vec<(String, String)>,
    /// When false, `/workspaces` answers 404 like an older API.
    pub workspaces_api: bool,
    pub keys: Vec<SimKey>,
    pub total_credits: f64,
    pub total_usage: f64,
    pub faults: Vec<Fault>,
    /// Every request's path and query, in order.
    pub requests: Vec<String>,
}

impl SimState {
    pub fn new(management_key: &str) -> SimState {
        SimState {
            management_key: management_key.to_string(),
            workspaces: Vec::new(),
            workspaces_api: true,
            keys: Vec::new(),
            total_credits: 0.0,
            total_usage: 0.0,
            faults: Vec::new(),
            requests: Vec::new(),
        }
    }

    pub fn key_mut(&mut self, hash: &str) -> Option<&mut SimKey> {
        self.keys.iter_mut().find(|k| k.hash() == hash)
    }

    /// Sum of `usage` over all keys: what `/credits` would report with nothing deleted.
    pub fn keys_lifetime_usage(&self) -> f64 {
        self.keys.iter().filter_map(|k| k.num("usage")).sum()
    }
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
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(req, &state).await) }
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

fn json_response(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn error_response(status: u16, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        json!({"error": {"code": status, "message": message}}),
    )
}

async fn handle(req: Request<Incoming>, state: &Mutex<SimState>) -> Response<Full<Bytes>> {
    let path = req
        .uri()
        .path()
        .strip_prefix("/api/v1")
        .unwrap_or(req.uri().path())
        .to_string();
    let params = query_params(req.uri().query());
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    // Pick a fault (consuming one use) while holding the lock, act on it after.
    let fault = {
        let mut st = lock(state);
        st.requests.push(
            req.uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
        );
        let offset: Option<usize> = params.get("offset").and_then(|o| o.parse().ok());
        let hit = st
            .faults
            .iter()
            .position(|f| f.path == path && (f.offset.is_none() || f.offset == offset.or(Some(0))));
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
            return response;
        }
        Some(FaultResponse::Raw { content_type, body }) => {
            return Response::builder()
                .header("content-type", content_type)
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default();
        }
        Some(FaultResponse::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }

    let st = lock(state);
    let expected = format!("Bearer {}", st.management_key);
    if auth.as_deref() != Some(expected.as_str()) {
        return error_response(401, "No auth credentials found");
    }
    match path.as_str() {
        "/workspaces" if st.workspaces_api => {
            let offset: usize = params
                .get("offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            let limit: usize = params
                .get("limit")
                .and_then(|o| o.parse().ok())
                .unwrap_or(PAGE_SIZE)
                .min(PAGE_SIZE);
            let page: Vec<Value> = st
                .workspaces
                .iter()
                .skip(offset)
                .take(limit)
                .map(|(id, name)| json!({"id": id, "name": name, "slug": name.to_lowercase()}))
                .collect();
            json_response(
                200,
                json!({"data": page, "total_count": st.workspaces.len()}),
            )
        }
        "/keys" => {
            let workspace = match params.get("workspace_id") {
                Some(ws) => {
                    if !st.workspaces.iter().any(|(id, _)| id == ws) {
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
            let page: Vec<Value> = st
                .keys
                .iter()
                .filter(|k| k.workspace == workspace)
                .filter(|k| {
                    include_disabled
                        || !k
                            .fields
                            .get("disabled")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                })
                .skip(offset)
                .take(PAGE_SIZE)
                .map(|k| Value::Object(k.fields.clone()))
                .collect();
            json_response(200, json!({ "data": page }))
        }
        "/credits" => json_response(
            200,
            json!({"data": {"total_credits": st.total_credits, "total_usage": st.total_usage}}),
        ),
        _ => error_response(404, "Not Found"),
    }
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
}
