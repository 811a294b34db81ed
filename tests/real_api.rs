//! End to end against the simulator in the shapes the real OpenRouter serves
//! (issue 12): 50 keys a page, null fields, `/credits` down, an empty or
//! refused workspace list, a key listed in two workspaces, workspace slugs,
//! paged workspaces, and long `Retry-After` values.
//!
//! Tests marked `#[ignore = "issue 12: …"]` state behaviour the client does
//! not have yet; they are un-ignored when it does.

mod common;

use std::time::{Duration, Instant};

use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::sim::{
    SimKey, SimServer, SimState, WorkspacesMode, KEY_BYOK_FIELDS, KEY_DATE_FIELDS, KEY_LIMIT_FIELDS,
};
use openrouter_cost_exporter::upstream::RetryPolicy;
use secrecy::SecretString;
use serde_json::json;

const COMPANIES: &str =
    "  acme:\n    keys: [{name_glob: 'acme-*'}]\n  globex:\n    keys: [{name_glob: 'globex-*'}]\n";

/// The company a key named `name` belongs to under [`COMPANIES`].
fn company_for(name: &str) -> &'static str {
    if name.starts_with("acme-") {
        "acme"
    } else if name.starts_with("globex-") {
        "globex"
    } else {
        "unassigned"
    }
}

/// `n` keys named acme-/globex-/stray- in turn, with distinct amounts, all
/// in workspace `ws`, numbered from `first`.
fn add_keys(state: &mut SimState, ws: &str, first: usize, n: usize) {
    for i in first..first + n {
        let prefix = ["acme", "globex", "stray"][i % 3];
        state.keys.push(key_with_usage(
            ws,
            i,
            &format!("{prefix}-{i:04}"),
            0.001 * i as f64 + 0.5,
        ));
    }
}

fn finish(mut state: SimState) -> SimState {
    state.total_credits = 10_000.0;
    state.total_usage = state.keys_lifetime_usage() + 7.5;
    state
}

/// Every simulated key is exported exactly once, under the right company,
/// with its lifetime and daily figures; company sums match their keys.
fn assert_every_key_once(sim: &SimServer, exporter: &Exporter) {
    let samples = parse(&body(exporter));
    let upstream = sim.state().clone();
    let mut unique: Vec<&str> = upstream.keys.iter().map(SimKey::hash).collect();
    unique.sort();
    unique.dedup();
    let infos = find(&samples, "openrouter_key_info", &[]);
    assert_eq!(infos.len(), unique.len(), "every key exactly once");
    let mut sums = std::collections::BTreeMap::<&str, f64>::new();
    for key in &upstream.keys {
        let h = key.hash();
        let name = key.fields["name"].as_str().unwrap();
        let info = find(&samples, "openrouter_key_info", &[("key_hash", h)]);
        assert_eq!(info.len(), 1, "{name} exported once");
        assert_eq!(info[0].labels["company"], company_for(name), "{name}");
        for (window, field) in [("lifetime", "usage"), ("daily", "usage_daily")] {
            assert_eq!(
                value(
                    &samples,
                    "openrouter_key_usage_usd",
                    &[("key_hash", h), ("window", window)]
                ),
                key.num(field).unwrap(),
                "{name} {window}"
            );
        }
        *sums.entry(company_for(name)).or_default() += key.num("usage").unwrap();
    }
    for (company, sum) in sums {
        let total = value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", company), ("window", "lifetime")],
        );
        assert!((total - sum).abs() < 1e-6, "{company}: {total} vs {sum}");
    }
}

// ------------------------------------------------------------ pagination

/// Issue 12 point 1: a server that serves 50 keys a page (the default of
/// OpenRouter's newer list endpoints) while the client asks for none.
#[tokio::test]
async fn fifty_keys_a_page_237_keys_every_key_exported_once() {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 200);
    add_keys(&mut state, WS_B, 1000, 37);
    state.keys_page_size = 50;
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");
    assert_every_key_once(&sim, &exporter);
    let samples = parse(&body(&exporter));
    let unattributed = value(&samples, "openrouter_account_unattributed_usage_usd", &[]);
    assert!((unattributed - 7.5).abs() < 1e-6, "{unattributed}");
}

/// The same, listed most recent first as the real API does, with 100 a page:
/// what today's client already handles.
#[tokio::test]
async fn hundred_keys_a_page_newest_first_every_key_exported_once() {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 200);
    add_keys(&mut state, WS_B, 1000, 37);
    state.newest_first = true;
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");
    assert_every_key_once(&sim, &exporter);
}

/// Issue 12 point 1: `/workspaces` stops on its `total_count`, even when the
/// server pages below the `limit` asked for.
#[tokio::test]
async fn workspaces_paged_by_fifty_are_all_listed() {
    let mut state = SimState::new(MANAGEMENT_KEY);
    for w in 0..120 {
        let id = format!("{w:08x}-0000-4000-8000-000000000000");
        state.workspaces.push((id.clone(), format!("Team {w}")));
        add_keys(&mut state, &id, w * 10, 2);
    }
    state.workspaces_page_size = 50;
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");
    assert_every_key_once(&sim, &exporter);
}

// ------------------------------------------------------------ null and absent fields

/// Keys with null or absent limits, dates and BYOK fields: the refresh
/// succeeds, each known value is exported, each unknown one is omitted (never
/// 0), and a company total that depends on an unknown amount is absent.
#[tokio::test]
async fn null_limits_dates_and_byok_are_omitted_not_zero() {
    let mut state = empty_state();
    state
        .keys
        .push(key_with_usage(WS_A, 1, "acme-full", 1.0).set("limit", json!(5.0)));
    state.keys.push(
        key_with_usage(WS_A, 2, "acme-nulls", 2.0)
            .nulls(KEY_LIMIT_FIELDS)
            .nulls(KEY_DATE_FIELDS)
            .nulls(KEY_BYOK_FIELDS),
    );
    state.keys.push(
        key_with_usage(WS_A, 3, "globex-absent", 3.0)
            .without_all(KEY_LIMIT_FIELDS)
            .without_all(KEY_DATE_FIELDS)
            .without_all(KEY_BYOK_FIELDS),
    );
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter
        .refresh()
        .await
        .expect("nulls never sink a refresh");
    let samples = parse(&body(&exporter));
    assert_eq!(find(&samples, "openrouter_key_info", &[]).len(), 3);
    for n in [2, 3] {
        let h = hash(n);
        for family in [
            "openrouter_key_byok_usage_usd",
            "openrouter_key_limit_usd",
            "openrouter_key_limit_remaining_usd",
            "openrouter_key_expiry_timestamp_seconds",
        ] {
            assert!(
                find(&samples, family, &[("key_hash", &h)]).is_empty(),
                "key {n}: unknown {family} must be omitted"
            );
        }
        assert_eq!(
            value(
                &samples,
                "openrouter_key_usage_usd",
                &[("key_hash", &h), ("window", "lifetime")]
            ),
            10.0 * n as f64
        );
    }
    // acme's BYOK depends on key 2's unknown BYOK: absent, not understated.
    assert_absent(
        &samples,
        "openrouter_company_byok_usage_usd",
        &[("company", "acme")],
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        30.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_key_limit_usd",
            &[("key_hash", &hash(1))]
        ),
        5.0
    );
}

/// Issue 12 point 2: a null `label` or `name` never sinks the page.
#[tokio::test]
async fn null_labels_and_names_are_accepted() {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 6);
    state.keys[1] = state.keys[1].clone().null("label");
    state.keys[2] = state.keys[2].clone().null("label").null("disabled");
    state.keys[4] = state.keys[4].clone().without("label");
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter
        .refresh()
        .await
        .expect("null labels never sink a refresh");
    assert_every_key_once(&sim, &exporter);
}

/// Issue 12 point 2: a key that does not report `disabled` has no
/// `openrouter_key_disabled` series (unknown is not `false`).
#[tokio::test]
async fn unknown_disabled_is_omitted() {
    let mut state = empty_state();
    state
        .keys
        .push(key_with_usage(WS_A, 1, "acme-a", 1.0).without("disabled"));
    state
        .keys
        .push(key_with_usage(WS_A, 2, "acme-b", 1.0).set("disabled", json!(true)));
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    assert_absent(
        &samples,
        "openrouter_key_disabled",
        &[("key_hash", &hash(1))],
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_key_disabled",
            &[("key_hash", &hash(2))]
        ),
        1.0
    );
}

// ------------------------------------------------------------ /credits down

/// Issue 12 point 3: `/credits` failing after retries leaves key and company
/// figures published and fresh; only the account families go, and the
/// failure is visible.
async fn credits_down(status: u16) {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 9);
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("good refresh first");

    sim.state().fail_forever("/credits", status);
    {
        let mut st = sim.state();
        for key in &mut st.keys {
            let usage = key.num("usage").unwrap() + 1.0;
            key.fields.insert("usage".into(), json!(usage));
        }
    }
    let before = chrono::Utc::now().timestamp() as f64;
    let _ = exporter.refresh().await;
    let samples = parse(&body(&exporter));
    // Fresh: the new spend, with a new success time.
    assert_every_key_once(&sim, &exporter);
    assert!(
        value(
            &samples,
            "openrouter_last_refresh_success_timestamp_seconds",
            &[]
        ) >= before.floor()
    );
    for family in [
        "openrouter_account_credits_usd",
        "openrouter_account_usage_usd",
        "openrouter_account_unattributed_usage_usd",
    ] {
        assert!(find(&samples, family, &[]).is_empty(), "{family} absent");
    }
    assert_eq!(value(&samples, "openrouter_account_up", &[]), 0.0);
    // Counted as reason="credits" (the part that failed, not a failed
    // listing); the HTTP status shows in openrouter_upstream_requests_total.
    assert_eq!(
        value(
            &samples,
            "openrouter_refresh_failures_total",
            &[("reason", "credits")]
        ),
        1.0
    );
    assert!(
        value(
            &samples,
            "openrouter_upstream_requests_total",
            &[("endpoint", "credits"), ("code", &status.to_string())]
        ) >= 1.0
    );

    // /credits back: the account families return.
    sim.state().faults.clear();
    exporter.refresh().await.expect("recovery");
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_account_up", &[]), 1.0);
    assert_eq!(
        value(&samples, "openrouter_account_credits_usd", &[]),
        10_000.0
    );
}

#[tokio::test]
async fn credits_500_forever_keeps_key_and_company_figures_fresh() {
    credits_down(500).await;
}

#[tokio::test]
async fn credits_403_forever_keeps_key_and_company_figures_fresh() {
    credits_down(403).await;
}

// ------------------------------------------------------------ workspaces

/// Issue 12 point 4: an empty list, a 403 or a 404 from `/workspaces` falls
/// back to listing without `workspace_id` (the default workspace).
async fn falls_back_to_the_default_workspace(mode: WorkspacesMode) {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 12);
    state.workspaces_mode = mode;
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");
    assert_every_key_once(&sim, &exporter);
    let requests = sim.state().requests.clone();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("/api/v1/keys") && !r.contains("workspace_id")),
        "listed the default workspace: {requests:?}"
    );
}

#[tokio::test]
async fn empty_workspace_list_falls_back_to_the_default_workspace() {
    falls_back_to_the_default_workspace(WorkspacesMode::Empty).await;
}

#[tokio::test]
async fn workspaces_403_falls_back_to_the_default_workspace() {
    falls_back_to_the_default_workspace(WorkspacesMode::Status(403)).await;
}

#[tokio::test]
async fn workspaces_404_falls_back_to_the_default_workspace() {
    falls_back_to_the_default_workspace(WorkspacesMode::Status(404)).await;
}

/// A key listed under two workspaces counts once: in the key families, the
/// company's key count, its sums, and unattributed.
#[tokio::test]
async fn a_key_listed_in_two_workspaces_is_counted_once() {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 4);
    add_keys(&mut state, WS_B, 100, 3);
    state.keys[0] = state.keys[0].clone().also_in(WS_B);
    state.keys[5] = state.keys[5].clone().also_in(WS_A);
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");
    // Both workspaces really listed the shared keys.
    let listed_twice = sim
        .state()
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/keys"))
        .count();
    // One page and the empty page that ends it, per workspace.
    assert_eq!(listed_twice, 4);
    assert_every_key_once(&sim, &exporter);
    let samples = parse(&body(&exporter));
    let acme_keys = find(&samples, "openrouter_key_info", &[("company", "acme")]).len();
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        acme_keys as f64
    );
    let unattributed = value(&samples, "openrouter_account_unattributed_usage_usd", &[]);
    assert!((unattributed - 7.5).abs() < 1e-6, "{unattributed}");
    // The first listing wins: the shared key keeps its own workspace.
    let shared = find(&samples, "openrouter_key_info", &[("key_hash", &hash(0))]);
    assert_eq!(shared[0].labels["workspace_id"], WS_A);
}

/// Issue 12 point 4: a configured slug is resolved to its UUID, never sent as
/// `workspace_id` (the simulator answers a non-UUID there with a 400).
#[tokio::test]
async fn a_configured_workspace_slug_is_resolved() {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 3);
    add_keys(&mut state, WS_B, 100, 4);
    let sim = start_sim(finish(state)).await;
    let slug = sim.state().slug_of(WS_B).unwrap();
    let yaml = format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {}\n  request_timeout: 2s\n  workspaces: [{slug}]\ncompanies:\n{COMPANIES}",
        sim.base_url()
    );
    let exporter = exporter(Config::parse(&yaml, "slug test").unwrap());
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    assert_eq!(find(&samples, "openrouter_key_info", &[]).len(), 4);
    assert!(!sim
        .state()
        .requests
        .iter()
        .any(|r| r.contains(&format!("workspace_id={slug}"))));
}

// ------------------------------------------------------------ Retry-After

fn exporter_with_default_retries(base_url: &str, refresh: &str) -> Exporter {
    let yaml = format!(
        "refresh_interval: {refresh}\nopenrouter:\n  base_url: {base_url}\n  request_timeout: 1s\ncompanies:\n{COMPANIES}"
    );
    Exporter::with_key(
        Config::parse(&yaml, "retry-after test").unwrap(),
        SecretString::from(MANAGEMENT_KEY.to_string()),
        RetryPolicy::default(),
    )
    .unwrap()
}

/// Issue 12 point 5: a `Retry-After` longer than what is left of the refresh
/// deadline fails the refresh at once as `rate_limited`, without an early retry.
#[tokio::test]
async fn retry_after_beyond_the_deadline_fails_fast_as_rate_limited() {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 3);
    let sim = start_sim(finish(state)).await;
    sim.state()
        .faults
        .push(openrouter_cost_exporter::sim::Fault::retry_after(
            "/workspaces",
            429,
            60,
        ));
    let exporter = exporter_with_default_retries(&sim.base_url(), "3s");
    let started = Instant::now();
    let err = exporter.refresh().await.unwrap_err();
    assert_eq!(err.reason().as_str(), "rate_limited", "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "failed fast: {:?}",
        started.elapsed()
    );
    assert_eq!(sim.state().requests.len(), 1, "no retry before Retry-After");
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(
            &samples,
            "openrouter_refresh_failures_total",
            &[("reason", "rate_limited")]
        ),
        1.0
    );
}

/// A `Retry-After` that fits in the deadline is waited out, then the call succeeds.
#[tokio::test]
async fn retry_after_within_the_deadline_is_honoured() {
    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 3);
    let sim = start_sim(finish(state)).await;
    sim.state()
        .faults
        .push(openrouter_cost_exporter::sim::Fault::retry_after("/workspaces", 429, 1).times(1));
    let exporter = exporter_with_default_retries(&sim.base_url(), "10s");
    let started = Instant::now();
    exporter.refresh().await.expect("refresh after waiting");
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_every_key_once(&sim, &exporter);
}

// ------------------------------------------------------------ direct keys

/// Issue 12 point 9: a direct key that the management API also lists counts
/// once, under the direct key's configured company, even when the listed
/// key's selectors name another company; a listed key that only shares its
/// masked label (6 characters of the key) is a different key and stays.
#[tokio::test]
async fn a_direct_key_also_listed_counts_once_under_its_configured_company() {
    let mut state = empty_state();
    // The sim's masked labels of hash(7) and hash(8) are the same.
    state
        .keys
        .push(SimKey::new(WS_A, &hash(7), "globex-shared").usage(1.0, 2.0, 3.0, 40.0));
    state
        .keys
        .push(SimKey::new(WS_A, &hash(8), "globex-other").usage(0.5, 0.5, 0.5, 9.0));
    state
        .inference_keys
        .insert("sk-or-v1-inference-shared".into(), hash(7));
    state.total_credits = 100.0;
    state.total_usage = 60.0;
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("shared");
    std::fs::write(&secret, "sk-or-v1-inference-shared\n").unwrap();
    let companies = format!(
        "  acme:\n    keys:\n      - {{name: acme-direct, secret_file: {}}}\n  globex:\n    keys: [{{name_glob: 'globex-*'}}]\n",
        secret.display()
    );
    let exporter = exporter(config(&sim.base_url(), &companies));
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    let lifetime = |company| {
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", company), ("window", "lifetime")],
        )
    };
    // The shared key's 40 go to acme (the direct key's company), not globex.
    assert_eq!(lifetime("acme"), 40.0);
    assert_eq!(lifetime("globex"), 9.0);
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_keys",
            &[("company", "globex")]
        ),
        1.0
    );
    // Reported, with both companies named.
    assert_eq!(
        value(
            &samples,
            "openrouter_direct_key_also_listed",
            &[
                ("key", "acme-direct"),
                ("company", "acme"),
                ("listed_company", "globex")
            ]
        ),
        1.0
    );
    // One row for the key: the direct one.
    assert_absent(&samples, "openrouter_key_info", &[("key_hash", &hash(7))]);
    assert_eq!(
        find(&samples, "openrouter_key_info", &[("key", "acme-direct")]).len(),
        1
    );
    assert_eq!(
        find(&samples, "openrouter_key_info", &[("key_hash", &hash(8))]).len(),
        1
    );
    // Unattributed: account usage minus every listed key, each once: 60 - 49.
    assert_eq!(
        value(&samples, "openrouter_account_unattributed_usage_usd", &[]),
        11.0
    );
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
}

// ------------------------------------------------------------ UTC boundaries

/// Issue 12 point 6: a refresh whose fetch straddles a UTC midnight (here
/// Sunday → Monday, so the day and the week end) never publishes figures read
/// before the boundary under the window it opened: those windows are absent
/// for every key and company until the next refresh; the others stay.
#[tokio::test]
async fn a_refresh_across_midnight_omits_the_windows_that_ended() {
    use chrono::{TimeZone, Utc};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let mut state = empty_state();
    add_keys(&mut state, WS_A, 0, 9);
    let sim = start_sim(finish(state)).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    let calls = Arc::new(AtomicUsize::new(0));
    let before = Utc.with_ymd_and_hms(2026, 11, 29, 23, 59, 59).unwrap();
    let after = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 1).unwrap();
    let seen = Arc::clone(&calls);
    exporter.set_clock(Arc::new(move || {
        // The fetch starts before midnight and ends after it.
        if seen.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            before
        } else {
            after
        }
    }));
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    for window in ["daily", "weekly"] {
        assert!(
            find(&samples, "openrouter_key_usage_usd", &[("window", window)]).is_empty(),
            "{window} figures read before midnight are not Monday's"
        );
        assert_absent(
            &samples,
            "openrouter_company_usage_usd",
            &[("window", window)],
        );
    }
    // Monthly did not end (November goes on) and lifetime never does: every key, once.
    for window in ["monthly", "lifetime"] {
        assert_eq!(
            find(&samples, "openrouter_key_usage_usd", &[("window", window)]).len(),
            9,
            "{window}"
        );
    }
    let company = value(
        &samples,
        "openrouter_company_usage_usd",
        &[("company", "acme"), ("window", "lifetime")],
    );
    let keys: f64 = find(
        &samples,
        "openrouter_key_usage_usd",
        &[("company", "acme"), ("window", "lifetime")],
    )
    .iter()
    .map(|s| s.value)
    .sum();
    assert!((company - keys).abs() < 1e-9, "{company} vs {keys}");
    // The windows are Monday's: the day ends on Tuesday 00:00 UTC.
    let tuesday = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    assert_eq!(
        value(
            &samples,
            "openrouter_window_end_timestamp_seconds",
            &[("window", "daily")]
        ),
        tuesday.timestamp() as f64
    );

    // The next refresh, wholly on Monday, brings the windows back.
    exporter.set_clock(Arc::new(move || after));
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    assert_eq!(
        find(&samples, "openrouter_key_usage_usd", &[("window", "daily")]).len(),
        9
    );
}
