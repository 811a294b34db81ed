//! The `/metrics` body: a snapshot and the exporter's status rendered once per
//! publish into identity text and gzip, held as [`Bytes`] that every scrape
//! shares.
//!
//! One size rule keeps memory flat at 100k keys (~190 MiB of text, ~45 MiB
//! of gzip): above [`PLAIN_LIMIT`] of text only the gzip form is kept, and an
//! identity scrape inflates it chunk by chunk while sending. Prometheus always
//! asks for gzip, so that path is for curl and browsers.
//!
//! The gzip form is kept *open*: a gzip header and the text's deflate blocks
//! up to a sync flush, with the text's CRC-32. Each scrape closes it with a
//! few fresh lines (the exporter's own counters and process families) in a
//! last block and the trailer, so every response is one valid gzip member
//! and the big text is never compressed again.

use std::io::{self, BufWriter, Read, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::{Compression, CrcWriter};

use crate::exposition::MetricWriter;
use crate::snapshot::Snapshot;
use crate::status::Status;

/// Bodies with more text than this keep only their gzip form (64 MiB is about
/// 30k keys with every per-key family).
pub const PLAIN_LIMIT: usize = 64 << 20;
/// The buffer between the renderer and the compressor.
const GZIP_CHUNK: usize = 128 * 1024;

/// The body `/metrics` serves, rendered and compressed once per publish.
#[derive(Debug, Clone)]
pub struct Published {
    /// The exposition text; empty when it was longer than [`PLAIN_LIMIT`]
    /// and only `gzip` was kept ([`Published::identity`] inflates it then).
    pub plain: Bytes,
    /// The same text as an open gzip member: header and deflate blocks up
    /// to a sync flush, without a last block or trailer ([`Published::gzip_with`]).
    pub gzip_open: Bytes,
    /// CRC-32 of the text, for the trailer.
    pub crc: u32,
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
            gzip_open: Bytes::from_static(&GZIP_HEADER),
            crc: 0,
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

    /// The open member and what closes it after `tail`: a last deflate
    /// block of `tail`, then CRC-32 and length of text and tail together.
    pub fn gzip_with(&self, tail: &[u8]) -> [Bytes; 2] {
        let mut last =
            DeflateEncoder::new(Vec::with_capacity(tail.len() / 2 + 32), Compression::new(6));
        // Writing into a Vec cannot fail.
        let _ = last.write_all(tail);
        let mut close = last.finish().unwrap_or_default();
        let mut crc = crc32fast::Hasher::new_with_initial(self.crc);
        crc.update(tail);
        close.extend_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE is the length modulo 2^32 (RFC 1952).
        let size = (self.plain_len as u64 + tail.len() as u64) as u32;
        close.extend_from_slice(&size.to_le_bytes());
        [self.gzip_open.clone(), Bytes::from(close)]
    }

    /// The text, inflated from the open gzip member as it is read: for a
    /// body whose text was not kept ([`Published::has_plain`] is false).
    pub fn inflater(&self) -> impl Read + Send + 'static {
        flate2::read::DeflateDecoder::new(self.gzip_open.slice(GZIP_HEADER.len()..).reader())
    }

    /// The gzip of the text alone, closed (tests, tools).
    pub fn gzip(&self) -> Vec<u8> {
        self.gzip_with(b"").concat()
    }
}

/// A gzip member's header: deflate, no name or comment, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

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
    let mut gzip_buffer =
        Vec::with_capacity(previous.gzip_open.len() + previous.gzip_open.len() / 8);
    gzip_buffer.extend_from_slice(&GZIP_HEADER);
    let tee = Tee {
        plain: (expected <= PLAIN_LIMIT).then(|| Vec::with_capacity(expected)),
        gzip: BufWriter::with_capacity(
            GZIP_CHUNK,
            CrcWriter::new(DeflateEncoder::new(gzip_buffer, Compression::new(level))),
        ),
        len: 0,
    };
    let mut writer = MetricWriter::new(tee);
    write(&mut writer)?;
    let tee = writer.into_inner();
    let crc_writer = tee.gzip.into_inner().map_err(|e| e.into_error())?;
    let crc = crc_writer.crc().sum();
    let mut deflate = crc_writer.into_inner();
    // A sync flush ends the blocks on a byte boundary, so a last block can
    // follow at every scrape. The encoder is dropped unfinished.
    deflate.flush()?;
    let gzip_open = std::mem::take(deflate.get_mut());
    Ok(Published {
        plain: tee.plain.map(Bytes::from).unwrap_or_default(),
        gzip_open: Bytes::from(gzip_open),
        crc,
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
    gzip: BufWriter<CrcWriter<DeflateEncoder<Vec<u8>>>>,
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

/// `bytes` gunzipped (the unit tests of the body and of its responses).
#[cfg(test)]
pub(crate) fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(gunzip(&body.gzip()), body.plain.to_vec());
        assert_eq!(gunzip(&Published::default().gzip()), b"");
    }

    #[test]
    fn text_expected_past_the_limit_is_never_collected() {
        let body = render(&Published::default(), PLAIN_LIMIT + 1, |w| w.raw(b"m 1\n")).unwrap();
        assert!(!body.has_plain());
        assert_eq!(body.plain_len, 4);
        assert_eq!(gunzip(&body.gzip()), b"m 1\n");
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
            assert_eq!(gunzip(&body.gzip()), text);
        }
    }

    #[test]
    fn each_tail_closes_the_open_member_into_one_gzip_member() {
        let body = render(&Published::default(), 0, |w| w.raw(b"m 1\n")).unwrap();
        for tail in [&b""[..], b"fresh 1\n", &b"counter 12345\n".repeat(500)] {
            let mut expected = b"m 1\n".to_vec();
            expected.extend_from_slice(tail);
            // One member: a decoder that stops after the first member sees it all.
            assert_eq!(gunzip(&body.gzip_with(tail).concat()), expected);
        }
        assert_eq!(
            gunzip(&Published::default().gzip_with(b"x\n").concat()),
            b"x\n"
        );
    }

    #[test]
    fn the_open_member_inflates_to_the_text() {
        let text = b"openrouter_up 1\n".repeat(10_000);
        let body = render(&Published::default(), PLAIN_LIMIT + 1, |w| w.raw(&text)).unwrap();
        assert!(!body.has_plain());
        let mut inflated = vec![0; body.plain_len];
        body.inflater().read_exact(&mut inflated).unwrap();
        assert_eq!(inflated, text);
    }
}
