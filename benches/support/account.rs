//! A deterministic synthetic OpenRouter account of any size, shared by the
//! criterion benches (`benches/`) and the fake upstream (`examples/fake_openrouter.rs`).
//!
//! The shape follows real listings: 64-hex hashes, `company-NNNN-env-NNNNNN`
//! names, 9-decimal dollar amounts, some BYOK spend, some limits, some
//! expiring and disabled keys, and about 5% of keys that no selector matches.
#![allow(dead_code)]

use openrouter_cost_exporter::sim::SimKey;
use serde_json::{json, Value};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub keys: usize,
    pub workspaces: usize,
    pub companies: usize,
    /// Activity collection in the exporter config, at this many calls per
    /// second; `None` turns it off.
    pub activity_calls_per_second: Option<u32>,
}

impl Spec {
    /// The benchmark default: 2 workspaces, one company per 100 keys (10..=1000).
    pub fn with_keys(keys: usize) -> Spec {
        Spec {
            keys,
            workspaces: 2,
            companies: (keys / 100).clamp(10, 1000),
            activity_calls_per_second: None,
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Dollars with OpenRouter's 9 decimals.
    fn dollars(&mut self, max: f64) -> f64 {
        (self.unit() * max * 1e9).round() / 1e9
    }
}

pub fn workspace_id(w: usize) -> String {
    let mut rng = Rng(w as u64 + 0x5eed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        rng.next() as u32,
        rng.next() as u16,
        rng.next() as u16 & 0xfff,
        rng.next() as u16 & 0xfff,
        rng.next() & 0xffff_ffff_ffff
    )
}

pub fn company_name(c: usize) -> String {
    format!("company-{c:04}")
}

pub fn key_hash(i: usize) -> String {
    let mut rng = Rng(i as u64);
    (0..4).map(|_| format!("{:016x}", rng.next())).collect()
}

const ENVS: [&str; 4] = ["prod", "staging", "dev", "batch"];

/// Key `i`: its workspace index and name. Every 20th key belongs to nobody.
pub fn key_name(spec: &Spec, i: usize) -> String {
    if i % 20 == 19 {
        format!("adhoc-{i:06}")
    } else {
        format!(
            "{}-{}-{i:06}",
            company_name(i % spec.companies),
            ENVS[(i / spec.companies) % 4]
        )
    }
}

/// Every key, as the simulated server lists it.
pub fn keys(spec: &Spec) -> Vec<SimKey> {
    let workspaces: Vec<String> = (0..spec.workspaces.max(1)).map(workspace_id).collect();
    let expiry = "2027-06-30T00:00:00Z";
    (0..spec.keys)
        .map(|i| {
            let mut rng = Rng(i as u64 ^ 0xdead_beef);
            let ws = &workspaces[i % workspaces.len()];
            let daily = rng.dollars(5.0);
            let weekly = daily + rng.dollars(20.0);
            let monthly = weekly + rng.dollars(80.0);
            let lifetime = monthly + rng.dollars(2000.0);
            let mut key = SimKey::new(ws, &key_hash(i), &key_name(spec, i))
                .usage(daily, weekly, monthly, lifetime);
            if i % 5 == 0 {
                let b = rng.dollars(2.0);
                key = key.byok(b, b * 3.0, b * 9.0, b * 40.0);
            }
            if i % 3 == 0 {
                let limit = 100.0 * (1 + i % 10) as f64;
                key = key
                    .set("limit", json!(limit))
                    .set("limit_remaining", json!(limit - monthly))
                    .set("limit_reset", json!("monthly"));
            }
            if i % 10 == 0 {
                key = key.set("expires_at", Value::from(expiry));
            }
            if i % 50 == 7 {
                key = key.set("disabled", json!(true));
            }
            key
        })
        .collect()
}

/// `{"data":[...]}` pages of at most 100 keys, per workspace in listing order:
/// the bytes the exporter downloads and parses in one refresh.
pub fn pages(spec: &Spec, keys: &[SimKey]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for w in 0..spec.workspaces.max(1) {
        let ws = workspace_id(w);
        let listed: Vec<&SimKey> = keys.iter().filter(|k| k.workspace == ws).collect();
        // A workspace with a multiple of 100 keys ends with an empty page.
        for chunk in listed
            .chunks(100)
            .chain((listed.len() % 100 == 0).then_some(&[][..]))
        {
            let data: Vec<&serde_json::Map<String, Value>> =
                chunk.iter().map(|k| &k.fields).collect();
            out.push(serde_json::to_vec(&json!({ "data": data })).expect("serialize"));
        }
    }
    out
}

/// The exporter's `companies:` section: one `name_glob` per company, plus an
/// exact name and a hash selector, and budgets on every third company.
pub fn companies_yaml(spec: &Spec) -> String {
    let mut y = String::new();
    for c in 0..spec.companies {
        y.push_str(&format!("  {}:\n    keys:\n", company_name(c)));
        if c == 0 && spec.keys > 0 {
            y.push_str(&format!("      - {}\n", key_name(spec, 0)));
        }
        if c == 1 && spec.keys > 1 {
            y.push_str(&format!("      - hash: {}\n", key_hash(1)));
        }
        y.push_str(&format!("      - name_glob: \"{}-*\"\n", company_name(c)));
        if c % 3 == 0 {
            y.push_str("    budget_usd: {daily: 50, weekly: 250, monthly: 1000}\n");
        }
    }
    y
}

/// A complete exporter config for this account. Activity collection is off
/// unless the spec sets a call rate: the refresh and scrape benchmarks measure
/// the listing path alone unless asked (`bench/scrape.sh --activity-models`).
pub fn config_yaml(spec: &Spec, base_url: &str, refresh_interval: &str, metrics: &str) -> String {
    let activity = match spec.activity_calls_per_second {
        Some(rate) => format!("activity:\n  calls_per_second: {rate}\n  concurrency: 16\n"),
        None => "activity:\n  enabled: false\n".to_string(),
    };
    format!(
        "refresh_interval: {refresh_interval}\n\
         openrouter:\n  base_url: {base_url}\n  request_timeout: 5s\n  workspaces: all\n\
         {activity}\
         {metrics}\
         companies:\n{}\
         unassigned_company: unassigned\n",
        companies_yaml(spec)
    )
}
