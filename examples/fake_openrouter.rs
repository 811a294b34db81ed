//! A standalone simulated OpenRouter management API with N keys, for benchmarks.
//!
//! ```text
//! cargo run --release --example fake_openrouter -- --keys 10000 \
//!     [--workspaces 2] [--companies 100] [--management-key KEY] \
//!     [--config-out exporter.yaml] [--refresh-interval 30s] [--metrics-yaml 'metrics: {per_key: false}'] \
//!     [--latency-ms 250] [--page-size 100] [--activity-models 1 [--activity-rate 1000]]
//! ```
//!
//! `--activity-models N` gives every key N models of spend on each of its 30
//! completed days (`GET /activity`) and turns activity collection on in the
//! written config, at `--activity-rate` calls per second (default 1000, the
//! exporter's ceiling, so that a fill of 100k keys takes minutes, not hours).
//!
//! `--latency-ms` makes every call wait that long before it is answered (a
//! network round trip); the peak number of requests in flight is printed to
//! stderr every time it rises.
//!
//! It serves `/api/v1/workspaces`, paginated `/api/v1/keys` and `/api/v1/credits`
//! through the library's `sim` module (the same server the tests use), prints
//! `base_url=http://127.0.0.1:PORT/api/v1` on stdout, optionally writes a
//! matching exporter config, and runs until killed. The account is
//! deterministic (see `benches/support/account.rs`), so every run and every
//! machine sees the same bytes.

#[path = "../benches/support/account.rs"]
mod account;

use std::io::Write;

use openrouter_cost_exporter::sim::{SimServer, SimState};

fn usage() -> ! {
    eprintln!(
        "usage: fake_openrouter --keys N [--workspaces W] [--companies C] [--management-key KEY]\n\
         \x20                      [--config-out PATH] [--refresh-interval 30s] [--metrics-yaml YAML]\n\
         \x20                      [--latency-ms MS] [--page-size N] [--activity-models N] [--activity-rate R]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut keys = None;
    let mut workspaces = 2;
    let mut companies = None;
    let mut management_key = std::env::var("OPENROUTER_MANAGEMENT_KEY")
        .unwrap_or_else(|_| "sk-or-v1-fake-management-key".to_string());
    let mut config_out = None;
    let mut refresh_interval = "30s".to_string();
    let mut metrics_yaml = String::new();
    let mut latency_ms = 0u64;
    let mut page_size = None;
    let mut activity_models = 0usize;
    let mut activity_rate = 1000u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--keys" => keys = value().parse().ok(),
            "--workspaces" => workspaces = value().parse().unwrap_or_else(|_| usage()),
            "--companies" => companies = Some(value().parse().unwrap_or_else(|_| usage())),
            "--management-key" => management_key = value(),
            "--config-out" => config_out = Some(value()),
            "--refresh-interval" => refresh_interval = value(),
            "--metrics-yaml" => metrics_yaml = value(),
            "--latency-ms" => latency_ms = value().parse().unwrap_or_else(|_| usage()),
            "--page-size" => page_size = Some(value().parse().unwrap_or_else(|_| usage())),
            "--activity-models" => activity_models = value().parse().unwrap_or_else(|_| usage()),
            "--activity-rate" => activity_rate = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let Some(keys) = keys else { usage() };
    let mut spec = account::Spec::with_keys(keys);
    spec.workspaces = workspaces;
    if let Some(c) = companies {
        spec.companies = c;
    }
    if activity_models > 0 {
        spec.activity_calls_per_second = Some(activity_rate);
    }

    let mut state = SimState::new(&management_key);
    state.workspaces = (0..spec.workspaces.max(1))
        .map(|w| (account::workspace_id(w), format!("Workspace {w}")))
        .collect();
    state.keys = account::keys(&spec);
    // The keys never change here: /activity looks hashes up, not scans 100k keys.
    state.key_hashes = Some(state.keys.iter().map(|k| k.hash().to_string()).collect());
    state.latency = std::time::Duration::from_millis(latency_ms);
    if let Some(size) = page_size {
        state.keys_page_size = size;
    }
    state.activity_every_day = (0..activity_models)
        .map(|m| {
            serde_json::json!({
                "model": format!("vendor/model-{m}"), "usage": 0.123456789,
                "byok_usage_inference": 0.0, "requests": 12, "prompt_tokens": 12000,
                "completion_tokens": 3000, "reasoning_tokens": 100,
            })
        })
        .collect();
    state.total_credits = 10_000_000.0;
    // Some spend of deleted keys, so the unattributed figure is not zero.
    state.total_usage = ((state.keys_lifetime_usage() + 1234.5) * 1e9).round() / 1e9;

    let server = SimServer::start(state)
        .await
        .expect("start the simulated OpenRouter");
    let base_url = server.base_url();
    if let Some(path) = config_out {
        if !metrics_yaml.is_empty() && !metrics_yaml.ends_with('\n') {
            metrics_yaml.push('\n');
        }
        let yaml = account::config_yaml(&spec, &base_url, &refresh_interval, &metrics_yaml);
        std::fs::write(&path, yaml).expect("write the exporter config");
    }
    println!("base_url={base_url}");
    println!(
        "keys={} workspaces={} companies={}",
        spec.keys, spec.workspaces, spec.companies
    );
    let _ = std::io::stdout().flush();
    // Serve until killed, reporting each new peak of requests in flight.
    let shared = server.shared_state();
    let mut peak = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (now_peak, calls) = {
            let st = shared.lock().unwrap_or_else(|p| p.into_inner());
            (st.max_in_flight, st.requests.len())
        };
        if now_peak > peak {
            peak = now_peak;
            eprintln!("peak_in_flight={peak} calls={calls}");
        }
    }
}
