//! Statements as CSV with exact amounts: `/statements/YYYY-MM.csv` and
//! `/companies.csv?from=…&to=…` (one row per company, as `/companies.csv`'s
//! `row` column), and `/statements/YYYY-MM/<company>.csv` (per key and model).
//!
//! `markup_percent` and `billed_usd` are added when a company has a markup:
//! `billed_usd` is the usage × (1 + markup/100) rounded to the cent, half to
//! even, per line; the total's is the sum of the company lines.

use std::fmt::Write as _;

use super::super::format::csv_text;
use super::account_status;
use crate::ledger::{CompanyStatement, DayRange, Markup, PeriodStatus, Spend, Statement};
use crate::money::Usd;

/// The header of a statement CSV (without the markup columns).
pub const STATEMENT_CSV_HEADER: &str =
    "row,company,from,to,usage_usd,byok_usage_usd,requests,prompt_tokens,\
completion_tokens,reasoning_tokens,keys,days,days_settled,status";

/// The header of a company statement CSV (without the markup columns).
pub const COMPANY_STATEMENT_CSV_HEADER: &str = "row,company,key_hash,key_name,label,workspace,creator,departed_on,\
departed_reason,model,from,to,usage_usd,byok_usage_usd,requests,prompt_tokens,completion_tokens,reasoning_tokens,\
days_settled,status";

const MARKUP_COLUMNS: &str = ",markup_percent,billed_usd";

/// Every company's spend over the statement's days: `company` rows by name,
/// the `unassigned` row, `unattributed` (account spend no key explains,
/// empty until the account's every day is read), `total` (all keys) and
/// `account` (what OpenRouter billed: total + unattributed).
pub fn statement_csv(
    st: &Statement,
    unassigned: &str,
    markup: &dyn Fn(&str) -> Option<Markup>,
) -> String {
    let billed = st.companies.iter().any(|c| markup(&c.company).is_some());
    let mut out = String::with_capacity(160 * (st.companies.len() + 4));
    out.push_str(STATEMENT_CSV_HEADER);
    out.push_str(if billed { MARKUP_COLUMNS } else { "" });
    out.push_str("\r\n");
    let days = st.range.len();
    let mut billed_total: Option<Usd> = None;
    let (unassigned_rows, companies): (Vec<_>, Vec<_>) =
        st.companies.iter().partition(|c| c.company == unassigned);
    let rows = companies.iter().map(|c| ("company", c));
    for (kind, c) in rows.chain(unassigned_rows.iter().map(|c| ("unassigned", c))) {
        let m = markup(&c.company);
        let bill = m.and_then(|m| m.billed(c.spend.usage));
        billed_total = match (billed_total, bill) {
            (t, None) => t,
            (t, Some(b)) => t.unwrap_or(Usd::ZERO).checked_add(b),
        };
        row_start(&mut out, kind, &c.company, st.range);
        spend_columns(&mut out, Some(&c.spend));
        let _ = write!(out, ",{}", c.keys);
        settled(&mut out, c.days_settled, days, c.status);
        markup_cells(&mut out, billed, m, bill);
    }
    row_start(
        &mut out,
        "unattributed",
        "unattributed account spend",
        st.range,
    );
    out.push(',');
    if let Some(u) = st.unattributed() {
        let _ = write!(out, "{u}");
    }
    out.push_str(",,,,,,");
    settled(&mut out, st.account.days_settled, days, account_status(st));
    markup_cells(&mut out, billed, None, None);
    row_start(&mut out, "total", "Total, all keys", st.range);
    spend_columns(&mut out, Some(&st.total));
    let _ = write!(out, ",{}", st.total_keys);
    settled(&mut out, st.days_settled, days, st.status);
    markup_cells(&mut out, billed, None, billed_total);
    let a = &st.account;
    row_start(&mut out, "account", "OpenRouter account", st.range);
    if a.days_read > 0 {
        let _ = write!(out, ",{},{},{},,,,", a.usage, a.byok_usage, a.requests);
    } else {
        out.push_str(",,,,,,,");
    }
    settled(&mut out, a.days_settled, days, account_status(st));
    markup_cells(&mut out, billed, None, None);
    out
}

/// `row,company,from,to`.
fn row_start(out: &mut String, kind: &str, company: &str, range: DayRange) {
    let _ = write!(
        out,
        "{kind},{},{},{}",
        csv_text(company),
        range.from,
        range.to
    );
}

fn spend_columns(out: &mut String, spend: Option<&Spend>) {
    match spend {
        Some(s) => {
            let _ = write!(
                out,
                ",{},{},{},{},{},{}",
                s.usage,
                s.byok_usage,
                s.requests,
                s.prompt_tokens,
                s.completion_tokens,
                s.reasoning_tokens
            );
        }
        None => out.push_str(",,,,,,"),
    }
}

fn settled(out: &mut String, days_settled: u32, days: u32, status: PeriodStatus) {
    let _ = write!(out, ",{days},{days_settled},{}", status.as_str());
}

fn markup_cells(out: &mut String, billed: bool, markup: Option<Markup>, bill: Option<Usd>) {
    if billed {
        out.push(',');
        if let Some(m) = markup {
            let _ = write!(out, "{}", m.percent());
        }
        out.push(',');
        if let Some(b) = bill {
            let _ = write!(out, "{b}");
        }
    }
    out.push_str("\r\n");
}

/// One company's spend per key (`key` rows, departed keys with their day and
/// reason), per model (`model` rows) and in total (`total`).
pub fn company_statement_csv(cs: &CompanyStatement, markup: Option<Markup>) -> String {
    let billed = markup.is_some();
    let mut out = String::with_capacity(200 * (cs.keys.len() + cs.models.len() + 2));
    out.push_str(COMPANY_STATEMENT_CSV_HEADER);
    out.push_str(if billed { MARKUP_COLUMNS } else { "" });
    out.push_str("\r\n");
    let company = csv_text(&cs.company);
    let opt = |s: &Option<String>| s.as_deref().map(csv_text).unwrap_or_default();
    for k in &cs.keys {
        let (on, reason) = match &k.departed {
            Some(d) => (d.on.to_string(), csv_text(&d.reason)),
            None => (String::new(), String::new()),
        };
        let _ = write!(
            out,
            "key,{company},{},{},{},{},{},{on},{reason},",
            csv_text(&k.hash),
            csv_text(&k.name),
            csv_text(&k.label),
            opt(&k.workspace),
            opt(&k.creator)
        );
        company_tail(&mut out, cs.range, &k.spend, k.days_settled, k.status);
        markup_cells(
            &mut out,
            billed,
            markup,
            markup.and_then(|m| m.billed(k.spend.usage)),
        );
    }
    for m in &cs.models {
        let _ = write!(out, "model,{company},,,,,,,,{}", csv_text(&m.model));
        company_tail(&mut out, cs.range, &m.spend, cs.days_settled, cs.status);
        markup_cells(
            &mut out,
            billed,
            markup,
            markup.and_then(|mk| mk.billed(m.spend.usage)),
        );
    }
    let _ = write!(out, "total,{company},,,,,,,,");
    company_tail(&mut out, cs.range, &cs.spend, cs.days_settled, cs.status);
    markup_cells(
        &mut out,
        billed,
        markup,
        markup.and_then(|m| m.billed(cs.spend.usage)),
    );
    out
}

/// `,from,to`, the spend columns, `days_settled,status` (a company CSV has no `keys`/`days`).
fn company_tail(
    out: &mut String,
    range: DayRange,
    spend: &Spend,
    days_settled: u32,
    status: PeriodStatus,
) {
    let _ = write!(out, ",{},{}", range.from, range.to);
    spend_columns(out, Some(spend));
    let _ = write!(out, ",{days_settled},{}", status.as_str());
}
