//! `demo`: the exporter against a simulated OpenRouter account in the same process.
//!
//! Six companies and fifteen keys in three workspaces, spend that grows every two
//! seconds and resets at the real UTC day/week/month boundaries, a disabled key,
//! unassigned keys, a key over its limit, a key that expires, and a selector
//! that matches nothing. One company is a whole workspace (`workspace: hooli`),
//! one the keys its members created (`creator: "@platform.example.com"`); a
//! guardrail caps one key and the Hooli workspace has a budget. The real client
//! talks to it over loopback HTTP. Its ledger (`history.rs`) lives in a
//! temporary directory and starts with three months of statements, the
//! account's own spend among them: a little more than its keys', the spend of
//! short-lived CI keys the exporter never listed (the "unattributed" line).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, Utc};
use serde_json::{json, Value};

use crate::config::{Config, ConfigError};
use crate::sim::{
    assignment_json, budget_json, guardrail_json, member_json, SimKey, SimServer, SimState,
};
pub use history::DemoLedger;

mod history;

pub const DEMO_CONFIG: &str = include_str!("demo_config.yaml");
pub const INITECH_API_HASH: &str =
    "9f2c4e71b3a85d06e4f1c2b7a9d3e8f05c6b1a2d4e7f8091a3b5c7d9e1f20384";
const PRODUCTION: &str = "3b6f1a8e-2c4d-4e5f-9a7b-1c2d3e4f5a6b";
const RESEARCH: &str = "7d9e0f1a-3b4c-4d5e-8f6a-7b8c9d0e1f2a";
/// A customer with a workspace of its own (the `hooli` company selects it).
const HOOLI: &str = "c4a1b2d3-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
/// Members who create keys: the platform team's keys make one company.
const PRIYA: &str = "user_2pRiYaPlatform000000000000";
const SAM: &str = "user_2sAmPlatform00000000000000";
const LEE: &str = "user_2lEeFinance000000000000000";

/// A stable 64-hex-digit hash for a demo key name (OpenRouter hashes look like this).
pub fn demo_hash(name: &str) -> String {
    let mut seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..4)
        .map(|_| {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            format!("{:016x}", z ^ (z >> 31))
        })
        .collect()
}

/// Spend rate of each key in US dollars per second (0 = idle).
struct Spender {
    hash: String,
    rate: f64,
    byok_share: f64,
}

/// The demo account as it starts: realistic month-to-date figures.
pub fn demo_state(management_key: &str) -> (SimState, Vec<(String, f64, f64)>) {
    let mut state = SimState::new(management_key);
    state.workspaces = vec![
        (PRODUCTION.to_string(), "Production".to_string()),
        (RESEARCH.to_string(), "Research".to_string()),
        (HOOLI.to_string(), "Hooli".to_string()),
    ];
    state.members = vec![
        member_json(PRIYA, "priya@platform.example.com", "Priya", "Raman"),
        member_json(SAM, "sam@platform.example.com", "Sam", "Okafor"),
        member_json(LEE, "lee@finance.example.com", "Lee", "Chen"),
    ];
    state.guardrails = vec![
        guardrail_json(
            "5a1e3c9d-8b7f-4e6a-9d2c-1b0a9f8e7d6c",
            "Hooli web monthly cap",
            Some(300.0),
            Some("monthly"),
        ),
        guardrail_json(
            "6b2f4d0e-9c8a-4f7b-8e3d-2c1b0a9f8e7d",
            "Models: no preview models",
            None,
            None,
        ),
        guardrail_json(
            "0f6d8b4c-3a2e-4d1f-8c7b-6a5f4e3d2c1b",
            "Staging monthly cap",
            Some(50.0),
            Some("monthly"),
        ),
    ];
    state.guardrail_key_assignments = vec![
        assignment_json(
            "7c3a5e1f-0d9b-4a8c-9f4e-3d2c1b0a9f8e",
            &demo_hash("hooli-web"),
            "5a1e3c9d-8b7f-4e6a-9d2c-1b0a9f8e7d6c",
        ),
        assignment_json(
            "8d4b6f2a-1e0c-4b9d-8a5f-4e3d2c1b0a9f",
            &demo_hash("platform-ci"),
            "6b2f4d0e-9c8a-4f7b-8e3d-2c1b0a9f8e7d",
        ),
        assignment_json(
            "1a7e9c5d-4b3f-4e2a-9d8c-7b6a5f4e3d2c",
            &demo_hash("acme-staging"),
            "0f6d8b4c-3a2e-4d1f-8c7b-6a5f4e3d2c1b",
        ),
    ];
    state.workspace_budgets.insert(
        PRODUCTION.to_string(),
        vec![budget_json(
            "2b8f0d6e-5c4a-4f3b-8e9d-8c7b6a5f4e3d",
            PRODUCTION,
            20000.0,
            Some("monthly"),
        )],
    );
    state.workspace_budgets.insert(
        HOOLI.to_string(),
        vec![budget_json(
            "9e5c7a3b-2f1d-4c0e-9b6a-5f4e3d2c1b0a",
            HOOLI,
            1500.0,
            Some("monthly"),
        )],
    );
    let expires = (Utc::now() + chrono::Duration::days(45))
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    // (workspace, name, hash, [daily, weekly, monthly, lifetime], byok share, $/s, extra fields)
    let keys: Vec<(SimKey, f64, f64)> = vec![
        (
            key(PRODUCTION, "acme-production")
                .usage(41.8, 262.1, 1184.2, 8421.37)
                .set("limit", json!(2000))
                .set("limit_reset", json!("monthly")),
            0.012,
            0.0,
        ),
        (
            key(PRODUCTION, "acme-staging").usage(0.9, 5.3, 21.4, 312.5),
            0.0005,
            0.0,
        ),
        (
            key(RESEARCH, "acme-research")
                .usage(3.1, 14.2, 48.6, 210.0)
                .byok(1.2, 6.0, 19.5, 88.0),
            0.002,
            0.4,
        ),
        (
            key(PRODUCTION, "globex-prod")
                .usage(14.7, 96.3, 402.15, 2950.0)
                .byok(2.0, 11.0, 40.0, 310.0),
            0.004,
            0.1,
        ),
        (
            key(RESEARCH, "globex-staging").usage(0.4, 2.2, 11.2, 64.9),
            0.0002,
            0.0,
        ),
        (
            SimKey::new(PRODUCTION, INITECH_API_HASH, "initech-api")
                .usage(22.5, 151.0, 655.3, 4120.8)
                .set("expires_at", json!(expires)),
            0.004,
            0.0,
        ),
        (
            key(PRODUCTION, "initech-batch")
                .usage(0.0, 0.0, 31.0, 977.4)
                .set("disabled", json!(true)),
            0.0,
            0.0,
        ),
        (
            key(RESEARCH, "umbrella-chat")
                .usage(9.8, 61.0, 262.4, 1490.2)
                .set("limit", json!(250))
                .set("limit_reset", json!("monthly")),
            0.0,
            0.0,
        ),
        (
            key(RESEARCH, "umbrella-embed")
                .usage(1.3, 7.9, 30.6, 122.0)
                .set("limit", json!(5))
                .set("limit_reset", json!("daily")),
            0.0003,
            0.0,
        ),
        (
            key(PRODUCTION, "legacy-shared-key").usage(2.2, 13.0, 58.7, 1733.0),
            0.0008,
            0.0,
        ),
        (
            key(HOOLI, "hooli-web")
                .usage(12.4, 70.3, 240.9, 1310.0)
                .set("creator_user_id", json!(LEE)),
            0.003,
            0.0,
        ),
        (
            key(HOOLI, "hooli-batch").usage(3.0, 18.5, 77.0, 402.3),
            0.001,
            0.0,
        ),
        (
            key(RESEARCH, "platform-ci")
                .usage(4.2, 27.9, 101.6, 655.0)
                .set("creator_user_id", json!(PRIYA)),
            0.001,
            0.0,
        ),
        (
            key(PRODUCTION, "platform-evals")
                .usage(6.6, 41.0, 150.2, 720.4)
                .set("creator_user_id", json!(SAM))
                .set("limit", json!(400))
                .set("limit_reset", json!("monthly")),
            0.0015,
            0.0,
        ),
        (
            key(RESEARCH, "intern-sandbox")
                .usage(0.1, 0.8, 3.2, 9.9)
                .set("limit", json!(10))
                .set("limit_reset", json!("weekly")),
            0.0001,
            0.0,
        ),
    ];
    let mut rates = Vec::new();
    for (k, rate, byok_share) in keys {
        rates.push((k.hash().to_string(), rate, byok_share));
        state.keys.push(k);
    }
    for k in &mut state.keys {
        update_remaining(k);
    }
    seed_activity(&mut state);
    seed_unlisted_activity(&mut state);
    // Spend of keys deleted long ago: the account total is larger than the listed keys'.
    state.total_usage = state.keys_lifetime_usage() + 412.63;
    state.total_credits = 25_000.0;
    (state, rates)
}

const MODELS: [&str; 12] = [
    "anthropic/claude-sonnet-4",
    "openai/gpt-4.1",
    "google/gemini-2.5-flash",
    "openai/gpt-4.1-mini",
    "deepseek/deepseek-chat",
    "meta-llama/llama-3.3-70b-instruct",
    "mistralai/mistral-small",
    "qwen/qwen3-coder",
    "anthropic/claude-haiku-4",
    "x-ai/grok-3-mini",
    "cohere/command-r",
    "openai/text-embedding-3-small",
];

/// One `/activity` row as live accounts send it: the date with a time part,
/// and no reasoning or BYOK figures (`null`) for models that have none.
fn activity_row(date: &str, model: &str, usage: f64) -> Value {
    let requests = (usage * 180.0) as u64 + 1;
    let reasons = !model.contains("embedding") && !model.contains("mini");
    json!({
        "date": format!("{date} 00:00:00"), "model": model, "model_permaslug": model,
        "endpoint_id": "00000000-0000-4000-8000-000000000000", "provider_name": "Simulated",
        "usage": usage, "byok_usage_inference": if reasons { json!(0.0) } else { Value::Null },
        "requests": requests,
        "prompt_tokens": requests * 1400, "completion_tokens": requests * 350,
        "reasoning_tokens": if reasons { json!(requests * 40) } else { Value::Null },
    })
}

/// 30 completed days of per-model activity for every key, roughly matching its monthly pace.
fn seed_activity(state: &mut SimState) {
    let today = Utc::now().date_naive();
    for key in &state.keys {
        let hash = key.hash().to_string();
        let mut rng = fastrand::Rng::with_seed(
            hash.bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
        );
        let per_day = key.num("usage_monthly").unwrap_or(0.0) / 20.0;
        // Each key uses a few models; big customers use many.
        let model_count = if per_day > 20.0 {
            9
        } else {
            2 + rng.usize(..3)
        };
        let first = rng.usize(..MODELS.len());
        let mut rows = Vec::new();
        for back in 1..=30 {
            let date = (today - chrono::Duration::days(back))
                .format("%Y-%m-%d")
                .to_string();
            for m in 0..model_count {
                // A steep preference curve: the first model takes most of the spend.
                let share = 1.0 / f64::from(1u32 << m.min(10));
                let usage = round9(per_day * share * (0.6 + rng.f64() * 0.8) / 2.0);
                if usage > 0.0 {
                    rows.push(activity_row(
                        &date,
                        MODELS[(first + m) % MODELS.len()],
                        usage,
                    ));
                }
            }
        }
        state.activity.insert(hash, rows);
    }
}

/// Short-lived CI keys, created and deleted between two listings: the
/// exporter never lists them, but the account pays for them. Their rows are
/// served only by the account-wide `/activity`: the statements'
/// "unattributed" line.
pub(crate) const UNLISTED_KEYS: &str = "ci-ephemeral-keys";

/// The unlisted keys' 30 days: a few cents to a dollar every third day.
fn seed_unlisted_activity(state: &mut SimState) {
    let today = Utc::now().date_naive();
    let mut rng = fastrand::Rng::with_seed(11);
    let rows = (1..=30)
        .filter(|back| back % 3 == 0)
        .map(|back| {
            let date = (today - chrono::Duration::days(back))
                .format("%Y-%m-%d")
                .to_string();
            activity_row(&date, MODELS[4], round9(0.05 + rng.f64() * 0.9))
        })
        .collect();
    state.activity.insert(demo_hash(UNLISTED_KEYS), rows);
}

fn key(workspace: &str, name: &str) -> SimKey {
    SimKey::new(workspace, &demo_hash(name), name)
}

/// `limit_remaining` = limit − usage of the limit's reset window (lifetime when it never resets).
fn update_remaining(k: &mut SimKey) {
    let Some(limit) = k.num("limit") else { return };
    let window = match k.fields.get("limit_reset").and_then(Value::as_str) {
        Some("daily") => "usage_daily",
        Some("weekly") => "usage_weekly",
        Some("monthly") => "usage_monthly",
        _ => "usage",
    };
    let used = k.num(window).unwrap_or(0.0);
    k.fields
        .insert("limit_remaining".into(), json!(round9(limit - used)));
}

fn round9(v: f64) -> f64 {
    (v * 1e9).round() / 1e9
}

/// One tick of simulated traffic: spend grows, windows reset at UTC boundaries.
fn tick(state: &mut SimState, spenders: &[Spender], seconds: f64, period: &mut (u32, u32, u32)) {
    let now = Utc::now();
    let today = (now.ordinal(), now.iso_week().week(), now.month());
    let reset_day = today.0 != period.0;
    let reset_week = today.1 != period.1;
    let reset_month = today.2 != period.2;
    *period = today;
    let mut spent_total = 0.0;
    if reset_day {
        // The day that just ended becomes activity history.
        let yesterday = (now - chrono::Duration::days(1))
            .format("%Y-%m-%d")
            .to_string();
        let ended: Vec<(String, f64)> = state
            .keys
            .iter()
            .map(|k| (k.hash().to_string(), k.num("usage_daily").unwrap_or(0.0)))
            .filter(|(_, usage)| *usage > 0.0)
            .collect();
        for (hash, usage) in ended {
            let row = activity_row(&yesterday, MODELS[0], usage);
            state.activity.entry(hash).or_default().push(row);
        }
    }
    for spender in spenders {
        let Some(k) = state.key_mut(&spender.hash) else {
            continue;
        };
        for (reset, fields) in [
            (reset_day, ["usage_daily", "byok_usage_daily"]),
            (reset_week, ["usage_weekly", "byok_usage_weekly"]),
            (reset_month, ["usage_monthly", "byok_usage_monthly"]),
        ] {
            if reset {
                for f in fields {
                    k.fields.insert(f.into(), json!(0.0));
                }
            }
        }
        let disabled = k
            .fields
            .get("disabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let exhausted = k.num("limit_remaining").is_some_and(|r| r <= 0.0);
        if spender.rate > 0.0 && !disabled && !exhausted {
            let spend = round9(spender.rate * seconds * (0.5 + fastrand::f64()));
            let byok = round9(spend * spender.byok_share);
            for f in ["usage", "usage_daily", "usage_weekly", "usage_monthly"] {
                let v = k.num(f).unwrap_or(0.0);
                k.fields.insert(f.into(), json!(round9(v + spend)));
            }
            for f in [
                "byok_usage",
                "byok_usage_daily",
                "byok_usage_weekly",
                "byok_usage_monthly",
            ] {
                let v = k.num(f).unwrap_or(0.0);
                k.fields.insert(f.into(), json!(round9(v + byok)));
            }
            spent_total += spend;
        }
        update_remaining(k);
    }
    state.total_usage = round9(state.total_usage + spent_total);
}

/// The running simulated account; spend grows until it is dropped.
pub struct DemoUpstream {
    pub server: SimServer,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DemoUpstream {
    pub async fn start(management_key: &str) -> std::io::Result<DemoUpstream> {
        let (state, rates) = demo_state(management_key);
        let server = SimServer::start(state).await?;
        let shared: Arc<Mutex<SimState>> = server.shared_state();
        let spenders: Vec<Spender> = rates
            .into_iter()
            .map(|(hash, rate, byok_share)| Spender {
                hash,
                rate,
                byok_share,
            })
            .collect();
        let task = tokio::spawn(async move {
            let now = Utc::now();
            let mut period = (now.ordinal(), now.iso_week().week(), now.month());
            let step = Duration::from_secs(2);
            let mut ticker = tokio::time::interval(step);
            loop {
                ticker.tick().await;
                let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                tick(&mut state, &spenders, step.as_secs_f64(), &mut period);
            }
        });
        Ok(DemoUpstream { server, task })
    }
}

/// The bundled demo config pointed at the simulated server.
pub fn demo_config(base_url: &str) -> Result<Config, ConfigError> {
    let mut config = Config::parse(DEMO_CONFIG, "built-in demo config")?;
    config.openrouter.base_url = base_url.to_string();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_parses_and_hashes_are_stable() {
        demo_config("http://127.0.0.1:1/api/v1").unwrap();
        assert_eq!(demo_hash("x"), demo_hash("x"));
        assert_eq!(demo_hash("acme-production").len(), 64);
        assert_ne!(demo_hash("a"), demo_hash("b"));
    }

    #[test]
    fn ticks_grow_spend_and_keep_windows_ordered() {
        let (mut state, rates) = demo_state("k");
        let spenders: Vec<Spender> = rates
            .into_iter()
            .map(|(hash, rate, byok_share)| Spender {
                hash,
                rate,
                byok_share,
            })
            .collect();
        let before = state.total_usage;
        let now = Utc::now();
        let mut period = (now.ordinal(), now.iso_week().week(), now.month());
        tick(&mut state, &spenders, 2.0, &mut period);
        assert!(state.total_usage > before);
        let over = state
            .keys
            .iter()
            .find(|k| k.fields["name"] == "umbrella-chat")
            .unwrap();
        assert!(over.num("limit_remaining").unwrap() < 0.0);
    }
}
