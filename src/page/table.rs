//! The companies table: its row model ([`Row`], computed from a snapshot's
//! company totals) and the cells and rows that `/` and a company page share.

use std::cmp::Ordering;
use std::fmt::Write as _;

use super::format::{escape_html, format_count, format_f64_usd, format_usd, percent_encode};
use super::{ratio, BudgetState, MONTHLY, WEEKLY};
use crate::config::Budget;
use crate::money::Usd;
use crate::snapshot::{
    CompanyTotals, OrgList, Snapshot, Window, WindowAmounts, COMPLETED_30D, DAILY, ROLLING,
};

/// One row of the companies table (a company, the unassigned keys, or the total).
pub(super) struct Row {
    pub(super) name: String,
    pub(super) keys: u64,
    pub(super) usage: WindowAmounts,
    pub(super) rolling: [Option<Usd>; 2],
    pub(super) budget: Budget,
    pub(super) top_model: Option<(String, Option<f64>)>,
    /// The organization list whose first read decides the company's keys:
    /// until then its figures and key count are not known.
    pub(super) awaiting: Option<OrgList>,
}

impl Row {
    pub(super) fn of(company: &CompanyTotals) -> Row {
        if company.awaiting.is_some() {
            return Row {
                name: company.name.clone(),
                keys: 0,
                usage: [None; 4],
                rolling: [None; 2],
                budget: company.budget,
                top_model: None,
                awaiting: company.awaiting,
            };
        }
        Row {
            name: company.name.clone(),
            keys: company.keys,
            usage: company.usage,
            rolling: company.rolling,
            budget: company.budget,
            top_model: top_model(company),
            awaiting: None,
        }
    }

    /// The key count as a table cell shows it: empty while not known.
    pub(super) fn keys_text(&self) -> String {
        match self.awaiting {
            Some(_) => String::new(),
            None => self.keys.to_string(),
        }
    }

    /// The budgets that are set, with what is used of each (`None` = usage unknown).
    fn budgets(&self) -> Vec<(Window, f64, Option<Usd>)> {
        [
            (Window::Daily, self.budget.daily, self.usage[DAILY]),
            (Window::Weekly, self.budget.weekly, self.usage[WEEKLY]),
            (Window::Monthly, self.budget.monthly, self.usage[MONTHLY]),
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
pub(super) fn sorted_rows(snap: &Snapshot) -> (Vec<Row>, Option<Row>) {
    let Some((unassigned, configured)) = snap.companies.split_last() else {
        return (Vec::new(), None);
    };
    let mut rows: Vec<Row> = configured.iter().map(Row::of).collect();
    rows.sort_by(|a, b| match (a.usage[MONTHLY], b.usage[MONTHLY]) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.name.cmp(&b.name)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    (rows, Some(Row::of(unassigned)))
}

/// Every company's spend added up (exact; unknown when any part is). A
/// company waiting for an organization list counts here: which company a
/// key is in may be unknown, not its spend.
pub(super) fn total_row(snap: &Snapshot) -> Row {
    let mut usage: WindowAmounts = [Some(Usd::ZERO); 4];
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
        awaiting: None,
    }
}

/// Why a company's figures are not known yet, for a note beside its name.
pub(super) fn awaiting_note(list: OrgList) -> &'static str {
    match list {
        OrgList::Members => "not known until the member list is read",
        OrgList::Workspaces => "not known until the workspace list is read",
        _ => "not known until the organization lists are read",
    }
}

pub(super) fn has_rolling(snap: &Snapshot) -> bool {
    snap.companies
        .iter()
        .any(|c| c.rolling.iter().any(Option::is_some))
}

pub(super) fn money_cell(out: &mut String, value: Option<Usd>, window: &str) {
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

/// The column heading of a window (`daily`, …, `rolling_30d`, and the
/// model mix's `completed_30d`).
fn window_label(window: &str) -> &'static str {
    match window {
        "daily" => "Today",
        "weekly" => "This week",
        "monthly" => "This month",
        "lifetime" => "Lifetime",
        "rolling_7d" => "Last 7 days",
        "rolling_30d" => "Last 30 days",
        COMPLETED_30D => "30 completed days",
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

pub(super) fn windows_header(out: &mut String, rolling: bool) {
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

pub(super) fn window_cells(
    out: &mut String,
    usage: &WindowAmounts,
    rolling: Option<&[Option<Usd>; 2]>,
) {
    for (window, value) in Window::ALL.iter().zip(usage) {
        money_cell(out, *value, window.as_str());
    }
    if let Some(rolling) = rolling {
        for ((window, _), value) in ROLLING.iter().zip(rolling) {
            money_cell(out, *value, window);
        }
    }
}

pub(super) fn company_row(out: &mut String, row: &Row, class: &str, note: &str, rolling: bool) {
    let state = row.budget_state();
    let _ = write!(
        out,
        "<tr class=\"{class}\" data-company=\"{}\" data-budget-state=\"{}\"><th scope=\"row\">\
         <a href=\"/company/{}\">{}</a>{note}",
        escape_html(&row.name),
        state.as_str(),
        percent_encode(&row.name),
        escape_html(&row.name),
    );
    if let Some(list) = row.awaiting {
        let _ = write!(
            out,
            " <small class=\"awaiting\">{}</small>",
            awaiting_note(list)
        );
    }
    out.push_str("</th>");
    window_cells(out, &row.usage, rolling.then_some(&row.rolling));
    budget_cell(out, row);
    match row.awaiting {
        Some(list) => {
            let _ = write!(
                out,
                "<td class=\"num unknown\" data-label=\"Keys\" title=\"{}\">—</td>",
                awaiting_note(list)
            );
        }
        None => {
            let _ = write!(
                out,
                "<td class=\"num\" data-label=\"Keys\">{}</td>",
                format_count(row.keys)
            );
        }
    }
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
