//! The core contract, in process: discovery across workspaces and pages,
//! exact values, attribution, failure keeps the previous snapshot.

mod common;

use common::*;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimKey};
use serde_json::json;

const WINDOWS: [(&str, &str); 4] = [
    ("daily", "usage_daily"),
    ("weekly", "usage_weekly"),
    ("monthly", "usage_monthly"),
    ("lifetime", "usage"),
];

/// 230 keys in workspace A (3 pages), 25 in B, with every awkward shape.
fn big_account() -> openrouter_cost_exporter::sim::SimState {
    let mut state = empty_state();
    for n in 0..230 {
        let company = ["acme", "globex", "initech", "stray"][n % 4];
        let mut key = key_with_usage(
            WS_A,
            n,
            &format!("{company}-{n:03}"),
            0.01 * n as f64 + 0.001,
        );
        if n % 7 == 0 {
            key = key.set("disabled", json!(true));
        }
        if n % 5 == 0 {
            key = key
                .set("limit", json!(1.5))
                .set("limit_remaining", json!(-0.25 - n as f64))
                .set("limit_reset", json!("monthly"));
        }
        if n % 11 == 0 {
            key = key.without("workspace_id").without("expires_at");
        }
        state.keys.push(key);
    }
    for n in 1000..1025 {
        state.keys.push(
            key_with_usage(WS_B, n, &format!("acme-b-{n}"), 1.25)
                .set("expires_at", json!("2027-12-31T23:59:59Z")),
        );
    }
    // Names that need escaping in the exposition format.
    state.keys.push(key_with_usage(
        WS_B,
        2000,
        "quote\"back\\slash\nnewline é",
        2.0,
    ));
    state.total_credits = 10_000.0;
    state.total_usage = state.keys_lifetime_usage() + 123.456;
    state
}

const COMPANIES: &str = "  acme:\n    keys:\n      - name_glob: 'acme-*'\n  globex:\n    keys: [{name_glob: 'globex-*'}]\n    budget_usd: {monthly: 100}\n  initech:\n    keys: [{name_glob: 'initech-*'}, typo-key]\n";

#[tokio::test]
async fn every_key_exported_once_with_upstream_values_and_exact_company_sums() {
    let sim = start_sim(big_account()).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");
    let text = body(&exporter);
    let samples = parse(&text);
    let upstream = sim.state().clone();

    // Pagination across both workspaces never trusts a page size: each page is
    // asked from the last key listed (issue 22), and a page holding that key
    // alone ends it. 230 keys = pages at 0, 99, 198 and the last key alone at
    // 229 in A, one page and the last key alone at 25 in B, plus pages
    // fetched ahead past the end (issue 17: at most K − 1 = 7 per workspace).
    let key_pages: Vec<_> = upstream
        .requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/keys"))
        .collect();
    for (ws, needed) in [(WS_A, &[0, 99, 198, 229][..]), (WS_B, &[0, 25][..])] {
        let offsets: Vec<usize> = key_pages
            .iter()
            .filter(|r| r.contains(ws))
            .filter_map(|r| r.split("offset=").nth(1)?.split('&').next()?.parse().ok())
            .collect();
        let end = needed[needed.len() - 1];
        for offset in needed {
            assert_eq!(
                offsets.iter().filter(|o| *o == offset).count(),
                1,
                "{offsets:?}"
            );
        }
        let ahead = offsets.iter().filter(|o| **o > end).count();
        assert_eq!(offsets.len(), needed.len() + ahead, "{offsets:?}");
        assert!(ahead <= 7, "{offsets:?}");
    }
    assert!(key_pages
        .iter()
        .all(|r| r.contains("include_disabled=true")));

    let infos = find(&samples, "openrouter_key_info", &[]);
    assert_eq!(infos.len(), upstream.keys.len(), "every key exactly once");

    for key in &upstream.keys {
        let h = key.hash();
        let name = key.fields["name"].as_str().unwrap();
        for (window, field) in WINDOWS {
            let got = value(
                &samples,
                "openrouter_key_usage_usd",
                &[("key_hash", h), ("window", window)],
            );
            assert_eq!(got, key.num(field).unwrap(), "{name} {window}");
            let byok = value(
                &samples,
                "openrouter_key_byok_usage_usd",
                &[("key_hash", h), ("window", window)],
            );
            assert_eq!(byok, key.num(&format!("byok_{field}")).unwrap());
        }
        let info = find(&samples, "openrouter_key_info", &[("key_hash", h)]);
        assert_eq!(
            info[0].labels["key"], name,
            "names round-trip through escaping"
        );
        // Keys that lack workspace_id carry the workspace they were listed under.
        assert_eq!(info[0].labels["workspace_id"], key.workspace);
        let company = &info[0].labels["company"];
        let expected = ["acme", "globex", "initech"]
            .into_iter()
            .find(|c| name.starts_with(&format!("{c}-")))
            .unwrap_or("unassigned");
        assert_eq!(company, expected, "{name}");

        let disabled = value(&samples, "openrouter_key_disabled", &[("key_hash", h)]);
        assert_eq!(
            disabled,
            if key.fields["disabled"] == json!(true) {
                1.0
            } else {
                0.0
            }
        );
        let limit = find(&samples, "openrouter_key_limit_usd", &[("key_hash", h)]);
        let remaining = find(
            &samples,
            "openrouter_key_limit_remaining_usd",
            &[("key_hash", h)],
        );
        match key.num("limit") {
            Some(l) => {
                assert_eq!(limit.len(), 1);
                assert_eq!(limit[0].value, l);
                assert_eq!(limit[0].labels["reset"], "monthly");
                assert_eq!(remaining[0].value, key.num("limit_remaining").unwrap());
                assert!(remaining[0].value < 0.0);
            }
            None => {
                assert!(limit.is_empty(), "unlimited key has no limit series");
                assert!(remaining.is_empty());
            }
        }
        let expiry = find(
            &samples,
            "openrouter_key_expiry_timestamp_seconds",
            &[("key_hash", h)],
        );
        match key.fields.get("expires_at").and_then(|v| v.as_str()) {
            Some(_) => assert_eq!(expiry[0].value, 1830297599.0),
            None => assert!(expiry.is_empty(), "never-expiring key has no expiry series"),
        }
    }

    // Company sums equal the sum of their keys, for every window.
    for company in ["acme", "globex", "initech", "unassigned"] {
        for (window, _) in WINDOWS {
            let keys: f64 = find(
                &samples,
                "openrouter_key_usage_usd",
                &[("company", company), ("window", window)],
            )
            .iter()
            .map(|s| s.value)
            .sum();
            let total = value(
                &samples,
                "openrouter_company_usage_usd",
                &[("company", company), ("window", window)],
            );
            assert!(
                (total - keys).abs() < 1e-6,
                "{company} {window}: {total} vs {keys}"
            );
        }
        let count = find(&samples, "openrouter_key_info", &[("company", company)]).len();
        assert_eq!(
            value(&samples, "openrouter_company_keys", &[("company", company)]),
            count as f64
        );
    }
    // Every dollar lands in exactly one company.
    let all_companies: f64 = find(
        &samples,
        "openrouter_company_usage_usd",
        &[("window", "lifetime")],
    )
    .iter()
    .map(|s| s.value)
    .sum();
    assert!((all_companies - upstream.keys_lifetime_usage()).abs() < 1e-6);

    assert_eq!(
        value(&samples, "openrouter_account_credits_usd", &[]),
        10_000.0
    );
    assert_eq!(
        value(&samples, "openrouter_account_usage_usd", &[]),
        upstream.total_usage
    );
    let unattributed = value(&samples, "openrouter_account_unattributed_usage_usd", &[]);
    assert!((unattributed - 123.456).abs() < 1e-6, "{unattributed}");

    assert_eq!(
        value(
            &samples,
            "openrouter_company_budget_usd",
            &[("company", "globex"), ("window", "monthly")]
        ),
        100.0
    );
    assert_absent(
        &samples,
        "openrouter_company_budget_usd",
        &[("company", "acme")],
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_config_selector_matches",
            &[("company", "initech"), ("selector", "name:typo-key")]
        ),
        0.0
    );
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        value(&samples, "openrouter_attribution_conflicts", &[]),
        0.0
    );

    if let Some(report) = promtool_check_metrics(&text) {
        assert!(report.trim().is_empty(), "promtool check metrics: {report}");
    }
}

/// Issue 22: a deleted key is no longer a listed key (no limit, state or
/// lifetime series) but stays visible as departed, and its spend of the
/// still-open windows stays in its company's totals (tests/departed_keys.rs
/// follows it until each window ends).
#[tokio::test]
async fn deleted_keys_are_marked_departed_and_spend_changes_appear() {
    let mut state = empty_state();
    state.keys.push(key_with_usage(WS_A, 1, "acme-one", 1.0));
    state.keys.push(key_with_usage(WS_A, 2, "acme-two", 2.0));
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    // A fixed clock: no UTC midnight between the two refreshes.
    let noon = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 30, 12, 0, 0).unwrap();
    exporter.set_clock(std::sync::Arc::new(move || noon));
    exporter.refresh().await.expect("first refresh");
    let samples = parse(&body(&exporter));
    assert_eq!(find(&samples, "openrouter_key_info", &[]).len(), 2);
    assert_absent(&samples, "openrouter_key_departed", &[]);

    {
        let mut st = sim.state();
        st.keys.retain(|k| k.hash() != hash(2));
        let one = st.key_mut(&hash(1)).unwrap();
        one.fields.insert("usage_daily".into(), json!(7.25));
    }
    exporter.refresh().await.expect("second refresh");
    let samples = parse(&body(&exporter));
    let two = [("key_hash", hash(2))];
    let two: Vec<(&str, &str)> = two.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(value(&samples, "openrouter_key_departed", &two), 1.0);
    assert_absent(&samples, "openrouter_key_disabled", &two);
    assert_absent(
        &samples,
        "openrouter_key_usage_usd",
        &[two[0], ("window", "lifetime")],
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key_hash", &hash(1)), ("window", "daily")]
        ),
        7.25
    );
    // acme-one's new figure, plus acme-two's last one for today.
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "daily")]
        ),
        9.25
    );
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        2.0
    );
}

async fn failing_page_two_keeps_snapshot(fault: FaultResponse) {
    let sim = start_sim(big_account()).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("first refresh");
    let before = body(&exporter);

    // Spend changes upstream, but page 2 of workspace A now fails.
    sim.state()
        .key_mut(&hash(3))
        .unwrap()
        .fields
        .insert("usage".into(), json!(999.0));
    sim.state()
        .faults
        .push(Fault::new("/keys", fault).at_offset(99));
    assert!(exporter.refresh().await.is_err());
    let after = body(&exporter);
    assert_eq!(
        snapshot_part(&before),
        snapshot_part(&after),
        "snapshot kept byte for byte"
    );
    let samples = parse(&after);
    assert_eq!(value(&samples, "openrouter_up", &[]), 0.0);
    assert_ne!(
        value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key_hash", &hash(3)), ("window", "lifetime")]
        ),
        999.0
    );

    // The fault clears: the next refresh publishes the new figure.
    sim.state().faults.clear();
    exporter.refresh().await.expect("recovery");
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key_hash", &hash(3)), ("window", "lifetime")]
        ),
        999.0
    );
}

#[tokio::test]
async fn http_500_on_page_two_keeps_previous_snapshot() {
    failing_page_two_keeps_snapshot(FaultResponse::Error {
        status: 500,
        retry_after: None,
    })
    .await;
}

#[tokio::test]
async fn truncated_json_on_page_two_keeps_previous_snapshot() {
    failing_page_two_keeps_snapshot(FaultResponse::Raw {
        content_type: "application/json".into(),
        body: r#"{"data":[{"hash":"abc","name":"x","usa"#.into(),
    })
    .await;
}

#[tokio::test]
async fn before_the_first_refresh_nothing_is_invented() {
    let sim = start_sim(empty_state()).await;
    let exporter = exporter(config(&sim.base_url(), "  acme:\n    keys: [a]\n"));
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_up", &[]), 0.0);
    assert_absent(&samples, "openrouter_company_usage_usd", &[]);
    assert_absent(
        &samples,
        "openrouter_last_refresh_success_timestamp_seconds",
        &[],
    );
    assert!(!exporter.is_ready());
}

#[tokio::test]
async fn unknown_amounts_are_omitted_not_zero() {
    let mut state = empty_state();
    state.keys.push(key_with_usage(WS_A, 1, "acme-one", 1.0));
    // An older API response without the windowed fields.
    state.keys.push(
        SimKey::new(WS_A, &hash(2), "acme-old")
            .without("usage_daily")
            .without("byok_usage_daily")
            .set("usage", json!(5.0)),
    );
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_absent(
        &samples,
        "openrouter_key_usage_usd",
        &[("key_hash", &hash(2)), ("window", "daily")],
    );
    // The company's daily total is unknown too, so it is absent rather than understated.
    assert_absent(
        &samples,
        "openrouter_company_usage_usd",
        &[("company", "acme"), ("window", "daily")],
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        15.0
    );
}

#[tokio::test]
async fn management_key_never_in_metrics() {
    let sim = start_sim(big_account()).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.unwrap();
    sim.state().faults.push(Fault::new(
        "/keys",
        FaultResponse::Error {
            status: 401,
            retry_after: None,
        },
    ));
    let err = exporter.refresh().await.unwrap_err();
    assert!(err.to_string().contains("management key"), "{err}");
    assert!(!err.to_string().contains(MANAGEMENT_KEY));
    assert!(!format!("{err:?}").contains(MANAGEMENT_KEY));
    let text = body(&exporter);
    assert!(!text.contains(MANAGEMENT_KEY));
    assert!(!text.contains("TESTSECRET"));
    assert!(!format!("{exporter:?}").contains("TESTSECRET"));
}

#[tokio::test]
async fn workspace_list_config_and_servers_without_workspaces_api() {
    let mut state = empty_state();
    state.keys.push(key_with_usage(WS_A, 1, "a-key", 1.0));
    state.keys.push(key_with_usage(WS_B, 2, "b-key", 2.0));
    state.workspaces_api = false;
    let sim = start_sim(state).await;
    // `workspaces: all` on a server without /workspaces lists the default workspace.
    let exporter = exporter(config(&sim.base_url(), "  acme:\n    keys: [a-key]\n"));
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    assert_eq!(find(&samples, "openrouter_key_info", &[]).len(), 1);

    // An explicit list lists exactly those workspaces, with no /workspaces call.
    let yaml = format!(
        "refresh_interval: 30s\nopenrouter:\n  base_url: {}\n  workspaces: ['{WS_B}']\ncompanies:\n  acme:\n    keys: [a-key]\n",
        sim.base_url()
    );
    let cfg = openrouter_cost_exporter::config::Config::parse(&yaml, "t").unwrap();
    sim.state().requests.clear();
    let exporter = common::exporter(cfg);
    exporter.refresh().await.unwrap();
    let samples = parse(&body(&exporter));
    let infos = find(&samples, "openrouter_key_info", &[]);
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].labels["key"], "b-key");
    assert!(!sim
        .state()
        .requests
        .iter()
        .any(|r| r.contains("/workspaces")));
}

#[tokio::test]
async fn upstream_calls_per_refresh_are_minimal() {
    let sim = start_sim(big_account()).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.unwrap();
    let requests = sim.state().requests.clone();
    let count = |p: &str| requests.iter().filter(|r| r.starts_with(p)).count();
    assert_eq!(count("/api/v1/workspaces"), 1);
    // Workspace A: 230 keys → pages at 0, 99, 198 and the last key alone at
    // 229 (each page asked from the last key listed, issue 22); workspace B:
    // 26 keys → one page and the last key alone at 25. Pages fetched
    // ahead past the end (issue 17) may add at most K − 1 = 7 per workspace;
    // B's first page is short, so it is listed one page at a time.
    let ahead = requests
        .iter()
        .filter(|r| r.starts_with("/api/v1/keys") && r.contains(WS_A))
        .filter(|r| {
            r.split("offset=")
                .nth(1)
                .and_then(|o| o.split('&').next()?.parse::<usize>().ok())
                .is_some_and(|o| o > 229)
        })
        .count();
    assert!(ahead <= 7, "{requests:?}");
    assert_eq!(count("/api/v1/keys"), 6 + ahead);
    assert_eq!(count("/api/v1/credits"), 1);
    assert_eq!(requests.len(), 8 + ahead);
    // A page fetched ahead may still be on its way back when the refresh ends.
    for _ in 0..100 {
        if exporter.telemetry().total_requests() == 8 + ahead as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(exporter.telemetry().total_requests(), 8 + ahead as u64);
}

/// The same account under `metrics:` cardinality options (audit §6).
async fn body_with_metrics_options(options: &str) -> String {
    let sim = start_sim(big_account()).await;
    let yaml = format!(
        "metrics:\n{options}{}",
        config_yaml(&sim.base_url(), COMPANIES)
    );
    let exporter = exporter(openrouter_cost_exporter::config::Config::parse(&yaml, "t").unwrap());
    exporter.refresh().await.expect("refresh");
    body(&exporter)
}

/// The company-level sample lines (`openrouter_company_*`), in order.
fn company_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("openrouter_company_"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn cardinality_switches_drop_key_families_and_keep_company_figures() {
    let full = body_with_metrics_options("  per_key: true\n").await;
    assert!(full.contains("\nopenrouter_key_usage_usd{"));
    assert!(full.contains("\nopenrouter_key_byok_usage_usd{"));

    // per_key: false: no per-key family at all, company figures unchanged.
    let no_keys = body_with_metrics_options("  per_key: false\n").await;
    let key_lines: Vec<_> = no_keys
        .lines()
        .filter(|l| l.contains("openrouter_key_"))
        .collect();
    assert!(key_lines.is_empty(), "{key_lines:?}");
    assert_eq!(company_lines(&no_keys), company_lines(&full));
    assert_eq!(
        value(
            &parse(&no_keys),
            "openrouter_company_keys",
            &[("company", "acme")]
        ),
        value(
            &parse(&full),
            "openrouter_company_keys",
            &[("company", "acme")]
        )
    );

    // per_key_byok: false: only the per-key BYOK family goes.
    let no_byok = body_with_metrics_options("  per_key_byok: false\n").await;
    assert!(!no_byok.contains("openrouter_key_byok_usage_usd"));
    assert_eq!(
        find(&parse(&no_byok), "openrouter_key_usage_usd", &[]).len(),
        find(&parse(&full), "openrouter_key_usage_usd", &[]).len()
    );
    assert_eq!(company_lines(&no_byok), company_lines(&full));
    assert!(no_byok.contains("\nopenrouter_company_byok_usage_usd{"));
}

#[tokio::test]
async fn company_byok_equals_the_sum_of_its_keys_byok() {
    let sim = start_sim(big_account()).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    exporter.refresh().await.expect("refresh");
    let samples = parse(&body(&exporter));
    let upstream = sim.state().clone();
    for company in ["acme", "globex", "initech", "unassigned"] {
        for (window, field) in WINDOWS {
            // From the simulator's figures, not from the exported key series.
            let expected: f64 = upstream
                .keys
                .iter()
                .filter(|k| {
                    let h = k.hash();
                    find(&samples, "openrouter_key_info", &[("key_hash", h)])[0].labels["company"]
                        == company
                })
                .map(|k| k.num(&format!("byok_{field}")).unwrap())
                .sum();
            let got = value(
                &samples,
                "openrouter_company_byok_usage_usd",
                &[("company", company), ("window", window)],
            );
            assert!(
                (got - expected).abs() < 1e-6,
                "{company} {window}: {got} vs {expected}"
            );
        }
    }
}

/// The next UTC midnight after `today` that satisfies `ok`, as Unix seconds.
fn next_midnight(today: chrono::NaiveDate, ok: impl Fn(chrono::NaiveDate) -> bool) -> f64 {
    let mut d = today.succ_opt().unwrap();
    while !ok(d) {
        d = d.succ_opt().unwrap();
    }
    d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() as f64
}

#[tokio::test]
async fn status_values_duration_build_info_window_ends_and_success_time() {
    use chrono::{Datelike, Weekday};
    let sim = start_sim(big_account()).await;
    let exporter = exporter(config(&sim.base_url(), COMPANIES));
    let before = chrono::Utc::now();
    let started = std::time::Instant::now();
    exporter.refresh().await.expect("refresh");
    let took = started.elapsed().as_secs_f64();
    let after = chrono::Utc::now();
    let samples = parse(&body(&exporter));

    let duration = value(&samples, "openrouter_refresh_duration_seconds", &[]);
    assert!(duration > 0.0 && duration <= took, "{duration} vs {took}");
    assert_eq!(
        value(
            &samples,
            "openrouter_exporter_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        find(&samples, "openrouter_exporter_build_info", &[]).len(),
        1
    );
    let success = value(
        &samples,
        "openrouter_last_refresh_success_timestamp_seconds",
        &[],
    );
    assert!(
        success >= before.timestamp_millis() as f64 / 1000.0
            && success <= after.timestamp_millis() as f64 / 1000.0,
        "{success}"
    );
    assert_eq!(
        value(&samples, "openrouter_refresh_interval_seconds", &[]),
        30.0
    );

    // Window ends, computed by walking the calendar (either side of a midnight race).
    let ends = |today: chrono::NaiveDate| {
        [
            ("daily", next_midnight(today, |_| true)),
            (
                "weekly",
                next_midnight(today, |d| d.weekday() == Weekday::Mon),
            ),
            ("monthly", next_midnight(today, |d| d.day() == 1)),
        ]
    };
    let (a, b) = (ends(before.date_naive()), ends(after.date_naive()));
    for i in 0..3 {
        let (window, _) = a[i];
        let got = value(
            &samples,
            "openrouter_window_end_timestamp_seconds",
            &[("window", window)],
        );
        assert!(got == a[i].1 || got == b[i].1, "{window}: {got}");
    }
    assert_absent(
        &samples,
        "openrouter_window_end_timestamp_seconds",
        &[("window", "lifetime")],
    );
}
