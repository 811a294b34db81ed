//! End to end: the exporter in demo mode -> a real Prometheus loading the
//! shipped rule files -> a real Alertmanager with the shipped routing -> a
//! webhook receiver in this test.
//!
//! * The demo's `acme` is over its monthly budget: its
//!   OpenRouterCompanyBudgetExceeded alert must reach the webhook, with its
//!   `company` label, through the route the shipped Alertmanager config has for
//!   company="acme". `globex` is far under its budgets: no budget alert for it
//!   may arrive.
//! * Every PromQL expression of every dashboard panel (and every templating
//!   query) is evaluated through Prometheus's HTTP API with the dashboard
//!   variables substituted; each must be valid and return data. Every
//!   time-series target also runs as the range query Grafana sends (the
//!   panel's range and step, start and end floored to the step): the UTC-day
//!   bars must show completed days only, not today's partial one.
//! * Two demo exporters run behind the one scrape job, as two replicas of the
//!   exporter would: every panel must show one exporter's figures, not their
//!   sum, and a panel that keeps one series per replica must name its
//!   `instance` in the legend.
//! * Every `openrouter_*` name used by the dashboards and the rules must be a
//!   metric family the exporter exports (or, for direct-key mode, which the
//!   demo does not run, one in the exposition's family table).
//!
//! Needs Debian's `prometheus` and `prometheus-alertmanager` packages (binaries
//! `prometheus` and `prometheus-alertmanager`, or `alertmanager`). Without them
//! the test prints why it skips; with CI=true a missing binary fails it.
//!
//! The rule files are copied with every `for:` set to 0s, so alerts fire on
//! the first evaluation; scrape and evaluation run every second.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

// tests/common re-exports helpers this file does not all use.
mod common;
use common::tools::{free_port, require_tool, root};
use openrouter_cost_exporter::exposition;

const BIN: &str = env!("CARGO_BIN_EXE_openrouter-cost-exporter");
/// Company over its monthly budget in the demo / company far under all budgets
/// so far.
const OVER: &str = "acme";
const UNDER: &str = "globex";
const BUDGET_EXCEEDED: &str = "OpenRouterCompanyBudgetExceeded";
/// Alerts about the budget a company has used so far: none may arrive for
/// UNDER.
const BUDGET_ALERTS: [&str; 2] = [
    "OpenRouterCompanyBudgetExceeded",
    "OpenRouterCompanyBudgetNearlyExhausted",
];
/// Alerts about the recent pace: whether they must fire or stay quiet follows
/// from the pace the exporter's own figures show over the test.
const BURN_RATE: &str = "OpenRouterCompanyBudgetBurnRate";
const CREDITS_LOW: &str = "OpenRouterAccountCreditsLow";
/// Fires when openrouter.thresholds.yml is not loaded.
const THRESHOLDS_MISSING: &str = "OpenRouterAlertThresholdsMissing";
/// Share of dashboard queries that must return data against the demo (the
/// rest may be empty: e.g. the UTC-day bars, which show completed days only
/// and are empty "now").
const MIN_WITH_DATA: f64 = 0.95;
/// Families the dashboards may use although the demo does not export them:
/// direct-key mode only. Each must be in the exporter's family table.
const NOT_IN_DEMO: [&str; 1] = ["openrouter_key_up"];
/// A merged panel value may exceed the larger single-replica value by this
/// factor (the two demos spend slightly different random amounts); a doubled
/// one is twice it.
const REPLICA_TOLERANCE: f64 = 1.5;

// --------------------------------------------------------- child processes

/// Kills every child on drop, also when the test panics.
struct Children {
    procs: Vec<(String, Child, PathBuf)>,
}

impl Children {
    fn spawn(&mut self, name: &str, cmd: &mut Command, log: PathBuf) {
        let out = fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        self.procs.push((name.to_string(), child, log));
    }

    /// Panics if a child has exited (with the tail of its log).
    fn assert_running(&mut self) {
        for (name, child, log) in &mut self.procs {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited early ({status}); its output:\n{}", tail(log));
            }
        }
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|(name, _, log)| format!("----- {name} -----\n{}", tail(log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---------------------------------------------------------------- webhook

/// A webhook receiver on 127.0.0.1: records (path, JSON body) of every POST.
type Received = Arc<Mutex<Vec<(String, Json)>>>;

fn start_webhook() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let store = Arc::clone(&received);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                let _ = serve_one(stream, &store);
            });
        }
    });
    (port, received)
}

/// One HTTP/1.1 request per connection (answered with Connection: close).
fn serve_one(mut stream: TcpStream, store: &Received) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[header_end..buf.len().min(header_end + length)];
    if let Ok(json) = serde_json::from_slice::<Json>(body) {
        store.lock().unwrap().push((path, json));
    }
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

/// Every alert received so far: (webhook path, alert object).
fn received_alerts(received: &Received) -> Vec<(String, Json)> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(path, body)| {
            body["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |a| (path.clone(), a))
        })
        .collect()
}

fn label<'a>(alert: &'a Json, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or("")
}

// ------------------------------------------------------- shipped artefacts

/// Top-level prometheus/*.yml with a `groups:` key (prometheus.yml and
/// alertmanager.yml are configs, prometheus/tests/ holds promtool tests).
fn rule_files() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(root().join("prometheus"))
        .expect("read prometheus/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    entries.sort();
    for p in entries {
        let v: Yaml = serde_yaml::from_str(&fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", p.display()));
        if v.get("groups").is_some() {
            out.push((p.file_name().unwrap().to_string_lossy().to_string(), v));
        }
    }
    assert!(!out.is_empty(), "no rule files in prometheus/");
    out
}

/// The same rules with every `for:` set to 0s.
fn without_for(mut rules: Yaml) -> (Yaml, usize) {
    let mut changed = 0;
    for group in rules["groups"].as_sequence_mut().expect("groups list") {
        for rule in group["rules"].as_sequence_mut().expect("rules list") {
            if let Some(m) = rule.as_mapping_mut() {
                if m.contains_key("for") {
                    m.insert("for".into(), "0s".into());
                    changed += 1;
                }
            }
        }
    }
    (rules, changed)
}

fn all_rules(files: &[(String, Yaml)]) -> Vec<Yaml> {
    files
        .iter()
        .flat_map(|(_, v)| v["groups"].as_sequence().cloned().unwrap_or_default())
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

/// The shipped Alertmanager config with every webhook URL pointed at
/// `http://127.0.0.1:{port}/{receiver name}` and short group timings.
fn test_alertmanager_config(port: u16) -> Yaml {
    let mut am: Yaml = serde_yaml::from_str(
        &fs::read_to_string(root().join("prometheus/alertmanager.yml")).unwrap(),
    )
    .expect("prometheus/alertmanager.yml is YAML");
    for r in am["receivers"].as_sequence_mut().expect("receivers") {
        let name = r["name"].as_str().expect("receiver name").to_string();
        let url = format!("http://127.0.0.1:{port}/{name}");
        let m = r.as_mapping_mut().unwrap();
        // Only webhooks can reach this test; other integrations are dropped.
        m.retain(|k, _| k == "name" || k == "webhook_configs");
        if !m.contains_key("webhook_configs") {
            m.insert(
                "webhook_configs".into(),
                Yaml::Sequence(vec![Yaml::Mapping(Default::default())]),
            );
        }
        for w in m
            .get_mut("webhook_configs")
            .and_then(|w| w.as_sequence_mut())
            .unwrap()
        {
            w["url"] = url.clone().into();
        }
    }
    fn fast(route: &mut Yaml, top: bool) {
        let Some(m) = route.as_mapping_mut() else {
            return;
        };
        for (key, value) in [
            ("group_wait", "1s"),
            ("group_interval", "1s"),
            ("repeat_interval", "1h"),
        ] {
            if top || m.contains_key(key) {
                m.insert(key.into(), value.into());
            }
        }
        if let Some(children) = m.get_mut("routes").and_then(|r| r.as_sequence_mut()) {
            for c in children {
                fast(c, false);
            }
        }
    }
    fast(&mut am["route"], true);
    am
}

/// The receiver of the route that matches exactly company="<company>", if the
/// shipped config routes that company specifically.
fn company_receiver(am: &Yaml, company: &str) -> Option<String> {
    fn walk(route: &Yaml, company: &str, inherited: &str) -> Option<String> {
        let receiver = route["receiver"].as_str().unwrap_or(inherited);
        let matchers: Vec<String> = route["matchers"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|m| m.as_str())
                    .map(|m| m.replace([' ', '\''], ""))
                    .collect()
            })
            .unwrap_or_default();
        if matchers
            .iter()
            .any(|m| m == &format!("company=\"{company}\"") || m == &format!("company={company}"))
        {
            return Some(receiver.to_string());
        }
        route["routes"]
            .as_sequence()?
            .iter()
            .find_map(|c| walk(c, company, receiver))
    }
    walk(&am["route"], company, "")
}

/// Every dashboard: (file name, JSON).
fn dashboards() -> Vec<(String, Json)> {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("grafana/dashboards"))
        .expect("read grafana/dashboards/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in grafana/dashboards/");
    files
        .into_iter()
        .map(|p| {
            let json: Json = serde_json::from_str(&fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().to_string(), json)
        })
        .collect()
}

/// (panel title, expr, legendFormat) of every target.
fn panel_targets(dashboard: &Json) -> Vec<(String, String, String)> {
    fn walk(panels: &Json, out: &mut Vec<(String, String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    let legend = t["legendFormat"].as_str().unwrap_or("").to_string();
                    out.push((title.clone(), expr.to_string(), legend));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A time-series panel target, which Grafana runs as a range query.
struct RangeTarget {
    title: String,
    expr: String,
    /// The panel's minimum interval (`interval`, e.g. "1d"), if any.
    interval: Option<String>,
    /// The panel's relative time override (`timeFrom`, e.g. "30d"), if any.
    time_from: Option<String>,
}

/// Every target of a time-series panel that is not an instant query.
fn range_targets(dashboard: &Json) -> Vec<RangeTarget> {
    fn walk(panels: &Json, out: &mut Vec<RangeTarget>) {
        for p in panels.as_array().into_iter().flatten() {
            if p["type"] == "timeseries" {
                for t in p["targets"].as_array().into_iter().flatten() {
                    if let (Some(expr), false) = (t["expr"].as_str(), t["instant"] == true) {
                        out.push(RangeTarget {
                            title: p["title"].as_str().unwrap_or("?").to_string(),
                            expr: expr.to_string(),
                            interval: p["interval"].as_str().map(str::to_string),
                            time_from: p["timeFrom"].as_str().map(str::to_string),
                        });
                    }
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Seconds of a Grafana/Prometheus duration such as "30d", "1h" or "15s".
fn duration_seconds(d: &str) -> f64 {
    let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let n: f64 = d[..split]
        .parse()
        .unwrap_or_else(|_| panic!("bad duration {d:?}"));
    n * match &d[split..] {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        other => panic!("bad duration unit {other:?} in {d:?}"),
    }
}

/// The range query Grafana's Prometheus data source sends for a panel at
/// `now` (Unix seconds; dashboard timezone UTC): the panel's `timeFrom` (or
/// the last 15 minutes), a step of the panel's minimum `interval` (or 15 s),
/// and start and end floored to a multiple of the step.
fn grafana_range(target: &RangeTarget, now: f64) -> (f64, f64, f64) {
    let step = target.interval.as_deref().map_or(15.0, duration_seconds);
    let span = target.time_from.as_deref().map_or(900.0, duration_seconds);
    let floor = |t: f64| (t / step).floor() * step;
    (floor(now - span), floor(now), step)
}

fn variable_query(var: &Json) -> Option<String> {
    match &var["query"] {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("query").and_then(|q| q.as_str()).map(str::to_string),
        _ => None,
    }
}

/// `label_values(<expr>, <label>)` -> (expr, label).
fn parse_label_values(q: &str) -> Option<(String, String)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (expr, label) = inner.rsplit_once(',')?;
    Some((expr.trim().to_string(), label.trim().to_string()))
}

/// Replaces `$name`, `${name}` and `${name:format}` using `vars`; panics on
/// an unknown variable so a typo in a dashboard cannot go unnoticed.
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {expr}"));
            let name = braced[..end].split(':').next().unwrap();
            (name.to_string(), end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (after[..end].to_string(), end)
        };
        let value = vars
            .get(&name)
            .unwrap_or_else(|| panic!("unknown dashboard variable ${name} in {expr}"));
        out.push_str(value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// The value of the sample `name{labels}` in an exposition, where `labels` is
/// exactly the text between the braces (empty: a sample without labels).
fn exposition_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let head = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The value of the first sample of an instant query's result.
fn first_value(result: &[Json]) -> Option<f64> {
    result
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
}

/// Metric names (no `:`) starting with `openrouter_` in a PromQL / template text.
fn openrouter_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("openrouter_") && !t.contains(':'))
        .map(str::to_string)
        .collect()
}

/// A query result as label set (without `__name__`) -> value; non-finite
/// values are left out.
fn by_labels(result: &[Json]) -> BTreeMap<String, f64> {
    result
        .iter()
        .filter_map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.as_str() != "__name__")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let value: f64 = s["value"][1].as_str()?.parse().ok()?;
            value.is_finite().then_some((labels, value))
        })
        .collect()
}

/// Problems of one dashboard query with two exporter replicas: `both` is its
/// result, `single` its results restricted to each replica's `instance`.
fn replica_problems(legend: &str, both: &[Json], single: &[BTreeMap<String, f64>]) -> Vec<String> {
    let mut problems = Vec::new();
    let per_replica = both.iter().any(|s| s["metric"].get("instance").is_some());
    if per_replica && !legend.contains("{{instance}}") {
        problems.push(format!(
            "returns one series per replica without naming its instance in the legend ({legend:?}): \
             merge them with max without (instance, pod) (...)"
        ));
    }
    for (labels, value) in by_labels(both) {
        let singles: Vec<f64> = single
            .iter()
            .filter_map(|m| m.get(&labels).copied())
            .collect();
        let Some(largest) = singles.iter().map(|v| v.abs()).reduce(f64::max) else {
            continue;
        };
        if value.abs() > largest * REPLICA_TOLERANCE + 1e-6 {
            problems.push(format!(
                "{{{labels}}} is {value} with two replicas but at most {largest} with one: \
                 the replicas are added up, merge them with max without (instance, pod) (...) first"
            ));
        }
    }
    problems
}

// ------------------------------------------------------------- HTTP helpers

async fn get_text(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// Instant query; Err(message) when Prometheus rejects it.
async fn query(client: &reqwest::Client, prom: &str, q: &str) -> Result<Vec<Json>, String> {
    query_at(client, prom, q, None).await
}

/// Instant query at `time` (Unix seconds; now when None).
async fn query_at(
    client: &reqwest::Client,
    prom: &str,
    q: &str,
    time: Option<f64>,
) -> Result<Vec<Json>, String> {
    let mut params = vec![("query", q.to_string())];
    if let Some(t) = time {
        params.push(("time", format!("{t:.3}")));
    }
    let resp = client
        .get(format!("{prom}/api/v1/query"))
        .query(&params)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let json: Json = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    if json["status"] != "success" {
        return Err(format!("{} {}", json["errorType"], json["error"]));
    }
    match &json["data"]["result"] {
        Json::Array(a) => Ok(a.clone()),
        // scalar / string results: one value
        other if !other.is_null() => Ok(vec![other.clone()]),
        _ => Ok(Vec::new()),
    }
}

/// Range query; the matrix result, or Err(message) when Prometheus rejects it.
async fn query_range(
    client: &reqwest::Client,
    prom: &str,
    q: &str,
    (start, end, step): (f64, f64, f64),
) -> Result<Vec<Json>, String> {
    let params = [
        ("query", q.to_string()),
        ("start", format!("{start:.3}")),
        ("end", format!("{end:.3}")),
        ("step", format!("{step}")),
    ];
    let resp = client
        .get(format!("{prom}/api/v1/query_range"))
        .query(&params)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let json: Json = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    if json["status"] != "success" {
        return Err(format!("{} {}", json["errorType"], json["error"]));
    }
    Ok(json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The timestamps of every point of a range query's result.
fn point_times(result: &[Json]) -> Vec<f64> {
    result
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p[0].as_f64())
        .collect()
}

/// Polls `check` every 250 ms until it returns Some, or panics after `limit`.
async fn wait_for<T, F, Fut>(
    what: &str,
    limit: Duration,
    children: &mut Children,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        children.assert_running();
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                children.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// -------------------------------------------------------------------- test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_alertmanager_and_dashboards_query_real_data() {
    let Some(prometheus) = require_tool(&["prometheus"], "apt-get install -y prometheus") else {
        return;
    };
    let Some(alertmanager) = require_tool(
        &["prometheus-alertmanager", "alertmanager"],
        "apt-get install -y prometheus-alertmanager",
    ) else {
        return;
    };
    let test_start = Instant::now();
    // Declared before `children` so the processes die before their files go.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let mut children = Children { procs: Vec::new() };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // --- the exporter, demo mode
    let exporter_port = free_port();
    let exporter = format!("http://127.0.0.1:{exporter_port}");
    children.spawn(
        "exporter",
        Command::new(BIN).args([
            "demo",
            "--web.listen-address",
            &format!("127.0.0.1:{exporter_port}"),
        ]),
        dir.join("exporter.log"),
    );
    let metrics = wait_for(
        "the demo exporter's first refresh",
        Duration::from_secs(20),
        &mut children,
        || {
            let client = client.clone();
            let url = format!("{exporter}/metrics");
            async move {
                match get_text(&client, &url).await {
                    Ok((200, text)) if text.lines().any(|l| l.trim() == "openrouter_up 1") => {
                        Some(text)
                    }
                    _ => None,
                }
            }
        },
    )
    .await;
    // A second demo exporter: a replica behind the same scrape job.
    let replica_port = free_port();
    children.spawn(
        "exporter replica",
        Command::new(BIN).args([
            "demo",
            "--web.listen-address",
            &format!("127.0.0.1:{replica_port}"),
        ]),
        dir.join("replica.log"),
    );
    wait_for(
        "the replica's first refresh",
        Duration::from_secs(20),
        &mut children,
        || {
            let client = client.clone();
            let url = format!("http://127.0.0.1:{replica_port}/metrics");
            async move {
                match get_text(&client, &url).await {
                    Ok((200, text)) if text.lines().any(|l| l.trim() == "openrouter_up 1") => {
                        Some(())
                    }
                    _ => None,
                }
            }
        },
    )
    .await;
    let replicas = [
        format!("127.0.0.1:{exporter_port}"),
        format!("127.0.0.1:{replica_port}"),
    ];
    let families = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    let mut exported = families(&metrics);
    assert!(
        exported.contains("openrouter_company_budget_usd") && exported.contains("openrouter_up"),
        "the demo's /metrics lacks the budget metrics this test relies on:\n{metrics}"
    );

    // --- shipped rules (for: 0s) and the names they and the dashboards use
    let shipped_rules = rule_files();
    let rules_dir = dir.join("rules");
    fs::create_dir(&rules_dir).unwrap();
    let mut for_rewritten = 0;
    for (name, v) in &shipped_rules {
        let (copy, n) = without_for(v.clone());
        for_rewritten += n;
        fs::write(rules_dir.join(name), serde_yaml::to_string(&copy).unwrap()).unwrap();
    }
    assert!(
        for_rewritten > 0,
        "no rule has a `for:`; the copy should have shortened some"
    );
    let rules = all_rules(&shipped_rules);
    let alert_names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert!(
        alert_names.contains(BUDGET_EXCEEDED),
        "the shipped rules have no {BUDGET_EXCEEDED} alert"
    );

    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rules {
        let what = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
        let mut text = r["expr"].as_str().unwrap_or("").to_string();
        if let Some(ann) = r["annotations"].as_mapping() {
            for v in ann.values().filter_map(|v| v.as_str()) {
                text.push('\n');
                text.push_str(v);
            }
        }
        for n in openrouter_names(&text) {
            used.entry(n).or_default().insert(format!("rule {what}"));
        }
    }
    let dashboards = dashboards();
    for (file, d) in &dashboards {
        for (title, expr, _) in panel_targets(d) {
            for n in openrouter_names(&expr) {
                used.entry(n)
                    .or_default()
                    .insert(format!("{file}: {title}"));
            }
        }
        for var in d["templating"]["list"].as_array().into_iter().flatten() {
            for n in openrouter_names(&variable_query(var).unwrap_or_default()) {
                used.entry(n)
                    .or_default()
                    .insert(format!("{file}: variable {}", var["name"]));
            }
        }
    }
    assert!(
        used.contains_key("openrouter_company_usage_usd")
            && used.contains_key("openrouter_company_budget_usd"),
        "found no use of the budget metrics in rules and dashboards: {used:?}"
    );
    for n in NOT_IN_DEMO {
        assert!(
            exposition::families().any(|f| f.name == n),
            "{n} is allowed without the demo exporting it, but the exporter's family table has no such family"
        );
    }
    // (unknown names are asserted at the end, after the alert and dashboard
    // checks, when the demo's activity run has added its families too)

    // --- webhook + Alertmanager with the shipped routing
    let (hook_port, received) = start_webhook();
    let am_config = test_alertmanager_config(hook_port);
    let expected_receiver = company_receiver(&am_config, OVER);
    fs::write(
        dir.join("alertmanager.yml"),
        serde_yaml::to_string(&am_config).unwrap(),
    )
    .unwrap();
    let am_port = free_port();
    fs::create_dir(dir.join("am-data")).unwrap();
    children.spawn(
        "alertmanager",
        Command::new(&alertmanager)
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address="),
        dir.join("alertmanager.log"),
    );

    // --- Prometheus: the shipped scrape job, pointed at the demo
    let shipped_prom: Yaml = serde_yaml::from_str(
        &fs::read_to_string(root().join("prometheus/prometheus.yml")).unwrap(),
    )
    .expect("prometheus/prometheus.yml is YAML");
    let job = shipped_prom["scrape_configs"][0]["job_name"]
        .as_str()
        .expect("prometheus/prometheus.yml has a scrape job")
        .to_string();
    let prom_config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}/*.yml\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
         scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{a}', '{b}']\n",
        rules = rules_dir.display(),
        a = replicas[0],
        b = replicas[1],
    );
    fs::write(dir.join("prometheus.yml"), prom_config).unwrap();
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    fs::create_dir(dir.join("prom-data")).unwrap();
    children.spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--rules.alert.resend-delay=1s"),
        dir.join("prometheus.log"),
    );
    wait_for(
        "Prometheus and Alertmanager to be ready",
        Duration::from_secs(30),
        &mut children,
        || {
            let client = client.clone();
            let urls = [
                format!("{prom}/-/ready"),
                format!("http://127.0.0.1:{am_port}/-/ready"),
            ];
            async move {
                for u in urls {
                    if !matches!(get_text(&client, &u).await, Ok((200, _))) {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;

    // --- acme's over-budget alert arrives with its company label
    let (path, alert) = wait_for(
        &format!("{BUDGET_EXCEEDED} for company={OVER} at the webhook"),
        Duration::from_secs(45),
        &mut children,
        || {
            let found = received_alerts(&received).into_iter().find(|(_, a)| {
                label(a, "alertname") == BUDGET_EXCEEDED
                    && label(a, "company") == OVER
                    && label(a, "window") == "monthly"
                    && a["status"] == "firing"
            });
            async move { found }
        },
    )
    .await;
    // A budget overrun is a commercial decision, not a page.
    assert_eq!(label(&alert, "severity"), "warning");
    assert_eq!(label(&alert, "job"), job);
    let description = alert["annotations"]["description"].as_str().unwrap_or("");
    assert!(
        description.starts_with(&format!("{OVER} has spent $"))
            && description.contains("monthly budget"),
        "unexpected description: {description:?}"
    );
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("#{}", BUDGET_EXCEEDED.to_lowercase()))),
        "runbook_url should point at the README anchor of the alert: {alert}"
    );
    assert!(
        alert["annotations"]["dashboard_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("/d/openrouter-company/")
                && u.contains(&format!("var-company={OVER}"))),
        "dashboard_url should open the company drill-down for {OVER}: {alert}"
    );
    let receiver = expected_receiver.clone().unwrap_or_else(|| {
        panic!("prometheus/alertmanager.yml has no route for company=\"{OVER}\"")
    });
    {
        wait_for(
            &format!("{BUDGET_EXCEEDED} for {OVER} at receiver {receiver} (the company's route)"),
            Duration::from_secs(10),
            &mut children,
            || {
                let hit = received_alerts(&received).into_iter().any(|(p, a)| {
                    p == format!("/{receiver}")
                        && label(&a, "alertname") == BUDGET_EXCEEDED
                        && label(&a, "company") == OVER
                });
                async move { hit.then_some(()) }
            },
        )
        .await;
    }
    // Once, not once per replica: two exporters are scraped, yet every
    // notification carrying acme's overrun holds exactly one such alert, and
    // it has no `instance` (the rules merge the replicas).
    let mut notifications = 0;
    for (p, body) in received.lock().unwrap().iter() {
        let copies: Vec<&Json> = body["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| {
                label(a, "alertname") == BUDGET_EXCEEDED
                    && label(a, "company") == OVER
                    && label(a, "window") == "monthly"
            })
            .collect();
        if copies.is_empty() {
            continue;
        }
        notifications += 1;
        assert_eq!(
            copies.len(),
            1,
            "a notification to {p} carries {BUDGET_EXCEEDED} for {OVER} {} times (once per replica?): {copies:?}",
            copies.len()
        );
        assert!(
            copies[0]["labels"].get("instance").is_none(),
            "{BUDGET_EXCEEDED} for {OVER} carries an instance label, so replicas raise one alert each: {}",
            copies[0]
        );
    }
    assert!(
        notifications >= 1,
        "no notification for {OVER} was recorded"
    );

    // --- the company far under its budgets so far: no budget alert, for a
    // while after acme's came (its burn rate is checked below, against the
    // pace the exporter shows)
    tokio::time::sleep(Duration::from_secs(5)).await;
    children.assert_running();
    let firing_for_under = query(&client, &prom, &format!("ALERTS{{company=\"{UNDER}\"}}"))
        .await
        .expect("ALERTS query");
    let budget_for_under: Vec<String> = received_alerts(&received)
        .into_iter()
        .filter(|(_, a)| {
            label(a, "company") == UNDER && BUDGET_ALERTS.contains(&label(a, "alertname"))
        })
        .map(|(p, a)| format!("{p}: {}", a["labels"]))
        .collect();
    assert!(
        budget_for_under.is_empty(),
        "budget alerts arrived for {UNDER}, which is far under its budgets:\n{}",
        budget_for_under.join("\n")
    );
    assert!(
        firing_for_under
            .iter()
            .all(|s| !BUDGET_ALERTS.contains(&s["metric"]["alertname"].as_str().unwrap_or(""))),
        "Prometheus has budget alerts pending/firing for {UNDER}: {firing_for_under:?}"
    );
    // The same rule does evaluate for globex: its budget ratio exists and is low.
    let ratio = query(
        &client,
        &prom,
        &format!("company:openrouter_company_usage_usd:budget_ratio{{company=\"{UNDER}\",window=\"monthly\"}}"),
    )
    .await
    .expect("budget ratio query");
    let value: f64 = ratio
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no monthly budget ratio for {UNDER}: {ratio:?}"));
    assert!(
        value < 0.5,
        "{UNDER}'s monthly budget ratio is {value}, not far under"
    );

    // --- every rule evaluates without error
    let (_, rules_json) = get_text(&client, &format!("{prom}/api/v1/rules"))
        .await
        .expect("rules API");
    let rules_json: Json = serde_json::from_str(&rules_json).unwrap();
    let mut loaded = 0;
    let mut broken = Vec::new();
    for g in rules_json["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for r in g["rules"].as_array().into_iter().flatten() {
            loaded += 1;
            if r["health"] == "err" {
                broken.push(format!("{}: {}", r["name"], r["lastError"]));
            }
        }
    }
    assert_eq!(
        loaded,
        rules.len(),
        "Prometheus loaded {loaded} rules, the files have {}",
        rules.len()
    );
    assert!(
        broken.is_empty(),
        "rules failing to evaluate:\n{}",
        broken.join("\n")
    );

    // --- every dashboard query is valid, and (nearly) all return data
    let mut checked = 0;
    let mut panel_queries = 0;
    let mut failures = Vec::new();
    let mut no_data = Vec::new();
    // (file, title, expr, legend, variables) of every query that returned data
    let mut with_data = Vec::new();
    // (file, target, variables) of every time-series target
    let mut ranged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (file, d) in &dashboards {
        let mut vars: BTreeMap<String, String> = [
            ("__rate_interval", "1m"),
            ("__interval", "15s"),
            ("__range", "1h"),
            ("__range_s", "3600"),
            ("datasource", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // Variables in order: later ones may use earlier ones.
        for var in d["templating"]["list"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().expect("variable name").to_string();
            match var["type"].as_str() {
                Some("datasource") => {
                    assert_eq!(
                        var["query"], "prometheus",
                        "{file}: datasource variable {name} is not Prometheus"
                    );
                }
                Some("constant") | Some("textbox") | Some("custom") => {
                    let v = variable_query(var).unwrap_or_default();
                    vars.insert(name, v);
                }
                Some("query") => {
                    let q = variable_query(var)
                        .unwrap_or_else(|| panic!("{file}: variable {name} has no query"));
                    let (expr, lbl) = parse_label_values(&q).unwrap_or_else(|| {
                        panic!(
                            "{file}: variable {name}: expected label_values(expr, label), got {q}"
                        )
                    });
                    let expr = substitute(&expr, &vars);
                    let series = query(&client, &prom, &expr)
                        .await
                        .unwrap_or_else(|e| panic!("{file}: variable {name}: {expr}: {e}"));
                    let values: BTreeSet<String> = series
                        .iter()
                        .filter_map(|s| s["metric"][&lbl].as_str())
                        .map(str::to_string)
                        .collect();
                    assert!(
                        !values.is_empty(),
                        "{file}: variable {name} ({expr}) has no {lbl} values"
                    );
                    checked += 1;
                    let chosen = if name == "company" {
                        assert!(
                            values.contains(OVER),
                            "{file}: $company offers {values:?}, not {OVER}"
                        );
                        OVER.to_string()
                    } else if var["includeAll"] == true {
                        var["allValue"].as_str().unwrap_or(".*").to_string()
                    } else {
                        values.iter().next().unwrap().clone()
                    };
                    vars.insert(name, chosen);
                }
                other => panic!("{file}: variable {name} has unexpected type {other:?}"),
            }
        }
        assert!(d["templating"]["list"].as_array().is_some_and(|l| l
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource")));
        for t in range_targets(d) {
            ranged.push((file.clone(), t, vars.clone()));
        }
        for (title, expr, legend) in panel_targets(d) {
            let q = substitute(&expr, &vars);
            checked += 1;
            panel_queries += 1;
            // Recording rules and rate()s need a few evaluations / samples.
            loop {
                match query(&client, &prom, &q).await {
                    Ok(result) if !result.is_empty() => {
                        with_data.push((
                            file.clone(),
                            title.clone(),
                            expr.clone(),
                            legend.clone(),
                            vars.clone(),
                        ));
                        break;
                    }
                    Ok(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Ok(_) => {
                        no_data.push(format!("{file}: \"{title}\": no data: {q}"));
                        break;
                    }
                    Err(e) => {
                        failures.push(format!("{file}: \"{title}\": invalid: {q}: {e}"));
                        break;
                    }
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} dashboard queries found");
    assert!(
        failures.is_empty(),
        "dashboard queries Prometheus rejects:\n{}",
        failures.join("\n")
    );
    let share = with_data.len() as f64 / panel_queries as f64;
    assert!(
        share >= MIN_WITH_DATA,
        "only {}/{panel_queries} dashboard queries ({:.1}%) return data against the demo with the shipped defaults \
         (at least {:.0}% must):\n{}",
        with_data.len(),
        share * 100.0,
        MIN_WITH_DATA * 100.0,
        no_data.join("\n")
    );
    if !no_data.is_empty() {
        eprintln!(
            "dashboard queries without data (allowed):\n{}",
            no_data.join("\n")
        );
    }

    // --- time-series panels the way Grafana runs them: a range query over
    // the panel's range with its step, start and end floored to the step.
    // The UTC-day bars (step 1d) end at today's midnight, whose bar would
    // hold the whole hours of today so far: it must be left out, while the
    // gate that does so keeps the completed days.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut range_failures = Vec::new();
    let mut day_bars = 0;
    for (file, t, vars) in &ranged {
        let q = substitute(&t.expr, vars);
        let range = grafana_range(t, now);
        let result = match query_range(&client, &prom, &q, range).await {
            Ok(result) => result,
            Err(e) => {
                range_failures.push(format!(
                    "{file}: \"{}\": invalid as a range query: {q}: {e}",
                    t.title
                ));
                continue;
            }
        };
        if t.interval.as_deref() != Some("1d") {
            continue;
        }
        day_bars += 1;
        let (start, end, step) = range;
        assert!(
            step == 86400.0 && end % 86400.0 == 0.0 && end <= now && now - end < 86400.0,
            "{file}: \"{}\": Grafana's range should end at today's UTC midnight: {range:?}",
            t.title
        );
        let times = point_times(&result);
        assert!(
            times.iter().all(|&p| p >= start && p < end && p % 86400.0 == 0.0),
            "{file}: \"{}\" has a point that is not a completed UTC day (today is {end}): {q}\n{result:?}",
            t.title
        );
        let (_, gate) = t.expr.split_once(" and on () ").unwrap_or_else(|| {
            panic!(
                "{file}: \"{}\" should leave today out with `... and on () <present only for completed days>`: {}",
                t.title, t.expr
            )
        });
        let gate_q = substitute(gate, vars);
        let gate_times = point_times(
            &query_range(&client, &prom, &gate_q, range)
                .await
                .unwrap_or_else(|e| panic!("{file}: {gate_q}: {e}")),
        );
        assert!(
            gate_times.contains(&(end - 86400.0)) && !gate_times.contains(&end),
            "{file}: \"{}\": its gate {gate_q} should keep yesterday ({}) and drop today ({end}): {gate_times:?}",
            t.title,
            end - 86400.0
        );
    }
    assert!(
        range_failures.is_empty(),
        "time-series panel queries Prometheus rejects as range queries:\n{}",
        range_failures.join("\n")
    );
    assert!(
        ranged.len() >= 5 && day_bars >= 1,
        "expected time-series panels, the UTC-day bars (interval 1d) among them: {} targets, {day_bars} day bars",
        ranged.len()
    );

    // --- partial history: Prometheus has seen the exporter for well under an
    // hour. The paces must be those of the time it has seen: the exporter's
    // own figures give them, (value now - value at the test's start) /
    // (refresh time now - refresh time then). Spread over a nominal day, as
    // the rules used to, the pace reads about 1/1000 of that and a runway of
    // hours reads years.
    let (_, later_metrics) = get_text(&client, &format!("{exporter}/metrics"))
        .await
        .expect("the demo's /metrics");
    let at_both = |name: &str, labels: &str| {
        let then = exposition_value(&metrics, name, labels);
        let now = exposition_value(&later_metrics, name, labels);
        match (then, now) {
            (Some(a), Some(b)) => (a, b),
            _ => panic!("the demo's /metrics lacks {name}{{{labels}}}"),
        }
    };
    let (ts0, ts1) = at_both("openrouter_last_refresh_success_timestamp_seconds", "");
    let span = ts1 - ts0;
    assert!(span >= 10.0, "the exporter's data spans only {span} s");
    let (usage0, usage1) = at_both("openrouter_account_usage_usd", "");
    let (_, credits) = at_both("openrouter_account_credits_usd", "");
    let account_pace = (usage1 - usage0) / span;
    assert!(account_pace > 0.0, "the demo account spends nothing");
    let observed_runway = (credits - usage1) / (account_pace * 86400.0);
    let runway = first_value(
        &query(
            &client,
            &prom,
            &format!(
                "account:openrouter_account_credits_usd:runway_days{{instance=\"{}\"}}",
                replicas[0]
            ),
        )
        .await
        .expect("runway query"),
    )
    .expect("no account:openrouter_account_credits_usd:runway_days for the demo");
    assert!(
        runway / observed_runway > 1.0 / 3.0 && runway / observed_runway < 3.0,
        "the runway is {runway} days, but at the pace the exporter shows ({account_pace} $/s) the credits \
         last {observed_runway} days: the pace is not that of the time Prometheus has seen"
    );
    let threshold = |name: &str| {
        let client = client.clone();
        let q = format!("max(openrouter:threshold:{name})");
        let prom = prom.clone();
        async move {
            first_value(&query(&client, &prom, &q).await.expect("threshold query"))
                .unwrap_or_else(|| panic!("no {q}"))
        }
    };
    let runway_min = threshold("account_runway_min_days").await;
    let credits_low_for_demo = |received: &Received| {
        received_alerts(received).into_iter().any(|(_, a)| {
            label(&a, "alertname") == CREDITS_LOW && label(&a, "instance") == replicas[0]
        })
    };
    if observed_runway < runway_min / 2.0 {
        wait_for(
            &format!(
                "{CREDITS_LOW} for {} (its credits last {observed_runway:.2} days at its pace)",
                replicas[0]
            ),
            Duration::from_secs(30),
            &mut children,
            || {
                let hit = credits_low_for_demo(&received);
                async move { hit.then_some(()) }
            },
        )
        .await;
    } else if observed_runway > runway_min * 2.0 {
        assert!(
            !credits_low_for_demo(&received),
            "{CREDITS_LOW} arrived although the credits last {observed_runway} days"
        );
    }
    // UNDER's burn rate per window: the forecast at the pace the exporter
    // shows decides whether the alert must arrive (over 3 times the budget)
    // or must not (under half of it); in between the demo's random spend
    // could go either way.
    let (life0, life1) = at_both(
        "openrouter_company_usage_usd",
        &format!("company=\"{UNDER}\",window=\"lifetime\""),
    );
    let company_pace = (life1 - life0) / span;
    let forecast_ratio = threshold("forecast_budget_ratio").await;
    let mut burn_checked = 0;
    for window in ["daily", "weekly", "monthly"] {
        let labels = format!("company=\"{UNDER}\",window=\"{window}\"");
        let Some(budget) =
            exposition_value(&later_metrics, "openrouter_company_budget_usd", &labels)
                .filter(|b| *b > 0.0)
        else {
            continue;
        };
        let (_, current) = at_both("openrouter_company_usage_usd", &labels);
        let (_, end) = at_both(
            "openrouter_window_end_timestamp_seconds",
            &format!("window=\"{window}\""),
        );
        let expected = current + company_pace * (end - ts1);
        let limit = budget * forecast_ratio;
        let burn_for = |received: &Received| {
            received_alerts(received).into_iter().any(|(_, a)| {
                label(&a, "alertname") == BURN_RATE
                    && label(&a, "company") == UNDER
                    && label(&a, "window") == window
            })
        };
        if expected > 3.0 * limit {
            burn_checked += 1;
            wait_for(
                &format!("{BURN_RATE} for {UNDER}/{window}: ${expected:.2} at its pace, budget ${budget:.2}"),
                Duration::from_secs(30),
                &mut children,
                || {
                    let hit = burn_for(&received);
                    async move { hit.then_some(()) }
                },
            )
            .await;
        } else if expected < 0.5 * limit {
            burn_checked += 1;
            assert!(
                !burn_for(&received),
                "{BURN_RATE} arrived for {UNDER}/{window}, whose forecast at the pace the exporter shows \
                 is ${expected:.2} against a budget of ${budget:.2}"
            );
        }
    }
    eprintln!(
        "e2e: runway {runway:.3} days (observed {observed_runway:.3}); {UNDER}: {burn_checked} burn-rate windows checked"
    );

    // --- two replicas: each query, at one instant, with both replicas and
    // restricted to each one. Counters are summed on purpose (every replica
    // makes its own calls) and alerts are listed per replica.
    let up = query(&client, &prom, &format!("up{{job=\"{job}\"}} == 1"))
        .await
        .expect("up query");
    assert_eq!(
        up.len(),
        2,
        "Prometheus should scrape both replicas: {up:?}"
    );
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 1.0;
    let mut replica_checked = 0;
    let mut replica_failures = Vec::new();
    for (file, title, expr, legend, vars) in &with_data {
        if expr.contains("ALERTS") || expr.contains("_total") {
            continue;
        }
        let both = query_at(&client, &prom, &substitute(expr, vars), Some(at))
            .await
            .unwrap_or_else(|e| panic!("{file}: {title:?}: {e}"));
        let mut single = Vec::new();
        for instance in &replicas {
            let restricted = expr.replace(
                "job=~\"$job\"",
                &format!("job=~\"$job\", instance=\"{instance}\""),
            );
            let result = query_at(&client, &prom, &substitute(&restricted, vars), Some(at))
                .await
                .unwrap_or_else(|e| panic!("{file}: {title:?}: {restricted}: {e}"));
            single.push(by_labels(&result));
        }
        replica_checked += 1;
        for problem in replica_problems(legend, &both, &single) {
            replica_failures.push(format!("{file}: \"{title}\": {problem}\n    {expr}"));
        }
    }
    assert!(
        replica_checked >= 20,
        "only {replica_checked} dashboard queries checked with two replicas"
    );
    assert!(
        replica_failures.is_empty(),
        "dashboard queries that double or repeat figures with two exporter replicas:\n{}",
        replica_failures.join("\n")
    );
    // Last, so that a missing family does not hide the results above. The
    // activity families appear after the demo's first activity run, which
    // follows its first refresh: read /metrics again.
    let (_, later) = get_text(&client, &format!("{exporter}/metrics"))
        .await
        .expect("the demo's /metrics");
    exported.extend(families(&later));
    let unknown: Vec<String> = used
        .iter()
        .filter(|(n, _)| !exported.contains(*n) && !NOT_IN_DEMO.contains(&n.as_str()))
        .map(|(n, wh)| {
            format!(
                "{n} (used by {})",
                wh.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "names used by dashboards/rules that the exporter does not export (no `# TYPE` line in the demo's /metrics):\n  {}\nexported: {exported:?}",
        unknown.join("\n  ")
    );

    // --- operator mistake: only openrouter.rules.yml loaded, no thresholds
    // file. A second Prometheus (external label prometheus="no-thresholds",
    // which Alertmanager sees on its alerts) scrapes the same exporters: the
    // missing-thresholds alert must arrive, and acme's overrun must still
    // arrive (with the defaults written in the rules) instead of silence.
    let firing_here = query(
        &client,
        &prom,
        &format!("ALERTS{{alertname=\"{THRESHOLDS_MISSING}\", alertstate=\"firing\"}}"),
    )
    .await
    .expect("ALERTS query");
    assert!(
        firing_here.is_empty(),
        "{THRESHOLDS_MISSING} fires although the thresholds file is loaded: {firing_here:?}"
    );
    let rules_only = dir.join("rules-only");
    fs::create_dir(&rules_only).unwrap();
    let (rules_file, rules_yaml) = shipped_rules
        .iter()
        .find(|(n, _)| n == "openrouter.rules.yml")
        .expect("prometheus/openrouter.rules.yml");
    fs::write(
        rules_only.join(rules_file),
        serde_yaml::to_string(&without_for(rules_yaml.clone()).0).unwrap(),
    )
    .unwrap();
    fs::write(
        dir.join("prometheus-rules-only.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  external_labels:\n    prometheus: no-thresholds\n\
             rule_files:\n  - {rules}/*.yml\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{a}', '{b}']\n",
            rules = rules_only.display(),
            a = replicas[0],
            b = replicas[1],
        ),
    )
    .unwrap();
    let prom2_port = free_port();
    fs::create_dir(dir.join("prom2-data")).unwrap();
    children.spawn(
        "prometheus without thresholds",
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus-rules-only.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom2-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom2_port}"))
            .arg("--rules.alert.resend-delay=1s"),
        dir.join("prometheus-rules-only.log"),
    );
    let from_rules_only = |a: &Json, name: &str| {
        label(a, "alertname") == name
            && label(a, "prometheus") == "no-thresholds"
            && a["status"] == "firing"
    };
    let missing = wait_for(
        &format!("{THRESHOLDS_MISSING} from the Prometheus without the thresholds file"),
        Duration::from_secs(45),
        &mut children,
        || {
            let found = received_alerts(&received)
                .into_iter()
                .find(|(_, a)| from_rules_only(a, THRESHOLDS_MISSING));
            async move { found }
        },
    )
    .await;
    assert!(
        !label(&missing.1, "threshold").is_empty(),
        "{THRESHOLDS_MISSING} should name the missing threshold: {}",
        missing.1
    );
    wait_for(
        &format!("{BUDGET_EXCEEDED} for {OVER} from the Prometheus without the thresholds file"),
        Duration::from_secs(30),
        &mut children,
        || {
            let found = received_alerts(&received)
                .into_iter()
                .any(|(_, a)| from_rules_only(&a, BUDGET_EXCEEDED) && label(&a, "company") == OVER);
            async move { found.then_some(()) }
        },
    )
    .await;

    eprintln!(
        "e2e: {checked} dashboard queries ({replica_checked} checked with two replicas), {} openrouter_* names, alert via {path}, in {:?}",
        used.len(),
        test_start.elapsed()
    );
}

// ------------------------------------------------ static checks (always run)

const RUNBOOK_BASE: &str =
    "https://github.com/openrouter-cost-exporter/openrouter-cost-exporter/blob/main/docs/alerts.md#";

/// Metrics with a `window` label: every selector on them must pin it.
const WINDOWED: [&str; 8] = [
    "openrouter_key_usage_usd",
    "openrouter_key_byok_usage_usd",
    "openrouter_company_usage_usd",
    "openrouter_company_byok_usage_usd",
    "openrouter_company_budget_usd",
    "openrouter_company_model_usage_usd",
    "openrouter_company_model_requests",
    "openrouter_company_model_tokens",
];

/// Selectors on windowed metrics that do not pin `window`.
fn unpinned_windows(expr: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for m in WINDOWED {
        let mut rest = expr;
        while let Some(i) = rest.find(m) {
            let before_ok = rest[..i].chars().last().map_or(true, |c| {
                !(c.is_ascii_alphanumeric() || c == '_' || c == ':')
            });
            let after = &rest[i + m.len()..];
            let ident_ends = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            if before_ok && ident_ends {
                let pinned = after.strip_prefix('{').is_some_and(|sel| {
                    let sel = &sel[..sel.find('}').unwrap_or(sel.len())];
                    sel.split(',').any(|p| {
                        let p = p.trim();
                        p.starts_with("window=") || p.starts_with("window=~")
                    })
                });
                if !pinned {
                    bad.push(format!("{m}{}", &after[..after.len().min(40)]));
                }
            }
            rest = after;
        }
    }
    bad
}

/// Whether a PromQL expression adds up, counts or ranks series.
fn aggregates(expr: &str) -> bool {
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    [
        "sum(",
        "sumby(",
        "sumwithout(",
        "count(",
        "countby(",
        "countwithout(",
        "avg(",
        "avgby(",
        "avgwithout(",
        "topk(",
        "bottomk(",
    ]
    .iter()
    .any(|a| compact.contains(a))
}

/// Whether it merges the replicas of the exporter (series that differ only in
/// `instance` and `pod`) before it aggregates.
fn merges_replicas(expr: &str) -> bool {
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("maxwithout(instance,pod)(")
}

#[test]
fn shipped_rules_and_dashboards_follow_the_conventions() {
    let docs = fs::read_to_string(root().join("docs/alerts.md")).expect("docs/alerts.md");
    let rules = all_rules(&rule_files());
    let mut alerts = 0;
    for r in &rules {
        let expr = r["expr"].as_str().expect("rule expr");
        let name = r["alert"]
            .as_str()
            .or(r["record"].as_str())
            .expect("alert or record");
        assert!(
            unpinned_windows(expr).is_empty(),
            "{name}: selectors without window=: {:?}",
            unpinned_windows(expr)
        );
        assert!(!expr.contains("job=\""), "{name}: hard-codes a job: {expr}");
        let Some(alert) = r["alert"].as_str() else {
            assert!(
                name.contains(':'),
                "recording rule {name} should be named level:metric:operations"
            );
            // Two exporter replicas publish the same series under different
            // instances: a rule that adds series up must merge them first.
            assert!(
                !aggregates(expr) || merges_replicas(expr),
                "{name} aggregates series without merging replicas first \
                 (max without (instance, pod) (...)): {expr}"
            );
            continue;
        };
        alerts += 1;
        assert!(
            alert.starts_with("OpenRouter") && alert.chars().all(|c| c.is_ascii_alphanumeric()),
            "{alert}: alert names are CamelCase with the OpenRouter prefix"
        );
        let severity = r["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{alert}: severity {severity:?}"
        );
        for a in ["summary", "description", "dashboard_url"] {
            assert!(
                r["annotations"][a]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{alert}: no {a} annotation"
            );
        }
        assert_eq!(
            r["annotations"]["runbook_url"].as_str().unwrap_or(""),
            format!("{RUNBOOK_BASE}{}", alert.to_lowercase()),
            "{alert}: runbook_url must point at the README anchor of its section"
        );
        assert!(
            docs.lines().any(|l| l.trim_end() == format!("### {alert}")),
            "docs/alerts.md has no `### {alert}` section (the runbook_url anchor)"
        );
    }
    assert!(alerts >= 10, "only {alerts} alerts found");

    // Every alert has a promtool unit test where it fires and one where it
    // stays quiet (prometheus/tests/*.yml).
    let mut fires: BTreeMap<String, usize> = BTreeMap::new();
    let mut quiet: BTreeMap<String, usize> = BTreeMap::new();
    let mut test_files: Vec<PathBuf> = fs::read_dir(root().join("prometheus/tests"))
        .expect("prometheus/tests/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    test_files.sort();
    assert!(
        !test_files.is_empty(),
        "no promtool tests in prometheus/tests/"
    );
    let mut promtool_exprs = BTreeSet::new();
    for f in &test_files {
        let t: Yaml = serde_yaml::from_str(&fs::read_to_string(f).unwrap()).unwrap();
        for group in t["tests"].as_sequence().into_iter().flatten() {
            for case in group["promql_expr_test"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                if let Some(expr) = case["expr"].as_str() {
                    promtool_exprs.insert(expr.trim().to_string());
                }
            }
            for case in group["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap_or("").to_string();
                let firing = case["exp_alerts"]
                    .as_sequence()
                    .is_some_and(|a| !a.is_empty());
                *if firing { &mut fires } else { &mut quiet }
                    .entry(name)
                    .or_default() += 1;
            }
        }
    }
    for r in &rules {
        if let Some(alert) = r["alert"].as_str() {
            assert!(
                fires.contains_key(alert),
                "no promtool test where {alert} fires"
            );
            assert!(
                quiet.contains_key(alert),
                "no promtool test where {alert} stays quiet"
            );
        }
    }

    // Dashboard queries that promtool tests evaluate themselves (scrapes off
    // the minute: exact hours and UTC days) are still the dashboards' queries,
    // with $job = .+ and $company = .+ (overview) or acme (drill-down).
    let dashboards = dashboards();
    for (file, title, company) in [
        (
            "openrouter-overview.json",
            "Daily spend per company (UTC days, last 30 days)",
            ".+",
        ),
        ("openrouter-company.json", "Spend per hour by key", "acme"),
    ] {
        let (_, d) = dashboards
            .iter()
            .find(|(f, _)| f == file)
            .unwrap_or_else(|| panic!("no {file}"));
        let (_, expr, _) = panel_targets(d)
            .into_iter()
            .find(|(t, _, _)| t == title)
            .unwrap_or_else(|| panic!("{file} has no panel {title:?}"));
        let vars: BTreeMap<String, String> = [("job", ".+"), ("company", company)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let q = substitute(&expr, &vars);
        assert!(
            promtool_exprs.contains(&q),
            "{file}: {title:?}: its query is not the one prometheus/tests/ checks; update the promtool test:\n{q}"
        );
    }

    let mut uids = BTreeSet::new();
    for (file, d) in dashboards {
        let uid = d["uid"].as_str().unwrap_or("");
        assert!(
            !uid.is_empty() && uids.insert(uid.to_string()),
            "{file}: missing or duplicate uid {uid:?}"
        );
        assert!(
            d["id"].is_null(),
            "{file}: `id` must be null for provisioning/import"
        );
        // A UI import must not replace the datasource variable by a fixed uid.
        assert!(
            d.get("__inputs").is_none(),
            "{file}: `__inputs` makes a UI import hard-code the datasource"
        );
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: no `datasource` variable of type datasource"
        );
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"]["uid"], "${datasource}",
                "{file}: variable {}",
                v["name"]
            );
        }
        fn walk(file: &str, panels: &Json, money_panels: &mut usize) {
            for p in panels.as_array().into_iter().flatten() {
                let title = p["title"].as_str().unwrap_or("?");
                if p["type"] != "row" {
                    assert_eq!(
                        p["datasource"]["uid"], "${datasource}",
                        "{file}: panel {title:?} does not use ${{datasource}}"
                    );
                    let targets = p["targets"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    assert!(
                        !targets.is_empty(),
                        "{file}: panel {title:?} has no queries"
                    );
                    for t in targets {
                        let expr = t["expr"].as_str().unwrap_or("");
                        assert_eq!(t["datasource"]["uid"], "${datasource}", "{file}: {title:?}");
                        assert!(
                            !expr.contains("job=\""),
                            "{file}: {title:?} hard-codes a job: {expr}"
                        );
                        assert!(
                            unpinned_windows(expr).is_empty(),
                            "{file}: {title:?}: selectors without window=: {:?}",
                            unpinned_windows(expr)
                        );
                        // Counters are summed over replicas on purpose: each
                        // replica makes its own calls.
                        assert!(
                            !aggregates(expr) || expr.contains("_total") || merges_replicas(expr),
                            "{file}: {title:?} aggregates exporter series without merging \
                             replicas first (max without (instance, pod) (...)): {expr}"
                        );
                    }
                    // Stats show the value now: an instant query, so ghost
                    // replicas and old versions in the time range cannot show.
                    if p["type"] == "stat" {
                        assert!(
                            targets.iter().all(|t| t["instant"] == true),
                            "{file}: stat {title:?} must use instant queries"
                        );
                    }
                    assert!(
                        p["fieldConfig"]["defaults"]["noValue"]
                            .as_str()
                            .is_some_and(|s| !s.is_empty()),
                        "{file}: panel {title:?} has no noValue text"
                    );
                    if p["fieldConfig"]["defaults"]["unit"] == "currencyUSD" {
                        *money_panels += 1;
                    }
                }
                walk(file, &p["panels"], money_panels);
            }
        }
        let mut money_panels = 0;
        walk(&file, &d["panels"], &mut money_panels);
        assert!(
            money_panels >= 5,
            "{file}: only {money_panels} panels in currencyUSD"
        );
    }
    assert!(
        uids.len() >= 2,
        "expected the overview and the company dashboards"
    );

    // The replica checkers tell merged from doubled aggregations.
    assert!(aggregates("sum by (company) (x)") && aggregates("topk(3, x)"));
    assert!(!aggregates("avg_over_time(x[1h]) and sum_over_time(x[1h])"));
    assert!(merges_replicas("sum(max without (instance, pod) (x))"));
    assert!(!merges_replicas("sum(max without (instance) (x))"));

    // The checker itself tells pinned from unpinned selectors.
    assert!(unpinned_windows(r#"sum(openrouter_company_usage_usd{company="a"})"#).len() == 1);
    assert!(unpinned_windows(r#"openrouter_key_usage_usd{window="daily"}"#).is_empty());
    assert!(unpinned_windows("company:openrouter_company_usage_usd:budget_ratio").is_empty());
}
