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
//!
//! The three responses are [`index`], [`company`] and [`companies_csv`]
//! (`index.rs`, `company.rs`, `csv.rs`); they share the companies table's
//! rows and cells (`table.rs`), the page chrome (`layout.rs`) and the
//! escaping and formatting helpers (`format.rs`).

mod company;
mod csv;
mod format;
mod index;
mod layout;
pub mod statements;
mod table;

use crate::money::Usd;

pub use self::company::{company, MAX_KEY_ROWS};
pub use self::csv::{companies_csv, CSV_HEADER};
pub use self::format::{csv_text, escape_html, format_usd, percent_decode, percent_encode};
pub use self::index::index;
pub use self::statements::{
    company_statement, company_statement_csv, daily_chart_svg, ledger_unavailable, month_statement,
    statement_csv, statements_index,
};

/// Usage ÷ budget from which a bar turns amber; the same share as
/// `openrouter:threshold:company_budget_warning_ratio` (OpenRouterCompanyBudgetNearlyExhausted).
pub const BUDGET_WARNING_RATIO: f64 = 0.8;
/// Usage ÷ budget above which a bar is marked over budget; the same as
/// `openrouter:threshold:company_budget_critical_ratio` (OpenRouterCompanyBudgetExceeded).
pub const BUDGET_CRITICAL_RATIO: f64 = 1.0;

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

/// Index of the weekly window in per-window arrays ([`Window::ALL`] order);
/// `snapshot` names [`DAILY`] and [`LIFETIME`].
///
/// [`Window::ALL`]: crate::snapshot::Window::ALL
/// [`DAILY`]: crate::snapshot::DAILY
/// [`LIFETIME`]: crate::snapshot::LIFETIME
const WEEKLY: usize = 1;
/// Index of the monthly window in per-window arrays.
const MONTHLY: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Window, DAILY, LIFETIME};

    fn usd(v: f64) -> Usd {
        Usd::from_f64(v).unwrap_or(Usd::ZERO)
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
    fn window_indices_follow_window_all() {
        assert_eq!(Window::ALL[DAILY], Window::Daily);
        assert_eq!(Window::ALL[WEEKLY], Window::Weekly);
        assert_eq!(Window::ALL[MONTHLY], Window::Monthly);
        assert_eq!(Window::ALL[LIFETIME], Window::Lifetime);
    }
}
