//! The exporter's state machine: refresh from OpenRouter, build a snapshot,
//! render it once, publish it atomically; reload the config safely.
//!
//! Data flows one way: config + upstream data → [`Snapshot`] → rendered body
//! ([`Published`]) → HTTP. A scrape only clones an `Arc` to the last body.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::SecretString;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::activity::{self, ActivityCache};
use crate::config::{Config, ConfigError, SecretError};
use crate::exposition::{write_snapshot, write_status, ActivityStatus, MetricWriter, Status};
use crate::snapshot::{DirectKey, Extras, Snapshot};
use crate::telemetry::Telemetry;
use crate::upstream::{Client, Endpoint, RetryPolicy, UpstreamData, UpstreamError};

/// gzip level. zlib-rs level 2 compresses the exposition text ~6.4x at
/// ~300 MB/s; level 1 (deflate_quick) is faster but only ~4.3x (BENCHMARKS.md).
const GZIP_LEVEL: u32 = 2;
/// Small bodies (up to [`SMALL_BODY`] of text, ~4k keys) use level 6: ~7%
/// fewer bytes for a few ms per refresh, and every scrape copies those bytes.
const GZIP_LEVEL_SMALL: u32 = 6;
const SMALL_BODY: usize = 8 << 20;
/// Huge bodies (over [`LARGE_BODY`] of text, ~65k keys with every family) use
/// level 1: at 100k keys it takes 0.4 s instead of 0.63 s per refresh, which
/// keeps a refresh under 1 s of CPU, for a body ~1.5x larger (47 MB, not 31 MB)
/// that a scraper fetches a few times a minute.
const GZIP_LEVEL_LARGE: u32 = 1;
const LARGE_BODY: usize = 128 << 20;

/// The gzip level for a body whose previous text was `previous_len` bytes (0 = none yet).
fn gzip_level(previous_len: usize) -> u32 {
    match previous_len {
        1..=SMALL_BODY => GZIP_LEVEL_SMALL,
        len if len > LARGE_BODY => GZIP_LEVEL_LARGE,
        _ => GZIP_LEVEL,
    }
}
/// The text is compressed (and checksummed) in pieces of about this size while
/// it is rendered, so a body never has to exist twice.
const RENDER_CHUNK: usize = 128 * 1024;
/// Identity bodies that were not kept are inflated and sent in chunks of this size.
const INFLATE_CHUNK: usize = 128 * 1024;
/// A good value for [`Exporter::set_plain_body_limit`]: 64 MiB of text is
/// about 30k keys with every per-key family; larger bodies keep only gzip.
pub const PLAIN_BODY_LIMIT: usize = 64 << 20;
/// gzip member header: deflate, no name or comment, no mtime, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];

/// The body `/metrics` serves, rendered and compressed once per refresh attempt.
#[derive(Debug, Clone)]
pub struct Published {
    /// The exposition text. Empty when it was longer than the plain-body limit
    /// ([`Exporter::set_plain_body_limit`]) and only gzip was kept: serve
    /// [`Published::identity`] then, which inflates `gzip` while sending.
    pub plain: Bytes,
    /// The same text as a single gzip member (snapshot and status parts are
    /// compressed separately and joined at a sync-flush boundary).
    pub gzip: Bytes,
    /// Length of the exposition text, kept or not.
    pub plain_len: usize,
}

impl Default for Published {
    fn default() -> Self {
        let mut gzip = GZIP_HEADER.to_vec();
        gzip.extend_from_slice(&[0x03, 0x00]); // an empty final block
        gzip.extend_from_slice(&[0; 8]); // crc32 and length of nothing
        Published {
            plain: Bytes::new(),
            gzip: Bytes::from(gzip),
            plain_len: 0,
        }
    }
}

impl Published {
    /// Whether `plain` holds the text (else [`Published::identity`] inflates it).
    pub fn has_plain(&self) -> bool {
        self.plain.len() == self.plain_len
    }

    /// The identity-encoded body: the kept text, or `gzip` inflated chunk by
    /// chunk as the client reads (bounded memory per connection).
    pub fn identity(&self) -> MetricsBody {
        if self.has_plain() {
            return MetricsBody::from(self.plain.clone());
        }
        let deflate = self.gzip.slice(GZIP_HEADER.len()..self.gzip.len() - 8);
        MetricsBody {
            kind: BodyKind::Inflate {
                deflate,
                decoder: Box::new(flate2::Decompress::new(false)),
                remaining: self.plain_len as u64,
            },
        }
    }

    /// The gzip-encoded body.
    pub fn gzip_body(&self) -> MetricsBody {
        MetricsBody::from(self.gzip.clone())
    }
}

/// A `/metrics` response body: bytes, or a kept gzip body inflated on the fly.
/// Its size is always known, so responses carry `Content-Length`.
pub struct MetricsBody {
    kind: BodyKind,
}

enum BodyKind {
    Full(Option<Bytes>),
    Inflate {
        deflate: Bytes,
        decoder: Box<flate2::Decompress>,
        remaining: u64,
    },
}

impl From<Bytes> for MetricsBody {
    fn from(bytes: Bytes) -> Self {
        MetricsBody {
            kind: BodyKind::Full(Some(bytes)),
        }
    }
}

impl From<&'static str> for MetricsBody {
    fn from(text: &'static str) -> Self {
        MetricsBody::from(Bytes::from_static(text.as_bytes()))
    }
}

impl From<String> for MetricsBody {
    fn from(text: String) -> Self {
        MetricsBody::from(Bytes::from(text))
    }
}

impl std::fmt::Debug for MetricsBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            BodyKind::Full(b) => {
                write!(f, "MetricsBody({} bytes)", b.as_ref().map_or(0, Bytes::len))
            }
            BodyKind::Inflate { remaining, .. } => {
                write!(f, "MetricsBody(inflating, {remaining} bytes left)")
            }
        }
    }
}

impl hyper::body::Body for MetricsBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        match &mut self.kind {
            BodyKind::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(hyper::body::Frame::data(b))),
            ),
            BodyKind::Inflate {
                deflate,
                decoder,
                remaining,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = (*remaining).min(INFLATE_CHUNK as u64) as usize;
                let mut out = Vec::with_capacity(want);
                while out.len() < want {
                    let consumed = decoder.total_in() as usize;
                    let input = deflate.get(consumed..).unwrap_or_default();
                    let before = out.len();
                    let status = decoder
                        .decompress_vec(input, &mut out, flate2::FlushDecompress::None)
                        .map_err(std::io::Error::other)?;
                    let progressed = out.len() > before || decoder.total_in() as usize > consumed;
                    if status == flate2::Status::StreamEnd || !progressed {
                        break;
                    }
                }
                if out.is_empty() {
                    *remaining = 0;
                    return Poll::Ready(Some(Err(std::io::Error::other(
                        "the kept gzip body ended early",
                    ))));
                }
                out.truncate(want);
                *remaining -= out.len() as u64;
                Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(out)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.as_ref().map_or(true, Bytes::is_empty),
            BodyKind::Inflate { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let len = match &self.kind {
            BodyKind::Full(bytes) => bytes.as_ref().map_or(0, |b| b.len() as u64),
            BodyKind::Inflate { remaining, .. } => *remaining,
        };
        hyper::body::SizeHint::with_exact(len)
    }
}

/// The snapshot piece of the body. Fresh from a render it owns its buffers;
/// once published it is kept as slices of the published buffers, so the
/// snapshot text exists once, and survives failed refreshes byte for byte.
#[derive(Debug, Default)]
enum Rendered {
    /// Nothing rendered yet.
    #[default]
    Empty,
    Fresh(Piece),
    Published {
        /// The text, when kept.
        plain: Option<Bytes>,
        /// Raw deflate blocks of the text, ending on a sync-flush boundary.
        deflate: Bytes,
        crc: u32,
        len: usize,
    },
}

/// A rendered, compressed piece of the body.
#[derive(Debug)]
struct Piece {
    /// The text, unless it outgrew the plain-body limit.
    plain: Option<Vec<u8>>,
    /// For a snapshot: the gzip header, then raw deflate blocks ending on a
    /// sync-flush boundary. For the status: raw deflate blocks, final.
    deflate: Vec<u8>,
    crc: crc32fast::Hasher,
    len: usize,
}

/// What a render needs to know besides the data.
#[derive(Debug, Clone, Copy)]
struct RenderHint {
    /// Keep the text only up to this length.
    plain_limit: usize,
    /// Sizes of the previous body, to allocate once.
    plain_len: usize,
    gzip_len: usize,
}

/// Renders into a plain buffer and a deflate stream in one pass: the text is
/// checksummed and compressed every [`RENDER_CHUNK`] bytes, and dropped as it
/// goes once it outgrows the plain-body limit.
struct BodyWriter {
    /// The text so far (when kept), or only its not yet compressed tail.
    text: Vec<u8>,
    /// Start of the not yet compressed part of `text`.
    pending: usize,
    keep_plain: bool,
    plain_limit: usize,
    len: usize,
    crc: crc32fast::Hasher,
    compress: flate2::Compress,
    deflate: Vec<u8>,
}

impl BodyWriter {
    fn new(hint: RenderHint, with_header: bool) -> BodyWriter {
        // A body that outgrew the limit last time will again: do not collect
        // its text only to drop it (at 100k keys that was 64 MB for nothing).
        let keep_plain = hint.plain_limit > 0 && hint.plain_len <= hint.plain_limit;
        let text_capacity = if keep_plain && hint.plain_len <= hint.plain_limit {
            hint.plain_len + hint.plain_len / 8 + RENDER_CHUNK
        } else {
            2 * RENDER_CHUNK
        };
        let mut deflate = Vec::with_capacity(hint.gzip_len + hint.gzip_len / 8 + RENDER_CHUNK);
        if with_header {
            deflate.extend_from_slice(&GZIP_HEADER);
        }
        // Sized by the previous body; 0 = unknown (the first render).
        let level = gzip_level(hint.plain_len);
        BodyWriter {
            text: Vec::with_capacity(text_capacity),
            pending: 0,
            keep_plain,
            plain_limit: hint.plain_limit,
            len: 0,
            crc: crc32fast::Hasher::new(),
            compress: flate2::Compress::new(flate2::Compression::new(level), false),
            deflate,
        }
    }

    /// Compresses the pending text. `Sync` ends on a byte boundary so another
    /// deflate stream can follow; `Finish` writes the final block.
    fn compress_pending(&mut self, flush: flate2::FlushCompress) -> std::io::Result<()> {
        let input = &self.text[self.pending..];
        self.crc.update(input);
        self.len += input.len();
        let mut consumed = 0;
        loop {
            if self.deflate.capacity() - self.deflate.len() < 4096 {
                self.deflate.reserve(RENDER_CHUNK);
            }
            let before = self.compress.total_in();
            let status = self
                .compress
                .compress_vec(&input[consumed..], &mut self.deflate, flush)
                .map_err(std::io::Error::other)?;
            consumed += (self.compress.total_in() - before) as usize;
            let spare = self.deflate.capacity() - self.deflate.len();
            let done = match flush {
                flate2::FlushCompress::None => consumed == input.len(),
                flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
                // A flush is complete when it did not fill the output.
                _ => consumed == input.len() && spare > 0,
            };
            if done {
                break;
            }
        }
        if self.keep_plain && self.text.len() > self.plain_limit {
            self.keep_plain = false;
            self.text = Vec::with_capacity(2 * RENDER_CHUNK);
        } else if !self.keep_plain {
            self.text.clear();
        }
        self.pending = self.text.len();
        Ok(())
    }

    fn finish(mut self, flush: flate2::FlushCompress) -> std::io::Result<Piece> {
        self.compress_pending(flush)?;
        Ok(Piece {
            plain: self.keep_plain.then_some(self.text),
            deflate: self.deflate,
            crc: self.crc,
            len: self.len,
        })
    }
}

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        if self.text.len() - self.pending >= RENDER_CHUNK {
            self.compress_pending(flate2::FlushCompress::None)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders one piece: the snapshot (gzip header first, sync-flushed so the
/// status piece can follow) or the status (final).
fn render(
    hint: RenderHint,
    snapshot: bool,
    f: impl FnOnce(&mut MetricWriter<&mut BodyWriter>) -> std::io::Result<()>,
) -> std::io::Result<Piece> {
    let mut writer = BodyWriter::new(hint, snapshot);
    f(&mut MetricWriter::new(&mut writer))?;
    writer.finish(if snapshot {
        flate2::FlushCompress::Sync
    } else {
        flate2::FlushCompress::Finish
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("direct key {0:?}: {1}")]
    DirectKey(String, SecretError),
    #[error("cannot build the OpenRouter client: {0}")]
    Client(#[from] UpstreamError),
}

/// Where the management key comes from: the config's source, or a fixed key (demo).
#[derive(Clone)]
enum KeyProvider {
    FromConfig,
    Fixed(SecretString),
}

struct State {
    config: Arc<Config>,
    client: Client,
    /// One client per direct key, authenticating with that key's own secret.
    direct_clients: Arc<Vec<DirectClient>>,
    last_data: Option<Arc<UpstreamData>>,
    /// When `last_data` was fetched: the snapshot's clock for calendar windows.
    taken_at: Option<DateTime<Utc>>,
    direct: Arc<Vec<DirectKey>>,
    activity: Option<Arc<ActivityCache>>,
    snapshot: Rendered,
    status: Status,
    last_success: Option<Instant>,
}

#[derive(Clone)]
struct DirectClient {
    company: usize,
    name: String,
    client: Client,
}

struct Shared {
    state: Mutex<State>,
    published: RwLock<Arc<Published>>,
    telemetry: Arc<Telemetry>,
    keys: KeyProvider,
    config_path: Option<PathBuf>,
    retry: RetryPolicy,
    /// Serialises refreshes and reloads so they never publish out of order.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Wakes the refresh loop when the interval may have changed.
    config_changed: watch::Sender<Duration>,
    /// Bodies with more text than this keep only gzip (see [`Exporter::set_plain_body_limit`]).
    plain_limit: AtomicUsize,
}

/// A cheap handle to the running exporter.
#[derive(Clone)]
pub struct Exporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Exporter {
    /// An exporter whose management key comes from the config's source
    /// (`management_key_env` or `management_key_file`). `config_path` is re-read on reload.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Exporter, ReloadError> {
        allocator::tune();
        Exporter::build(
            config,
            config_path,
            KeyProvider::FromConfig,
            RetryPolicy::default(),
        )
    }

    /// An exporter with a fixed management key (the demo, tests).
    pub fn with_key(
        config: Config,
        key: SecretString,
        retry: RetryPolicy,
    ) -> Result<Exporter, ReloadError> {
        Exporter::build(config, None, KeyProvider::Fixed(key), retry)
    }

    fn build(
        config: Config,
        config_path: Option<PathBuf>,
        keys: KeyProvider,
        retry: RetryPolicy,
    ) -> Result<Exporter, ReloadError> {
        let telemetry = Arc::new(Telemetry::new());
        let client = make_client(&config, &keys, retry, &telemetry)?;
        let direct_clients = Arc::new(make_direct_clients(&config, &client)?);
        let status = Status {
            up: false,
            last_success: None,
            last_duration_seconds: None,
            refresh_interval_seconds: config.refresh_interval.as_secs_f64(),
            reload_successful: true,
            activity: config.activity.enabled.then(ActivityStatus::default),
        };
        let (config_changed, _) = watch::channel(config.refresh_interval);
        let exporter = Exporter {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    config: Arc::new(config),
                    client,
                    direct_clients,
                    last_data: None,
                    taken_at: None,
                    direct: Arc::new(Vec::new()),
                    activity: None,
                    snapshot: Rendered::default(),
                    status,
                    last_success: None,
                }),
                published: RwLock::new(Arc::new(Published::default())),
                telemetry,
                keys,
                config_path,
                retry,
                refresh_lock: tokio::sync::Mutex::new(()),
                config_changed,
                plain_limit: AtomicUsize::new(usize::MAX),
            }),
        };
        exporter.publish();
        Ok(exporter)
    }

    /// Bodies whose text is longer than `limit` bytes keep only their gzip
    /// form, and identity scrapes are inflated while sent
    /// ([`Published::identity`]); `None` (the default) always keeps the text.
    /// At 100k keys the text is ~200 MB and its gzip ~30 MB. Applies from the
    /// next render; only a server that serves [`Published::identity`] may set it.
    pub fn set_plain_body_limit(&self, limit: Option<usize>) {
        self.shared
            .plain_limit
            .store(limit.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// How to size the next snapshot render.
    fn render_hint(&self) -> RenderHint {
        let plain_limit = self.shared.plain_limit.load(Ordering::Relaxed);
        let published = self.published();
        RenderHint {
            plain_limit,
            plain_len: published.plain_len,
            gzip_len: published.gzip.len(),
        }
    }

    /// The body to serve. Never blocks on a refresh.
    pub fn published(&self) -> Arc<Published> {
        self.shared
            .published
            .read()
            .map(|p| Arc::clone(&p))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&lock(&self.shared.state).config)
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.shared.telemetry
    }

    /// Ready once a refresh succeeded and while that data is not older than
    /// `stale_after_intervals` refresh intervals.
    pub fn is_ready(&self) -> bool {
        let state = lock(&self.shared.state);
        let max_age = state
            .config
            .refresh_interval
            .saturating_mul(state.config.stale_after_intervals);
        state.last_success.is_some_and(|t| t.elapsed() <= max_age)
    }

    /// One refresh attempt. On success the new snapshot is published; on
    /// failure the previous snapshot stays exactly as it was and `openrouter_up` drops to 0.
    pub async fn refresh(&self) -> Result<(), UpstreamError> {
        let _serial = self.shared.refresh_lock.lock().await;
        let (client, config, direct_clients, previous_direct, activity) = {
            let state = lock(&self.shared.state);
            (
                state.client.clone(),
                Arc::clone(&state.config),
                Arc::clone(&state.direct_clients),
                Arc::clone(&state.direct),
                state.activity.clone(),
            )
        };
        let started = Instant::now();
        // The whole refresh must end before the next one is due.
        let deadline = config
            .refresh_interval
            .mul_f64(0.9)
            .max(Duration::from_millis(500));
        let work = async {
            let data = match config.openrouter.management_key {
                Some(_) => client.fetch_all(&config.openrouter.workspaces).await?,
                None => UpstreamData::default(),
            };
            let direct = poll_direct(&direct_clients, &previous_direct).await;
            Ok::<_, UpstreamError>((data, direct))
        };
        let fetched = match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Deadline(deadline)),
        };
        let outcome = match fetched {
            Ok((data, direct)) => {
                let data = Arc::new(data);
                let extras = Extras {
                    direct: Arc::new(direct),
                    activity,
                };
                let now = Utc::now();
                // The complete new listing replaces the old one before the
                // render, so the two are not both alive while the body is
                // built (~50 MB each at 100k keys). Only a failed render (an
                // internal error, not an upstream one) leaves the new listing
                // in place under the previous body; the next reload renders it.
                let previous = {
                    let mut state = lock(&self.shared.state);
                    state.taken_at = Some(now);
                    state.direct = Arc::clone(&extras.direct);
                    state.last_data.replace(Arc::clone(&data))
                };
                drop(previous);
                // Return the listing's freed pages (and the fetch's scratch) before the body is built.
                allocator::trim();
                let hint = self.render_hint();
                let rendered = render_snapshot(
                    Arc::clone(&config),
                    Arc::clone(&data),
                    extras.clone(),
                    now,
                    hint,
                )
                .await;
                match rendered {
                    Ok(rendered) => {
                        let mut state = lock(&self.shared.state);
                        state.snapshot = Rendered::Fresh(rendered);
                        state.status.up = true;
                        state.status.last_success = Some(now);
                        Ok(())
                    }
                    Err(e) => Err(UpstreamError::Decode {
                        endpoint: crate::upstream::Endpoint::Keys,
                        message: format!("rendering failed: {e}"),
                    }),
                }
            }
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed().as_secs_f64();
        {
            let mut state = lock(&self.shared.state);
            state.status.last_duration_seconds = Some(elapsed);
            if outcome.is_err() {
                state.status.up = false;
            }
        }
        match &outcome {
            Ok(()) => {
                let state = lock(&self.shared.state);
                let keys = state.last_data.as_ref().map_or(0, |d| d.keys.len());
                info!(
                    keys,
                    duration_ms = (elapsed * 1000.0) as u64,
                    "refresh succeeded"
                );
            }
            Err(e) => {
                self.shared.telemetry.count_refresh_failure(e.reason());
                if matches!(e, UpstreamError::Unauthorized { .. }) {
                    error!(error = %e, "refresh failed; keeping the previous data");
                } else {
                    warn!(error = %e, reason = e.reason(), "refresh failed; keeping the previous data");
                }
            }
        }
        self.publish();
        if outcome.is_ok() {
            // Ready only once the new body is what scrapes get.
            lock(&self.shared.state).last_success = Some(Instant::now());
        }
        // The previous listing and body were just freed: give the pages back.
        allocator::trim();
        outcome
    }

    /// Applies a new, already validated config: rebuilds the client if the
    /// upstream settings changed, and re-attributes the last listing at once.
    /// On error nothing changes except `openrouter_config_last_reload_successful 0`.
    pub async fn apply_config(&self, config: Config) -> Result<(), ReloadError> {
        let _serial = self.shared.refresh_lock.lock().await;
        let (old, client) = {
            let state = lock(&self.shared.state);
            (Arc::clone(&state.config), state.client.clone())
        };
        let rebuilt = if old.openrouter == config.openrouter
            && matches!(self.shared.keys, KeyProvider::Fixed(_))
        {
            Ok(client)
        } else {
            make_client(
                &config,
                &self.shared.keys,
                self.shared.retry,
                &self.shared.telemetry,
            )
        };
        let clients = rebuilt.and_then(|client| {
            let direct = make_direct_clients(&config, &client)?;
            Ok((client, direct))
        });
        let (client, direct_clients) = match clients {
            Ok(pair) => pair,
            Err(e) => {
                self.reload_failed();
                return Err(e);
            }
        };
        let config = Arc::new(config);
        {
            let mut state = lock(&self.shared.state);
            state.config = Arc::clone(&config);
            state.client = client;
            state.direct_clients = Arc::new(direct_clients);
            // Direct keys keep their last figures only while they stay in the config.
            let kept: Vec<DirectKey> = state
                .direct
                .iter()
                .filter_map(|d| {
                    let (company, _, _) =
                        config.direct_keys().find(|(_, name, _)| *name == d.name)?;
                    Some(DirectKey {
                        company,
                        ..d.clone()
                    })
                })
                .collect();
            state.direct = Arc::new(kept);
            state.status.reload_successful = true;
            state.status.refresh_interval_seconds = config.refresh_interval.as_secs_f64();
            state.status.activity = match (config.activity.enabled, state.status.activity) {
                (true, Some(a)) => Some(a),
                (true, None) => Some(ActivityStatus::default()),
                (false, _) => None,
            };
            if !config.activity.enabled {
                state.activity = None;
            }
        }
        self.rerender().await;
        self.shared
            .config_changed
            .send_replace(config.refresh_interval);
        self.publish();
        info!(companies = config.companies.len(), "configuration applied");
        Ok(())
    }

    /// Re-renders the snapshot from the last listing with the current config
    /// and activity data (after a reload or an activity run). Caller holds `refresh_lock`.
    async fn rerender(&self) {
        let hint = self.render_hint();
        let (config, data, taken_at, extras) = {
            let state = lock(&self.shared.state);
            let Some(data) = state.last_data.clone() else {
                return;
            };
            let extras = Extras {
                direct: Arc::clone(&state.direct),
                activity: state.activity.clone(),
            };
            (
                Arc::clone(&state.config),
                data,
                state.taken_at.unwrap_or_else(Utc::now),
                extras,
            )
        };
        match render_snapshot(config, data, extras, taken_at, hint).await {
            Ok(rendered) => lock(&self.shared.state).snapshot = Rendered::Fresh(rendered),
            Err(e) => {
                warn!(error = %e, "re-rendering the snapshot failed; keeping the previous one")
            }
        }
    }

    /// One activity run: fetches the days each listed key is missing, then
    /// re-renders with the new cache. All-or-nothing: on failure the previous
    /// activity data stays and `openrouter_activity_up` is 0. Returns the calls made.
    pub async fn refresh_activity(&self) -> Result<usize, UpstreamError> {
        self.refresh_activity_on(Utc::now().date_naive()).await
    }

    /// [`Exporter::refresh_activity`] as if the current UTC date were `today`.
    pub async fn refresh_activity_on(&self, today: NaiveDate) -> Result<usize, UpstreamError> {
        let (client, config, data, cache) = {
            let state = lock(&self.shared.state);
            (
                state.client.clone(),
                Arc::clone(&state.config),
                state.last_data.clone(),
                state.activity.clone().unwrap_or_default(),
            )
        };
        if !config.activity.enabled || config.openrouter.management_key.is_none() {
            return Ok(0);
        }
        // Nothing is listed before the first refresh.
        let Some(data) = data else { return Ok(0) };
        let plan = cache.plan(data.keys.iter().map(|k| k.hash.as_str()), today);
        let calls = plan.len();
        let fetched = activity::fetch(&client, plan, config.activity.concurrency).await;
        let _serial = self.shared.refresh_lock.lock().await;
        match fetched {
            Ok(results) => {
                let mut cache = (*cache).clone();
                for (hash, what, rows) in &results {
                    cache.apply(hash, what, rows, today);
                }
                let listed = data.keys.iter().map(|k| k.hash.as_str()).collect();
                cache.prune(&listed, today);
                {
                    let mut state = lock(&self.shared.state);
                    let cached_keys = cache.keys();
                    state.activity = Some(Arc::new(cache));
                    state.status.activity = Some(ActivityStatus {
                        up: true,
                        last_success: Some(Utc::now()),
                        cached_keys,
                    });
                }
                self.rerender().await;
                self.publish();
                info!(calls, "activity run succeeded");
                Ok(calls)
            }
            Err(e) => {
                {
                    let mut state = lock(&self.shared.state);
                    if let Some(status) = state.status.activity.as_mut() {
                        status.up = false;
                    }
                }
                self.shared.telemetry.count_refresh_failure("activity");
                warn!(error = %e, "activity run failed; keeping the previous activity data");
                self.publish();
                Err(e)
            }
        }
    }

    /// Runs activity collection every `activity.refresh_interval` and shortly
    /// after each UTC midnight (when a day completes), until `shutdown`.
    pub async fn run_activity(&self, mut shutdown: watch::Receiver<bool>) {
        let mut config_changed = self.shared.config_changed.subscribe();
        loop {
            let config = self.config();
            let listed = lock(&self.shared.state).last_data.is_some();
            let wait = if config.activity.enabled && !listed {
                // Activity is per listed key: wait for the first listing.
                Duration::from_millis(250)
            } else if config.activity.enabled {
                let _ = self.refresh_activity().await;
                let now = Utc::now();
                let after_midnight = crate::snapshot::Window::Daily
                    .end(now)
                    .map(|end| end + chrono::Duration::minutes(10) - now)
                    .and_then(|d| d.to_std().ok())
                    .unwrap_or(config.activity.refresh_interval);
                config.activity.refresh_interval.min(after_midnight)
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = config_changed.changed() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Re-reads the config file given at start (SIGHUP, file change).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let Some(path) = self.shared.config_path.clone() else {
            return Ok(());
        };
        match Config::load(&path) {
            Ok(config) => self.apply_config(config).await,
            Err(e) => {
                self.reload_failed();
                Err(e.into())
            }
        }
    }

    fn reload_failed(&self) {
        lock(&self.shared.state).status.reload_successful = false;
        self.publish();
    }

    /// Renders the status piece and swaps in snapshot + status as one body.
    /// A fresh snapshot's buffers become the body without a copy; a kept one
    /// is copied once. Either way the state then keeps the snapshot as slices
    /// of the published buffers, so the text is never held twice at rest.
    fn publish(&self) {
        // Held throughout, so publishes never interleave or go out of order.
        let mut state = lock(&self.shared.state);
        let status = state.status;
        let telemetry = &self.shared.telemetry;
        let status_hint = RenderHint {
            plain_limit: usize::MAX,
            plain_len: 4096,
            gzip_len: 1024,
        };
        let status_part = render(status_hint, false, |w| {
            write_status(w, &status)?;
            let mut counters = Vec::new();
            telemetry.encode(&mut counters);
            w.raw(&counters)
        });
        let status_part = match status_part {
            Ok(part) => part,
            Err(e) => {
                error!(error = %e, "cannot render status metrics");
                return;
            }
        };
        let (published, kept) = assemble(std::mem::take(&mut state.snapshot), status_part);
        state.snapshot = kept;
        let published = Arc::new(published);
        match self.shared.published.write() {
            Ok(mut slot) => *slot = published,
            Err(poisoned) => *poisoned.into_inner() = published,
        }
        drop(state);
        debug!("published new /metrics body");
    }

    /// Refreshes now and then every `refresh_interval` until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut interval_changed = self.shared.config_changed.subscribe();
        loop {
            let started = tokio::time::Instant::now();
            let _ = self.refresh().await;
            // A reload re-renders at once from the last listing; it only moves
            // the next refresh to `started + new interval`, never triggers one.
            loop {
                let interval = *interval_changed.borrow_and_update();
                tokio::select! {
                    _ = tokio::time::sleep_until(started + interval) => break,
                    _ = interval_changed.changed() => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// glibc malloc settings for a process whose big allocations (a listing, a
/// body: tens of MB each at 100k keys) are replaced wholesale every refresh.
/// By default glibc raises its mmap threshold after freeing a large block, so
/// later ones land in the heap and their pages stay resident after `free`, and
/// every thread that allocates gets an arena of its own. At 100k keys that
/// made idle RSS grow from ~100 to ~200 MB over a few refreshes and the peak
/// ~280 MB; with these settings peak ~195 MB and idle ~95-115 MB (BENCHMARKS.md).
/// Other allocators and platforms: no-ops.
mod allocator {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    mod glibc {
        use std::os::raw::c_int;

        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
            fn malloc_trim(pad: usize) -> c_int;
        }

        const M_MMAP_THRESHOLD: c_int = -3;
        const M_ARENA_MAX: c_int = -8;

        pub fn tune() {
            // SAFETY: mallopt only changes allocator parameters; both are valid
            // values, and glibc serialises the change internally.
            unsafe {
                // Blocks of 64 KiB and up get their own mapping, returned on free
                // (a fixed value also stops glibc's dynamic threshold).
                mallopt(M_MMAP_THRESHOLD, 64 * 1024);
                // One arena (small allocations still go through per-thread caches).
                mallopt(M_ARENA_MAX, 1);
            }
        }

        pub fn trim() {
            // SAFETY: malloc_trim only returns free memory to the kernel.
            unsafe {
                malloc_trim(0);
            }
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub use glibc::{trim, tune};

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn tune() {}

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn trim() {}
}

/// Joins a snapshot piece and a status piece into one body: the texts end to
/// end, and one gzip member whose deflate stream continues from the snapshot's
/// sync-flush boundary into the status blocks, with the combined CRC-32.
/// Returns the body and the snapshot piece as slices of it.
fn assemble(snapshot: Rendered, status: Piece) -> (Published, Rendered) {
    let status_plain = status.plain.as_deref().unwrap_or_default();
    // (text so far, gzip header + snapshot deflate, snapshot crc, snapshot length)
    let (plain, mut gzip, crc, len) = match snapshot {
        Rendered::Empty => (Some(Vec::new()), GZIP_HEADER.to_vec(), 0, 0),
        Rendered::Fresh(piece) => (piece.plain, piece.deflate, piece.crc.finalize(), piece.len),
        Rendered::Published {
            plain,
            deflate,
            crc,
            len,
        } => {
            let plain = plain.map(|p| {
                let mut v = Vec::with_capacity(p.len() + status_plain.len());
                v.extend_from_slice(&p);
                v
            });
            let mut gzip =
                Vec::with_capacity(GZIP_HEADER.len() + deflate.len() + status.deflate.len() + 8);
            gzip.extend_from_slice(&GZIP_HEADER);
            gzip.extend_from_slice(&deflate);
            (plain, gzip, crc, len)
        }
    };
    let snapshot_deflate_end = gzip.len();
    let mut whole_crc = crc32fast::Hasher::new_with_initial_len(crc, len as u64);
    whole_crc.combine(&status.crc);
    gzip.extend_from_slice(&status.deflate);
    gzip.extend_from_slice(&whole_crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    gzip.extend_from_slice(&((len + status.len) as u32).to_le_bytes());
    let plain = plain.map(|mut p| {
        p.extend_from_slice(status_plain);
        crate::zerocopy::shared_bytes(p)
    });
    let gzip = crate::zerocopy::shared_bytes(gzip);
    let kept = Rendered::Published {
        plain: plain.as_ref().map(|p| p.slice(..len)),
        deflate: gzip.slice(GZIP_HEADER.len()..snapshot_deflate_end),
        crc,
        len,
    };
    let published = Published {
        plain: plain.unwrap_or_default(),
        gzip,
        plain_len: len + status.len,
    };
    (published, kept)
}

/// The render + compress step of a refresh in one call, with an empty status
/// part: what `benches/refresh.rs` measures. `plain_limit` as in
/// [`Exporter::set_plain_body_limit`]; `previous_len` is the text length of
/// the previous body (0 = none), which sizes buffers and picks the gzip level.
#[doc(hidden)]
pub fn render_body(
    snapshot: &Snapshot,
    options: crate::config::MetricsOptions,
    plain_limit: Option<usize>,
    previous_len: usize,
) -> std::io::Result<Published> {
    let hint = RenderHint {
        plain_limit: plain_limit.unwrap_or(usize::MAX),
        plain_len: previous_len,
        gzip_len: previous_len / 6,
    };
    let piece = render(hint, true, |w| write_snapshot(w, snapshot, options))?;
    let status = render(hint, false, |_| Ok(()))?;
    Ok(assemble(Rendered::Fresh(piece), status).0)
}

/// Compresses ready text the way a refresh does (benchmarks).
#[doc(hidden)]
pub fn gzip_text(text: &[u8]) -> std::io::Result<Published> {
    let hint = RenderHint {
        plain_limit: usize::MAX,
        plain_len: text.len(),
        gzip_len: text.len() / 4,
    };
    let piece = render(hint, true, |w| w.raw(text))?;
    let status = render(hint, false, |_| Ok(()))?;
    Ok(assemble(Rendered::Fresh(piece), status).0)
}

fn make_direct_clients(config: &Config, base: &Client) -> Result<Vec<DirectClient>, ReloadError> {
    config
        .direct_keys()
        .map(|(company, name, secret)| {
            let key = secret
                .load()
                .map_err(|e| ReloadError::DirectKey(name.to_string(), e))?;
            Ok(DirectClient {
                company,
                name: name.to_string(),
                client: base.with_bearer(key),
            })
        })
        .collect()
}

/// Polls every direct key with its own secret. Never fails as a whole: a key
/// that fails keeps its last good figures and is marked down.
async fn poll_direct(clients: &[DirectClient], previous: &[DirectKey]) -> Vec<DirectKey> {
    let mut tasks = tokio::task::JoinSet::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
    for (index, direct) in clients.iter().cloned().enumerate() {
        let semaphore = Arc::clone(&semaphore);
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let result: Result<serde_json::Value, _> =
                direct.client.get_data(Endpoint::Key, "/key").await;
            let key = result.and_then(|mut value| {
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("hash".into(), format!("direct:{}", direct.name).into());
                    obj.insert("name".into(), direct.name.clone().into());
                }
                serde_json::from_value::<crate::upstream::ApiKey>(value).map_err(|e| {
                    UpstreamError::Decode {
                        endpoint: Endpoint::Key,
                        message: e.to_string(),
                    }
                })
            });
            (index, direct, key)
        });
    }
    let mut polled = Vec::with_capacity(clients.len());
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, direct, key)) = joined else {
            continue;
        };
        let entry = match key {
            Ok(key) => DirectKey {
                company: direct.company,
                name: direct.name,
                key: Some(key),
                up: true,
            },
            Err(e) => {
                warn!(key = %direct.name, error = %e, "direct key poll failed; keeping its last figures");
                DirectKey {
                    company: direct.company,
                    key: previous
                        .iter()
                        .find(|p| p.name == direct.name)
                        .and_then(|p| p.key.clone()),
                    name: direct.name,
                    up: false,
                }
            }
        };
        polled.push((index, entry));
    }
    polled.sort_by_key(|(i, _)| *i);
    polled.into_iter().map(|(_, d)| d).collect()
}

fn make_client(
    config: &Config,
    keys: &KeyProvider,
    retry: RetryPolicy,
    telemetry: &Arc<Telemetry>,
) -> Result<Client, ReloadError> {
    let key = match keys {
        KeyProvider::Fixed(key) => key.clone(),
        KeyProvider::FromConfig => match &config.openrouter.management_key {
            Some(source) => source.load()?,
            // Direct-key mode: the management API is never called.
            None => SecretString::from(String::new()),
        },
    };
    Ok(Client::new(
        &config.openrouter.base_url,
        key,
        config.openrouter.request_timeout,
        retry,
        Arc::clone(telemetry),
    )?)
}

/// Builds and renders a snapshot off the async threads: at 100k keys it is real CPU work.
async fn render_snapshot(
    config: Arc<Config>,
    data: Arc<UpstreamData>,
    extras: Extras,
    taken_at: DateTime<Utc>,
    hint: RenderHint,
) -> std::io::Result<Piece> {
    let job = move || {
        let snapshot = Snapshot::build(&config, data, &extras, taken_at);
        render(hint, true, |w| write_snapshot(w, &snapshot, config.metrics))
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::BodyExt;

    use super::*;
    use crate::sim::{Fault, FaultResponse, SimKey, SimServer, SimState};

    const KEY: &str = "sk-or-v1-exporter-unit-test";

    async fn account(keys: usize) -> SimServer {
        let mut state = SimState::new(KEY);
        state.workspaces = vec![("ws-1".to_string(), "One".to_string())];
        state.keys = (0..keys)
            .map(|i| {
                SimKey::new("ws-1", &format!("{i:064x}"), &format!("acme-{i}")).usage(
                    0.5,
                    1.25,
                    3.0,
                    10.0 + i as f64,
                )
            })
            .collect();
        state.total_credits = 1e6;
        state.total_usage = 1e5;
        SimServer::start(state).await.unwrap()
    }

    fn exporter(sim: &SimServer) -> Exporter {
        let yaml = format!(
            "refresh_interval: 30s\nopenrouter:\n  base_url: {}\n  request_timeout: 2s\ncompanies:\n  acme:\n    keys: [{{name_glob: 'acme-*'}}]\n",
            sim.base_url()
        );
        let retry = RetryPolicy {
            attempts: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        Exporter::with_key(
            Config::parse(&yaml, "test").unwrap(),
            SecretString::from(KEY.to_string()),
            retry,
        )
        .unwrap()
    }

    /// Decodes as a single gzip member (what curl and most clients read).
    fn gunzip_one_member(gzip: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gzip)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    async fn collect(body: MetricsBody) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn gzip_is_one_member_equal_to_the_text_across_publishes() {
        let sim = account(800).await;
        let exporter = exporter(&sim);
        let empty = exporter.published();
        assert_eq!(gunzip_one_member(&empty.gzip), empty.plain.to_vec());
        exporter.refresh().await.unwrap();
        let first = exporter.published();
        assert!(first.has_plain());
        assert!(first.plain_len > 2 * RENDER_CHUNK, "{}", first.plain_len);
        assert_eq!(gunzip_one_member(&first.gzip), first.plain.to_vec());
        assert_eq!(collect(first.identity()).await, first.plain.to_vec());
        // Both bodies are in memfds, so plain-HTTP scrapes send them without a copy.
        if cfg!(target_os = "linux") {
            assert!(crate::zerocopy::is_shared(&first.gzip));
            assert!(crate::zerocopy::is_shared(&first.plain));
        }

        // A failed refresh keeps the snapshot byte for byte and re-renders the status.
        sim.state().faults.push(Fault::new(
            "/credits",
            FaultResponse::Error {
                status: 500,
                retry_after: None,
            },
        ));
        assert!(exporter.refresh().await.is_err());
        let failed = exporter.published();
        assert_eq!(gunzip_one_member(&failed.gzip), failed.plain.to_vec());
        let snapshot_end = |text: &[u8]| {
            let text = std::str::from_utf8(text).unwrap();
            text.find("# HELP openrouter_up ").unwrap()
        };
        let end = snapshot_end(&first.plain);
        assert_eq!(end, snapshot_end(&failed.plain));
        assert_eq!(first.plain[..end], failed.plain[..end]);
        assert!(String::from_utf8_lossy(&failed.plain).contains("\nopenrouter_up 0\n"));
        if cfg!(target_os = "linux") {
            assert!(crate::zerocopy::is_shared(&failed.gzip));
        }
    }

    /// Every level a body can get (by the size of the previous one) gives one
    /// gzip member that decodes to the text, across a status-only republish.
    #[test]
    fn every_gzip_level_round_trips() {
        assert_eq!(gzip_level(0), GZIP_LEVEL);
        assert_eq!(gzip_level(SMALL_BODY), GZIP_LEVEL_SMALL);
        assert_eq!(gzip_level(SMALL_BODY + 1), GZIP_LEVEL);
        assert_eq!(gzip_level(LARGE_BODY), GZIP_LEVEL);
        assert_eq!(gzip_level(LARGE_BODY + 1), GZIP_LEVEL_LARGE);
        let line = b"openrouter_key_usage_usd{key=\"k-0\"} 1.5\n";
        let text: Vec<u8> = (0..3 * RENDER_CHUNK + 17)
            .map(|i| line[i % line.len()] ^ (i / 4099) as u8)
            .collect();
        for previous_len in [0, SMALL_BODY, LARGE_BODY + 1] {
            let hint = RenderHint {
                plain_limit: usize::MAX,
                plain_len: previous_len,
                gzip_len: 0,
            };
            let piece = render(hint, true, |w| w.raw(&text)).unwrap();
            let status = render(hint, false, |w| w.raw(b"openrouter_up 1\n")).unwrap();
            let (published, kept) = assemble(Rendered::Fresh(piece), status);
            let mut whole = text.clone();
            whole.extend_from_slice(b"openrouter_up 1\n");
            assert_eq!(published.plain.to_vec(), whole, "level for {previous_len}");
            assert_eq!(
                gunzip_one_member(&published.gzip),
                whole,
                "level for {previous_len}"
            );
            let status = render(hint, false, |w| w.raw(b"openrouter_up 0\n")).unwrap();
            let (again, _) = assemble(kept, status);
            whole.truncate(text.len());
            whole.extend_from_slice(b"openrouter_up 0\n");
            assert_eq!(
                gunzip_one_member(&again.gzip),
                whole,
                "level for {previous_len}"
            );
        }
    }

    #[tokio::test]
    async fn above_the_plain_limit_only_gzip_is_kept_and_identity_inflates() {
        let sim = account(800).await;
        let full = exporter(&sim);
        full.refresh().await.unwrap();
        let limited = exporter(&sim);
        limited.set_plain_body_limit(Some(20_000));
        limited.refresh().await.unwrap();
        let published = limited.published();
        assert!(!published.has_plain());
        assert!(published.plain.is_empty());
        let text = collect(published.identity()).await;
        assert_eq!(text.len(), published.plain_len);
        assert_eq!(gunzip_one_member(&published.gzip), text);
        // Same families and samples as the unlimited exporter (status lines aside).
        let reference = full.published();
        let cut = |t: &[u8]| {
            let t = String::from_utf8(t.to_vec()).unwrap();
            t[..t.find("# HELP openrouter_up ").unwrap()].to_string()
        };
        assert_eq!(cut(&text), cut(&reference.plain));
        // A status-only publish keeps working from the kept gzip.
        limited.reload_failed();
        let again = limited.published();
        let text_again = collect(again.identity()).await;
        assert_eq!(cut(&text_again), cut(&text));
        assert!(String::from_utf8_lossy(&text_again)
            .contains("\nopenrouter_config_last_reload_successful 0\n"));
    }
}
