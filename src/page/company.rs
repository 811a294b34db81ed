//! `/company/<name>`: one company's row of the companies table, its keys
//! (limits, the caps OpenRouter enforces, state; departed keys marked) and
//! its model mix.

use std::cmp::Ordering;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::format::{escape_html, format_age, format_count, format_f64_usd, format_usd};
use super::layout::{foot, freshness, head, nav};
use super::table::{
    awaiting_note, company_row, has_rolling, money_cell, window_cells, windows_header, Row,
};
use super::{dollars, Links, Page, MONTHLY};
use crate::body::Published;
use crate::config::Config;
use crate::money::Usd;
use crate::snapshot::{CompanyTotals, Key, Organization, PublishedKey, Snapshot, COMPLETED_30D};

/// A company page lists at most this many keys (the biggest spenders this
/// month); the rest are counted, and `/metrics` has them all.
pub const MAX_KEY_ROWS: usize = 1000;
/// A key expiring within this many seconds is flagged, as OpenRouterKeyExpiringSoon does.
const EXPIRY_WARNING_SECONDS: i64 = 7 * 86400;

/// `/company/<name>` (`name` already percent-decoded): the company's keys and model mix.
pub fn company(
    published: &Published,
    config: &Config,
    links: &Links<'_>,
    name: &str,
    now: DateTime<Utc>,
    chart: &str,
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
        return nothing_to_show(out, snap.is_none());
    };
    let rolling = has_rolling(snap);
    summary(&mut out, snap, index, rolling);
    daily_chart(&mut out, chart);
    keys_table(&mut out, snap, index, links, rolling, now);
    model_mix(&mut out, &snap.companies[index]);
    out.push_str("</main>\n");
    foot(&mut out);
    Page::Found(out)
}

/// The daily spend chart from the statements ledger (inline SVG), when there is one.
fn daily_chart(out: &mut String, chart: &str) {
    if chart.is_empty() {
        return;
    }
    out.push_str(
        "<section aria-labelledby=\"daily\"><h2 id=\"daily\">Daily spend, last 30 days</h2>\n",
    );
    out.push_str(chart);
    out.push_str("\n</section>\n");
}

/// Ends a page that has no company to show: none by this name, or no data yet.
fn nothing_to_show(mut out: String, before_first_refresh: bool) -> Page {
    if !before_first_refresh {
        out.push_str("<p>No company by this name. <a href=\"/\">All companies</a>.</p>\n");
    }
    out.push_str("</main>\n");
    foot(&mut out);
    // Before the first refresh nothing is known yet: not an error of the URL.
    if before_first_refresh {
        Page::Found(out)
    } else {
        Page::NotFound(out)
    }
}

/// The company's row of the companies table, under the same headings.
fn summary(out: &mut String, snap: &Snapshot, company: usize, rolling: bool) {
    if company + 1 == snap.companies.len() {
        out.push_str(
            "<p class=\"muted\">Keys that no company's selector in the config claims.</p>\n",
        );
    }
    if let Some(list) = snap.companies[company].awaiting {
        let _ = writeln!(
            out,
            "<p class=\"muted awaiting\">This company's figures are {}: until then, which keys are its \
             is not known (the keys below are those attributed so far).</p>",
            awaiting_note(list)
        );
    }
    let row = Row::of(&snap.companies[company]);
    out.push_str(
        "<div class=\"scroll\"><table id=\"summary\"><thead><tr><th scope=\"col\">Company</th>",
    );
    windows_header(out, rolling);
    out.push_str("<th scope=\"col\">Budgets</th><th scope=\"col\" class=\"num\">Keys</th><th scope=\"col\">Top model (30 days)</th></tr></thead><tbody>\n");
    company_row(out, &row, "company", "", rolling);
    out.push_str("</tbody></table></div>\n");
}

/// The company's keys as `/metrics` publishes them ([`Snapshot::published_keys`]):
/// its listed keys except a direct key's duplicate, then its direct keys that
/// have figures, then its departed keys.
fn company_keys(snap: &Snapshot, company: usize) -> Vec<PublishedKey<'_>> {
    snap.published_keys()
        .filter(|p| p.company == company)
        .collect()
}

/// Biggest spender this month first (unknown last), then by name.
fn by_monthly_spend(a: &PublishedKey<'_>, b: &PublishedKey<'_>) -> Ordering {
    let (x, y) = (a.key.usage[MONTHLY], b.key.usage[MONTHLY]);
    y.partial_cmp(&x)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.key.name.cmp(&b.key.name))
}

/// The keys table, biggest spenders first, at most [`MAX_KEY_ROWS`] rows.
fn keys_table(
    out: &mut String,
    snap: &Snapshot,
    company: usize,
    links: &Links<'_>,
    rolling: bool,
    now: DateTime<Utc>,
) {
    let mut keys = company_keys(snap, company);
    keys.sort_by(by_monthly_spend);
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
    windows_header(out, rolling);
    out.push_str(
        "<th scope=\"col\" class=\"num\">Limit</th><th scope=\"col\" class=\"num\">Remaining</th>\
         <th scope=\"col\">OpenRouter caps</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Masked key</th><th scope=\"col\">Workspace</th></tr></thead><tbody>\n",
    );
    for row in keys.iter().take(shown) {
        key_row(out, &snap.organization, row, rolling, now);
    }
    if keys.is_empty() {
        out.push_str("<tr><td colspan=\"12\" class=\"muted\">No key is attributed to this company.</td></tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

fn key_row(
    out: &mut String,
    org: &Organization,
    row: &PublishedKey<'_>,
    rolling: bool,
    now: DateTime<Utc>,
) {
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
    window_cells(out, &usage, rolling.then_some(&key_rolling));
    if row.departed.is_some() {
        // No longer listed: its limit and caps are no longer known.
        for label in ["Limit", "Remaining", "OpenRouter caps"] {
            let _ = write!(out, "<td class=\"unknown\" data-label=\"{label}\">—</td>");
        }
    } else {
        limit_cell(out, k);
        remaining_cell(out, k);
        caps_cell(out, org, k);
    }
    key_state(out, row, now);
    let _ = writeln!(
        out,
        "<td data-label=\"Masked key\"><code>{0}</code></td><td class=\"ws\" data-label=\"Workspace\" title=\"{1}\">{1}</td></tr>",
        escape_html(&k.label),
        escape_html(k.workspace_id.as_deref().unwrap_or("default"))
    );
}

fn key_money(value: Option<f64>) -> Option<Usd> {
    value.and_then(Usd::from_f64)
}

fn limit_cell(out: &mut String, k: &Key) {
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
}

/// What is left of the key's limit: red when spent, amber under 10 %.
fn remaining_cell(out: &mut String, k: &Key) {
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
}

/// What OpenRouter itself enforces besides the key's limit: guardrail caps
/// on the key, and its workspace's budgets (read at a slower cadence).
fn caps_cell(out: &mut String, org: &Organization, k: &Key) {
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
}

/// The key's state: departed, disabled, expiry, a direct key's last poll, or active.
fn key_state(out: &mut String, row: &PublishedKey<'_>, now: DateTime<Utc>) {
    let mut flags: Vec<String> = Vec::new();
    if let Some(seen) = row.departed {
        flags.push(format!(
            "<span class=\"flag departed\" title=\"no longer listed by OpenRouter; its figures \
             count until each window ends\">departed</span> <small>last listed {}</small>",
            seen.format("%Y-%m-%d %H:%M UTC")
        ));
    }
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
    match row.direct_up {
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

/// The company's spend by model over the last 30 completed days.
fn model_mix(out: &mut String, company: &CompanyTotals) {
    out.push_str("<h2>Model mix, last 30 completed days</h2>\n");
    match &company.models {
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
                // Today excluded: not the companies table's rolling_30d.
                money_cell(out, Some(m.usage), COMPLETED_30D);
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
        Some(_) => out.push_str("<p class=\"muted\">No activity in the last 30 completed days.</p>\n"),
        None => out.push_str(
            "<p class=\"muted\">Not known: activity collection is off (<code>activity.enabled</code>), \
             has not completed yet, or covers direct keys, which have no activity.</p>\n",
        ),
    }
}
