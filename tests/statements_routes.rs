//! The statement routes through the real server, against a ledger in a
//! temporary directory filled with `record_reads`: exact sums in the CSVs, a
//! departed key listed, bad months and ranges answered 404/400 with what is
//! wrong, an unavailable ledger 503 while `/metrics` keeps serving.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as Days, NaiveDate, NaiveTime, Utc};
use common::*;
use openrouter_cost_exporter::activity::ActivityRow;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::ledger::{KeyRead, Ledger, ListedKey, Month};
use openrouter_cost_exporter::server::{serve, LedgerAccess, ServerOptions};
use openrouter_cost_exporter::sim::SimServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Running {
    base: String,
    shutdown: watch::Sender<bool>,
    exporter: Exporter,
    _sim: SimServer,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn at(day: NaiveDate, hour: u32) -> DateTime<Utc> {
    day.and_time(NaiveTime::from_hms_opt(hour, 0, 0).unwrap())
        .and_utc()
}

fn row(day: NaiveDate, model: &str, usage: f64) -> ActivityRow {
    ActivityRow {
        date: day.to_string(),
        model: model.to_string(),
        usage: Some(usage),
        byok_usage_inference: 0.0,
        requests: 3,
        prompt_tokens: 30,
        completion_tokens: 9,
        reasoning_tokens: 0,
    }
}

/// A settled read of the 30 days before `today`.
fn read<'a>(
    hash: &'a str,
    company: &'a str,
    today: NaiveDate,
    rows: &'a [ActivityRow],
) -> KeyRead<'a> {
    KeyRead {
        hash,
        company,
        today,
        read_at: at(today, 7),
        rows,
    }
}

fn listed<'a>(hash: &'a str, name: &'a str, company: &'a str) -> ListedKey<'a> {
    ListedKey {
        hash,
        name,
        label: "sk-or-v1-abc...xyz",
        workspace: None,
        creator: None,
        company,
        expires_at: None,
        usage_today: None,
        byok_today: None,
    }
}

/// Last month: acme's k1 (two models) and k2 (deleted on the 13th), globex's k3.
fn last_month() -> Month {
    Month::of(Utc::now().date_naive()).previous()
}

fn filled_ledger(dir: &std::path::Path) -> Ledger {
    let ledger = Ledger::open(dir, 400).expect("ledger");
    let first = last_month().first_day();
    ledger
        .record_listing(
            at(first, 0),
            &[
                listed("k1", "acme-prod", "acme"),
                listed("k2", "acme-old", "acme"),
                listed("k3", "globex-prod", "globex"),
            ],
        )
        .unwrap();
    let d = |n: i64| first + Days::days(n);
    let r1 = [
        row(d(1), "openai/gpt-4.1", 1.000000001),
        row(d(2), "openai/gpt-4.1", 2.5),
        row(d(2), "anthropic/claude-sonnet-4", 0.333333333),
    ];
    let r2 = [row(d(3), "openai/gpt-4.1", 0.000000007)];
    let r3 = [row(d(4), "google/gemini-2.5-flash", 12.125)];
    let today = d(10);
    ledger
        .record_reads(&[
            read("k1", "acme", today, &r1),
            read("k2", "acme", today, &r2),
            read("k3", "globex", today, &r3),
        ])
        .unwrap();
    ledger
        .record_listing(
            at(d(12), 0),
            &[
                listed("k1", "acme-prod", "acme"),
                listed("k3", "globex-prod", "globex"),
            ],
        )
        .unwrap();
    ledger
}

async fn start(access: impl FnOnce(&std::path::Path) -> LedgerAccess) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let ledger = access(dir.path());
    let sim = start_sim(empty_state()).await;
    let exporter = exporter(config(&sim.base_url(), "  acme:\n    keys: [k1]\n"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServerOptions {
        ledger,
        ..ServerOptions::default()
    };
    let (shutdown, rx) = watch::channel(false);
    tokio::spawn(serve(listener, exporter.clone(), options, rx));
    Running {
        base: format!("http://{addr}"),
        shutdown,
        exporter,
        _sim: sim,
        _dir: dir,
    }
}

async fn start_filled() -> Running {
    start(|dir| LedgerAccess::Open(Arc::new(filled_ledger(dir)))).await
}

async fn get(base: &str, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap();
    let resp = client.get(format!("{base}{path}")).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// The rows of a CSV as column → value maps.
fn csv_rows(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header = csv_fields(lines.next().unwrap());
    lines
        .map(|l| header.iter().cloned().zip(csv_fields(l)).collect())
        .collect()
}

#[tokio::test]
async fn month_csv_sums_are_exact_and_equal_the_total() {
    let run = start_filled().await;
    let month = last_month();
    let (status, headers, body) = get(&run.base, &format!("/statements/{month}.csv")).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"openrouter-statement-{month}.csv\"").as_str()
    );
    let rows = csv_rows(&body);
    let company_sum: i128 = rows
        .iter()
        .filter(|r| r["row"] == "company" || r["row"] == "unassigned")
        .map(|r| usd_nanos(&r["usage_usd"]))
        .sum();
    let total = rows.iter().find(|r| r["row"] == "total").unwrap();
    assert_eq!(usd_nanos(&total["usage_usd"]), company_sum);
    // 1.000000001 + 2.5 + 0.333333333 + 0.000000007 + 12.125, to the nano-dollar.
    assert_eq!(company_sum, 15_958_333_341);
    let acme = rows.iter().find(|r| r["company"] == "acme").unwrap();
    assert_eq!(usd_nanos(&acme["usage_usd"]), 3_833_333_341);
    assert_eq!(acme["keys"], "2");
    assert_eq!(total["from"], month.first_day().to_string());
    assert_eq!(total["to"], month.last_day().to_string());
}

#[tokio::test]
async fn company_statement_lists_the_departed_key() {
    let run = start_filled().await;
    let month = last_month();
    let (status, headers, body) = get(&run.base, &format!("/statements/{month}/acme.csv")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"openrouter-statement-{month}-acme.csv\"").as_str()
    );
    let rows = csv_rows(&body);
    let k2 = rows.iter().find(|r| r["key_hash"] == "k2").unwrap();
    assert_eq!(k2["departed_reason"], "deleted");
    assert_eq!(
        k2["departed_on"],
        (month.first_day() + Days::days(12)).to_string()
    );
    assert_eq!(usd_nanos(&k2["usage_usd"]), 7);
    let keys: i128 = rows
        .iter()
        .filter(|r| r["row"] == "key")
        .map(|r| usd_nanos(&r["usage_usd"]))
        .sum();
    let models: i128 = rows
        .iter()
        .filter(|r| r["row"] == "model")
        .map(|r| usd_nanos(&r["usage_usd"]))
        .sum();
    let total = rows.iter().find(|r| r["row"] == "total").unwrap();
    assert_eq!((keys, models), (3_833_333_341, 3_833_333_341));
    assert_eq!(usd_nanos(&total["usage_usd"]), keys);

    let (status, headers, html) = get(&run.base, &format!("/statements/{month}/acme")).await;
    assert_eq!(status, 200);
    assert!(html.contains("class=\"key departed\""), "{html}");
    assert!(html.contains("acme-old"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"));
}

#[tokio::test]
async fn index_and_month_pages_link_the_months() {
    let run = start_filled().await;
    let month = last_month();
    let (status, _, html) = get(&run.base, "/statements").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("href=\"/statements/{month}\"")),
        "{html}"
    );
    let (status, _, html) = get(&run.base, &format!("/statements/{month}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("data-company=\"acme\""));
    assert!(html.contains("data-company=\"globex\""));
}

#[tokio::test]
async fn bad_months_and_companies_are_404_with_a_message() {
    let run = start_filled().await;
    let month = last_month();
    let future = Month::of(Utc::now().date_naive()).next();
    for (path, says) in [
        ("/statements/2025-13".to_string(), "is not a month"),
        ("/statements/25-11.csv".to_string(), "is not a month"),
        (format!("/statements/{future}"), "in the future"),
        (
            "/statements/1990-01".to_string(),
            "older than the ledger keeps",
        ),
        (format!("/statements/{month}/nobody"), "unknown company"),
        (format!("/statements/{month}/nobody.csv"), "unknown company"),
        ("/statements/nope/acme".to_string(), "is not a month"),
    ] {
        let (status, _, body) = get(&run.base, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
}

#[tokio::test]
async fn companies_csv_takes_a_date_range_from_the_ledger() {
    let run = start_filled().await;
    let first = last_month().first_day();
    let (from, to) = (first + Days::days(2), first + Days::days(4));
    let (status, headers, body) =
        get(&run.base, &format!("/companies.csv?from={from}&to={to}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"openrouter-companies-{from}-to-{to}.csv\"").as_str()
    );
    let rows = csv_rows(&body);
    let total = rows.iter().find(|r| r["row"] == "total").unwrap();
    // Days 2–4: 2.5 + 0.333333333 + 0.000000007 + 12.125.
    assert_eq!(usd_nanos(&total["usage_usd"]), 14_958_333_340);
    assert_eq!(total["days"], "3");

    let today = Utc::now().date_naive();
    for (query, says) in [
        (format!("from={to}&to={from}"), "is after"),
        ("from=2025-1-01&to=2025-11-30".to_string(), "is not a date"),
        (format!("from={from}"), "to= is missing"),
        (
            "from=2000-01-01&to=2000-01-31".to_string(),
            "older than the ledger keeps",
        ),
        (
            format!("from={today}&to={}", today + Days::days(1)),
            "in the future",
        ),
    ] {
        let (status, _, body) = get(&run.base, &format!("/companies.csv?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    // Without a range: the snapshot's CSV as before (no refresh yet here).
    let (status, _, body) = get(&run.base, "/companies.csv").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no data yet"));
}

#[tokio::test]
async fn an_unavailable_ledger_is_503_and_metrics_keep_serving() {
    let reason = "ledger /data/ledger.sqlite3 is held by another process";
    let run = start(|_| LedgerAccess::Unavailable(reason.to_string())).await;
    let month = last_month();
    for path in [
        "/statements".to_string(),
        format!("/statements/{month}"),
        format!("/statements/{month}.csv"),
        format!("/statements/{month}/acme"),
        format!("/companies.csv?from={0}&to={0}", month.first_day()),
    ] {
        let (status, _, body) = get(&run.base, &path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("held by another process"), "{path}: {body}");
    }
    let (status, _, _) = get(&run.base, "/metrics").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_a_ledger_statements_are_not_found() {
    let run = start(|_| LedgerAccess::Off).await;
    let (status, _, body) = get(&run.base, "/statements").await;
    assert_eq!(status, 404);
    assert!(body.contains("no ledger configured"), "{body}");
    let (status, _, _) = get(&run.base, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_index_offers_a_date_range_form_and_the_nav_links_statements() {
    let run = start_filled().await;
    run.exporter.refresh().await.expect("refresh");
    let (status, headers, html) = get(&run.base, "/").await;
    assert_eq!(status, 200);
    assert!(html.contains("<form id=\"range\" method=\"get\" action=\"/companies.csv\""));
    assert!(html.contains("name=\"from\"") && html.contains("name=\"to\""));
    assert!(html.contains("<a href=\"/statements\">Statements</a>"));
    assert!(!html.contains("<script"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'self'"), "{csp}");
}
