//! The exporter's own families: its refresh, activity, ledger, config and
//! account status and its build (its counters are rendered at each scrape by
//! `telemetry`).

use std::io::{self, Write};

use crate::status::{ActivityStatus, LedgerStatus, Progress, Status};

use super::writer::{Family, Kind, MetricWriter};

pub(super) const UP: Family = Family {
    name: "openrouter_up",
    kind: Kind::Gauge,
    help: "1 when the last refresh from OpenRouter fully succeeded; 0 when it failed and the \
           previous data is still being served.",
};
pub(super) const LAST_SUCCESS: Family = Family {
    name: "openrouter_last_refresh_success_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When the published OpenRouter data was fetched, as a Unix timestamp in seconds.",
};
pub(super) const DURATION: Family = Family {
    name: "openrouter_refresh_duration_seconds",
    kind: Kind::Gauge,
    help: "Wall time of the last refresh attempt in seconds.",
};
pub(super) const INTERVAL: Family = Family {
    name: "openrouter_refresh_interval_seconds",
    kind: Kind::Gauge,
    help: "Configured time between refreshes in seconds.",
};
pub(super) const ACTIVITY_UP: Family = Family {
    name: "openrouter_activity_up",
    kind: Kind::Gauge,
    help: "1 when the last activity run (GET /activity per key, for rolling windows and the model mix) \
           fully succeeded; 0 when a call failed: the results of the other keys are kept, the \
           failed keys' figures stay unknown and are retried on the next run.",
};
pub(super) const ACTIVITY_LAST_SUCCESS: Family = Family {
    name: "openrouter_activity_last_success_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When the last activity run succeeded, as a Unix timestamp in seconds.",
};
pub(super) const ACTIVITY_CACHED_KEYS: Family = Family {
    name: "openrouter_activity_cached_keys",
    kind: Kind::Gauge,
    help: "Keys whose 30-day activity history is cached (read for today or an earlier UTC day).",
};
pub(super) const ACTIVITY_KEYS: Family = Family {
    name: "openrouter_activity_keys",
    kind: Kind::Gauge,
    help: "Listed keys by the state of their 30-day activity history: complete (read for the current \
           UTC day: rolling windows published), pending (still to read, e.g. after UTC midnight), failed (the last call failed; retried next run), \
           gone (answered 404: deleted since the listing). A company's rolling totals and model mix \
           appear once all its keys are complete.",
};
pub(super) const RELOAD_SUCCESSFUL: Family = Family {
    name: "openrouter_config_last_reload_successful",
    kind: Kind::Gauge,
    help: "1 when the last config (re)load succeeded; 0 when it failed and the previous config is still in use.",
};
pub(super) const ACCOUNT_UP: Family = Family {
    name: "openrouter_account_up",
    kind: Kind::Gauge,
    help: "1 when the last refresh read GET /credits; 0 when it failed: key and company figures \
           are still published, the openrouter_account_* families are absent.",
};
pub(super) const LEDGER_UP: Family = Family {
    name: "openrouter_ledger_up",
    kind: Kind::Gauge,
    help: "1 when the statements ledger (the SQLite file in --storage.path) is open and its last write \
           succeeded; 0 when it cannot be opened (held by another exporter, corrupt, directory not \
           writable) or a write failed. /metrics is unaffected; the statement pages answer 503 while \
           it cannot be opened.",
};
pub(super) const LEDGER_LAST_WRITE: Family = Family {
    name: "openrouter_ledger_last_write_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When a write to the statements ledger last committed, as a Unix timestamp in seconds \
           (activity reads, hourly listings).",
};
pub(super) const LEDGER_DATES: Family = Family {
    name: "openrouter_ledger_dates",
    kind: Kind::Gauge,
    help: "Past UTC dates the statements ledger holds (within --storage.retention), by status: settled \
           (every key's figures read at least 6 h after the day ended: they will not change) or \
           provisional.",
};
pub(super) const LEDGER_SIZE: Family = Family {
    name: "openrouter_ledger_size_bytes",
    kind: Kind::Gauge,
    help:
        "Size of the statements ledger on disk in bytes (the SQLite file and its write-ahead log).",
};
pub(super) const LEDGER_RESTATEMENTS: Family = Family {
    name: "openrouter_ledger_restatements_total",
    kind: Kind::Counter,
    help:
        "Settled days (of a key, or of the account) whose figures a later /activity read changed (each replaced and logged), \
           since the ledger was created.",
};
pub(super) const BUILD_INFO: Family = Family {
    name: "openrouter_exporter_build_info",
    kind: Kind::Gauge,
    help: "Build of the running exporter, always 1.",
};

/// Every family this file writes.
pub(super) const FAMILIES: &[Family] = &[
    UP,
    LAST_SUCCESS,
    DURATION,
    INTERVAL,
    ACTIVITY_UP,
    ACTIVITY_LAST_SUCCESS,
    ACTIVITY_CACHED_KEYS,
    ACTIVITY_KEYS,
    LEDGER_UP,
    LEDGER_LAST_WRITE,
    LEDGER_DATES,
    LEDGER_SIZE,
    LEDGER_RESTATEMENTS,
    RELOAD_SUCCESSFUL,
    ACCOUNT_UP,
    BUILD_INFO,
];

/// Unix seconds with milliseconds, as the timestamp families carry them.
fn seconds(ts: chrono::DateTime<chrono::Utc>) -> f64 {
    ts.timestamp_millis() as f64 / 1000.0
}

/// The exporter's status families. Its counters are not here: they are
/// fresh at every scrape (`telemetry`).
pub fn write_status<W: Write>(w: &mut MetricWriter<W>, status: &Status) -> io::Result<()> {
    write_refresh(w, status)?;
    if let Some(activity) = &status.activity {
        write_activity(w, activity)?;
    }
    if let Some(ledger) = &status.ledger {
        write_ledger(w, ledger)?;
    }
    w.header(&RELOAD_SUCCESSFUL)?;
    let reloaded = u8::from(status.reload_successful);
    w.sample(RELOAD_SUCCESSFUL.name, &[], format_args!("{reloaded}"))?;
    if let Some(account_up) = status.account_up {
        w.header(&ACCOUNT_UP)?;
        w.sample(
            ACCOUNT_UP.name,
            &[],
            format_args!("{}", u8::from(account_up)),
        )?;
    }
    w.header(&BUILD_INFO)?;
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    w.sample(BUILD_INFO.name, &version, format_args!("1"))
}

/// Whether the last refresh succeeded, when one last did, how long it took,
/// and how often refreshes run.
fn write_refresh<W: Write>(w: &mut MetricWriter<W>, status: &Status) -> io::Result<()> {
    w.header(&UP)?;
    w.sample(UP.name, &[], format_args!("{}", u8::from(status.up)))?;
    if let Some(ts) = status.last_success {
        w.header(&LAST_SUCCESS)?;
        w.sample_f64(LAST_SUCCESS.name, &[], seconds(ts))?;
    }
    if let Some(d) = status.last_duration_seconds {
        w.header(&DURATION)?;
        w.sample_f64(DURATION.name, &[], d)?;
    }
    w.header(&INTERVAL)?;
    w.sample_f64(INTERVAL.name, &[], status.refresh_interval_seconds)
}

/// The activity runs' state (present while activity collection is on).
fn write_activity<W: Write>(w: &mut MetricWriter<W>, activity: &ActivityStatus) -> io::Result<()> {
    w.header(&ACTIVITY_UP)?;
    w.sample(
        ACTIVITY_UP.name,
        &[],
        format_args!("{}", u8::from(activity.up)),
    )?;
    if let Some(ts) = activity.last_success {
        w.header(&ACTIVITY_LAST_SUCCESS)?;
        w.sample_f64(ACTIVITY_LAST_SUCCESS.name, &[], seconds(ts))?;
    }
    w.header(&ACTIVITY_CACHED_KEYS)?;
    let cached = activity.cached_keys;
    w.sample(ACTIVITY_CACHED_KEYS.name, &[], format_args!("{cached}"))?;
    if let Some(p) = activity.keys {
        write_progress(w, p)?;
    }
    Ok(())
}

fn write_progress<W: Write>(w: &mut MetricWriter<W>, p: Progress) -> io::Result<()> {
    w.header(&ACTIVITY_KEYS)?;
    for (state, n) in [
        ("complete", p.complete),
        ("pending", p.pending),
        ("failed", p.failed),
        ("gone", p.gone),
    ] {
        w.sample(ACTIVITY_KEYS.name, &[("state", state)], format_args!("{n}"))?;
    }
    Ok(())
}

/// The statements ledger's health (present when the exporter runs with one).
fn write_ledger<W: Write>(w: &mut MetricWriter<W>, ledger: &LedgerStatus) -> io::Result<()> {
    w.header(&LEDGER_UP)?;
    w.sample(LEDGER_UP.name, &[], format_args!("{}", u8::from(ledger.up)))?;
    if let Some(ts) = ledger.last_write {
        w.header(&LEDGER_LAST_WRITE)?;
        w.sample_f64(LEDGER_LAST_WRITE.name, &[], seconds(ts))?;
    }
    let Some(f) = ledger.figures else {
        return Ok(());
    };
    w.header(&LEDGER_DATES)?;
    for (status, days) in [
        ("settled", f.days_settled),
        ("provisional", f.days_provisional),
    ] {
        w.sample(
            LEDGER_DATES.name,
            &[("status", status)],
            format_args!("{days}"),
        )?;
    }
    w.header(&LEDGER_SIZE)?;
    w.sample(LEDGER_SIZE.name, &[], format_args!("{}", f.size_bytes))?;
    w.header(&LEDGER_RESTATEMENTS)?;
    w.sample(
        LEDGER_RESTATEMENTS.name,
        &[],
        format_args!("{}", f.restated_days_total),
    )
}
