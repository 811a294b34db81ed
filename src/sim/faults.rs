//! Scripted faults: make any call to the simulator fail, hang or return
//! garbage. Compiled only for tests and tools (`cfg(test)` or the `testing`
//! feature, which every `cargo test` turns on), never into the release binary.
//!
//! | mode | how to turn it on |
//! |---|---|
//! | `/credits` failing forever (500, 403, …) | [`SimState::fail_forever`]`("/credits", 500)` (a [`Fault`] with no `times`) |
//! | a recorded body (any status) served verbatim | [`FaultResponse::Reply`]`{status, body}` |
//! | `Retry-After` in seconds, as an HTTP date, or garbage | [`FaultResponse::Error`]`{retry_after: Some(secs)}` or [`FaultResponse::ErrorRetryAfter`]`{value}` |
//! | a live-shaped 429: no `Retry-After`, the reset in the body (epoch ms) | [`FaultResponse::RateLimitReset`]`(wait)` |
//!
//! [`SimState::fail_forever`]: super::SimState::fail_forever

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Response, StatusCode};

use super::http::{error_response, SimBody, SimRequest};

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
    /// A 429 as live OpenRouter sends it: no `Retry-After` header, the
    /// rate-limit headers copied into `error.metadata.headers` as strings,
    /// `X-RateLimit-Reset` this long from now in epoch milliseconds.
    RateLimitReset(Duration),
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

/// The first fault in `faults` that matches `request`, with one of its uses consumed.
pub(super) fn take(faults: &mut Vec<Fault>, request: &SimRequest) -> Option<FaultResponse> {
    let offset: Option<usize> = request.params.get("offset").and_then(|o| o.parse().ok());
    let workspace = request.params.get("workspace_id").map(String::as_str);
    let i = faults
        .iter()
        .position(|f| f.matches(&request.path, offset, workspace))?;
    let response = faults[i].response.clone();
    if let Some(times) = faults[i].times.as_mut() {
        *times = times.saturating_sub(1);
        if *times == 0 {
            faults.remove(i);
        }
    }
    Some(response)
}

/// What `fault` answers in place of the endpoint (`Err`: drop the connection
/// unanswered); `None` for a fault that only alters the normal answer
/// (`Delay`, `ContentType`, `IgnoreOffset`).
pub(super) fn replacement(
    fault: &FaultResponse,
    request: &SimRequest,
) -> Option<Result<Response<SimBody>, std::io::Error>> {
    let response = match fault {
        FaultResponse::Delay(_) | FaultResponse::ContentType(_) | FaultResponse::IgnoreOffset => {
            return None
        }
        FaultResponse::Error {
            status,
            retry_after,
        } => with_retry_after(*status, retry_after.map(|s| s.to_string()).as_deref()),
        FaultResponse::ErrorRetryAfter { status, value } => with_retry_after(*status, Some(value)),
        FaultResponse::RateLimitReset(wait) => Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("content-type", "application/json")
            .body(SimBody::full(rate_limit_body(*wait))),
        FaultResponse::Reply { status, body } => Response::builder()
            .status(StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(SimBody::full(body.clone())),
        FaultResponse::Raw { content_type, body } => Response::builder()
            .header("content-type", content_type)
            .body(SimBody::full(body.clone())),
        FaultResponse::Stream {
            bytes,
            content_length,
        } => Response::builder()
            .header("content-type", "application/json")
            .body(SimBody::fault(Box::pin(Filler::new(
                *bytes,
                *content_length,
            )))),
        FaultResponse::CutOff { body, declared } => Response::builder()
            .header("content-type", "application/json")
            .header("content-length", *declared)
            .body(SimBody::fault(Box::pin(CutOff::new(body)))),
        FaultResponse::EchoRequest { status } => Response::builder()
            .status(StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY))
            .header("content-type", "text/plain")
            .body(SimBody::full(format!(
                "bad gateway; request was: GET {}\nauthorization: {}\n",
                request.uri,
                request.auth.as_deref().unwrap_or("")
            ))),
        FaultResponse::Disconnect => {
            return Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "simulated disconnect",
            )))
        }
    };
    Some(Ok(response.unwrap_or_default()))
}

/// An OpenRouter error body with `Retry-After: value` when `value` is a valid header.
fn with_retry_after(
    status: u16,
    value: Option<&str>,
) -> Result<Response<SimBody>, hyper::http::Error> {
    let mut response = error_response(status, "simulated failure");
    if let Some(v) = value.and_then(|v| v.parse().ok()) {
        response.headers_mut().insert("retry-after", v);
    }
    Ok(response)
}

/// The body of a live 429 (`error_429.free_models_per_min_2025-12-13.json`)
/// whose counter resets `wait` from now.
fn rate_limit_body(wait: Duration) -> String {
    let reset = std::time::SystemTime::now()
        .checked_add(wait)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis());
    serde_json::json!({
        "error": {
            "message": "Rate limit exceeded: simulated. ",
            "code": 429,
            "metadata": {
                "headers": {
                    "X-RateLimit-Limit": "20",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": reset.to_string(),
                },
                "provider_name": null,
            },
        },
        "user_id": "user_sim",
    })
    .to_string()
}

/// `remaining` bytes of filler, sliced from one chunk: no allocation per byte sent.
struct Filler {
    chunk: Bytes,
    remaining: u64,
    /// Whether the size is announced (`Content-Length`) rather than chunked.
    exact: bool,
}

impl Filler {
    fn new(bytes: u64, exact: bool) -> Filler {
        Filler {
            // 64 KiB of JSON-ish filler, sliced and re-sent.
            chunk: Bytes::from(b"[0,".repeat(64 * 1024 / 3)),
            remaining: bytes,
            exact,
        }
    }
}

impl Body for Filler {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// Sends its data, pauses (so the head and data reach the client), then breaks.
struct CutOff {
    data: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl CutOff {
    fn new(body: &str) -> CutOff {
        CutOff {
            data: Some(Bytes::from(body.to_string())),
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(20))),
        }
    }
}

impl Body for CutOff {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if self.pause.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "simulated cut-off",
        ))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}
