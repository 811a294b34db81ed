//! The statement routes (issue #23): `/statements`, `/statements/YYYY-MM`
//! (and `.csv`), `/statements/YYYY-MM/<company>` (and `.csv`), and
//! `/companies.csv?from=…&to=…` from the ledger. Every ledger call blocks on
//! SQLite, so it runs on `spawn_blocking`; a ledger that could not be opened
//! answers 503 with the reason while `/metrics` keeps serving.

use std::sync::Arc;

use chrono::{Duration, NaiveDate, Utc};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::response::{csv, full, html, ResponseBody};
use crate::config::Config;
use crate::exporter::ReadHandle;
use crate::ledger::{
    oldest_kept, parse_range_query, DayRange, Ledger, LedgerError, Markup, Month,
    DEFAULT_RETENTION_DAYS,
};
use crate::money::Usd;
use crate::page::{self, Links};

/// How the server reaches the ledger (`ServerOptions::ledger`).
#[derive(Debug, Clone, Default)]
pub enum LedgerAccess {
    /// No ledger configured: the statement routes answer 404.
    #[default]
    Off,
    /// The open ledger, shared with the exporter that writes it.
    Open(Arc<Ledger>),
    /// The ledger could not be opened (the reason, for the 503).
    Unavailable(String),
}

impl LedgerAccess {
    /// `Open` or `Unavailable` from [`Ledger::open`]'s result.
    pub fn from_result(result: Result<Ledger, LedgerError>) -> LedgerAccess {
        match result {
            Ok(ledger) => LedgerAccess::Open(Arc::new(ledger)),
            Err(e) => LedgerAccess::Unavailable(e.to_string()),
        }
    }
}

/// A company's markup (`companies.<name>.billing.markup_percent`), read from
/// the live config so that a reload applies to the next statement.
///
/// HOOK for the lead: the config has no `billing` section in this branch;
/// once it has, return it here (e.g. `config.companies.iter().find(|c| c.name
/// == company)?.billing.as_ref()?.markup`). Until then no company has one.
pub fn company_markup(config: &Config, company: &str) -> Option<Markup> {
    config
        .markup_percent(company)
        .and_then(Markup::from_percent)
}

/// The answer to a statement route, or `None` when `path` is not one.
pub(super) async fn route(
    path: &str,
    reader: &ReadHandle,
    ledger: &LedgerAccess,
    links: &Links<'_>,
) -> Option<Response<ResponseBody>> {
    let rest = match path {
        "/statements" | "/statements/" => "",
        _ => path.strip_prefix("/statements/")?,
    };
    let ledger = match usable(ledger) {
        Ok(ledger) => ledger,
        Err(refusal) => return Some(refusal.response(links, rest.ends_with(".csv"))),
    };
    let today = Utc::now().date_naive();
    let config = reader.config();
    Some(match rest.split_once('/') {
        _ if rest.is_empty() => index(ledger, today, links).await,
        None => month(ledger, rest, today, &config, links).await,
        Some((month, company)) => {
            company_route(ledger, month, company, today, &config, links).await
        }
    })
}

/// `/companies.csv?from=…&to=…`: `None` without a range (the snapshot's CSV,
/// as before); a malformed, inverted, future or out-of-retention range is a
/// 400 that says what is wrong.
pub(super) async fn companies_range_csv(
    query: &str,
    reader: &ReadHandle,
    ledger: &LedgerAccess,
    links: &Links<'_>,
) -> Option<Response<ResponseBody>> {
    let today = Utc::now().date_naive();
    let retention = match ledger {
        LedgerAccess::Open(l) => l.retention_days(),
        _ => DEFAULT_RETENTION_DAYS,
    };
    let range = match parse_range_query(query, today, retention) {
        Ok(None) => return None,
        Ok(Some(range)) => range,
        Err(e) => return Some(message(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let ledger = match usable(ledger) {
        Ok(ledger) => ledger,
        Err(refusal) => return Some(refusal.response(links, true)),
    };
    let config = reader.config();
    Some(
        match blocking(ledger, move |l| l.statement(range, today)).await {
            Ok(st) => {
                let body = page::statement_csv(&st, &config.unassigned_company, &|c| {
                    company_markup(&config, c)
                });
                csv(
                    body,
                    &format!("openrouter-companies-{}-to-{}.csv", range.from, range.to),
                )
            }
            Err(reason) => unavailable(&reason, links, true),
        },
    )
}

/// Why a statement route cannot answer (a 404 or a 503, with the reason).
enum Refusal {
    NotFound(String),
    Unavailable(String),
}

impl Refusal {
    fn response(self, links: &Links<'_>, csv: bool) -> Response<ResponseBody> {
        match self {
            Refusal::NotFound(text) => message(StatusCode::NOT_FOUND, text),
            Refusal::Unavailable(reason) => unavailable(&reason, links, csv),
        }
    }
}

/// The open ledger, or why there is none.
fn usable(ledger: &LedgerAccess) -> Result<&Arc<Ledger>, Refusal> {
    match ledger {
        LedgerAccess::Open(ledger) => Ok(ledger),
        LedgerAccess::Off => Err(Refusal::NotFound(
            "no ledger configured: statements and date ranges need the ledger (--storage.path)"
                .to_string(),
        )),
        LedgerAccess::Unavailable(reason) => Err(Refusal::Unavailable(reason.clone())),
    }
}

async fn index(
    ledger: &Arc<Ledger>,
    today: NaiveDate,
    links: &Links<'_>,
) -> Response<ResponseBody> {
    match blocking(ledger, move |l| l.months(today)).await {
        Ok(months) => html(StatusCode::OK, page::statements_index(&months, links)),
        Err(reason) => unavailable(&reason, links, false),
    }
}

/// `/statements/YYYY-MM` and `/statements/YYYY-MM.csv`.
async fn month(
    ledger: &Arc<Ledger>,
    text: &str,
    today: NaiveDate,
    config: &Config,
    links: &Links<'_>,
) -> Response<ResponseBody> {
    let (text, as_csv) = split_csv(text);
    let month = match held_month(ledger, text, today) {
        Ok(month) => month,
        Err(refusal) => return refusal.response(links, as_csv),
    };
    let range = month.days();
    let st = match blocking(ledger, move |l| l.statement(range, today)).await {
        Ok(st) => st,
        Err(reason) => return unavailable(&reason, links, as_csv),
    };
    let markup = |c: &str| company_markup(config, c);
    let unassigned = &config.unassigned_company;
    if as_csv {
        csv(
            page::statement_csv(&st, unassigned, &markup),
            &format!("openrouter-statement-{month}.csv"),
        )
    } else {
        let body = page::month_statement(&st, month, unassigned, &markup, links);
        html(StatusCode::OK, body)
    }
}

/// `/statements/YYYY-MM/<company>` and its `.csv` (a company whose name
/// itself ends in `.csv` is reached by its CSV only).
async fn company_route(
    ledger: &Arc<Ledger>,
    month_text: &str,
    encoded: &str,
    today: NaiveDate,
    config: &Config,
    links: &Links<'_>,
) -> Response<ResponseBody> {
    let (encoded, as_csv) = split_csv(encoded);
    let month = match held_month(ledger, month_text, today) {
        Ok(month) => month,
        Err(refusal) => return refusal.response(links, as_csv),
    };
    let Some(company) = page::percent_decode(encoded).filter(|c| !c.is_empty()) else {
        return message(
            StatusCode::NOT_FOUND,
            "not a company name: the path is /statements/YYYY-MM/<company>".to_string(),
        );
    };
    let range = month.days();
    let name = company.clone();
    let found = blocking(ledger, move |l| l.company_statement(range, &name, today)).await;
    let cs = match found {
        Ok(Some(cs)) => cs,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                format!("unknown company {company:?}: the ledger has never attributed a key to it"),
            )
        }
        Err(reason) => return unavailable(&reason, links, as_csv),
    };
    let markup = company_markup(config, &company);
    if as_csv {
        csv(
            page::company_statement_csv(&cs, markup),
            &format!("openrouter-statement-{month}-{}.csv", file_safe(&company)),
        )
    } else {
        html(
            StatusCode::OK,
            page::company_statement(&cs, month, markup, links),
        )
    }
}

/// The month of a path: `YYYY-MM`, not in the future, not wholly older than
/// the ledger keeps; otherwise a 404 saying which.
fn held_month(ledger: &Ledger, text: &str, today: NaiveDate) -> Result<Month, Refusal> {
    let not_found = |m: String| Err(Refusal::NotFound(m));
    let Some(month) = Month::parse(text) else {
        let shown: String = text.chars().take(40).collect();
        return not_found(format!(
            "{shown:?} is not a month: write YYYY-MM, e.g. /statements/{}",
            Month::of(today)
        ));
    };
    if month > Month::of(today) {
        return not_found(format!("{month} is in the future (today is {today} UTC)"));
    }
    let oldest = oldest_kept(today, ledger.retention_days());
    if month.last_day() < oldest {
        return not_found(format!(
            "{month} is older than the ledger keeps: its oldest day is {oldest} \
             (--storage.retention {}d)",
            ledger.retention_days()
        ));
    }
    Ok(month)
}

/// The daily spend chart of `company` for its page: the last 30 days, or
/// from the 1st of the month if that is earlier, against its monthly
/// `budget`. Empty without a ledger; a note when the ledger fails.
pub async fn company_chart(
    ledger: &LedgerAccess,
    company: &str,
    today: NaiveDate,
    budget: Option<Usd>,
) -> String {
    let LedgerAccess::Open(ledger) = ledger else {
        return String::new();
    };
    let range = DayRange {
        from: (today - Duration::days(29)).min(Month::of(today).first_day()),
        to: today,
    };
    let company = company.to_string();
    match blocking(ledger, move |l| l.company_daily(&company, range)).await {
        Ok(days) => page::daily_chart_svg(&days, budget),
        Err(reason) => format!(
            "<p class=\"muted\">The daily chart is not available: {}.</p>",
            page::escape_html(&reason)
        ),
    }
}

/// Runs a ledger call off the async workers; its error (or the task's
/// panic) becomes the 503's reason.
async fn blocking<T: Send + 'static>(
    ledger: &Arc<Ledger>,
    call: impl FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, String> {
    let ledger = Arc::clone(ledger);
    match tokio::task::spawn_blocking(move || call(&ledger)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ledger: statement query failed");
            Err(e.to_string())
        }
        Err(e) => Err(format!("the statement query failed ({e})")),
    }
}

/// `name.csv` → (`name`, true).
fn split_csv(text: &str) -> (&str, bool) {
    text.strip_suffix(".csv")
        .map_or((text, false), |stem| (stem, true))
}

/// 503: the HTML page for a page, the reason in text for a CSV.
fn unavailable(reason: &str, links: &Links<'_>, csv: bool) -> Response<ResponseBody> {
    if csv {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the ledger is not available: {reason}"),
        )
    } else {
        html(
            StatusCode::SERVICE_UNAVAILABLE,
            page::ledger_unavailable(reason, links),
        )
    }
}

/// A plain-text answer that says what is wrong.
fn message(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut response = Response::new(full(text + "\n"));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A company name as a file name: letters, digits, `-`, `_` and `.` kept,
/// anything else `_` (no quote or slash reaches the header).
fn file_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    safe.trim_start_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_safe("acme"), "acme");
        assert_eq!(file_safe("Smith & \"Sons\"/x"), "Smith____Sons__x");
        assert_eq!(file_safe("../etc"), "_etc");
    }

    #[test]
    fn csv_suffix_is_split() {
        assert_eq!(split_csv("2025-11.csv"), ("2025-11", true));
        assert_eq!(split_csv("2025-11"), ("2025-11", false));
    }
}
