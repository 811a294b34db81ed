//! Issue 22, point 8: back-off stays where it belongs. A wait asked for by an
//! activity call holds activity calls only, never the key listing; and a 429
//! without `Retry-After` whose body names `X-RateLimit-Reset` (epoch
//! milliseconds, as live 429s do) waits until then. Against the simulator.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openrouter_cost_exporter::config::Workspaces;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimServer};
use openrouter_cost_exporter::telemetry::Telemetry;
use openrouter_cost_exporter::upstream::{ActivityRow, Client};
use secrecy::SecretString;

/// 250 keys in workspace A (three pages and the last key alone).
async fn sim_of_250() -> SimServer {
    let mut state = empty_state();
    state.workspaces.truncate(1);
    for n in 0..250 {
        state
            .keys
            .push(key_with_usage(WS_A, n, &format!("acme-{n:04}"), 1.0));
    }
    state.total_credits = 10_000.0;
    state.total_usage = state.keys_lifetime_usage();
    start_sim(state).await
}

fn client(sim: &SimServer) -> Client {
    Client::new(
        &sim.base_url(),
        SecretString::from(MANAGEMENT_KEY.to_string()),
        Duration::from_secs(5),
        fast_retry(),
        Arc::new(Telemetry::new()),
    )
    .expect("client")
    .with_max_concurrent_requests(4)
}

/// When the simulator answered a request starting with `prefix`, each time.
fn answered(sim: &SimServer, prefix: &str) -> Vec<Instant> {
    sim.state()
        .answered
        .iter()
        .filter(|(_, r)| r.starts_with(prefix))
        .map(|(t, _)| *t)
        .collect()
}

async fn until_answered(sim: &SimServer, prefix: &str, times: usize) {
    for _ in 0..500 {
        if answered(sim, prefix).len() >= times {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{prefix} was not asked {times} times");
}

/// An activity call answered 429 with a wait of 3 s (the 5 s an activity
/// call may hold the shared budget, as a `Retry-After` header or as a live
/// body's `X-RateLimit-Reset`): the activity call waits it out; a key listing
/// started meanwhile does not wait at all (before issue 22 it waited the 3 s).
#[tokio::test]
async fn an_activity_back_off_never_pauses_the_key_listing() {
    let waits = [
        FaultResponse::Error {
            status: 429,
            retry_after: Some(3),
        },
        FaultResponse::RateLimitReset(Duration::from_secs(3)),
    ];
    for wait in waits {
        let sim = sim_of_250().await;
        sim.state()
            .faults
            .push(Fault::new("/activity", wait.clone()).times(1));
        let client = client(&sim);
        let activity = client.with_deadline(tokio::time::Instant::now() + Duration::from_secs(5));
        let started = Instant::now();
        let call =
            tokio::spawn(async move { activity.activity::<Vec<ActivityRow>>(&hash(1)).await });
        until_answered(&sim, "/api/v1/activity", 1).await;

        let listing_started = Instant::now();
        let data = client
            .with_deadline(tokio::time::Instant::now() + Duration::from_secs(20))
            .fetch_all(&Workspaces::All)
            .await
            .expect("listing");
        let listing_took = listing_started.elapsed();
        assert_eq!(data.keys.len(), 250);
        assert!(
            listing_took < Duration::from_secs(1),
            "{wait:?}: the listing waited {listing_took:?} on an activity back-off"
        );

        call.await
            .unwrap()
            .expect("the activity call, after its wait");
        let activity_took = started.elapsed();
        assert!(
            activity_took >= Duration::from_millis(2500),
            "{wait:?}: the activity call waited only {activity_took:?}"
        );
        assert_eq!(answered(&sim, "/api/v1/activity").len(), 2, "{wait:?}");
    }
}

/// A live-shaped 429 on `/keys`: no `Retry-After`, the reset 1.5 s away in
/// the body. The retry waits for it (the retry policy alone would wait
/// 10–50 ms), and the refresh then succeeds.
#[tokio::test]
async fn a_429_body_reset_is_the_wait_when_no_retry_after_comes() {
    let sim = sim_of_250().await;
    sim.state().faults.push(
        Fault::new(
            "/keys",
            FaultResponse::RateLimitReset(Duration::from_millis(1500)),
        )
        .at_offset(0)
        .times(1),
    );
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    exporter.refresh().await.expect("refresh after the wait");
    let first_pages = answered(&sim, "/api/v1/keys?include_disabled=true&offset=0&");
    assert_eq!(first_pages.len(), 2, "asked once more");
    let waited = first_pages[1] - first_pages[0];
    assert!(
        waited >= Duration::from_millis(1300),
        "retried after {waited:?}, before the body's reset"
    );
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        find(&samples, "openrouter_key_info", &[]).len(),
        250,
        "every key"
    );
}

/// A body reset past the refresh deadline (a per-day limit resets at UTC
/// midnight) fails the refresh at once as `rate_limited`, without retries.
#[tokio::test]
async fn a_429_body_reset_past_the_deadline_fails_at_once() {
    let sim = sim_of_250().await;
    sim.state().faults.push(Fault::new(
        "/keys",
        FaultResponse::RateLimitReset(Duration::from_secs(3600)),
    ));
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    let started = Instant::now();
    let err = exporter.refresh().await.expect_err("rate limited");
    assert_eq!(err.reason(), "rate_limited", "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(answered(&sim, "/api/v1/keys").len(), 1, "not retried");
}
