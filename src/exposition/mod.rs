//! Prometheus text exposition (format 0.0.4) of a snapshot and of the exporter's status.
//!
//! Everything, the exporter's own metrics included, goes through one small
//! writer ([`MetricWriter`]) into an `io::Write`, once per published body
//! (see `body`), so a scrape only copies bytes. The text format is written
//! directly rather than through the `prometheus` crate's registry because at
//! 100k keys that model allocates a struct per label pair of over a million
//! series on every refresh. This module sees snapshot and status types only.

mod writer;

use std::io::{self, Write};

use crate::config::MetricsOptions;
use crate::snapshot::{Key, Snapshot, Window, COMPLETED_30D, ROLLING};
use crate::telemetry::Counters;

pub use writer::{escape_label_value, MetricWriter, CONTENT_TYPE};

// Until every caller names `crate::status` (the exporter and the page still
// import these from here).
pub use crate::status::{ActivityStatus, Status};

const CALENDAR_NOTE: &str = "window: daily = current UTC day, weekly = current UTC week from Monday, \
monthly = current UTC month (each to date, dropping to 0 at its UTC boundary); lifetime = since the key was created; \
rolling_7d / rolling_30d (from activity collection) = the last 6 / 29 completed UTC days plus today; \
completed_30d (companies only) = the last 30 completed UTC days, today excluded: the model mix's window. \
Refreshed in the background; up to one refresh interval old.";

/// One published key with its identifying labels.
struct KeyRow<'a> {
    key: &'a Key,
    labels: [(&'static str, &'a str); 3],
    rolling: Option<&'a [Option<f64>; 2]>,
}

/// About how long the text of `snap` will be (sizes buffers; decides whether
/// the text is kept beside its gzip): ~2 KB per key with every per-key family,
/// ~2.4 KB with rolling windows.
pub fn text_estimate(snap: &Snapshot, options: MetricsOptions) -> usize {
    let rolling = if snap.key_rolling.is_empty() { 0 } else { 400 };
    let per_key = match (options.per_key, options.per_key_byok) {
        (false, _) => 0,
        (true, true) => 2000 + rolling,
        (true, false) => 1250 + rolling,
    };
    (snap.keys().len() + snap.direct.len()) * per_key + snap.companies.len() * 1000
}

/// Renders every OpenRouter family of a snapshot.
pub fn write_snapshot<W: Write>(
    w: &mut MetricWriter<W>,
    snap: &Snapshot,
    options: MetricsOptions,
) -> io::Result<()> {
    // The published keys with their labels, made afresh for each family.
    let rows = || {
        snap.published_keys().map(|p| KeyRow {
            key: p.key,
            labels: [
                ("key_hash", p.key.hash.as_ref()),
                ("key", p.key.name.as_ref()),
                ("company", snap.companies[p.company].name.as_str()),
            ],
            rolling: p.rolling,
        })
    };
    if options.per_key {
        let name = "openrouter_key_usage_usd";
        w.family(
            name,
            "gauge",
            &format!("OpenRouter credit spend of one API key in US dollars; {CALENDAR_NOTE}"),
        )?;
        for row in rows() {
            let [h, k, c] = row.labels;
            for (window, value) in Window::ALL.into_iter().zip(row.key.usage) {
                if let Some(v) = value {
                    w.sample_f64(name, &[h, k, c, ("window", window.as_str())], v)?;
                }
            }
            for ((window, _), value) in ROLLING.iter().zip(row.rolling.into_iter().flatten()) {
                if let Some(v) = value {
                    w.sample_f64(name, &[h, k, c, ("window", window)], *v)?;
                }
            }
        }

        if options.per_key_byok {
            let name = "openrouter_key_byok_usage_usd";
            w.family(
                name,
                "gauge",
                &format!(
                    "Bring-your-own-key (external provider) spend of one API key in US dollars, \
                     as estimated by OpenRouter; {CALENDAR_NOTE}"
                ),
            )?;
            for row in rows() {
                let [h, k, c] = row.labels;
                for (window, value) in Window::ALL.into_iter().zip(row.key.byok_usage) {
                    if let Some(v) = value {
                        w.sample_f64(name, &[h, k, c, ("window", window.as_str())], v)?;
                    }
                }
            }
        }

        let name = "openrouter_key_limit_usd";
        w.family(
            name,
            "gauge",
            "Credit limit of one API key in US dollars; reset = when the limit restarts \
             (daily/weekly/monthly at the UTC boundary, or never). Absent when the key is unlimited.",
        )?;
        for row in rows() {
            if let Some(limit) = row.key.limit {
                let [h, k, c] = row.labels;
                let reset = row.key.limit_reset.as_deref().unwrap_or("never");
                w.sample_f64(name, &[h, k, c, ("reset", reset)], limit)?;
            }
        }

        let name = "openrouter_key_limit_remaining_usd";
        w.family(
            name,
            "gauge",
            "Credit left under the key's limit in the current limit period, in US dollars; \
             negative when overspent (OpenRouter then refuses the key). Absent when unlimited.",
        )?;
        for row in rows() {
            if let Some(remaining) = row.key.limit_remaining {
                w.sample_f64(name, &row.labels, remaining)?;
            }
        }

        let name = "openrouter_key_disabled";
        w.family(
            name,
            "gauge",
            "1 when the API key is disabled, 0 otherwise. Absent when OpenRouter does not report it \
             (direct keys, older responses).",
        )?;
        for row in rows() {
            if let Some(disabled) = row.key.disabled {
                w.sample(name, &row.labels, format_args!("{}", u8::from(disabled)))?;
            }
        }

        let name = "openrouter_key_expiry_timestamp_seconds";
        w.family(
            name,
            "gauge",
            "When the API key expires, as a Unix timestamp in seconds. Absent when it never expires.",
        )?;
        for row in rows() {
            if let Some(ts) = row.key.expires_at {
                w.sample(name, &row.labels, format_args!("{ts}"))?;
            }
        }

        let org = &snap.organization;
        let name = "openrouter_key_info";
        w.family(
            name,
            "gauge",
            "Metadata of one API key, always 1: label is OpenRouter's masked key, workspace_id its \
             workspace, workspace that workspace's slug (default for the default workspace; empty \
             until the workspace list is read).",
        )?;
        for row in rows() {
            let [h, k, c] = row.labels;
            let workspace_id = row.key.workspace_id.as_deref();
            let labels = [
                h,
                k,
                c,
                ("label", row.key.label.as_ref()),
                ("workspace_id", workspace_id.unwrap_or("")),
                (
                    "workspace",
                    org.workspace_slug(workspace_id).unwrap_or_default(),
                ),
            ];
            w.sample(name, &labels, format_args!("1"))?;
        }

        if org.key_guardrails.is_some() && org.guardrail_caps.is_some() {
            let name = "openrouter_key_guardrail_limit_usd";
            w.family(
                name,
                "gauge",
                "Spending cap in US dollars of a guardrail assigned to the API key, which OpenRouter \
                 enforces beside the key's own limit; reset = daily/weekly/monthly (UTC) or never. \
                 Absent for guardrails without a spending cap. Read every organization_refresh_intervals refreshes.",
            )?;
            for row in rows() {
                let [h, k, c] = row.labels;
                for cap in org.key_caps(&row.key.hash) {
                    let labels = [
                        h,
                        k,
                        c,
                        ("guardrail", cap.name.as_str()),
                        ("reset", cap.reset.as_str()),
                    ];
                    w.sample_f64(name, &labels, cap.limit_usd)?;
                }
            }
        }
    }

    let org = &snap.organization;
    if let Some(budgets) = &org.workspace_budgets {
        let name = "openrouter_workspace_budget_usd";
        w.family(
            name,
            "gauge",
            "Budget in US dollars that OpenRouter enforces on one workspace (GET /workspaces/{id}/budgets); \
             reset = daily/weekly/monthly (UTC) or never. workspace is the slug. \
             Read every organization_refresh_intervals refreshes.",
        )?;
        for (workspace_id, caps) in budgets {
            let slug = org.workspace_slug(Some(workspace_id)).unwrap_or_default();
            for cap in caps {
                let labels = [
                    ("workspace", slug),
                    ("workspace_id", workspace_id.as_str()),
                    ("reset", cap.reset.as_str()),
                ];
                w.sample_f64(name, &labels, cap.limit_usd)?;
            }
        }
    }
    if !org.attempted.is_empty() {
        let name = "openrouter_organization_list_stale";
        w.family(
            name,
            "gauge",
            "1 when the last read of an organization list (workspaces, members, guardrails, \
             guardrail_assignments, workspace_budgets) failed and its last good values are still used \
             (or none, if it never succeeded); 0 when it is current.",
        )?;
        for list in &org.attempted {
            w.sample(
                name,
                &[("list", list.as_str())],
                format_args!("{}", u8::from(org.stale.contains(list))),
            )?;
        }
    }

    let name = "openrouter_company_usage_usd";
    w.family(
        name,
        "gauge",
        &format!(
            "OpenRouter credit spend of one company in US dollars: the exact sum over the keys \
             attributed to it. Absent when a key's figure is unknown. {CALENDAR_NOTE}"
        ),
    )?;
    for company in &snap.companies {
        for (i, window) in Window::ALL.into_iter().enumerate() {
            if let Some(v) = company.usage[i] {
                let labels = [
                    ("company", company.name.as_str()),
                    ("window", window.as_str()),
                ];
                w.sample_usd(name, &labels, v)?;
            }
        }
        for ((window, _), value) in ROLLING.iter().zip(company.rolling) {
            if let Some(v) = value {
                w.sample_usd(
                    name,
                    &[("company", company.name.as_str()), ("window", window)],
                    v,
                )?;
            }
        }
        if let Some(v) = company.completed {
            let labels = [
                ("company", company.name.as_str()),
                ("window", COMPLETED_30D),
            ];
            w.sample_usd(name, &labels, v)?;
        }
    }

    let name = "openrouter_company_byok_usage_usd";
    w.family(
        name,
        "gauge",
        &format!(
            "Bring-your-own-key spend of one company in US dollars, summed over its keys. {CALENDAR_NOTE}"
        ),
    )?;
    for company in &snap.companies {
        for (i, window) in Window::ALL.into_iter().enumerate() {
            if let Some(v) = company.byok_usage[i] {
                let labels = [
                    ("company", company.name.as_str()),
                    ("window", window.as_str()),
                ];
                w.sample_usd(name, &labels, v)?;
            }
        }
    }

    let name = "openrouter_company_budget_usd";
    w.family(
        name,
        "gauge",
        "Budget of one company in US dollars from the exporter config, per UTC calendar window \
         (daily, weekly from Monday, monthly). Absent when not configured.",
    )?;
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
                w.sample_f64(name, &labels, v)?;
            }
        }
    }

    let name = "openrouter_company_keys";
    w.family(
        name,
        "gauge",
        "Number of OpenRouter API keys attributed to the company.",
    )?;
    for company in &snap.companies {
        w.sample(
            name,
            &[("company", company.name.as_str())],
            format_args!("{}", company.keys),
        )?;
    }

    let name = "openrouter_keys_expiry_unreadable";
    w.family(
        name,
        "gauge",
        "Listed keys whose expires_at OpenRouter sent in a form that is not an RFC 3339 date; \
         their expiry timestamp series is absent (expiry unknown).",
    )?;
    w.sample(name, &[], format_args!("{}", snap.unreadable_expiries))?;

    if let Some(credits) = snap.credits {
        let name = "openrouter_account_credits_usd";
        w.family(
            name,
            "gauge",
            "Total credits ever purchased on the OpenRouter account, in US dollars.",
        )?;
        w.sample_f64(name, &[], credits.total_credits)?;
        let name = "openrouter_account_usage_usd";
        w.family(
            name,
            "gauge",
            "Total credits used on the OpenRouter account, all keys, in US dollars (lifetime).",
        )?;
        w.sample_f64(name, &[], credits.total_usage)?;
    }
    if let Some(unattributed) = snap.unattributed_usage {
        let name = "openrouter_account_unattributed_usage_usd";
        w.family(
            name,
            "gauge",
            "Account usage minus the lifetime usage of every listed key, in US dollars: spend of \
             deleted keys, of anything OpenRouter does not list, and of workspaces left out of \
             openrouter.workspaces when that is a subset. Absent when /credits could not be read.",
        )?;
        w.sample_usd(name, &[], unattributed)?;
    }

    if options.per_key && !snap.direct.is_empty() {
        let name = "openrouter_key_up";
        w.family(
            name,
            "gauge",
            "Direct-key mode: 1 when the last GET /key with this key's own secret succeeded, 0 when it \
             failed (e.g. 401: revoked); its figures are then the last good ones, or absent.",
        )?;
        for d in snap.direct.iter() {
            // A key that never answered still gets its 0, so the failure is visible.
            let hash = d.hash();
            let labels = [
                ("key_hash", hash.as_str()),
                ("key", d.name.as_str()),
                ("company", snap.companies[d.company].name.as_str()),
            ];
            w.sample(name, &labels, format_args!("{}", u8::from(d.up)))?;
        }
    }

    if !snap.direct.is_empty() {
        let name = "openrouter_direct_key_also_listed";
        w.family(
            name,
            "gauge",
            "Direct keys that the management API also lists, always 1: counted once, under the \
             direct key's configured company; listed_company is where its selectors would have put it.",
        )?;
        for d in &snap.direct_duplicates {
            let labels = [
                ("key", d.name.as_str()),
                ("company", d.company.as_str()),
                ("listed_company", d.listed_company.as_str()),
            ];
            w.sample(name, &labels, format_args!("1"))?;
        }
    }

    if snap.companies.iter().any(|c| c.models.is_some()) {
        const MIX: &str = "over the last 30 completed UTC days (window=\"completed_30d\", the same window as \
             openrouter_company_usage_usd{window=\"completed_30d\"}, which the models sum to exactly; today is \
             not broken down by model until it completes); the top models by spend, the rest summed as model=\"other\".";
        // One row per (company, model) with its identifying labels.
        let rows = || {
            snap.companies.iter().flat_map(|c| {
                c.models.iter().flatten().map(move |(model, totals)| {
                    let labels = [
                        ("company", c.name.as_str()),
                        ("model", model.as_str()),
                        ("window", COMPLETED_30D),
                    ];
                    (labels, totals)
                })
            })
        };
        let name = "openrouter_company_model_usage_usd";
        w.family(
            name,
            "gauge",
            &format!("Credit spend of one company per model in US dollars, {MIX}"),
        )?;
        for (labels, t) in rows() {
            w.sample_usd(name, &labels, t.usage)?;
        }
        let name = "openrouter_company_model_requests";
        w.family(
            name,
            "gauge",
            &format!("Requests of one company per model, {MIX}"),
        )?;
        for (labels, t) in rows() {
            w.sample(name, &labels, format_args!("{}", t.requests))?;
        }
        let name = "openrouter_company_model_tokens";
        w.family(
            name,
            "gauge",
            &format!(
                "Tokens of one company per model and kind (prompt, completion, reasoning), {MIX}"
            ),
        )?;
        for ([company, model, window], t) in rows() {
            for (kind, v) in [
                ("prompt", t.prompt_tokens),
                ("completion", t.completion_tokens),
                ("reasoning", t.reasoning_tokens),
            ] {
                let labels = [company, model, window, ("kind", kind)];
                w.sample(name, &labels, format_args!("{v}"))?;
            }
        }
    }

    let name = "openrouter_window_end_timestamp_seconds";
    w.family(
        name,
        "gauge",
        "When the UTC calendar window of the published figures resets, as a Unix timestamp in seconds.",
    )?;
    for window in [Window::Daily, Window::Weekly, Window::Monthly] {
        if let Some(end) = window.end(snap.taken_at) {
            w.sample(
                name,
                &[("window", window.as_str())],
                format_args!("{}", end.timestamp()),
            )?;
        }
    }

    let name = "openrouter_config_selector_matches";
    w.family(
        name,
        "gauge",
        "Keys each config selector matched in the last listing; 0 means a typo or a deleted key.",
    )?;
    for m in &snap.selector_matches {
        w.sample(
            name,
            &[
                ("company", m.company.as_str()),
                ("selector", m.selector.as_str()),
            ],
            format_args!("{}", m.matches),
        )?;
    }

    let name = "openrouter_attribution_conflicts";
    w.family(
        name,
        "gauge",
        "Keys claimed by more than one company; each went to the first company in config file order.",
    )?;
    w.sample(name, &[], format_args!("{}", snap.conflicts))?;
    Ok(())
}

/// The exporter's status families and its own counters.
pub fn write_status<W: Write>(
    w: &mut MetricWriter<W>,
    status: &Status,
    counters: &Counters,
) -> io::Result<()> {
    let name = "openrouter_up";
    w.family(
        name,
        "gauge",
        "1 when the last refresh from OpenRouter fully succeeded; 0 when it failed and the \
         previous data is still being served.",
    )?;
    w.sample(name, &[], format_args!("{}", u8::from(status.up)))?;

    if let Some(ts) = status.last_success {
        let name = "openrouter_last_refresh_success_timestamp_seconds";
        w.family(
            name,
            "gauge",
            "When the published OpenRouter data was fetched, as a Unix timestamp in seconds.",
        )?;
        let seconds = ts.timestamp_millis() as f64 / 1000.0;
        w.sample_f64(name, &[], seconds)?;
    }
    if let Some(d) = status.last_duration_seconds {
        let name = "openrouter_refresh_duration_seconds";
        w.family(
            name,
            "gauge",
            "Wall time of the last refresh attempt in seconds.",
        )?;
        w.sample_f64(name, &[], d)?;
    }
    let name = "openrouter_refresh_interval_seconds";
    w.family(
        name,
        "gauge",
        "Configured time between refreshes in seconds.",
    )?;
    w.sample_f64(name, &[], status.refresh_interval_seconds)?;

    if let Some(activity) = status.activity {
        let name = "openrouter_activity_up";
        w.family(
            name,
            "gauge",
            "1 when the last activity run (GET /activity per key, for rolling windows and the model mix) \
             fully succeeded; 0 when a call failed: the results of the other keys are kept, the \
             failed keys' figures stay unknown and are retried on the next run.",
        )?;
        w.sample(name, &[], format_args!("{}", u8::from(activity.up)))?;
        if let Some(ts) = activity.last_success {
            let name = "openrouter_activity_last_success_timestamp_seconds";
            w.family(
                name,
                "gauge",
                "When the last activity run succeeded, as a Unix timestamp in seconds.",
            )?;
            w.sample_f64(name, &[], ts.timestamp_millis() as f64 / 1000.0)?;
        }
        let name = "openrouter_activity_cached_keys";
        w.family(
            name,
            "gauge",
            "Keys whose 30-day activity history is cached (read for today or an earlier UTC day).",
        )?;
        w.sample(name, &[], format_args!("{}", activity.cached_keys))?;
        if let Some(p) = activity.keys {
            let name = "openrouter_activity_keys";
            w.family(
                name,
                "gauge",
                "Listed keys by the state of their 30-day activity history: complete (read for the current \
                 UTC day: rolling windows published), pending (still to read, e.g. after UTC midnight), failed (the last call failed; retried next run), \
                 gone (answered 404: deleted since the listing). A company's rolling totals and model mix \
                 appear once all its keys are complete.",
            )?;
            for (state, n) in [
                ("complete", p.complete),
                ("pending", p.pending),
                ("failed", p.failed),
                ("gone", p.gone),
            ] {
                w.sample(name, &[("state", state)], format_args!("{n}"))?;
            }
        }
    }

    let name = "openrouter_config_last_reload_successful";
    w.family(
        name,
        "gauge",
        "1 when the last config (re)load succeeded; 0 when it failed and the previous config is still in use.",
    )?;
    w.sample(
        name,
        &[],
        format_args!("{}", u8::from(status.reload_successful)),
    )?;

    if let Some(account_up) = status.account_up {
        let name = "openrouter_account_up";
        w.family(
            name,
            "gauge",
            "1 when the last refresh read GET /credits; 0 when it failed: key and company figures \
             are still published, the openrouter_account_* families are absent.",
        )?;
        w.sample(name, &[], format_args!("{}", u8::from(account_up)))?;
    }

    let name = "openrouter_upstream_requests_total";
    w.family(
        name,
        "counter",
        "HTTP calls made to the OpenRouter API by the exporter, retries included, \
         by endpoint and HTTP status code (\"error\" or \"timeout\" when no response came).",
    )?;
    for ((endpoint, code), n) in &counters.upstream_requests {
        w.sample(
            name,
            &[("endpoint", endpoint), ("code", code.as_str())],
            format_args!("{n}"),
        )?;
    }
    let name = "openrouter_upstream_throttled_total";
    w.family(
        name,
        "counter",
        "HTTP calls to the OpenRouter API answered 429 or 503: each one backs every call \
         off (Retry-After honoured) and halves the number of calls in flight.",
    )?;
    w.sample(name, &[], format_args!("{}", counters.upstream_throttled))?;
    let name = "openrouter_refresh_failures_total";
    w.family(
        name,
        "counter",
        "Refreshes (or optional parts of one: credits, activity) that failed, by reason. \
         A failed listing keeps the previous data; see the README's failure table.",
    )?;
    for (reason, n) in &counters.refresh_failures {
        w.sample(name, &[("reason", reason.as_str())], format_args!("{n}"))?;
    }

    let name = "openrouter_exporter_build_info";
    w.family(name, "gauge", "Build of the running exporter, always 1.")?;
    w.sample(
        name,
        &[("version", env!("CARGO_PKG_VERSION"))],
        format_args!("1"),
    )?;
    Ok(())
}
