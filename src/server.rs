//! The HTTP side: `/metrics`, `/healthz`, `/readyz` and a landing page, on hyper 1.x.
//!
//! A scrape never calls OpenRouter and never renders: it serves the body the
//! last refresh published, gzip-compressed when the scraper accepts it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::exporter::Exporter;
use crate::exposition::CONTENT_TYPE;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub telemetry_path: String,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            telemetry_path: "/metrics".to_string(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// Serves until `shutdown` turns true, then lets in-flight requests finish (at most 5 s).
pub async fn serve(
    listener: TcpListener,
    exporter: Exporter,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let options = Arc::new(options);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(64 * 1024);
    info!(address = %listener.local_addr()?, path = %options.telemetry_path, "serving metrics");
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
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
        let exporter = exporter.clone();
        let options = Arc::clone(&options);
        let service = hyper::service::service_fn(move |req| {
            let response = route(&req, &exporter, &options);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => debug!("all connections closed"),
        _ = tokio::time::sleep(Duration::from_secs(5)) => warn!("connections still open after 5s; closing"),
    }
    Ok(())
}

fn route(
    req: &Request<Incoming>,
    exporter: &Exporter,
    options: &ServerOptions,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = req.uri().path();
    if path == options.telemetry_path {
        return metrics(req, exporter);
    }
    match path {
        "/" => html(&options.telemetry_path),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if exporter.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no successful refresh from OpenRouter yet, or the data is stale\n",
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn metrics(req: &Request<Incoming>, exporter: &Exporter) -> Response<Full<Bytes>> {
    let published = exporter.published();
    let gzip = accepts_gzip(req.headers().get(header::ACCEPT_ENCODING));
    let body = if gzip {
        published.gzip.clone()
    } else {
        published.plain.clone()
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// True when `Accept-Encoding` lists gzip (or `*`) with a non-zero quality.
pub fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        if !coding.eq_ignore_ascii_case("gzip") && coding != "*" {
            return false;
        }
        parts.all(|param| {
            let param = param.trim();
            match param
                .strip_prefix("q=")
                .or_else(|| param.strip_prefix("Q="))
            {
                Some(q) => q.trim().parse::<f32>().map(|q| q > 0.0).unwrap_or(false),
                None => true,
            }
        })
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn html(telemetry_path: &str) -> Response<Full<Bytes>> {
    let path = html_escape(telemetry_path);
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>OpenRouter cost exporter</title></head>\n\
         <body><h1>OpenRouter cost exporter</h1>\n\
         <p>Spend per OpenRouter API key and per company, for Prometheus. Version {}.</p>\n\
         <ul><li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/healthz\">Health</a></li>\n\
         <li><a href=\"/readyz\">Readiness</a></li></ul>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let yes = |v: &'static str| accepts_gzip(Some(&HeaderValue::from_static(v)));
        assert!(yes("gzip"));
        assert!(yes("identity, gzip;q=0.5"));
        assert!(yes("GZIP"));
        assert!(yes("*"));
        assert!(!yes("gzip;q=0"));
        assert!(!yes("deflate, br"));
        assert!(!accepts_gzip(None));
    }
}
