//! Statements rendered: escaping, exact amounts, CSV rows, markup, chart.

use chrono::NaiveDate;

use super::*;
use crate::ledger::{AccountLine, CompanyLine, DayRange, Departure, ModelLine};

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn nanos(n: i128) -> Usd {
    Usd::from_nanos(n)
}

fn spend(n: i128) -> Spend {
    Spend {
        usage: nanos(n),
        requests: 3,
        prompt_tokens: 30,
        ..Spend::default()
    }
}

const LINKS: Links<'static> = Links {
    metrics: "/metrics",
    grafana: None,
};

/// Fields of a CSV line (commas inside quotes do not split).
fn fields(line: &str) -> usize {
    let mut quoted = false;
    1 + line
        .chars()
        .filter(|c| {
            if *c == '"' {
                quoted = !quoted;
            }
            *c == ',' && !quoted
        })
        .count()
}

fn november() -> Month {
    Month::parse("2025-11").unwrap()
}

fn statement() -> Statement {
    let line = |company: &str, n: i128, status| CompanyLine {
        company: company.to_string(),
        spend: spend(n),
        keys: 2,
        days_settled: 30,
        status,
    };
    Statement {
        range: november().days(),
        status: PeriodStatus::Final,
        days_settled: 30,
        companies: vec![
            line(
                "<script>alert(1)</script>",
                1_250_000_001,
                PeriodStatus::Final,
            ),
            line("=cmd", 125_000_000, PeriodStatus::Final),
            line("unassigned", 5, PeriodStatus::Final),
        ],
        total: spend(1_375_000_006),
        total_keys: 6,
        account: AccountLine {
            usage: nanos(1_400_000_006),
            byok_usage: Usd::ZERO,
            requests: 10,
            days_read: 30,
            days_settled: 30,
        },
    }
}

fn markup(company: &str) -> Option<Markup> {
    (company == "=cmd").then(|| Markup::from_percent(0.0).unwrap())
}

#[test]
fn the_month_page_escapes_names_and_shows_exact_amounts() {
    let html = month_statement(&statement(), november(), "unassigned", &|_| None, &LINKS);
    assert!(!html.contains("<script>"), "unescaped name");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("/statements/2025-11/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"));
    assert!(html.contains("$1.250000001"), "exact amount");
    assert!(html.contains("data-status=\"final\""));
    assert!(html.contains("class=\"unassigned\""));
    // Unattributed: account − keys.
    assert!(html.contains("data-usd=\"0.025\""), "{html}");
    assert!(!html.contains("Billed"));
}

#[test]
fn the_statement_csv_has_every_row_kind_and_exact_amounts() {
    let csv = statement_csv(&statement(), "unassigned", &|_| None);
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], STATEMENT_CSV_HEADER);
    let columns = STATEMENT_CSV_HEADER.split(',').count();
    for l in &lines {
        assert_eq!(fields(l), columns, "{l}");
    }
    assert!(lines[1].starts_with("company,\"<script>alert(1)</script>\",2025-11-01,2025-11-30,1.250000001,0,3,30,0,0,2,30,30,final"));
    assert!(
        lines[2].starts_with("company,\"'=cmd\""),
        "formula neutralised: {}",
        lines[2]
    );
    assert!(lines[3].starts_with("unassigned,\"unassigned\""));
    assert_eq!(
        lines[4],
        "unattributed,\"unattributed account spend\",2025-11-01,2025-11-30,0.025,,,,,,,30,30,final"
    );
    assert!(lines[5].starts_with("total,\"Total, all keys\",2025-11-01,2025-11-30,1.375000006,"));
    assert!(lines[6].starts_with(
        "account,\"OpenRouter account\",2025-11-01,2025-11-30,1.400000006,0,10,,,,,30,30,final"
    ));
}

#[test]
fn a_markup_adds_billed_columns_rounded_half_to_even() {
    let csv = statement_csv(&statement(), "unassigned", &markup);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert!(lines[0].ends_with(",markup_percent,billed_usd"));
    // 0.125 → 0.12 (half to even); no markup → empty.
    assert!(lines[2].ends_with(",0,0.12"), "{}", lines[2]);
    assert!(lines[1].ends_with("final,,"), "{}", lines[1]);
    assert!(lines[5].ends_with(",0.12"), "total billed: {}", lines[5]);
    let html = month_statement(&statement(), november(), "unassigned", &markup, &LINKS);
    assert!(html.contains("Billed") && html.contains("data-usd=\"0.12\""));
}

fn company() -> CompanyStatement {
    let key = |hash: &str, departed: Option<Departure>| KeyLine {
        hash: hash.to_string(),
        name: format!("name of {hash}"),
        label: "sk-or-v1-a...b".to_string(),
        workspace: Some("<ws>".to_string()),
        creator: None,
        departed,
        spend: spend(1_000_000_000),
        days_settled: 30,
        status: PeriodStatus::Final,
    };
    CompanyStatement {
        company: "acme & co".to_string(),
        range: november().days(),
        status: PeriodStatus::Final,
        days_settled: 30,
        spend: spend(2_000_000_000),
        keys: vec![
            key("k1", None),
            key(
                "k2",
                Some(Departure {
                    on: d("2025-11-20"),
                    reason: "deleted".to_string(),
                }),
            ),
        ],
        models: vec![ModelLine {
            model: "openai/gpt-4.1".to_string(),
            spend: spend(2_000_000_000),
        }],
    }
}

#[test]
fn the_company_statement_marks_departed_keys() {
    let html = company_statement(&company(), november(), None, &LINKS);
    assert!(html.contains("acme &amp; co"));
    assert!(html.contains("class=\"key departed\""));
    assert!(html.contains("deleted 2025-11-20"));
    assert!(html.contains("workspace &lt;ws&gt;"));
    assert!(html.contains("/statements/2025-11/acme%20%26%20co.csv"));
    let csv = company_statement_csv(&company(), Markup::from_percent(10.0));
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    let columns = lines[0].split(',').count();
    for l in &lines {
        assert_eq!(fields(l), columns, "{l}");
    }
    assert!(
        lines[2].contains(",2025-11-20,\"deleted\","),
        "{}",
        lines[2]
    );
    assert!(lines[3].starts_with("model,\"acme & co\",,,,,,,,\"openai/gpt-4.1\""));
    assert!(
        lines[4].starts_with("total,") && lines[4].ends_with(",10,2.2"),
        "{}",
        lines[4]
    );
}

#[test]
fn the_chart_is_plain_svg_with_unknown_days_and_the_month_so_far() {
    let mut days: Vec<(NaiveDate, Option<Usd>)> = DayRange {
        from: d("2025-11-03"),
        to: d("2025-12-02"),
    }
    .iter()
    .map(|day| (day, Some(nanos(2_000_000_000))))
    .collect();
    days[0].1 = None;
    let svg = daily_chart_svg(&days, Some(nanos(3_000_000_000)));
    assert!(svg.contains("<svg") && !svg.contains("<script"));
    assert_eq!(
        svg.matches("<rect").count(),
        30 + 2,
        "30 bars and the budget bar"
    );
    assert!(svg.contains("2025-11-03: not known"));
    assert!(svg.contains("December so far: $4.00 of $3.00 (133 %)"));
    assert!(svg.contains("data-state=\"over\""));
    assert!(svg.contains("Dec 1"), "the 1st is labelled");
    let none = daily_chart_svg(&days, None);
    assert!(none.contains("December so far: $4.00<") && !none.contains("budget pace"));
    assert!(daily_chart_svg(&[], None).contains("No daily spend"));
}

#[test]
fn exact_dollars_group_thousands_and_keep_the_cents() {
    assert_eq!(exact_usd(nanos(1_184_201_200_000)), "$1,184.2012");
    assert_eq!(exact_usd(nanos(-3_000_000_000)), "-$3.00");
    assert_eq!(exact_usd(nanos(1)), "$0.000000001");
    assert_eq!(exact_usd(nanos(1_234_567_000_000_000)), "$1,234,567.00");
}

#[test]
fn the_unavailable_page_escapes_its_reason() {
    let html = ledger_unavailable("held by <another> process", &LINKS);
    assert!(html.contains("held by &lt;another&gt; process"));
    let index = statements_index(&[], &LINKS);
    assert!(index.contains("holds no day yet"));
}
