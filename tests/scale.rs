//! Large accounts over a real network (issue 17): key pages fetched ahead in a
//! sliding window under one budget of calls in flight, assembled in offset
//! order; a 429 backs every call off; a refresh that runs out of time says why.
//!
//! The simulator adds a fixed latency to every call and records the peak
//! number of calls in flight; nothing here asserts how fast anything is
//! (BENCHMARKS.md shows that), only what was sent, in what order and how many
//! at once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::RefreshError;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimKey, SimServer, SimState};
use openrouter_cost_exporter::telemetry::Telemetry;
use openrouter_cost_exporter::upstream::Client;
use secrecy::SecretString;

/// `n` keys in workspace `ws`, hashes numbered from `from`.
fn keys(ws: &str, from: usize, n: usize) -> Vec<SimKey> {
    (from..from + n)
        .map(|i| SimKey::new(ws, &hash(i), &format!("key-{i}")))
        .collect()
}

fn state(page_size: usize, latency_ms: u64) -> SimState {
    let mut state = empty_state();
    state.keys_page_size = page_size;
    state.latency = Duration::from_millis(latency_ms);
    state
}

fn client(sim: &SimServer, limit: usize, telemetry: &Arc<Telemetry>) -> Client {
    Client::new(
        &sim.base_url(),
        SecretString::from(MANAGEMENT_KEY.to_string()),
        Duration::from_secs(5),
        fast_retry(),
        Arc::clone(telemetry),
    )
    .expect("client")
    .with_max_concurrent_requests(limit)
}

fn key_offsets(sim: &SimServer, ws: &str) -> Vec<usize> {
    sim.state()
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/keys?") && r.contains(ws))
        .filter_map(|r| {
            r.split(['?', '&'])
                .find_map(|p| p.strip_prefix("offset="))
                .and_then(|o| o.parse().ok())
        })
        .collect()
}

fn yaml(base_url: &str, interval: &str, timeout: &str, limit: usize) -> String {
    TestConfig::new(base_url)
        .refresh(interval)
        .timeout(timeout)
        .openrouter(&format!("  max_concurrent_requests: {limit}\n"))
        .companies("  acme:\n    keys: [{name_glob: 'key-*'}]\n")
        .yaml()
}

#[tokio::test]
async fn pages_come_back_in_order_with_every_key_once_at_page_sizes_50_and_100() {
    for page_size in [50, 100] {
        let mut state = state(page_size, 5);
        // 1,234 keys: a short last page, then the empty one.
        state.keys = keys(WS_A, 0, 1234);
        state.newest_first = true;
        // Pages arriving out of order: early pages are the slowest. Pages are
        // asked from the last key listed (issue 22): a page size less one apart.
        let stride = page_size - 1;
        for (offset, ms) in [(stride, 120), (2 * stride, 80), (5 * stride, 60)] {
            state.faults.push(
                Fault::new("/keys", FaultResponse::Delay(Duration::from_millis(ms)))
                    .at_offset(offset)
                    .times(1),
            );
        }
        let expected: Vec<String> = state
            .keys
            .iter()
            .rev()
            .map(|k| k.hash().to_string())
            .collect();
        let sim = start_sim(state).await;
        let telemetry = Arc::new(Telemetry::new());
        let client = client(&sim, 8, &telemetry);

        let listed = client.list_keys(Some(WS_A)).await.expect("listing");
        let hashes: Vec<&str> = listed.iter().map(|k| &*k.hash).collect();
        assert_eq!(
            hashes, expected,
            "page size {page_size}: every key once, in listing order"
        );
        assert!(listed
            .iter()
            .all(|k| k.workspace_id.as_deref() == Some(WS_A)));

        // Calls: the pages a page-by-page listing makes, plus at most K − 1
        // speculative pages past the end.
        let sequential = 1233usize.div_ceil(stride) + 1;
        let offsets = key_offsets(&sim, WS_A);
        assert!(
            offsets.len() >= sequential && offsets.len() < sequential + 8,
            "page size {page_size}: {} calls for {sequential} pages: {offsets:?}",
            offsets.len()
        );
        let mut unique = offsets.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            offsets.len(),
            "no offset asked twice: {offsets:?}"
        );
        assert!(
            offsets.contains(&1233),
            "the page from the last key, holding it alone: {offsets:?}"
        );
        let peak = sim.state().max_in_flight;
        assert!(
            peak > 1 && peak <= 8,
            "pages fetched side by side within the limit: {peak}"
        );
    }
}

#[tokio::test]
async fn an_empty_page_mid_window_does_not_drop_earlier_pages_that_arrive_later() {
    let mut state = state(50, 5);
    state.keys = keys(WS_A, 0, 400);
    // The last real pages are slow: the empty pages past the end come back
    // first. Pages are asked 49 apart (from the last key listed, issue 22).
    for offset in [294, 343] {
        state.faults.push(
            Fault::new("/keys", FaultResponse::Delay(Duration::from_millis(300)))
                .at_offset(offset)
                .times(1),
        );
    }
    let sim = start_sim(state).await;
    let telemetry = Arc::new(Telemetry::new());
    let listed = client(&sim, 8, &telemetry)
        .list_keys(Some(WS_A))
        .await
        .expect("listing");
    let hashes: Vec<String> = listed.iter().map(|k| k.hash.to_string()).collect();
    let expected: Vec<String> = (0..400).map(hash).collect();
    assert_eq!(hashes, expected);
    let offsets = key_offsets(&sim, WS_A);
    assert!(offsets.contains(&399), "{offsets:?}");
    assert!(
        offsets.iter().any(|o| *o > 399),
        "a page past the end came back first: {offsets:?}"
    );
}

#[tokio::test]
async fn a_server_that_ignores_offset_still_fails_as_pagination() {
    let mut state = state(50, 0);
    state.keys = keys(WS_A, 0, 500);
    state
        .faults
        .push(Fault::new("/keys", FaultResponse::IgnoreOffset));
    let sim = start_sim(state).await;
    let telemetry = Arc::new(Telemetry::new());
    let err = client(&sim, 8, &telemetry)
        .list_keys(Some(WS_A))
        .await
        .expect_err("a repeated page must fail");
    assert_eq!(err.reason().as_str(), "pagination", "{err}");
}

#[tokio::test]
async fn calls_in_flight_never_exceed_the_limit_across_workspaces_credits_and_activity() {
    let mut state = state(50, 20);
    state.keys = keys(WS_A, 0, 1500);
    state.keys.extend(keys(WS_B, 1500, 1500));
    state.total_credits = 10.0;
    let sim = start_sim(state).await;
    let telemetry = Arc::new(Telemetry::new());
    let client = client(&sim, 3, &telemetry);

    // A full listing, and activity calls from clones at the same time.
    let activity: Vec<_> = (0..30)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.activity::<Vec<serde_json::Value>>(&hash(i)).await })
        })
        .collect();
    let data = client
        .fetch_all(&openrouter_cost_exporter::config::Workspaces::All)
        .await
        .expect("listing");
    for task in activity {
        task.await.expect("task").expect("activity call");
    }
    assert_eq!(data.keys.len(), 3000);
    assert!(data.credits.is_some());
    {
        let st = sim.state();
        assert_eq!(st.max_in_flight, 3, "the limit is reached and never passed");
    }
    assert_eq!(client.call_stats().peak_in_flight, 3);

    // The exporter takes the limit from the config. Pages fetched ahead past
    // the end of the listing may still be on their way or being answered:
    // wait until none has been in flight for 300 ms, so the next peak is the
    // exporter's alone.
    let idle_by = std::time::Instant::now() + Duration::from_secs(5);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < idle_by {
        if sim.state().in_flight > 0 {
            quiet_since = std::time::Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.state().in_flight, 0, "earlier calls still in flight");
    sim.state().max_in_flight = 0;
    let exporter = exporter(Config::parse(&yaml(&sim.base_url(), "30s", "2s", 2), "t").unwrap());
    exporter.refresh().await.expect("refresh");
    assert_eq!(sim.state().max_in_flight, 2);
}

#[tokio::test]
async fn a_429_mid_window_backs_every_call_off_and_is_counted() {
    let mut state = state(50, 10);
    state.workspaces.truncate(1);
    state.keys = keys(WS_A, 0, 2000);
    // One page, well into the window, is rate limited with Retry-After: 1
    // (pages are asked 49 apart, from the last key listed: issue 22).
    state.faults.push(
        Fault::new(
            "/keys",
            FaultResponse::Error {
                status: 429,
                retry_after: Some(1),
            },
        )
        .at_offset(490)
        .times(1),
    );
    let sim = start_sim(state).await;
    let exporter = exporter(Config::parse(&yaml(&sim.base_url(), "30s", "2s", 8), "t").unwrap());
    exporter
        .refresh()
        .await
        .expect("the listing completes after the back-off");

    let text = body(&exporter);
    let samples = parse(&text);
    assert_eq!(
        value(&samples, "openrouter_upstream_throttled_total", &[]),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_upstream_requests_total",
            &[("endpoint", "keys"), ("code", "429")]
        ),
        1.0
    );
    assert_eq!(
        find(
            &samples,
            "openrouter_key_usage_usd",
            &[("window", "lifetime")]
        )
        .len(),
        2000
    );

    // Every call waited: after the 429 was answered, nothing but calls
    // already on their way reached the server until Retry-After had passed.
    let answered = sim.state().answered.clone();
    let throttled_at = answered
        .iter()
        .find(|(_, r)| r.starts_with("/api/v1/keys?") && r.contains("offset=490&"))
        .map(|(t, _)| *t)
        .expect("the 429'd page");
    let quiet_from = throttled_at + Duration::from_millis(100);
    let quiet_until = throttled_at + Duration::from_millis(900);
    let during: Vec<&String> = answered
        .iter()
        .filter(|(t, _)| *t > quiet_from && *t < quiet_until)
        .map(|(_, r)| r)
        .collect();
    assert!(during.is_empty(), "calls during the back-off: {during:?}");
    let retried = answered
        .iter()
        .filter(|(_, r)| r.contains("offset=490&"))
        .count();
    assert_eq!(retried, 2, "the 429'd page is asked again once");
}

#[tokio::test]
async fn a_503_halves_the_window_which_grows_back_one_call_at_a_time() {
    let mut state = state(50, 5);
    state.workspaces.truncate(1);
    state.keys = keys(WS_A, 0, 100);
    state.faults.push(
        Fault::new(
            "/keys",
            FaultResponse::Error {
                status: 503,
                retry_after: None,
            },
        )
        .at_offset(0)
        .times(1),
    );
    let sim = start_sim(state).await;
    let telemetry = Arc::new(Telemetry::new());
    let client = client(&sim, 8, &telemetry);
    client.list_keys(Some(WS_A)).await.expect("listing");
    let stats = client.call_stats();
    assert_eq!(stats.throttled, 1);
    assert_eq!(telemetry.throttled(), 1);
    // Halved to 4, then three answers add 1/4 + 1/4.25 + … — still below 8.
    assert!(stats.window < 8 && stats.window >= 4, "{stats:?}");
}

#[tokio::test]
async fn a_refresh_past_its_deadline_says_why_in_one_line() {
    let mut state = state(50, 100);
    state.workspaces.truncate(1);
    state.keys = keys(WS_A, 0, 100);
    let sim = start_sim(state).await;
    // Deadline 0.9 × 2 s = 1.8 s.
    let exporter = exporter(Config::parse(&yaml(&sim.base_url(), "2s", "1s", 2), "t").unwrap());
    exporter.refresh().await.expect("a small account fits");

    // 3,000 keys: 61 pages × 100 ms ÷ 2 in flight ≈ 3 s > 1.8 s.
    sim.state().keys = keys(WS_A, 0, 3000);
    let err = exporter.refresh().await.expect_err("past the deadline");
    assert!(matches!(err, RefreshError::Deadline(_)), "{err:?}");
    assert_eq!(err.reason().as_str(), "deadline");
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    for needed in [
        "deadline of 1.8s",
        "key pages",
        "mean round trip",
        "in flight",
        "limit 2",
        "last full refresh",
        "raise refresh_interval",
        "openrouter.max_concurrent_requests",
    ] {
        assert!(line.contains(needed), "{needed:?} missing from: {line}");
    }
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(
            &samples,
            "openrouter_refresh_failures_total",
            &[("reason", "deadline")]
        ),
        1.0
    );
}
