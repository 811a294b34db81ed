//! Fault injection against the simulated OpenRouter, in process.
//!
//! Every failure must fail the refresh whole: the previous snapshot stays
//! published byte for byte, `openrouter_up` drops to 0,
//! `openrouter_refresh_failures_total{reason}` counts it under a bounded
//! reason, and the next good refresh recovers. Retries are counted exactly:
//! the simulator's request log and `openrouter_upstream_requests_total` must
//! agree with the retry policy.

mod common;

use std::time::{Duration, Instant};

use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::{Exporter, RefreshError};
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimServer, SimState};
use openrouter_cost_exporter::telemetry::FailureReason;
use openrouter_cost_exporter::upstream::{RetryPolicy, UpstreamError, MAX_BODY_BYTES};
use secrecy::SecretString;
use serde_json::json;

const COMPANIES: &str =
    "  acme:\n    keys: [{name_glob: 'acme-*'}]\n  globex:\n    keys: [globex-prod]\n";

/// Attempts per call under `common::fast_retry()`.
const ATTEMPTS: usize = 3;

/// Five keys over two workspaces, every amount distinct.
fn account() -> SimState {
    let mut state = empty_state();
    state.keys.push(key_with_usage(WS_A, 1, "acme-prod", 1.0));
    state.keys.push(key_with_usage(WS_A, 2, "acme-dev", 0.5));
    state.keys.push(key_with_usage(WS_A, 3, "stray-a", 0.25));
    state.keys.push(key_with_usage(WS_B, 4, "globex-prod", 2.0));
    state.keys.push(key_with_usage(WS_B, 5, "acme-b", 0.125));
    state.total_credits = 100.0;
    state.total_usage = state.keys_lifetime_usage() + 5.0;
    state
}

fn yaml(base_url: &str, refresh: &str, timeout: &str, extra: &str) -> String {
    TestConfig::new(base_url)
        .refresh(refresh)
        .timeout(timeout)
        .extra(extra)
        .companies(COMPANIES)
        .yaml()
}

fn config_with(base_url: &str, refresh: &str, timeout: &str, extra: &str) -> Config {
    Config::parse(&yaml(base_url, refresh, timeout, extra), "faults test").expect("valid config")
}

/// The usual exporter: 30 s interval, 800 ms request timeout, fast retries.
fn quick_exporter(base_url: &str) -> Exporter {
    exporter(config_with(base_url, "30s", "800ms", ""))
}

/// The per-key and per-company sample lines, in order.
fn key_and_company_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("openrouter_key_") || l.starts_with("openrouter_company_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `openrouter_upstream_requests_total{endpoint,code}`, 0 when absent.
fn upstream_count(text: &str, endpoint: &str, code: &str) -> f64 {
    let samples = parse(text);
    let found = find(
        &samples,
        "openrouter_upstream_requests_total",
        &[("endpoint", endpoint), ("code", code)],
    );
    found.first().map_or(0.0, |s| s.value)
}

fn up(text: &str) -> f64 {
    value(&parse(text), "openrouter_up", &[])
}

/// Requests the simulator saw whose path and query start with `prefix`.
fn requests(sim: &SimServer, prefix: &str) -> usize {
    sim.state()
        .requests
        .iter()
        .filter(|r| r.starts_with(prefix))
        .count()
}

fn keys_path(workspace: &str) -> String {
    format!("/api/v1/keys?include_disabled=true&offset=0&workspace_id={workspace}")
}

/// Makes every key's lifetime usage grow, so a refresh that slipped through would show.
fn bump_spend(sim: &SimServer) {
    let mut st = sim.state();
    for key in &mut st.keys {
        let usage = key.num("usage").unwrap_or(0.0) + 1.0;
        key.fields.insert("usage".into(), json!(usage));
    }
    st.total_usage += 5.0;
}

fn lifetime_of(text: &str, n: usize) -> f64 {
    value(
        &parse(text),
        "openrouter_key_usage_usd",
        &[("key_hash", &hash(n)), ("window", "lifetime")],
    )
}

/// A good refresh, then `faults` (with spend changing upstream): the refresh
/// must fail whole with `reason`, leave the snapshot byte for byte, and a later
/// good refresh must recover. Returns the failed refresh's error.
async fn fails_whole(
    sim: &SimServer,
    exporter: &Exporter,
    faults: Vec<Fault>,
    reason: &str,
) -> RefreshError {
    exporter.refresh().await.expect("good refresh first");
    let before = body(exporter);
    assert_eq!(up(&before), 1.0);
    let success_ts = value(
        &parse(&before),
        "openrouter_last_refresh_success_timestamp_seconds",
        &[],
    );
    let failures_before = failures(&before, reason);
    let lifetime_before = lifetime_of(&before, 1);

    bump_spend(sim);
    sim.state().faults.extend(faults);
    let err = exporter.refresh().await.expect_err("the refresh must fail");
    assert_eq!(err.reason().as_str(), reason, "reason of {err}");

    let after = body(exporter);
    assert_eq!(
        snapshot_part(&before),
        snapshot_part(&after),
        "the previous snapshot must stay byte for byte after: {err}"
    );
    assert_eq!(
        key_and_company_lines(&before),
        key_and_company_lines(&after)
    );
    assert!(!key_and_company_lines(&after).is_empty());
    assert_eq!(up(&after), 0.0, "openrouter_up after: {err}");
    assert_eq!(failures(&after, reason), failures_before + 1.0);
    assert_eq!(
        value(
            &parse(&after),
            "openrouter_last_refresh_success_timestamp_seconds",
            &[]
        ),
        success_ts
    );
    // Reasons are a closed set.
    for s in find(&parse(&after), "openrouter_refresh_failures_total", &[]) {
        let r = s.labels["reason"].as_str();
        assert!(
            FailureReason::ALL.iter().any(|known| known.as_str() == r),
            "unbounded reason {r:?}"
        );
    }
    assert!(FailureReason::ALL
        .iter()
        .any(|known| known.as_str() == reason));

    sim.state().faults.clear();
    exporter
        .refresh()
        .await
        .expect("recovery once the fault clears");
    let recovered = body(exporter);
    assert_eq!(up(&recovered), 1.0);
    assert_eq!(lifetime_of(&recovered, 1), lifetime_before + 1.0);
    err
}

trait FaultExt {
    fn for_workspace_if(self, when: bool, workspace: &str) -> Fault;
}

impl FaultExt for Fault {
    fn for_workspace_if(self, when: bool, workspace: &str) -> Fault {
        if when {
            self.for_workspace(workspace)
        } else {
            self
        }
    }
}

// ------------------------------------------------------------------ retries

#[tokio::test]
async fn http_500_is_retried_and_every_attempt_counted() {
    let sim = start_sim(account()).await;
    let exporter = quick_exporter(&sim.base_url());
    sim.state().faults.push(
        Fault::new(
            "/keys",
            FaultResponse::Error {
                status: 500,
                retry_after: None,
            },
        )
        .for_workspace(WS_A)
        .times(2),
    );
    exporter.refresh().await.expect("third attempt succeeds");
    let text = body(&exporter);
    assert_eq!(up(&text), 1.0);
    assert_eq!(requests(&sim, &keys_path(WS_A)), 3);
    assert_eq!(requests(&sim, &keys_path(WS_B)), 1);
    assert_eq!(upstream_count(&text, "keys", "500"), 2.0);
    // One page and the empty page that ends the listing, per workspace.
    assert_eq!(upstream_count(&text, "keys", "200"), 4.0);
    assert_eq!(upstream_count(&text, "workspaces", "200"), 1.0);
    assert_eq!(upstream_count(&text, "credits", "200"), 1.0);
    assert_eq!(
        exporter.telemetry().total_requests(),
        sim.state().requests.len() as u64,
        "every call the simulator saw is counted once"
    );
}

#[tokio::test]
async fn persistent_5xx_gives_up_after_the_bounded_attempts() {
    for status in [500, 502, 503, 504] {
        let sim = start_sim(account()).await;
        let exporter = quick_exporter(&sim.base_url());
        let started = Instant::now();
        let err = fails_whole(
            &sim,
            &exporter,
            vec![Fault::new(
                "/workspaces",
                FaultResponse::Error {
                    status,
                    retry_after: None,
                },
            )],
            "server_error",
        )
        .await;
        assert!(err.to_string().contains(&status.to_string()), "{err}");
        // 2 good refreshes + 1 failing one of ATTEMPTS calls.
        assert_eq!(requests(&sim, "/api/v1/workspaces"), 2 + ATTEMPTS);
        let text = body(&exporter);
        assert_eq!(
            upstream_count(&text, "workspaces", &status.to_string()),
            ATTEMPTS as f64
        );
        assert_eq!(upstream_count(&text, "workspaces", "200"), 2.0);
        // fast_retry caps each delay at 50 ms.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn http_429_without_retry_after_is_retried_then_reported_as_rate_limited() {
    let sim = start_sim(account()).await;
    let exporter = quick_exporter(&sim.base_url());
    fails_whole(
        &sim,
        &exporter,
        vec![Fault::new(
            "/workspaces",
            FaultResponse::Error {
                status: 429,
                retry_after: None,
            },
        )],
        "rate_limited",
    )
    .await;
    assert_eq!(requests(&sim, "/api/v1/workspaces"), 2 + ATTEMPTS);
    assert_eq!(
        upstream_count(&body(&exporter), "workspaces", "429"),
        ATTEMPTS as f64
    );
}

/// An exporter whose retry policy lets a 1 s `Retry-After` through uncapped.
fn patient_exporter(base_url: &str) -> Exporter {
    let retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    };
    Exporter::with_key(
        config_with(base_url, "30s", "2s", ""),
        SecretString::from(MANAGEMENT_KEY.to_string()),
        retry,
    )
    .expect("exporter")
}

#[tokio::test]
async fn retry_after_on_429_and_503_is_honoured() {
    for (status, path, endpoint) in [
        (429, "/credits", "credits"),
        (503, "/workspaces", "workspaces"),
    ] {
        let sim = start_sim(account()).await;
        let exporter = patient_exporter(&sim.base_url());
        sim.state().faults.push(
            Fault::new(
                path,
                FaultResponse::Error {
                    status,
                    retry_after: Some(1),
                },
            )
            .times(1),
        );
        let started = Instant::now();
        exporter
            .refresh()
            .await
            .expect("the retry after Retry-After succeeds");
        let elapsed = started.elapsed();
        // The jittered backoff alone would be at most 10 ms.
        assert!(
            elapsed >= Duration::from_millis(950),
            "{status}: retried after {elapsed:?}"
        );
        assert_eq!(requests(&sim, &format!("/api/v1{path}")), 2, "{status}");
        let text = body(&exporter);
        assert_eq!(up(&text), 1.0);
        assert_eq!(upstream_count(&text, endpoint, &status.to_string()), 1.0);
        assert_eq!(upstream_count(&text, endpoint, "200"), 1.0);
    }
}

#[tokio::test]
async fn retry_after_past_the_deadline_fails_fast_as_rate_limited() {
    let sim = start_sim(account()).await;
    let exporter = quick_exporter(&sim.base_url());
    exporter.refresh().await.expect("good refresh");
    // A server asking for an hour: waiting would pass the refresh deadline, so
    // the refresh gives up at once instead of stalling until the deadline.
    sim.state().faults.push(Fault::new(
        "/workspaces",
        FaultResponse::Error {
            status: 429,
            retry_after: Some(3600),
        },
    ));
    let started = Instant::now();
    let err = exporter.refresh().await.expect_err("rate limited");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.reason().as_str(), "rate_limited", "{err}");
    assert!(err.to_string().contains("3600s"), "{err}");
    // The good refresh and the one 429: no retry was attempted.
    assert_eq!(requests(&sim, "/api/v1/workspaces"), 2);
    assert_eq!(failures(&body(&exporter), "rate_limited"), 1.0);
}

#[tokio::test]
async fn timeouts_are_retried_and_counted_as_timeout() {
    let sim = start_sim(account()).await;
    let exporter = quick_exporter(&sim.base_url());
    sim.state()
        .faults
        .push(Fault::new("/workspaces", FaultResponse::Delay(Duration::from_secs(2))).times(1));
    exporter.refresh().await.expect("the retry succeeds");
    let text = body(&exporter);
    assert_eq!(upstream_count(&text, "workspaces", "timeout"), 1.0);
    assert_eq!(upstream_count(&text, "workspaces", "200"), 1.0);
    assert_eq!(requests(&sim, "/api/v1/workspaces"), 2);

    let err = fails_whole(
        &sim,
        &exporter,
        vec![Fault::new(
            "/workspaces",
            FaultResponse::Delay(Duration::from_secs(2)),
        )],
        "timeout",
    )
    .await;
    assert!(
        matches!(err.upstream(), Some(UpstreamError::Timeout { .. })),
        "{err:?}"
    );
    assert_eq!(
        upstream_count(&body(&exporter), "workspaces", "timeout"),
        1.0 + ATTEMPTS as f64
    );
}

#[tokio::test]
async fn connection_refused_is_retried_and_counted_as_error() {
    // Nothing listens on a port just released.
    let base_url = format!("http://127.0.0.1:{}/api/v1", free_port());
    let exporter = quick_exporter(&base_url);
    let err = exporter.refresh().await.expect_err("no server");
    assert_eq!(err.reason().as_str(), "connection", "{err}");
    assert!(!err.to_string().contains(MANAGEMENT_KEY));
    let text = body(&exporter);
    assert_eq!(
        upstream_count(&text, "workspaces", "error"),
        ATTEMPTS as f64
    );
    assert_eq!(up(&text), 0.0);
    assert_eq!(failures(&text, "connection"), 1.0);
    // Nothing was ever fetched: no OpenRouter figure is invented.
    assert!(find(&parse(&text), "openrouter_company_usage_usd", &[]).is_empty());
    assert!(!exporter.is_ready());
}

#[tokio::test]
async fn dropped_connections_are_retried_and_fail_whole() {
    let sim = start_sim(account()).await;
    let exporter = quick_exporter(&sim.base_url());
    // One drop is absorbed by a retry.
    sim.state().faults.push(
        Fault::new("/keys", FaultResponse::Disconnect)
            .for_workspace(WS_B)
            .times(1),
    );
    exporter
        .refresh()
        .await
        .expect("retry after a dropped connection");
    assert_eq!(upstream_count(&body(&exporter), "keys", "error"), 1.0);
    assert_eq!(requests(&sim, &keys_path(WS_B)), 2);

    fails_whole(
        &sim,
        &exporter,
        vec![Fault::new("/keys", FaultResponse::Disconnect).for_workspace(WS_B)],
        "connection",
    )
    .await;
    assert_eq!(
        upstream_count(&body(&exporter), "keys", "error"),
        1.0 + ATTEMPTS as f64
    );
}

#[tokio::test]
async fn body_cut_off_mid_stream_is_retried_and_fails_whole() {
    let sim = start_sim(account()).await;
    let exporter = quick_exporter(&sim.base_url());
    let err = fails_whole(
        &sim,
        &exporter,
        vec![Fault::new(
            "/workspaces",
            FaultResponse::CutOff {
                body: r#"{"data":{"total_credits":"#.into(),
                declared: 4096,
            },
        )],
        "connection",
    )
    .await;
    assert!(
        matches!(err.upstream(), Some(UpstreamError::Transport { .. })),
        "{err:?}"
    );
    // good + ATTEMPTS + recovery. The status line came (200), then the body
    // broke: each broken attempt counts under code 200.
    assert_eq!(requests(&sim, "/api/v1/workspaces"), 2 + ATTEMPTS);
    assert_eq!(
        upstream_count(&body(&exporter), "workspaces", "200"),
        (2 + ATTEMPTS) as f64
    );
}

// ------------------------------------------------------------ not retried

#[tokio::test]
async fn unauthorized_and_forbidden_are_not_retried_and_ask_for_a_management_key() {
    let ws_a_keys = keys_path(WS_A);
    for (status, path, counted, endpoint) in [
        (401, "/workspaces", "/api/v1/workspaces", "workspaces"),
        (403, "/keys", ws_a_keys.as_str(), "keys"),
    ] {
        let sim = start_sim(account()).await;
        let exporter = quick_exporter(&sim.base_url());
        let calls_before = |sim: &SimServer| requests(sim, counted);
        exporter.refresh().await.expect("good refresh");
        let good = calls_before(&sim);
        assert_eq!(good, 1);
        let err = fails_whole(
            &sim,
            &exporter,
            vec![Fault::new(
                path,
                FaultResponse::Error {
                    status,
                    retry_after: Some(0),
                },
            )
            .for_workspace_if(endpoint == "keys", WS_A)
            .times(1)],
            "unauthorized",
        )
        .await;
        assert!(
            matches!(err.upstream(), Some(UpstreamError::Unauthorized { .. })),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("management key"), "{message}");
        assert!(message.contains(&status.to_string()), "{message}");
        // good refresh (here and in fails_whole) + exactly one failing call + recovery.
        let per_refresh = good;
        assert_eq!(calls_before(&sim), per_refresh * 3 + 1, "{status} retried");
        assert_eq!(
            upstream_count(&body(&exporter), endpoint, &status.to_string()),
            1.0
        );
    }
}

#[tokio::test]
async fn a_wrong_key_is_refused_once_and_not_retried() {
    let sim = start_sim(account()).await;
    let exporter = Exporter::with_key(
        config_with(&sim.base_url(), "30s", "300ms", ""),
        SecretString::from("sk-or-v1-an-inference-key".to_string()),
        fast_retry(),
    )
    .expect("exporter");
    let err = exporter.refresh().await.expect_err("wrong key");
    assert_eq!(err.reason().as_str(), "unauthorized");
    assert!(err.to_string().contains("management key"), "{err}");
    assert_eq!(sim.state().requests.len(), 1);
    let text = body(&exporter);
    assert_eq!(upstream_count(&text, "workspaces", "401"), 1.0);
    assert_eq!(failures(&text, "unauthorized"), 1.0);
}

#[tokio::test]
async fn a_workspace_vanishing_mid_refresh_fails_whole_without_retry() {
    let sim = start_sim(account()).await;
    let exporter = quick_exporter(&sim.base_url());
    let err = fails_whole(
        &sim,
        &exporter,
        // /workspaces still lists B, but its listing answers 404.
        vec![Fault::new(
            "/keys",
            FaultResponse::Error {
                status: 404,
                retry_after: None,
            },
        )
        .for_workspace(WS_B)],
        "client_error",
    )
    .await;
    assert!(err.to_string().contains("404"), "{err}");
    // Two good refreshes and one 404: a 404 is not retried.
    assert_eq!(requests(&sim, &keys_path(WS_B)), 3);
    assert_eq!(upstream_count(&body(&exporter), "keys", "404"), 1.0);
}

// ------------------------------------------------------------ bad bodies

async fn invalid_body_fails_whole(fault: FaultResponse) -> RefreshError {
    let sim = start_sim(account()).await;
    let exporter = quick_exporter(&sim.base_url());
    let err = fails_whole(
        &sim,
        &exporter,
        vec![Fault::new("/keys", fault).for_workspace(WS_B)],
        "invalid_response",
    )
    .await;
    // A bad body is not retried: it would come back the same.
    assert_eq!(requests(&sim, &keys_path(WS_B)), 3);
    assert!(!err.to_string().contains(MANAGEMENT_KEY));
    err
}

#[tokio::test]
async fn malformed_json_fails_whole() {
    let err = invalid_body_fails_whole(FaultResponse::Raw {
        content_type: "application/json".into(),
        body: "{\"data\": [{\"hash\": 12, \"name\": }]}".into(),
    })
    .await;
    assert!(
        matches!(err.upstream(), Some(UpstreamError::Decode { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn json_of_the_wrong_shape_fails_whole() {
    for body in [
        r#"{"data": {"hash": "x"}}"#,
        r#"{"data": null}"#,
        r#"{"keys": []}"#,
        r#"{"data": [{"name": "no hash"}]}"#,
        r#"{"data": [{"hash": "h", "usage": "12"}]}"#,
        r#"{"data": [{"hash": "h", "usage": 1e999}]}"#,
        "",
    ] {
        let err = invalid_body_fails_whole(FaultResponse::Raw {
            content_type: "application/json".into(),
            body: body.into(),
        })
        .await;
        assert!(
            matches!(err.upstream(), Some(UpstreamError::Decode { .. })),
            "{body}: {err:?}"
        );
    }
}

#[tokio::test]
async fn truncated_json_fails_whole() {
    let page = json!({"data": [{"hash": hash(9), "name": "acme-x", "usage": 1.0}]}).to_string();
    let err = invalid_body_fails_whole(FaultResponse::Raw {
        content_type: "application/json".into(),
        body: page[..page.len() / 2].to_string(),
    })
    .await;
    assert!(err.to_string().contains("invalid response"), "{err}");
}

#[tokio::test]
async fn wrong_content_type_fails_whole() {
    let err = invalid_body_fails_whole(FaultResponse::ContentType(
        "text/html; charset=utf-8".into(),
    ))
    .await;
    assert!(err.to_string().contains("text/html"), "{err}");
}

#[tokio::test]
async fn oversized_body_with_content_length_is_refused_unread() {
    let err = invalid_body_fails_whole(FaultResponse::Stream {
        bytes: MAX_BODY_BYTES as u64 + 1,
        content_length: true,
    })
    .await;
    assert!(
        matches!(err.upstream(), Some(UpstreamError::TooLarge { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn endless_chunked_body_is_cut_at_the_cap() {
    let started = Instant::now();
    let err = invalid_body_fails_whole(FaultResponse::Stream {
        bytes: u64::MAX,
        content_length: false,
    })
    .await;
    assert!(
        matches!(err.upstream(), Some(UpstreamError::TooLarge { .. })),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_body_just_under_the_cap_is_read() {
    // The cap is not off by one: exactly MAX_BODY_BYTES is read (then fails as JSON, not as size).
    let err = invalid_body_fails_whole(FaultResponse::Stream {
        bytes: MAX_BODY_BYTES as u64,
        content_length: false,
    })
    .await;
    assert!(
        matches!(err.upstream(), Some(UpstreamError::Decode { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_key_page_repeating_forever_fails_whole_after_two_pages() {
    let mut state = account();
    for n in 100..347 {
        state
            .keys
            .push(key_with_usage(WS_A, n, &format!("acme-bulk-{n}"), 0.01));
    }
    let sim = start_sim(state).await;
    let exporter = quick_exporter(&sim.base_url());
    exporter.refresh().await.expect("good refresh");
    let good_calls = requests(&sim, "/api/v1/keys?include_disabled=true&offset=");
    let err = fails_whole(
        &sim,
        &exporter,
        vec![Fault::new("/keys", FaultResponse::IgnoreOffset).for_workspace(WS_A)],
        "pagination",
    )
    .await;
    assert!(err.to_string().contains("repeats"), "{err}");
    assert!(err.to_string().contains(WS_A), "{err}");
    // Workspace A asked for page 1, got page 0 again: exactly 2 calls before giving up.
    // 3 pages + the last key alone in A, 1 page + the last key alone in B
    // (pages are asked from the last key listed, issue 22), plus pages
    // fetched ahead past the end (issue 17: at most K − 1 = 7 per workspace).
    let per_good_refresh = good_calls;
    assert!(
        (6..=6 + 7).contains(&per_good_refresh),
        "{per_good_refresh}"
    );
    let offset_99 = requests(
        &sim,
        &format!("/api/v1/keys?include_disabled=true&offset=99&workspace_id={WS_A}"),
    );
    let offset_198 = requests(
        &sim,
        &format!("/api/v1/keys?include_disabled=true&offset=198&workspace_id={WS_A}"),
    );
    // good, good, failing (stopped at offset 99), recovery.
    assert_eq!(offset_99, 4);
    assert_eq!(offset_198, 3);
}

#[tokio::test]
async fn a_workspace_list_repeating_forever_fails_whole() {
    let mut state = account();
    for n in 0..120 {
        state
            .workspaces
            .push((format!("ws-extra-{n:03}"), format!("extra {n}")));
    }
    let sim = start_sim(state).await;
    let exporter = quick_exporter(&sim.base_url());
    let err = fails_whole(
        &sim,
        &exporter,
        vec![Fault::new("/workspaces", FaultResponse::IgnoreOffset)],
        "pagination",
    )
    .await;
    assert!(err.to_string().contains("/workspaces"), "{err}");
    // good: 2 pages; failing: page 0, then page 0 again = 2; recovery: 2.
    assert_eq!(requests(&sim, "/api/v1/workspaces"), 6);
}

// ------------------------------------------------------- deadline, staleness

#[tokio::test]
async fn whole_refresh_deadline_is_enforced() {
    let sim = start_sim(account()).await;
    // 0.9 × 2 s = 1.8 s deadline; each call could wait 1.9 s.
    let exporter = exporter(config_with(&sim.base_url(), "2s", "1900ms", ""));
    exporter.refresh().await.expect("good refresh");
    let before = body(&exporter);
    sim.state().faults.push(Fault::new(
        "/credits",
        FaultResponse::Delay(Duration::from_secs(5)),
    ));
    let started = Instant::now();
    let err = exporter
        .refresh()
        .await
        .expect_err("the deadline must fire");
    let elapsed = started.elapsed();
    assert!(matches!(err, RefreshError::Deadline(_)), "{err:?}");
    assert_eq!(err.reason().as_str(), "deadline");
    assert!(
        elapsed < Duration::from_secs(4),
        "returned after {elapsed:?}"
    );
    let after = body(&exporter);
    assert_eq!(up(&after), 0.0);
    assert_eq!(snapshot_part(&before), snapshot_part(&after));
    assert_eq!(failures(&after, "deadline"), 1.0);
}

#[tokio::test]
async fn readiness_goes_stale_while_metrics_keep_the_old_data() {
    use openrouter_cost_exporter::server::{serve, ServerOptions};

    let sim = start_sim(account()).await;
    let exporter = exporter(config_with(
        &sim.base_url(),
        "1s",
        "200ms",
        "stale_after_intervals: 1\n",
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(
        listener,
        exporter.clone(),
        ServerOptions::default(),
        shutdown,
    ));
    let http = reqwest::Client::new();
    let readyz = || async {
        http.get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    assert!(!exporter.is_ready(), "not ready before the first refresh");
    assert_eq!(readyz().await, 503);
    exporter.refresh().await.expect("good refresh");
    assert!(exporter.is_ready());
    assert_eq!(readyz().await, 200);
    let good = body(&exporter);
    let ts = value(
        &parse(&good),
        "openrouter_last_refresh_success_timestamp_seconds",
        &[],
    );

    sim.state().faults.push(Fault::new(
        "/workspaces",
        FaultResponse::Error {
            status: 500,
            retry_after: None,
        },
    ));
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1300) {
        assert!(exporter.refresh().await.is_err());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !exporter.is_ready(),
        "stale after more than one interval of failures"
    );
    assert_eq!(readyz().await, 503);

    let served = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    let served = served.text().await.unwrap();
    assert_eq!(
        snapshot_part(&served),
        snapshot_part(&good),
        "old data still served"
    );
    let samples = parse(&served);
    assert_eq!(value(&samples, "openrouter_up", &[]), 0.0);
    assert_eq!(
        value(
            &samples,
            "openrouter_last_refresh_success_timestamp_seconds",
            &[]
        ),
        ts
    );

    sim.state().faults.clear();
    exporter.refresh().await.expect("recovery");
    assert!(exporter.is_ready());
    assert_eq!(readyz().await, 200);

    stop.send_replace(true);
    server.await.unwrap().unwrap();
}
