//! Shared test helpers: a simulated OpenRouter, configs pointing at it, an
//! exposition-format parser, a guard for the real binary, and the exporter
//! served in process for the web tests.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::sim::{member_json, SimKey, SimServer, SimState};
use openrouter_cost_exporter::upstream::RetryPolicy;
use secrecy::SecretString;

pub mod config;
#[path = "../../fuzz/harness.rs"]
pub mod harness;
pub mod tools;
pub mod web_server;

pub use config::{snapshot_part, TestConfig};
pub use tools::{free_port, is_ci, which};

/// Every `window` a company figure is published for (calendar, lifetime, rolling).
pub const WINDOWS: [&str; 6] = [
    "daily",
    "weekly",
    "monthly",
    "lifetime",
    "rolling_7d",
    "rolling_30d",
];

pub const MANAGEMENT_KEY: &str = "sk-or-v1-TESTSECRET-0123456789abcdef0123456789abcdef";
pub const WS_A: &str = "11111111-1111-4111-8111-111111111111";
pub const WS_B: &str = "22222222-2222-4222-8222-222222222222";

/// Fast retries so fault tests do not wait seconds.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

/// A 64-hex-digit hash from a number.
pub fn hash(n: usize) -> String {
    format!("{n:064x}")
}

/// An account with two workspaces and no keys yet.
pub fn empty_state() -> SimState {
    let mut state = SimState::new(MANAGEMENT_KEY);
    state.workspaces = vec![
        (WS_A.to_string(), "A".to_string()),
        (WS_B.to_string(), "B".to_string()),
    ];
    state
}

pub async fn start_sim(state: SimState) -> SimServer {
    SimServer::start(state)
        .await
        .expect("start simulated OpenRouter")
}

/// A config YAML pointing at `base_url`; `companies` is the YAML under `companies:`.
pub fn config_yaml(base_url: &str, companies: &str) -> String {
    TestConfig::new(base_url).companies(companies).yaml()
}

pub fn config(base_url: &str, companies: &str) -> Config {
    Config::parse(&config_yaml(base_url, companies), "test config").expect("valid test config")
}

pub fn exporter(config: Config) -> Exporter {
    Exporter::with_key(
        config,
        SecretString::from(MANAGEMENT_KEY.to_string()),
        fast_retry(),
    )
    .expect("exporter")
}

/// What a scrape gets: the published text, then the counters rendered now.
pub fn body(exporter: &Exporter) -> String {
    let mut text = exporter.published().plain.to_vec();
    text.extend(exporter.telemetry().render());
    String::from_utf8(text).expect("UTF-8 body")
}

/// One parsed sample of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format, unescaping label values. Each sample
/// line goes through the fuzz harness's strict parser, so every test that reads
/// a body also checks names, escaping and value syntax.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, labels, value) = harness::parse_sample(line);
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

/// The samples of `name` whose labels include every pair in `want`.
pub fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// Asserts that no sample of `name` has labels `want`: an unknown figure is
/// absent, never 0.
#[track_caller]
pub fn assert_absent(samples: &[Sample], name: &str, want: &[(&str, &str)]) {
    let found = find(samples, name, want);
    assert!(
        found.is_empty(),
        "{name}{want:?} should be absent, found {found:?}"
    );
}

/// The single value of `name` with labels `want`; panics when absent or ambiguous.
pub fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, want);
    assert_eq!(
        found.len(),
        1,
        "expected one {name}{want:?}, found {found:?}"
    );
    found[0].value
}

/// `openrouter_company_usage_usd` of `company` in `window`: `None` when
/// absent (unknown), panics when published twice.
pub fn company(samples: &[Sample], company: &str, window: &str) -> Option<f64> {
    let found = find(
        samples,
        "openrouter_company_usage_usd",
        &[("company", company), ("window", window)],
    );
    assert!(found.len() <= 1, "{found:?}");
    found.first().map(|s| s.value)
}

/// `openrouter_refresh_failures_total{reason}` in the exposition `text` (0 when absent).
pub fn failures(text: &str, reason: &str) -> f64 {
    let samples = parse(text);
    let found = find(
        &samples,
        "openrouter_refresh_failures_total",
        &[("reason", reason)],
    );
    found.first().map_or(0.0, |s| s.value)
}

/// One CSV line's fields, quotes removed (`""` is a quote).
pub fn csv_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// An exact decimal dollar amount (as the CSVs write it) in nano-dollars.
pub fn usd_nanos(text: &str) -> i128 {
    let (neg, text) = text.strip_prefix('-').map_or((false, text), |t| (true, t));
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let n = whole.parse::<i128>().unwrap() * 1_000_000_000
        + format!("{frac:0<9}").parse::<i128>().unwrap();
    if neg {
        -n
    } else {
        n
    }
}

/// `n` organization members nobody selects (`user_{i}`, `m{i}@elsewhere.org`),
/// to push the ones a test is about onto a later page.
pub fn filler_members(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            member_json(
                &format!("user_{i}"),
                &format!("m{i}@elsewhere.org"),
                "M",
                "N",
            )
        })
        .collect()
}

/// A child process killed on drop, with its stderr captured to a file.
pub struct ChildGuard {
    pub child: Child,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildGuard {
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_openrouter-cost-exporter")
}

/// Starts the real binary with `args` and extra env; stdout+stderr go to a log file.
pub fn spawn_binary(args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("exporter.log");
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut cmd = Command::new(binary());
    // Its own working directory: the default --storage.path (data/) lands there.
    cmd.args(args)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn exporter binary");
    ChildGuard {
        child,
        log,
        _dir: dir,
    }
}

/// GETs `url` until `ok` accepts the body, or panics after `timeout`.
pub async fn wait_for(url: &str, timeout: Duration, ok: impl Fn(u16, &str) -> bool) -> String {
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(resp) = client.get(url).send().await {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            if ok(status, &text) {
                return text;
            }
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `promtool check metrics` on `text`. `None` when promtool is absent
/// locally (the reason is printed); panics when absent in CI.
pub fn promtool_check_metrics(text: &str) -> Option<String> {
    use std::io::Write;
    let Some(promtool) = which("promtool") else {
        require_in_ci("promtool", "apt-get install prometheus");
        return None;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && report.trim().is_empty() {
        report = format!("promtool exited with {}", out.status);
    }
    Some(report)
}

/// Skips locally with a printed reason; fails in CI where the tool must be installed.
pub fn require_in_ci(tool: &str, install: &str) {
    let _ = tools::require_tool(&[tool], install);
}

/// A key with every window set from one base amount, for value checks.
pub fn key_with_usage(ws: &str, n: usize, name: &str, base: f64) -> SimKey {
    SimKey::new(ws, &hash(n), name)
        .usage(base, base * 2.0, base * 3.0, base * 10.0)
        .byok(base / 10.0, base / 5.0, base * 0.3, base)
}
