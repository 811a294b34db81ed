//! Prometheus text exposition (format 0.0.4) of a snapshot and of the exporter's status.
//!
//! Everything, the exporter's own metrics included, goes through one small
//! writer ([`MetricWriter`]) into an `io::Write`, once per published body
//! (see `body`), so a scrape only copies bytes. The text format is written
//! directly rather than through the `prometheus` crate's registry because at
//! 100k keys that model allocates a struct per label pair of over a million
//! series on every refresh. This module sees snapshot and status types only.
//!
//! Each family's name, type and HELP text is a [`Family`] constant beside the
//! code that writes it: `keys.rs` (per key), `companies.rs`, `organization.rs`,
//! `account.rs` and `status.rs` (the exporter's own); [`families`] lists them all.

/// The note on windows that every spend family's HELP text ends with.
macro_rules! calendar_note {
    () => {
        "window: daily = current UTC day, weekly = current UTC week from Monday, \
monthly = current UTC month (each to date, dropping to 0 at its UTC boundary); lifetime = since the key was created; \
rolling_7d / rolling_30d (from activity collection) = the last 6 / 29 completed UTC days plus today; \
completed_30d (companies only) = the last 30 completed UTC days, today excluded: the model mix's window. \
Refreshed in the background; up to one refresh interval old."
    };
}

mod account;
mod companies;
mod keys;
mod organization;
mod status;
mod writer;

use std::io::{self, Write};

use crate::config::MetricsOptions;
use crate::snapshot::Snapshot;

pub use status::write_status;
pub use writer::{escape_label_value, Family, Kind, MetricWriter, CONTENT_TYPE};

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
    keys::write(w, snap, options)?;
    organization::write(w, &snap.organization)?;
    companies::write_totals(w, snap)?;
    account::write_credits(w, snap)?;
    keys::write_direct(w, snap, options)?;
    companies::write_model_mix(w, snap)?;
    account::write_windows_and_selectors(w, snap)
}

/// Every family the exporter can emit (each appears only when it has
/// something to say); the README's metrics table documents each.
pub fn families() -> impl Iterator<Item = &'static Family> {
    [
        keys::FAMILIES,
        organization::FAMILIES,
        companies::FAMILIES,
        account::FAMILIES,
        status::FAMILIES,
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::config::Config;
    use crate::money::Usd;
    use crate::snapshot::{DepartedKey, DirectKey, Extras, Key, Listing, OrgList, Organization};
    use crate::status::{ActivityStatus, LedgerFigures, LedgerStatus, Progress, Status};
    use crate::upstream::{ApiKey, UpstreamData};

    fn json<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    /// A snapshot in which every OpenRouter family has something to say.
    fn everything() -> (Snapshot, Config) {
        let config =
            Config::parse("companies:\n  acme:\n    keys: [{name_glob: 'a*'}]\n", "t").unwrap();
        let key = r#"{"hash":"h1","name":"a1","label":"sk-1","usage":1,"usage_daily":0.5,
            "limit":5,"limit_remaining":4,"disabled":false,"expires_at":"2027-01-01T00:00:00Z"}"#;
        let data = Arc::new(Listing::from_upstream(UpstreamData {
            keys: vec![json::<ApiKey>(key)],
            credits: Some(json(r#"{"total_credits":10,"total_usage":2}"#)),
            credits_error: None,
        }));
        let mut org = Organization::default();
        org.set_guardrails(json(r#"[{"id":"g","name":"cap","limit_usd":1}]"#));
        org.set_guardrail_assignments(json(r#"[{"key_hash":"h1","guardrail_id":"g"}]"#));
        org.set_workspace_budgets(json(r#"[{"workspace_id":"w","limit_usd":3}]"#));
        org.mark(OrgList::Guardrails, true);
        let direct = DirectKey {
            company: 0,
            name: "d".to_string(),
            key: Some(Key::from(json::<ApiKey>(
                r#"{"hash":"direct:d","usage":1}"#,
            ))),
            fetched_at: None,
            up: true,
        };
        let taken_at = Utc.with_ymd_and_hms(2026, 3, 4, 10, 0, 0).unwrap();
        let gone = Key::from(json::<ApiKey>(
            r#"{"hash":"h0","name":"a0","usage_daily":1}"#,
        ));
        let extras = Extras {
            direct: Arc::new(vec![direct]),
            activity: Some(Arc::new(crate::snapshot::EveryKeyRead)),
            departed: Arc::new(vec![DepartedKey::new(&gone, &org, taken_at)]),
            organization: Arc::new(org),
            previous_month: Arc::new(vec![("acme".to_string(), Usd::from_nanos(1))]),
        };
        (Snapshot::build(&config, data, &extras, taken_at), config)
    }

    /// The names of the families (`# TYPE` lines) in `text`.
    fn rendered_families(text: &str) -> BTreeSet<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect()
    }

    #[test]
    fn the_family_table_is_every_family_written_and_no_other() {
        let (snap, config) = everything();
        let status = Status {
            up: true,
            account_up: Some(true),
            last_success: Some(snap.taken_at),
            last_duration_seconds: Some(1.0),
            refresh_interval_seconds: 60.0,
            reload_successful: true,
            activity: Some(ActivityStatus {
                up: true,
                last_success: Some(snap.taken_at),
                cached_keys: 1,
                keys: Some(Progress::default()),
            }),
            ledger: Some(LedgerStatus {
                up: true,
                last_write: Some(snap.taken_at),
                figures: Some(LedgerFigures::default()),
            }),
        };
        let mut w = MetricWriter::new(Vec::new());
        write_snapshot(&mut w, &snap, config.metrics).unwrap();
        write_status(&mut w, &status).unwrap();
        let text = String::from_utf8(w.into_inner()).unwrap();

        let table: Vec<&str> = families().map(|f| f.name).collect();
        let unique: BTreeSet<&str> = table.iter().copied().collect();
        assert_eq!(unique.len(), table.len(), "a family is listed twice");
        assert_eq!(rendered_families(&text), unique);
    }
}
