//! Routing and the responses of each endpoint: `/metrics` (with content
//! negotiation), the pages, `/healthz` and `/readyz`; the statement routes
//! are answered in `statements.rs`.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::response::{self, csv, html, text, ResponseBody};
use super::statements;
use super::ServerOptions;
use crate::exporter::ReadHandle;
use crate::exposition::CONTENT_TYPE;
use crate::page::{self, Links, Page};

pub(super) async fn route(
    req: &Request<Incoming>,
    reader: &ReadHandle,
    options: &ServerOptions,
) -> Response<ResponseBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = req.uri().path();
    if path == options.telemetry_path {
        return metrics(req, reader);
    }
    let links = Links {
        metrics: &options.telemetry_path,
        grafana: options.grafana_url.as_deref(),
    };
    if let Some(response) = statements::route(path, reader, &options.ledger, &links).await {
        return response;
    }
    if path == "/companies.csv" {
        let query = req.uri().query().unwrap_or("");
        if let Some(response) =
            statements::companies_range_csv(query, reader, &options.ledger, &links).await
        {
            return response;
        }
    }
    if let Some(name) = path.strip_prefix("/company/") {
        let published = reader.published();
        let config = reader.config();
        let now = chrono::Utc::now();
        return match page::percent_decode(name) {
            Some(name) => match page::company(
                &published,
                &config,
                &links,
                &name,
                now,
                &company_chart_for(&options.ledger, &config, &name, now).await,
            ) {
                Page::Found(body) => html(StatusCode::OK, body),
                Page::NotFound(body) => html(StatusCode::NOT_FOUND, body),
            },
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        };
    }
    match path {
        "/" => html(
            StatusCode::OK,
            page::index(
                &reader.published(),
                &reader.config(),
                &links,
                chrono::Utc::now(),
            ),
        ),
        "/companies.csv" => snapshot_csv(&reader.published()),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if reader.is_ready() {
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

fn metrics(req: &Request<Incoming>, reader: &ReadHandle) -> Response<ResponseBody> {
    let published = reader.published();
    let gzip = accepts_gzip(req.headers().get(header::ACCEPT_ENCODING));
    // The exporter's own counters and process families, as of this scrape,
    // follow the render-once text. Above `body::PLAIN_LIMIT` only gzip is
    // kept; identity is inflated while sent.
    let fresh = Bytes::from(reader.telemetry().render());
    let body = if gzip {
        response::gzip(&published, &fresh)
    } else {
        response::identity(&published, fresh)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// True when `Accept-Encoding` accepts gzip with a non-zero quality: gzip
/// itself when it is listed (so `gzip;q=0, *` refuses it), else `*`.
pub fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let quality = |coding: &str| {
        value.split(',').find_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case(coding) {
                return None;
            }
            let q = parts.find_map(|param| {
                let param = param.trim();
                param
                    .strip_prefix("q=")
                    .or_else(|| param.strip_prefix("Q="))
            });
            Some(q.map_or(Some(1.0), |q| q.trim().parse::<f32>().ok()))
        })
    };
    match quality("gzip").or_else(|| quality("*")) {
        Some(Some(q)) => q > 0.0,
        _ => false,
    }
}

fn snapshot_csv(published: &crate::body::Published) -> Response<ResponseBody> {
    let Some(body) = page::companies_csv(published) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no data yet: no refresh from OpenRouter has succeeded\n",
        );
    };
    let filename = published.snapshot.as_ref().map_or_else(
        || "openrouter-companies.csv".to_string(),
        |s| format!("openrouter-companies-{}.csv", s.taken_at.format("%Y-%m-%d")),
    );
    csv(body, &filename)
}

/// The company's daily spend chart from the ledger, against its monthly budget.
async fn company_chart_for(
    ledger: &statements::LedgerAccess,
    config: &crate::config::Config,
    company: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let budget = config
        .companies
        .iter()
        .find(|c| c.name == company)
        .and_then(|c| c.budget.monthly)
        .and_then(crate::money::Usd::from_f64);
    statements::company_chart(ledger, company, now.date_naive(), budget).await
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
        assert!(!yes("gzip;q=0, *"), "an explicit refusal wins over *");
        assert!(!yes("gzip; q=0.0"));
        assert!(yes("br;q=1, *;q=0.1"));
        assert!(!yes("*;q=0"));
        assert!(!yes("deflate, br"));
        assert!(!accepts_gzip(None));
    }
}
