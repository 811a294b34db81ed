//! The human pages: `/` (what each company costs against its budget),
//! `/company/<name>` (its keys and model mix) and `/companies.csv`.
//!
//! Everything here is rendered from the [`Published`] body that `/metrics`
//! serves (its snapshot and status), so a page view never calls OpenRouter
//! and shows exactly the figures of the current scrape. Rendering is a walk
//! over the companies (`/`, the CSV) or over one company's keys (its page),
//! on request; scrapes never pay for it.
//!
//! Safety: every string that comes from OpenRouter or the config (key names,
//! masked labels, workspaces, company and model names) goes through
//! [`escape_html`] or, in the CSV, [`csv_text`], which also neutralises
//! spreadsheet formulas. The pages hold no script and no secret: the
//! management key and direct keys' secrets never reach the snapshot.

use std::cmp::Ordering;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::body::Published;
use crate::config::{Budget, Config};
use crate::exposition::Status;
use crate::money::Usd;
use crate::snapshot::{CompanyTotals, Key, Snapshot, Window, ROLLING};

/// Usage ÷ budget from which a bar turns amber; the same share as
/// `openrouter:threshold:company_budget_warning_ratio` (OpenRouterCompanyBudgetNearlyExhausted).
pub const BUDGET_WARNING_RATIO: f64 = 0.8;
/// Usage ÷ budget above which a bar is marked over budget; the same as
/// `openrouter:threshold:company_budget_critical_ratio` (OpenRouterCompanyBudgetExceeded).
pub const BUDGET_CRITICAL_RATIO: f64 = 1.0;
/// A company page lists at most this many keys (the biggest spenders this
/// month); the rest are counted, and `/metrics` has them all.
pub const MAX_KEY_ROWS: usize = 1000;
/// A key expiring within this many seconds is flagged, as OpenRouterKeyExpiringSoon does.
const EXPIRY_WARNING_SECONDS: i64 = 7 * 86400;

/// Where the pages link to.
#[derive(Debug, Clone, Copy)]
pub struct Links<'a> {
    /// `--web.telemetry-path`.
    pub metrics: &'a str,
    /// `--web.grafana-url`: Grafana's base URL, whose dashboards
    /// `openrouter-overview` and `openrouter-company` are linked.
    pub grafana: Option<&'a str>,
}

/// A rendered page and whether it names something that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    Found(String),
    NotFound(String),
}

/// How much of a budget is used, at the alert thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BudgetState {
    Ok,
    Warning,
    Over,
}

impl BudgetState {
    /// `used` of `budget`: over above [`BUDGET_CRITICAL_RATIO`], warning from
    /// [`BUDGET_WARNING_RATIO`]. A zero budget is over as soon as anything is spent.
    pub fn of(used: Usd, budget: f64) -> BudgetState {
        match ratio(used, budget) {
            Some(r) if r > BUDGET_CRITICAL_RATIO => BudgetState::Over,
            Some(r) if r >= BUDGET_WARNING_RATIO => BudgetState::Warning,
            Some(_) => BudgetState::Ok,
            None if used > Usd::ZERO => BudgetState::Over,
            None => BudgetState::Ok,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BudgetState::Ok => "ok",
            BudgetState::Warning => "warning",
            BudgetState::Over => "over",
        }
    }

    fn words(self) -> &'static str {
        match self {
            BudgetState::Ok => "",
            BudgetState::Warning => "nearly used up",
            BudgetState::Over => "over budget",
        }
    }
}

/// `used` ÷ `budget`; `None` for a budget that is not positive.
fn ratio(used: Usd, budget: f64) -> Option<f64> {
    (budget.is_finite() && budget > 0.0).then(|| dollars(used) / budget)
}

fn dollars(amount: Usd) -> f64 {
    amount.nanos() as f64 / 1e9
}

// ---------------------------------------------------------------------------
// Escaping and formatting.

/// Text safe inside HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business on a page; keep them visible.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A CSV text field: always quoted (quotes doubled), and a value a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`,
/// tab or carriage return) gets a leading `'` so it stays text.
pub fn csv_text(s: &str) -> String {
    let neutral = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", neutral.replace('"', "\"\""))
}

/// Percent-encodes everything but RFC 3986's unreserved characters: safe in
/// a path segment and in a query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` for a malformed escape or text that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// US dollars rounded to the cent (half away from zero), with thousands
/// separators: `$1,184.20`, `-$3.05`.
pub fn format_usd(amount: Usd) -> String {
    let nanos = amount.nanos();
    let cents = (nanos.unsigned_abs() + 5_000_000) / 10_000_000;
    let sign = if nanos < 0 && cents > 0 { "-" } else { "" };
    let whole = (cents / 100).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}${grouped}.{:02}", cents % 100)
}

fn format_f64_usd(value: f64) -> Option<String> {
    Usd::from_f64(value).map(format_usd)
}

/// A duration in words: `42 s`, `5 min`, `3 h 12 min`, `4 d 2 h`.
fn format_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// What the pages compute from a snapshot.

/// One row of the companies table (a company, the unassigned keys, or the total).
struct Row {
    name: String,
    keys: u64,
    usage: [Option<Usd>; 4],
    rolling: [Option<Usd>; 2],
    budget: Budget,
    top_model: Option<(String, Option<f64>)>,
}

impl Row {
    fn of(company: &CompanyTotals) -> Row {
        Row {
            name: company.name.clone(),
            keys: company.keys,
            usage: company.usage,
            rolling: company.rolling,
            budget: company.budget,
            top_model: top_model(company),
        }
    }

    /// The budgets that are set, with what is used of each (`None` = usage unknown).
    fn budgets(&self) -> Vec<(Window, f64, Option<Usd>)> {
        [
            (Window::Daily, self.budget.daily, self.usage[0]),
            (Window::Weekly, self.budget.weekly, self.usage[1]),
            (Window::Monthly, self.budget.monthly, self.usage[2]),
        ]
        .into_iter()
        .filter_map(|(w, b, used)| b.map(|b| (w, b, used)))
        .collect()
    }

    /// The worst state over its budgets.
    fn budget_state(&self) -> BudgetState {
        self.budgets()
            .into_iter()
            .filter_map(|(_, b, used)| used.map(|u| BudgetState::of(u, b)))
            .max()
            .unwrap_or(BudgetState::Ok)
    }
}

/// The company's biggest model by spend over the last 30 days, with its share.
fn top_model(company: &CompanyTotals) -> Option<(String, Option<f64>)> {
    let models = company.models.as_ref()?;
    let total: i128 = models.iter().map(|(_, m)| m.usage.nanos()).sum();
    let (name, top) = models
        .iter()
        .filter(|(name, m)| name != "other" && m.usage > Usd::ZERO)
        .max_by(|a, b| a.1.usage.cmp(&b.1.usage).then_with(|| b.0.cmp(&a.0)))?;
    let share = (total > 0).then(|| top.usage.nanos() as f64 / total as f64);
    Some((name.clone(), share))
}

fn sum(a: Option<Usd>, b: Option<Usd>) -> Option<Usd> {
    a?.checked_add(b?)
}

/// The configured companies by this month's spend, most first (unknown last),
/// then the unassigned company, which `Snapshot::build` always puts last.
fn sorted_rows(snap: &Snapshot) -> (Vec<Row>, Option<Row>) {
    let Some((unassigned, configured)) = snap.companies.split_last() else {
        return (Vec::new(), None);
    };
    let mut rows: Vec<Row> = configured.iter().map(Row::of).collect();
    rows.sort_by(|a, b| match (a.usage[2], b.usage[2]) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.name.cmp(&b.name)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    (rows, Some(Row::of(unassigned)))
}

/// Every company's spend added up (exact; unknown when any part is).
fn total_row(snap: &Snapshot) -> Row {
    let mut usage = [Some(Usd::ZERO); 4];
    let mut rolling = [Some(Usd::ZERO); 2];
    let mut keys = 0;
    for c in &snap.companies {
        keys += c.keys;
        for (t, v) in usage.iter_mut().zip(c.usage) {
            *t = sum(*t, v);
        }
        for (t, v) in rolling.iter_mut().zip(c.rolling) {
            *t = sum(*t, v);
        }
    }
    Row {
        name: "Total, all keys".to_string(),
        keys,
        usage,
        rolling,
        budget: Budget::default(),
        top_model: None,
    }
}

fn has_rolling(snap: &Snapshot) -> bool {
    snap.companies
        .iter()
        .any(|c| c.rolling.iter().any(Option::is_some))
}

// ---------------------------------------------------------------------------
// HTML.

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

fn head(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>",
        escape_html(title)
    );
}

fn foot(out: &mut String) {
    let _ = writeln!(
        out,
        "<footer>openrouter-cost-exporter {}. Figures are the ones <code>/metrics</code> \
         serves; this page never calls OpenRouter.</footer>\n</body></html>",
        env!("CARGO_PKG_VERSION")
    );
}

fn nav(out: &mut String, links: &Links<'_>, company: Option<&str>) {
    out.push_str("<nav>");
    if company.is_some() {
        out.push_str("<a href=\"/\">← All companies</a>");
    }
    let _ = write!(
        out,
        "<a href=\"{}\">Metrics</a><a href=\"/healthz\">Health</a><a href=\"/readyz\">Readiness</a>\
         <a href=\"/companies.csv\">CSV</a>",
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
fn freshness(out: &mut String, published: &Published, config: &Config, now: DateTime<Utc>) {
    let status: Option<&Status> = published.status.as_ref();
    let Some(snap) = published.snapshot.as_deref() else {
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
        return;
    };
    let age = (now - snap.taken_at).num_seconds();
    let max_age = config
        .refresh_interval
        .saturating_mul(config.stale_after_intervals)
        .as_secs();
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
    let _ = write!(
        out,
        "Data from <time datetime=\"{}\">{}</time>, {} old (refreshed every {}). ",
        snap.taken_at.to_rfc3339(),
        format_time(snap.taken_at),
        format_age(age),
        humantime::format_duration(config.refresh_interval)
    );
    match status {
        Some(s) if s.up => {
            out.push_str("Last refresh <strong>succeeded</strong>");
            match s.last_duration_seconds {
                Some(d) if d < 1.0 => {
                    let _ = write!(out, " in {:.0} ms", d * 1000.0);
                }
                Some(d) => {
                    let _ = write!(out, " in {d:.1} s");
                }
                None => {}
            }
            out.push('.');
        }
        Some(_) => out.push_str(
            "Last refresh <strong>failed</strong>: the figures are those of the last good one \
             (see <code>openrouter_refresh_failures_total</code> and the log).",
        ),
        None => {}
    }
    if let Some(s) = status {
        if s.account_up == Some(false) {
            out.push_str(" Account credits could not be read.");
        }
        if let Some(a) = s.activity {
            if !a.up && a.last_success.is_some() {
                out.push_str(" The last activity run failed; rolling windows and models are from the one before.");
            }
        }
    }
    out.push_str("</p>\n");
}

fn money_cell(out: &mut String, value: Option<Usd>, window: &str) {
    match value {
        Some(v) => {
            let _ = write!(
                out,
                "<td class=\"num\" data-label=\"{}\" data-window=\"{window}\" data-usd=\"{v}\">{}</td>",
                window_label(window),
                format_usd(v)
            );
        }
        None => {
            let _ = write!(
                out,
                "<td class=\"num unknown\" data-label=\"{}\" data-window=\"{window}\" title=\"not known\">—</td>",
                window_label(window)
            );
        }
    }
}

/// The column heading of a window (`daily`, …, `rolling_30d`).
fn window_label(window: &str) -> &'static str {
    match window {
        "daily" => "Today",
        "weekly" => "This week",
        "monthly" => "This month",
        "lifetime" => "Lifetime",
        "rolling_7d" => "Last 7 days",
        "rolling_30d" => "Last 30 days",
        _ => "",
    }
}

fn budget_label(window: Window) -> &'static str {
    match window {
        Window::Daily => "Today",
        Window::Weekly => "Week",
        Window::Monthly => "Month",
        Window::Lifetime => "Lifetime",
    }
}

fn budget_cell(out: &mut String, row: &Row) {
    out.push_str("<td class=\"budgets\" data-label=\"Budgets\">");
    let budgets = row.budgets();
    if budgets.is_empty() {
        out.push_str("<span class=\"muted\">none set</span>");
    }
    for (window, budget, used) in budgets {
        let budget_text = format_f64_usd(budget).unwrap_or_else(|| "—".to_string());
        let Some(used) = used else {
            let _ = write!(
                out,
                "<div class=\"budget unknown\" data-window=\"{}\">{} ? / {budget_text} (spend not known)</div>",
                window.as_str(),
                budget_label(window)
            );
            continue;
        };
        let state = BudgetState::of(used, budget);
        let share = ratio(used, budget);
        let width = share.map_or(100.0, |r| (r * 100.0).clamp(0.0, 100.0));
        let percent = share.map_or_else(|| "—".to_string(), |r| format!("{:.0} %", r * 100.0));
        let _ = write!(
            out,
            "<div class=\"budget {}\" data-window=\"{}\" data-ratio=\"{}\">{} {} / {budget_text} · {percent}",
            state.as_str(),
            window.as_str(),
            share.map_or_else(String::new, |r| format!("{r:.4}")),
            budget_label(window),
            format_usd(used),
        );
        if state != BudgetState::Ok {
            let _ = write!(out, " <strong>{}</strong>", state.words());
        }
        let _ = write!(
            out,
            "<span class=\"bar\" role=\"img\" aria-label=\"{percent} of the budget\">\
             <span class=\"fill\" style=\"width:{width:.1}%\"></span></span></div>"
        );
    }
    out.push_str("</td>");
}

fn windows_header(out: &mut String, rolling: bool) {
    out.push_str(
        "<th scope=\"col\" class=\"num\">Today</th><th scope=\"col\" class=\"num\">This week</th>\
         <th scope=\"col\" class=\"num\">This month</th><th scope=\"col\" class=\"num\">Lifetime</th>",
    );
    if rolling {
        out.push_str(
            "<th scope=\"col\" class=\"num\">Last 7 days</th><th scope=\"col\" class=\"num\">Last 30 days</th>",
        );
    }
}

fn window_cells(out: &mut String, usage: &[Option<Usd>; 4], rolling: Option<&[Option<Usd>; 2]>) {
    for (window, value) in Window::ALL.iter().zip(usage) {
        money_cell(out, *value, window.as_str());
    }
    if let Some(rolling) = rolling {
        for ((window, _), value) in ROLLING.iter().zip(rolling) {
            money_cell(out, *value, window);
        }
    }
}

fn company_row(out: &mut String, row: &Row, class: &str, note: &str, rolling: bool) {
    let state = row.budget_state();
    let _ = write!(
        out,
        "<tr class=\"{class}\" data-company=\"{}\" data-budget-state=\"{}\"><th scope=\"row\">\
         <a href=\"/company/{}\">{}</a>{note}</th>",
        escape_html(&row.name),
        state.as_str(),
        percent_encode(&row.name),
        escape_html(&row.name),
    );
    window_cells(out, &row.usage, rolling.then_some(&row.rolling));
    budget_cell(out, row);
    let _ = write!(
        out,
        "<td class=\"num\" data-label=\"Keys\">{}</td>",
        format_count(row.keys)
    );
    match &row.top_model {
        Some((model, share)) => {
            let _ = write!(
                out,
                "<td class=\"model\" data-label=\"Top model, 30 days\" title=\"{0}\">{0}",
                escape_html(model)
            );
            if let Some(share) = share {
                let _ = write!(out, " <small>{:.0} %</small>", share * 100.0);
            }
            out.push_str("</td>");
        }
        None => out.push_str("<td class=\"unknown\" data-label=\"Top model, 30 days\">—</td>"),
    }
    out.push_str("</tr>\n");
}

/// `/`: the companies table.
pub fn index(
    published: &Published,
    config: &Config,
    links: &Links<'_>,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    head(&mut out, "OpenRouter costs by company");
    out.push_str("<header><h1>OpenRouter costs by company</h1>\n");
    nav(&mut out, links, None);
    freshness(&mut out, published, config, now);
    let Some(snap) = published.snapshot.as_deref() else {
        out.push_str("</header>\n");
        foot(&mut out);
        return out;
    };
    if let Some(credits) = snap.credits {
        let left = credits.total_credits - credits.total_usage;
        let _ = writeln!(
            out,
            "<p id=\"account\">Account: {} of credits bought, {} used, <strong>{} left</strong>.</p>",
            format_f64_usd(credits.total_credits).unwrap_or_default(),
            format_f64_usd(credits.total_usage).unwrap_or_default(),
            format_f64_usd(left).unwrap_or_default(),
        );
    }
    out.push_str("</header>\n<main>\n");

    let rolling = has_rolling(snap);
    let (rows, unassigned) = sorted_rows(snap);
    out.push_str(
        "<div class=\"scroll\"><table id=\"companies\">\n<caption>US dollars, as OpenRouter reports them \
         (rounded to the cent here; exact in <a href=\"/companies.csv\">the CSV</a>). Today, this week \
         (from Monday) and this month are UTC calendar windows. Sorted by this month's spend. \
         A bar is spend ÷ budget: amber from 80 %, red over 100 %, as the alerts fire. \
         — = not known.</caption>\n<thead><tr><th scope=\"col\">Company</th>",
    );
    windows_header(&mut out, rolling);
    out.push_str(
        "<th scope=\"col\">Budgets</th><th scope=\"col\" class=\"num\">Keys</th>\
         <th scope=\"col\">Top model (30 days)</th></tr></thead>\n<tbody class=\"companies\">\n",
    );
    for row in &rows {
        company_row(&mut out, row, "company", "", rolling);
    }
    if rows.is_empty() {
        out.push_str(
            "<tr><td colspan=\"12\" class=\"muted\">No company is configured.</td></tr>\n",
        );
    }
    out.push_str("</tbody>\n<tbody class=\"other\">\n");
    if let Some(row) = &unassigned {
        company_row(
            &mut out,
            row,
            "unassigned",
            " <small>keys no company claims</small>",
            rolling,
        );
    }
    out.push_str(
        "<tr class=\"unattributed\"><th scope=\"row\">Unattributed account spend \
         <small>deleted or unlisted keys</small></th>",
    );
    for (i, window) in Window::ALL.iter().enumerate() {
        if i == 3 {
            money_cell(&mut out, snap.unattributed_usage, window.as_str());
        } else {
            let _ = write!(
                out,
                "<td class=\"num unknown na\" data-window=\"{}\" title=\"lifetime only\">—</td>",
                window.as_str()
            );
        }
    }
    if rolling {
        out.push_str("<td class=\"num unknown na\">—</td><td class=\"num unknown na\">—</td>");
    }
    out.push_str("<td></td><td></td><td></td></tr>\n</tbody>\n<tfoot>\n");
    let total = total_row(snap);
    let _ = write!(
        out,
        "<tr class=\"total\"><th scope=\"row\">{}</th>",
        escape_html(&total.name)
    );
    window_cells(&mut out, &total.usage, rolling.then_some(&total.rolling));
    let _ = writeln!(
        out,
        "<td></td><td class=\"num\" data-label=\"Keys\">{}</td><td></td></tr>\n</tfoot>\n</table></div>",
        format_count(total.keys)
    );
    out.push_str("</main>\n");
    foot(&mut out);
    out
}

/// One key on a company page.
struct KeyRow<'a> {
    key: &'a Key,
    rolling: Option<&'a [Option<f64>; 2]>,
    /// `Some(up)` for a direct key.
    direct: Option<bool>,
}

fn key_money(value: Option<f64>) -> Option<Usd> {
    value.and_then(Usd::from_f64)
}

fn key_state(out: &mut String, row: &KeyRow<'_>, now: DateTime<Utc>) {
    let mut flags: Vec<String> = Vec::new();
    if row.key.disabled == Some(true) {
        flags.push("<span class=\"flag over\">disabled</span>".to_string());
    }
    if let Some(ts) = row.key.expires_at {
        let date = DateTime::from_timestamp(ts, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| ts.to_string());
        let left = ts - now.timestamp();
        if left <= 0 {
            flags.push(format!("<span class=\"flag over\">expired {date}</span>"));
        } else if left <= EXPIRY_WARNING_SECONDS {
            flags.push(format!(
                "<span class=\"flag warning\">expires {date} (in {})</span>",
                format_age(left)
            ));
        } else {
            flags.push(format!("expires {date}"));
        }
    } else if row.key.expiry_unreadable {
        flags.push("<span class=\"muted\">expiry unreadable</span>".to_string());
    }
    match row.direct {
        Some(true) => flags.push("direct key".to_string()),
        Some(false) => {
            flags.push("<span class=\"flag over\">direct key: last poll failed</span>".to_string())
        }
        None => {}
    }
    if flags.is_empty() {
        flags.push(if row.key.disabled == Some(false) {
            "active".to_string()
        } else {
            "<span class=\"muted\">—</span>".to_string()
        });
    }
    let _ = write!(out, "<td data-label=\"State\">{}</td>", flags.join(", "));
}

/// `/company/<name>` (`name` already percent-decoded): the company's keys and model mix.
pub fn company(
    published: &Published,
    config: &Config,
    links: &Links<'_>,
    name: &str,
    now: DateTime<Utc>,
) -> Page {
    let mut out = String::with_capacity(16 * 1024);
    let snap = published.snapshot.as_deref();
    let index = snap.and_then(|s| s.companies.iter().position(|c| c.name == name));
    let title = format!("{name}: OpenRouter costs");
    head(&mut out, &title);
    let _ = writeln!(out, "<header><h1 id=\"company\">{}</h1>", escape_html(name));
    nav(&mut out, links, Some(name));
    freshness(&mut out, published, config, now);
    out.push_str("</header>\n<main>\n");
    let (Some(snap), Some(index)) = (snap, index) else {
        let found = snap.is_none();
        if !found {
            out.push_str("<p>No company by this name. <a href=\"/\">All companies</a>.</p>\n");
        }
        out.push_str("</main>\n");
        foot(&mut out);
        // Before the first refresh nothing is known yet: not an error of the URL.
        return if found {
            Page::Found(out)
        } else {
            Page::NotFound(out)
        };
    };
    let totals = &snap.companies[index];
    let unassigned = index + 1 == snap.companies.len();
    if unassigned {
        out.push_str(
            "<p class=\"muted\">Keys that no company's selector in the config claims.</p>\n",
        );
    }
    let rolling = has_rolling(snap);
    let row = Row::of(totals);
    out.push_str(
        "<div class=\"scroll\"><table id=\"summary\"><thead><tr><th scope=\"col\">Company</th>",
    );
    windows_header(&mut out, rolling);
    out.push_str("<th scope=\"col\">Budgets</th><th scope=\"col\" class=\"num\">Keys</th><th scope=\"col\">Top model (30 days)</th></tr></thead><tbody>\n");
    company_row(&mut out, &row, "company", "", rolling);
    out.push_str("</tbody></table></div>\n");

    // Its keys: listed ones, then direct ones not also listed.
    let mut keys: Vec<KeyRow<'_>> = snap
        .company_of_key
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == index)
        .filter(|(i, _)| !snap.is_listed_as_direct(*i))
        .filter_map(|(i, _)| {
            snap.keys().get(i).map(|key| KeyRow {
                key,
                rolling: snap.key_rolling.get(i),
                direct: None,
            })
        })
        .collect();
    keys.extend(
        snap.direct
            .iter()
            .filter(|d| d.company == index)
            .filter_map(|d| d.key.as_ref().map(|k| (k, d.up)))
            .map(|(key, up)| KeyRow {
                key,
                rolling: None,
                direct: Some(up),
            }),
    );
    keys.sort_by(|a, b| {
        let (x, y) = (a.key.usage[2], b.key.usage[2]);
        y.partial_cmp(&x)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.key.name.cmp(&b.key.name))
    });
    let shown = keys.len().min(MAX_KEY_ROWS);
    let _ = writeln!(out, "<h2>Keys ({})</h2>", format_count(keys.len() as u64));
    if shown < keys.len() {
        let _ = writeln!(
            out,
            "<p class=\"muted\">The {shown} biggest spenders this month are listed; <a href=\"{}\">/metrics</a> has every key.</p>",
            escape_html(links.metrics)
        );
    }
    out.push_str("<div class=\"scroll\"><table id=\"keys\"><thead><tr><th scope=\"col\">Key</th>");
    windows_header(&mut out, rolling);
    out.push_str(
        "<th scope=\"col\" class=\"num\">Limit</th><th scope=\"col\" class=\"num\">Remaining</th>\
         <th scope=\"col\">OpenRouter caps</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Masked key</th><th scope=\"col\">Workspace</th></tr></thead><tbody>\n",
    );
    for row in keys.iter().take(shown) {
        let k = row.key;
        let _ = write!(
            out,
            "<tr class=\"key\" data-key-hash=\"{}\"><th scope=\"row\">{}</th>",
            escape_html(&k.hash),
            escape_html(&k.name)
        );
        let usage = k.usage.map(key_money);
        let key_rolling = row
            .rolling
            .map(|r| r.map(key_money))
            .unwrap_or([None, None]);
        window_cells(&mut out, &usage, rolling.then_some(&key_rolling));
        match k.limit.and_then(format_f64_usd) {
            Some(limit) => {
                let _ = write!(
                    out,
                    "<td class=\"num\" data-label=\"Limit\">{limit} <small>{}</small></td>",
                    escape_html(k.limit_reset.as_deref().unwrap_or("never resets"))
                );
            }
            None => out.push_str("<td class=\"num muted\" data-label=\"Limit\">no limit</td>"),
        }
        match k.limit_remaining.and_then(Usd::from_f64) {
            Some(left) => {
                let class = if left <= Usd::ZERO {
                    " flag over"
                } else if k.limit.is_some_and(|l| l > 0.0 && dollars(left) / l < 0.1) {
                    " flag warning"
                } else {
                    ""
                };
                let _ = write!(
                    out,
                    "<td class=\"num{class}\" data-label=\"Remaining\" data-usd=\"{left}\">{}</td>",
                    format_usd(left)
                );
            }
            None => out.push_str("<td class=\"num unknown\" data-label=\"Remaining\">—</td>"),
        }
        // What OpenRouter itself enforces besides the key's limit: guardrail
        // caps on the key, and its workspace's budgets (read at a slower cadence).
        let org = &snap.organization;
        let caps: Vec<String> = org
            .key_caps(&k.hash)
            .into_iter()
            .map(|c| (format!("guardrail {}", c.name), c))
            .chain(
                org.budgets_of(k.workspace_id.as_deref())
                    .iter()
                    .map(|c| ("workspace budget".to_string(), c)),
            )
            .filter_map(|(what, c)| {
                let amount = format_f64_usd(c.limit_usd)?;
                Some(format!(
                    "{} {amount} <small>{}</small>",
                    escape_html(&what),
                    escape_html(&c.reset)
                ))
            })
            .collect();
        if caps.is_empty() {
            out.push_str("<td class=\"muted\" data-label=\"OpenRouter caps\">none known</td>");
        } else {
            let _ = write!(
                out,
                "<td data-label=\"OpenRouter caps\">{}</td>",
                caps.join("<br>")
            );
        }
        key_state(&mut out, row, now);
        let _ = writeln!(
            out,
            "<td data-label=\"Masked key\"><code>{0}</code></td><td class=\"ws\" data-label=\"Workspace\" title=\"{1}\">{1}</td></tr>",
            escape_html(&k.label),
            escape_html(k.workspace_id.as_deref().unwrap_or("default"))
        );
    }
    if keys.is_empty() {
        out.push_str("<tr><td colspan=\"12\" class=\"muted\">No key is attributed to this company.</td></tr>\n");
    }
    out.push_str("</tbody></table></div>\n");

    out.push_str("<h2>Model mix, last 30 completed days</h2>\n");
    match &totals.models {
        Some(models) if !models.is_empty() => {
            let total: i128 = models.iter().map(|(_, m)| m.usage.nanos()).sum();
            out.push_str(
                "<div class=\"scroll\"><table id=\"models\"><thead><tr><th scope=\"col\">Model</th>\
                 <th scope=\"col\" class=\"num\">Spend</th><th scope=\"col\" class=\"num\">Share</th>\
                 <th scope=\"col\" class=\"num\">Requests</th><th scope=\"col\" class=\"num\">Prompt tokens</th>\
                 <th scope=\"col\" class=\"num\">Completion tokens</th><th scope=\"col\" class=\"num\">Reasoning tokens</th>\
                 </tr></thead><tbody>\n",
            );
            for (model, m) in models {
                let share = if total > 0 {
                    format!("{:.1} %", m.usage.nanos() as f64 * 100.0 / total as f64)
                } else {
                    "—".to_string()
                };
                let _ = write!(
                    out,
                    "<tr class=\"model-row\"><th scope=\"row\" class=\"model\">{}</th>",
                    escape_html(model)
                );
                money_cell(&mut out, Some(m.usage), "rolling_30d");
                let _ = writeln!(
                    out,
                    "<td class=\"num\" data-label=\"Share\">{share}</td><td class=\"num\" data-label=\"Requests\">{}</td>\
                     <td class=\"num\" data-label=\"Prompt tokens\">{}</td><td class=\"num\" data-label=\"Completion tokens\">{}</td>\
                     <td class=\"num\" data-label=\"Reasoning tokens\">{}</td></tr>",
                    format_count(m.requests),
                    format_count(m.prompt_tokens),
                    format_count(m.completion_tokens),
                    format_count(m.reasoning_tokens),
                );
            }
            out.push_str("</tbody></table></div>\n");
        }
        Some(_) => out.push_str("<p class=\"muted\">No activity in the last 30 days.</p>\n"),
        None => out.push_str(
            "<p class=\"muted\">Not known: activity collection is off (<code>activity.enabled</code>), \
             has not completed yet, or covers direct keys, which have no activity.</p>\n",
        ),
    }
    out.push_str("</main>\n");
    foot(&mut out);
    Page::Found(out)
}

// ---------------------------------------------------------------------------
// CSV.

/// The header of `/companies.csv`.
pub const CSV_HEADER: &str = "row,company,keys,daily_usd,weekly_usd,monthly_usd,lifetime_usd,\
rolling_7d_usd,rolling_30d_usd,budget_daily_usd,budget_weekly_usd,budget_monthly_usd,top_model,data_as_of";

fn csv_usd(out: &mut String, value: Option<Usd>) {
    out.push(',');
    if let Some(v) = value {
        let _ = write!(out, "{v}");
    }
}

fn csv_row(out: &mut String, kind: &str, row: &Row, as_of: &str) {
    let _ = write!(out, "{kind},{},{}", csv_text(&row.name), row.keys);
    for v in row.usage.iter().chain(&row.rolling) {
        csv_usd(out, *v);
    }
    for b in [row.budget.daily, row.budget.weekly, row.budget.monthly] {
        csv_usd(out, b.and_then(Usd::from_f64));
    }
    out.push(',');
    if let Some((model, _)) = &row.top_model {
        out.push_str(&csv_text(model));
    }
    let _ = writeln!(out, ",{as_of}\r");
}

/// `/companies.csv`: the companies table with exact US dollar amounts
/// (empty = not known). `None` before the first successful refresh.
pub fn companies_csv(published: &Published) -> Option<String> {
    let snap = published.snapshot.as_deref()?;
    let as_of = snap.taken_at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut out = String::with_capacity(256 * (snap.companies.len() + 3));
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    let (rows, unassigned) = sorted_rows(snap);
    for row in &rows {
        csv_row(&mut out, "company", row, &as_of);
    }
    if let Some(row) = &unassigned {
        csv_row(&mut out, "unassigned", row, &as_of);
    }
    let unattributed = Row {
        name: "unattributed account spend".to_string(),
        keys: 0,
        usage: [None, None, None, snap.unattributed_usage],
        rolling: [None; 2],
        budget: Budget::default(),
        top_model: None,
    };
    csv_row(&mut out, "unattributed", &unattributed, &as_of);
    csv_row(&mut out, "total", &total_row(snap), &as_of);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(v: f64) -> Usd {
        Usd::from_f64(v).unwrap_or(Usd::ZERO)
    }

    #[test]
    fn money_rounds_to_the_cent_with_separators() {
        assert_eq!(format_usd(usd(1184.2)), "$1,184.20");
        assert_eq!(format_usd(usd(0.004)), "$0.00");
        assert_eq!(format_usd(usd(0.005)), "$0.01");
        assert_eq!(format_usd(usd(-3.049)), "-$3.05");
        assert_eq!(format_usd(usd(-0.001)), "$0.00");
        assert_eq!(format_usd(usd(1234567.891)), "$1,234,567.89");
        assert_eq!(format_usd(usd(100.0)), "$100.00");
    }

    #[test]
    fn budget_states_follow_the_alert_thresholds() {
        assert_eq!(BudgetState::of(usd(79.99), 100.0), BudgetState::Ok);
        assert_eq!(BudgetState::of(usd(80.0), 100.0), BudgetState::Warning);
        assert_eq!(BudgetState::of(usd(100.0), 100.0), BudgetState::Warning);
        assert_eq!(BudgetState::of(usd(100.01), 100.0), BudgetState::Over);
        assert_eq!(BudgetState::of(usd(0.0), 0.0), BudgetState::Ok);
        assert_eq!(BudgetState::of(usd(0.01), 0.0), BudgetState::Over);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(csv_text("=1+2"), "\"'=1+2\"");
        assert_eq!(csv_text("a \"b\", c"), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_text("-x"), "\"'-x\"");
        assert_eq!(csv_text("plain"), "\"plain\"");
    }

    #[test]
    fn percent_round_trip() {
        for s in ["acme", "a b/c?d#e%f", "<script>", "Ünïcode & co"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
