//! The landing page in a real browser: Debian's headless Chromium against the
//! real binary's `demo`. It loads `/` and a company page, checks the rendered
//! DOM (`--dump-dom`) against `/metrics` of the same refresh, and saves
//! screenshots at 1280×800 and at a 390-px-wide phone size, whose paths it
//! prints (CI keeps them as artifacts).
//!
//! `UPDATE_SCREENSHOT=1` also copies the desktop screenshot to
//! `docs/landing-page.png`, the one the README shows (then
//! `pngquant --quality=70-95` it, to keep the repository small).
//!
//! Skips with a reason when `chromium` is not installed; fails under `CI=true`.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tools::{require_tool, root};
use common::*;

const COMPANIES: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

/// Runs headless Chromium with `args` (the URL last); its stdout. Killed after 90 s.
fn chromium(binary: &Path, profile: &Path, args: &[&str]) -> String {
    let out_path = profile.with_extension("stdout");
    let out = std::fs::File::create(&out_path).expect("chromium stdout file");
    let err = std::fs::File::create(profile.with_extension("stderr")).expect("stderr file");
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => {
                let stderr =
                    std::fs::read_to_string(profile.with_extension("stderr")).unwrap_or_default();
                assert!(status.success(), "chromium {args:?}: {status}\n{stderr}");
                break;
            }
            None if started.elapsed() > Duration::from_secs(90) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {args:?} took more than 90 s");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    std::fs::read_to_string(&out_path).expect("chromium output")
}

/// The rendered `<tr>` of a company in the companies table.
fn company_row<'a>(dom: &'a str, name: &str) -> &'a str {
    let marker = format!("data-company=\"{name}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} is not on the page:\n{dom}"));
    let end = dom[start..].find("</tr>").expect("row end") + start;
    &dom[start..end]
}

/// (exact `data-usd`, shown text) of a row's cell for `window`.
fn cell<'a>(row: &'a str, window: &str) -> (&'a str, &'a str) {
    let marker = format!("data-window=\"{window}\" data-usd=\"");
    let start = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no known {window} figure in {row}"))
        + marker.len();
    let exact = &row[start..start + row[start..].find('"').unwrap()];
    let text_start = start + row[start..].find('>').unwrap() + 1;
    let text = &row[text_start..text_start + row[text_start..].find('<').unwrap()];
    (exact, text)
}

/// `$1,254.20` → 1254.2.
fn shown_dollars(text: &str) -> f64 {
    let negative = text.starts_with('-');
    let digits: String = text
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v: f64 = digits.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
    if negative {
        -v
    } else {
        v
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_renders_in_headless_chromium() {
    let Some(chromium_bin) = require_tool(&["chromium"], "apt-get install chromium") else {
        return;
    };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let exporter = spawn_binary(
        &[
            "demo",
            "--web.listen-address",
            &listen,
            "--web.grafana-url",
            "http://grafana.example:3000/",
        ],
        &[],
    );
    let base = format!("http://{listen}");
    // Ready (first refresh) and with activity collected, so the page is complete.
    wait_for(
        &format!("{base}/readyz"),
        Duration::from_secs(60),
        |s, _| s == 200,
    )
    .await;
    wait_for(
        &format!("{base}/metrics"),
        Duration::from_secs(60),
        |s, b| {
            s == 200
                && b.contains("openrouter_company_model_usage_usd{")
                && b.contains("window=\"rolling_30d\"")
        },
    )
    .await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let profile = tmp.path().join("profile");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let metrics = || async {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        parse(&text)
    };

    // The demo refreshes every 5 s and its spend grows: compare a DOM with
    // the /metrics of the same refresh (same data timestamp), retrying a few times.
    let mut attempt = 0;
    let (dom, samples) = loop {
        attempt += 1;
        let before = metrics().await;
        let dom = chromium(
            &chromium_bin,
            &profile,
            &["--dump-dom", &format!("{base}/")],
        );
        let after = metrics().await;
        let ts = |s: &[Sample]| {
            (value(s, "openrouter_last_refresh_success_timestamp_seconds", &[]) * 1000.0).round()
                as i64
        };
        let marker = "data-taken-at-ms=\"";
        let dom_ts: Option<i64> = dom
            .find(marker)
            .map(|i| &dom[i + marker.len()..])
            .and_then(|s| s[..s.find('"')?].parse().ok());
        if dom_ts == Some(ts(&before)) && ts(&before) == ts(&after) {
            break (dom, before);
        }
        assert!(
            attempt < 8,
            "never caught the page and /metrics on the same refresh; last DOM:\n{dom}\n\
             exporter log:\n{}",
            exporter.logs()
        );
    };

    // The DOM: every demo company, figures equal to /metrics, the over-budget bar marked.
    assert!(
        dom.contains("<h1>OpenRouter costs by company</h1>"),
        "{dom}"
    );
    assert!(
        !dom.to_lowercase().contains("<script"),
        "no script on the page"
    );
    assert!(dom.contains("class=\"status ok\""), "fresh data: {dom}");
    assert!(
        dom.contains("href=\"http://grafana.example:3000/d/openrouter-overview\""),
        "--web.grafana-url links the dashboards: {dom}"
    );
    for company in COMPANIES {
        let row = company_row(&dom, company);
        for window in WINDOWS {
            let want = value(
                &samples,
                "openrouter_company_usage_usd",
                &[("company", company), ("window", window)],
            );
            let (exact, text) = cell(row, window);
            assert_eq!(exact.parse::<f64>().unwrap(), want, "{company} {window}");
            let cents = (want * 100.0).round() / 100.0;
            assert!(
                (shown_dollars(text) - cents).abs() < 1e-6,
                "{company} {window}: shows {text}, /metrics has {want}"
            );
        }
        let keys = value(&samples, "openrouter_company_keys", &[("company", company)]);
        assert!(
            row.contains(&format!(
                "<td class=\"num\" data-label=\"Keys\">{keys}</td>"
            )),
            "{company}: {keys} keys in {row}"
        );
    }
    // Sorted by this month's spend.
    let order: Vec<usize> = COMPANIES
        .iter()
        .map(|c| dom.find(&format!("data-company=\"{c}\"")).unwrap())
        .collect();
    let mut by_month: Vec<(f64, usize)> = COMPANIES
        .iter()
        .zip(&order)
        .map(|(c, at)| {
            let month = value(
                &samples,
                "openrouter_company_usage_usd",
                &[("company", c), ("window", "monthly")],
            );
            (month, *at)
        })
        .collect();
    by_month.sort_by(|a, b| b.0.total_cmp(&a.0));
    assert!(
        by_month.windows(2).all(|w| w[0].1 < w[1].1),
        "rows not by monthly spend: {by_month:?}"
    );
    // acme is over its monthly budget of $1,000 in the demo: its bar says so.
    let acme = company_row(&dom, "acme");
    let budget = value(
        &samples,
        "openrouter_company_budget_usd",
        &[("company", "acme"), ("window", "monthly")],
    );
    let used = value(
        &samples,
        "openrouter_company_usage_usd",
        &[("company", "acme"), ("window", "monthly")],
    );
    assert!(used > budget, "the demo's acme is over budget");
    assert!(acme.contains("data-budget-state=\"over\""), "{acme}");
    assert!(
        acme.contains("<div class=\"budget over\" data-window=\"monthly\""),
        "{acme}"
    );
    assert!(acme.contains("over budget"), "said in words: {acme}");
    // Unassigned keys and unattributed spend have their own rows.
    assert!(dom.contains("class=\"unassigned\" data-company=\"unassigned\""));
    let unattributed = value(&samples, "openrouter_account_unattributed_usage_usd", &[]);
    let at = dom
        .find("<tr class=\"unattributed\">")
        .expect("unattributed row");
    let (exact, _) = cell(&dom[at..], "lifetime");
    assert_eq!(exact.parse::<f64>().unwrap(), unattributed);

    // A company page: its keys, limits and model mix.
    let company = chromium(
        &chromium_bin,
        &profile,
        &["--dump-dom", &format!("{base}/company/acme")],
    );
    assert!(
        company.contains("<h1 id=\"company\">acme</h1>"),
        "{company}"
    );
    for key in ["acme-production", "acme-staging", "acme-research"] {
        assert!(
            company.contains(&format!("<th scope=\"row\">{key}</th>")),
            "{key} missing: {company}"
        );
    }
    assert!(
        company.contains("$2,000.00 <small>monthly</small>"),
        "limit"
    );
    assert!(company.contains("<table id=\"models\">"), "model mix");

    // Screenshots: desktop and phone.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, size, url) in [
        ("landing-1280x800.png", "1280,800", format!("{base}/")),
        ("landing-390x844.png", "390,844", format!("{base}/")),
        (
            "company-acme-1280x800.png",
            "1280,800",
            format!("{base}/company/acme"),
        ),
    ] {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        chromium(
            &chromium_bin,
            &profile,
            &[
                &format!("--screenshot={}", path.display()),
                &format!("--window-size={size}"),
                &url,
            ],
        );
        let (w, h) = png_size(&path);
        assert_eq!(format!("{w},{h}"), size, "{}", path.display());
        // Straight to stderr, past the test harness's capture: CI logs show it.
        let _ = writeln!(std::io::stderr(), "screenshot: {}", path.display());
    }
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let docs = root().join("docs/landing-page.png");
        std::fs::copy(dir.join("landing-1280x800.png"), &docs).unwrap();
        eprintln!("updated {}", docs.display());
    }
    drop(exporter);
}
