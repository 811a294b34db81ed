//! The HTTP side: `/metrics`, `/healthz`, `/readyz`, and the pages of
//! [`crate::page`] (`/`, `/company/<name>`, `/companies.csv`, and the
//! statements from the ledger, `/statements…`), on hyper 1.x.
//!
//! A scrape never calls OpenRouter and never renders: it serves the body the
//! last refresh published, gzip-compressed when the scraper accepts it.
//!
//! With a web config ([`WebConfig`], `--web.config.file`) the same endpoints
//! are served over TLS (optionally requiring client certificates) and/or
//! behind HTTP basic auth. Basic auth protects every endpoint, `/healthz`
//! included, as exporter-toolkit does, unless the web config lists the path
//! in `auth_excluded_paths`.
//!
//! Hostile clients: a connection must finish its TLS handshake, and then each
//! request's headers, within `header_read_timeout`, or it is closed; a
//! response write that makes no progress for `write_timeout` (a client that
//! stopped reading) closes it too. At most `max_connections` are served at
//! once; when all are taken, a newcomer takes the slot of the connection that
//! has been quiet the longest ([`connections`]), so neither stalled nor busy
//! keep-alive connections can hold every slot, and the accept loop itself
//! never waits on a client. Request heads (request line and headers) are
//! capped at [`MAX_HEADER_BYTES`].

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::exporter::ReadHandle;
use crate::webconfig::{self, WebConfig};
use connections::{Slot, Slots};
use response::text;
use response::ResponseBody;
use routes::route;
use write_timeout::WriteTimeout;

pub use routes::accepts_gzip;
pub use statements::{company_chart, company_markup, LedgerAccess};

mod connections;
mod response;
mod routes;
mod statements;
mod write_timeout;

type Http1Builder = hyper::server::conn::http1::Builder;

/// The most bytes a request's line and headers may take together; more gets
/// `431 Request Header Fields Too Large`. hyper's read buffer alone lets a
/// head of almost twice its size through, so the head is capped exactly.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The most header lines a request may have (hyper's default); more gets 431.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub telemetry_path: String,
    /// A client must finish its TLS handshake, and then send each request's
    /// headers, within this time (idle keep-alive connections included).
    pub header_read_timeout: Duration,
    /// A write to the client that makes no progress for this long (the
    /// client stopped reading) closes the connection.
    pub write_timeout: Duration,
    /// Connections served at once; when all are taken, the connection quiet
    /// the longest is closed (gracefully) for a newcomer. Kept below the common 1024 open-files soft limit so that a flood of
    /// connections cannot starve the OpenRouter client or config reloads of
    /// file descriptors.
    pub max_connections: usize,
    /// TLS, client certificates, basic auth and extra headers (`--web.config.file`).
    pub web: WebConfig,
    /// Grafana's base URL (`--web.grafana-url`): the pages link its dashboards.
    pub grafana_url: Option<String>,
    /// The statements ledger (`--storage.path`): `Off` answers the statement
    /// routes 404, `Unavailable` 503 with its reason.
    pub ledger: LedgerAccess,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            telemetry_path: "/metrics".to_string(),
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: 512,
            web: WebConfig::default(),
            grafana_url: None,
            ledger: LedgerAccess::Off,
        }
    }
}

/// What a plain-HTTP client gets from the TLS port (as Go's net/http answers).
const PLAINTEXT_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Serves until `shutdown` turns true, then lets in-flight requests finish (at most 5 s).
pub async fn serve(
    listener: TcpListener,
    reader: impl Into<ReadHandle>,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let reader = reader.into();
    let options = Arc::new(options);
    let slots = Slots::new(options.max_connections);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let tls = options.web.tls().map(TlsAcceptor::from);
    info!(
        address = %listener.local_addr()?,
        path = %options.telemetry_path,
        tls = tls.is_some(),
        client_auth = ?options.web.client_auth(),
        basic_auth = options.web.basic_auth().is_some(),
        "serving metrics"
    );
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // When all slots are taken this asks quiet connections to close; the
        // next connections wait in the kernel's accept queue meanwhile.
        let Some(slot) = slots.acquire(&mut shutdown).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        // Everything that can wait on the client happens in the connection's
        // own task, never in this loop.
        tokio::spawn(serve_connection(
            stream,
            peer,
            slot,
            builder.clone(),
            tls.clone(),
            reader.clone(),
            Arc::clone(&options),
        ));
    }
    drop(listener);
    if slots.close_all(Duration::from_secs(5)).await {
        debug!("all connections closed");
    } else {
        warn!("connections still open after 5s; closing");
    }
    Ok(())
}

/// One connection: the TLS handshake if any, then HTTP/1.1 until the client
/// goes, a timeout fires, or its slot is wanted for a newcomer.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    builder: Http1Builder,
    tls: Option<TlsAcceptor>,
    reader: ReadHandle,
    options: Arc<ServerOptions>,
) {
    let handshake_timeout = options.header_read_timeout;
    let write_timeout = options.write_timeout;
    let service = hyper::service::service_fn(move |req| {
        let reader = reader.clone();
        let options = Arc::clone(&options);
        async move { Ok::<_, Infallible>(handle(req, peer.ip(), &reader, &options).await) }
    });
    let result = match tls {
        None => {
            let stream = slot.track(WriteTimeout::new(stream, write_timeout));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            slot.serve(conn.as_mut(), |c| c.graceful_shutdown()).await
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(
                handshake_timeout,
                tls_handshake(&acceptor, stream, peer, write_timeout),
            );
            // A connection still in its handshake has sent no request:
            // asked to close, it just goes.
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Some(stream)) => stream,
                    Ok(None) => return,
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = slot.asked_to_close() => return,
            };
            let conn = builder.serve_connection(TokioIo::new(slot.track(stream)), service);
            tokio::pin!(conn);
            slot.serve(conn.as_mut(), |c| c.graceful_shutdown()).await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The TLS handshake; `None` when it failed or the client spoke plain HTTP
/// (which gets a 400 explaining why, then the connection is closed).
async fn tls_handshake(
    acceptor: &TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
    write_timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<WriteTimeout<TcpStream>>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return None,
    }
    // Every TLS connection starts with a handshake record (content type 22).
    if first[0] != 0x16 {
        if first[0].is_ascii_alphabetic() {
            debug!(%peer, "plain HTTP request on the TLS port");
            let _ = stream.write_all(PLAINTEXT_ON_TLS).await;
            let _ = stream.shutdown().await;
            // Drain what the client sent, so closing does not reset the
            // connection before it has read the answer.
            let mut sink = [0u8; 4096];
            let mut drained = 0;
            while drained < 64 * 1024 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        } else {
            debug!(%peer, "not a TLS handshake; closing");
        }
        return None;
    }
    match acceptor
        .accept(WriteTimeout::new(stream, write_timeout))
        .await
    {
        Ok(stream) => Some(stream),
        Err(e) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
    }
}

/// Basic auth first (it protects every endpoint not excluded), then routing,
/// then the headers every response carries and the configured ones.
async fn handle(
    req: Request<Incoming>,
    peer: IpAddr,
    reader: &ReadHandle,
    options: &ServerOptions,
) -> Response<ResponseBody> {
    let verdict = match options.web.basic_auth_for(req.uri().path()) {
        Some(auth) => {
            auth.verify(req.headers().get(header::AUTHORIZATION), peer)
                .await
        }
        None => Ok(true),
    };
    let mut response = match verdict {
        Ok(true) => route(&req, reader, options).await,
        Ok(false) => unauthorized(),
        Err(_queue_full) => too_many_checks(),
    };
    let headers = response.headers_mut();
    // Every answer is about this moment and for this client only (metrics,
    // 401s included), and none may be sniffed into another type.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    for (name, value) in options.web.headers() {
        headers.insert(name.clone(), value.clone());
    }
    response
}

fn unauthorized() -> Response<ResponseBody> {
    let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(webconfig::WWW_AUTHENTICATE),
    );
    response
}

/// The password-check queue is full: nothing was decided, so no 401 (a
/// browser would ask for the password again); the client may retry shortly.
fn too_many_checks() -> Response<ResponseBody> {
    let mut response = text(
        StatusCode::TOO_MANY_REQUESTS,
        "too many password checks pending; retry shortly\n",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
