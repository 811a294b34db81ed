//! `/`: every company's spend against its budgets, the unassigned keys, the
//! account spend no listed key explains, and the total; under it, a form for
//! the CSV of any date range from the ledger.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Utc};

use super::format::{escape_html, format_count, format_f64_usd};
use super::layout::{foot, freshness, head, nav};
use super::table::{
    company_row, has_rolling, money_cell, sorted_rows, total_row, window_cells, windows_header,
};
use super::Links;
use crate::body::Published;
use crate::config::Config;
use crate::snapshot::{Snapshot, Window};

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
    credits(&mut out, snap);
    out.push_str("</header>\n<main>\n");
    companies_table(&mut out, snap);
    range_form(&mut out, now);
    out.push_str("</main>\n");
    foot(&mut out);
    out
}

/// A plain GET form (no script: the CSP forbids it) for
/// `/companies.csv?from=…&to=…`, inclusive UTC days from the ledger; it
/// starts at this month so far.
fn range_form(out: &mut String, now: DateTime<Utc>) {
    let today = now.date_naive();
    let first = today.with_day(1).unwrap_or(today);
    let _ = writeln!(
        out,
        "<form id=\"range\" method=\"get\" action=\"/companies.csv\" style=\"margin:16px 0\">\
         <h2>Spend per company over any days</h2>\
         <p class=\"muted\">Exact amounts from the ledger, as CSV; inclusive UTC days. \
         Whole months, with their status, are under <a href=\"/statements\">Statements</a>.</p>\
         <label>From <input type=\"date\" name=\"from\" value=\"{first}\" max=\"{today}\" required></label> \
         <label>to <input type=\"date\" name=\"to\" value=\"{today}\" max=\"{today}\" required></label> \
         <button type=\"submit\">Download CSV</button></form>"
    );
}

/// The account's credits, when OpenRouter reported them.
fn credits(out: &mut String, snap: &Snapshot) {
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
}

/// The configured companies, then the unassigned keys and the unattributed
/// spend, then the total.
fn companies_table(out: &mut String, snap: &Snapshot) {
    let rolling = has_rolling(snap);
    let (rows, unassigned) = sorted_rows(snap);
    out.push_str(
        "<div class=\"scroll\"><table id=\"companies\">\n<caption>US dollars, as OpenRouter reports them \
         (rounded to the cent here; exact in <a href=\"/companies.csv\">the CSV</a>). Today, this week \
         (from Monday) and this month are UTC calendar windows. Sorted by this month's spend. \
         A bar is spend ÷ budget: amber from 80 %, red over 100 %, as the alerts fire. \
         — = not known.</caption>\n<thead><tr><th scope=\"col\">Company</th>",
    );
    windows_header(out, rolling);
    out.push_str(
        "<th scope=\"col\">Budgets</th><th scope=\"col\" class=\"num\">Keys</th>\
         <th scope=\"col\">Top model (30 days)</th></tr></thead>\n<tbody class=\"companies\">\n",
    );
    for row in &rows {
        company_row(out, row, "company", "", rolling);
    }
    if rows.is_empty() {
        out.push_str(
            "<tr><td colspan=\"12\" class=\"muted\">No company is configured.</td></tr>\n",
        );
    }
    out.push_str("</tbody>\n<tbody class=\"other\">\n");
    if let Some(row) = &unassigned {
        company_row(
            out,
            row,
            "unassigned",
            " <small>keys no company claims</small>",
            rolling,
        );
    }
    unattributed_row(out, snap, rolling);
    out.push_str("</tbody>\n<tfoot>\n");
    total_foot(out, snap, rolling);
}

/// Account spend no listed key explains: known for lifetime only.
fn unattributed_row(out: &mut String, snap: &Snapshot, rolling: bool) {
    out.push_str(
        "<tr class=\"unattributed\"><th scope=\"row\">Unattributed account spend \
         <small>deleted or unlisted keys</small></th>",
    );
    for window in Window::ALL {
        if window == Window::Lifetime {
            money_cell(out, snap.unattributed_usage, window.as_str());
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
    out.push_str("<td></td><td></td><td></td></tr>\n");
}

/// The table's foot: every company's spend added up, and the table's end.
fn total_foot(out: &mut String, snap: &Snapshot, rolling: bool) {
    let total = total_row(snap);
    let _ = write!(
        out,
        "<tr class=\"total\"><th scope=\"row\">{}</th>",
        escape_html(&total.name)
    );
    window_cells(out, &total.usage, rolling.then_some(&total.rolling));
    let _ = writeln!(
        out,
        "<td></td><td class=\"num\" data-label=\"Keys\">{}</td><td></td></tr>\n</tfoot>\n</table></div>",
        format_count(total.keys)
    );
}
