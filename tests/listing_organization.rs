//! Issue 22, points 1 (the counted lists) and 10: the workspace and member
//! lists never drop an item when one is deleted while they are paged; the
//! guardrails of every workspace are read; and one slow organization list
//! never leaves the others unread. Against the simulator.

mod common;

use std::time::Duration;

use common::*;
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::sim::{
    assignment_json, budget_json, guardrail_json, member_json, Deletion, Fault, FaultResponse,
    SimKey, SimState,
};
use serde_json::json;

const JANE: &str = "user_jane";

fn stale(samples: &[Sample], list: &str) -> f64 {
    value(
        samples,
        "openrouter_organization_list_stale",
        &[("list", list)],
    )
}

/// Workspace A holds key 1, workspace B key 2; B's key is capped by a
/// guardrail of workspace B (listed only by `GET /guardrails?workspace_id=B`).
fn capped_in_b() -> SimState {
    let mut state = empty_state();
    state.keys = vec![
        key_with_usage(WS_A, 1, "a-one", 1.0),
        key_with_usage(WS_B, 2, "b-two", 2.0),
    ];
    let mut in_b = guardrail_json("g-b", "B cap", Some(40.0), Some("monthly"));
    in_b["workspace_id"] = json!(WS_B);
    state.guardrails = vec![
        guardrail_json("g-a", "A cap", Some(10.0), Some("daily")),
        in_b,
    ];
    state.guardrail_key_assignments = vec![
        assignment_json("as-1", &hash(1), "g-a"),
        assignment_json("as-2", &hash(2), "g-b"),
    ];
    state.workspace_budgets.insert(
        WS_B.into(),
        vec![budget_json("b-1", WS_B, 500.0, Some("monthly"))],
    );
    state
}

/// Point 10: a key capped by a guardrail outside the default workspace is
/// shown capped (before issue 22 only `GET /guardrails` without a workspace
/// was read: the default workspace's).
#[tokio::test]
async fn guardrails_of_every_workspace_are_read() {
    let sim = start_sim(capped_in_b()).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  all:\n    keys: [{name_glob: '*'}]\n",
    ));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    for (key, guardrail, reset, limit) in [
        ("a-one", "A cap", "daily", 10.0),
        ("b-two", "B cap", "monthly", 40.0),
    ] {
        assert_eq!(
            value(
                &samples,
                "openrouter_key_guardrail_limit_usd",
                &[("key", key), ("guardrail", guardrail), ("reset", reset)]
            ),
            limit,
            "{key}"
        );
    }
    assert_eq!(stale(&samples, "guardrails"), 0.0);
    let requests = sim.state().requests.clone();
    for ws in [WS_A, WS_B] {
        assert!(
            requests.iter().any(|r| r.starts_with("/api/v1/guardrails?")
                && r.contains(&format!("workspace_id={ws}"))),
            "{ws}: {requests:?}"
        );
    }
}

/// Point 10 (and review #7's side effect): a member list slower than the
/// whole budget (0.45 × a 2 s interval) leaves members stale, but every
/// other list answers in time and is read: not stale, values published.
#[tokio::test]
async fn a_slow_list_never_starves_the_others() {
    let mut state = capped_in_b();
    state.keys[1] = state.keys[1].clone().set("creator_user_id", JANE.into());
    state.members = vec![member_json(JANE, "jane@acme.com", "Jane", "Doe")];
    let sim = start_sim(state).await;
    sim.state().faults.push(Fault::new(
        "/organization/members",
        FaultResponse::Delay(Duration::from_millis(1400)),
    ));
    let yaml = format!(
        "refresh_interval: 2s\nopenrouter:\n  base_url: {}\n  request_timeout: 1500ms\ncompanies:\n  janes:\n    keys: [{{creator: jane@acme.com}}]\n  rest:\n    keys: [{{name_glob: '*'}}]\n",
        sim.base_url()
    );
    let exporter = exporter(Config::parse(&yaml, "t").unwrap());
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(stale(&samples, "members"), 1.0);
    for list in [
        "workspaces",
        "guardrails",
        "guardrail_assignments",
        "workspace_budgets",
    ] {
        assert_eq!(stale(&samples, list), 0.0, "{list} answered 200 in time");
    }
    assert_eq!(
        value(
            &samples,
            "openrouter_key_guardrail_limit_usd",
            &[("key", "b-two"), ("reset", "monthly")]
        ),
        40.0
    );
    assert_eq!(
        find(&samples, "openrouter_workspace_budget_usd", &[]).len(),
        1
    );
}

/// Point 1 for the member list (review S1): a member deleted while the
/// list is paged never makes another member vanish (a key of the vanished
/// one would be attributed to no one).
#[tokio::test]
async fn a_member_deleted_mid_listing_never_makes_another_vanish() {
    let mut state = empty_state();
    state.keys = vec![SimKey::new(WS_A, &hash(1), "jane-key")
        .usage(1.0, 1.0, 1.0, 1.0)
        .set("creator_user_id", JANE.into())];
    // 150 members in pages of 50; Jane is the 51st.
    state.members = filler_members(150);
    state.members[50] = member_json(JANE, "jane@acme.com", "Jane", "Doe");
    state.org_page_size = 50;
    state.deletions = vec![Deletion::new("/organization/members", 40, "user_0")];
    let sim = start_sim(state).await;
    let companies = "  janes:\n    keys: [{creator: jane@acme.com}]\n";
    let exporter = exporter(config(&sim.base_url(), companies));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(stale(&samples, "members"), 0.0);
    let info = find(&samples, "openrouter_key_info", &[("key", "jane-key")]);
    assert_eq!(info[0].labels["company"], "janes");
}

/// Point 1 for the workspace list (review S1): a workspace deleted while
/// `/workspaces` is paged never makes another workspace's keys vanish.
#[tokio::test]
async fn a_workspace_deleted_mid_listing_never_drops_another_workspaces_keys() {
    let mut state = empty_state();
    for n in 0..148 {
        state
            .workspaces
            .push((format!("ws-extra-{n:03}"), format!("extra {n}")));
    }
    // The 101st workspace holds a key; the 3rd is deleted as page two is asked for.
    state.keys = vec![key_with_usage("ws-extra-098", 1, "acme-far", 1.0)];
    state.deletions = vec![Deletion::new("/workspaces", 50, "ws-extra-000")];
    state.total_credits = 100.0;
    state.total_usage = state.keys_lifetime_usage();
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        1.0
    );
}
