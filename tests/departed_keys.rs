//! Issue 22, against the simulator: a key that leaves the listing keeps its
//! spend with its company until each calendar window ends; and a company
//! whose keys depend on an organization list never read is absent, not $0.

mod common;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::page::{self, Links, Page};
use openrouter_cost_exporter::sim::{member_json, SimKey};

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn set_time(exporter: &Exporter, t: DateTime<Utc>) {
    exporter.set_clock(Arc::new(move || t));
}

async fn refresh_at(exporter: &Exporter, t: DateTime<Utc>) -> Vec<Sample> {
    set_time(exporter, t);
    exporter.refresh().await.expect("refresh");
    parse(&body(exporter))
}

fn key(samples: &[Sample], n: usize, window: &str) -> Option<f64> {
    let found = find(
        samples,
        "openrouter_key_usage_usd",
        &[("key_hash", &hash(n)), ("window", window)],
    );
    found.first().map(|s| s.value)
}

fn company_page(exporter: &Exporter, name: &str) -> String {
    let links = Links {
        metrics: "/metrics",
        grafana: None,
    };
    let published = exporter.published();
    match page::company(&published, &exporter.config(), &links, name, Utc::now(), "") {
        Page::Found(html) => html,
        Page::NotFound(_) => panic!("no page for {name}"),
    }
}

/// acme-one ($1 a day) and acme-two ($10 a day) in acme, other ($100) unassigned;
/// each key's week is twice its day, its month three times, its lifetime ten times.
#[tokio::test]
async fn a_deleted_key_keeps_its_spend_with_its_company_until_each_window_ends() {
    let mut state = empty_state();
    state.keys = vec![
        key_with_usage(WS_A, 1, "acme-one", 1.0),
        key_with_usage(WS_A, 2, "acme-two", 10.0),
        key_with_usage(WS_B, 3, "other", 100.0),
    ];
    state.total_credits = 5000.0;
    state.total_usage = 1110.0;
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    // Wednesday 2026-12-30: the day ends first, then the month (Friday),
    // then the week (Monday 2027-01-04).
    let samples = refresh_at(&exporter, at(2026, 12, 30, 12, 0)).await;
    assert_eq!(company(&samples, "acme", "monthly"), Some(33.0));

    sim.state().keys.retain(|k| k.hash() != hash(2));
    let samples = refresh_at(&exporter, at(2026, 12, 30, 12, 1)).await;
    // Still billed for the day, the week and the month.
    assert_eq!(company(&samples, "acme", "daily"), Some(11.0));
    assert_eq!(company(&samples, "acme", "weekly"), Some(22.0));
    assert_eq!(company(&samples, "acme", "monthly"), Some(33.0));
    let byok = find(
        &samples,
        "openrouter_company_byok_usage_usd",
        &[("company", "acme"), ("window", "daily")],
    );
    assert!((byok[0].value - 1.1).abs() < 1e-9, "{byok:?}");
    // A company's lifetime is that of its listed keys: the departed key's
    // lifetime moves to the account's unattributed spend at once.
    assert_eq!(company(&samples, "acme", "lifetime"), Some(10.0));
    assert_eq!(
        value(&samples, "openrouter_account_unattributed_usage_usd", &[]),
        100.0
    );
    // The departed key stays visible, marked, and still counts as acme's.
    let departed = [("key_hash", hash(2)), ("key", "acme-two".into())];
    let departed: Vec<(&str, &str)> = departed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        value(
            &samples,
            "openrouter_key_departed",
            &[departed[0], departed[1], ("company", "acme")]
        ),
        1.0
    );
    assert_eq!(find(&samples, "openrouter_key_departed", &[]).len(), 1);
    assert_eq!(
        find(&samples, "openrouter_key_info", &departed)[0].labels["company"],
        "acme"
    );
    assert_eq!(key(&samples, 2, "daily"), Some(10.0));
    assert_eq!(key(&samples, 2, "monthly"), Some(30.0));
    assert_eq!(key(&samples, 2, "lifetime"), None);
    assert_absent(&samples, "openrouter_key_disabled", &departed);
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        2.0
    );
    let html = company_page(&exporter, "acme");
    let row = html
        .split("<tr class=\"key\"")
        .find(|r| r.contains("acme-two"))
        .expect("the departed key's row");
    assert!(row.contains(">departed</span>"), "{row}");
    assert!(row.contains("last listed 2026-12-30 12:00 UTC"), "{row}");

    // Thursday: the day it was read in has ended; week and month hold.
    let samples = refresh_at(&exporter, at(2026, 12, 31, 0, 5)).await;
    assert_eq!(company(&samples, "acme", "daily"), Some(1.0));
    assert_eq!(company(&samples, "acme", "weekly"), Some(22.0));
    assert_eq!(company(&samples, "acme", "monthly"), Some(33.0));
    assert_eq!(key(&samples, 2, "daily"), None);
    assert_eq!(key(&samples, 2, "weekly"), Some(20.0));

    // January: its month has ended; its week has not.
    let samples = refresh_at(&exporter, at(2027, 1, 1, 0, 5)).await;
    assert_eq!(company(&samples, "acme", "monthly"), Some(3.0));
    assert_eq!(company(&samples, "acme", "weekly"), Some(22.0));
    assert_eq!(key(&samples, 2, "monthly"), None);
    assert_eq!(find(&samples, "openrouter_key_departed", &[]).len(), 1);

    // Monday: every window it was read in has ended, and it is forgotten.
    let samples = refresh_at(&exporter, at(2027, 1, 4, 0, 5)).await;
    assert_eq!(company(&samples, "acme", "weekly"), Some(2.0));
    assert_absent(&samples, "openrouter_key_departed", &[]);
    assert_absent(&samples, "openrouter_key_info", &departed);
    assert_absent(&samples, "openrouter_key_usage_usd", &departed);
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        1.0
    );
}

#[tokio::test]
async fn a_key_listed_again_is_counted_once_and_no_longer_departed() {
    let mut state = empty_state();
    state.keys = vec![
        key_with_usage(WS_A, 1, "acme-one", 1.0),
        key_with_usage(WS_A, 2, "acme-two", 10.0),
    ];
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    refresh_at(&exporter, at(2026, 12, 30, 12, 0)).await;
    let two = sim.state().keys.remove(1);
    let samples = refresh_at(&exporter, at(2026, 12, 30, 12, 1)).await;
    assert_eq!(find(&samples, "openrouter_key_departed", &[]).len(), 1);

    // Back (e.g. a listing that had left it out), with more spend today.
    sim.state().keys.push(two.set("usage_daily", 12.0.into()));
    let samples = refresh_at(&exporter, at(2026, 12, 30, 12, 2)).await;
    assert_absent(&samples, "openrouter_key_departed", &[]);
    assert_eq!(company(&samples, "acme", "daily"), Some(13.0));
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        2.0
    );
    assert_eq!(
        find(
            &samples,
            "openrouter_key_info",
            &[("key_hash", hash(2).as_str())]
        )
        .len(),
        1
    );
}

/// A departed key keeps the company it was attributed with when last
/// listed, even after its creator leaves the organization.
#[tokio::test]
async fn a_departed_key_stays_with_its_creators_company_after_the_creator_leaves() {
    let mut state = empty_state();
    state.keys = vec![
        SimKey::new(WS_A, &hash(1), "k-bob")
            .usage(5.0, 5.0, 5.0, 5.0)
            .set("creator_user_id", "user_bob".into()),
        SimKey::new(WS_A, &hash(2), "k-other").usage(1.0, 1.0, 1.0, 1.0),
    ];
    state.members = vec![member_json("user_bob", "bob@team.example.com", "B", "B")];
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  team:\n    keys: [{creator: '@team.example.com'}]\n  rest:\n    keys: [{name_glob: '*'}]\n",
    ));
    set_time(&exporter, at(2026, 12, 30, 12, 0));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    sim.state().keys.retain(|k| k.hash() != hash(1));
    refresh_at(&exporter, at(2026, 12, 30, 12, 1)).await;
    // Bob leaves; the member list no longer knows his keys' creator.
    sim.state().members.clear();
    exporter.refresh_organization().await;
    let samples = refresh_at(&exporter, at(2026, 12, 30, 12, 2)).await;
    assert_eq!(company(&samples, "team", "monthly"), Some(5.0));
    assert_eq!(company(&samples, "rest", "monthly"), Some(1.0));
    assert_eq!(
        find(
            &samples,
            "openrouter_key_departed",
            &[("key_hash", hash(1).as_str()), ("company", "team")]
        )
        .len(),
        1
    );
}

/// `platform` is chosen by creator, `acme` by glob (where platform's keys
/// fall while their creator is unknown), `fixed` by hash.
#[tokio::test]
async fn a_member_list_never_read_leaves_the_companies_it_decides_absent_not_zero() {
    let mut state = empty_state();
    state.keys = vec![
        key_with_usage(WS_A, 1, "acme-one", 1.0),
        key_with_usage(WS_A, 2, "acme-plat", 10.0).set("creator_user_id", "user_p".into()),
        key_with_usage(WS_A, 3, "fixed-one", 100.0),
        key_with_usage(WS_A, 4, "stray", 1000.0),
    ];
    state.members = vec![member_json("user_p", "p@platform.example", "P", "P")];
    let sim = start_sim(state).await;
    sim.state().fail_forever("/organization/members", 500);
    let companies = format!(
        "  platform:\n    keys: [{{creator: '@platform.example'}}]\n  acme:\n    keys: [{{name_glob: 'acme-*'}}]\n  fixed:\n    keys: [{{hash: '{}'}}]\n",
        hash(3)
    );
    let exporter = exporter(config(&sim.base_url(), &companies));
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(
        value(
            &samples,
            "openrouter_organization_list_stale",
            &[("list", "members")]
        ),
        1.0
    );
    // Which keys are platform's, acme's or unassigned is not known: absent, not $0.
    for name in ["platform", "acme", "unassigned"] {
        let company = [("company", name)];
        assert_absent(&samples, "openrouter_company_usage_usd", &company);
        assert_absent(&samples, "openrouter_company_byok_usage_usd", &company);
        assert_absent(&samples, "openrouter_company_keys", &company);
    }
    // A hash selector does not depend on the member list.
    assert_eq!(company(&samples, "fixed", "monthly"), Some(300.0));
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "fixed")]),
        1.0
    );
    // The pages say "not known", never $0; the total still counts every key.
    let links = Links {
        metrics: "/metrics",
        grafana: None,
    };
    let published = exporter.published();
    let html = page::index(&published, &exporter.config(), &links, Utc::now());
    let row = html
        .split("<tr class=\"company\"")
        .find(|r| r.contains("data-company=\"platform\""))
        .expect("platform row");
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("not known until the member list is read"),
        "{row}"
    );
    assert!(!row.contains("data-usd"), "{row}");
    let csv = page::companies_csv(&published).unwrap();
    let line = |kind: &str, name: &str| {
        csv.lines()
            .find(|l| l.starts_with(&format!("{kind},\"{name}\",")))
            .unwrap_or_else(|| panic!("{kind} {name} in {csv}"))
            .to_string()
    };
    assert!(
        line("company", "platform").starts_with("company,\"platform\",,,,,,"),
        "{csv}"
    );
    assert!(line("total", "Total, all keys").contains(",3333,"), "{csv}");
    assert!(company_page(&exporter, "acme").contains("not known until the member list is read"));

    // Once the list is read, every company has its figures.
    sim.state().faults.clear();
    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(company(&samples, "platform", "monthly"), Some(30.0));
    assert_eq!(company(&samples, "acme", "monthly"), Some(3.0));
    assert_eq!(company(&samples, "unassigned", "monthly"), Some(3000.0));
    assert_eq!(
        value(
            &samples,
            "openrouter_company_keys",
            &[("company", "platform")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_workspace_list_never_read_leaves_slug_selected_companies_absent() {
    let mut state = empty_state();
    state.keys = vec![
        key_with_usage(WS_A, 1, "a-one", 1.0),
        key_with_usage(WS_B, 2, "b-two", 10.0),
        key_with_usage(WS_B, 3, "glob-three", 100.0),
    ];
    let sim = start_sim(state).await;
    let companies = format!(
        "  alpha:\n    keys: [{{workspace: a}}]\n  beta:\n    keys: [{{workspace: '{WS_B}'}}]\n  globbed:\n    keys: [{{name_glob: 'glob-*'}}]\n"
    );
    let exporter = exporter(config(&sim.base_url(), &companies));
    // No organization read yet: the slug `a` means nothing so far.
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    for name in ["alpha", "globbed", "unassigned"] {
        assert_absent(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", name)],
        );
        assert_absent(&samples, "openrouter_company_keys", &[("company", name)]);
    }
    // A workspace named by its id needs no list: beta keeps both its keys
    // (the glob ranks below a workspace).
    assert_eq!(company(&samples, "beta", "monthly"), Some(330.0));

    exporter.refresh_organization().await;
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(company(&samples, "alpha", "monthly"), Some(3.0));
    assert_eq!(company(&samples, "globbed", "monthly"), Some(0.0));
    assert_eq!(company(&samples, "unassigned", "monthly"), Some(0.0));
}
