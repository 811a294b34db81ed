//! Issue 22, points 1 and 2: a `/keys` listing that shifts under deletion
//! never drops a key (every remaining key is listed, or the refresh fails as
//! `pagination`, never `openrouter_up 1` with a key missing), and expired
//! keys are listed (`include_expired=true`), against the simulator.

mod common;

use std::collections::BTreeSet;

use common::*;
use openrouter_cost_exporter::sim::{Deletion, SimServer, SimState};
use serde_json::json;

const ACME: &str = "  acme:\n    keys: [{name_glob: 'acme-*'}]\n";

/// 250 keys `acme-0000`… in workspace A (pages of 100); key n spends $(1000 + 10 n) lifetime.
fn account_of_250() -> SimState {
    let mut state = empty_state();
    state.workspaces.truncate(1);
    for n in 0..250 {
        let name = format!("acme-{n:04}");
        let key = key_with_usage(WS_A, n, &name, 0.0).set("usage", json!(1000.0 + 10.0 * n as f64));
        state.keys.push(key);
    }
    state.total_credits = 1_000_000.0;
    state.total_usage = state.keys_lifetime_usage();
    state
}

/// The keys the exporter published (`openrouter_key_info`), by name.
fn exported(samples: &[Sample]) -> BTreeSet<String> {
    find(samples, "openrouter_key_info", &[])
        .iter()
        .map(|s| s.labels["key"].clone())
        .collect()
}

fn names(sim: &SimServer) -> BTreeSet<String> {
    sim.state()
        .keys
        .iter()
        .map(|k| k.fields["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// One refresh while `deletions` fire: it succeeds with every key that
/// remains (and at most the deleted ones besides, listed before they went),
/// or fails as `pagination`, with `openrouter_up 0`.
async fn refresh_while_deleting(deletions: Vec<Deletion>) -> Result<BTreeSet<String>, String> {
    let mut state = account_of_250();
    let deleted: BTreeSet<String> = deletions
        .iter()
        .filter_map(|d| {
            let key = state.keys.iter().find(|k| k.hash() == d.id)?;
            Some(key.fields["name"].as_str()?.to_string())
        })
        .collect();
    state.deletions = deletions;
    let sim = start_sim(state).await;
    let exporter = exporter(config(&sim.base_url(), ACME));
    let outcome = exporter.refresh().await;
    let samples = parse(&body(&exporter));
    let remaining = names(&sim);
    match outcome {
        Ok(_) => {
            assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
            let listed = exported(&samples);
            let missing: Vec<&String> = remaining.difference(&listed).collect();
            assert!(
                missing.is_empty(),
                "keys missing with openrouter_up 1: {missing:?}"
            );
            let extra: Vec<&String> = listed.difference(&remaining).collect();
            assert!(
                extra.iter().all(|k| deleted.contains(*k)),
                "keys that never existed: {extra:?}"
            );
            Ok(listed)
        }
        Err(e) => {
            assert_eq!(e.reason(), "pagination", "{e}");
            assert_eq!(value(&samples, "openrouter_up", &[]), 0.0);
            Err(e.to_string())
        }
    }
}

/// The review's reproduction (correctness-2026-12 #1): key #0 deleted as the
/// listing asks from offset 100 or beyond. Before issue 22 `acme-0100`
/// vanished with `openrouter_up 1`.
#[tokio::test]
async fn a_key_deleted_mid_listing_never_makes_another_vanish() {
    for from in [1, 100, 150] {
        let listed = refresh_while_deleting(vec![Deletion::new("/keys", from, &hash(0))])
            .await
            .unwrap_or_else(|e| {
                panic!("deletion from offset {from}: the shift is mended, not failed: {e}")
            });
        assert!(listed.contains("acme-0100"), "from {from}");
        assert!(listed.contains("acme-0249"), "from {from}");
    }
}

/// Several keys deleted at several points of one listing, with pages in
/// flight side by side: still every remaining key.
#[tokio::test]
async fn several_deletions_with_pages_in_flight_still_list_every_remaining_key() {
    let deletions = vec![
        Deletion::new("/keys", 1, &hash(3)),
        Deletion::new("/keys", 100, &hash(120)),
        Deletion::new("/keys", 150, &hash(0)),
        Deletion::new("/keys", 190, &hash(197)),
    ];
    let listed = refresh_while_deleting(deletions).await.expect("mended");
    assert!(listed.contains("acme-0198") && listed.contains("acme-0121"));
}

/// The key listed last is itself deleted before the next page: nothing one
/// page back shows where the listing stands, so the workspace is listed again.
#[tokio::test]
async fn the_last_listed_key_deleted_lists_the_workspace_again() {
    let listed = refresh_while_deleting(vec![Deletion::new("/keys", 1, &hash(99))])
        .await
        .expect("listed again");
    assert!(listed.contains("acme-0100"));
}

/// A list that keeps shifting on every new listing fails the refresh as
/// `pagination` after a bounded number of listings; it never publishes a
/// listing with a key missing.
#[tokio::test]
async fn a_list_that_keeps_shifting_fails_as_pagination() {
    // Each listing loses the key it listed last as it asks for page two.
    let deletions = (99..105)
        .map(|n| Deletion::new("/keys", 1, &hash(n)))
        .collect();
    let err = refresh_while_deleting(deletions)
        .await
        .expect_err("fails rather than drop a key");
    assert!(err.contains("shifted"), "{err}");
}

/// Point 2: newer OpenRouter leaves expired keys out of `/keys` unless
/// `include_expired=true`; an expired key's spend is still billed spend.
#[tokio::test]
async fn expired_keys_are_listed_and_counted() {
    let mut state = empty_state();
    state.keys = vec![
        key_with_usage(WS_A, 1, "acme-live", 1.0),
        key_with_usage(WS_A, 2, "acme-expired", 2.0)
            .set("expires_at", json!("2020-01-01T00:00:00Z")),
    ];
    state.total_credits = 100.0;
    state.total_usage = state.keys_lifetime_usage();
    let sim = start_sim(state).await;

    // The simulator holds to the newer API: the expired key only when asked for.
    let http = reqwest::Client::new();
    for (query, want) in [("", 1), ("&include_expired=true", 2)] {
        let url = format!(
            "{}/keys?include_disabled=true&workspace_id={WS_A}{query}",
            sim.base_url()
        );
        let text = http
            .get(url)
            .bearer_auth(MANAGEMENT_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let page: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(page["data"].as_array().unwrap().len(), want, "{query}");
    }

    let exporter = exporter(config(&sim.base_url(), ACME));
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key", "acme-expired"), ("window", "monthly")]
        ),
        6.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "monthly")]
        ),
        9.0
    );
    assert!(sim
        .state()
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/keys?") && r.contains("offset="))
        .all(|r| r.contains("include_expired=true") && r.contains("include_disabled=true")));
}
