//! The real binary's lifecycle against the simulated OpenRouter: SIGHUP and
//! file-change reloads, rejected reloads, clean shutdown on SIGTERM/SIGINT,
//! and the management key never leaking anywhere (logs at trace level, every
//! endpoint, `Debug` output, errors, `--config.check`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openrouter_cost_exporter::config::{Config, SecretSource};
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::sim::{Fault, FaultResponse, SimServer, SimState};
use openrouter_cost_exporter::telemetry::Telemetry;
use openrouter_cost_exporter::upstream::Client;
use secrecy::SecretString;
use serde_json::json;

/// The distinctive middle of `MANAGEMENT_KEY`: a leak of a fragment must show too.
const KEY_MIDDLE: &str = "TESTSECRET-0123456789abcdef";

const COMPANIES_V1: &str =
    "  acme:\n    keys: [acme-prod, {name_glob: 'acme-*'}]\n  globex:\n    keys: [globex-prod]\n";
/// acme-prod moves to globex (an exact name beats acme's glob).
const COMPANIES_V2: &str =
    "  acme:\n    keys: [{name_glob: 'acme-*'}]\n  globex:\n    keys: [globex-prod, acme-prod]\n";

fn account() -> SimState {
    let mut state = empty_state();
    state.keys.push(key_with_usage(WS_A, 1, "acme-prod", 1.0));
    state.keys.push(key_with_usage(WS_A, 2, "acme-dev", 0.5));
    state.keys.push(key_with_usage(WS_B, 3, "globex-prod", 2.0));
    state.total_credits = 100.0;
    state.total_usage = state.keys_lifetime_usage();
    state
}

fn yaml(base_url: &str, refresh: &str, timeout: &str, companies: &str) -> String {
    TestConfig::new(base_url)
        .refresh(refresh)
        .timeout(timeout)
        .companies(companies)
        .yaml()
}

/// The real binary on a free loopback port, with its config in a temp dir.
struct Running {
    guard: ChildGuard,
    port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(config_yaml: &str, log_level: &str) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml).expect("write config");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let guard = spawn_binary(
            &[
                "--config.file",
                config.to_str().expect("UTF-8 path"),
                "--web.listen-address",
                &listen,
                "--log.level",
                log_level,
            ],
            &[("OPENROUTER_MANAGEMENT_KEY", MANAGEMENT_KEY)],
        );
        Running {
            guard,
            port,
            config,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn pid(&self) -> String {
        self.guard.child.id().to_string()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    fn write_config(&self, yaml: &str) {
        // Write then rename, as editors and Kubernetes do: never a half-written file.
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("replace config");
    }

    /// Waits until `/metrics` satisfies `ok`; returns that body.
    async fn metrics_until(&self, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if self.is_dead() {
                panic!("the exporter exited:\n{}", self.guard.logs());
            }
            if let Ok(resp) = reqwest::get(self.url("/metrics")).await {
                if resp.status().as_u16() == 200 {
                    let text = resp.text().await.unwrap_or_default();
                    if ok(&text) {
                        return text;
                    }
                }
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for /metrics; log:\n{}",
                self.guard.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Exited (a zombie not yet reaped). Reads /proc, as `try_wait` needs `&mut`.
    fn is_dead(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return true;
        };
        // The state follows the parenthesised command name.
        stat.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            == Some("Z")
    }

    /// Waits for the process to exit; panics after `timeout`.
    async fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.guard.child.try_wait().expect("try_wait") {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "still running {timeout:?} after the signal; log:\n{}",
                self.guard.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn company_of(text: &str, n: usize) -> String {
    let samples = parse(text);
    let info = find(&samples, "openrouter_key_info", &[("key_hash", &hash(n))]);
    assert_eq!(info.len(), 1, "one info sample for key {n}");
    info[0].labels["company"].clone()
}

/// `openrouter_up` is `v`. (Not a substring test: the HELP text of
/// `openrouter_up` itself reads "1 when the last refresh…".)
fn up_is(text: &str, v: f64) -> bool {
    find(&parse(text), "openrouter_up", &[])
        .first()
        .is_some_and(|s| s.value == v)
}

fn reload_ok(text: &str) -> f64 {
    value(
        &parse(text),
        "openrouter_config_last_reload_successful",
        &[],
    )
}

fn lifetime(text: &str, n: usize) -> f64 {
    value(
        &parse(text),
        "openrouter_key_usage_usd",
        &[("key_hash", &hash(n)), ("window", "lifetime")],
    )
}

/// Makes every later refresh fail and changes spend upstream, so any data the
/// exporter publishes from now on can only come from its last listing.
fn freeze_upstream(sim: &SimServer) {
    let mut st = sim.state();
    st.faults.push(Fault::new(
        "/workspaces",
        FaultResponse::Error {
            status: 500,
            retry_after: None,
        },
    ));
    st.key_mut(&hash(1))
        .expect("key 1")
        .fields
        .insert("usage".into(), json!(999.0));
}

/// Upstream calls of the refresh path (the activity loop runs on its own).
fn listing_requests(sim: &SimServer) -> usize {
    sim.state()
        .requests
        .iter()
        .filter(|r| !r.starts_with("/api/v1/activity"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reattributes_from_the_last_listing_at_once() {
    let sim = start_sim(account()).await;
    let exp = Running::start(&yaml(&sim.base_url(), "1h", "5s", COMPANIES_V1), "debug");
    let first = exp
        .metrics_until(Duration::from_secs(15), |t| up_is(t, 1.0))
        .await;
    assert_eq!(company_of(&first, 1), "acme");
    assert_eq!(lifetime(&first, 1), 10.0);
    let requests_after_first = listing_requests(&sim);
    assert_eq!(
        requests_after_first,
        13,
        "at start, GET /key (the management-key check) and the organization lists \
         (workspaces, each of the 2 workspaces' guardrails, guardrail assignments, 2 workspace \
         budgets); then one \
         refresh: workspaces, 2 key pages and the empty page that ends each, credits: {:?}",
        sim.state().requests
    );
    // A scrape never calls OpenRouter: 20 scrapes of every endpoint, no upstream call.
    let http = reqwest::Client::new();
    for _ in 0..20 {
        for path in ["/metrics", "/readyz", "/healthz", "/"] {
            http.get(exp.url(path)).send().await.unwrap();
        }
    }
    assert_eq!(
        listing_requests(&sim),
        requests_after_first,
        "scrapes caused upstream calls"
    );

    freeze_upstream(&sim);
    exp.write_config(&yaml(&sim.base_url(), "1h", "5s", COMPANIES_V2));
    exp.signal("HUP");
    let reloaded = exp
        .metrics_until(Duration::from_secs(5), |t| company_of(t, 1) == "globex")
        .await;
    // Re-attributed from the last listing: the old figure, under the new company.
    assert_eq!(lifetime(&reloaded, 1), 10.0);
    let samples = parse(&reloaded);
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "globex"), ("window", "lifetime")]
        ),
        10.0 + 20.0
    );
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "acme")]),
        1.0
    );
    assert_eq!(reload_ok(&reloaded), 1.0);
    let log = exp.guard.logs();
    assert!(log.contains("SIGHUP"), "log names the trigger:\n{log}");
    assert!(log.contains("config reloaded"), "{log}");

    // No upstream data arrived since: whatever refresh a reload may trigger
    // fails, and the old listing stays published.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = exp.metrics_until(Duration::from_secs(2), |_| true).await;
    assert_eq!(lifetime(&later, 1), 10.0);
    assert_eq!(company_of(&later, 1), "globex");
    // A reload re-renders from the last listing; it never calls OpenRouter
    // (the next refresh is an hour away).
    let extra = listing_requests(&sim) - requests_after_first;
    assert_eq!(
        extra, 0,
        "upstream calls caused by the reload (refresh_interval 1h)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_rejected_and_the_old_config_keeps_serving() {
    let sim = start_sim(account()).await;
    let exp = Running::start(&yaml(&sim.base_url(), "1h", "5s", COMPANIES_V1), "info");
    let first = exp
        .metrics_until(Duration::from_secs(15), |t| up_is(t, 1.0))
        .await;
    assert_eq!(reload_ok(&first), 1.0);

    // Unknown field and a company without selectors: both must be named.
    exp.write_config(&format!(
        "{}bogus_field: 1\n",
        yaml(&sim.base_url(), "1h", "5s", COMPANIES_V2)
    ));
    exp.signal("HUP");
    let rejected = exp
        .metrics_until(Duration::from_secs(5), |t| reload_ok(t) == 0.0)
        .await;
    assert_eq!(company_of(&rejected, 1), "acme", "old attribution kept");
    let snapshot = |t: &str| t[..t.find("# HELP openrouter_up ").unwrap()].to_string();
    assert_eq!(snapshot(&first), snapshot(&rejected));
    let log = exp.guard.logs();
    assert!(log.contains("config reload failed"), "{log}");
    assert!(
        log.contains("bogus_field"),
        "the log names the problem:\n{log}"
    );

    exp.write_config(&yaml(
        &sim.base_url(),
        "1h",
        "5s",
        "  acme:\n    keys: []\n  globex:\n    keys: [globex-prod]\n",
    ));
    exp.signal("HUP");
    // Wait for the log line rather than a fixed time (slow machines).
    let waited = Instant::now();
    while !exp.guard.logs().contains("companies.acme.keys")
        && waited.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let log = exp.guard.logs();
    let still = exp.metrics_until(Duration::from_secs(5), |_| true).await;
    assert_eq!(reload_ok(&still), 0.0);
    assert_eq!(company_of(&still, 1), "acme");
    assert!(
        log.contains("companies.acme.keys"),
        "the log locates the problem:\n{log}"
    );

    // A valid config clears the failure.
    exp.write_config(&yaml(&sim.base_url(), "1h", "5s", COMPANIES_V2));
    exp.signal("HUP");
    let fixed = exp
        .metrics_until(Duration::from_secs(5), |t| reload_ok(t) == 1.0)
        .await;
    assert_eq!(company_of(&fixed, 1), "globex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_change_is_picked_up_without_a_signal() {
    let sim = start_sim(account()).await;
    let exp = Running::start(&yaml(&sim.base_url(), "1h", "5s", COMPANIES_V1), "info");
    let first = exp
        .metrics_until(Duration::from_secs(15), |t| up_is(t, 1.0))
        .await;
    assert_eq!(company_of(&first, 1), "acme");
    freeze_upstream(&sim);

    let changed_at = Instant::now();
    exp.write_config(&yaml(&sim.base_url(), "1h", "5s", COMPANIES_V2));
    let reloaded = exp
        .metrics_until(Duration::from_secs(8), |t| company_of(t, 1) == "globex")
        .await;
    eprintln!("file change picked up after {:?}", changed_at.elapsed());
    assert_eq!(lifetime(&reloaded, 1), 10.0);
    let log = exp.guard.logs();
    assert!(log.contains("config file changed"), "{log}");
    assert!(!log.contains("SIGHUP"), "no signal was sent:\n{log}");
}

/// Shuts down on `signal` while a refresh hangs on the upstream and a
/// scraper holds an idle keep-alive connection.
async fn exits_cleanly_on(signal: &str) {
    let sim = start_sim(account()).await;
    // The first refresh lists keys, then hangs on /credits (request timeout 50 s).
    sim.state().faults.push(Fault::new(
        "/credits",
        FaultResponse::Delay(Duration::from_secs(40)),
    ));
    let mut exp = Running::start(&yaml(&sim.base_url(), "1h", "50s", COMPANIES_V1), "info");
    exp.metrics_until(Duration::from_secs(15), |t| up_is(t, 0.0))
        .await;
    let start = Instant::now();
    while !sim
        .state()
        .requests
        .iter()
        .any(|r| r.starts_with("/api/v1/credits"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no refresh started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An idle keep-alive scraper connection must not hold the shutdown up.
    let keep_alive = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let resp = keep_alive.get(exp.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.bytes().await.unwrap();

    exp.signal(signal);
    let (status, took) = exp.wait_exit(Duration::from_secs(5)).await;
    eprintln!("SIG{signal}: exited with {status} after {took:?}");
    assert_eq!(status.code(), Some(0), "log:\n{}", exp.guard.logs());
    let log = exp.guard.logs();
    assert!(log.contains(&format!("SIG{signal}")), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_within_five_seconds() {
    exits_cleanly_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero_within_five_seconds() {
    exits_cleanly_on("INT").await;
}

// ------------------------------------------------------------ the secret

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(MANAGEMENT_KEY),
        "{what} contains the management key:\n{text}"
    );
    assert!(
        !text.contains(KEY_MIDDLE),
        "{what} contains part of the management key:\n{text}"
    );
}

async fn get_all_endpoints(exp: &Running, seen: &mut Vec<(String, String)>) {
    let http = reqwest::Client::new();
    for path in ["/metrics", "/readyz", "/healthz", "/", "/nonexistent"] {
        if let Ok(resp) = http.get(exp.url(path)).send().await {
            let text = resp.text().await.unwrap_or_default();
            seen.push((path.to_string(), text));
        }
    }
    if let Ok(resp) = http
        .get(exp.url("/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
    {
        let gz = resp.bytes().await.unwrap_or_default();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .expect("gzip /metrics decodes");
        seen.push(("/metrics (gzip)".into(), text));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_key_never_leaks_at_trace_level() {
    let sim = start_sim(account()).await;
    let base = sim.base_url();
    let mut exp = Running::start(&yaml(&base, "1s", "300ms", COMPANIES_V1), "trace");
    let mut seen = Vec::new();
    exp.metrics_until(Duration::from_secs(15), |t| up_is(t, 1.0))
        .await;
    get_all_endpoints(&exp, &mut seen).await;

    let error = |status| FaultResponse::Error {
        status,
        retry_after: Some(0),
    };
    let faults: Vec<(&str, Vec<Fault>)> = vec![
        ("401", vec![Fault::new("/workspaces", error(401))]),
        ("403", vec![Fault::new("/credits", error(403))]),
        ("500s", vec![Fault::new("/keys", error(500))]),
        ("429", vec![Fault::new("/credits", error(429))]),
        (
            "timeouts",
            vec![Fault::new(
                "/credits",
                FaultResponse::Delay(Duration::from_millis(600)),
            )],
        ),
        (
            "malformed JSON",
            vec![Fault::new(
                "/keys",
                FaultResponse::Raw {
                    content_type: "application/json".into(),
                    body: format!("{{\"data\": [{{\"hash\": \"{MANAGEMENT_KEY}"),
                },
            )],
        ),
        (
            "proxy echoing the request",
            vec![Fault::new(
                "/workspaces",
                FaultResponse::EchoRequest { status: 502 },
            )],
        ),
        (
            "proxy echoing with 400",
            vec![Fault::new(
                "/credits",
                FaultResponse::EchoRequest { status: 400 },
            )],
        ),
        (
            "dropped connections",
            vec![Fault::new("/credits", FaultResponse::Disconnect)],
        ),
    ];
    for (name, faults) in faults {
        sim.state().faults = faults;
        // At least one refresh runs into the fault (refresh every 1 s).
        let started = Instant::now();
        // A failing /credits fails only the account part (openrouter_account_up 0).
        let failed = |t: &str| up_is(t, 0.0) || t.contains("\nopenrouter_account_up 0\n");
        let text = exp.metrics_until(Duration::from_secs(8), failed).await;
        eprintln!("{name}: refresh failed after {:?}", started.elapsed());
        seen.push((format!("/metrics during {name}"), text));
        get_all_endpoints(&exp, &mut seen).await;
        sim.state().faults.clear();
        exp.metrics_until(Duration::from_secs(8), |t| up_is(t, 1.0) && !failed(t))
            .await;
    }

    // A bad reload, and one whose secret file holds the key.
    std::fs::write(
        &exp.config,
        format!("{}bogus: 1\n", yaml(&base, "1s", "300ms", COMPANIES_V1)),
    )
    .unwrap();
    exp.signal("HUP");
    exp.metrics_until(Duration::from_secs(5), |t| reload_ok(t) == 0.0)
        .await;
    get_all_endpoints(&exp, &mut seen).await;

    // The account's key changes and the new one is put in a file (with the
    // trailing newline secret files usually have): refreshes fail until a
    // reload points management_key_file at it, and succeed only if the reload
    // read the file.
    const FILE_KEY: &str = "sk-or-v1-FILESECRET-fedcba9876543210fedcba9876543210";
    let secret_file = exp.config.with_file_name("management.key");
    std::fs::write(&secret_file, format!("{FILE_KEY}\n")).unwrap();
    sim.state().management_key = FILE_KEY.to_string();
    exp.metrics_until(Duration::from_secs(8), |t| up_is(t, 0.0))
        .await;
    let from_file = yaml(&base, "1s", "300ms", COMPANIES_V1).replace(
        "  request_timeout:",
        &format!(
            "  management_key_file: {}\n  request_timeout:",
            secret_file.display()
        ),
    );
    std::fs::write(&exp.config, from_file).unwrap();
    exp.signal("HUP");
    let text = exp
        .metrics_until(Duration::from_secs(8), |t| {
            reload_ok(t) == 1.0 && up_is(t, 1.0)
        })
        .await;
    seen.push(("/metrics after the secret-file reload".into(), text));
    get_all_endpoints(&exp, &mut seen).await;

    exp.signal("TERM");
    let (status, _) = exp.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0));

    let log = exp.guard.logs();
    // Trace really is on, for the HTTP stack too (where headers would show).
    assert!(
        log.contains(" TRACE hyper") || log.contains(" TRACE reqwest"),
        "third-party trace logging is on"
    );
    for expected in [
        "refresh failed",
        "management key",
        "502",
        "config reload failed",
        // The echoing proxy did send the key back; it was redacted.
        "Bearer [REDACTED]",
    ] {
        assert!(
            log.contains(expected),
            "the faults happened: {expected:?} missing from the log"
        );
    }
    assert_no_secret("the exporter's log (stdout and stderr)", &log);
    assert!(
        !log.contains("FILESECRET"),
        "the file's key leaked into the log"
    );
    assert!(seen.len() > 20);
    for (what, text) in &seen {
        assert_no_secret(what, text);
        assert!(
            !text.contains("FILESECRET"),
            "{what} contains the file's key"
        );
    }
}

#[tokio::test]
async fn debug_output_and_errors_never_contain_the_key() {
    let sim = start_sim(account()).await;
    let yaml = yaml(&sim.base_url(), "30s", "300ms", COMPANIES_V1);
    let config = Config::parse(&yaml, "test").unwrap();
    assert_no_secret("Config Debug", &format!("{config:?} {config:#?}"));

    let secret = SecretString::from(MANAGEMENT_KEY.to_string());
    assert_no_secret("SecretString Debug", &format!("{secret:?}"));
    let client = Client::new(
        &sim.base_url(),
        secret.clone(),
        Duration::from_millis(300),
        fast_retry(),
        Arc::new(Telemetry::new()),
    )
    .unwrap();
    assert_no_secret("Client Debug", &format!("{client:?} {client:#?}"));

    let exporter = Exporter::with_key(config.clone(), secret.clone(), fast_retry()).unwrap();
    assert_no_secret("Exporter Debug", &format!("{exporter:?} {exporter:#?}"));
    exporter.refresh().await.unwrap();
    assert_no_secret("published body", &body(&exporter));

    // Every error kind the client can produce, formatted every way.
    let mut errors = Vec::new();
    for fault in [
        FaultResponse::Error {
            status: 401,
            retry_after: None,
        },
        FaultResponse::Error {
            status: 500,
            retry_after: None,
        },
        FaultResponse::EchoRequest { status: 502 },
        FaultResponse::EchoRequest { status: 403 },
        FaultResponse::Raw {
            content_type: "application/json".into(),
            body: format!("{{\"data\": \"{MANAGEMENT_KEY}"),
        },
        FaultResponse::Raw {
            content_type: format!("text/{MANAGEMENT_KEY}"),
            body: "{}".into(),
        },
        FaultResponse::Delay(Duration::from_secs(1)),
        FaultResponse::Disconnect,
        FaultResponse::Stream {
            bytes: 17 << 20,
            content_length: true,
        },
    ] {
        // On /keys every one of these fails the refresh (a 403 on
        // /workspaces would fall back to the default listing instead).
        sim.state().faults = vec![Fault::new("/keys", fault)];
        let err = exporter.refresh().await.expect_err("fault");
        errors.push(format!("{err} | {err:?} | {err:#?}"));
    }
    let refused = Exporter::with_key(
        Config::parse(
            &yaml.replace(
                &sim.base_url(),
                &format!("http://127.0.0.1:{}", free_port()),
            ),
            "t",
        )
        .unwrap(),
        secret.clone(),
        fast_retry(),
    )
    .unwrap()
    .refresh()
    .await
    .expect_err("refused");
    errors.push(format!("{refused} | {refused:?}"));
    for e in &errors {
        assert_no_secret("an upstream error", e);
    }
    // The echo faults really carried the key: the redaction is what kept it out.
    assert!(
        errors.iter().any(|e| e.contains("[REDACTED]")),
        "{errors:#?}"
    );
    assert_no_secret("published body after errors", &body(&exporter));

    // Secret loading errors name the source, never the value.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for source in [
        SecretSource::Env("OPENROUTER_SURELY_UNSET_FOR_TEST".into()),
        SecretSource::File(empty),
        SecretSource::File(dir.path().join("missing")),
    ] {
        let err = source.load().expect_err("no secret");
        assert_no_secret("a secret error", &format!("{err} {err:?} {source:?}"));
    }
    // A key pasted where a variable name belongs is refused without being echoed.
    let pasted = yaml.replace(
        "  request_timeout:",
        &format!("  management_key_env: {MANAGEMENT_KEY}\n  request_timeout:"),
    );
    let err = Config::parse(&pasted, "pasted").expect_err("a key is not a variable name");
    assert_no_secret("a config error", &format!("{err} {err:?}"));
}

fn config_check(config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(binary());
    cmd.args(["--config.file", config.to_str().unwrap(), "--config.check"])
        .env_remove("RUST_LOG")
        .env_remove("OPENROUTER_MANAGEMENT_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run --config.check");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn config_check_never_prints_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let good = yaml("http://127.0.0.1:9/api/v1", "30s", "5s", COMPANIES_V1);
    std::fs::write(&path, &good).unwrap();
    let key_env = [("OPENROUTER_MANAGEMENT_KEY", MANAGEMENT_KEY)];

    let (ok, out) = config_check(&path, &key_env);
    assert!(ok, "{out}");
    assert!(out.contains("valid"), "{out}");
    assert!(
        out.contains("OPENROUTER_MANAGEMENT_KEY"),
        "names the source: {out}"
    );
    assert_no_secret("--config.check (valid)", &out);

    let (ok, out) = config_check(&path, &[]);
    assert!(!ok, "a missing key is an error: {out}");
    assert!(out.contains("OPENROUTER_MANAGEMENT_KEY"), "{out}");

    // Invalid configs, with the key in the environment and in the file itself.
    for bad in [
        format!("{good}bogus: 1\n"),
        good.replace(
            "  request_timeout:",
            &format!("  management_key_env: {MANAGEMENT_KEY}\n  request_timeout:"),
        ),
        good.replace(
            "  request_timeout:",
            &format!("  management_key: {MANAGEMENT_KEY}\n  request_timeout:"),
        ),
        // The key pasted where a value of another type belongs.
        good.replace(
            "refresh_interval: 30s",
            &format!("refresh_interval: {MANAGEMENT_KEY}"),
        ),
        good.replace(
            "  request_timeout: 5s",
            &format!("  request_timeout: 5s\n  workspaces: {MANAGEMENT_KEY}"),
        ),
        good.replace("companies:\n", &format!("companies: {MANAGEMENT_KEY}\n")),
        good.replace("[globex-prod]", &format!("[{{hash: [{MANAGEMENT_KEY}]}}]")),
    ] {
        std::fs::write(&path, &bad).unwrap();
        let (ok, out) = config_check(&path, &key_env);
        assert!(!ok, "invalid config accepted: {bad}");
        assert!(!out.trim().is_empty());
        assert_no_secret("--config.check (invalid)", &out);
    }
}
