//! Activity collection (rolling windows, model mix, caching, back-off) and
//! direct-key mode, against the simulated OpenRouter.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimKey, SimServer, SimState};
use serde_json::{json, Value};

const MODELS: [&str; 4] = [
    "openai/gpt-4.1",
    "anthropic/claude-sonnet-4",
    "google/gemini-2.5-flash",
    "mistral/small",
];

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn row(date: NaiveDate, model: &str, usage: f64, requests: u64) -> Value {
    json!({
        "date": date.format("%Y-%m-%d").to_string(), "model": model, "model_permaslug": model,
        "endpoint_id": "e", "provider_name": "P", "usage": usage, "byok_usage_inference": 0.0,
        "requests": requests, "prompt_tokens": requests * 10, "completion_tokens": requests * 3,
        "reasoning_tokens": requests,
    })
}

/// Three keys (two acme, one globex); key n spends (n+1) × (model index + 1) × 0.01 per day per model.
fn account() -> SimState {
    let mut state = empty_state();
    for (n, name) in ["acme-a", "acme-b", "globex-a"].iter().enumerate() {
        state
            .keys
            .push(SimKey::new(WS_A, &hash(n), name).usage(0.5 + n as f64, 3.0, 9.0, 100.0));
        let mut rows = Vec::new();
        for back in 1..=30 {
            let date = today() - ChronoDuration::days(back);
            for (m, model) in MODELS.iter().enumerate() {
                // acme-b uses every model, the others only the first two.
                if n != 1 && m > 1 {
                    continue;
                }
                rows.push(row(
                    date,
                    model,
                    (n + 1) as f64 * (m + 1) as f64 * 0.01,
                    (m + 1) as u64,
                ));
            }
        }
        state.activity.insert(hash(n), rows);
    }
    state.total_usage = state.keys_lifetime_usage();
    state
}

fn activity_config(base_url: &str, top_models: usize) -> Config {
    let yaml = format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {base_url}\n  request_timeout: 2s\n\
         activity:\n  enabled: true\n  refresh_interval: 1h\n  concurrency: 2\n  top_models: {top_models}\n\
         companies:\n  acme:\n    keys: [{{name_glob: 'acme-*'}}]\n  globex:\n    keys: [globex-a]\n"
    );
    Config::parse(&yaml, "activity test").expect("valid config")
}

/// Adds keys `names` (hashes from `first`), each with 0.25 of spend on the
/// first model `days_back` days ago.
fn add_keys_with_one_row(state: &mut SimState, first: usize, names: &[String], days_back: i64) {
    for (i, name) in names.iter().enumerate() {
        let n = first + i;
        state
            .keys
            .push(SimKey::new(WS_A, &hash(n), name).usage(0.1, 0.2, 0.3, 1.0));
        state.activity.insert(
            hash(n),
            vec![row(
                today() - ChronoDuration::days(days_back),
                MODELS[0],
                0.25,
                1,
            )],
        );
    }
    state.total_usage = state.keys_lifetime_usage();
}

/// A config with `activity` and `companies` blocks (their indented lines).
fn activity_yaml(base_url: &str, activity: &str, companies: &str) -> String {
    format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {base_url}\n  request_timeout: 2s\n\
         activity:\n{activity}companies:\n{companies}"
    )
}

/// Expected activity spend of key `n` over the last `days` completed days.
fn expected_completed(state: &SimState, n: usize, days: i64) -> f64 {
    let oldest = today() - ChronoDuration::days(days);
    state.activity[&hash(n)]
        .iter()
        .filter(|r| {
            let d = NaiveDate::parse_from_str(r["date"].as_str().unwrap(), "%Y-%m-%d").unwrap();
            d >= oldest
        })
        .map(|r| r["usage"].as_f64().unwrap())
        .sum()
}

#[tokio::test]
async fn rolling_windows_are_completed_days_plus_today() {
    let sim = start_sim(account()).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    // Before any activity run, rolling windows are absent, not zero.
    let samples = parse(&body(&exporter));
    assert_absent(
        &samples,
        "openrouter_key_usage_usd",
        &[("window", "rolling_7d")],
    );
    assert_absent(
        &samples,
        "openrouter_company_usage_usd",
        &[("window", "rolling_30d")],
    );

    let calls = exporter.refresh_activity().await.unwrap();
    assert_eq!(calls, 3, "first fill: one undated call per key");
    let samples = parse(&body(&exporter));
    let state = sim.state().clone();
    let mut company_7d = 0.0;
    for n in 0..3 {
        let daily = state.keys[n].num("usage_daily").unwrap();
        let r7 = value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key_hash", &hash(n)), ("window", "rolling_7d")],
        );
        let r30 = value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key_hash", &hash(n)), ("window", "rolling_30d")],
        );
        let want7 = expected_completed(&state, n, 6) + daily;
        let want30 = expected_completed(&state, n, 29) + daily;
        assert!(
            (r7 - want7).abs() < 1e-9,
            "key {n}: rolling_7d {r7} != {want7}"
        );
        assert!(
            (r30 - want30).abs() < 1e-9,
            "key {n}: rolling_30d {r30} != {want30}"
        );
        if n < 2 {
            company_7d += want7;
        }
    }
    let acme_7d = value(
        &samples,
        "openrouter_company_usage_usd",
        &[("company", "acme"), ("window", "rolling_7d")],
    );
    assert!((acme_7d - company_7d).abs() < 1e-9);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
    assert_eq!(value(&samples, "openrouter_activity_cached_keys", &[]), 3.0);
    for (state, n) in [
        ("complete", 3.0),
        ("pending", 0.0),
        ("failed", 0.0),
        ("gone", 0.0),
    ] {
        assert_eq!(
            value(&samples, "openrouter_activity_keys", &[("state", state)]),
            n,
            "{state}"
        );
    }
    if let Some(report) = promtool_check_metrics(&body(&exporter)) {
        assert!(report.trim().is_empty(), "{report}");
    }
}

#[tokio::test]
async fn model_mix_keeps_top_n_and_folds_the_rest_with_exact_sums() {
    let sim = start_sim(account()).await;
    let exporter = exporter(activity_config(&sim.base_url(), 2));
    exporter.refresh().await.unwrap();
    exporter.refresh_activity().await.unwrap();
    let samples = parse(&body(&exporter));
    let state = sim.state().clone();

    let acme = find(
        &samples,
        "openrouter_company_model_usage_usd",
        &[("company", "acme")],
    );
    let models: Vec<&str> = acme.iter().map(|s| s.labels["model"].as_str()).collect();
    assert_eq!(models.len(), 3, "top 2 plus other: {models:?}");
    assert!(models.contains(&"other"));
    // Per day: mistral 0.08, claude 0.06, gemini 0.06, gpt 0.03; the tie goes to the name first in order.
    assert_eq!(
        models,
        ["mistral/small", "anthropic/claude-sonnet-4", "other"]
    );
    let mix_total: f64 = acme.iter().map(|s| s.value).sum();
    let want = expected_completed(&state, 0, 30) + expected_completed(&state, 1, 30);
    assert!(
        (mix_total - want).abs() < 1e-9,
        "folding keeps the sum: {mix_total} vs {want}"
    );
    assert!(acme.iter().all(|s| s.labels["window"] == "completed_30d"));
    // The window names exactly one window: the models sum to the company's
    // completed_30d figure, for every company.
    for company in ["acme", "globex"] {
        let models: f64 = find(
            &samples,
            "openrouter_company_model_usage_usd",
            &[("company", company)],
        )
        .iter()
        .map(|s| s.value)
        .sum();
        let figure = value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", company), ("window", "completed_30d")],
        );
        assert!(
            (models - figure).abs() < 1e-9,
            "{company}: models {models} vs completed_30d {figure}"
        );
    }
    assert!(
        (value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "completed_30d")]
        ) - want)
            .abs()
            < 1e-9
    );

    // Requests and tokens fold the same way.
    let requests: f64 = find(
        &samples,
        "openrouter_company_model_requests",
        &[("company", "acme")],
    )
    .iter()
    .map(|s| s.value)
    .sum();
    // acme-a: models 1,2 → 3 requests/day; acme-b: models 1..4 → 10/day; 30 days.
    assert_eq!(requests, 30.0 * 13.0);
    let prompt: f64 = find(
        &samples,
        "openrouter_company_model_tokens",
        &[("company", "acme"), ("kind", "prompt")],
    )
    .iter()
    .map(|s| s.value)
    .sum();
    assert_eq!(prompt, 30.0 * 13.0 * 10.0);
    // globex uses two models: nothing to fold.
    let globex: BTreeMap<_, _> = find(
        &samples,
        "openrouter_company_model_usage_usd",
        &[("company", "globex")],
    )
    .iter()
    .map(|s| (s.labels["model"].clone(), s.value))
    .collect();
    assert_eq!(globex.len(), 2);
    assert!(!globex.contains_key("other"));
}

fn at(day: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    day.and_hms_opt(h, m, 0).unwrap().and_utc()
}

fn activity_requests(sim: &openrouter_cost_exporter::sim::SimServer) -> Vec<String> {
    sim.state()
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/activity"))
        .cloned()
        .collect()
}

/// Exactly `n` activity calls were made, each for the whole history (no `date=`).
fn assert_undated_calls(sim: &openrouter_cost_exporter::sim::SimServer, n: usize) {
    let requests = activity_requests(sim);
    assert_eq!(requests.len(), n, "{requests:?}");
    assert!(
        requests.iter().all(|r| !r.contains("date=")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn steady_state_is_one_call_per_key_per_new_day_plus_one_restatement_and_never_today() {
    let sim = start_sim(account()).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    let yesterday = today() - ChronoDuration::days(1);
    // The first fill happens "yesterday" at noon: 30 days before that, one undated call per key.
    assert_eq!(
        exporter
            .refresh_activity_at(at(yesterday, 12, 0))
            .await
            .unwrap(),
        3
    );
    sim.state().requests.clear();
    // Ten minutes after midnight: nothing yet, the day just ended may still grow.
    assert_eq!(
        exporter
            .refresh_activity_at(at(today(), 0, 10))
            .await
            .unwrap(),
        0
    );
    // Thirty minutes after midnight: the day that just completed, and the
    // 24 h re-read of the day before, in one undated call per key.
    assert_eq!(
        exporter
            .refresh_activity_at(at(today(), 0, 30))
            .await
            .unwrap(),
        3
    );
    assert_undated_calls(&sim, 3);
    // Nothing more until 6 h after midnight.
    sim.state().requests.clear();
    assert_eq!(
        exporter
            .refresh_activity_at(at(today(), 5, 0))
            .await
            .unwrap(),
        0
    );
    assert!(activity_requests(&sim).is_empty());
    // Then each key's history is read once more, for yesterday's late
    // corrections: undated again (the cache keeps no per-day rows).
    assert_eq!(
        exporter
            .refresh_activity_at(at(today(), 6, 10))
            .await
            .unwrap(),
        3
    );
    assert_undated_calls(&sim, 3);
    // Then nothing until the next day: 2 calls per key per day in all.
    sim.state().requests.clear();
    assert_eq!(
        exporter
            .refresh_activity_at(at(today(), 23, 50))
            .await
            .unwrap(),
        0
    );
    // Today's date is never asked for (the API answers 400 for it).
    let today_param = format!("date={}", today().format("%Y-%m-%d"));
    assert!(!sim
        .state()
        .requests
        .iter()
        .any(|r| r.contains(&today_param)));
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(
            &samples,
            "openrouter_activity_keys",
            &[("state", "complete")]
        ),
        3.0
    );
}

#[tokio::test]
async fn rate_limits_are_retried_and_a_failed_run_keeps_previous_data() {
    let sim = start_sim(account()).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    // One 429 with Retry-After: retried, the run succeeds.
    sim.state().faults.push(
        Fault::new(
            "/activity",
            FaultResponse::Error {
                status: 429,
                retry_after: Some(0),
            },
        )
        .times(1),
    );
    exporter.refresh_activity().await.expect("429 retried");
    let activity_calls = sim
        .state()
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/activity"))
        .count();
    assert_eq!(activity_calls, 4, "3 keys + 1 retry");
    let before = parse(&body(&exporter));
    let r7 = value(
        &before,
        "openrouter_company_usage_usd",
        &[("company", "acme"), ("window", "rolling_7d")],
    );

    // A new key appears and the activity API keeps refusing: the run fails for it.
    sim.state()
        .keys
        .push(SimKey::new(WS_A, &hash(9), "acme-new").usage(1.0, 1.0, 1.0, 1.0));
    sim.state().faults.push(Fault::new(
        "/activity",
        FaultResponse::Error {
            status: 429,
            retry_after: Some(0),
        },
    ));
    exporter.refresh().await.unwrap();
    assert!(exporter.refresh_activity().await.is_err());
    let after = parse(&body(&exporter));
    assert_eq!(value(&after, "openrouter_activity_up", &[]), 0.0);
    // The old keys keep their rolling figures; the company's is unknown while the new key has none.
    assert!(
        find(
            &after,
            "openrouter_key_usage_usd",
            &[("key_hash", &hash(0)), ("window", "rolling_7d")]
        )
        .len()
            == 1
    );
    assert_absent(
        &after,
        "openrouter_key_usage_usd",
        &[("key_hash", &hash(9)), ("window", "rolling_7d")],
    );
    assert_absent(
        &after,
        "openrouter_company_usage_usd",
        &[("company", "acme"), ("window", "rolling_7d")],
    );
    assert!(
        value(
            &after,
            "openrouter_refresh_failures_total",
            &[("reason", "activity")]
        ) >= 1.0
    );

    sim.state().faults.clear();
    exporter.refresh_activity().await.unwrap();
    let healed = parse(&body(&exporter));
    let r7_new = value(
        &healed,
        "openrouter_company_usage_usd",
        &[("company", "acme"), ("window", "rolling_7d")],
    );
    assert!(
        (r7_new - (r7 + 1.0)).abs() < 1e-9,
        "{r7_new} vs {r7} + today's 1.0 of the new key"
    );
}

#[tokio::test]
async fn direct_key_mode_reports_a_revoked_key_without_failing_the_others() {
    let mut state = SimState::new("unused-management-key");
    state
        .keys
        .push(SimKey::new(WS_A, &hash(1), "acme-direct").usage(1.0, 2.0, 3.0, 40.0));
    state.keys.push(
        SimKey::new(WS_A, &hash(2), "acme-direct-2")
            .usage(0.25, 0.5, 0.75, 5.0)
            .set("limit", json!(10.0))
            .set("limit_remaining", json!(9.25))
            .set("limit_reset", json!("monthly")),
    );
    state
        .inference_keys
        .insert("sk-or-v1-inference-one".into(), hash(1));
    state
        .inference_keys
        .insert("sk-or-v1-inference-two".into(), hash(2));
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    std::fs::write(&one, "sk-or-v1-inference-one\n").unwrap();
    std::fs::write(&two, "sk-or-v1-inference-two\n").unwrap();
    let yaml = format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {}\n  use_management_key: false\ncompanies:\n  acme:\n    keys:\n      - {{name: acme-direct, secret_file: {}}}\n      - {{name: acme-direct-2, secret_file: {}}}\n",
        sim.base_url(),
        one.display(),
        two.display()
    );
    let exporter = exporter(Config::parse(&yaml, "direct").unwrap());
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(&samples, "openrouter_key_up", &[("key", "acme-direct")]),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key_hash", "direct:acme-direct"), ("window", "lifetime")]
        ),
        40.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_key_limit_usd",
            &[("key", "acme-direct-2")]
        ),
        10.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        45.0
    );
    // No management API calls in direct-only mode, and no account figures.
    let requests = sim.state().requests.clone();
    assert!(requests.iter().all(|r| r == "/api/v1/key"), "{requests:?}");
    assert_absent(&samples, "openrouter_account_usage_usd", &[]);

    let first_success = value(
        &samples,
        "openrouter_last_refresh_success_timestamp_seconds",
        &[],
    );
    // The first key is revoked; the second keeps spending.
    sim.state().inference_keys.remove("sk-or-v1-inference-one");
    sim.state()
        .key_mut(&hash(2))
        .unwrap()
        .fields
        .insert("usage".into(), json!(6.0));
    exporter
        .refresh()
        .await
        .expect("a revoked direct key does not fail the refresh");
    let samples = parse(&body(&exporter));
    // The other figures are published, but the exporter is not fully up (issue 12).
    assert_eq!(value(&samples, "openrouter_up", &[]), 0.0);
    // Readiness follows the last full success, which did not advance: /readyz
    // turns 503 once that is stale_after_intervals old, as for any failure.
    assert_eq!(
        value(
            &samples,
            "openrouter_last_refresh_success_timestamp_seconds",
            &[]
        ),
        first_success
    );
    assert_eq!(
        value(&samples, "openrouter_key_up", &[("key", "acme-direct")]),
        0.0
    );
    assert_eq!(
        value(&samples, "openrouter_key_up", &[("key", "acme-direct-2")]),
        1.0
    );
    // The revoked key keeps its last good figures, flagged by key_up 0.
    assert_eq!(
        value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key", "acme-direct"), ("window", "lifetime")]
        ),
        40.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        46.0
    );
    let text = body(&exporter);
    assert!(
        !text.contains("sk-or-v1-inference"),
        "direct secrets never exported"
    );

    // A key revoked before it ever answered: key_up 0 and no invented figures.
    let fresh = common::exporter(Config::parse(&yaml, "direct").unwrap());
    fresh.refresh().await.unwrap();
    let samples = parse(&body(&fresh));
    assert_eq!(
        value(
            &samples,
            "openrouter_key_up",
            &[("key_hash", "direct:acme-direct")]
        ),
        0.0
    );
    assert_absent(
        &samples,
        "openrouter_key_usage_usd",
        &[("key", "acme-direct")],
    );
    assert_absent(
        &samples,
        "openrouter_company_usage_usd",
        &[("company", "acme")],
    );
}

#[tokio::test]
async fn a_direct_key_also_listed_is_counted_once() {
    let mut state = empty_state();
    state
        .keys
        .push(SimKey::new(WS_A, &hash(1), "acme-listed").usage(1.0, 2.0, 3.0, 40.0));
    state
        .inference_keys
        .insert("sk-or-v1-inference-one".into(), hash(1));
    state.total_usage = 40.0;
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    std::fs::write(&one, "sk-or-v1-inference-one").unwrap();
    let companies = format!(
        "  acme:\n    keys:\n      - acme-listed\n      - {{name: acme-direct, secret_file: {}}}\n",
        one.display()
    );
    let exporter = exporter(config(&sim.base_url(), &companies));
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        40.0
    );
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        1.0
    );
    assert_eq!(
        value(&samples, "openrouter_account_unattributed_usage_usd", &[]),
        0.0
    );
}

#[test]
fn direct_key_config_errors_are_clear() {
    let cases = [
        ("companies:\n  a:\n    keys: [{name: x, secret_env: A, secret_file: /b}]\n", "not both"),
        ("companies:\n  a:\n    keys: [{secret_env: A}]\n", "needs a name"),
        ("companies:\n  a:\n    keys: [{name: x, secret_env: A, extra: 1}]\n", "unknown field \"extra\""),
        ("companies:\n  a:\n    keys: [{name: x, secret_env: sk-or-v1-abc}]\n", "looks like a key"),
        ("openrouter:\n  use_management_key: false\ncompanies:\n  a:\n    keys: [x]\n", "nothing to poll"),
        (
            "openrouter:\n  use_management_key: false\nactivity:\n  enabled: true\ncompanies:\n  a:\n    keys: [{name: x, secret_env: A}]\n",
            "activity API needs a management key",
        ),
        ("activity:\n  enabled: true\n  refresh_interval: 10s\ncompanies:\n  a:\n    keys: [x]\n", "activity.refresh_interval"),
        (
            "companies:\n  a:\n    keys: [dup]\n  b:\n    keys: [{name: dup, secret_env: B}]\n",
            "already claimed by company \"a\"",
        ),
    ];
    for (yaml, want) in cases {
        let err = Config::parse(yaml, "t").unwrap_err().to_string();
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

// ------------------------------------------------------------ issue 13

fn rolling(samples: &[Sample], what: &str, labels: &[(&str, &str)], window: &str) -> Option<f64> {
    let mut want = labels.to_vec();
    want.push(("window", window));
    find(samples, what, &want).first().map(|s| s.value)
}

fn key_rolling(samples: &[Sample], n: usize, window: &str) -> Option<f64> {
    rolling(
        samples,
        "openrouter_key_usage_usd",
        &[("key_hash", &hash(n))],
        window,
    )
}

fn company_rolling(samples: &[Sample], company: &str, window: &str) -> Option<f64> {
    rolling(
        samples,
        "openrouter_company_usage_usd",
        &[("company", company)],
        window,
    )
}

fn keys_state(samples: &[Sample], state: &str) -> f64 {
    value(samples, "openrouter_activity_keys", &[("state", state)])
}

/// Rolling_7d of key n as the upstream rows say.
fn want_7d(state: &SimState, n: usize) -> f64 {
    expected_completed(state, n, 6) + state.keys[n].num("usage_daily").unwrap()
}

#[test]
fn activity_is_on_by_default_with_a_management_key() {
    let on = Config::parse("companies:\n  a:\n    keys: [x]\n", "t").unwrap();
    assert!(on.activity.enabled);
    assert_eq!(on.activity.calls_per_second, 10);
    let off = Config::parse(
        "activity:\n  enabled: false\ncompanies:\n  a:\n    keys: [x]\n",
        "t",
    )
    .unwrap();
    assert!(!off.activity.enabled);
    let direct = Config::parse(
        "openrouter:\n  use_management_key: false\ncompanies:\n  a:\n    keys: [{name: x, secret_env: A}]\n",
        "t",
    )
    .unwrap();
    assert!(
        !direct.activity.enabled,
        "no management key: nothing to ask"
    );
    let err = Config::parse(
        "activity:\n  calls_per_second: 0\ncompanies:\n  a:\n    keys: [x]\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("activity.calls_per_second"), "{err}");
}

#[tokio::test]
async fn one_failing_key_never_discards_the_others_and_is_retried_alone() {
    let sim = start_sim(account()).await;
    sim.state().activity_failures.insert(hash(2), 500);
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    let err = exporter.refresh_activity().await.unwrap_err();
    assert_eq!(err.reason(), "server_error");
    let samples = parse(&body(&exporter));
    let state = sim.state().clone();
    // acme's two keys are complete: their rolling windows and acme's total are published.
    for n in 0..2 {
        let got = key_rolling(&samples, n, "rolling_7d").expect("kept");
        assert!((got - want_7d(&state, n)).abs() < 1e-9);
    }
    let acme = company_rolling(&samples, "acme", "rolling_7d").unwrap();
    assert!((acme - want_7d(&state, 0) - want_7d(&state, 1)).abs() < 1e-9);
    // globex's only key failed: nothing for it, and no zero.
    assert_eq!(key_rolling(&samples, 2, "rolling_7d"), None);
    assert_eq!(company_rolling(&samples, "globex", "rolling_7d"), None);
    assert_eq!(company_rolling(&samples, "globex", "completed_30d"), None);
    assert_absent(
        &samples,
        "openrouter_company_model_usage_usd",
        &[("company", "globex")],
    );
    assert_eq!(keys_state(&samples, "complete"), 2.0);
    assert_eq!(keys_state(&samples, "failed"), 1.0);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 0.0);

    // Healed: the next run asks only for the failed key.
    sim.state().activity_failures.clear();
    sim.state().requests.clear();
    assert_eq!(exporter.refresh_activity().await.unwrap(), 1);
    let requests = activity_requests(&sim);
    assert!(
        requests.len() == 1 && requests[0].contains(&hash(2)),
        "{requests:?}"
    );
    let samples = parse(&body(&exporter));
    let globex = company_rolling(&samples, "globex", "rolling_7d").unwrap();
    assert!((globex - want_7d(&state, 2)).abs() < 1e-9);
    assert_eq!(keys_state(&samples, "complete"), 3.0);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
}

#[tokio::test]
async fn a_key_deleted_after_the_listing_is_gone_not_a_failure() {
    let sim = start_sim(account()).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    // acme-b is deleted between the listing and its activity call: 404.
    {
        let mut st = sim.state();
        st.keys.retain(|k| k.hash() != hash(1));
        st.activity.remove(&hash(1));
    }
    let calls = exporter
        .refresh_activity()
        .await
        .expect("a 404 is not a failure");
    assert_eq!(calls, 3);
    let samples = parse(&body(&exporter));
    assert_eq!(keys_state(&samples, "gone"), 1.0);
    assert_eq!(keys_state(&samples, "complete"), 2.0);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "openrouter_refresh_failures_total",
            &[("reason", "activity")]
        ),
        0.0
    );
    // acme still lists the gone key: its total is absent, never partial.
    assert_eq!(company_rolling(&samples, "acme", "rolling_7d"), None);
    assert!(key_rolling(&samples, 0, "rolling_7d").is_some());
    // The next listing drops it: acme's total is back, exact, with no new call.
    exporter.refresh().await.unwrap();
    sim.state().requests.clear();
    assert_eq!(exporter.refresh_activity().await.unwrap(), 0);
    let samples = parse(&body(&exporter));
    let state = sim.state().clone();
    let acme = company_rolling(&samples, "acme", "rolling_7d").unwrap();
    assert!((acme - want_7d(&state, 0)).abs() < 1e-9);
    assert_eq!(keys_state(&samples, "gone"), 0.0);
}

/// Live dates carry a time part and counts come as null: the figures are
/// still exactly the upstream rows.
#[tokio::test]
async fn timestamp_dates_and_null_counts_give_exact_windows() {
    let mut state = account();
    for rows in state.activity.values_mut() {
        for row in rows.iter_mut() {
            let date = row["date"].as_str().unwrap().to_string();
            row["date"] = json!(format!("{date} 00:00:00"));
            row["reasoning_tokens"] = Value::Null;
            row["byok_usage_inference"] = Value::Null;
        }
    }
    let sim = start_sim(state).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    exporter.refresh_activity().await.unwrap();
    let samples = parse(&body(&exporter));
    let state = sim.state().clone();
    let strip = |s: &SimState, n: usize, days: i64| {
        let oldest = today() - ChronoDuration::days(days);
        s.activity[&hash(n)]
            .iter()
            .filter(|r| {
                NaiveDate::parse_from_str(&r["date"].as_str().unwrap()[..10], "%Y-%m-%d").unwrap()
                    >= oldest
            })
            .map(|r| r["usage"].as_f64().unwrap())
            .sum::<f64>()
    };
    for n in 0..3 {
        let daily = state.keys[n].num("usage_daily").unwrap();
        let got = key_rolling(&samples, n, "rolling_30d").unwrap();
        let want = strip(&state, n, 29) + daily;
        assert!((got - want).abs() < 1e-9, "key {n}: {got} vs {want}");
        assert!(want > daily, "the history is not a zero");
    }
    let reasoning: f64 = find(
        &samples,
        "openrouter_company_model_tokens",
        &[("kind", "reasoning")],
    )
    .iter()
    .map(|s| s.value)
    .sum();
    assert_eq!(reasoning, 0.0, "null reasoning counts as none");
}

#[tokio::test]
async fn an_unreadable_row_leaves_its_key_unknown_never_zero() {
    let mut state = account();
    let rows = state.activity.get_mut(&hash(2)).unwrap();
    rows[0]["date"] = json!("yesterday");
    let sim = start_sim(state).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    assert!(exporter.refresh_activity().await.is_err());
    let samples = parse(&body(&exporter));
    assert_eq!(key_rolling(&samples, 2, "rolling_7d"), None);
    assert_eq!(company_rolling(&samples, "globex", "rolling_30d"), None);
    assert!(key_rolling(&samples, 0, "rolling_7d").is_some());
    assert_eq!(keys_state(&samples, "failed"), 1.0);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 0.0);
    assert!(
        value(
            &samples,
            "openrouter_refresh_failures_total",
            &[("reason", "activity")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_restated_day_replaces_the_earlier_figure_and_a_restart_counts_nothing_twice() {
    let sim = start_sim(account()).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    exporter
        .refresh_activity_at(at(today(), 0, 10))
        .await
        .unwrap();
    let yesterday = (today() - ChronoDuration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    // Upstream settles yesterday later: acme-a's first model gets 0.75 more.
    {
        let mut st = sim.state();
        let rows = st.activity.get_mut(&hash(0)).unwrap();
        let row = rows
            .iter_mut()
            .find(|r| r["date"] == yesterday.as_str() && r["model"] == MODELS[0])
            .unwrap();
        let usage = row["usage"].as_f64().unwrap();
        row["usage"] = json!(usage + 0.75);
    }
    let before = key_rolling(&parse(&body(&exporter)), 0, "rolling_7d").unwrap();
    exporter
        .refresh_activity_at(at(today(), 6, 10))
        .await
        .unwrap();
    let samples = parse(&body(&exporter));
    let state = sim.state().clone();
    let after = key_rolling(&samples, 0, "rolling_7d").unwrap();
    assert!((after - want_7d(&state, 0)).abs() < 1e-9);
    assert!((after - before - 0.75).abs() < 1e-9, "{before} → {after}");
    // The model mix follows, and still sums to completed_30d.
    let mix: f64 = find(
        &samples,
        "openrouter_company_model_usage_usd",
        &[("company", "acme")],
    )
    .iter()
    .map(|s| s.value)
    .sum();
    let figure = company_rolling(&samples, "acme", "completed_30d").unwrap();
    assert!((mix - figure).abs() < 1e-9);
    assert!(
        (figure - expected_completed(&state, 0, 30) - expected_completed(&state, 1, 30)).abs()
            < 1e-9
    );

    // A restart refills from nothing: the same figures, nothing counted twice.
    let restarted = common::exporter(activity_config(&sim.base_url(), 10));
    restarted.refresh().await.unwrap();
    restarted.refresh_activity().await.unwrap();
    let again = parse(&body(&restarted));
    for n in 0..3 {
        assert_eq!(
            key_rolling(&again, n, "rolling_30d"),
            key_rolling(&samples, n, "rolling_30d")
        );
    }
    assert_eq!(
        company_rolling(&again, "acme", "completed_30d"),
        Some(figure)
    );
}

/// An activity run as of yesterday, published with a listing of today (the
/// run straddled midnight): today's snapshot needs yesterday, which that run
/// could not cover, so the windows are absent, never yesterday counted twice.
#[tokio::test]
async fn a_run_that_straddles_midnight_never_counts_a_day_twice() {
    let sim = start_sim(account()).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    let yesterday = today() - ChronoDuration::days(1);
    exporter
        .refresh_activity_at(at(yesterday, 23, 59))
        .await
        .unwrap();
    let samples = parse(&body(&exporter));
    for n in 0..3 {
        assert_eq!(key_rolling(&samples, n, "rolling_7d"), None);
    }
    assert_eq!(company_rolling(&samples, "acme", "completed_30d"), None);
    // The next run fetches the missing day: exact figures.
    exporter.refresh_activity().await.unwrap();
    let samples = parse(&body(&exporter));
    let state = sim.state().clone();
    for n in 0..3 {
        let got = key_rolling(&samples, n, "rolling_7d").unwrap();
        assert!((got - want_7d(&state, n)).abs() < 1e-9);
    }
}

/// The companies of [`twelve_keys_listed`]: acme's keys by glob, globex-a.
const TWELVE_KEYS_COMPANIES: &str =
    "  acme:\n    keys: [{name_glob: 'acme-*'}]\n  globex:\n    keys: [globex-a]\n";

/// The account with nine more acme keys of one row each (12 keys), listed
/// once by an exporter whose `activity:` section has `settings`.
async fn twelve_keys_listed(settings: &str) -> (SimServer, Exporter) {
    let mut state = account();
    let names: Vec<String> = (3..12).map(|n| format!("acme-{n}")).collect();
    add_keys_with_one_row(&mut state, 3, &names, 3);
    let sim = start_sim(state).await;
    let yaml = activity_yaml(&sim.base_url(), settings, TWELVE_KEYS_COMPANIES);
    let exporter = exporter(Config::parse(&yaml, "t").unwrap());
    exporter.refresh().await.unwrap();
    (sim, exporter)
}

#[tokio::test]
async fn the_fill_is_rate_limited_and_never_blocks_the_listing() {
    let (_sim, exporter) = twelve_keys_listed("  calls_per_second: 4\n  concurrency: 8\n").await;
    let started = std::time::Instant::now();
    let fill = tokio::spawn({
        let exporter = exporter.clone();
        async move { exporter.refresh_activity().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // The listing goes on while the fill runs, and shows its progress.
    let listed = std::time::Instant::now();
    exporter.refresh().await.unwrap();
    assert!(listed.elapsed() < std::time::Duration::from_secs(1));
    let samples = parse(&body(&exporter));
    let (complete, pending) = (
        keys_state(&samples, "complete"),
        keys_state(&samples, "pending"),
    );
    assert_eq!(complete + pending, 12.0);
    assert!(pending > 0.0 && complete > 0.0, "{complete} / {pending}");
    assert_eq!(fill.await.unwrap().unwrap(), 12);
    // 12 calls at 4 per second: the last starts 2.75 s after the first.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(2700),
        "{:?}",
        started.elapsed()
    );
    let samples = parse(&body(&exporter));
    assert_eq!(keys_state(&samples, "complete"), 12.0);
    assert!(company_rolling(&samples, "acme", "rolling_30d").is_some());
}

/// A long fill or a new day's pass reads company by company (in the order the
/// last refresh attributed them), so each company's totals, which wait for
/// all its keys, appear as early as they can.
#[tokio::test]
async fn keys_are_read_company_by_company() {
    let mut state = empty_state();
    // Listed interleaved: globex, acme, globex, acme.
    let names = ["globex-a", "acme-a", "globex-b", "acme-b"].map(String::from);
    add_keys_with_one_row(&mut state, 0, &names, 1);
    let sim = start_sim(state).await;
    let yaml = activity_yaml(
        &sim.base_url(),
        "  concurrency: 1\n",
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n  globex:\n    keys: [{name_glob: 'globex-*'}]\n",
    );
    let exporter = exporter(Config::parse(&yaml, "t").unwrap());
    exporter.refresh().await.unwrap();
    assert_eq!(exporter.refresh_activity().await.unwrap(), 4);
    let order: Vec<String> = activity_requests(&sim)
        .iter()
        .map(|r| {
            let at = r.find("api_key_hash=").expect("a key hash") + "api_key_hash=".len();
            r[at..].split('&').next().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(order, [hash(1), hash(3), hash(0), hash(2)]);
}

/// An answer that arrives after UTC midnight is no answer for the day the run
/// was planned on (upstream's 30 days have moved on): the run stops, nothing
/// is recorded, and the next run reads the new day.
#[tokio::test]
async fn answers_after_midnight_are_left_to_the_next_run() {
    let mut state = account();
    state.latency = std::time::Duration::from_millis(400);
    let sim = start_sim(state).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    let yesterday = today() - ChronoDuration::days(1);
    let just_before_midnight = yesterday
        .and_hms_milli_opt(23, 59, 59, 900)
        .unwrap()
        .and_utc();
    sim.state().requests.clear();
    assert_eq!(
        exporter
            .refresh_activity_at(just_before_midnight)
            .await
            .unwrap(),
        3,
        "planned"
    );
    let samples = parse(&body(&exporter));
    assert_eq!(keys_state(&samples, "complete"), 0.0);
    assert_eq!(keys_state(&samples, "pending"), 3.0);
    assert_eq!(keys_state(&samples, "failed"), 0.0);
    assert!(
        activity_requests(&sim).len() < 3,
        "the run stopped at midnight: {:?}",
        activity_requests(&sim)
    );
    // The next run (today) reads every key: exact figures.
    exporter.refresh_activity().await.unwrap();
    let samples = parse(&body(&exporter));
    let state = sim.state().clone();
    for n in 0..3 {
        let got = key_rolling(&samples, n, "rolling_7d").unwrap();
        assert!((got - want_7d(&state, n)).abs() < 1e-9);
    }
}

// ------------------------------------------------------------ issue 22

/// The exporter's clock stands still at `t` (its listings are taken then).
fn set_time(exporter: &openrouter_cost_exporter::exporter::Exporter, t: DateTime<Utc>) {
    exporter.set_clock(std::sync::Arc::new(move || t));
}

/// Every `/activity` call (`times` of them) answers these rows.
fn answer_rows(rows: Vec<Value>, times: u32) -> Fault {
    let body = json!({ "data": rows }).to_string();
    Fault::new("/activity", FaultResponse::Reply { status: 200, body }).times(times)
}

/// One row of `usage` for each of `days` (days back from `today`).
fn rows_back(today: NaiveDate, days: impl IntoIterator<Item = i64>, usage: f64) -> Vec<Value> {
    days.into_iter()
        .map(|back| row(today - ChronoDuration::days(back), MODELS[0], usage, 1))
        .collect()
}

fn failures(samples: &[Sample]) -> f64 {
    value(
        samples,
        "openrouter_refresh_failures_total",
        &[("reason", "activity")],
    )
}

/// Until upstream's window rolls over after midnight, its answer covers the
/// 30 days ending the day before yesterday: a 31st day back and nothing for
/// yesterday. Such keys stay pending (not failed) and are read again; once
/// any answer shows yesterday, the same shape is a key idle yesterday. The
/// simulator serves the days before its own (real) today, so to an exporter
/// whose clock says tomorrow it is a window one day behind.
#[tokio::test]
async fn a_window_not_rolled_over_leaves_keys_pending_until_it_has() {
    let sim = start_sim(account()).await;
    let yaml = activity_yaml(
        &sim.base_url(),
        "  concurrency: 1\n",
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n  globex:\n    keys: [globex-a]\n",
    );
    let exporter = exporter(Config::parse(&yaml, "t").unwrap());
    let tomorrow = today() + ChronoDuration::days(1);
    set_time(&exporter, at(tomorrow, 0, 40));
    exporter.refresh().await.unwrap();
    let calls = exporter
        .refresh_activity_at(at(tomorrow, 0, 40))
        .await
        .expect("a lagging window is no failure");
    assert_eq!(calls, 3);
    let samples = parse(&body(&exporter));
    assert_eq!(keys_state(&samples, "pending"), 3.0);
    assert_eq!(keys_state(&samples, "complete"), 0.0);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
    assert_eq!(failures(&samples), 0.0);
    assert_eq!(
        key_rolling(&samples, 0, "rolling_7d"),
        None,
        "never a day short"
    );
    assert_eq!(company_rolling(&samples, "acme", "completed_30d"), None);

    // Upstream has rolled over: the first answer has 31 dates (a 31st day
    // back) and a partial today; the two others show keys idle yesterday
    // with a 31st day back, which are complete now too.
    let rolled = rows_back(tomorrow, 0..=31, 1.0);
    let mut idle = rows_back(tomorrow, [31], 1.0);
    idle.extend(rows_back(tomorrow, [5], 2.0));
    sim.state().faults.push(answer_rows(rolled, 1));
    sim.state().faults.push(answer_rows(idle, 2));
    set_time(&exporter, at(tomorrow, 0, 50));
    exporter.refresh().await.unwrap();
    assert_eq!(
        exporter
            .refresh_activity_at(at(tomorrow, 0, 50))
            .await
            .unwrap(),
        3,
        "the pending keys are read again"
    );
    let samples = parse(&body(&exporter));
    assert_eq!(keys_state(&samples, "complete"), 3.0);
    let state = sim.state().clone();
    let mut completed_7d: Vec<f64> = (0..3)
        .map(|n| {
            let daily = state.keys[n].num("usage_daily").unwrap();
            let got = key_rolling(&samples, n, "rolling_7d").unwrap() - daily;
            (got * 1e6).round() / 1e6
        })
        .collect();
    completed_7d.sort_by(f64::total_cmp);
    assert_eq!(completed_7d, [2.0, 2.0, 6.0], "the 6 completed days only");

    // Six hours on, that shape is no lag but a key idle yesterday, even with
    // no answer to show yesterday.
    let later = common::exporter(Config::parse(&yaml, "t").unwrap());
    set_time(&later, at(tomorrow, 6, 10));
    later.refresh().await.unwrap();
    later
        .refresh_activity_at(at(tomorrow, 6, 10))
        .await
        .unwrap();
    assert_eq!(keys_state(&parse(&body(&later)), "complete"), 3.0);
}

/// An upstream that ignores `api_key_hash` would give every key the whole
/// account's rows: 30 days that cost more than the key ever did.
#[tokio::test]
async fn thirty_days_costing_more_than_the_lifetime_usage_fail_the_key_loudly() {
    let mut state = account();
    state
        .activity
        .insert(hash(2), rows_back(today(), 1..=30, 10.0));
    let sim = start_sim(state).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    set_time(&exporter, at(today(), 12, 0));
    exporter.refresh().await.unwrap();
    let err = exporter
        .refresh_activity_at(at(today(), 12, 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lifetime usage"), "{err}");
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 0.0);
    assert_eq!(failures(&samples), 1.0);
    assert_eq!(keys_state(&samples, "failed"), 1.0);
    assert_eq!(keys_state(&samples, "complete"), 2.0);
    assert_eq!(key_rolling(&samples, 2, "rolling_7d"), None);
    assert_eq!(company_rolling(&samples, "globex", "rolling_7d"), None);
    assert!(company_rolling(&samples, "acme", "rolling_7d").is_some());
}

#[tokio::test]
async fn a_healthy_first_fill_is_up_and_a_failing_one_is_down_at_once() {
    let settings = "  calls_per_second: 4\n  concurrency: 8\n";
    let (sim, exporter) = twelve_keys_listed(settings).await;
    assert_eq!(
        value(&parse(&body(&exporter)), "openrouter_activity_up", &[]),
        0.0,
        "no run yet"
    );
    let fill = tokio::spawn({
        let exporter = exporter.clone();
        async move { exporter.refresh_activity().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert!(keys_state(&samples, "pending") > 0.0);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
    assert_eq!(fill.await.unwrap().unwrap(), 12);

    // A new fill (a restart) whose calls fail: down as soon as one has.
    sim.state()
        .activity_failures
        .extend((0..12).map(|n| (hash(n), 500)));
    let yaml = activity_yaml(&sim.base_url(), settings, TWELVE_KEYS_COMPANIES);
    let restarted = common::exporter(Config::parse(&yaml, "t").unwrap());
    restarted.refresh().await.unwrap();
    let fill = tokio::spawn({
        let exporter = restarted.clone();
        async move { exporter.refresh_activity().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    restarted.refresh().await.unwrap();
    let samples = parse(&body(&restarted));
    assert!(keys_state(&samples, "pending") > 0.0, "still filling");
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 0.0);
    assert!(fill.await.unwrap().is_err());
}

#[tokio::test]
async fn activity_answering_404_for_every_key_is_a_failure() {
    let sim = start_sim(account()).await;
    sim.state()
        .activity_failures
        .extend((0..3).map(|n| (hash(n), 404)));
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    assert!(exporter.refresh_activity().await.is_err());
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 0.0);
    assert_eq!(failures(&samples), 1.0);
    assert_eq!(keys_state(&samples, "gone"), 3.0);
}

/// A 404 for a key that a listing fetched after it still lists is no
/// deletion: a failure, and the key is asked again.
#[tokio::test]
async fn a_404_for_a_key_the_newest_listing_still_lists_is_a_failure() {
    let sim = start_sim(account()).await;
    sim.state().activity_failures.insert(hash(1), 404);
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    set_time(&exporter, at(today(), 12, 0));
    exporter.refresh().await.unwrap();
    exporter
        .refresh_activity_at(at(today(), 12, 0))
        .await
        .expect("one key gone since the listing: no failure");
    let samples = parse(&body(&exporter));
    assert_eq!(keys_state(&samples, "gone"), 1.0);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);

    set_time(&exporter, at(today(), 12, 5));
    exporter.refresh().await.unwrap();
    sim.state().requests.clear();
    assert!(exporter
        .refresh_activity_at(at(today(), 12, 5))
        .await
        .is_err());
    let requests = activity_requests(&sim);
    assert!(
        requests.len() == 1 && requests[0].contains(&hash(1)),
        "{requests:?}"
    );
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 0.0);
    assert_eq!(failures(&samples), 1.0);
    // Deleted for real: the next listing drops it, and all is well again.
    sim.state().keys.retain(|k| k.hash() != hash(1));
    set_time(&exporter, at(today(), 12, 10));
    exporter.refresh().await.unwrap();
    assert_eq!(
        exporter
            .refresh_activity_at(at(today(), 12, 10))
            .await
            .unwrap(),
        0
    );
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
    assert_eq!(keys_state(&samples, "complete"), 2.0);
}

/// `complete` counts keys read for the current UTC day: after midnight it
/// drops to 0 with the first publish, and the new day is not read before 00:30.
#[tokio::test]
async fn complete_means_read_for_today_after_midnight_too() {
    let sim = start_sim(account()).await;
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    let yesterday = today() - ChronoDuration::days(1);
    set_time(&exporter, at(yesterday, 12, 0));
    exporter.refresh().await.unwrap();
    exporter
        .refresh_activity_at(at(yesterday, 12, 0))
        .await
        .unwrap();
    assert_eq!(keys_state(&parse(&body(&exporter)), "complete"), 3.0);

    set_time(&exporter, at(today(), 0, 5));
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(keys_state(&samples, "complete"), 0.0);
    assert_eq!(keys_state(&samples, "pending"), 3.0);
    assert_eq!(key_rolling(&samples, 0, "rolling_7d"), None);
    assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
    sim.state().requests.clear();
    assert_eq!(
        exporter
            .refresh_activity_at(at(today(), 0, 25))
            .await
            .unwrap(),
        0,
        "not before 00:30"
    );
    assert!(activity_requests(&sim).is_empty());
    set_time(&exporter, at(today(), 0, 30));
    assert_eq!(
        exporter
            .refresh_activity_at(at(today(), 0, 30))
            .await
            .unwrap(),
        3
    );
    assert_eq!(keys_state(&parse(&body(&exporter)), "complete"), 3.0);
}

#[tokio::test]
async fn disabling_activity_during_a_run_stops_its_figures_at_once() {
    let (sim, exporter) = twelve_keys_listed("  calls_per_second: 4\n").await;
    let fill = tokio::spawn({
        let exporter = exporter.clone();
        async move { exporter.refresh_activity().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let off = activity_yaml(&sim.base_url(), "  enabled: false\n", TWELVE_KEYS_COMPANIES);
    exporter
        .apply_config(Config::parse(&off, "t").unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    fill.await.unwrap().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "stopped"
    );
    assert!(activity_requests(&sim).len() < 12);
    let text = body(&exporter);
    for family in [
        "openrouter_activity_up",
        "openrouter_activity_keys",
        "openrouter_company_model_usage_usd",
    ] {
        assert!(!text.contains(family), "{family} still published");
    }
    for window in ["rolling_7d", "rolling_30d", "completed_30d"] {
        let label = format!("window=\"{window}\"");
        assert!(!text.contains(&label), "{window} still published");
    }
}

/// A long `Retry-After` on an activity call holds the activity run, not
/// the key listing.
#[tokio::test]
async fn a_long_retry_after_on_activity_never_stops_the_listing() {
    let sim = start_sim(account()).await;
    sim.state().faults.push(
        Fault::new(
            "/activity",
            FaultResponse::Error {
                status: 429,
                retry_after: Some(6),
            },
        )
        .times(1),
    );
    let exporter = exporter(activity_config(&sim.base_url(), 10));
    exporter.refresh().await.unwrap();
    let started = std::time::Instant::now();
    let fill = tokio::spawn({
        let exporter = exporter.clone();
        async move { exporter.refresh_activity().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let listed = std::time::Instant::now();
    exporter.refresh().await.expect("the listing goes on");
    assert!(listed.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(value(&parse(&body(&exporter)), "openrouter_up", &[]), 1.0);
    // The activity run waited as told, then read every key.
    assert_eq!(fill.await.unwrap().unwrap(), 3);
    assert!(started.elapsed() >= std::time::Duration::from_secs(6));
    assert_eq!(keys_state(&parse(&body(&exporter)), "complete"), 3.0);
}
