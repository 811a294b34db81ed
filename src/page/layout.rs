//! What every page wraps its content in: the style sheet, head and footer,
//! the navigation links, and the data's freshness in words.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::format::{escape_html, format_age, format_time, percent_encode};
use super::Links;
use crate::body::Published;
use crate::config::Config;
use crate::snapshot::Snapshot;
use crate::status::Status;

const STYLE: &str = "\
:root{color-scheme:light;--ok:#2e7d32;--warn:#b26a00;--over:#c62828;--muted:#5f6368;--line:#dadce0}\
*{box-sizing:border-box}\
body{margin:0;padding:16px 20px 32px;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#202124;background:#fff}\
h1{font-size:1.4rem;margin:0 0 4px}h2{font-size:1.1rem;margin:24px 0 8px}\
nav{margin:4px 0 12px}nav a{margin-right:14px;white-space:nowrap}\
a{color:#1a5fb4}\
.status{padding:8px 12px;border-radius:6px;margin:8px 0;border-left:5px solid var(--ok);background:#f1f8f1}\
.status.stale,.status.failed{border-left-color:var(--over);background:#fdecea}\
.status.nodata{border-left-color:var(--warn);background:#fff4e5}\
.muted,small{color:var(--muted)}\
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:6px}\
table{border-collapse:collapse;width:100%;font-size:14px;font-variant-numeric:tabular-nums}\
caption{caption-side:bottom;text-align:left;padding:8px 10px;color:var(--muted);font-size:.85rem}\
th,td{padding:6px 7px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;white-space:nowrap}\
thead th{background:#f8f9fa;font-size:.85rem}\
tbody th,tfoot th{font-weight:600;white-space:normal;min-width:8rem;max-width:12rem;overflow-wrap:break-word}\
td.num,th.num{text-align:right}\
.unknown{color:var(--muted)}\
tr.unassigned>*,tr.unattributed>*{background:#fafafa}\
tfoot th,tfoot td{font-weight:700;border-top:2px solid #202124}\
.budget{margin:0 0 5px;font-size:.8rem}td.budgets{white-space:normal;min-width:14rem;width:16rem}\
.bar{display:block;height:7px;background:#e8eaed;border-radius:4px;overflow:hidden;margin-top:2px}\
.fill{display:block;height:100%;background:var(--ok)}\
.budget.warning .fill{background:var(--warn)}.budget.over .fill{background:var(--over)}\
.budget.over strong{color:var(--over)}.budget.warning strong{color:var(--warn)}\
.flag{font-weight:600}.flag.over{color:var(--over)}.flag.warning{color:var(--warn)}\
td.ws{max-width:7rem;overflow:hidden;text-overflow:ellipsis}td.model,th.model{max-width:10rem;overflow:hidden;text-overflow:ellipsis}\
footer{margin-top:24px;font-size:.8rem;color:var(--muted)}\
@media (max-width:640px){body{padding:10px 10px 24px;font-size:14px}h1{font-size:1.2rem}\
.scroll{border:0;overflow:visible}\
table,tbody,tfoot,tr,th,td,caption{display:block;width:100%}thead{display:none}\
tr{border:1px solid var(--line);border-radius:6px;margin:0 0 10px;overflow:hidden}\
tbody th,tfoot th{max-width:none;border-bottom:1px solid var(--line);background:#f8f9fa}\
td{display:flex;justify-content:space-between;gap:12px;border:0;padding:3px 10px;white-space:normal;text-align:right}\
td[data-label]::before{content:attr(data-label);color:var(--muted);font-weight:400;text-align:left}\
td.budgets{display:block;text-align:left;width:100%}td.budgets::before{display:block}\
td:empty,td.na{display:none}td.model,th.model,td.ws{max-width:none}\
tfoot th,tfoot td{border-top:0}caption{padding:0 0 10px}}";

pub(super) fn head(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>",
        escape_html(title)
    );
}

pub(super) fn foot(out: &mut String) {
    let _ = writeln!(
        out,
        "<footer>openrouter-cost-exporter {}. Current figures are the ones <code>/metrics</code> \
         serves; statements and date ranges come from the ledger of OpenRouter's daily activity. \
         No page calls OpenRouter.</footer>\n</body></html>",
        env!("CARGO_PKG_VERSION")
    );
}

pub(super) fn nav(out: &mut String, links: &Links<'_>, company: Option<&str>) {
    out.push_str("<nav>");
    if company.is_some() {
        out.push_str("<a href=\"/\">← All companies</a>");
    }
    let _ = write!(
        out,
        "<a href=\"{}\">Metrics</a><a href=\"/healthz\">Health</a><a href=\"/readyz\">Readiness</a>\
         <a href=\"/companies.csv\">CSV</a><a href=\"/statements\">Statements</a>",
        escape_html(links.metrics)
    );
    if let Some(grafana) = links.grafana {
        let base = grafana.trim_end_matches('/');
        let url = match company {
            Some(name) => format!(
                "{base}/d/openrouter-company?var-company={}",
                percent_encode(name)
            ),
            None => format!("{base}/d/openrouter-overview"),
        };
        let _ = write!(
            out,
            "<a href=\"{}\" rel=\"noopener noreferrer\">Grafana</a>",
            escape_html(&url)
        );
    }
    out.push_str("</nav>\n");
}

/// The data's age and the last refresh result, in words.
pub(super) fn freshness(
    out: &mut String,
    published: &Published,
    config: &Config,
    now: DateTime<Utc>,
) {
    let status: Option<&Status> = published.status.as_ref();
    let Some(snap) = published.snapshot.as_deref() else {
        no_data(out, status, config);
        return;
    };
    let age = (now - snap.taken_at).num_seconds();
    let max_age = config.stale_after().as_secs();
    let stale = u64::try_from(age).is_ok_and(|a| a > max_age);
    let up = status.is_some_and(|s| s.up);
    let class = if stale {
        "stale"
    } else if !up {
        "failed"
    } else {
        "ok"
    };
    let _ = write!(
        out,
        "<p id=\"freshness\" class=\"status {class}\" data-state=\"{class}\" data-taken-at-ms=\"{}\">",
        snap.taken_at.timestamp_millis()
    );
    if stale {
        let _ = write!(
            out,
            "<strong>Stale data</strong>: these figures are {} old, older than {} refresh intervals \
             of {}; OpenRouter has not been read successfully since. ",
            format_age(age),
            config.stale_after_intervals,
            humantime::format_duration(config.refresh_interval)
        );
    }
    data_age(out, snap, age, config);
    if let Some(s) = status {
        refresh_result(out, s);
    }
    out.push_str("</p>\n");
}

/// Before the first snapshot, or while a successor is built.
fn no_data(out: &mut String, status: Option<&Status>, config: &Config) {
    if status.is_some_and(|s| s.last_success.is_some()) {
        // A large account's snapshot is let go while its successor is built.
        let _ = writeln!(
            out,
            "<p id=\"freshness\" class=\"status nodata\" data-state=\"rebuilding\"><strong>Rebuilding</strong>: \
             new figures from OpenRouter are being attributed; reload in a moment.</p>"
        );
        return;
    }
    let _ = writeln!(
        out,
        "<p id=\"freshness\" class=\"status nodata\" data-state=\"nodata\"><strong>No data yet</strong>: \
         no refresh from OpenRouter has succeeded since the exporter started{}. \
         The page fills in after the first successful refresh (every {}).</p>",
        if status.is_some_and(|s| s.last_duration_seconds.is_some()) {
            " (the last attempt failed; the log says why)"
        } else {
            ""
        },
        humantime::format_duration(config.refresh_interval)
    );
}

/// When the figures were taken, and how long ago.
fn data_age(out: &mut String, snap: &Snapshot, age: i64, config: &Config) {
    let _ = write!(
        out,
        "Data from <time datetime=\"{}\">{}</time>, {} old (refreshed every {}). ",
        snap.taken_at.to_rfc3339(),
        format_time(snap.taken_at),
        format_age(age),
        humantime::format_duration(config.refresh_interval)
    );
}

/// How the last refresh went, and which side reads failed.
fn refresh_result(out: &mut String, status: &Status) {
    if status.up {
        out.push_str("Last refresh <strong>succeeded</strong>");
        match status.last_duration_seconds {
            Some(d) if d < 1.0 => {
                let _ = write!(out, " in {:.0} ms", d * 1000.0);
            }
            Some(d) => {
                let _ = write!(out, " in {d:.1} s");
            }
            None => {}
        }
        out.push('.');
    } else {
        out.push_str(
            "Last refresh <strong>failed</strong>: the figures are those of the last good one \
             (see <code>openrouter_refresh_failures_total</code> and the log).",
        );
    }
    if status.account_up == Some(false) {
        out.push_str(" Account credits could not be read.");
    }
    if let Some(a) = status.activity {
        if !a.up && a.last_success.is_some() {
            out.push_str(" The last activity run failed; rolling windows and models are from the one before.");
        }
    }
}
