//! The exporter's own families: its refresh, activity, config and account
//! status and its build (its counters are rendered at each scrape by `telemetry`).

use std::io::{self, Write};

use crate::status::{ActivityStatus, Progress, Status};

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
