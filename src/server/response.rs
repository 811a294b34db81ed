//! The hyper body types of every response: whole bytes, a few ready chunks,
//! and a kept gzip body inflated while it is sent. `/metrics` joins the
//! published text with the lines rendered for this scrape here.

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::Published;

/// The HTTP body type of every response the server sends.
pub type ResponseBody = BoxBody<Bytes, io::Error>;

/// Identity bodies that were not kept are inflated in chunks of this size.
const INFLATE_CHUNK: usize = 128 * 1024;

/// A complete response body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The published text followed by `tail`, identity-encoded: the kept text,
/// or the open gzip member inflated while sent.
pub fn identity(published: &Published, tail: Bytes) -> ResponseBody {
    if published.has_plain() {
        return Chunks(vec![tail, published.plain.clone()]).boxed();
    }
    Inflate {
        decoder: published.inflater(),
        remaining: published.plain_len as u64,
        tail: Some(tail),
    }
    .boxed()
}

/// The published text followed by `tail`, as one gzip member.
pub fn gzip(published: &Published, tail: &[u8]) -> ResponseBody {
    let [open, close] = published.gzip_with(tail);
    Chunks(vec![close, open]).boxed()
}

/// A kept gzip body inflated chunk by chunk as the client reads (bounded
/// memory per connection). Its length is known, so responses carry `Content-Length`.
struct Inflate<R> {
    decoder: R,
    remaining: u64,
    /// Sent once the text is.
    tail: Option<Bytes>,
}

impl<R: Read + Unpin> Body for Inflate<R> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            let tail = self.tail.take().filter(|t| !t.is_empty());
            return Poll::Ready(tail.map(|t| Ok(Frame::data(t))));
        }
        let want = self.remaining.min(INFLATE_CHUNK as u64) as usize;
        let mut chunk = vec![0; want];
        if let Err(e) = self.decoder.read_exact(&mut chunk) {
            self.remaining = 0;
            return Poll::Ready(Some(Err(e)));
        }
        self.remaining -= want as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && !matches!(&self.tail, Some(t) if !t.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining + self.tail.as_ref().map_or(0, |t| t.len() as u64))
    }
}

/// A body of a few ready chunks, sent last to first (a stack).
struct Chunks(Vec<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        while let Some(chunk) = self.0.pop() {
            if !chunk.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|c| c.len() as u64).sum())
    }
}

// The page responses every route shares: plain text, HTML and CSV with
// the pages' headers.

pub fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What the pages send besides their body and the headers of every answer
/// (no caching, no sniffing: see [`handle`]): a policy that runs no script
/// and loads nothing, so even a string that escaped escaping could not act.
/// Forms may only submit to this server (the date range on `/`, a GET).
pub(super) fn page_headers(response: &mut Response<ResponseBody>, content_type: &'static str) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
}

pub fn html(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    page_headers(&mut response, "text/html; charset=utf-8");
    response
}

/// A CSV download named `filename`, with the pages' headers.
pub fn csv(body: String, filename: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    page_headers(&mut response, "text/csv; charset=utf-8; header=present");
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{gunzip, render, PLAIN_LIMIT};

    async fn collect(body: ResponseBody) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn text_past_the_limit_is_inflated_for_identity_then_the_tail_follows() {
        let line = "x".repeat(1000) + "\n";
        let lines = PLAIN_LIMIT / line.len() + 10;
        let body = render(&Published::default(), 0, |w| {
            for _ in 0..lines {
                w.raw(line.as_bytes())?;
            }
            Ok(())
        })
        .unwrap();
        assert!(!body.has_plain());
        assert!(body.plain.is_empty());
        assert_eq!(body.plain_len, lines * line.len());
        let text = collect(identity(&body, Bytes::new())).await;
        assert_eq!(text.len(), body.plain_len);
        assert!(text.chunks(line.len()).all(|c| c == line.as_bytes()));
        assert_eq!(gunzip(&collect(gzip(&body, b"")).await), text);
        let tail = Bytes::from_static(b"fresh 1\n");
        let with_tail = collect(identity(&body, tail.clone())).await;
        assert_eq!(&with_tail[..body.plain_len], &text[..]);
        assert_eq!(&with_tail[body.plain_len..], &tail[..]);
    }

    #[tokio::test]
    async fn each_scrape_sends_the_text_and_its_own_tail() {
        let body = render(&Published::default(), 0, |w| w.raw(b"m 1\n")).unwrap();
        for tail in [&b""[..], b"fresh 1\n", &b"counter 12345\n".repeat(500)] {
            let mut expected = b"m 1\n".to_vec();
            expected.extend_from_slice(tail);
            assert_eq!(gunzip(&collect(gzip(&body, tail)).await), expected);
            let plain = collect(identity(&body, Bytes::copy_from_slice(tail))).await;
            assert_eq!(plain, expected);
        }
    }
}
