//! The per-company families: spend, BYOK spend, budgets and key counts, and
//! the model mix over the last 30 completed days.

use std::io::{self, Write};

use crate::snapshot::{CompanyTotals, ModelTotals, Snapshot, Window, COMPLETED_30D, ROLLING};

use super::writer::{Family, Kind, MetricWriter};

/// The window of the model-mix families (their HELP texts end with it).
macro_rules! model_mix_note {
    () => {
        "over the last 30 completed UTC days (window=\"completed_30d\", the same window as \
         openrouter_company_usage_usd{window=\"completed_30d\"}, which the models sum to exactly; today is \
         not broken down by model until it completes); the top models by spend, the rest summed as model=\"other\"."
    };
}

/// The note on `window="previous_month"` in the company spend's HELP text.
macro_rules! previous_month_note {
    () => {
        "window=\"previous_month\" (with the statements ledger): the whole previous UTC month, exact, \
         once every day of it is settled for every key (absent before). "
    };
}

pub(super) const USAGE: Family = Family {
    name: "openrouter_company_usage_usd",
    kind: Kind::Gauge,
    help: concat!(
        "OpenRouter credit spend of one company in US dollars: the exact sum over the keys \
         attributed to it, departed keys included for the windows they still hold. Absent when a \
         key's figure is unknown, or while an organization list its attribution needs has never \
         been read. ",
        previous_month_note!(),
        calendar_note!()
    ),
};
pub(super) const BYOK_USAGE: Family = Family {
    name: "openrouter_company_byok_usage_usd",
    kind: Kind::Gauge,
    help: concat!(
        "Bring-your-own-key spend of one company in US dollars, summed over its keys. ",
        calendar_note!()
    ),
};
pub(super) const BUDGET: Family = Family {
    name: "openrouter_company_budget_usd",
    kind: Kind::Gauge,
    help: "Budget of one company in US dollars from the exporter config, per UTC calendar window \
           (daily, weekly from Monday, monthly). Absent when not configured.",
};
pub(super) const KEYS: Family = Family {
    name: "openrouter_company_keys",
    kind: Kind::Gauge,
    help: "Number of OpenRouter API keys attributed to the company: listed keys, direct keys, and \
           keys no longer listed whose spend still counts. Absent while an organization list its \
           attribution needs has never been read.",
};
pub(super) const MODEL_USAGE: Family = Family {
    name: "openrouter_company_model_usage_usd",
    kind: Kind::Gauge,
    help: concat!(
        "Credit spend of one company per model in US dollars, ",
        model_mix_note!()
    ),
};
pub(super) const MODEL_REQUESTS: Family = Family {
    name: "openrouter_company_model_requests",
    kind: Kind::Gauge,
    help: concat!("Requests of one company per model, ", model_mix_note!()),
};
pub(super) const MODEL_TOKENS: Family = Family {
    name: "openrouter_company_model_tokens",
    kind: Kind::Gauge,
    help: concat!(
        "Tokens of one company per model and kind (prompt, completion, reasoning), ",
        model_mix_note!()
    ),
};

/// Every family this file writes.
pub(super) const FAMILIES: &[Family] = &[
    USAGE,
    BYOK_USAGE,
    BUDGET,
    KEYS,
    MODEL_USAGE,
    MODEL_REQUESTS,
    MODEL_TOKENS,
];

/// The companies whose keys are known: those waiting for an organization
/// list's first read publish no totals (the pages show them as unknown).
fn known(snap: &Snapshot) -> impl Iterator<Item = &CompanyTotals> {
    snap.companies.iter().filter(|c| c.awaiting.is_none())
}

/// Spend, BYOK spend, budget and key count of every company.
pub(super) fn write_totals<W: Write>(w: &mut MetricWriter<W>, snap: &Snapshot) -> io::Result<()> {
    w.header(&USAGE)?;
    for company in known(snap) {
        write_usage(w, company)?;
        write_previous_month(w, snap, company)?;
    }
    w.header(&BYOK_USAGE)?;
    for company in known(snap) {
        for (i, window) in Window::ALL.into_iter().enumerate() {
            if let Some(v) = company.byok_usage[i] {
                let labels = [
                    ("company", company.name.as_str()),
                    ("window", window.as_str()),
                ];
                w.sample_usd(BYOK_USAGE.name, &labels, v)?;
            }
        }
    }
    w.header(&BUDGET)?;
    for company in &snap.companies {
        let budget = company.budget;
        for (window, value) in [
            (Window::Daily, budget.daily),
            (Window::Weekly, budget.weekly),
            (Window::Monthly, budget.monthly),
        ] {
            if let Some(v) = value {
                let labels = [
                    ("company", company.name.as_str()),
                    ("window", window.as_str()),
                ];
                w.sample_f64(BUDGET.name, &labels, v)?;
            }
        }
    }
    w.header(&KEYS)?;
    for company in known(snap) {
        let labels = [("company", company.name.as_str())];
        w.sample(KEYS.name, &labels, format_args!("{}", company.keys))?;
    }
    Ok(())
}

/// One company's spend: calendar windows, rolling windows, then `completed_30d`.
fn write_usage<W: Write>(w: &mut MetricWriter<W>, company: &CompanyTotals) -> io::Result<()> {
    let name = USAGE.name;
    let company_label = ("company", company.name.as_str());
    for (i, window) in Window::ALL.into_iter().enumerate() {
        if let Some(v) = company.usage[i] {
            w.sample_usd(name, &[company_label, ("window", window.as_str())], v)?;
        }
    }
    for ((window, _), value) in ROLLING.iter().zip(company.rolling) {
        if let Some(v) = value {
            w.sample_usd(name, &[company_label, ("window", window)], v)?;
        }
    }
    if let Some(v) = company.completed {
        w.sample_usd(name, &[company_label, ("window", COMPLETED_30D)], v)?;
    }
    Ok(())
}

/// One row per (company, model) of every company with a model mix.
fn model_rows(snap: &Snapshot) -> impl Iterator<Item = ([(&'static str, &str); 3], &ModelTotals)> {
    known(snap).flat_map(|c| {
        c.models.iter().flatten().map(move |(model, totals)| {
            let labels = [
                ("company", c.name.as_str()),
                ("model", model.as_str()),
                ("window", COMPLETED_30D),
            ];
            (labels, totals)
        })
    })
}

/// The model mix: spend, requests and tokens per company and model (absent
/// while no company has one).
pub(super) fn write_model_mix<W: Write>(
    w: &mut MetricWriter<W>,
    snap: &Snapshot,
) -> io::Result<()> {
    if known(snap).all(|c| c.models.is_none()) {
        return Ok(());
    }
    w.header(&MODEL_USAGE)?;
    for (labels, t) in model_rows(snap) {
        w.sample_usd(MODEL_USAGE.name, &labels, t.usage)?;
    }
    w.header(&MODEL_REQUESTS)?;
    for (labels, t) in model_rows(snap) {
        w.sample(MODEL_REQUESTS.name, &labels, format_args!("{}", t.requests))?;
    }
    w.header(&MODEL_TOKENS)?;
    for ([company, model, window], t) in model_rows(snap) {
        for (kind, v) in [
            ("prompt", t.prompt_tokens),
            ("completion", t.completion_tokens),
            ("reasoning", t.reasoning_tokens),
        ] {
            let labels = [company, model, window, ("kind", kind)];
            w.sample(MODEL_TOKENS.name, &labels, format_args!("{v}"))?;
        }
    }
    Ok(())
}

/// `window="previous_month"`: the company's final spend in the previous UTC
/// month, from the statements ledger (absent until that month is final).
fn write_previous_month<W: Write>(
    w: &mut MetricWriter<W>,
    snap: &Snapshot,
    company: &CompanyTotals,
) -> io::Result<()> {
    let months = &snap.previous_month;
    let Ok(i) = months.binary_search_by(|(name, _)| name.as_str().cmp(&company.name)) else {
        return Ok(());
    };
    let labels = [
        ("company", company.name.as_str()),
        ("window", "previous_month"),
    ];
    w.sample_usd(USAGE.name, &labels, months[i].1)
}
