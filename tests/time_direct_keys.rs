//! Issue 22 point 4: a direct key counts once. A direct key that the
//! management API also lists pairs with it by its masked label even when
//! spend between the two reads (or a failed poll's older figures) sets their
//! lifetimes apart; it counts under the direct key's configured company. A
//! listed key that only shares the label stays a key of its own. A company
//! added by a reload with a direct key is absent until the key is polled,
//! never `$0`. Against the simulated OpenRouter.

mod common;

use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimKey, SimServer, SimState};
use serde_json::json;

const SECRET: &str = "sk-or-v1-inference-initech";

/// acme-0 (label …a00), acme-1 (label …a01: initech's direct key) and
/// globex-0 (label …b00), with distinct figures.
fn account() -> SimState {
    let mut state = empty_state();
    let keys = [("acme-0", "a00"), ("acme-1", "a01"), ("globex-0", "b00")];
    for (n, (name, label)) in keys.iter().enumerate() {
        let base = 10.0 * (n + 1) as f64;
        state.keys.push(
            SimKey::new(WS_A, &hash(n), name)
                .usage(base / 10.0, base / 2.0, base, base * 10.0)
                .set("label", json!(format!("sk-or-v1-{label}...{label}"))),
        );
    }
    state.inference_keys.insert(SECRET.into(), hash(1));
    state.total_credits = 10_000.0;
    state.total_usage = state.keys_lifetime_usage();
    state
}

const COMPANIES: &str =
    "  acme:\n    keys: [{name_glob: 'acme-*'}]\n  globex:\n    keys: [{name_glob: 'globex-*'}]\n";

/// The config with `initech` holding the direct key whose secret is in `dir`.
fn with_initech(sim: &SimServer, dir: &tempfile::TempDir) -> Config {
    let secret = dir.path().join("initech");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let companies = format!(
        "{COMPANIES}  initech:\n    keys:\n      - {{name: initech-direct, secret_file: {}}}\n",
        secret.display()
    );
    config(&sim.base_url(), &companies)
}

/// `GET /key` answers these figures, for every poll from now on.
fn key_answers(sim: &SimServer, label: &str, daily: f64, monthly: f64, lifetime: f64) {
    let body = json!({"data": {
        "label": label, "limit": null, "limit_remaining": null, "limit_reset": null,
        "usage": lifetime, "usage_daily": daily, "usage_weekly": monthly / 2.0,
        "usage_monthly": monthly, "is_free_tier": false, "is_management_key": false,
        "is_provisioning_key": false, "creator_user_id": null, "expires_at": null,
    }})
    .to_string();
    sim.state().faults.push(Fault::new(
        "/key",
        FaultResponse::Reply { status: 200, body },
    ));
}

fn company(samples: &[Sample], company: &str, window: &str) -> Option<f64> {
    let found = find(
        samples,
        "openrouter_company_usage_usd",
        &[("company", company), ("window", window)],
    );
    found.first().map(|s| s.value)
}

/// The sum over every company (the unassigned one included) of `window`.
fn companies_total(samples: &[Sample], window: &str) -> f64 {
    find(
        samples,
        "openrouter_company_usage_usd",
        &[("window", window)],
    )
    .iter()
    .map(|s| s.value)
    .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The pair is reported, acme-1 is published once (as the direct key) and
/// counted under initech only.
fn assert_counted_once(samples: &[Sample]) {
    assert_eq!(
        value(
            samples,
            "openrouter_direct_key_also_listed",
            &[
                ("key", "initech-direct"),
                ("company", "initech"),
                ("listed_company", "acme")
            ]
        ),
        1.0
    );
    assert_absent(samples, "openrouter_key_info", &[("key_hash", &hash(1))]);
    assert_eq!(
        value(samples, "openrouter_company_keys", &[("company", "acme")]),
        1.0
    );
    assert_eq!(company(samples, "acme", "monthly"), Some(10.0));
}

async fn refreshed(exporter: &Exporter) -> Vec<Sample> {
    let _ = exporter.refresh().await;
    parse(&body(exporter))
}

/// The review's finding 2: one cent spent between the listing and the poll
/// used to split the pair and count the key twice.
#[tokio::test]
async fn a_cent_spent_between_the_listing_and_the_poll_does_not_count_the_key_twice() {
    let sim = start_sim(account()).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(with_initech(&sim, &dir));
    // acme-1 as listed: daily 2, monthly 20, lifetime 200; a cent later at the poll.
    key_answers(&sim, "sk-or-v1-a01...a01", 2.01, 20.01, 200.01);
    let samples = refreshed(&exporter).await;
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_counted_once(&samples);
    assert_eq!(company(&samples, "initech", "monthly"), Some(20.01));
    assert_eq!(company(&samples, "initech", "lifetime"), Some(200.01));
    // Every key once: the account's 60 a month, plus the cent.
    assert!(close(companies_total(&samples, "monthly"), 60.01));
    assert!(close(companies_total(&samples, "lifetime"), 600.01));
}

/// S4: a failed poll keeps older figures, so the listed lifetime has grown
/// past the direct one. Still one key, under initech, with its last figures.
#[tokio::test]
async fn a_failed_poll_with_older_figures_does_not_count_the_key_twice() {
    let sim = start_sim(account()).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(with_initech(&sim, &dir));
    let samples = refreshed(&exporter).await;
    assert_counted_once(&samples);
    assert_eq!(company(&samples, "initech", "lifetime"), Some(200.0));

    // acme-1 spends 5 more; its direct poll fails from now on.
    sim.state()
        .key_mut(&hash(1))
        .unwrap()
        .fields
        .insert("usage".into(), json!(205.0));
    sim.state().faults.push(Fault::status("/key", 500));
    let samples = refreshed(&exporter).await;
    assert_eq!(value(&samples, "openrouter_up", &[]), 0.0);
    assert_eq!(
        value(&samples, "openrouter_key_up", &[("key", "initech-direct")]),
        0.0
    );
    assert_counted_once(&samples);
    assert_eq!(company(&samples, "initech", "lifetime"), Some(200.0));
    assert!(close(companies_total(&samples, "lifetime"), 600.0));
}

/// A listed key that only shares the masked label, with more lifetime spend
/// than the direct key has (so it cannot be the same key read earlier), is
/// another key: both count.
#[tokio::test]
async fn a_listed_key_sharing_only_the_label_is_another_key() {
    let sim = start_sim(account()).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(with_initech(&sim, &dir));
    // A key of another account: acme-1's label, a lifetime of 150 (< 200).
    key_answers(&sim, "sk-or-v1-a01...a01", 1.5, 15.0, 150.0);
    let samples = refreshed(&exporter).await;
    assert_absent(&samples, "openrouter_direct_key_also_listed", &[]);
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        2.0
    );
    assert_eq!(company(&samples, "acme", "lifetime"), Some(300.0));
    assert_eq!(company(&samples, "initech", "lifetime"), Some(150.0));
}

/// Two listed keys carry the label with the same lifetime: which one the
/// direct key is cannot be told, so neither is paired.
#[tokio::test]
async fn a_tie_between_two_listed_keys_pairs_neither() {
    let mut state = account();
    // globex-0 takes acme-1's label and lifetime.
    let globex = state.key_mut(&hash(2)).unwrap();
    globex
        .fields
        .insert("label".into(), json!("sk-or-v1-a01...a01"));
    globex.fields.insert("usage".into(), json!(200.0));
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(with_initech(&sim, &dir));
    let samples = refreshed(&exporter).await;
    assert_absent(&samples, "openrouter_direct_key_also_listed", &[]);
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        2.0
    );

    // With a cent of spend in between, the closest lifetime still cannot tell.
    key_answers(&sim, "sk-or-v1-a01...a01", 2.0, 20.0, 200.01);
    let samples = refreshed(&exporter).await;
    assert_absent(&samples, "openrouter_direct_key_also_listed", &[]);
}

/// Several listed keys share the label: the one whose lifetime is closest
/// (in the order of the reads) is the direct key.
#[tokio::test]
async fn among_keys_sharing_the_label_the_closest_lifetime_pairs() {
    let mut state = account();
    let globex = state.key_mut(&hash(2)).unwrap();
    globex
        .fields
        .insert("label".into(), json!("sk-or-v1-a01...a01"));
    globex.fields.insert("usage".into(), json!(150.0));
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(with_initech(&sim, &dir));
    // acme-1 (200) and globex-0 (150) carry the label, both at most the
    // poll's 200.02: acme-1 is 2 cents away, globex-0 $50.
    key_answers(&sim, "sk-or-v1-a01...a01", 2.0, 20.0, 200.02);
    let samples = refreshed(&exporter).await;
    assert_counted_once(&samples);
    assert_eq!(company(&samples, "globex", "lifetime"), Some(150.0));
}

/// The review's finding 5: a company added by a reload with a direct key is
/// unknown until the key is polled (absent, never `$0`), then has its figures.
#[tokio::test]
async fn a_direct_key_added_by_reload_is_absent_until_polled() {
    let sim = start_sim(account()).await;
    let dir = tempfile::tempdir().unwrap();
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");

    exporter
        .apply_config(with_initech(&sim, &dir))
        .await
        .expect("reload");
    let samples = parse(&body(&exporter));
    for window in WINDOWS {
        assert_absent(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "initech"), ("window", window)],
        );
    }
    assert_absent(
        &samples,
        "openrouter_company_byok_usage_usd",
        &[("company", "initech")],
    );
    // Not read yet: no figures, and not up.
    assert_absent(
        &samples,
        "openrouter_key_usage_usd",
        &[("key", "initech-direct")],
    );
    assert_eq!(
        value(&samples, "openrouter_key_up", &[("key", "initech-direct")]),
        0.0
    );
    let snapshot = exporter.published().snapshot.clone().expect("snapshot");
    let initech = snapshot
        .companies
        .iter()
        .find(|c| c.name == "initech")
        .expect("initech");
    assert_eq!(initech.usage, [None; 4], "unknown, not $0");
    // The others are re-attributed at once, as before.
    assert_eq!(company(&samples, "acme", "lifetime"), Some(300.0));

    // The next refresh polls it: counted once, under initech.
    let samples = refreshed(&exporter).await;
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        value(&samples, "openrouter_key_up", &[("key", "initech-direct")]),
        1.0
    );
    assert_counted_once(&samples);
    assert_eq!(company(&samples, "initech", "lifetime"), Some(200.0));
}
