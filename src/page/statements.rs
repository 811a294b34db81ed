//! Statements from the ledger, for invoicing: `/statements` (the months
//! held), `/statements/YYYY-MM` (every company's exact spend that month) and
//! `/statements/YYYY-MM/<company>` (its keys and models), as HTML here and
//! as CSV in `statements/csv.rs`; the company page's daily chart in
//! `statements/chart.rs`.
//!
//! Amounts are exact (every nano-dollar, never rounded); a `billed` column,
//! present when a company has a markup, is rounded to the cent per line
//! ([`Markup::billed`]). Every name goes through [`escape_html`].

mod chart;
mod csv;

use std::fmt::Write as _;

use super::format::{escape_html, format_count, percent_encode};
use super::layout::{foot, head, nav};
use super::Links;
use crate::ledger::{
    CompanyStatement, KeyLine, Markup, Month, MonthStatus, PeriodStatus, Spend, Statement,
};
use crate::money::Usd;

pub use self::chart::daily_chart_svg;
pub use self::csv::{
    company_statement_csv, statement_csv, COMPANY_STATEMENT_CSV_HEADER, STATEMENT_CSV_HEADER,
};

/// `/statements`: the months the ledger holds, newest first.
pub fn statements_index(months: &[MonthStatus], links: &Links<'_>) -> String {
    let mut out = String::with_capacity(4096);
    page_top(&mut out, "Statements", links);
    out.push_str(
        "<p class=\"muted\">Each month's spend per company from the ledger: exact, from OpenRouter's \
         per-key daily activity, kept after keys are deleted. A month is <strong>final</strong> once \
         every day of it is settled (read at least 6 h after the day ended).</p>\n",
    );
    if months.is_empty() {
        out.push_str("<p>The ledger holds no day yet: the first days arrive with the first activity run.</p>\n");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table id=\"months\"><thead><tr><th scope=\"col\">Month</th>\
             <th scope=\"col\">Status</th><th scope=\"col\" class=\"num\">Days settled</th>\
             <th scope=\"col\">CSV</th></tr></thead><tbody>\n",
        );
        for m in months {
            let _ = writeln!(
                out,
                "<tr data-month=\"{0}\" data-status=\"{1}\"><th scope=\"row\"><a href=\"/statements/{0}\">{2}</a></th>\
                 <td data-label=\"Status\">{1}</td><td class=\"num\" data-label=\"Days settled\">{3} of {4}</td>\
                 <td data-label=\"CSV\"><a href=\"/statements/{0}.csv\">{0}.csv</a></td></tr>",
                m.month,
                m.status.as_str(),
                m.month.title(),
                m.days_settled,
                m.month.days().len()
            );
        }
        out.push_str("</tbody></table></div>\n");
    }
    out.push_str("</main>\n");
    foot(&mut out);
    out
}

/// `/statements/YYYY-MM`: every company's spend in `month`, the unassigned
/// keys, the account spend no key explains, the total and the account's bill.
/// `markup` gives a company's markup (`billing.markup_percent`), if any.
pub fn month_statement(
    st: &Statement,
    month: Month,
    unassigned: &str,
    markup: &dyn Fn(&str) -> Option<Markup>,
    links: &Links<'_>,
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    page_top(&mut out, &format!("Statement: {}", month.title()), links);
    status_line(&mut out, st.status, st.days_settled, st.range.len());
    let _ = writeln!(
        out,
        "<p><a href=\"/statements/{month}.csv\">CSV</a> · <a href=\"/statements/{}\">← {}</a> · \
         <a href=\"/statements/{}\">{} →</a> · <a href=\"/statements\">All months</a></p>",
        month.previous(),
        month.previous().title(),
        month.next(),
        month.next().title()
    );
    let billed = st.companies.iter().any(|c| markup(&c.company).is_some());
    out.push_str(
        "<div class=\"scroll\"><table id=\"statement\">\n<caption>US dollars, exact to the nano-dollar \
         (never rounded); the billed column, when a company has a markup, is rounded to the cent, half to \
         even. Days settled: days on which every key of the company is settled.</caption>\n<thead><tr>\
         <th scope=\"col\">Company</th>",
    );
    spend_header(&mut out, billed);
    out.push_str(
        "<th scope=\"col\" class=\"num\">Keys</th><th scope=\"col\" class=\"num\">Days settled</th>\
         <th scope=\"col\">Status</th></tr></thead>\n<tbody class=\"companies\">\n",
    );
    let mut billed_total: Option<Usd> = None;
    let (unassigned_rows, companies): (Vec<_>, Vec<_>) =
        st.companies.iter().partition(|c| c.company == unassigned);
    let rows = companies.iter().map(|c| (c, "company"));
    for (c, class) in rows.chain(unassigned_rows.iter().map(|c| (c, "unassigned"))) {
        let bill = markup(&c.company).and_then(|m| m.billed(c.spend.usage));
        billed_total = sum_billed(billed_total, bill);
        let _ = write!(
            out,
            "<tr class=\"{class}\" data-company=\"{0}\"><th scope=\"row\"><a href=\"/statements/{month}/{1}\">{0}</a></th>",
            escape_html(&c.company),
            percent_encode(&c.company)
        );
        spend_cells(&mut out, &c.spend, billed.then_some(bill));
        count_cells(&mut out, c.keys, c.days_settled, st.range.len(), c.status);
    }
    out.push_str("</tbody>\n<tfoot>\n");
    let _ = write!(
        out,
        "<tr class=\"total\"><th scope=\"row\">Total, all keys</th>"
    );
    spend_cells(&mut out, &st.total, billed.then_some(billed_total));
    count_cells(
        &mut out,
        st.total_keys,
        st.days_settled,
        st.range.len(),
        st.status,
    );
    account_rows(&mut out, st, billed);
    out.push_str("</tfoot>\n</table></div>\n</main>\n");
    foot(&mut out);
    out
}

/// The unattributed line and the account's own spend, which tie the
/// statement to what OpenRouter billed.
fn account_rows(out: &mut String, st: &Statement, billed: bool) {
    let columns = if billed { 5 } else { 4 };
    let _ = writeln!(
        out,
        "<tr class=\"unattributed\"><th scope=\"row\">Unattributed account spend <small>keys the ledger \
         never saw, days it could not read</small></th>{}<td colspan=\"{columns}\" class=\"na\"></td>\
         <td data-label=\"Status\">{}</td></tr>",
        money_cell(st.unattributed(), "Usage"),
        account_status(st).as_str()
    );
    let a = &st.account;
    let _ = writeln!(
        out,
        "<tr class=\"account\"><th scope=\"row\">OpenRouter account <small>what OpenRouter billed: \
         the total plus the unattributed spend</small></th>{}{}<td class=\"num\" data-label=\"Requests\">{}</td>\
         <td colspan=\"{}\" class=\"na\"></td><td class=\"num\" data-label=\"Days settled\">{} of {}</td>\
         <td data-label=\"Status\">{}</td></tr>",
        money_cell((a.days_read > 0).then_some(a.usage), "Usage"),
        money_cell((a.days_read > 0).then_some(a.byok_usage), "BYOK"),
        format_count(a.requests),
        columns - 3,
        a.days_settled,
        st.range.len(),
        account_status(st).as_str()
    );
}

/// The account line's status: that of its days.
pub(super) fn account_status(st: &Statement) -> PeriodStatus {
    match st.status {
        PeriodStatus::Open => PeriodStatus::Open,
        _ if st.account.days_settled >= st.range.len() => PeriodStatus::Final,
        _ => PeriodStatus::Provisional,
    }
}

/// `/statements/YYYY-MM/<company>`: its keys (departed ones marked) and models.
pub fn company_statement(
    cs: &CompanyStatement,
    month: Month,
    markup: Option<Markup>,
    links: &Links<'_>,
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    page_top(
        &mut out,
        &format!("{}: statement {}", cs.company, month.title()),
        links,
    );
    status_line(&mut out, cs.status, cs.days_settled, cs.range.len());
    let enc = percent_encode(&cs.company);
    let _ = write!(
        out,
        "<p><a href=\"/statements/{month}/{enc}.csv\">CSV</a> · <a href=\"/statements/{month}\">All companies, {}</a> · \
         <a href=\"/company/{enc}\">Company page</a></p>\n<p id=\"company-total\">Spend: <strong>{}</strong>",
        month.title(),
        exact_usd(cs.spend.usage)
    );
    if let Some(m) = markup {
        let bill = m
            .billed(cs.spend.usage)
            .map_or_else(|| "—".to_string(), exact_usd);
        let _ = write!(out, " · billed with a {m} markup: <strong>{bill}</strong>");
    }
    out.push_str("</p>\n");
    keys_table(&mut out, cs, markup);
    models_table(&mut out, cs, markup);
    out.push_str("</main>\n");
    foot(&mut out);
    out
}

fn keys_table(out: &mut String, cs: &CompanyStatement, markup: Option<Markup>) {
    out.push_str("<h2>Keys</h2>\n<div class=\"scroll\"><table id=\"keys\"><caption>Every key with a day attributed to the company this month, departed keys included. Billed amounts are rounded per line, so they may differ from the billed total by rounding.</caption><thead><tr><th scope=\"col\">Key</th>");
    spend_header(out, markup.is_some());
    out.push_str("<th scope=\"col\" class=\"num\">Days settled</th><th scope=\"col\">Status</th></tr></thead><tbody>\n");
    for k in &cs.keys {
        let _ = write!(
            out,
            "<tr class=\"key{}\" data-hash=\"{}\"><th scope=\"row\">{}</th>",
            if k.departed.is_some() {
                " departed"
            } else {
                ""
            },
            escape_html(&k.hash),
            key_title(k)
        );
        spend_cells(out, &k.spend, markup.map(|m| m.billed(k.spend.usage)));
        let _ = writeln!(
            out,
            "<td class=\"num\" data-label=\"Days settled\">{} of {}</td><td data-label=\"Status\">{}</td></tr>",
            k.days_settled,
            cs.range.len(),
            k.status.as_str()
        );
    }
    if cs.keys.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">No key this month.</td></tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// A key's name, masked label, workspace and departure, escaped.
fn key_title(k: &KeyLine) -> String {
    let mut t = escape_html(if k.name.is_empty() { &k.hash } else { &k.name });
    if !k.label.is_empty() {
        let _ = write!(t, " <small>{}</small>", escape_html(&k.label));
    }
    if let Some(ws) = &k.workspace {
        let _ = write!(t, " <small>workspace {}</small>", escape_html(ws));
    }
    if let Some(d) = &k.departed {
        let _ = write!(
            t,
            " <span class=\"flag warning\">{} {}</span>",
            escape_html(&d.reason),
            d.on
        );
    }
    t
}

fn models_table(out: &mut String, cs: &CompanyStatement, markup: Option<Markup>) {
    out.push_str("<h2>Models</h2>\n<div class=\"scroll\"><table id=\"models\"><thead><tr><th scope=\"col\" class=\"model\">Model</th>");
    spend_header(out, markup.is_some());
    out.push_str("<th scope=\"col\" class=\"num\">Prompt tokens</th><th scope=\"col\" class=\"num\">Completion tokens</th></tr></thead><tbody>\n");
    for m in &cs.models {
        let _ = write!(
            out,
            "<tr><th scope=\"row\" class=\"model\" title=\"{0}\">{0}</th>",
            escape_html(&m.model)
        );
        spend_cells(out, &m.spend, markup.map(|mk| mk.billed(m.spend.usage)));
        let _ = writeln!(
            out,
            "<td class=\"num\" data-label=\"Prompt tokens\">{}</td><td class=\"num\" data-label=\"Completion tokens\">{}</td></tr>",
            format_count(m.spend.prompt_tokens),
            format_count(m.spend.completion_tokens)
        );
    }
    out.push_str("</tbody></table></div>\n");
}

/// `/statements…` answered 503: the ledger could not be opened (the reason,
/// e.g. held by another process); `/metrics` is unaffected.
pub fn ledger_unavailable(reason: &str, links: &Links<'_>) -> String {
    let mut out = String::with_capacity(2048);
    page_top(&mut out, "Statements unavailable", links);
    let _ = writeln!(
        out,
        "<p class=\"status failed\"><strong>The ledger is not available</strong>: {}. \
         Statements need it; <code>/metrics</code> and the other pages keep working.</p>\n</main>",
        escape_html(reason)
    );
    foot(&mut out);
    out
}

fn page_top(out: &mut String, title: &str, links: &Links<'_>) {
    head(out, title);
    let _ = writeln!(out, "<header><h1>{}</h1>", escape_html(title));
    nav(out, links, None);
    out.push_str("</header>\n<main>\n");
}

/// How final the figures are, in words.
fn status_line(out: &mut String, status: PeriodStatus, settled: u32, days: u32) {
    let (class, words) = match status {
        PeriodStatus::Final => ("ok", "<strong>Final</strong>: every day is settled; these figures will not change."),
        PeriodStatus::Provisional => ("nodata", "<strong>Provisional</strong>: some days are not settled yet (read less than 6 h after they ended, not read, or before the ledger began)."),
        PeriodStatus::Open => ("nodata", "<strong>Open</strong>: the period is not over; spend is still coming in."),
    };
    let _ = writeln!(
        out,
        "<p id=\"status\" class=\"status {class}\" data-status=\"{}\">{words} {settled} of {days} days settled.</p>",
        status.as_str()
    );
}

fn spend_header(out: &mut String, billed: bool) {
    out.push_str(
        "<th scope=\"col\" class=\"num\">Usage</th><th scope=\"col\" class=\"num\">BYOK</th>\
         <th scope=\"col\" class=\"num\">Requests</th>",
    );
    if billed {
        out.push_str("<th scope=\"col\" class=\"num\">Billed</th>");
    }
}

/// Usage, BYOK, requests and (when the table has it) billed; `Some(None)`
/// is a line without a markup (or whose billed amount overflowed).
fn spend_cells(out: &mut String, spend: &Spend, billed: Option<Option<Usd>>) {
    out.push_str(&money_cell(Some(spend.usage), "Usage"));
    out.push_str(&money_cell(Some(spend.byok_usage), "BYOK"));
    let _ = write!(
        out,
        "<td class=\"num\" data-label=\"Requests\">{}</td>",
        format_count(spend.requests)
    );
    if let Some(billed) = billed {
        out.push_str(&money_cell(billed, "Billed"));
    }
}

fn count_cells(out: &mut String, keys: u64, settled: u32, days: u32, status: PeriodStatus) {
    let _ = writeln!(
        out,
        "<td class=\"num\" data-label=\"Keys\">{}</td><td class=\"num\" data-label=\"Days settled\">{settled} of {days}</td>\
         <td data-label=\"Status\">{}</td></tr>",
        format_count(keys),
        status.as_str()
    );
}

fn money_cell(value: Option<Usd>, label: &str) -> String {
    match value {
        Some(v) => format!(
            "<td class=\"num\" data-label=\"{label}\" data-usd=\"{v}\">{}</td>",
            exact_usd(v)
        ),
        None => {
            format!("<td class=\"num unknown\" data-label=\"{label}\" title=\"not known\">—</td>")
        }
    }
}

/// A total of billed lines; unknown once one line is.
fn sum_billed(total: Option<Usd>, line: Option<Usd>) -> Option<Usd> {
    match (total, line) {
        (t, None) => t,
        (None, Some(l)) => Some(l),
        (Some(t), Some(l)) => t.checked_add(l),
    }
}

/// Exact dollars with thousands separators and at least the cents: `$1,184.2012`, `-$3.00`.
pub(super) fn exact_usd(amount: Usd) -> String {
    let text = amount.to_string();
    let (sign, digits) = text
        .strip_prefix('-')
        .map_or(("", text.as_str()), |t| ("-", t));
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}${grouped}.{frac:0<2}")
}

#[cfg(test)]
mod tests;
