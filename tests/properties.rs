//! Property tests (proptest): config parsing never panics, attribution
//! precedence and exact company sums, label escaping round trips, promtool
//! accepts hostile names, and the `upstream_keys` fuzz harness on stable.

mod common;

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use common::*;
use openrouter_cost_exporter::attribution::Attributor;
use openrouter_cost_exporter::config::{Config, Selector};
use openrouter_cost_exporter::exposition::{write_snapshot, MetricWriter};
use openrouter_cost_exporter::money::Usd;
use openrouter_cost_exporter::sim::SimKey;
use openrouter_cost_exporter::snapshot::{Extras, Listing, Snapshot};
use openrouter_cost_exporter::upstream::{ApiKey, Credits, UpstreamData};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Value};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------ config parsing

const VALID_CONFIG: &str = "refresh_interval: 5m
openrouter:
  base_url: https://openrouter.ai/api/v1
  management_key_env: OPENROUTER_MANAGEMENT_KEY
  request_timeout: 15s
  workspaces: all
companies:
  acme:
    keys:
      - acme-production
      - hash: f01d52606dc8f0a8303a7b5cc3fa07109c2e346cec7c0a16b40de462992ce943
      - name_glob: \"acme-*\"
    budget_usd: {daily: 50, weekly: 250, monthly: 1000}
  globex:
    keys: [globex-prod]
unassigned_company: unassigned
";

fn yaml_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("- ".to_string()),
        Just(": ".to_string()),
        prop::sample::select(vec![
            "refresh_interval",
            "openrouter",
            "base_url",
            "management_key_env",
            "management_key_file",
            "request_timeout",
            "workspaces",
            "companies",
            "keys",
            "budget_usd",
            "daily",
            "weekly",
            "monthly",
            "name",
            "hash",
            "name_glob",
            "unassigned_company",
            "stale_after_intervals",
            "metrics",
            "per_key",
            "acme",
            "5m",
            "1s",
            "0s",
            "500ms",
            "99999999999h",
            "all",
            "[",
            "]",
            "{",
            "}",
            ",",
            "'",
            "\"",
            "#",
            "&a",
            "*a",
            "!!binary",
            "!!str",
            "~",
            "null",
            "true",
            ".nan",
            ".inf",
            "-1",
            "0",
            "1e309",
            "4294967296",
            "-0",
            "é",
            "\t",
            "\\",
            "'a-*'",
            "'[a'",
            "**",
            "http://x",
            "ftp://x",
            "sk-or-v1-abc",
            "---",
            "...",
            "%YAML 1.2",
            "? ",
            "|",
            ">",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
        any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ]
}

fn yamlish() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(yaml_token(), 0..60).prop_map(|t| t.concat()),
        any::<String>(),
        // A valid config with a stretch deleted and garbage inserted.
        (
            0..VALID_CONFIG.len(),
            0..40usize,
            prop::collection::vec(yaml_token(), 0..4)
        )
            .prop_map(|(at, cut, insert)| {
                let mut text = VALID_CONFIG.to_string();
                let end = (at + cut).min(text.len());
                text.replace_range(at..end, &insert.concat());
                text
            }),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_parsing_never_panics_and_errors_say_something(text in yamlish()) {
        match Config::parse(&text, "prop.yaml") {
            Ok(config) => {
                prop_assert!(config.refresh_interval.as_secs() >= 1);
                // An unset timeout may equal a short interval (min(15 s, interval));
                // a set one is always shorter.
                prop_assert!(config.openrouter.request_timeout <= config.refresh_interval);
                prop_assert!(!config.openrouter.request_timeout.is_zero());
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.trim().is_empty());
                prop_assert!(message.contains("prop.yaml"), "names the origin: {}", message);
            }
        }
    }
}

#[test]
fn the_valid_config_used_for_mutations_is_valid() {
    Config::parse(VALID_CONFIG, "valid").expect("valid");
}

// ------------------------------------------------------------ attribution

const HASHES: [&str; 6] = ["00aa", "00bb", "00cc", "0Ddd", "00ee", "00ff"];
const NAMES: [&str; 8] = [
    "acme-prod",
    "acme-dev",
    "beta-prod",
    "b1",
    "bx",
    "gamma",
    "",
    "acme-",
];
const GLOBS: [&str; 6] = ["acme-*", "*-prod", "b?", "[ab]*", "*", "gamma"];

#[derive(Debug, Clone)]
enum Sel {
    Hash(usize, bool),
    Name(usize),
    Glob(usize),
}

fn selector() -> impl Strategy<Value = Sel> {
    prop_oneof![
        (0..HASHES.len(), any::<bool>()).prop_map(|(h, upper)| Sel::Hash(h, upper)),
        (0..NAMES.len() - 2).prop_map(Sel::Name), // the config refuses empty names
        (0..GLOBS.len()).prop_map(Sel::Glob),
    ]
}

/// A usage figure with at most 9 decimals, as OpenRouter reports, or unknown.
fn amount() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        8 => (0i64..2_000_000_000_000).prop_map(|n| Some(n as f64 / 1e9)),
        1 => Just(None),
        1 => prop::sample::select(vec![0.0, 0.1, 0.2, 1e-9, 454.542594979, 29.9999982])
            .prop_map(Some),
    ]
}

fn api_key(hash: &str, name: &str, usage: [Option<f64>; 4]) -> ApiKey {
    let [daily, weekly, monthly, lifetime] = usage;
    serde_json::from_value(json!({
        "hash": hash, "name": name,
        "usage_daily": daily, "usage_weekly": weekly,
        "usage_monthly": monthly, "usage": lifetime,
        "byok_usage": lifetime, "byok_usage_daily": daily,
    }))
    .expect("key JSON")
}

fn keys_strategy() -> impl Strategy<Value = Vec<ApiKey>> {
    prop::collection::vec(
        (
            0..HASHES.len(),
            any::<bool>(),
            0..NAMES.len(),
            [amount(), amount(), amount(), amount()],
        )
            .prop_map(|(h, upper, n, usage)| {
                let hash = if upper {
                    HASHES[h].to_uppercase()
                } else {
                    HASHES[h].to_lowercase()
                };
                api_key(&hash, NAMES[n], usage)
            }),
        0..30,
    )
}

/// Companies as YAML, made valid the way an operator would: an exact
/// selector another company already claims, or a repeat, is left out.
fn companies_yaml(companies: &[Vec<Sel>]) -> String {
    let mut claimed = std::collections::HashSet::new();
    let mut yaml = String::new();
    for (c, selectors) in companies.iter().enumerate() {
        let mut lines = Vec::new();
        let mut mine = std::collections::HashSet::new();
        for sel in selectors {
            let (id, line) = match sel {
                Sel::Hash(h, upper) => {
                    let h = if *upper {
                        HASHES[*h].to_uppercase()
                    } else {
                        HASHES[*h].to_string()
                    };
                    (
                        format!("h:{}", h.to_lowercase()),
                        format!("{{hash: '{h}'}}"),
                    )
                }
                Sel::Name(n) => (format!("n:{}", NAMES[*n]), format!("'{}'", NAMES[*n])),
                Sel::Glob(g) => (
                    format!("g:{}", GLOBS[*g]),
                    format!("{{name_glob: '{}'}}", GLOBS[*g]),
                ),
            };
            if !mine.insert(id.clone()) {
                continue;
            }
            if !id.starts_with("g:") && !claimed.insert(id) {
                continue;
            }
            lines.push(line);
        }
        if lines.is_empty() {
            lines.push(format!("{{name_glob: 'nothing-matches-{c}'}}"));
        }
        yaml.push_str(&format!(
            "  company{c}:\n    keys: [{}]\n",
            lines.join(", ")
        ));
    }
    yaml
}

/// The rules, written plainly: hash, then exact name, then the first company
/// in file order whose glob matches, else unassigned.
fn model_owner(config: &Config, key: &ApiKey) -> (usize, usize) {
    let hash = key.hash.to_lowercase();
    let mut claimants = std::collections::BTreeSet::new();
    let mut hash_owner = None;
    let mut name_owner = None;
    let mut glob_owner = None;
    for (c, company) in config.companies.iter().enumerate() {
        for selector in &company.selectors {
            match selector {
                Selector::Hash(h) if *h == hash => {
                    hash_owner.get_or_insert(c);
                    claimants.insert(c);
                }
                Selector::Name(n) if **n == *key.name => {
                    name_owner.get_or_insert(c);
                    claimants.insert(c);
                }
                Selector::NameGlob(g) if glob::Pattern::new(g).unwrap().matches(&key.name) => {
                    glob_owner.get_or_insert(c);
                    claimants.insert(c);
                }
                _ => {}
            }
        }
    }
    let owner = hash_owner
        .or(name_owner)
        .or(glob_owner)
        .unwrap_or(config.companies.len());
    (owner, claimants.len())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn every_key_attributed_once_by_hash_then_name_then_glob(
        companies in prop::collection::vec(prop::collection::vec(selector(), 1..5), 1..5),
        keys in keys_strategy(),
    ) {
        let yaml = format!("companies:\n{}", companies_yaml(&companies));
        let config = Config::parse(&yaml, "prop").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let result = Attributor::new(&config)
            .attribute(keys.iter().map(|k| (&*k.hash, &*k.name)));
        prop_assert_eq!(result.company_of_key.len(), keys.len());

        let mut conflicts = 0;
        for (i, key) in keys.iter().enumerate() {
            let (owner, claimants) = model_owner(&config, key);
            prop_assert_eq!(result.company_of_key[i], owner, "key {:?}\n{}", key, yaml);
            if claimants > 1 {
                conflicts += 1;
            }
        }
        prop_assert_eq!(result.conflicts, conflicts);
        for (c, company) in config.companies.iter().enumerate() {
            for (s, selector) in company.selectors.iter().enumerate() {
                let expected = keys.iter().filter(|k| match selector {
                    Selector::Hash(h) => k.hash.to_lowercase() == *h,
                    Selector::Name(n) => *k.name == **n,
                    Selector::NameGlob(g) => glob::Pattern::new(g).unwrap().matches(&k.name),
                    // Polled with their own secret, never generated here.
                    _ => false,
                }).count() as u64;
                prop_assert_eq!(result.selector_matches[c][s], expected, "{}", selector);
            }
        }

        // Company sums are the exact sums of their keys; unknown stays unknown.
        let data = Arc::new(Listing::from_upstream(UpstreamData {
            keys: keys.clone(),
            ..UpstreamData::default()
        }));
        let snapshot = Snapshot::build(&config, data, &Extras::default(), Utc::now());
        prop_assert_eq!(snapshot.companies.len(), config.companies.len() + 1);
        let total: u64 = snapshot.companies.iter().map(|c| c.keys).sum();
        prop_assert_eq!(total, keys.len() as u64);
        for (c, totals) in snapshot.companies.iter().enumerate() {
            let mine: Vec<&ApiKey> = keys
                .iter()
                .zip(&result.company_of_key)
                .filter(|(_, &owner)| owner == c)
                .map(|(k, _)| k)
                .collect();
            prop_assert_eq!(totals.keys, mine.len() as u64);
            let windows: [fn(&ApiKey) -> Option<f64>; 4] = [
                |k| k.usage_daily,
                |k| k.usage_weekly,
                |k| k.usage_monthly,
                |k| k.usage,
            ];
            for (w, get) in windows.iter().enumerate() {
                let expected = mine.iter().try_fold(Usd::ZERO, |sum, k| {
                    get(k).and_then(Usd::from_f64).and_then(|v| sum.checked_add(v))
                });
                prop_assert_eq!(totals.usage[w], expected, "company {} window {}", c, w);
            }
        }
    }
}

// ------------------------------------------------------------ label escaping

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\"\\\\\n\r\t\u{0}-\u{1f}\u{7f}{}=,é€🦀 a-z]{0,40}",
        Just(String::new()),
        Just("\\".to_string()),
        Just("\\n".to_string()),
        Just("\"}".to_string()),
        Just("x\"} 1\nopenrouter_up{a=\"".to_string()),
        (1..4usize).prop_map(|n| "é\"\\\n".repeat(2_500 * n / 4 + 1)),
        Just("k".repeat(10_240)),
    ]
}

/// Renders one snapshot of `keys` as the exporter does.
fn render(keys: Vec<ApiKey>) -> String {
    let config = Config::parse(
        "companies:\n  acme:\n    keys: [{name_glob: '*'}]\n",
        "render",
    )
    .unwrap();
    let data = Arc::new(Listing::from_upstream(UpstreamData {
        keys,
        credits: Some(Credits {
            total_credits: 10.0,
            total_usage: 5.0,
        }),
        credits_error: None,
    }));
    let taken_at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let snapshot = Snapshot::build(&config, data, &Extras::default(), taken_at);
    let mut writer = MetricWriter::new(Vec::new());
    write_snapshot(&mut writer, &snapshot, config.metrics).unwrap();
    String::from_utf8(writer.into_inner()).unwrap()
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn hostile_label_values_round_trip_exactly(
        name in hostile_string(),
        label in hostile_string(),
        workspace in hostile_string(),
        reset in hostile_string(),
    ) {
        let key: ApiKey = serde_json::from_value(json!({
            "hash": hash(1), "name": name, "label": label, "workspace_id": workspace,
            "limit": 5.0, "limit_reset": reset, "usage": 1.0,
        }))
        .unwrap();
        let text = render(vec![key]);
        let samples = parse(&text);
        let info = find(&samples, "openrouter_key_info", &[("key_hash", &hash(1))]);
        prop_assert_eq!(info.len(), 1);
        prop_assert_eq!(&info[0].labels["key"], &name);
        prop_assert_eq!(&info[0].labels["label"], &label);
        prop_assert_eq!(&info[0].labels["workspace_id"], &workspace);
        let limit = find(&samples, "openrouter_key_limit_usd", &[("key", &name)]);
        prop_assert_eq!(limit.len(), 1);
        let expected_reset = if reset.is_empty() { "never" } else { reset.as_str() };
        prop_assert_eq!(limit[0].labels["reset"].as_str(), expected_reset);
        // The strict reader agrees, and a hostile name never forges a sample.
        prop_assert_eq!(harness::check_exposition(&text), vec![name.clone()]);
        prop_assert_eq!(find(&samples, "openrouter_up", &[]).len(), 0);
    }
}

const HOSTILE_NAMES: [&str; 9] = [
    "quote\"in name",
    "back\\slash\\",
    "new\nline\n",
    "cr\rtab\tnul\u{0}bell\u{7}",
    "non-ASCII: é 漢字 🦀",
    "",
    "x\"} 1\nopenrouter_up 1\n# HELP fake",
    "{braces=\"and\",commas}",
    "trailing space ",
];

#[tokio::test]
async fn promtool_accepts_a_body_with_hostile_names() {
    let mut state = empty_state();
    for (n, name) in HOSTILE_NAMES.iter().enumerate() {
        state.keys.push(
            key_with_usage(WS_A, n, name, 1.0)
                .set("label", json!(format!("sk-or-v1-\"{n}\\\n...")))
                .set("limit", json!(3.0))
                .set("limit_remaining", json!(-0.5))
                .set("limit_reset", json!("weekly\"\n")),
        );
    }
    state
        .keys
        .push(key_with_usage(WS_B, 100, &"long-".repeat(2_048), 2.0));
    state
        .keys
        .push(SimKey::new(WS_B, &hash(101), "unknowns").without("usage"));
    state.total_credits = 50.0;
    state.total_usage = 40.0;
    let sim = start_sim(state).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  \"co\\\"mpany\\\\ é\\n\":\n    keys: [{name_glob: '*'}]\n",
    ));
    exporter.refresh().await.expect("refresh");
    let text = body(&exporter);
    let samples = parse(&text);
    for (n, name) in HOSTILE_NAMES.iter().enumerate() {
        let info = find(&samples, "openrouter_key_info", &[("key_hash", &hash(n))]);
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].labels["key"], *name);
        assert_eq!(info[0].labels["company"], "co\"mpany\\ é\n");
    }
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    harness::check_exposition(&text);
    match promtool_check_metrics(&text) {
        Some(report) => assert!(
            report.trim().is_empty(),
            "promtool check metrics:\n{report}"
        ),
        None => eprintln!("promtool absent: hostile-name body checked by the Rust parsers only"),
    }
}

// ------------------------------------------------------------ fuzz harness on stable

/// A valid page with every field shape the API has, as the fuzzer's seed.
fn seed_page() -> Vec<u8> {
    let keys: Vec<Value> = [
        key_with_usage(WS_A, 1, "acme-prod", 1.5),
        key_with_usage(WS_A, 2, "globex-x", 0.000000001)
            .set("limit", json!(10))
            .set("limit_remaining", json!(-2.5))
            .set("limit_reset", json!("monthly"))
            .set("expires_at", json!("2027-12-31T23:59:59Z")),
        SimKey::new(WS_B, &hash(3), "exact-key").without("usage_daily"),
        SimKey::new(WS_B, "00FF", "weird \"name\"\n").set("disabled", json!(true)),
    ]
    .into_iter()
    .map(|k| Value::Object(k.fields))
    .collect();
    serde_json::to_vec(&json!({ "data": keys })).unwrap()
}

#[test]
fn the_fuzz_seed_renders_every_key() {
    let seed = seed_page();
    let body = harness::keys_page(&seed).expect("the seed parses");
    assert!(body.contains("openrouter_key_info"));
    // The checked-in seed (fuzz/seeds/) stays in step with the harness.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/upstream_keys/page.json");
    if std::env::var_os("UPDATE_FUZZ_SEED").is_some() {
        std::fs::write(&path, &seed).unwrap();
    }
    let on_disk = std::fs::read(&path).expect("fuzz seed (UPDATE_FUZZ_SEED=1 writes it)");
    assert_eq!(
        on_disk, seed,
        "stale fuzz seed: rerun with UPDATE_FUZZ_SEED=1"
    );
    assert!(harness::keys_page(&on_disk).is_some());
}

fn mutation() -> impl Strategy<Value = (usize, usize, Vec<u8>)> {
    let splice = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::sample::select(vec![
            "\"",
            "\\",
            "\\u0000",
            "\\ud800",
            "null",
            "1e999",
            "-1e308",
            "1e-400",
            "-0",
            "[]",
            "{}",
            "[",
            "{",
            ",",
            ":",
            "true",
            "\"usage\":",
            "\"hash\":",
            "0.1",
            "18446744073709551616",
            "\"\u{0}\"",
            "é",
            "\u{feff}",
            "NaN",
            "Infinity",
            "\"name\":\"x\\\"} 1\\n\"",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    (any::<usize>(), 0..16usize, splice)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn fuzz_harness_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        harness::keys_page(&bytes);
        // Also wrapped, so the decoder gets past the envelope.
        let mut wrapped = b"{\"data\":[".to_vec();
        wrapped.extend_from_slice(&bytes);
        wrapped.extend_from_slice(b"]}");
        harness::keys_page(&wrapped);
    }

    #[test]
    fn fuzz_harness_on_mutated_valid_pages(
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut page = seed_page();
        for (at, cut, insert) in mutations {
            let at = at % (page.len() + 1);
            let end = (at + cut).min(page.len());
            page.splice(at..end, insert);
        }
        harness::keys_page(&page);
    }

    #[test]
    fn fuzz_harness_on_generated_pages(
        keys in prop::collection::vec(
            (
                hostile_string(),
                prop_oneof![Just(json!(null)), (-1e12f64..1e12).prop_map(|v| json!(v)),
                            any::<i64>().prop_map(|v| json!(v)), Just(json!(1.7976931348623157e308))],
                any::<bool>(),
                prop_oneof![Just(None), Just(Some("monthly")), Just(Some("")), Just(Some("x\n\"y"))],
            ),
            0..20,
        ),
    ) {
        let data: Vec<Value> = keys
            .iter()
            .enumerate()
            .map(|(i, (name, amount, disabled, reset))| json!({
                "hash": format!("{i:x}"), "name": name, "disabled": disabled,
                "usage": amount, "usage_daily": amount, "byok_usage_monthly": amount,
                "limit": amount, "limit_remaining": amount, "limit_reset": reset,
            }))
            .collect();
        let page = serde_json::to_vec(&json!({ "data": data })).unwrap();
        let body = harness::keys_page(&page);
        prop_assert!(body.is_some(), "a well-formed page is accepted");
    }
}

/// The strict reader is strict: these must all be refused.
#[test]
fn the_strict_reader_refuses_malformed_exposition() {
    for bad in [
        "# HELP m h\n# TYPE m gauge\nm{a=\"x\\q\"} 1\n",
        "# HELP m h\n# TYPE m gauge\nm{a=\"x\"} NaN\n",
        "# HELP m h\n# TYPE m gauge\nm{a=\"x} 1\n",
        "# HELP m h\n# TYPE m gauge\nm 1\nm2 1\n",
        "# HELP m h\n# TYPE m gauge\nm{a=\"x\",a=\"y\"} 1\n",
        "# HELP m h\n# TYPE m gauge\nm 1",
    ] {
        let result = std::panic::catch_unwind(|| harness::check_exposition(bad));
        assert!(result.is_err(), "accepted {bad:?}");
    }
    assert!(
        harness::check_exposition("# HELP m h\n# TYPE m gauge\nm{a=\"\\\\\\n\\\"\"} 1\n")
            .is_empty()
    );
}
