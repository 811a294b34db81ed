//! `/companies.csv`: the companies table with exact amounts, for spreadsheets.

use std::fmt::Write as _;

use super::format::csv_text;
use super::table::{sorted_rows, total_row, Row};
use crate::body::Published;
use crate::config::Budget;
use crate::money::Usd;
use crate::snapshot::{WindowAmounts, LIFETIME};

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
    let _ = write!(out, "{kind},{},{}", csv_text(&row.name), row.keys_text());
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
    // Account spend no listed key explains: known for lifetime only.
    let mut usage: WindowAmounts = [None; 4];
    usage[LIFETIME] = snap.unattributed_usage;
    let unattributed = Row {
        name: "unattributed account spend".to_string(),
        keys: 0,
        usage,
        rolling: [None; 2],
        budget: Budget::default(),
        top_model: None,
        awaiting: None,
    };
    csv_row(&mut out, "unattributed", &unattributed, &as_of);
    csv_row(&mut out, "total", &total_row(snap), &as_of);
    Some(out)
}
