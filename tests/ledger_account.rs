//! The statement's account line (issue #23, point 4), black-box: the
//! exporter reads the account-wide `/activity` (no `api_key_hash`) beside its
//! activity runs and records it in the ledger, so that a month's statement
//! CSV shows what OpenRouter billed (`account`) and the spend no key explains
//! (`unattributed`), to the nano-dollar; a failing account call leaves those
//! cells empty and fails nothing else; a day read before the 6 h re-read is
//! provisional and the re-read settles it; a restart reads the account again
//! only when the ledger lacks a day of it.
//!
//! The month is the one two months before today's (wholly past, so the
//! statement routes' own today makes it final once settled); the simulator's
//! `/activity` window and the exporter's clock move together across its end.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::ledger::{Ledger, Month};
use openrouter_cost_exporter::server::{serve, LedgerAccess, ServerOptions};
use openrouter_cost_exporter::sim::{SimKey, SimServer, SimState};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The key deleted after the first read (its rows stay the account's).
const GONE: usize = 3;
/// A key created and deleted between two listings: never listed, never read.
const NEVER_LISTED: &str = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";

fn month() -> Month {
    Month::of(Utc::now().date_naive()).previous().previous()
}

fn at(day: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    day.and_hms_opt(h, m, 0).unwrap().and_utc()
}

fn row(day: NaiveDate, model: &str, usage: f64) -> Value {
    json!({
        "date": format!("{day} 00:00:00"), "model": model, "model_permaslug": model,
        "endpoint_id": "e", "provider_name": "P", "usage": usage, "byok_usage_inference": 0.0,
        "requests": 3, "prompt_tokens": 30, "completion_tokens": 9, "reasoning_tokens": 0,
    })
}

/// Key `n`'s spend on `day`: up to 9 decimals, never twice the same.
fn usage(n: usize, day: NaiveDate) -> f64 {
    let k = (n as i64 * 31 + day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() / 86_400) % 97;
    (k + 1) as f64 * 0.000_123_457
}

/// acme-0 and globex-1 with rows of their own every day around the month,
/// acme-2 with the dense `activity_every_day` rows, acme-3 (deleted after
/// the first read) spending until the day before it; and a key never listed
/// that spent $1.25 on the 4th and $0.000000003 on the 21st of the month (and
/// once before it).
fn account() -> SimState {
    let mut state = empty_state();
    let first = month().first_day();
    let days = |from: NaiveDate, to: NaiveDate| from.iter_days().take_while(move |d| *d <= to);
    for n in 0..4 {
        let name = if n == 1 { "globex" } else { "acme" };
        state.keys.push(
            SimKey::new(WS_A, &hash(n), &format!("{name}-{n}")).usage(0.0, 0.0, 0.0, 1_000.0),
        );
    }
    let end = month().next().first_day();
    for n in [0, 1] {
        let rows = days(first - Days::days(25), end)
            .flat_map(|d| {
                [
                    row(d, "openai/gpt-4.1", usage(n, d)),
                    row(d, "mistral/small", 0.01),
                ]
            })
            .collect();
        state.activity.insert(hash(n), rows);
    }
    let gone = days(first - Days::days(25), first + Days::days(8))
        .map(|d| row(d, "openai/gpt-4.1", usage(GONE, d)))
        .collect();
    state.activity.insert(hash(GONE), gone);
    state.activity_every_day = vec![json!({
        "model": "mistral/small", "model_permaslug": "mistral/small", "endpoint_id": "e",
        "provider_name": "P", "usage": 0.010000001, "byok_usage_inference": 0.0,
        "requests": 1, "prompt_tokens": 10, "completion_tokens": 2, "reasoning_tokens": 0,
    })];
    let never_listed = vec![
        row(first - Days::days(2), "openai/gpt-4.1", 7.0),
        row(first + Days::days(3), "openai/gpt-4.1", 1.25),
        row(first + Days::days(20), "mistral/small", 0.000000003),
    ];
    state
        .activity
        .insert(NEVER_LISTED.to_string(), never_listed);
    state.total_usage = state.keys_lifetime_usage();
    state
}

fn activity_config(base_url: &str) -> Config {
    let yaml = format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {base_url}\n  request_timeout: 2s\n\
         activity:\n  enabled: true\n  concurrency: 8\n  calls_per_second: 1000\n\
         companies:\n  acme:\n    keys: [{{name_glob: 'acme-*'}}]\n\
         \x20 globex:\n    keys: [{{name_glob: 'globex-*'}}]\n"
    );
    Config::parse(&yaml, "ledger account test").expect("valid config")
}

/// The exporter with a ledger on `dir`, serving the statement routes.
struct Running {
    base: String,
    exporter: Exporter,
    shutdown: watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl Running {
    /// Stops the server and drops the exporter: the ledger's file is closed.
    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }
}

async fn start(sim: &SimServer, dir: &std::path::Path) -> Running {
    let ledger = Ledger::open(dir, 400).map(Arc::new);
    let exporter = exporter(activity_config(&sim.base_url())).with_ledger(ledger);
    let options = ServerOptions {
        ledger: LedgerAccess::Open(exporter.ledger().expect("the ledger is open")),
        ..ServerOptions::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, exporter.clone(), options, rx));
    Running {
        base: format!("http://{addr}"),
        exporter,
        shutdown,
        server: Some(server),
    }
}

/// One activity run at `now`, the simulator's window moved to `now`'s day
/// and the exporter listing the keys then. Returns the key calls planned.
async fn run_at(sim: &SimServer, exporter: &Exporter, now: DateTime<Utc>) -> usize {
    sim.state().today = Some(now.date_naive());
    exporter.set_clock(Arc::new(move || now));
    exporter.refresh().await.unwrap();
    // The ledger's chores record the listing (and departures), as every few minutes.
    exporter.refresh_ledger_at(now).await;
    exporter
        .refresh_activity_at(now)
        .await
        .expect("the activity run succeeds")
}

async fn get(url: &str, bearer: Option<&str>) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.text().await.unwrap()
}

/// The month's statement CSV, row kind (`company` rows by company) → columns.
async fn statement(run: &Running) -> HashMap<String, HashMap<String, String>> {
    let body = get(&format!("{}/statements/{}.csv", run.base, month()), None).await;
    let mut lines = body.split("\r\n").filter(|l| !l.is_empty());
    let header = csv_fields(lines.next().unwrap());
    lines
        .map(|line| {
            let cells: HashMap<String, String> =
                header.iter().cloned().zip(csv_fields(line)).collect();
            let kind = match cells["row"].as_str() {
                "company" | "unassigned" => cells["company"].clone(),
                other => other.to_string(),
            };
            (kind, cells)
        })
        .collect()
}

fn row_nanos(r: &Value) -> i128 {
    (r["usage"].as_f64().unwrap() * 1e9).round() as i128
}

fn day_of(r: &Value) -> NaiveDate {
    NaiveDate::parse_from_str(&r["date"].as_str().unwrap()[..10], "%Y-%m-%d").unwrap()
}

/// What the simulator's account endpoint serves when its today is `today`.
async fn account_answer(sim: &SimServer, today: NaiveDate) -> Vec<Value> {
    sim.state().today = Some(today);
    let body = get(
        &format!("{}/activity", sim.base_url()),
        Some(MANAGEMENT_KEY),
    )
    .await;
    let value: Value = serde_json::from_str(&body).unwrap();
    value["data"].as_array().unwrap().clone()
}

fn activity_requests(sim: &SimServer) -> Vec<String> {
    sim.state()
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/activity"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_account_line_ties_the_month_to_what_the_account_endpoint_served() {
    let sim = start_sim(account()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = start(&sim, dir.path()).await;
    let (first, next) = (month().first_day(), month().next().first_day());
    let early = first + Days::days(9);

    // The 10th: every key's 30 days (the 1st..9th of the month among them), and the account's.
    assert_eq!(run_at(&sim, &run.exporter, at(early, 12, 0)).await, 4);
    let requests = activity_requests(&sim);
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert!(requests.contains(&"/api/v1/activity".to_string()));
    // acme-3 is deleted (the next listing says so); its rows stay the account's.
    sim.state().keys.retain(|k| k.hash() != hash(GONE));
    let after = at(early, 13, 0);
    run.exporter.set_clock(Arc::new(move || after));
    run.exporter.refresh().await.unwrap();
    run.exporter.refresh_ledger_at(after).await;
    // The 1st of the next month, 07:00: the month's last 30 days, settled.
    assert_eq!(run_at(&sim, &run.exporter, at(next, 7, 0)).await, 3);

    // Each day of the month as the latest read covering it served it.
    let (answer_early, answer_next) = (
        account_answer(&sim, early).await,
        account_answer(&sim, next).await,
    );
    let window_starts = next - Days::days(30);
    let served: i128 = answer_early
        .iter()
        .filter(|r| month().days().contains(day_of(r)) && day_of(r) < window_starts)
        .chain(
            answer_next
                .iter()
                .filter(|r| month().days().contains(day_of(r))),
        )
        .map(row_nanos)
        .sum();

    // Which is every row the simulated account holds for the month: the
    // listed keys', the deleted key's, the never-listed key's, and acme-2's
    // dense $0.010000001 a day.
    let spent: i128 = sim
        .state()
        .activity
        .values()
        .flatten()
        .filter(|r| month().days().contains(day_of(r)))
        .map(row_nanos)
        .sum::<i128>()
        + 10_000_001 * i128::from(month().days().len());
    assert_eq!(served, spent);

    let csv = statement(&run).await;
    let account = &csv["account"];
    let total = usd_nanos(&csv["total"]["usage_usd"]);
    let days = month().days().len().to_string();
    eprintln!(
        "{}: account {} total {} unattributed {}",
        month(),
        account["usage_usd"],
        csv["total"]["usage_usd"],
        csv["unattributed"]["usage_usd"]
    );
    assert_eq!(
        usd_nanos(&account["usage_usd"]),
        served,
        "to the nano-dollar"
    );
    assert_eq!(
        (account["days_settled"].as_str(), account["status"].as_str()),
        (days.as_str(), "final")
    );
    // What no listed key explains: the never-listed key's $1.25 and $0.000000003.
    let unattributed = usd_nanos(&csv["unattributed"]["usage_usd"]);
    assert_eq!(unattributed, 1_250_000_003);
    assert_eq!(unattributed, usd_nanos(&account["usage_usd"]) - total);
    // The deleted key's days are its company's, not unattributed.
    let acme_keys: u32 = csv["acme"]["keys"].parse().unwrap();
    assert_eq!(acme_keys, 3);
}

#[tokio::test]
async fn a_failing_account_call_leaves_the_account_unknown_and_the_keys_recorded() {
    let mut state = account();
    state.account_activity_failure = Some(500);
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let run = start(&sim, dir.path()).await;
    let next = month().next().first_day();

    assert_eq!(run_at(&sim, &run.exporter, at(next, 7, 0)).await, 4);
    let samples = parse(&body(&run.exporter));
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
    let activity_failures = find(
        &samples,
        "openrouter_refresh_failures_total",
        &[("reason", "activity")],
    );
    assert!(activity_failures.iter().all(|s| s.value == 0.0));
    // Counted where every call is, under its endpoint and status.
    let failed = [("endpoint", "activity"), ("code", "500")];
    assert!(value(&samples, "openrouter_upstream_requests_total", &failed) >= 1.0);

    let csv = statement(&run).await;
    let window = next - Days::days(30);
    let covered = month().days().iter().filter(|d| *d >= window).count();
    let state = sim.state().clone();
    // acme-0's and acme-3's own rows, and acme-2's dense $0.010000001 a day.
    let acme: i128 = [0, GONE]
        .iter()
        .flat_map(|n| &state.activity[&hash(*n)])
        .filter(|r| day_of(r) >= window && month().days().contains(day_of(r)))
        .map(row_nanos)
        .sum::<i128>()
        + 10_000_001 * covered as i128;
    assert_eq!(
        usd_nanos(&csv["acme"]["usage_usd"]),
        acme,
        "the keys are recorded"
    );
    for (kind, column) in [
        ("account", "usage_usd"),
        ("account", "byok_usage_usd"),
        ("account", "requests"),
        ("unattributed", "usage_usd"),
    ] {
        assert_eq!(csv[kind][column], "", "{kind} {column}: unknown, not 0");
    }
    assert_eq!(csv["account"]["days_settled"], "0");

    // Upstream answers again: the next run reads the account alone, and the line fills in.
    sim.state().account_activity_failure = None;
    sim.state().requests.clear();
    assert_eq!(run_at(&sim, &run.exporter, at(next, 7, 30)).await, 0);
    assert_eq!(activity_requests(&sim), ["/api/v1/activity"]);
    let csv = statement(&run).await;
    assert_ne!(csv["account"]["usage_usd"], "");
    assert_eq!(csv["account"]["days_settled"], covered.to_string());
}

#[tokio::test]
async fn an_account_day_read_before_the_six_hour_re_read_is_provisional_until_it() {
    let sim = start_sim(account()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = start(&sim, dir.path()).await;
    let (first, next) = (month().first_day(), month().next().first_day());
    run_at(&sim, &run.exporter, at(first + Days::days(9), 12, 0)).await;
    let days = month().days().len();

    // 00:40: the month's last day ended 40 minutes ago.
    run_at(&sim, &run.exporter, at(next, 0, 40)).await;
    let csv = statement(&run).await;
    let account = &csv["account"];
    assert_eq!(account["days_settled"], (days - 1).to_string());
    assert_eq!(account["status"], "provisional");
    let provisional = usd_nanos(&account["usage_usd"]);

    // The same day's figure grows after the first read (late requests).
    let last = month().last_day();
    sim.state()
        .activity
        .get_mut(NEVER_LISTED)
        .unwrap()
        .push(row(last, "openai/gpt-4.1", 0.5));
    sim.state().requests.clear();
    run_at(&sim, &run.exporter, at(next, 6, 10)).await;
    assert!(activity_requests(&sim).contains(&"/api/v1/activity".to_string()));
    let csv = statement(&run).await;
    let account = &csv["account"];
    assert_eq!(account["days_settled"], days.to_string());
    assert_eq!(account["status"], "final");
    assert_eq!(usd_nanos(&account["usage_usd"]) - provisional, 500_000_000);
    assert_eq!(usd_nanos(&csv["unattributed"]["usage_usd"]), 1_750_000_003);
    // A provisional day that changes is no restatement.
    let samples = parse(&body(&run.exporter));
    assert_eq!(
        value(&samples, "openrouter_ledger_restatements_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn a_restart_reads_the_account_only_when_the_ledger_lacks_a_day_of_it() {
    let mut state = account();
    state.account_activity_failure = Some(503);
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let next = month().next().first_day();
    let first = start(&sim, dir.path()).await;
    assert_eq!(run_at(&sim, &first.exporter, at(next, 7, 0)).await, 4);
    first.stop().await;
    sim.state().account_activity_failure = None;
    sim.state().requests.clear();
    // Every key is restored; the account's days are not held: read at once.
    let second = start(&sim, dir.path()).await;
    assert_eq!(run_at(&sim, &second.exporter, at(next, 7, 5)).await, 0);
    assert_eq!(activity_requests(&sim), ["/api/v1/activity"]);
    second.stop().await;

    // Held now: a third start reads nothing.
    sim.state().requests.clear();
    let third = start(&sim, dir.path()).await;
    assert_eq!(run_at(&sim, &third.exporter, at(next, 7, 10)).await, 0);
    assert!(activity_requests(&sim).is_empty());
    let covered = month()
        .days()
        .iter()
        .filter(|d| *d >= next - Days::days(30))
        .count();
    assert_eq!(
        statement(&third).await["account"]["days_settled"],
        covered.to_string()
    );
}

/// The recorded live answer of an undated `/activity` (676 rows, 31 dates,
/// 2026-03-23 ..= 2026-04-22, captured 2026-04-23: account-wide) through the
/// client's account call into the ledger: April's account line is exactly
/// the rows of 1–22 April (the 31st day back left out), summed independently.
#[tokio::test]
async fn the_recorded_live_account_answer_lands_in_the_account_line_exactly() {
    use openrouter_cost_exporter::ledger::{AccountRead, DayRange};
    use openrouter_cost_exporter::sim::{Fault, FaultResponse};
    use openrouter_cost_exporter::telemetry::Telemetry;
    use openrouter_cost_exporter::upstream::Client;
    use secrecy::SecretString;

    let path = format!(
        "{}/tests/fixtures/observed/live-2026/activity.tokentop_recorded_2026-04.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let sample: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let body = sample["body"].to_string();
    let raw = sample["body"]["data"].as_array().unwrap().clone();
    let mut state = empty_state();
    state
        .faults
        .push(Fault::new("/activity", FaultResponse::Reply { status: 200, body }).times(1));
    let sim = start_sim(state).await;
    let client = Client::new(
        &sim.base_url(),
        SecretString::from(MANAGEMENT_KEY.to_string()),
        Duration::from_secs(5),
        fast_retry(),
        Arc::new(Telemetry::new()),
    )
    .unwrap();
    let rows = client.account_activity().await.unwrap();
    assert_eq!(rows.len(), 676);
    assert_eq!(activity_requests(&sim), ["/api/v1/activity"]);

    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let today = NaiveDate::from_ymd_opt(2026, 4, 23).unwrap();
    ledger
        .record_account(AccountRead {
            today,
            read_at: at(today, 7, 0),
            rows: &rows,
        })
        .unwrap();
    let april = DayRange {
        from: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
        to: NaiveDate::from_ymd_opt(2026, 4, 22).unwrap(),
    };
    let st = ledger.statement(april, today).unwrap();
    let in_april = |r: &&Value| april.contains(day_of(r));
    let usage: i128 = raw.iter().filter(in_april).map(row_nanos).sum();
    let requests: u64 = raw
        .iter()
        .filter(in_april)
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    eprintln!("live account, 1-22 April 2026: {}", st.account.usage);
    assert_eq!(st.account.usage.nanos(), usage);
    assert_eq!(usage, 302_259_096_000);
    assert_eq!(st.account.requests, requests);
    assert_eq!((st.account.days_read, st.account.days_settled), (22, 22));
    // No key was read: all of it is unattributed.
    assert_eq!(st.unattributed().map(|u| u.nanos()), Some(usage));
    // The 31st day back (23 March) is outside the window: not recorded.
    let march = DayRange {
        from: NaiveDate::from_ymd_opt(2026, 3, 23).unwrap(),
        to: NaiveDate::from_ymd_opt(2026, 3, 23).unwrap(),
    };
    assert_eq!(ledger.statement(march, today).unwrap().account.days_read, 0);
}
