//! The `/metrics` body: a snapshot and the exporter's status rendered once per
//! publish into identity text and gzip, held as [`Bytes`] that every scrape
//! shares.
//!
//! One size rule keeps memory flat at 100k keys (~190 MiB of text, ~45 MiB
//! of gzip): above [`PLAIN_LIMIT`] of text only the gzip form is kept, and an
//! identity scrape inflates it chunk by chunk while sending. Prometheus always
//! asks for gzip, so that path is for curl and browsers.

use std::io::{self, BufWriter, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::exposition::MetricWriter;
use crate::snapshot::Snapshot;
use crate::status::Status;

/// Bodies with more text than this keep only their gzip form (64 MiB is about
/// 30k keys with every per-key family).
pub const PLAIN_LIMIT: usize = 64 << 20;
/// Identity bodies that were not kept are inflated in chunks of this size.
const INFLATE_CHUNK: usize = 128 * 1024;

/// The HTTP body type of every response the server sends.
pub type ResponseBody = BoxBody<Bytes, io::Error>;

/// A complete response body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The body `/metrics` serves, rendered and compressed once per publish.
#[derive(Debug, Clone)]
pub struct Published {
    /// The exposition text; empty when it was longer than [`PLAIN_LIMIT`]
    /// and only `gzip` was kept ([`Published::identity`] inflates it then).
    pub plain: Bytes,
    /// The same text, gzip-compressed.
    pub gzip: Bytes,
    /// Length of the exposition text, kept or not.
    pub plain_len: usize,
    /// The snapshot and status this body shows, for pages that present the
    /// same figures (`/`, `/companies.csv`) without calling OpenRouter.
    pub snapshot: Option<Arc<Snapshot>>,
    pub status: Option<Status>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            plain: Bytes::new(),
            gzip: Bytes::from(gzip_all(b"")),
            plain_len: 0,
            snapshot: None,
            status: None,
        }
    }
}

impl Published {
    /// Whether `plain` holds the text.
    pub fn has_plain(&self) -> bool {
        self.plain.len() == self.plain_len
    }

    /// The identity-encoded body: the kept text, or `gzip` inflated while sent.
    pub fn identity(&self) -> ResponseBody {
        if self.has_plain() {
            return full(self.plain.clone());
        }
        Inflate {
            decoder: flate2::read::GzDecoder::new(self.gzip.clone().reader()),
            remaining: self.plain_len as u64,
        }
        .boxed()
    }

    /// The gzip-encoded body.
    pub fn gzip_body(&self) -> ResponseBody {
        full(self.gzip.clone())
    }
}

/// gzip level for a body whose previous text was `previous_len` bytes: level 6
/// for small bodies (every scrape copies them), 2 above 8 MiB. Level 1 for
/// huge bodies saves ~0.3 s of CPU per refresh at 100k keys, for a body half
/// as large again (48 instead of 32 MiB with activity, held twice while a new
/// body replaces the old one), which the 200 MiB peak cannot afford (BENCHMARKS.md).
fn gzip_level(previous_len: usize) -> u32 {
    if previous_len <= 0x80_0000 {
        6
    } else {
        2
    }
}

/// Renders one body: `write` writes the exposition, which is compressed as
/// it is written and kept as text up to [`PLAIN_LIMIT`]. The expected text
/// length (`text_estimate`, or that of `previous`, the body it replaces)
/// sizes the buffers and picks the gzip level; text expected past the limit
/// is not collected at all, so it never exists whole in memory.
pub fn render(
    previous: &Published,
    text_estimate: usize,
    write: impl FnOnce(&mut MetricWriter<Tee>) -> io::Result<()>,
) -> io::Result<Published> {
    let expected = text_estimate.max(previous.plain_len);
    let level = gzip_level(expected);
    let gzip_buffer = Vec::with_capacity(previous.gzip.len() + previous.gzip.len() / 8);
    let tee = Tee {
        plain: (expected <= PLAIN_LIMIT).then(|| Vec::with_capacity(expected)),
        gzip: BufWriter::with_capacity(
            INFLATE_CHUNK,
            GzEncoder::new(gzip_buffer, Compression::new(level)),
        ),
        len: 0,
    };
    let mut writer = MetricWriter::new(tee);
    write(&mut writer)?;
    let tee = writer.into_inner();
    let gzip = tee
        .gzip
        .into_inner()
        .map_err(|e| e.into_error())?
        .finish()?;
    Ok(Published {
        plain: tee.plain.map(Bytes::from).unwrap_or_default(),
        gzip: Bytes::from(gzip),
        plain_len: tee.len,
        snapshot: None,
        status: None,
    })
}

/// gzip of `text` at the level a refresh of that size uses (benchmarks, tests).
pub fn gzip_all(text: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(gzip_level(text.len())));
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text);
    encoder.finish().unwrap_or_default()
}

/// Where a render writes: the text (until it passes [`PLAIN_LIMIT`]) and its gzip.
pub struct Tee {
    plain: Option<Vec<u8>>,
    gzip: BufWriter<GzEncoder<Vec<u8>>>,
    len: usize,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.len += buf.len();
        if self.len > PLAIN_LIMIT {
            self.plain = None;
        }
        if let Some(plain) = &mut self.plain {
            plain.extend_from_slice(buf);
        }
        self.gzip.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.gzip.flush()
    }
}

/// A kept gzip body inflated chunk by chunk as the client reads (bounded
/// memory per connection). Its length is known, so responses carry `Content-Length`.
struct Inflate {
    decoder: flate2::read::GzDecoder<bytes::buf::Reader<Bytes>>,
    remaining: u64,
}

impl Body for Inflate {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
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
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    async fn collect(body: ResponseBody) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[test]
    fn a_render_holds_the_same_text_twice() {
        let body = render(&Published::default(), 0, |w| {
            w.family("m", "gauge", "help")?;
            w.sample_f64("m", &[("a", "b")], 1.5)
        })
        .unwrap();
        assert_eq!(
            &body.plain[..],
            b"# HELP m help\n# TYPE m gauge\nm{a=\"b\"} 1.5\n"
        );
        assert!(body.has_plain());
        assert_eq!(gunzip(&body.gzip), body.plain.to_vec());
        assert_eq!(gunzip(&Published::default().gzip), b"");
    }

    #[tokio::test]
    async fn text_past_the_limit_is_kept_as_gzip_and_inflated_for_identity() {
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
        let identity = collect(body.identity()).await;
        assert_eq!(identity.len(), body.plain_len);
        assert!(identity.chunks(line.len()).all(|c| c == line.as_bytes()));
        assert_eq!(gunzip(&collect(body.gzip_body()).await), identity);
    }

    #[test]
    fn text_expected_past_the_limit_is_never_collected() {
        let body = render(&Published::default(), PLAIN_LIMIT + 1, |w| w.raw(b"m 1\n")).unwrap();
        assert!(!body.has_plain());
        assert_eq!(body.plain_len, 4);
        assert_eq!(gunzip(&body.gzip), b"m 1\n");
    }

    #[test]
    fn every_level_round_trips() {
        let text = b"openrouter_up 1\n".repeat(1000);
        for previous in [0, 1 << 20, 64 << 20, 200 << 20] {
            let prev = Published {
                plain_len: previous,
                ..Published::default()
            };
            let body = render(&prev, 0, |w| w.raw(&text)).unwrap();
            assert_eq!(gunzip(&body.gzip), text);
        }
    }
}
