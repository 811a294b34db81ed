//! A company's daily spend as an inline SVG bar chart, drawn by the server:
//! no script (the CSP forbids them), readable at 390 px (it scales to the
//! width; its text is ~11 px there), with a tooltip and an accessible label
//! per bar. Under the bars: the month so far against the monthly budget.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};

use super::super::format::{escape_html, format_usd};
use super::super::BudgetState;
use crate::ledger::Month;
use crate::money::Usd;

/// The drawing's coordinate box; it scales to the page's width.
const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 196.0;
/// The plot area: room for the y labels on the left and the dates below.
const LEFT: f64 = 46.0;
const RIGHT: f64 = 354.0;
const TOP: f64 = 24.0;
const BASE: f64 = 128.0;

const BAR: &str = "#1a5fb4";
const MUTED: &str = "#5f6368";
const LINE: &str = "#dadce0";

/// The chart of `days` (oldest first; `None` = not known, e.g. before the
/// ledger began), with the month of the last day so far against `budget`
/// (the monthly budget), drawn as a dashed daily pace (budget ÷ days in the
/// month) over the bars and a bar under them. Pass the last 30 days, or from
/// the 1st of the month if that is earlier, so the month so far is whole.
pub fn daily_chart_svg(days: &[(NaiveDate, Option<Usd>)], budget: Option<Usd>) -> String {
    let mut out = String::with_capacity(8 * 1024 + 200 * days.len());
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return "<p class=\"muted\">No daily spend to chart yet.</p>".to_string();
    };
    let month = Month::of(last.0);
    let pace = budget.map(|b| Usd::from_nanos(b.nanos() / i128::from(month.days().len().max(1))));
    let top = nice_ceiling(
        days.iter()
            .filter_map(|(_, v)| *v)
            .chain(pace)
            .max()
            .unwrap_or(Usd::ZERO),
    );
    let title = format!("Daily spend, {} to {}", first.0, last.0);
    let _ = write!(
        out,
        "<figure class=\"chart\" style=\"margin:8px 0 16px;max-width:720px\">\
         <svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" \
         aria-labelledby=\"chart-title\" style=\"display:block;height:auto;font:11px system-ui,sans-serif\">\
         <title id=\"chart-title\">{}</title>",
        escape_html(&title)
    );
    axes(&mut out, top);
    bars(&mut out, days, top);
    if let Some(pace) = pace {
        let y = y_of(pace, top);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#b26a00\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{RIGHT}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#b26a00\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">budget pace {}/day</text>",
            (y - 3.0).max(10.0),
            format_usd(pace)
        );
    }
    month_so_far(&mut out, days, month, budget);
    out.push_str("</svg></figure>\n");
    out
}

/// Gridlines at 0, half and the top, with their amounts.
fn axes(out: &mut String, top: Usd) {
    for (share, amount) in [
        (0.0, Usd::ZERO),
        (0.5, Usd::from_nanos(top.nanos() / 2)),
        (1.0, top),
    ] {
        let y = BASE - share * (BASE - TOP);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{LINE}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{MUTED}\">{}</text>",
            LEFT - 4.0,
            y + 4.0,
            axis_usd(amount)
        );
    }
}

/// One bar a day (a dashed stub for a day not known), each with its
/// tooltip; dates under the first and last bars and the 1st of each month.
fn bars(out: &mut String, days: &[(NaiveDate, Option<Usd>)], top: Usd) {
    let slot = (RIGHT - LEFT) / days.len() as f64;
    let width = (slot * 0.72).max(1.0);
    let mut last_label = f64::NEG_INFINITY;
    for (i, (day, value)) in days.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
        match value {
            Some(v) => {
                let y = y_of(*v, top);
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{BAR}\" data-day=\"{day}\" \
                     data-usd=\"{v}\"><title>{day}: {}</title></rect>",
                    (BASE - y).max(0.0),
                    format_usd(*v)
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"6\" fill=\"none\" stroke=\"{MUTED}\" \
                     stroke-dasharray=\"2 2\" data-day=\"{day}\"><title>{day}: not known</title></rect>",
                    BASE - 6.0
                );
            }
        }
        let centre = x + width / 2.0;
        let edge = i == 0 || i + 1 == days.len();
        if (edge || day.day() == 1) && centre - last_label > 34.0 {
            let anchor = if i == 0 {
                "start"
            } else if i + 1 == days.len() {
                "end"
            } else {
                "middle"
            };
            let at = if i == 0 {
                x
            } else if i + 1 == days.len() {
                x + width
            } else {
                centre
            };
            let _ = write!(
                out,
                "<text x=\"{at:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"{MUTED}\">{}</text>",
                BASE + 14.0,
                day.format("%b %-d")
            );
            last_label = centre;
        }
    }
}

/// The month of the last day so far, against the budget: words and a bar.
fn month_so_far(
    out: &mut String,
    days: &[(NaiveDate, Option<Usd>)],
    month: Month,
    budget: Option<Usd>,
) {
    let in_month = days.iter().filter(|(d, _)| Month::of(*d) == month);
    let known: Vec<Usd> = in_month.clone().filter_map(|(_, v)| *v).collect();
    let unknown = in_month.count() - known.len();
    let spent = known
        .iter()
        .fold(Usd::ZERO, |sum, v| sum.checked_add(*v).unwrap_or(sum));
    let mut words = format!(
        "{} so far: {}",
        month.first_day().format("%B"),
        format_usd(spent)
    );
    let (state, share) = match budget {
        Some(b) => {
            let dollars = b.nanos() as f64 / 1e9;
            let share = (dollars > 0.0).then(|| spent.nanos() as f64 / 1e9 / dollars);
            let _ = write!(words, " of {}", format_usd(b));
            if let Some(s) = share {
                let _ = write!(words, " ({:.0} %)", s * 100.0);
            }
            (BudgetState::of(spent, dollars), share)
        }
        None => (BudgetState::Ok, None),
    };
    if unknown > 0 {
        let _ = write!(words, ", {unknown} day(s) not known");
    }
    let _ = write!(
        out,
        "<text x=\"0\" y=\"166\" fill=\"#202124\" data-state=\"{}\">{}</text>",
        state.as_str(),
        escape_html(&words)
    );
    if budget.is_some() {
        let colour = match state {
            BudgetState::Ok => "#2e7d32",
            BudgetState::Warning => "#b26a00",
            BudgetState::Over => "#c62828",
        };
        let fill = share.map_or(1.0, |s| s.clamp(0.0, 1.0)) * WIDTH;
        let _ = write!(
            out,
            "<rect x=\"0\" y=\"176\" width=\"{WIDTH}\" height=\"8\" rx=\"4\" fill=\"#e8eaed\"/>\
             <rect x=\"0\" y=\"176\" width=\"{fill:.1}\" height=\"8\" rx=\"4\" fill=\"{colour}\"/>"
        );
    }
}

fn y_of(value: Usd, top: Usd) -> f64 {
    let share = if top.nanos() > 0 {
        value.nanos() as f64 / top.nanos() as f64
    } else {
        0.0
    };
    BASE - share.clamp(0.0, 1.0) * (BASE - TOP)
}

/// The smallest 1, 2 or 5 × 10ⁿ dollars at or above `max` (at least a cent).
fn nice_ceiling(max: Usd) -> Usd {
    let mut step: i128 = 10_000_000;
    loop {
        for m in [1, 2, 5] {
            if step * m >= max.nanos() {
                return Usd::from_nanos(step * m);
            }
        }
        match step.checked_mul(10) {
            Some(s) => step = s,
            None => return max,
        }
    }
}

/// An axis amount, short: `$0`, `$5`, `$2.5k`, `$1.2M`.
fn axis_usd(amount: Usd) -> String {
    let dollars = amount.nanos() as f64 / 1e9;
    match dollars {
        d if d >= 1e6 => format!("${:.1}M", d / 1e6).replace(".0M", "M"),
        d if d >= 1e3 => format!("${:.1}k", d / 1e3).replace(".0k", "k"),
        d if d.fract() == 0.0 => format!("${d:.0}"),
        d => format!("${d:.2}"),
    }
}
