//! Activity collection at scale (issue 13 point 6; results in BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example bench_activity -- calls  1000,10000,100000
//! cargo run --release --example bench_activity -- memory 100000 [rows_per_key_day]
//! cargo run --release --example bench_activity -- fill   100000 [calls_per_second]
//! ```
//!
//! - `calls`: upstream calls per day in steady state: the cache's own plan,
//!   run hourly plus 10 minutes after midnight over 4 simulated days.
//! - `memory`: resident memory added by an activity cache of N keys × 30 days
//!   (`rows_per_key_day` models per key and day, default 1).
//! - `fill`: the first fill of N keys against the simulated OpenRouter, in
//!   process, at `calls_per_second` (default: the config default).

#[path = "../benches/support/account.rs"]
mod account;

use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use openrouter_cost_exporter::activity::{history, ActivityCache, ActivityRow};
use openrouter_cost_exporter::config::{Config, DEFAULT_ACTIVITY_CALLS_PER_SECOND};
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::sim::{SimServer, SimState};
use openrouter_cost_exporter::upstream::RetryPolicy;
use serde_json::json;

const KEY: &str = "sk-or-v1-bench-activity";

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn at(day: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    day.and_hms_opt(h, m, 0).unwrap().and_utc()
}

fn calls(keys: usize) {
    let hashes: Vec<String> = (0..keys).map(account::key_hash).collect();
    let mut cache = ActivityCache::default();
    let start = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let mut per_day = Vec::new();
    for d in 0..4 {
        let day = start + ChronoDuration::days(d);
        let mut calls = 0;
        let mut times: Vec<DateTime<Utc>> = (0..24).map(|h| at(day, h, 30)).collect();
        times.push(at(day, 0, 10));
        times.sort();
        for now in times {
            let plan = cache.plan(hashes.iter().map(String::as_str), now);
            calls += plan.len();
            for hash in plan.hashes() {
                cache.apply_at(&hash, &[], now.date_naive(), now).unwrap();
            }
        }
        per_day.push(calls);
    }
    println!(
        "keys={keys} calls per day: day 1 (first fill) {}, then {:?} (steady state {:.2} per key)",
        per_day[0],
        &per_day[1..],
        per_day[3] as f64 / keys as f64
    );
}

fn memory(keys: usize, per_day: usize) {
    let today = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    let models: Vec<String> = (0..40).map(|m| format!("vendor/model-{m}")).collect();
    let before = rss_bytes();
    let mut cache = ActivityCache::default();
    for k in 0..keys {
        let hash = account::key_hash(k);
        let rows: Vec<ActivityRow> = history(today)
            .flat_map(|day| {
                let models = &models;
                (0..per_day).map(move |m| {
                    serde_json::from_value(json!({
                        "date": format!("{day} 00:00:00"),
                        "model": models[(k + m) % models.len()],
                        "usage": 0.123456789, "byok_usage_inference": 0.0, "requests": 12,
                        "prompt_tokens": 12000, "completion_tokens": 3000, "reasoning_tokens": 100,
                    }))
                    .unwrap()
                })
            })
            .collect();
        cache
            .apply_at(&hash, &rows, today, at(today, 0, 10))
            .unwrap();
    }
    let after = rss_bytes();
    println!(
        "keys={keys} days=30 rows_per_key_day={per_day}: {} model totals kept, cache RSS +{:.1} MiB ({:.0} bytes per key)",
        cache.model_rows(),
        (after - before) as f64 / 1048576.0,
        (after - before) as f64 / keys as f64
    );
}

async fn fill(keys: usize, rate: u32) {
    let spec = account::Spec::with_keys(keys);
    let mut state = SimState::new(KEY);
    state.workspaces = (0..spec.workspaces)
        .map(|w| (account::workspace_id(w), format!("Workspace {w}")))
        .collect();
    state.keys = account::keys(&spec);
    let today = Utc::now().date_naive();
    for k in &state.keys {
        // One model on 3 of the 30 days: the simulator stays small.
        let rows = (1..=3)
            .map(|back| {
                json!({
                    "date": format!("{} 00:00:00", today - ChronoDuration::days(back * 7)),
                    "model": "vendor/model", "usage": 0.5, "byok_usage_inference": null,
                    "requests": 3, "prompt_tokens": 30, "completion_tokens": 9,
                    "reasoning_tokens": null,
                })
            })
            .collect();
        state.activity.insert(k.hash().to_string(), rows);
    }
    state.total_credits = 1e9;
    state.total_usage = state.keys_lifetime_usage();
    let sim = SimServer::start(state).await.unwrap();
    let yaml = format!(
        "{}activity:\n  calls_per_second: {rate}\n  concurrency: 16\n",
        account::config_yaml(&spec, &sim.base_url(), "10m", "")
    );
    let config = Config::parse(&yaml, "bench").unwrap();
    let exporter = Exporter::with_key(
        config,
        secrecy::SecretString::from(KEY.to_string()),
        RetryPolicy::default(),
    )
    .unwrap();
    let listed = Instant::now();
    exporter.refresh().await.unwrap();
    println!("listing: {:?}", listed.elapsed());
    let started = Instant::now();
    let calls = exporter.refresh_activity().await.unwrap();
    let took = started.elapsed();
    println!(
        "keys={keys} calls_per_second={rate}: first fill {calls} calls in {:.1} s ({:.0} calls/s)",
        took.as_secs_f64(),
        calls as f64 / took.as_secs_f64()
    );
    let text = String::from_utf8_lossy(&exporter.published().plain).to_string();
    for line in text
        .lines()
        .filter(|l| l.starts_with("openrouter_activity_keys"))
    {
        println!("  {line}");
    }
    let _ = Duration::ZERO;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes = |i: usize, default: &str| -> Vec<usize> {
        args.get(i)
            .map_or(default, String::as_str)
            .split(',')
            .map(|s| s.parse().expect("a number"))
            .collect()
    };
    match args.first().map(String::as_str) {
        Some("calls") => sizes(1, "1000,10000,100000").into_iter().for_each(calls),
        Some("memory") => memory(sizes(1, "100000")[0], sizes(2, "1")[0]),
        Some("fill") => {
            let rate = sizes(2, &DEFAULT_ACTIVITY_CALLS_PER_SECOND.to_string())[0] as u32;
            fill(sizes(1, "100000")[0], rate).await
        }
        _ => {
            eprintln!("usage: bench_activity calls|memory|fill [keys] [rows_per_key_day|calls_per_second]");
            std::process::exit(2)
        }
    }
}
