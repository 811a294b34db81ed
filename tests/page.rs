//! The human pages (`/`, `/company/<name>`, `/companies.csv`) served by the
//! real server from the published snapshot: order, totals, budget states,
//! figures equal to `/metrics`, escaping of hostile names in HTML and CSV,
//! stale and failed data said in words, basic auth, Grafana links.

mod common;

use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::page;
use openrouter_cost_exporter::server::{serve, ServerOptions};
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimKey, SimServer, SimState};
use openrouter_cost_exporter::webconfig::WebConfig;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

const SCRIPT_KEY: &str = "<script>alert(1)</script>";
const QUOTES_KEY: &str = "Tom & Jerry's \"quotes\"";
const QUOTES_COMPANY: &str = "Smith & \"Sons\" <Ltd>";
const FORMULA_COMPANY: &str = "=SUM(A1:A9)";
const IMG_MODEL: &str = "<img src=x onerror=alert(2)>";
const FORMULA_MODEL: &str = "@HYPERLINK(\"http://evil.example\")";

/// acme: over its monthly budget (1100 of 1000); the quotes company at 85 %
/// of its budget; the formula company small; two unassigned keys (one named
/// like a script); 12.5 of account spend no listed key explains.
fn account() -> SimState {
    let mut state = empty_state();
    let expiring = (Utc::now() + ChronoDuration::days(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    state.keys = vec![
        SimKey::new(WS_A, &hash(1), "acme-production")
            .usage(10.0, 50.0, 900.0, 5000.0)
            .set("limit", json!(1000))
            .set("limit_remaining", json!(100))
            .set("limit_reset", json!("monthly")),
        SimKey::new(WS_A, &hash(2), "acme-batch")
            .usage(1.0, 20.0, 200.0, 300.0)
            .set("expires_at", json!(expiring)),
        SimKey::new(WS_B, &hash(3), "acme-old")
            .usage(0.0, 0.0, 0.0, 77.0)
            .set("disabled", json!(true)),
        SimKey::new(WS_A, &hash(4), QUOTES_KEY).usage(2.0, 10.0, 85.0, 99.123456789),
        SimKey::new(WS_B, &hash(5), "formula-key").usage(0.5, 1.0, 5.0, 6.0),
        SimKey::new(WS_A, &hash(6), SCRIPT_KEY).usage(1.0, 2.0, 3.0, 4.0),
        SimKey::new(WS_B, &hash(7), "+cmd|' /C calc'!A0").usage(0.1, 0.2, 0.3, 0.4),
    ];
    let today = Utc::now().date_naive();
    for (n, model) in [(1, IMG_MODEL), (1, "openai/gpt-4.1"), (5, FORMULA_MODEL)] {
        let rows = state.activity.entry(hash(n)).or_default();
        for back in 1..=3 {
            let date = (today - ChronoDuration::days(back))
                .format("%Y-%m-%d")
                .to_string();
            let usage = if model == IMG_MODEL { 2.0 } else { 1.0 };
            rows.push(json!({
                "date": date, "model": model, "model_permaslug": model,
                "endpoint_id": "e", "provider_name": "P", "usage": usage,
                "byok_usage_inference": 0.0, "requests": 10, "prompt_tokens": 1000,
                "completion_tokens": 300, "reasoning_tokens": 0,
            }));
        }
    }
    for n in 1..=7 {
        state.activity.entry(hash(n)).or_default();
    }
    state.total_credits = 10_000.0;
    state.total_usage = state.keys_lifetime_usage() + 12.5;
    state
}

fn yaml(base_url: &str, refresh: &str, stale_after: u32) -> String {
    let companies = format!(
        "\x20 acme:\n    keys: [{{name_glob: 'acme-*'}}]\n    budget_usd: {{daily: 100, monthly: 1000}}\n\
         \x20 \"Smith & \\\"Sons\\\" <Ltd>\":\n    keys: [{{hash: '{}'}}]\n    budget_usd: {{monthly: 100}}\n\
         \x20 \"=SUM(A1:A9)\":\n    keys: [formula-key]\n    budget_usd: {{weekly: 50}}\n",
        hash(4)
    );
    TestConfig::new(base_url)
        .refresh(refresh)
        .timeout("500ms")
        .extra(&format!("stale_after_intervals: {stale_after}\n"))
        .extra("activity:\n  enabled: true\n  refresh_interval: 1h\n  concurrency: 2\n  top_models: 5\n")
        .companies(&companies)
        .yaml()
}

struct Running {
    base: String,
    exporter: Exporter,
    sim: SimServer,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
    }
}

async fn start_with(
    refresh: &str,
    stale_after: u32,
    refreshed: bool,
    tweak: impl FnOnce(&mut ServerOptions),
) -> Running {
    let sim = start_sim(account()).await;
    let config = Config::parse(&yaml(&sim.base_url(), refresh, stale_after), "page test")
        .expect("valid config");
    let exporter = exporter(config);
    if refreshed {
        exporter.refresh().await.expect("refresh");
        exporter.refresh_activity().await.expect("activity");
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = ServerOptions::default();
    tweak(&mut options);
    let (shutdown, rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, exporter.clone(), options, rx));
    Running {
        base: format!("http://{addr}"),
        exporter,
        sim,
        shutdown,
        server,
    }
}

async fn start() -> Running {
    start_with("30s", 3, true, |_| {}).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap()
}

async fn get(base: &str, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = client().get(format!("{base}{path}")).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// The `<tr>` whose opening tag has `class="{class}" data-company="{name}"` (name HTML-escaped).
fn row<'a>(html: &'a str, class: &str, escaped_name: &str) -> &'a str {
    let marker = format!("<tr class=\"{class}\" data-company=\"{escaped_name}\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no row {marker} in\n{html}"));
    let end = html[start..].find("</tr>").expect("row end") + start;
    &html[start..end]
}

/// The exact amount in a row's cell for `window` (`data-usd`), `None` when shown as unknown.
fn usd(row: &str, window: &str) -> Option<String> {
    let marker = format!("data-window=\"{window}\"");
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {window} cell in {row}"));
    let rest = &row[at + marker.len()..];
    let cell = &rest[..rest.find('>').expect("tag end")];
    cell.strip_prefix(" data-usd=\"")
        .map(|v| v[..v.find('"').expect("quote")].to_string())
}

/// The `data-company` values of the rows in `<tbody class="companies">`, in order.
fn company_order(html: &str) -> Vec<String> {
    let start = html
        .find("<tbody class=\"companies\">")
        .expect("companies body");
    let end = html[start..].find("</tbody>").expect("tbody end") + start;
    html[start..end]
        .split("data-company=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

/// A minimal RFC 4180 reader: quoted fields with doubled quotes, CRLF records.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quote");
    assert!(field.is_empty() && record.is_empty(), "no final CRLF");
    records
}

#[tokio::test]
async fn the_companies_table_is_sorted_with_totals_budgets_and_metrics_figures() {
    let running = start().await;
    let (status, headers, html) = get(&running.base, "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script allowed: {csp}");

    // By this month's spend: acme 1100, the quotes company 85, the formula company 5.
    let quotes = page::escape_html(QUOTES_COMPANY);
    assert_eq!(
        company_order(&html),
        ["acme", quotes.as_str(), FORMULA_COMPANY]
    );

    // Budget bars at the alert thresholds, said in words.
    let acme = row(&html, "company", "acme");
    assert!(acme.contains("data-budget-state=\"over\""), "{acme}");
    assert!(
        acme.contains("<div class=\"budget over\" data-window=\"monthly\" data-ratio=\"1.1000\">"),
        "{acme}"
    );
    assert!(acme.contains("<strong>over budget</strong>"), "{acme}");
    assert!(
        acme.contains("width:100.0%"),
        "a bar never overflows: {acme}"
    );
    assert!(
        acme.contains("<div class=\"budget ok\" data-window=\"daily\""),
        "11 of 100 today: {acme}"
    );
    let q = row(&html, "company", &quotes);
    assert!(q.contains("data-budget-state=\"warning\""), "{q}");
    assert!(q.contains("<strong>nearly used up</strong>"), "{q}");
    assert!(q.contains("width:85.0%"), "{q}");

    // Keys, top model (the model mix is known), figures rounded to the cent.
    assert!(
        acme.contains("<td class=\"num\" data-label=\"Keys\">3</td>"),
        "{acme}"
    );
    assert!(acme.contains("$1,100.00"), "{acme}");
    assert!(
        acme.contains(&page::escape_html(IMG_MODEL)),
        "top model of acme: {acme}"
    );

    // Every company figure equals /metrics, exactly.
    let (_, _, metrics) = get(&running.base, "/metrics").await;
    let samples = parse(&metrics);
    for (name, class) in [
        ("acme", "company"),
        (QUOTES_COMPANY, "company"),
        (FORMULA_COMPANY, "company"),
        ("unassigned", "unassigned"),
    ] {
        let r = row(&html, class, &page::escape_html(name));
        for window in WINDOWS {
            let shown: f64 = usd(r, window)
                .unwrap_or_else(|| panic!("{name} {window} unknown"))
                .parse()
                .unwrap();
            let want = value(
                &samples,
                "openrouter_company_usage_usd",
                &[("company", name), ("window", window)],
            );
            assert_eq!(shown, want, "{name} {window}");
        }
    }
    // The unassigned keys and the unattributed spend have rows of their own.
    let unassigned = row(&html, "unassigned", "unassigned");
    assert_eq!(usd(unassigned, "monthly").as_deref(), Some("3.3"));
    let at = html
        .find("<tr class=\"unattributed\">")
        .expect("unattributed row");
    let unattributed = &html[at..at + html[at..].find("</tr>").unwrap()];
    assert_eq!(usd(unattributed, "lifetime").as_deref(), Some("12.5"));
    assert_eq!(usd(unattributed, "monthly"), None);
    assert_eq!(
        value(&samples, "openrouter_account_unattributed_usage_usd", &[]),
        12.5
    );
    // Totals: exact sums over every key.
    let at = html.find("<tr class=\"total\">").expect("total row");
    let total = &html[at..at + html[at..].find("</tr>").unwrap()];
    assert_eq!(usd(total, "monthly").as_deref(), Some("1193.3"));
    assert_eq!(usd(total, "lifetime").as_deref(), Some("5486.523456789"));
    assert!(
        total.contains("<td class=\"num\" data-label=\"Keys\">7</td>"),
        "{total}"
    );

    // Fresh data, last refresh result, links.
    assert!(html.contains("class=\"status ok\""), "{html}");
    assert!(html.contains("Last refresh <strong>succeeded</strong>"));
    for link in [
        "href=\"/metrics\"",
        "href=\"/healthz\"",
        "href=\"/readyz\"",
        "href=\"/companies.csv\"",
    ] {
        assert!(html.contains(link), "{link}");
    }
    assert!(
        !html.contains("Grafana"),
        "no Grafana link unless configured"
    );
    assert!(
        html.contains("$10,000.00 of credits bought"),
        "account line"
    );
    running.stop().await;
}

#[tokio::test]
async fn hostile_names_are_escaped_in_html_and_neutralised_in_csv() {
    let running = start().await;
    let (_, _, index) = get(&running.base, "/").await;
    let (status, _, unassigned) = get(&running.base, "/company/unassigned").await;
    assert_eq!(status, 200);
    let quotes_path = format!("/company/{}", page::percent_encode(QUOTES_COMPANY));
    assert!(index.contains(&format!("href=\"{quotes_path}\"")), "link");
    let (status, _, quotes) = get(&running.base, &quotes_path).await;
    assert_eq!(status, 200);
    let (status, _, acme) = get(&running.base, "/company/acme").await;
    assert_eq!(status, 200);
    let formula_path = format!("/company/{}", page::percent_encode(FORMULA_COMPANY));
    let (status, _, formula) = get(&running.base, &formula_path).await;
    assert_eq!(status, 200);

    for (name, html) in [
        ("/", &index),
        ("unassigned", &unassigned),
        ("quotes", &quotes),
        ("acme", &acme),
        ("formula", &formula),
    ] {
        let lower = html.to_lowercase();
        assert!(
            !lower.contains("<script"),
            "{name}: a script tag got through"
        );
        assert!(!lower.contains("<img"), "{name}: an img tag got through");
        assert!(!html.contains(MANAGEMENT_KEY), "{name}: the management key");
        assert!(!html.contains("TESTSECRET"), "{name}: part of the key");
    }
    assert!(unassigned.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(quotes.contains("Tom &amp; Jerry&#39;s &quot;quotes&quot;"));
    assert!(quotes.contains("<h1 id=\"company\">Smith &amp; &quot;Sons&quot; &lt;Ltd&gt;</h1>"));
    assert!(index.contains("Smith &amp; &quot;Sons&quot; &lt;Ltd&gt;</a>"));
    assert!(
        acme.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "model mix"
    );

    // The CSV: every field quoted where needed, formulas neutralised, exact dollars.
    let (status, headers, csv) = get(&running.base, "/companies.csv").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"openrouter-companies-"));
    assert!(!csv.contains(MANAGEMENT_KEY));
    let records = parse_csv(&csv);
    let header: Vec<&str> = page::CSV_HEADER.split(',').collect();
    assert_eq!(records[0], header);
    assert!(
        records.iter().all(|r| r.len() == header.len()),
        "{records:?}"
    );
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let find = |company: &str| {
        records
            .iter()
            .find(|r| r[col("company")] == company)
            .unwrap_or_else(|| panic!("no CSV row {company:?} in {records:?}"))
    };
    assert_eq!(find(QUOTES_COMPANY)[col("row")], "company");
    let formula_row = find(&format!("'{FORMULA_COMPANY}"));
    assert_eq!(
        formula_row[col("top_model")],
        format!("'{FORMULA_MODEL}"),
        "a model name starting with @ is neutralised"
    );
    assert_eq!(formula_row[col("budget_weekly_usd")], "50");
    for r in &records[1..] {
        for c in ["company", "top_model"] {
            assert!(
                !r[col(c)].starts_with(['=', '+', '-', '@']),
                "formula in {c}: {r:?}"
            );
        }
    }
    let acme_row = find("acme");
    assert_eq!(acme_row[col("monthly_usd")], "1100");
    assert_eq!(acme_row[col("budget_monthly_usd")], "1000");
    assert_eq!(acme_row[col("keys")], "3");
    assert_eq!(find(QUOTES_COMPANY)[col("lifetime_usd")], "99.123456789");
    assert_eq!(find("unassigned")[col("row")], "unassigned");
    let unattributed = records
        .iter()
        .find(|r| r[col("row")] == "unattributed")
        .unwrap();
    assert_eq!(unattributed[col("lifetime_usd")], "12.5");
    assert_eq!(unattributed[col("monthly_usd")], "");
    let total = records.iter().find(|r| r[col("row")] == "total").unwrap();
    assert_eq!(total[col("monthly_usd")], "1193.3");
    // Rows in the page's order.
    let order: Vec<&str> = records[1..4]
        .iter()
        .map(|r| r[col("company")].as_str())
        .collect();
    assert_eq!(order, ["acme", QUOTES_COMPANY, "'=SUM(A1:A9)"]);
    running.stop().await;
}

#[tokio::test]
async fn a_company_page_shows_its_keys_limits_states_and_model_mix() {
    let running = start().await;
    let (status, _, html) = get(&running.base, "/company/acme").await;
    assert_eq!(status, 200);
    // Keys by this month's spend.
    let keys_at = html.find("<table id=\"keys\">").expect("keys table");
    let keys = &html[keys_at..keys_at + html[keys_at..].find("</table>").unwrap()];
    let names: Vec<&str> = keys
        .split("<tr class=\"key\"")
        .skip(1)
        .map(|r| {
            let s = r.find("<th scope=\"row\">").unwrap() + 16;
            &r[s..s + r[s..].find("</th>").unwrap()]
        })
        .collect();
    assert_eq!(names, ["acme-production", "acme-batch", "acme-old"]);
    let production = keys.split("<tr class=\"key\"").nth(1).unwrap();
    assert!(
        production.contains("$1,000.00 <small>monthly</small>"),
        "{production}"
    );
    assert!(
        production.contains("data-usd=\"100\">$100.00</td>"),
        "remaining: {production}"
    );
    assert!(
        production.contains("<td data-label=\"State\">active</td>"),
        "{production}"
    );
    let batch = keys.split("<tr class=\"key\"").nth(2).unwrap();
    assert!(
        batch.contains("<span class=\"flag warning\">expires "),
        "{batch}"
    );
    assert!(batch.contains("no limit"), "{batch}");
    let old = keys.split("<tr class=\"key\"").nth(3).unwrap();
    assert!(
        old.contains("<span class=\"flag over\">disabled</span>"),
        "{old}"
    );
    assert!(old.contains(WS_B), "workspace: {old}");
    assert!(html.contains("<h2>Keys (3)</h2>"));

    // The model mix, biggest first, with shares.
    let models_at = html.find("<table id=\"models\">").expect("models table");
    let models = &html[models_at..];
    let img = models
        .find(&page::escape_html(IMG_MODEL))
        .expect("img model");
    let gpt = models.find("openai/gpt-4.1").expect("gpt model");
    assert!(img < gpt, "ordered by spend");
    assert!(
        models.contains("66.7 %") && models.contains("33.3 %"),
        "{models}"
    );
    // Its amounts are the last 30 completed days (today excluded), not the
    // rolling 30 days of the tables above, and say so on narrow screens too.
    let models = &models[..models.find("</table>").expect("models table end")];
    assert_eq!(
        models.matches("<tr class=\"model-row\"").count(),
        models
            .matches("data-label=\"30 completed days\" data-window=\"completed_30d\"")
            .count(),
        "{models}"
    );
    assert!(
        models.contains("data-label=\"30 completed days\""),
        "{models}"
    );
    assert!(!models.contains("rolling_30d"), "{models}");
    assert!(!models.contains("Last 30 days"), "{models}");

    // The Grafana link appears only when configured; an unknown company is a 404.
    assert!(!html.contains("Grafana"));
    let (status, _, missing) = get(&running.base, "/company/nobody").await;
    assert_eq!(status, 404);
    assert!(missing.contains("No company by this name"));
    assert_eq!(get(&running.base, "/company/%zz").await.0, 404);
    assert_eq!(get(&running.base, "/company/%FF").await.0, 404);
    running.stop().await;
}

#[tokio::test]
async fn grafana_links_when_configured() {
    let running = start_with("30s", 3, true, |o| {
        o.grafana_url = Some("https://grafana.example.com/".to_string());
    })
    .await;
    let (_, _, index) = get(&running.base, "/").await;
    assert!(
        index.contains("href=\"https://grafana.example.com/d/openrouter-overview\""),
        "{index}"
    );
    let (_, _, quotes) = get(
        &running.base,
        &format!("/company/{}", page::percent_encode(QUOTES_COMPANY)),
    )
    .await;
    assert!(
        quotes.contains(
            "href=\"https://grafana.example.com/d/openrouter-company?var-company=Smith%20%26%20%22Sons%22%20%3CLtd%3E\""
        ),
        "{quotes}"
    );
    running.stop().await;
}

#[tokio::test]
async fn no_data_failed_and_stale_are_said_in_words() {
    // Before the first refresh: nothing to show, and the CSV says so.
    let running = start_with("1s", 1, false, |_| {}).await;
    let (status, _, html) = get(&running.base, "/").await;
    assert_eq!(status, 200);
    assert!(html.contains("<strong>No data yet</strong>"), "{html}");
    assert!(!html.contains("<table"), "no table without data");
    let (status, _, text) = get(&running.base, "/companies.csv").await;
    assert_eq!(status, 503);
    assert!(text.contains("no data yet"));
    let (status, _, html) = get(&running.base, "/company/acme").await;
    assert_eq!(status, 200, "not the URL's fault");
    assert!(html.contains("No data yet"));

    // A failed refresh keeps the figures and says so.
    running.exporter.refresh().await.expect("refresh");
    running.sim.state().faults.push(Fault::new(
        "/keys",
        FaultResponse::Error {
            status: 401,
            retry_after: None,
        },
    ));
    assert!(running.exporter.refresh().await.is_err());
    let (_, _, html) = get(&running.base, "/").await;
    assert!(
        html.contains("Last refresh <strong>failed</strong>"),
        "{html}"
    );
    assert!(html.contains("data-company=\"acme\""), "figures kept");

    // Older than stale_after_intervals × refresh_interval (1 × 1 s): stale, in words.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, _, html) = get(&running.base, "/").await;
    assert!(html.contains("class=\"status stale\""), "{html}");
    assert!(html.contains("<strong>Stale data</strong>"), "{html}");
    running.stop().await;
}

#[tokio::test]
async fn the_pages_obey_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&path, format!("basic_auth_users:\n  finance: '{hash}'\n")).unwrap();
    let web = WebConfig::load(&path).expect("web config");
    let running = start_with("30s", 3, true, |o| o.web = web).await;
    for path in ["/", "/company/acme", "/companies.csv"] {
        let url = format!("{}{path}", running.base);
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} without credentials");
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("acme-production") && !body.contains("acme,"),
            "{path}"
        );
        let resp = client()
            .get(&url)
            .basic_auth("finance", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path} with credentials");
    }
    running.stop().await;
}

#[test]
fn the_bar_colours_are_the_alert_thresholds() {
    let thresholds = common::tools::read("prometheus/openrouter.thresholds.yml");
    let expr = |record: &str| {
        let at = thresholds
            .find(&format!("record: {record}"))
            .unwrap_or_else(|| panic!("{record}"));
        let rest = &thresholds[at..];
        let start = rest.find("vector(").unwrap() + 7;
        rest[start..start + rest[start..].find(')').unwrap()]
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(
        expr("openrouter:threshold:company_budget_warning_ratio"),
        page::BUDGET_WARNING_RATIO
    );
    assert_eq!(
        expr("openrouter:threshold:company_budget_critical_ratio"),
        page::BUDGET_CRITICAL_RATIO
    );
}

#[test]
fn a_grafana_url_that_is_not_http_is_refused_at_start() {
    for url in [
        "javascript:alert(1)",
        "grafana.example",
        "http://",
        "http://a b",
    ] {
        let out = std::process::Command::new(binary())
            .args(["--web.grafana-url", url, "demo", "--web.listen-address"])
            .arg("127.0.0.1:0")
            .env_remove("RUST_LOG")
            .output()
            .expect("run the binary");
        assert!(!out.status.success(), "{url} accepted");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("--web.grafana-url must be an http"),
            "{url}: {log}"
        );
    }
}
