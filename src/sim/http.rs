//! The simulator's HTTP plumbing: the request as the endpoints read it, the
//! response body type, OpenRouter's JSON and error bodies, and the
//! `offset`/`limit` paging of the counted lists.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

/// `/workspaces` `limit` (and the other counted lists'): its documented maximum and its default.
pub const WORKSPACES_MAX_LIMIT: usize = 100;
pub const WORKSPACES_DEFAULT_LIMIT: usize = 50;

/// What the endpoints read from one request.
pub(super) struct SimRequest {
    /// The path after `/api/v1`.
    pub path: String,
    /// The query parameters, percent-decoded.
    pub params: HashMap<String, String>,
    /// The `Authorization` header.
    pub auth: Option<String>,
    /// The path and query as sent: what [`SimState::requests`](super::SimState::requests) records.
    pub path_and_query: String,
    /// The whole request target (a broken proxy's echo repeats it).
    #[cfg(any(test, feature = "testing"))]
    pub uri: hyper::Uri,
}

impl SimRequest {
    pub fn read(req: &Request<Incoming>) -> SimRequest {
        let uri = req.uri();
        SimRequest {
            path: uri
                .path()
                .strip_prefix("/api/v1")
                .unwrap_or(uri.path())
                .to_string(),
            params: query_params(uri.query()),
            auth: req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            path_and_query: uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            #[cfg(any(test, feature = "testing"))]
            uri: uri.clone(),
        }
    }
}

/// The simulated server's response body: a buffer, or (scripted faults only)
/// a stream of filler or a body that breaks off.
pub struct SimBody {
    kind: BodyKind,
}

/// A body a scripted fault sends: any body of bytes that may fail.
#[cfg(any(test, feature = "testing"))]
pub(super) type FaultBody = Pin<Box<dyn Body<Data = Bytes, Error = std::io::Error> + Send>>;

enum BodyKind {
    Full(Option<Bytes>),
    #[cfg(any(test, feature = "testing"))]
    Fault(FaultBody),
}

impl SimBody {
    pub(super) fn full(bytes: impl Into<Bytes>) -> SimBody {
        SimBody {
            kind: BodyKind::Full(Some(bytes.into())),
        }
    }

    #[cfg(any(test, feature = "testing"))]
    pub(super) fn fault(body: FaultBody) -> SimBody {
        SimBody {
            kind: BodyKind::Fault(body),
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
        #[cfg_attr(not(any(test, feature = "testing")), allow(unused_variables))] cx: &mut Context<
            '_,
        >,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut self.kind {
            BodyKind::Full(data) => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
            #[cfg(any(test, feature = "testing"))]
            BodyKind::Fault(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(data) => !matches!(data, Some(d) if !d.is_empty()),
            #[cfg(any(test, feature = "testing"))]
            BodyKind::Fault(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            #[cfg(any(test, feature = "testing"))]
            BodyKind::Fault(body) => body.size_hint(),
        }
    }
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

pub(super) fn percent_decode(value: &str) -> String {
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

pub(super) fn json_response(status: u16, body: Value) -> Response<SimBody> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(SimBody::full(body.to_string()))
        .unwrap_or_default()
}

/// An OpenRouter error body.
pub(super) fn error_response(status: u16, message: &str) -> Response<SimBody> {
    json_response(
        status,
        json!({"error": {"code": status, "message": message}}),
    )
}

/// `offset` and `limit` of a list endpoint with `total_count` (workspaces,
/// members, guardrails): limit defaults to 50 and must be 1–100, as
/// documented; `None` for a limit out of range.
pub(super) fn offset_and_limit(params: &HashMap<String, String>) -> Option<(usize, usize)> {
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
