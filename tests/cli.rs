//! The real binary: `--config.check`, the bad-config table, the demo, the HTTP
//! surface, and a real-mode run against a simulated OpenRouter at trace level.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn check(yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(["--config.check", "--config.file"])
        .arg(&path)
        .env_remove("OPENROUTER_MANAGEMENT_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run --config.check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const KEY_ENV: &[(&str, &str)] = &[("OPENROUTER_MANAGEMENT_KEY", "sk-or-v1-cli-test")];

#[test]
fn config_example_is_valid_with_the_key_set() {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let (ok, out) = check(&yaml, KEY_ENV);
    assert!(ok, "{out}");
    assert!(out.contains("valid"), "{out}");
    assert!(
        !out.contains("sk-or-v1-cli-test"),
        "the key is never printed: {out}"
    );

    let (ok, out) = check(&yaml, &[]);
    assert!(!ok);
    assert!(
        out.contains("OPENROUTER_MANAGEMENT_KEY is not set"),
        "{out}"
    );
}

#[test]
fn bad_configs_fail_with_a_clear_located_error() {
    let table: &[(&str, &str, &[&str])] = &[
        (
            "unknown top-level field",
            "refresh_interval: 1m\nbogus: 1\n",
            &["unknown field `bogus`", "line 2"],
        ),
        (
            "unknown nested field",
            "openrouter:\n  base_ur1: x\n",
            &["unknown field `base_ur1`", "line 2"],
        ),
        ("malformed YAML", "companies: [\n", &["config.yaml"]),
        (
            "interval too short",
            "refresh_interval: 10ms\n",
            &["refresh_interval: must be at least 1s"],
        ),
        (
            "interval not a duration",
            "refresh_interval: soon\n",
            &["refresh_interval"],
        ),
        (
            "timeout not below interval",
            "refresh_interval: 10s\nopenrouter:\n  request_timeout: 10s\n",
            &["openrouter.request_timeout: must be shorter than refresh_interval"],
        ),
        (
            "explicit timeout not below a short interval",
            "refresh_interval: 5s\nopenrouter:\n  request_timeout: 15s\n",
            &["openrouter.request_timeout: must be shorter than refresh_interval (15s >= 5s)"],
        ),
        (
            "company named twice",
            "companies:\n  acme:\n    keys: [a]\n  globex:\n    keys: [g]\n  acme:\n    keys: [b]\n",
            &["companies.acme: company \"acme\" is defined twice: at lines 2 and 6 (entries 1 and 3 of companies)"],
        ),
        (
            "workspace neither UUID nor slug",
            "openrouter:\n  workspaces: ['my team']\n",
            &["openrouter.workspaces[0]: \"my team\" is neither a workspace UUID"],
        ),
        (
            "bad base_url",
            "openrouter:\n  base_url: 'not a url'\n",
            &["openrouter.base_url: not a URL"],
        ),
        (
            "ftp base_url",
            "openrouter:\n  base_url: 'ftp://x/api'\n",
            &["scheme must be http or https"],
        ),
        (
            "both secret sources",
            "openrouter:\n  management_key_env: A\n  management_key_file: /b\n",
            &["set only one of management_key_env and management_key_file"],
        ),
        (
            "key pasted instead of variable name",
            "openrouter:\n  management_key_env: sk-or-v1-abcdef\n",
            &["looks like a key, not a variable name"],
        ),
        (
            "bad workspaces keyword",
            "openrouter:\n  workspaces: some\n",
            &["openrouter.workspaces: must be \"all\""],
        ),
        (
            "duplicate workspace",
            "openrouter:\n  workspaces: [w1, w1]\n",
            &["openrouter.workspaces[1]: duplicate of openrouter.workspaces[0]"],
        ),
        (
            "company without keys",
            "companies:\n  acme: {}\n",
            &["companies.acme.keys: a company needs at least one key selector"],
        ),
        (
            "unknown selector kind",
            "companies:\n  acme:\n    keys: [{regex: 'a.*'}]\n",
            &["companies.acme.keys[0]: unknown selector \"regex\""],
        ),
        (
            "selector with two kinds",
            "companies:\n  acme:\n    keys: [{name: a, hash: b}]\n",
            &["companies.acme.keys[0]: a selector has exactly one of name, hash, name_glob"],
        ),
        (
            "numeric key name",
            "companies:\n  acme:\n    keys: [{name: 5}]\n",
            &["companies.acme.keys[0]: name must be a string"],
        ),
        (
            "invalid glob",
            "companies:\n  acme:\n    keys: [{name_glob: '[a'}]\n",
            &["companies.acme.keys[0]: invalid name_glob"],
        ),
        (
            "same name in two companies",
            "companies:\n  acme:\n    keys: [shared]\n  globex:\n    keys: [{name: shared}]\n",
            &["companies.globex.keys[0]: name:shared is already claimed by company \"acme\""],
        ),
        (
            "same hash in two companies",
            "companies:\n  acme:\n    keys: [{hash: ABC}]\n  globex:\n    keys: [{hash: abc}]\n",
            &["companies.globex.keys[0]: hash:abc is already claimed by company \"acme\""],
        ),
        (
            "duplicate selector in one company",
            "companies:\n  acme:\n    keys: [a, a]\n",
            &["companies.acme.keys[1]: duplicate selector name:a"],
        ),
        (
            "negative budget",
            "companies:\n  acme:\n    keys: [a]\n    budget_usd: {monthly: -5}\n",
            &["companies.acme.budget_usd.monthly: must be a finite amount >= 0"],
        ),
        (
            "unknown budget window",
            "companies:\n  acme:\n    keys: [a]\n    budget_usd: {yearly: 5}\n",
            &["unknown field `yearly`"],
        ),
        (
            "company named like unassigned",
            "companies:\n  unassigned:\n    keys: [a]\n",
            &["companies.unassigned: \"unassigned\" is the unassigned_company label"],
        ),
        (
            "empty unassigned label",
            "unassigned_company: ''\n",
            &["unassigned_company: must not be empty"],
        ),
        (
            "zero staleness",
            "stale_after_intervals: 0\n",
            &["stale_after_intervals: must be at least 1"],
        ),
    ];
    for (what, yaml, wants) in table {
        let (ok, out) = check(yaml, KEY_ENV);
        assert!(!ok, "{what}: expected failure, got: {out}");
        for want in *wants {
            assert!(out.contains(want), "{what}: expected {want:?} in:\n{out}");
        }
        assert!(!out.contains("panicked"), "{what}: {out}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let (ok, out) = check(
        "refresh_interval: 100ms\ncompanies:\n  a:\n    keys: [{hash: h}]\n  b:\n    keys: [{hash: h}, {bogus: 1}]\n",
        KEY_ENV,
    );
    assert!(!ok);
    // An unset request_timeout follows a short interval, so it is no problem of its own.
    assert!(out.contains("3 problem(s)"), "{out}");
    assert!(out.contains("refresh_interval: must be at least 1s"));
    assert!(!out.contains("openrouter.request_timeout"), "{out}");
    assert!(out.contains("companies.b.keys[0]"));
    assert!(out.contains("companies.b.keys[1]"));
}

/// Issue 12 point 8: a short interval alone is a valid config.
#[test]
fn a_short_interval_without_a_timeout_is_valid() {
    let (ok, out) = check(
        "refresh_interval: 10s\ncompanies:\n  acme:\n    keys: [a]\n",
        KEY_ENV,
    );
    assert!(ok, "{out}");
}

#[test]
fn secret_from_file_and_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("key");
    std::fs::write(&secret, "sk-or-v1-from-file\n").unwrap();
    let yaml = format!("openrouter:\n  management_key_file: {}\n", secret.display());
    let (ok, out) = check(&yaml, &[]);
    assert!(ok, "{out}");
    let missing = dir.path().join("nope");
    let (ok, out) = check(
        &format!(
            "openrouter:\n  management_key_file: {}\n",
            missing.display()
        ),
        &[],
    );
    assert!(!ok);
    assert!(out.contains(&missing.display().to_string()), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serves_realistic_data_within_seconds() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _demo = spawn_binary(&["demo", "--web.listen-address", &listen], &[]);
    let base = format!("http://{listen}");
    let first = wait_for(
        &format!("{base}/metrics"),
        Duration::from_secs(15),
        |s, b| s == 200 && b.contains("\nopenrouter_up 1\n"),
    )
    .await;
    let samples = parse(&first);
    let companies: std::collections::BTreeSet<_> = find(&samples, "openrouter_company_keys", &[])
        .iter()
        .map(|s| s.labels["company"].clone())
        .collect();
    assert!(companies.len() >= 4, "{companies:?}"); // 3+ companies and unassigned
    assert!(companies.contains("unassigned"));
    let infos = find(&samples, "openrouter_key_info", &[]);
    assert!(infos.len() >= 10);
    let workspaces: std::collections::BTreeSet<_> = infos
        .iter()
        .map(|s| s.labels["workspace_id"].clone())
        .collect();
    assert_eq!(workspaces.len(), 3);
    // Issue 15: a company by workspace, one by creator, a guardrail cap and a workspace budget.
    let slugs: std::collections::BTreeSet<_> = infos
        .iter()
        .map(|s| s.labels["workspace"].clone())
        .collect();
    assert!(slugs.contains("hooli"), "{slugs:?}");
    assert!(companies.contains("hooli") && companies.contains("platform-team"));
    assert_eq!(
        value(&samples, "openrouter_company_keys", &[("company", "hooli")]),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_keys",
            &[("company", "platform-team")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_key_guardrail_limit_usd",
            &[("key", "hooli-web"), ("reset", "monthly")]
        ),
        300.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_workspace_budget_usd",
            &[("workspace", "hooli"), ("reset", "monthly")]
        ),
        1500.0
    );
    assert!(find(&samples, "openrouter_key_disabled", &[])
        .iter()
        .any(|s| s.value == 1.0));
    assert!(find(&samples, "openrouter_key_limit_remaining_usd", &[])
        .iter()
        .any(|s| s.value < 0.0));
    assert!(
        find(
            &samples,
            "openrouter_key_usage_usd",
            &[("company", "unassigned")]
        )
        .len()
            >= 4
    );
    if let Some(report) = promtool_check_metrics(&first) {
        assert!(report.trim().is_empty(), "promtool: {report}");
    }

    // Spend grows: a later refresh shows more lifetime spend for the account.
    let before = value(&samples, "openrouter_account_usage_usd", &[]);
    let later = wait_for(
        &format!("{base}/metrics"),
        Duration::from_secs(20),
        |s, b| {
            s == 200
                && parse(b)
                    .iter()
                    .any(|x| x.name == "openrouter_account_usage_usd" && x.value > before)
        },
    )
    .await;
    assert!(value(&parse(&later), "openrouter_account_usage_usd", &[]) > before);

    // The rest of the HTTP surface.
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let landing = get("/").await.unwrap().text().await.unwrap();
    assert!(
        landing.contains("href=\"/metrics\"")
            && landing.contains("/healthz")
            && landing.contains("/readyz")
    );
    assert_eq!(get("/nope").await.unwrap().status(), 404);
    let post = client.post(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let head = client.head(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));

    // gzip when asked, identical content once decompressed.
    let gz = client
        .get(format!("{base}/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let compressed = gz.bytes().await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&compressed[..]),
        &mut text,
    )
    .unwrap();
    assert!(text.contains("openrouter_company_usage_usd{company=\"acme\",window=\"monthly\"}"));
    assert!(text.ends_with('\n'));
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_telemetry_path() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _demo = spawn_binary(
        &[
            "demo",
            "--web.listen-address",
            &listen,
            "--web.telemetry-path",
            "/custom",
        ],
        &[],
    );
    let base = format!("http://{listen}");
    wait_for(
        &format!("{base}/custom"),
        Duration::from_secs(15),
        |s, b| s == 200 && b.contains("openrouter_up"),
    )
    .await;
    let status = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn real_mode_against_simulated_openrouter_never_logs_the_key() {
    let mut state = empty_state();
    for n in 0..150 {
        state.keys.push(key_with_usage(
            if n % 2 == 0 { WS_A } else { WS_B },
            n,
            &format!("acme-{n}"),
            1.0,
        ));
    }
    state.total_usage = state.keys_lifetime_usage();
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(
        &config_path,
        // Refresh every 2 s, so the failure path below really runs.
        config_yaml(
            &sim.base_url(),
            "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
        )
        .replace("refresh_interval: 30s", "refresh_interval: 2s")
        .replace("request_timeout: 2s", "request_timeout: 1s"),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let exporter = spawn_binary(
        &[
            "--config.file",
            config_path.to_str().unwrap(),
            "--web.listen-address",
            &listen,
            "--log.level",
            "trace",
        ],
        &[("OPENROUTER_MANAGEMENT_KEY", MANAGEMENT_KEY)],
    );
    let text = wait_for(
        &format!("http://{listen}/metrics"),
        Duration::from_secs(15),
        |s, b| s == 200 && b.contains("\nopenrouter_up 1\n"),
    )
    .await;
    let samples = parse(&text);
    assert_eq!(
        find(&samples, "openrouter_key_info", &[("company", "acme")]).len(),
        150
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        1500.0
    );
    // A failure path too: the upstream starts refusing the key, and a
    // refresh (every 2 s) really runs into it before the logs are read.
    sim.state().management_key = "something-else".into();
    wait_for(
        &format!("http://{listen}/metrics"),
        Duration::from_secs(15),
        |s, b| s == 200 && b.contains("\nopenrouter_up 0\n"),
    )
    .await;
    let logs = exporter.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging is on"
    );
    assert!(
        logs.contains("refresh failed"),
        "the failure is logged:\n{logs}"
    );
    assert!(logs.contains("401"), "{logs}");
    assert!(!logs.contains(MANAGEMENT_KEY), "key leaked into logs");
    assert!(!logs.contains("TESTSECRET"));
    assert!(!text.contains("TESTSECRET"));
}

/// `--log.format json`: every log line is one JSON object with a level and a message.
#[tokio::test(flavor = "multi_thread")]
async fn log_format_json_writes_one_json_object_per_line() {
    let mut state = empty_state();
    state.keys.push(key_with_usage(WS_A, 1, "acme-1", 1.0));
    let sim = start_sim(state).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(
        &config_path,
        config_yaml(&sim.base_url(), "  acme:\n    keys: [acme-1]\n"),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let exporter = spawn_binary(
        &[
            "--config.file",
            config_path.to_str().unwrap(),
            "--web.listen-address",
            &listen,
            "--log.format",
            "json",
            "--log.level",
            "debug",
        ],
        &[("OPENROUTER_MANAGEMENT_KEY", MANAGEMENT_KEY)],
    );
    wait_for(
        &format!("http://{listen}/metrics"),
        Duration::from_secs(15),
        |s, b| s == 200 && b.contains("\nopenrouter_up 1\n"),
    )
    .await;
    let logs = exporter.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "some logs were written:\n{logs}");
    for line in &lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        assert!(
            parsed["fields"]["message"].is_string() || parsed["message"].is_string(),
            "{line}"
        );
    }
    assert!(!logs.contains("TESTSECRET"));
}

#[test]
fn healthcheck_subcommand_reports_failure_for_a_closed_port() {
    let port = free_port();
    let out = Command::new(binary())
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// Issue 24: a key put where its variable name or file path belongs is not
/// echoed by `--config.check` (nor, through the same errors, by a reload).
#[test]
fn a_key_in_the_wrong_field_is_not_echoed() {
    let key = "sk-or-v1-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    for yaml in [
        format!("openrouter:\n  management_key_file: {key}\n"),
        format!("openrouter:\n  management_key_env: \"Bearer {key}\"\n"),
        format!("openrouter:\n  management_key_env: \" {key}\"\n"),
        format!(
            "openrouter:\n  use_management_key: false\ncompanies:\n  a:\n    keys: [{{name: a, secret_file: {key}}}]\n"
        ),
        format!(
            "openrouter:\n  use_management_key: false\ncompanies:\n  a:\n    keys: [{{name: a, secret_env: \"Bearer {key}\"}}]\n"
        ),
    ] {
        let (ok, out) = check(&yaml, KEY_ENV);
        assert!(!ok, "{yaml}: {out}");
        assert!(out.contains("[REDACTED]") || out.contains("looks like a key"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("0f1e2d"), "{yaml}: {out}");
    }
}

/// Issue 24: risky but valid settings are said by `--config.check`, which
/// still succeeds; a careful setup gets no warning.
#[test]
fn config_check_warns_about_risky_settings() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("management-key");
    std::fs::write(&secret, "sk-or-v1-from-file\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Judged by the file it points to, as Kubernetes mounts secrets.
    let link = dir.path().join("link");
    symlink(&secret, &link).unwrap();
    let web = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
    let config = dir.path().join("config.yaml");
    let run = |base_url: &str, web_config: bool| {
        std::fs::write(
            &config,
            format!(
                "openrouter:\n  base_url: {base_url}\n  management_key_file: {}\n",
                link.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(binary());
        cmd.args(["--config.check", "--config.file"]).arg(&config);
        if web_config {
            cmd.arg("--web.config.file").arg(&web);
        }
        let out = cmd.output().expect("run --config.check");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("valid"), "{stdout}");
        assert!(!stderr.contains("sk-or-v1-from-file") && !stderr.contains(&hash));
        stderr
    };

    let stderr = run("http://192.0.2.10/api/v1", true);
    for want in [
        "warning: openrouter.base_url: plain http:// to 192.0.2.10".to_string(),
        format!(
            "warning: openrouter.management_key_file {}: readable by every user (mode 0644)",
            link.display()
        ),
        format!(
            "warning: web config file {}: basic_auth_users without tls_server_config",
            web.display()
        ),
    ] {
        assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    }
    assert_eq!(stderr.matches("warning:").count(), 3, "{stderr}");

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
    let stderr = run("https://openrouter.ai/api/v1", false);
    assert!(!stderr.contains("warning"), "{stderr}");
}
