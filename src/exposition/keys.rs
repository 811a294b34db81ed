//! The per-key families (`openrouter_key_*`) of the published keys, which
//! keys have left the listing, and the direct keys' own: whether each
//! answered, and which the listing also holds.

use std::io::{self, Write};

use crate::config::MetricsOptions;
use crate::snapshot::{Key, Snapshot, Window, ROLLING};

use super::writer::{Family, Kind, MetricWriter};

pub(super) const USAGE: Family = Family {
    name: "openrouter_key_usage_usd",
    kind: Kind::Gauge,
    help: concat!(
        "OpenRouter credit spend of one API key in US dollars; ",
        calendar_note!()
    ),
};
pub(super) const BYOK_USAGE: Family = Family {
    name: "openrouter_key_byok_usage_usd",
    kind: Kind::Gauge,
    help: concat!(
        "Bring-your-own-key (external provider) spend of one API key in US dollars, \
         as estimated by OpenRouter; ",
        calendar_note!()
    ),
};
pub(super) const LIMIT: Family = Family {
    name: "openrouter_key_limit_usd",
    kind: Kind::Gauge,
    help: "Credit limit of one API key in US dollars; reset = when the limit restarts \
           (daily/weekly/monthly at the UTC boundary, or never). Absent when the key is unlimited.",
};
pub(super) const LIMIT_REMAINING: Family = Family {
    name: "openrouter_key_limit_remaining_usd",
    kind: Kind::Gauge,
    help: "Credit left under the key's limit in the current limit period, in US dollars; \
           negative when overspent (OpenRouter then refuses the key). Absent when unlimited.",
};
pub(super) const DISABLED: Family = Family {
    name: "openrouter_key_disabled",
    kind: Kind::Gauge,
    help: "1 when the API key is disabled, 0 otherwise. Absent when OpenRouter does not report it \
           (direct keys, older responses).",
};
pub(super) const EXPIRY: Family = Family {
    name: "openrouter_key_expiry_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When the API key expires, as a Unix timestamp in seconds. Absent when it never expires.",
};
pub(super) const INFO: Family = Family {
    name: "openrouter_key_info",
    kind: Kind::Gauge,
    help: "Metadata of one API key, always 1: label is OpenRouter's masked key, workspace_id its \
           workspace, workspace that workspace's slug (default for the default workspace; empty \
           until the workspace list is read).",
};
pub(super) const GUARDRAIL_LIMIT: Family = Family {
    name: "openrouter_key_guardrail_limit_usd",
    kind: Kind::Gauge,
    help: "Spending cap in US dollars of a guardrail assigned to the API key, which OpenRouter \
           enforces beside the key's own limit; reset = daily/weekly/monthly (UTC) or never. \
           Absent for guardrails without a spending cap. Read every organization_refresh_intervals refreshes.",
};
pub(super) const DEPARTED: Family = Family {
    name: "openrouter_key_departed",
    kind: Kind::Gauge,
    help: "Keys no longer listed (e.g. deleted or rotated), always 1: their last figures keep \
           counting in their company's daily, weekly and monthly totals until each window ends, and \
           the key in openrouter_company_keys. Of their other series only openrouter_key_info and \
           the usage of the windows still held remain. Held in memory: forgotten at a restart.",
};
pub(super) const UP: Family = Family {
    name: "openrouter_key_up",
    kind: Kind::Gauge,
    help:
        "Direct-key mode: 1 when the last GET /key with this key's own secret succeeded, 0 when it \
           failed (e.g. 401: revoked); its figures are then the last good ones, or absent.",
};
pub(super) const DIRECT_ALSO_LISTED: Family = Family {
    name: "openrouter_direct_key_also_listed",
    kind: Kind::Gauge,
    help: "Direct keys that the management API also lists, always 1: counted once, under the \
           direct key's configured company; listed_company is where its selectors would have put it.",
};

/// Every family this file writes.
pub(super) const FAMILIES: &[Family] = &[
    USAGE,
    BYOK_USAGE,
    LIMIT,
    LIMIT_REMAINING,
    DISABLED,
    EXPIRY,
    INFO,
    GUARDRAIL_LIMIT,
    DEPARTED,
    UP,
    DIRECT_ALSO_LISTED,
];

/// One published key with its identifying labels.
struct KeyRow<'a> {
    key: &'a Key,
    labels: [(&'static str, &'a str); 3],
    rolling: Option<&'a [Option<f64>; 2]>,
    departed: bool,
}

/// The published keys ([`Snapshot::published_keys`]) with their labels, made
/// afresh for each family.
fn rows(snap: &Snapshot) -> impl Iterator<Item = KeyRow<'_>> {
    snap.published_keys().map(|p| KeyRow {
        key: p.key,
        labels: [
            ("key_hash", p.key.hash.as_ref()),
            ("key", p.key.name.as_ref()),
            ("company", snap.companies[p.company].name.as_str()),
        ],
        rolling: p.rolling,
        departed: p.departed.is_some(),
    })
}

/// The `openrouter_key_*` families of the published keys (none unless `per_key`).
pub(super) fn write<W: Write>(
    w: &mut MetricWriter<W>,
    snap: &Snapshot,
    options: MetricsOptions,
) -> io::Result<()> {
    if !options.per_key {
        return Ok(());
    }
    write_usage(w, snap, options)?;
    write_limits(w, snap)?;
    write_disabled_and_expiry(w, snap)?;
    write_info(w, snap)?;
    write_guardrails(w, snap)?;
    write_departed(w, snap)
}

/// Spend per window (rolling ones from activity), and BYOK spend when asked.
fn write_usage<W: Write>(
    w: &mut MetricWriter<W>,
    snap: &Snapshot,
    options: MetricsOptions,
) -> io::Result<()> {
    let name = USAGE.name;
    w.header(&USAGE)?;
    for row in rows(snap) {
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
    if !options.per_key_byok {
        return Ok(());
    }
    let name = BYOK_USAGE.name;
    w.header(&BYOK_USAGE)?;
    for row in rows(snap) {
        let [h, k, c] = row.labels;
        for (window, value) in Window::ALL.into_iter().zip(row.key.byok_usage) {
            if let Some(v) = value {
                w.sample_f64(name, &[h, k, c, ("window", window.as_str())], v)?;
            }
        }
    }
    Ok(())
}

/// The key's own credit limit and what is left of it.
fn write_limits<W: Write>(w: &mut MetricWriter<W>, snap: &Snapshot) -> io::Result<()> {
    w.header(&LIMIT)?;
    for row in rows(snap) {
        if let Some(limit) = row.key.limit {
            let [h, k, c] = row.labels;
            let reset = row.key.limit_reset.as_deref().unwrap_or("never");
            w.sample_f64(LIMIT.name, &[h, k, c, ("reset", reset)], limit)?;
        }
    }
    w.header(&LIMIT_REMAINING)?;
    for row in rows(snap) {
        if let Some(remaining) = row.key.limit_remaining {
            w.sample_f64(LIMIT_REMAINING.name, &row.labels, remaining)?;
        }
    }
    Ok(())
}

fn write_disabled_and_expiry<W: Write>(w: &mut MetricWriter<W>, snap: &Snapshot) -> io::Result<()> {
    w.header(&DISABLED)?;
    for row in rows(snap) {
        if let Some(disabled) = row.key.disabled {
            let value = u8::from(disabled);
            w.sample(DISABLED.name, &row.labels, format_args!("{value}"))?;
        }
    }
    w.header(&EXPIRY)?;
    for row in rows(snap) {
        if let Some(ts) = row.key.expires_at {
            w.sample(EXPIRY.name, &row.labels, format_args!("{ts}"))?;
        }
    }
    Ok(())
}

/// Masked key and workspace of every published key.
fn write_info<W: Write>(w: &mut MetricWriter<W>, snap: &Snapshot) -> io::Result<()> {
    let org = &snap.organization;
    w.header(&INFO)?;
    for row in rows(snap) {
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
        w.sample(INFO.name, &labels, format_args!("1"))?;
    }
    Ok(())
}

/// The guardrail caps assigned to each key, once both guardrail lists are read.
fn write_guardrails<W: Write>(w: &mut MetricWriter<W>, snap: &Snapshot) -> io::Result<()> {
    let org = &snap.organization;
    if org.key_guardrails.is_none() || org.guardrail_caps.is_none() {
        return Ok(());
    }
    w.header(&GUARDRAIL_LIMIT)?;
    // A departed key's assignments go at the next read of the lists.
    for row in rows(snap).filter(|r| !r.departed) {
        let [h, k, c] = row.labels;
        for cap in org.key_caps(&row.key.hash) {
            let labels = [
                h,
                k,
                c,
                ("guardrail", cap.name.as_str()),
                ("reset", cap.reset.as_str()),
            ];
            w.sample_f64(GUARDRAIL_LIMIT.name, &labels, cap.limit_usd)?;
        }
    }
    Ok(())
}

/// The keys that left the listing and still count (absent while none does).
fn write_departed<W: Write>(w: &mut MetricWriter<W>, snap: &Snapshot) -> io::Result<()> {
    if snap.departed.is_empty() {
        return Ok(());
    }
    w.header(&DEPARTED)?;
    for row in rows(snap).filter(|r| r.departed) {
        w.sample(DEPARTED.name, &row.labels, format_args!("1"))?;
    }
    Ok(())
}

/// Whether each direct key answered (with `per_key`), and the direct keys
/// the listing also holds.
pub(super) fn write_direct<W: Write>(
    w: &mut MetricWriter<W>,
    snap: &Snapshot,
    options: MetricsOptions,
) -> io::Result<()> {
    if snap.direct.is_empty() {
        return Ok(());
    }
    if options.per_key {
        w.header(&UP)?;
        for d in snap.direct.iter() {
            // A key that never answered still gets its 0, so the failure is visible.
            let hash = d.hash();
            let labels = [
                ("key_hash", hash.as_str()),
                ("key", d.name.as_str()),
                ("company", snap.companies[d.company].name.as_str()),
            ];
            w.sample(UP.name, &labels, format_args!("{}", u8::from(d.up)))?;
        }
    }
    w.header(&DIRECT_ALSO_LISTED)?;
    for d in &snap.direct_duplicates {
        let labels = [
            ("key", d.name.as_str()),
            ("company", d.company.as_str()),
            ("listed_company", d.listed_company.as_str()),
        ];
        w.sample(DIRECT_ALSO_LISTED.name, &labels, format_args!("1"))?;
    }
    Ok(())
}
