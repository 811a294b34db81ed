//! Issue 15: attribution by workspace and by key creator, and the caps
//! OpenRouter enforces (guardrails, workspace budgets), against the simulator.

mod common;

use common::*;
use openrouter_cost_exporter::attribution::{Attributor, KeyIdentity};
use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::sim::{
    assignment_json, budget_json, guardrail_json, member_json, Fault, SimKey, SimState,
};

const JANE: &str = "user_jane";
const BOB: &str = "user_bob";
const GONE: &str = "user_gone";

/// Workspace A (slug `a`) and B (slug `b`); keys by Jane (acme.com) and Bob (team.example.com).
fn org_state() -> SimState {
    let mut state = empty_state();
    state.keys = vec![
        SimKey::new(WS_A, &hash(1), "a-one")
            .usage(1.0, 1.0, 1.0, 1.0)
            .set("creator_user_id", JANE.into()),
        SimKey::new(WS_A, &hash(2), "a-two")
            .usage(2.0, 2.0, 2.0, 2.0)
            .set("creator_user_id", BOB.into()),
        SimKey::new(WS_B, &hash(3), "b-three")
            .usage(4.0, 4.0, 4.0, 4.0)
            .set("creator_user_id", BOB.into()),
        SimKey::new(WS_B, &hash(4), "b-four")
            .usage(8.0, 8.0, 8.0, 8.0)
            .set("creator_user_id", GONE.into()),
    ];
    state.members = vec![
        member_json(JANE, "Jane.Doe@Acme.com", "Jane", "Doe"),
        member_json(BOB, "bob@team.example.com", "Bob", "Builder"),
    ];
    state
}

fn company_of(samples: &[Sample], key: &str) -> String {
    let info = find(samples, "openrouter_key_info", &[("key", key)]);
    assert_eq!(info.len(), 1, "{key}: {info:?}");
    info[0].labels["company"].clone()
}

#[tokio::test]
async fn one_line_per_workspace_claims_every_key_of_it_by_slug_or_id() {
    let sim = start_sim(org_state()).await;
    let companies = format!(
        "  alpha:\n    keys: [{{workspace: a}}]\n  beta:\n    keys: [{{workspace: '{}'}}]\n  typo:\n    keys: [{{workspace: nope}}]\n",
        WS_B.to_uppercase()
    );
    let exporter = exporter(config(&sim.base_url(), &companies));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(company_of(&samples, "a-one"), "alpha");
    assert_eq!(company_of(&samples, "a-two"), "alpha");
    assert_eq!(company_of(&samples, "b-three"), "beta");
    assert_eq!(company_of(&samples, "b-four"), "beta");
    let info = find(&samples, "openrouter_key_info", &[("key", "a-one")]);
    assert_eq!(info[0].labels["workspace"], "a");
    assert_eq!(info[0].labels["workspace_id"], WS_A);
    let matches = |company: &str, selector: &str| {
        value(
            &samples,
            "openrouter_config_selector_matches",
            &[("company", company), ("selector", selector)],
        )
    };
    assert_eq!(matches("alpha", "workspace:a"), 2.0);
    assert_eq!(matches("beta", &format!("workspace:{WS_B}")), 2.0);
    assert_eq!(matches("typo", "workspace:nope"), 0.0);
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "beta"), ("window", "lifetime")]
        ),
        12.0
    );

    // A key created later in workspace A lands in alpha on the next refresh.
    sim.state()
        .keys
        .push(SimKey::new(WS_A, &hash(5), "a-later").usage(0.5, 0.5, 0.5, 0.5));
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(company_of(&samples, "a-later"), "alpha");
}

#[tokio::test]
async fn before_the_workspace_list_is_read_slugs_match_nothing_and_ids_still_do() {
    let sim = start_sim(org_state()).await;
    let companies = format!(
        "  alpha:\n    keys: [{{workspace: a}}]\n  beta:\n    keys: [{{workspace: '{WS_B}'}}]\n"
    );
    let exporter = exporter(config(&sim.base_url(), &companies));
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(company_of(&samples, "a-one"), "unassigned");
    assert_eq!(company_of(&samples, "b-three"), "beta");
    let info = find(&samples, "openrouter_key_info", &[("key", "a-one")]);
    assert_eq!(
        info[0].labels["workspace"], "",
        "unknown slug is empty, not a guess"
    );
}

#[test]
fn precedence_is_hash_name_workspace_creator_glob() {
    let cfg = Config::parse(
        "companies:\n  globby:\n    keys: [{name_glob: 'k-*'}]\n  domain:\n    keys: [{creator: '@acme.com'}]\n  person:\n    keys: [{creator: Jane@Acme.com}]\n  space:\n    keys: [{workspace: ws}]\n  named:\n    keys: [k-named]\n  hashed:\n    keys: [{hash: AAA}]\n",
        "t",
    )
    .unwrap();
    let a = Attributor::new(&cfg);
    let key = |hash: &'static str,
               name: &'static str,
               ws: Option<&'static str>,
               email: Option<&'static str>| {
        KeyIdentity {
            hash,
            name,
            workspace_id: None,
            workspace_slug: ws,
            creator_email: email,
        }
    };
    let jane = Some("jane@acme.com");
    let keys = [
        key("aaa", "k-named", Some("ws"), jane),               // hash
        key("b", "k-named", Some("ws"), jane),                 // exact name
        key("c", "k-x", Some("ws"), jane),                     // workspace
        key("d", "k-x", None, jane),                           // exact creator
        key("e", "k-x", None, Some("bob@ACME.com")),           // creator domain
        key("f", "k-x", None, None), // creator unknown: falls through to glob
        key("g", "other", Some("elsewhere"), Some("x@y.org")), // nobody
    ];
    let result = a.attribute(keys.into_iter());
    assert_eq!(result.company_of_key, vec![5, 4, 3, 2, 1, 0, 6]);
    // Every key but the last two was claimed by more than one company.
    assert_eq!(result.conflicts, 5);
    assert_eq!(
        result.selector_matches,
        vec![vec![6], vec![5], vec![4], vec![3], vec![2], vec![1]]
    );
}

#[test]
fn a_workspace_or_creator_under_two_companies_is_a_config_error() {
    let err = Config::parse(
        "companies:\n  a:\n    keys: [{workspace: acme}]\n  b:\n    keys: [{workspace: acme}]\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("companies.b.keys[0]")
            && err.contains("workspace:acme is already claimed by company \"a\""),
        "{err}"
    );
    let err = Config::parse(
        "companies:\n  a:\n    keys: [{creator: '@acme.com'}]\n  b:\n    keys: [{creator: '@ACME.com'}]\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("creator:@acme.com is already claimed"),
        "{err}"
    );
    for bad in [
        "{workspace: 'has space'}",
        "{creator: nobody}",
        "{creator: '@'}",
        "{creator: 'a@'}",
    ] {
        let yaml = format!("companies:\n  a:\n    keys: [{bad}]\n");
        assert!(
            Config::parse(&yaml, "t").is_err(),
            "{bad} should be refused"
        );
    }
    let ok = Config::parse(
        "companies:\n  a:\n    keys: [{creator: jane@acme.com}, {creator: '@team.example.com'}, {workspace: default}]\n",
        "t",
    )
    .unwrap();
    assert_eq!(ok.companies[0].selectors.len(), 3);
    assert_eq!(ok.organization_refresh_intervals, 10);
}

#[tokio::test]
async fn creator_selectors_resolve_members_across_pages() {
    let mut state = org_state();
    // 120 further members: the two real ones come on the third page of 50.
    state.members.splice(0..0, filler_members(120));
    state.org_page_size = 50;
    let sim = start_sim(state).await;
    let companies = "  janes:\n    keys: [{creator: jane.doe@acme.com}]\n  team:\n    keys: [{creator: '@team.example.com'}]\n";
    let exporter = exporter(config(&sim.base_url(), companies));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(company_of(&samples, "a-one"), "janes");
    assert_eq!(company_of(&samples, "a-two"), "team");
    assert_eq!(company_of(&samples, "b-three"), "team");
    // A creator who is no longer a member is unknown: unassigned, not guessed.
    assert_eq!(company_of(&samples, "b-four"), "unassigned");
    let member_pages = sim
        .state()
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/organization/members"))
        .count();
    assert_eq!(member_pages, 3);
    assert_eq!(
        value(
            &samples,
            "openrouter_organization_list_stale",
            &[("list", "members")]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_failing_member_list_keeps_the_last_mapping_and_says_it_is_stale() {
    let sim = start_sim(org_state()).await;
    let companies = "  team:\n    keys: [{creator: '@team.example.com'}]\n  rest:\n    keys: [{name_glob: '*'}]\n";
    let exporter = exporter(config(&sim.base_url(), companies));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    assert_eq!(company_of(&parse(&body(&exporter)), "a-two"), "team");

    sim.state().fail_forever("/organization/members", 500);
    exporter.refresh_organization().await;
    exporter
        .refresh()
        .await
        .expect("a member-list failure never fails the key refresh");
    let samples = parse(&body(&exporter));
    assert_eq!(
        company_of(&samples, "a-two"),
        "team",
        "last good mapping kept"
    );
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "openrouter_organization_list_stale",
            &[("list", "members")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_organization_list_stale",
            &[("list", "guardrails")]
        ),
        0.0
    );

    // Never read at all: creators are unknown, keys fall through to the glob.
    let sim = start_sim(org_state()).await;
    sim.state().fail_forever("/organization/members", 403);
    let exporter = common::exporter(config(&sim.base_url(), companies));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(company_of(&samples, "a-two"), "rest");
    assert_eq!(company_of(&samples, "b-three"), "rest");
}

#[tokio::test]
async fn guardrail_caps_and_workspace_budgets_are_exported_exactly() {
    let mut state = org_state();
    state.guardrails = (0..60)
        .map(|i| guardrail_json(&format!("g-{i}"), &format!("filler {i}"), None, None))
        .chain([
            guardrail_json("g-cap", "Monthly cap", Some(25.5), Some("monthly")),
            guardrail_json("g-life", "", Some(100.0), None),
        ])
        .collect();
    state.org_page_size = 25;
    state.guardrail_key_assignments = vec![
        assignment_json("as-1", &hash(1), "g-cap"),
        assignment_json("as-2", &hash(1), "g-life"),
        assignment_json("as-3", &hash(2), "g-0"), // no spending cap: not a cap
    ];
    state.workspace_budgets.insert(
        WS_A.into(),
        vec![budget_json("b-1", WS_A, 1000.0, Some("monthly"))],
    );
    state.keys[2] = state.keys[2].clone().set("limit", 5.0.into());
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  all:\n    keys: [{name_glob: '*'}]\n",
    ));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let text = body(&exporter);
    let samples = parse(&text);
    let caps = find(&samples, "openrouter_key_guardrail_limit_usd", &[]);
    assert_eq!(caps.len(), 2, "{caps:?}");
    assert_eq!(
        value(
            &samples,
            "openrouter_key_guardrail_limit_usd",
            &[
                ("key_hash", &hash(1)),
                ("guardrail", "Monthly cap"),
                ("reset", "monthly")
            ]
        ),
        25.5
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_key_guardrail_limit_usd",
            &[
                ("key_hash", &hash(1)),
                ("guardrail", "g-life"),
                ("reset", "never")
            ]
        ),
        100.0
    );
    let budgets = find(&samples, "openrouter_workspace_budget_usd", &[]);
    assert_eq!(budgets.len(), 1);
    assert_eq!(
        value(
            &samples,
            "openrouter_workspace_budget_usd",
            &[
                ("workspace", "a"),
                ("workspace_id", WS_A),
                ("reset", "monthly")
            ]
        ),
        1000.0
    );
    // One call per workspace, and the guardrails (all in A, the default
    // workspace) read per workspace (issue 22): over three pages of 25 in A
    // (each asked from the last guardrail listed), one empty page in B.
    let requests = sim.state().requests.clone();
    let count = |p: &str| requests.iter().filter(|r| r.starts_with(p)).count();
    let guardrail_pages = |ws: &str| {
        requests
            .iter()
            .filter(|r| r.starts_with("/api/v1/guardrails?") && r.contains(ws))
            .count()
    };
    assert_eq!(count("/api/v1/guardrails?"), 4);
    assert_eq!(guardrail_pages(WS_A), 3);
    assert_eq!(guardrail_pages(WS_B), 1);
    assert_eq!(count(&format!("/api/v1/workspaces/{WS_A}/budgets")), 1);
    assert_eq!(count(&format!("/api/v1/workspaces/{WS_B}/budgets")), 1);
}

#[tokio::test]
async fn failing_caps_keep_their_last_values_and_never_fail_the_key_refresh() {
    let mut state = org_state();
    state.guardrails = vec![guardrail_json("g-cap", "cap", Some(7.0), Some("daily"))];
    state.guardrail_key_assignments = vec![assignment_json("as-1", &hash(3), "g-cap")];
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  all:\n    keys: [{name_glob: '*'}]\n",
    ));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    sim.state().fail_forever("/guardrails", 500);
    sim.state()
        .faults
        .push(Fault::status("/guardrails/assignments/keys", 503));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "openrouter_key_guardrail_limit_usd",
            &[("key", "b-three"), ("reset", "daily")]
        ),
        7.0
    );
    for list in ["guardrails", "guardrail_assignments"] {
        assert_eq!(
            value(
                &samples,
                "openrouter_organization_list_stale",
                &[("list", list)]
            ),
            1.0,
            "{list}"
        );
    }
}

/// A `MakeWriter` into a shared buffer, to read what the exporter logged.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_key_that_is_not_a_management_key_is_named_once_at_start() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut state = org_state();
    state.management_key_is_management = false;
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  all:\n    keys: [{name_glob: '*'}]\n",
    ));
    exporter.check_management_key().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("is not a management key"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("ERROR"), "{text}");
    assert!(lines[0].contains("is_management_key: false"), "{text}");
    assert!(
        lines[0].contains("https://openrouter.ai/settings/management-keys"),
        "{text}"
    );
    assert!(
        !text.contains(MANAGEMENT_KEY),
        "the key itself is never logged"
    );

    // A real management key: nothing at error level.
    logs.0.lock().unwrap().clear();
    sim.state().management_key_is_management = true;
    exporter.check_management_key().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("ERROR"), "{text}");
}

#[tokio::test]
async fn the_company_page_shows_each_keys_enforced_caps_beside_its_limit() {
    let mut state = org_state();
    state.guardrails = vec![guardrail_json(
        "g-cap",
        "Monthly cap",
        Some(25.5),
        Some("monthly"),
    )];
    state.guardrail_key_assignments = vec![assignment_json("as-1", &hash(1), "g-cap")];
    state.workspace_budgets.insert(
        WS_A.into(),
        vec![budget_json("b-1", WS_A, 1000.0, Some("weekly"))],
    );
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  alpha:\n    keys: [{workspace: a}, {workspace: b}]\n",
    ));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let published = exporter.published();
    let links = openrouter_cost_exporter::page::Links {
        metrics: "/metrics",
        grafana: None,
    };
    let page = openrouter_cost_exporter::page::company(
        &published,
        &exporter.config(),
        &links,
        "alpha",
        chrono::Utc::now(),
        "",
    );
    let openrouter_cost_exporter::page::Page::Found(html) = page else {
        panic!("company alpha not found: {page:?}");
    };
    let row = |hash: &str| {
        let start = html
            .find(&format!("data-key-hash=\"{hash}\""))
            .unwrap_or_else(|| panic!("no row for {hash}"));
        let end = start + html[start..].find("</tr>").unwrap();
        html[start..end].to_string()
    };
    let one = row(&hash(1));
    assert!(one.contains("guardrail Monthly cap $25.50"), "{one}");
    assert!(
        one.contains("workspace budget $1,000.00 <small>weekly</small>"),
        "{one}"
    );
    // Workspace B has no budget and key 3 no guardrail.
    assert!(row(&hash(3)).contains("none known"), "{}", row(&hash(3)));
}
