//! Bounded soak of the real binary: a refresh every second against a flaky,
//! changing simulated OpenRouter while four scrapers hit `/metrics` (plain and
//! gzip) continuously. No scrape may fail, every body must parse and be
//! internally consistent, the exporter must still refresh at the end, and its
//! memory must stay flat.
//!
//! Duration: `SOAK_SECONDS` (default 45).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimServer, SimState};
use serde_json::json;

const COMPANIES: &str = "  acme:\n    keys: [{name_glob: 'acme-*'}]\n    budget_usd: {daily: 10}\n  globex:\n    keys: [{name_glob: 'globex-*'}]\n  initech:\n    keys: [initech-main]\n";

fn soak_seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45)
}

fn account() -> SimState {
    let mut state = empty_state();
    for n in 0..120 {
        let company = ["acme", "globex", "stray"][n % 3];
        let ws = if n % 2 == 0 { WS_A } else { WS_B };
        state.keys.push(key_with_usage(
            ws,
            n,
            &format!("{company}-{n:03}"),
            0.5 + n as f64 / 100.0,
        ));
    }
    state
        .keys
        .push(key_with_usage(WS_A, 500, "initech-main", 3.0));
    state.total_credits = 10_000.0;
    state.total_usage = state.keys_lifetime_usage() + 12.5;
    state
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// One random upstream misbehaviour (or none), and spend moving on.
fn chaos_step(sim: &SimServer, step: u64) {
    let mut st = sim.state();
    // Spend grows on a few keys; a daily figure drops now and then (window reset).
    for _ in 0..5 {
        let i = fastrand::usize(..st.keys.len());
        let key = &mut st.keys[i];
        let delta = fastrand::u32(1..1_000_000) as f64 / 1e9 * 1000.0;
        for field in ["usage", "usage_daily", "usage_weekly", "usage_monthly"] {
            let v = key.num(field).unwrap_or(0.0) + delta;
            key.fields.insert(field.into(), json!(v));
        }
        if fastrand::u8(..20) == 0 {
            key.fields.insert("usage_daily".into(), json!(0.0));
        }
    }
    st.total_usage = st.keys_lifetime_usage() + 12.5;
    // Key churn: one key goes, a new one (new labels) comes.
    if step % 8 == 0 {
        let i = fastrand::usize(..st.keys.len());
        if st.keys[i].hash() != hash(500) {
            st.keys.remove(i);
        }
        let n = 1_000 + step as usize;
        let ws = if n % 2 == 0 { WS_A } else { WS_B };
        st.keys
            .push(key_with_usage(ws, n, &format!("acme-churn-{n}"), 0.25));
    }
    let endpoints = ["/workspaces", "/keys", "/credits"];
    let path = endpoints[fastrand::usize(..endpoints.len())];
    // Refreshes fail and succeed in turn.
    let fault = match fastrand::u8(..60) {
        0 => Some(FaultResponse::Error {
            status: 500,
            retry_after: None,
        }),
        1 => Some(FaultResponse::Error {
            status: 429,
            retry_after: Some(0),
        }),
        2 => Some(FaultResponse::Delay(Duration::from_millis(fastrand::u64(
            50..700,
        )))),
        3 => Some(FaultResponse::Raw {
            content_type: "application/json".into(),
            body: "{\"data\": [{\"hash\": ".into(),
        }),
        4 => Some(FaultResponse::Error {
            status: 503,
            retry_after: Some(0),
        }),
        _ => None,
    };
    // One pending fault at most: faults queue until their endpoint is called.
    if let Some(fault) = fault.filter(|_| st.faults.is_empty()) {
        st.faults
            .push(Fault::new(path, fault).times(fastrand::u32(1..3)));
    }
}

/// Checks one body: parses, and every company total equals the sum of its keys.
/// Returns the last refresh success timestamp (ms), if any.
fn check_body(text: &str) -> Result<Option<u64>, String> {
    let samples = std::panic::catch_unwind(|| parse(text))
        .map_err(|_| format!("unparsable body:\n{text}"))?;
    if find(&samples, "openrouter_up", &[]).len() != 1 {
        return Err("no openrouter_up".into());
    }
    let mut key_sums: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut key_counts: BTreeMap<String, f64> = BTreeMap::new();
    for s in find(&samples, "openrouter_key_usage_usd", &[]) {
        *key_sums
            .entry((s.labels["company"].clone(), s.labels["window"].clone()))
            .or_default() += s.value;
    }
    for s in find(&samples, "openrouter_key_info", &[]) {
        *key_counts.entry(s.labels["company"].clone()).or_default() += 1.0;
    }
    for s in find(&samples, "openrouter_company_usage_usd", &[]) {
        let key = (s.labels["company"].clone(), s.labels["window"].clone());
        let sum = key_sums.get(&key).copied().unwrap_or(0.0);
        if (sum - s.value).abs() > 1e-6 * (1.0 + sum.abs()) {
            return Err(format!("{key:?}: company {} != keys {sum}", s.value));
        }
    }
    for s in find(&samples, "openrouter_company_keys", &[]) {
        let company = &s.labels["company"];
        if key_counts.get(company).copied().unwrap_or(0.0) != s.value {
            return Err(format!("company {company}: keys {} mismatch", s.value));
        }
    }
    if key_counts.is_empty() {
        return Ok(None);
    }
    let ts = find(
        &samples,
        "openrouter_last_refresh_success_timestamp_seconds",
        &[],
    )
    .first()
    .map(|s| (s.value * 1000.0) as u64)
    .ok_or("data without a success timestamp")?;
    Ok(Some(ts))
}

#[derive(Default)]
struct Tally {
    plain: AtomicU64,
    gzip: AtomicU64,
    with_data: AtomicU64,
    /// Distinct `openrouter_last_refresh_success_timestamp_seconds` seen (ms).
    successes: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

async fn scraper(
    url: String,
    gzip_every: u64,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let http = reqwest::Client::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let gzip = n % gzip_every == 0;
        let mut request = http.get(&url);
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        let resp = request
            .send()
            .await
            .map_err(|e| format!("scrape failed: {e}"))?;
        if resp.status().as_u16() != 200 {
            return Err(format!("scrape answered {}", resp.status()));
        }
        let encoding = resp
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("reading a scrape: {e}"))?;
        let text = if gzip {
            if encoding.as_deref() != Some("gzip") {
                return Err(format!("asked for gzip, got {encoding:?}"));
            }
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .map_err(|e| format!("gzip body does not decode: {e}"))?;
            tally.gzip.fetch_add(1, Ordering::Relaxed);
            text
        } else {
            if encoding.is_some() {
                return Err(format!("plain scrape came encoded: {encoding:?}"));
            }
            tally.plain.fetch_add(1, Ordering::Relaxed);
            String::from_utf8(bytes.to_vec()).map_err(|_| "body is not UTF-8".to_string())?
        };
        if let Some(ts) = check_body(&text)? {
            tally.with_data.fetch_add(1, Ordering::Relaxed);
            tally.successes.lock().unwrap().insert(ts);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_flaky_upstream_with_concurrent_scrapers() {
    let total = Duration::from_secs(soak_seconds());
    let sim = start_sim(account()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "refresh_interval: 1s\nopenrouter:\n  base_url: {}\n  request_timeout: 400ms\ncompanies:\n{COMPANIES}",
            sim.base_url()
        ),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut exp = spawn_binary(
        &[
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &listen,
            "--log.level",
            "warn",
        ],
        &[("OPENROUTER_MANAGEMENT_KEY", MANAGEMENT_KEY)],
    );
    let pid = exp.child.id();
    let metrics = format!("http://{listen}/metrics");
    wait_for(&metrics, Duration::from_secs(15), |s, b| {
        s == 200 && find(&parse(b), "openrouter_key_info", &[]).len() > 100
    })
    .await;
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let scrapers: Vec<_> = (0..4u64)
        .map(|i| {
            tokio::spawn(scraper(
                metrics.clone(),
                // Scrapers 0 and 1 alternate; 2 is mostly plain, 3 always gzip.
                [2, 2, 5, 1][i as usize],
                Arc::clone(&stop),
                Arc::clone(&tally),
            ))
        })
        .collect();

    let mut rss_early = None;
    let mut step = 0;
    while started.elapsed() < total {
        chaos_step(&sim, step);
        step += 1;
        if rss_early.is_none() && started.elapsed() >= Duration::from_secs(10).min(total / 4) {
            rss_early = Some((started.elapsed(), rss_kib(pid)));
        }
        assert!(
            exp.child.try_wait().unwrap().is_none(),
            "the exporter died:\n{}",
            exp.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        s.await
            .expect("a scraper panicked")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // Upstream heals: the exporter must refresh successfully again.
    sim.state().faults.clear();
    let healed_at = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let text = wait_for(&metrics, Duration::from_secs(10), |s, b| {
        let samples = parse(b);
        s == 200
            && find(&samples, "openrouter_up", &[])
                .first()
                .map(|s| s.value)
                == Some(1.0)
            && find(
                &samples,
                "openrouter_last_refresh_success_timestamp_seconds",
                &[],
            )
            .first()
            .is_some_and(|s| s.value >= healed_at)
    })
    .await;
    let listed_keys = sim.state().keys.len();
    let samples = parse(&text);
    // Keys the churn deleted stay published as departed while their windows
    // last (the whole run, unless it crosses a UTC boundary): listed plus
    // departed, each once.
    let departed = find(&samples, "openrouter_key_departed", &[]).len();
    assert_eq!(
        find(&samples, "openrouter_key_info", &[]).len(),
        listed_keys + departed
    );
    check_body(&text).unwrap().expect("data at the end");

    let rss_end = rss_kib(pid);
    let (early_at, rss_early) = rss_early.expect("an early RSS sample");
    let plain = tally.plain.load(Ordering::Relaxed);
    let gzip = tally.gzip.load(Ordering::Relaxed);
    let failures: Vec<String> = find(&samples, "openrouter_refresh_failures_total", &[])
        .iter()
        .map(|s| format!("{}={}", s.labels["reason"], s.value))
        .collect();
    let upstream_calls: f64 = find(&samples, "openrouter_upstream_requests_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    let successes = tally.successes.lock().unwrap().len();
    eprintln!(
        "soak {:?}: {plain} plain + {gzip} gzip scrapes ({} with data), {successes} successful \
         refreshes seen by scrapers, {upstream_calls} upstream calls, refresh failures [{}]; \
         RSS {rss_early} KiB at {early_at:?}, {rss_end} KiB at the end ({:+} KiB)",
        started.elapsed(),
        tally.with_data.load(Ordering::Relaxed),
        failures.join(", "),
        rss_end as i64 - rss_early as i64,
    );
    assert!(
        plain > 100 && gzip > 100,
        "scrapers were busy: {plain} / {gzip}"
    );
    let failed: f64 = find(&samples, "openrouter_refresh_failures_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(failed >= 1.0, "the upstream really was flaky");
    // Refreshes kept succeeding between faults, and scrapers saw each new snapshot.
    assert!(
        successes as u64 >= total.as_secs() / 4,
        "only {successes} successful refreshes in {total:?}"
    );
    assert!(
        rss_end < rss_early + 30 * 1024,
        "memory grew from {rss_early} KiB to {rss_end} KiB"
    );

    let log = exp.logs();
    assert!(!log.contains("panicked"), "{log}");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = exp.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "{}", exp.logs());
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
