//! The statements ledger wired into the exporter (issue #23), black-box:
//! activity reads land in it, a restart on the same directory reads nothing
//! again, a ledger that cannot be opened leaves `/metrics` serving, a
//! restated settled day is counted, and the previous month's final figures
//! appear once it is final, across a month (and year) boundary.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use common::*;
use openrouter_cost_exporter::activity::ActivityRow;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::ledger::{DayRange, KeyRead, Ledger, LedgerError};
use openrouter_cost_exporter::money::Usd;
use openrouter_cost_exporter::sim::{SimKey, SimServer, SimState};
use serde_json::{json, Value};

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn at(day: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    day.and_hms_opt(h, m, 0).unwrap().and_utc()
}

fn d(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// Key `n`'s spend on a day `back` days ago: up to 9 decimals, never twice the same.
fn usage(n: usize, back: i64) -> f64 {
    ((n as i64 * 31 + back) % 97 + 1) as f64 * 0.000_123_457
}

fn row(date: NaiveDate, model: &str, usage: f64) -> Value {
    json!({
        "date": date.format("%Y-%m-%d").to_string(), "model": model, "model_permaslug": model,
        "endpoint_id": "e", "provider_name": "P", "usage": usage, "byok_usage_inference": 0.0,
        "requests": 3, "prompt_tokens": 30, "completion_tokens": 9, "reasoning_tokens": 0,
    })
}

/// `keys` keys, `acme-*` and `globex-*` by turns, each spending on two
/// models on every one of its 30 days. Nothing spent today (a quiet rolling day).
fn account(keys: usize) -> SimState {
    let mut state = empty_state();
    for n in 0..keys {
        let name = if n % 2 == 0 { "acme" } else { "globex" };
        state.keys.push(
            SimKey::new(WS_A, &hash(n), &format!("{name}-{n}")).usage(0.0, 0.0, 0.0, 1_000.0),
        );
        let rows = (1..=30)
            .flat_map(|back| {
                let date = today() - ChronoDuration::days(back);
                [
                    row(date, "openai/gpt-4.1", usage(n, back)),
                    row(date, "mistral/small", 0.01),
                ]
            })
            .collect();
        state.activity.insert(hash(n), rows);
    }
    state.total_usage = state.keys_lifetime_usage();
    state
}

fn activity_config(base_url: &str, enabled: bool) -> Config {
    let yaml = format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {base_url}\n  request_timeout: 2s\n\
         activity:\n  enabled: {enabled}\n  concurrency: 8\n  calls_per_second: 1000\n\
         companies:\n  acme:\n    keys: [{{name_glob: 'acme-*'}}]\n    billing: {{markup_percent: 12.5}}\n\
         \x20 globex:\n    keys: [{{name_glob: 'globex-*'}}]\n"
    );
    Config::parse(&yaml, "ledger test").expect("valid config")
}

fn open(dir: &Path) -> Result<Arc<Ledger>, LedgerError> {
    Ledger::open(dir, 400).map(Arc::new)
}

fn activity_calls(sim: &SimServer) -> usize {
    sim.state()
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/activity"))
        .count()
}

/// The exact sum, in nano-dollars, of the sim's rows of keys `keys` over `days`.
fn sim_nanos(state: &SimState, keys: impl Iterator<Item = usize>, days: DayRange) -> i128 {
    keys.flat_map(|n| &state.activity[&hash(n)])
        .filter(|r| days.contains(d(&r["date"].as_str().unwrap()[..10])))
        .map(|r| Usd::from_f64(r["usage"].as_f64().unwrap()).unwrap().nanos())
        .sum()
}

fn last_30_days() -> DayRange {
    DayRange {
        from: today() - ChronoDuration::days(30),
        to: today() - ChronoDuration::days(1),
    }
}

#[tokio::test]
async fn activity_reads_land_in_the_ledger_under_each_keys_company() {
    let sim = start_sim(account(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(activity_config(&sim.base_url(), true)).with_ledger(open(dir.path()));
    // The ledger's families are there from the first scrape, before any write.
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_ledger_up", &[]), 1.0);
    assert_absent(
        &samples,
        "openrouter_ledger_last_write_timestamp_seconds",
        &[],
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_ledger_dates",
            &[("status", "settled")]
        ),
        0.0
    );

    exporter.refresh().await.unwrap();
    let calls = exporter
        .refresh_activity_at(at(today(), 12, 0))
        .await
        .unwrap();
    assert_eq!(calls, 20);

    let ledger = exporter.ledger().expect("the ledger is open");
    let statement = ledger.statement(last_30_days(), today()).unwrap();
    let state = sim.state().clone();
    for (company, first) in [("acme", 0), ("globex", 1)] {
        let line = statement
            .companies
            .iter()
            .find(|c| c.company == company)
            .unwrap_or_else(|| panic!("{company} in {statement:?}"));
        let expected = sim_nanos(&state, (first..20).step_by(2), last_30_days());
        assert_eq!(line.spend.usage.nanos(), expected, "{company}");
        assert_eq!(line.keys, 10, "{company}");
    }
    // Read at noon: every day of the 30 is settled.
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_ledger_up", &[]), 1.0);
    let settled = ("status", "settled");
    assert_eq!(value(&samples, "openrouter_ledger_dates", &[settled]), 30.0);
    assert_eq!(
        value(
            &samples,
            "openrouter_ledger_dates",
            &[("status", "provisional")]
        ),
        0.0
    );
    assert!(value(&samples, "openrouter_ledger_size_bytes", &[]) > 0.0);
    assert_eq!(
        value(&samples, "openrouter_ledger_restatements_total", &[]),
        0.0
    );
    let written = value(
        &samples,
        "openrouter_ledger_last_write_timestamp_seconds",
        &[],
    );
    assert!(
        (Utc::now().timestamp() as f64 - written).abs() < 60.0,
        "{written}"
    );
    // Every ledger family passes promtool's lint (its names avoid non-base units).
    if let Some(report) = promtool_check_metrics(&body(&exporter)) {
        assert!(report.trim().is_empty(), "promtool: {report}");
    }
    // Markups come from the config, for the statement pages.
    assert_eq!(exporter.markup("acme").map(|m| m.percent()), Some(12.5));
    assert_eq!(exporter.markup("globex"), None);
}

#[tokio::test]
async fn a_restart_on_the_same_path_reads_only_the_keys_the_ledger_lacks() {
    const KEYS: usize = 200;
    let sim = start_sim(account(KEYS)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = activity_config(&sim.base_url(), true);
    let before = {
        let first = exporter(config.clone()).with_ledger(open(dir.path()));
        first.refresh().await.unwrap();
        first.refresh_activity_at(at(today(), 12, 0)).await.unwrap();
        // Every key's history, and the account-wide call once.
        assert_eq!(activity_calls(&sim), KEYS + 1);
        parse(&body(&first))
        // Dropped here: the ledger's file is closed.
    };

    // One key is new since the restart: the only history to read.
    {
        let mut state = sim.state();
        state.keys.push(
            SimKey::new(WS_A, &hash(KEYS), &format!("acme-{KEYS}")).usage(0.0, 0.0, 0.0, 1.0),
        );
        state.requests.clear();
    }
    let second = exporter(config).with_ledger(open(dir.path()));
    second.refresh().await.unwrap();
    let calls = second
        .refresh_activity_at(at(today(), 12, 5))
        .await
        .unwrap();
    let made = activity_calls(&sim);
    eprintln!("restart: {made} activity call(s) for {} keys", KEYS + 1);
    assert_eq!((calls, made), (1, 1), "only the new key is read");
    assert!(made * 100 < KEYS + 1, "under 1% of the keys' histories");

    // The rolling windows are back as they were, the new key's zero added.
    let after = parse(&body(&second));
    for company in ["acme", "globex"] {
        for window in ["rolling_7d", "rolling_30d", "completed_30d"] {
            let labels = [("company", company), ("window", window)];
            assert_eq!(
                value(&after, "openrouter_company_usage_usd", &labels),
                value(&before, "openrouter_company_usage_usd", &labels),
                "{company} {window}"
            );
        }
    }
    let complete = [("state", "complete")];
    assert_eq!(
        value(&after, "openrouter_activity_keys", &complete),
        (KEYS + 1) as f64
    );
}

#[tokio::test]
async fn a_ledger_that_cannot_be_opened_leaves_metrics_serving() {
    let sim = start_sim(account(4)).await;
    let held = tempfile::tempdir().unwrap();
    let _first = open(held.path()).unwrap();
    let corrupt = tempfile::tempdir().unwrap();
    std::fs::write(
        corrupt.path().join("ledger.sqlite3"),
        b"this is not a SQLite database, not even close: ".repeat(100),
    )
    .unwrap();

    for (dir, says) in [
        (held.path(), "held by another process"),
        (corrupt.path(), "corrupt or not a SQLite database"),
    ] {
        let err = open(dir).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(says), "{text}");
        assert!(text.contains("ledger.sqlite3"), "names the file: {text}");

        let exporter = exporter(activity_config(&sim.base_url(), true)).with_ledger(Err(err));
        assert!(exporter.ledger().is_none());
        assert_eq!(exporter.ledger_error().as_deref(), Some(text.as_str()));
        exporter.refresh().await.unwrap();
        assert_eq!(
            exporter
                .refresh_activity_at(at(today(), 12, 0))
                .await
                .unwrap(),
            4
        );
        exporter.refresh_ledger_at(at(today(), 12, 1)).await;
        let samples = parse(&body(&exporter));
        assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
        assert_eq!(value(&samples, "openrouter_activity_up", &[]), 1.0);
        assert_eq!(value(&samples, "openrouter_ledger_up", &[]), 0.0);
        for family in [
            "openrouter_ledger_last_write_timestamp_seconds",
            "openrouter_ledger_dates",
            "openrouter_ledger_size_bytes",
            "openrouter_ledger_restatements_total",
        ] {
            assert_absent(&samples, family, &[]);
        }
    }
    // Without a ledger at all, no ledger family.
    let plain = exporter(activity_config(&sim.base_url(), true));
    assert!(plain.ledger().is_none() && plain.ledger_error().is_none());
    assert_absent(&parse(&body(&plain)), "openrouter_ledger_up", &[]);
}

#[tokio::test]
async fn a_settled_day_changed_by_a_re_read_is_counted() {
    let sim = start_sim(account(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(activity_config(&sim.base_url(), true)).with_ledger(open(dir.path()));
    exporter.refresh().await.unwrap();
    // Read at 05:00: every day but yesterday settled (yesterday ended 5 h ago).
    exporter
        .refresh_activity_at(at(today(), 5, 0))
        .await
        .unwrap();
    let samples = parse(&body(&exporter));
    let provisional = [("status", "provisional")];
    assert_eq!(
        value(&samples, "openrouter_ledger_dates", &provisional),
        1.0
    );

    // Upstream restates a settled day of key 1, and yesterday of key 2
    // (provisional: a change there is no restatement).
    {
        let mut state = sim.state();
        let restate = |rows: &mut Vec<Value>, day: NaiveDate| {
            let date = day.format("%Y-%m-%d").to_string();
            let r = rows
                .iter_mut()
                .find(|r| r["date"] == date.as_str())
                .unwrap();
            r["usage"] = json!(r["usage"].as_f64().unwrap() + 0.5);
        };
        restate(
            state.activity.get_mut(&hash(1)).unwrap(),
            today() - ChronoDuration::days(5),
        );
        restate(
            state.activity.get_mut(&hash(2)).unwrap(),
            today() - ChronoDuration::days(1),
        );
    }
    // The 6 h re-read reads every key again.
    let calls = exporter
        .refresh_activity_at(at(today(), 6, 10))
        .await
        .unwrap();
    assert_eq!(calls, 3);
    let samples = parse(&body(&exporter));
    // Key 1's day, and the account's same day (its sum of every key) with it.
    assert_eq!(
        value(&samples, "openrouter_ledger_restatements_total", &[]),
        2.0
    );
    assert_eq!(
        value(&samples, "openrouter_ledger_dates", &provisional),
        0.0
    );
    // The restated figure replaced the old one.
    let statement = exporter
        .ledger()
        .unwrap()
        .statement(last_30_days(), today())
        .unwrap();
    let state = sim.state().clone();
    assert_eq!(
        statement.total.usage.nanos(),
        sim_nanos(&state, 0..3, last_30_days())
    );
}

/// One key's read of the 30 days before `today`, as `/activity` answers it.
fn read_rows(rows: &[ActivityRow], today: NaiveDate) -> Vec<ActivityRow> {
    rows.iter()
        .filter(|r| {
            r.day()
                .is_some_and(|day| day < today && day >= today - ChronoDuration::days(30))
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn previous_month_appears_once_that_month_is_final() {
    // The sim only lists the key; its days are written to the ledger here,
    // on dates around the turn of 2025 to 2026.
    let mut state = empty_state();
    state
        .keys
        .push(SimKey::new(WS_A, &hash(0), "acme-0").usage(0.0, 0.0, 0.0, 100.0));
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(activity_config(&sim.base_url(), false)).with_ledger(open(dir.path()));
    let set_now = |now: DateTime<Utc>| exporter.set_clock(Arc::new(move || now));
    set_now(at(d("2025-12-31"), 12, 0));
    exporter.refresh().await.unwrap();

    let history: Vec<ActivityRow> = d("2025-11-25")
        .iter_days()
        .take_while(|day| *day <= d("2026-01-01"))
        .enumerate()
        .map(|(i, day)| ActivityRow {
            date: day.format("%Y-%m-%d").to_string(),
            model: "openai/gpt-4.1".to_string(),
            usage: Some(usage(i, 3)),
            byok_usage_inference: 0.0,
            requests: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            reasoning_tokens: 0,
        })
        .collect();
    let december: i128 = history
        .iter()
        .filter(|r| r.date.starts_with("2025-12"))
        .map(|r| Usd::from_f64(r.usage.unwrap()).unwrap().nanos())
        .sum();
    let ledger = exporter.ledger().unwrap();
    let read = |today: NaiveDate, read_at: DateTime<Utc>| {
        let rows = read_rows(&history, today);
        let reads = [KeyRead {
            hash: &hash(0),
            company: "acme",
            today,
            read_at,
            rows: &rows,
        }];
        ledger.record_reads(&reads).unwrap();
    };
    let previous_month = |exporter: &Exporter| {
        let samples = parse(&body(exporter));
        let found = find(
            &samples,
            "openrouter_company_usage_usd",
            &[("window", "previous_month")],
        );
        found
            .iter()
            .map(|s| s.labels["company"].clone())
            .collect::<Vec<_>>()
    };

    // 31 December: November is not held (the ledger starts on 1 December).
    read(d("2025-12-31"), at(d("2025-12-31"), 12, 0));
    exporter.refresh_ledger_at(at(d("2025-12-31"), 12, 5)).await;
    assert!(previous_month(&exporter).is_empty());

    // 1 January, 01:00: 31 December was read, but is not settled yet.
    read(d("2026-01-01"), at(d("2026-01-01"), 1, 0));
    set_now(at(d("2026-01-01"), 1, 5));
    exporter.refresh_ledger_at(at(d("2026-01-01"), 1, 5)).await;
    assert!(previous_month(&exporter).is_empty());

    // 07:00: read again 6 h after it ended; December is final, to the nano-dollar.
    read(d("2026-01-01"), at(d("2026-01-01"), 7, 0));
    exporter.refresh_ledger_at(at(d("2026-01-01"), 7, 5)).await;
    // Only acme had keys in December: globex and unassigned have no figure.
    assert_eq!(previous_month(&exporter), ["acme"]);
    let text = String::from_utf8(exporter.published().plain.to_vec()).unwrap();
    let line = format!(
        "openrouter_company_usage_usd{{company=\"acme\",window=\"previous_month\"}} {}\n",
        Usd::from_nanos(december)
    );
    assert!(text.contains(&line), "exact: {line}");
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(
            &samples,
            "openrouter_ledger_dates",
            &[("status", "settled")]
        ),
        31.0
    );
}

/// Two exporter processes on one `--storage.path`: the second says why it
/// has no ledger and serves `/metrics` anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_exporter_on_the_same_storage_path_serves_metrics_without_it() {
    let sim = start_sim(account(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(
            &sim.base_url(),
            "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
        ),
    )
    .unwrap();
    let storage = dir.path().join("ledger");
    let spawn = |listen: &str| {
        spawn_binary(
            &[
                "--config.file",
                config.to_str().unwrap(),
                "--web.listen-address",
                listen,
                "--storage.path",
                storage.to_str().unwrap(),
            ],
            &[("OPENROUTER_MANAGEMENT_KEY", MANAGEMENT_KEY)],
        )
    };
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let first = spawn(&a);
    let up = |ledger: &'static str| {
        move |s: u16, body: &str| {
            s == 200 && body.contains("\nopenrouter_up 1\n") && body.contains(ledger)
        }
    };
    let timeout = Duration::from_secs(20);
    wait_for(
        &format!("http://{a}/metrics"),
        timeout,
        up("\nopenrouter_ledger_up 1\n"),
    )
    .await;
    assert!(storage.join("ledger.sqlite3").exists());

    let second = spawn(&b);
    wait_for(
        &format!("http://{b}/metrics"),
        timeout,
        up("\nopenrouter_ledger_up 0\n"),
    )
    .await;
    let logs = second.logs();
    assert!(
        logs.contains("held by another process") && logs.contains("--storage.path"),
        "the log says why and what to do:\n{logs}"
    );
    drop(first);
}
