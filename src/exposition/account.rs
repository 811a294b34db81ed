//! The account-wide families: credits and usage, spend no listed key
//! accounts for, unreadable expiries; and the refresh's own facts: when the
//! calendar windows end, what each config selector matched, and conflicts.

use std::io::{self, Write};

use crate::snapshot::{Snapshot, Window};

use super::writer::{Family, Kind, MetricWriter};

pub(super) const EXPIRY_UNREADABLE: Family = Family {
    name: "openrouter_keys_expiry_unreadable",
    kind: Kind::Gauge,
    help: "Listed keys whose expires_at OpenRouter sent in a form that is not an RFC 3339 date; \
           their expiry timestamp series is absent (expiry unknown).",
};
pub(super) const CREDITS: Family = Family {
    name: "openrouter_account_credits_usd",
    kind: Kind::Gauge,
    help: "Total credits ever purchased on the OpenRouter account, in US dollars.",
};
pub(super) const USAGE: Family = Family {
    name: "openrouter_account_usage_usd",
    kind: Kind::Gauge,
    help: "Total credits used on the OpenRouter account, all keys, in US dollars (lifetime).",
};
pub(super) const UNATTRIBUTED: Family = Family {
    name: "openrouter_account_unattributed_usage_usd",
    kind: Kind::Gauge,
    help: "Account usage minus the lifetime usage of every listed key, in US dollars: spend of \
           deleted keys, of anything OpenRouter does not list, and of workspaces left out of \
           openrouter.workspaces when that is a subset. Absent when /credits could not be read.",
};
pub(super) const WINDOW_END: Family = Family {
    name: "openrouter_window_end_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When the UTC calendar window of the published figures resets, as a Unix timestamp in seconds.",
};
pub(super) const SELECTOR_MATCHES: Family = Family {
    name: "openrouter_config_selector_matches",
    kind: Kind::Gauge,
    help: "Keys each config selector matched in the last listing; 0 means a typo or a deleted key.",
};
pub(super) const CONFLICTS: Family = Family {
    name: "openrouter_attribution_conflicts",
    kind: Kind::Gauge,
    help: "Keys claimed by more than one company; each went to the first company in config file order.",
};

/// Every family this file writes.
pub(super) const FAMILIES: &[Family] = &[
    EXPIRY_UNREADABLE,
    CREDITS,
    USAGE,
    UNATTRIBUTED,
    WINDOW_END,
    SELECTOR_MATCHES,
    CONFLICTS,
];

/// Unreadable expiries, then the `/credits` figures when it was read.
pub(super) fn write_credits<W: Write>(w: &mut MetricWriter<W>, snap: &Snapshot) -> io::Result<()> {
    w.header(&EXPIRY_UNREADABLE)?;
    let unreadable = snap.unreadable_expiries;
    w.sample(EXPIRY_UNREADABLE.name, &[], format_args!("{unreadable}"))?;
    if let Some(credits) = snap.credits {
        w.header(&CREDITS)?;
        w.sample_f64(CREDITS.name, &[], credits.total_credits)?;
        w.header(&USAGE)?;
        w.sample_f64(USAGE.name, &[], credits.total_usage)?;
    }
    if let Some(unattributed) = snap.unattributed_usage {
        w.header(&UNATTRIBUTED)?;
        w.sample_usd(UNATTRIBUTED.name, &[], unattributed)?;
    }
    Ok(())
}

/// Window ends, selector matches and attribution conflicts.
pub(super) fn write_windows_and_selectors<W: Write>(
    w: &mut MetricWriter<W>,
    snap: &Snapshot,
) -> io::Result<()> {
    w.header(&WINDOW_END)?;
    for window in [Window::Daily, Window::Weekly, Window::Monthly] {
        if let Some(end) = window.end(snap.taken_at) {
            w.sample(
                WINDOW_END.name,
                &[("window", window.as_str())],
                format_args!("{}", end.timestamp()),
            )?;
        }
    }
    w.header(&SELECTOR_MATCHES)?;
    for m in &snap.selector_matches {
        w.sample(
            SELECTOR_MATCHES.name,
            &[
                ("company", m.company.as_str()),
                ("selector", m.selector.as_str()),
            ],
            format_args!("{}", m.matches),
        )?;
    }
    w.header(&CONFLICTS)?;
    w.sample(CONFLICTS.name, &[], format_args!("{}", snap.conflicts))
}
