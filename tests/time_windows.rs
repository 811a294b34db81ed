//! Issue 22 point 3: no window outlives its end. Whether or not a refresh
//! succeeds, a published day, week or month figure goes at its UTC boundary
//! (for listed and direct keys and company totals), and the activity figures
//! of the earlier day with it; a direct key's poll answered after a boundary
//! it was sent before counts for no window that boundary closed. Against the
//! simulated OpenRouter, with the exporter's clock replaced (no waiting for
//! midnight).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimKey, SimServer, SimState};
use serde_json::{json, Value};

const CALENDAR: [&str; 3] = ["daily", "weekly", "monthly"];
const ACTIVITY_WINDOWS: [&str; 3] = ["rolling_7d", "rolling_30d", "completed_30d"];

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// The exporter's clock stands still at `t`.
fn set_time(exporter: &Exporter, t: DateTime<Utc>) {
    exporter.set_clock(Arc::new(move || t));
}

/// acme-0, acme-1 and globex-0, each with every calendar window set.
fn account() -> SimState {
    let mut state = empty_state();
    for (n, name) in ["acme-0", "acme-1", "globex-0"].iter().enumerate() {
        let base = 1.0 + n as f64;
        state.keys.push(
            SimKey::new(WS_A, &hash(n), name)
                .usage(base, base * 7.0, base * 20.0, base * 100.0)
                .byok(0.5, 0.5, 0.5, 0.5),
        );
    }
    state.total_credits = 10_000.0;
    state.total_usage = state.keys_lifetime_usage();
    state
}

fn activity_config(base_url: &str) -> Config {
    let yaml = format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {base_url}\n  request_timeout: 2s\n\
         activity:\n  enabled: true\n  concurrency: 2\n\
         companies:\n  acme:\n    keys: [{{name_glob: 'acme-*'}}]\n  globex:\n    keys: [globex-0]\n"
    );
    Config::parse(&yaml, "time test").expect("valid config")
}

/// Every `/activity` call (`times` of them) answers $0.10 a day on each of
/// the 30 days completed before `today`.
fn thirty_days_before(today: NaiveDate, times: u32) -> Fault {
    let rows: Vec<Value> = (1..=30)
        .map(|back| {
            let date = today - ChronoDuration::days(back);
            json!({
                "date": date.format("%Y-%m-%d").to_string(), "model": "openai/gpt-4.1",
                "model_permaslug": "openai/gpt-4.1", "endpoint_id": "e", "provider_name": "P",
                "usage": 0.1, "byok_usage_inference": 0.0, "requests": 1, "prompt_tokens": 10,
                "completion_tokens": 3, "reasoning_tokens": 1,
            })
        })
        .collect();
    let body = json!({ "data": rows }).to_string();
    Fault::new("/activity", FaultResponse::Reply { status: 200, body }).times(times)
}

/// Every call to the management API fails from now on (the direct `GET /key` too).
fn openrouter_down(sim: &SimServer) {
    let mut state = sim.state();
    for path in ["/workspaces", "/keys", "/credits", "/key"] {
        state.faults.push(Fault::status(path, 503));
    }
}

fn key_series(samples: &[Sample], window: &str) -> usize {
    find(samples, "openrouter_key_usage_usd", &[("window", window)]).len()
}

/// OpenRouter is read at `before` (with a full activity history), then
/// fails; at `after`, past a UTC boundary, the exporter re-publishes on its
/// own. The windows in `ended` are gone from keys and companies, the others
/// stay exactly as they were; the activity figures of the earlier day go too.
async fn down_across(before: DateTime<Utc>, after: DateTime<Utc>, ended: &[&str]) {
    let sim = start_sim(account()).await;
    sim.state()
        .faults
        .push(thirty_days_before(before.date_naive(), 3));
    let exporter = exporter(activity_config(&sim.base_url()));
    set_time(&exporter, before);
    exporter
        .refresh()
        .await
        .expect("refresh before the boundary");
    exporter
        .refresh_activity_at(before)
        .await
        .expect("activity before the boundary");
    let first = parse(&body(&exporter));
    for window in CALENDAR.iter().chain(&ACTIVITY_WINDOWS) {
        assert!(company(&first, "acme", window).is_some(), "{window}");
    }
    assert_eq!(key_series(&first, "daily"), 3);

    // OpenRouter goes down before midnight: the data stays, openrouter_up 0.
    openrouter_down(&sim);
    set_time(&exporter, before + ChronoDuration::seconds(5));
    exporter.refresh().await.expect_err("OpenRouter is down");
    let failed = parse(&body(&exporter));
    assert_eq!(value(&failed, "openrouter_up", &[]), 0.0);
    assert_eq!(
        company(&failed, "acme", "daily"),
        company(&first, "acme", "daily")
    );

    // The boundary passes with no refresh succeeding.
    set_time(&exporter, after);
    exporter.republish_as_of_now().await;
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_up", &[]), 0.0);
    for window in CALENDAR {
        for name in ["acme", "globex"] {
            let got = company(&samples, name, window);
            if ended.contains(&window) {
                assert_eq!(got, None, "{name} {window} ended at the boundary");
            } else {
                assert_eq!(got, company(&first, name, window), "{name} {window}");
            }
        }
        let keys = if ended.contains(&window) { 0 } else { 3 };
        assert_eq!(key_series(&samples, window), keys, "{window}");
        let byok = find(
            &samples,
            "openrouter_key_byok_usage_usd",
            &[("window", window)],
        );
        assert_eq!(byok.len(), keys, "BYOK {window}");
    }
    assert_eq!(
        company(&samples, "acme", "lifetime"),
        company(&first, "acme", "lifetime")
    );
    assert_eq!(key_series(&samples, "lifetime"), 3);
    // Rolling, completed and the model mix were Sunday's: gone too.
    for window in ACTIVITY_WINDOWS {
        assert_absent(
            &samples,
            "openrouter_company_usage_usd",
            &[("window", window)],
        );
        assert_absent(&samples, "openrouter_key_usage_usd", &[("window", window)]);
    }
    assert_absent(&samples, "openrouter_company_model_usage_usd", &[]);

    // Further failed refreshes bring nothing back.
    exporter.refresh().await.expect_err("still down");
    let again = parse(&body(&exporter));
    for window in ended {
        assert_eq!(company(&again, "acme", window), None, "{window}");
        assert_eq!(key_series(&again, window), 0, "{window}");
    }

    // OpenRouter is back: the new windows are published.
    sim.state().faults.clear();
    exporter
        .refresh()
        .await
        .expect("refresh after the boundary");
    let back = parse(&body(&exporter));
    assert_eq!(value(&back, "openrouter_up", &[]), 1.0);
    for window in CALENDAR {
        assert!(company(&back, "acme", window).is_some(), "{window}");
        assert_eq!(key_series(&back, window), 3, "{window}");
    }
}

/// Sunday → Monday (not a month end): the day and the week end.
#[tokio::test]
async fn openrouter_down_across_sunday_midnight_loses_the_day_and_week_at_the_boundary() {
    down_across(
        utc(2026, 11, 29, 23, 59, 50),
        utc(2026, 11, 30, 0, 0, 10),
        &["daily", "weekly"],
    )
    .await;
}

/// Monday 30 November → Tuesday 1 December: the day and the month end, the week goes on.
#[tokio::test]
async fn openrouter_down_across_a_month_end_loses_the_day_and_month_at_the_boundary() {
    down_across(
        utc(2026, 11, 30, 23, 59, 50),
        utc(2026, 12, 1, 0, 0, 10),
        &["daily", "monthly"],
    )
    .await;
}

/// A refresh that fails after the boundary publishes without the ended
/// windows too: every publish is as of now.
#[tokio::test]
async fn a_failed_refresh_after_midnight_publishes_without_the_ended_windows() {
    let sim = start_sim(account()).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    set_time(&exporter, utc(2026, 11, 29, 23, 59, 50));
    exporter.refresh().await.expect("refresh");
    openrouter_down(&sim);
    set_time(&exporter, utc(2026, 11, 30, 0, 0, 10));
    exporter.refresh().await.expect_err("down");
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_up", &[]), 0.0);
    assert_eq!(company(&samples, "acme", "daily"), None);
    assert_eq!(company(&samples, "acme", "weekly"), None);
    assert!(company(&samples, "acme", "monthly").is_some());
}

/// Nothing is dropped before the boundary: a republish on the same UTC day
/// changes no figure.
#[tokio::test]
async fn a_republish_on_the_same_day_changes_nothing() {
    let sim = start_sim(account()).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    set_time(&exporter, utc(2026, 11, 29, 12, 0, 0));
    exporter.refresh().await.expect("refresh");
    let before = exporter.published();
    set_time(&exporter, utc(2026, 11, 29, 23, 59, 59));
    exporter.republish_as_of_now().await;
    assert_eq!(before.plain, exporter.published().plain);
}

/// The refresh loop wakes at UTC midnight and re-publishes on its own, with
/// the next refresh still 30 s away. The clock runs from Sunday 23:59:57.
#[tokio::test]
async fn the_refresh_loop_republishes_at_midnight_without_a_refresh() {
    let sim = start_sim(account()).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    let start = Instant::now();
    let origin = utc(2026, 11, 29, 23, 59, 57);
    exporter.set_clock(Arc::new(move || {
        origin + ChronoDuration::from_std(start.elapsed()).unwrap()
    }));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = exporter.clone();
    let task = tokio::spawn(async move { running.run(shutdown).await });
    // The first refresh, on Sunday.
    let first = loop {
        let samples = parse(&body(&exporter));
        if value(&samples, "openrouter_up", &[]) == 1.0 {
            break samples;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "first refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(company(&first, "acme", "daily").is_some(), "read on Sunday");
    let requests = sim.state().requests.len();
    // Midnight passes; no refresh is due before 30 s.
    let samples = loop {
        let samples = parse(&body(&exporter));
        if company(&samples, "acme", "daily").is_none() {
            break samples;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the day was not dropped at midnight"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "not before midnight"
    );
    assert_eq!(company(&samples, "acme", "weekly"), None);
    assert_eq!(
        company(&samples, "acme", "monthly"),
        company(&first, "acme", "monthly")
    );
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        sim.state().requests.len(),
        requests,
        "no call to OpenRouter"
    );
    stop.send_replace(true);
    task.await.unwrap();
}

/// A direct key's poll sent before midnight and answered after it counts for
/// neither the day nor the week (Sunday's figures are not Monday's), exactly
/// like the listed keys of that refresh; the month and lifetime stay.
#[tokio::test]
async fn a_direct_key_answered_after_midnight_counts_for_no_window_that_ended() {
    let mut state = account();
    state
        .inference_keys
        .insert("sk-or-v1-inference-initech".into(), hash(2));
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("initech");
    std::fs::write(&secret, "sk-or-v1-inference-initech\n").unwrap();
    let companies = format!(
        "  acme:\n    keys: [{{name_glob: 'acme-*'}}]\n  initech:\n    keys:\n      - {{name: initech-direct, secret_file: {}}}\n",
        secret.display()
    );
    let exporter = exporter(config(&sim.base_url(), &companies));
    // Sunday until OpenRouter has received the direct key's request; Monday once it answers.
    let sim_state = sim.shared_state();
    let (sunday, monday) = (utc(2026, 11, 29, 23, 59, 59), utc(2026, 11, 30, 0, 0, 1));
    exporter.set_clock(Arc::new(move || {
        let asked = sim_state
            .lock()
            .unwrap()
            .requests
            .iter()
            .any(|r| r == "/api/v1/key");
        if asked {
            monday
        } else {
            sunday
        }
    }));
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    for window in ["daily", "weekly"] {
        assert_absent(
            &samples,
            "openrouter_key_usage_usd",
            &[("key", "initech-direct"), ("window", window)],
        );
        assert_eq!(company(&samples, "initech", window), None, "{window}");
        assert_eq!(company(&samples, "acme", window), None, "{window}");
    }
    // globex-0's monthly and lifetime, through the direct key.
    assert_eq!(company(&samples, "initech", "monthly"), Some(60.0));
    assert_eq!(company(&samples, "initech", "lifetime"), Some(300.0));
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
}

/// Direct-key mode: a key that keeps failing keeps its last figures only
/// until their windows end; at the boundary they go, with the company's.
#[tokio::test]
async fn a_failing_direct_key_loses_its_ended_windows_at_the_boundary() {
    let mut state = SimState::new("unused-management-key");
    state
        .keys
        .push(SimKey::new(WS_A, &hash(1), "x").usage(1.0, 2.0, 3.0, 40.0));
    state
        .inference_keys
        .insert("sk-or-v1-inference-one".into(), hash(1));
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("one");
    std::fs::write(&secret, "sk-or-v1-inference-one\n").unwrap();
    let yaml = format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {}\n  use_management_key: false\ncompanies:\n  acme:\n    keys:\n      - {{name: acme-direct, secret_file: {}}}\n",
        sim.base_url(),
        secret.display()
    );
    let exporter = exporter(Config::parse(&yaml, "direct").unwrap());
    set_time(&exporter, utc(2026, 11, 30, 23, 59, 50));
    exporter.refresh().await.expect("refresh");
    sim.state().inference_keys.clear();
    exporter
        .refresh()
        .await
        .expect("a failing direct key fails no refresh");
    set_time(&exporter, utc(2026, 12, 1, 0, 0, 10));
    exporter.republish_as_of_now().await;
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(&samples, "openrouter_key_up", &[("key", "acme-direct")]),
        0.0
    );
    for window in ["daily", "monthly"] {
        assert_absent(
            &samples,
            "openrouter_key_usage_usd",
            &[("key", "acme-direct"), ("window", window)],
        );
        assert_eq!(company(&samples, "acme", window), None, "{window}");
    }
    assert_eq!(company(&samples, "acme", "weekly"), Some(2.0));
    assert_eq!(company(&samples, "acme", "lifetime"), Some(40.0));
}
