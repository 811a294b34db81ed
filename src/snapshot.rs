//! One refresh's view of the account: every key with its company, per-company
//! totals, and account figures. Built from config + upstream data, then rendered.
//!
//! Sums are exact: amounts are added as integer nano-dollars (OpenRouter reports
//! at most 9 decimals), so a company total equals the sum of its keys to the
//! last reported digit, with no float drift. An unknown amount makes every sum
//! that includes it unknown; it never counts as zero.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};

use crate::activity::{top_models, ActivityCache, ModelTotals};
use crate::attribution::Attributor;
use crate::config::{Budget, Config};
use crate::upstream::{ApiKey, Credits, UpstreamData};

/// Rolling windows built from activity: (label, completed days added to today's usage).
pub const ROLLING: [(&str, i64); 2] = [("rolling_7d", 6), ("rolling_30d", 29)];

/// A key polled with its own secret (`GET /key`), not listed by the management API.
#[derive(Debug, Clone)]
pub struct DirectKey {
    /// Index into the config's companies.
    pub company: usize,
    /// The key's name from the config.
    pub name: String,
    /// Last good figures (`hash` = `direct:<name>`); `None` until the first success.
    pub key: Option<ApiKey>,
    /// Whether the last poll succeeded.
    pub up: bool,
}

/// What a snapshot is built from besides the listing.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub direct: Arc<Vec<DirectKey>>,
    /// Present once an activity run has succeeded.
    pub activity: Option<Arc<ActivityCache>>,
}

/// The calendar windows OpenRouter reports, plus lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Daily,
    Weekly,
    Monthly,
    Lifetime,
}

impl Window {
    pub const ALL: [Window; 4] = [
        Window::Daily,
        Window::Weekly,
        Window::Monthly,
        Window::Lifetime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Daily => "daily",
            Window::Weekly => "weekly",
            Window::Monthly => "monthly",
            Window::Lifetime => "lifetime",
        }
    }

    /// When the calendar window containing `now` resets (UTC); `None` for lifetime.
    pub fn end(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = now.date_naive();
        let next_day = |d: NaiveDate| d.succ_opt();
        let end_date = match self {
            Window::Daily => next_day(today)?,
            Window::Weekly => {
                let days_to_monday = 7 - i64::from(today.weekday().num_days_from_monday());
                today.checked_add_signed(ChronoDuration::days(days_to_monday))?
            }
            Window::Monthly => {
                let (y, m) = if today.month() == 12 {
                    (today.year() + 1, 1)
                } else {
                    (today.year(), today.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)?
            }
            Window::Lifetime => return None,
        };
        Some(Utc.from_utc_datetime(&end_date.and_hms_opt(0, 0, 0)?))
    }
}

/// US dollars as integer nano-dollars: exact sums of what OpenRouter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Usd(i128);

impl Usd {
    pub const ZERO: Usd = Usd(0);

    /// `None` for NaN or infinities, which have no place in an exposition.
    pub fn from_f64(value: f64) -> Option<Usd> {
        if !value.is_finite() {
            return None;
        }
        let nanos = (value * 1e9).round();
        // i128 holds any finite f64 scaled by 1e9 up to ~1.7e29 dollars.
        if nanos.abs() >= 1e38 {
            return None;
        }
        Some(Usd(nanos as i128))
    }

    pub fn nanos(self) -> i128 {
        self.0
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).map(Usd)
    }
}

impl std::fmt::Display for Usd {
    /// Exact decimal, shortest form: `12.5`, `-0.000000001`, `3`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / 1_000_000_000;
        let frac = abs % 1_000_000_000;
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// Per-window amounts; `None` = unknown.
pub type WindowAmounts = [Option<Usd>; 4];

#[derive(Debug, Clone)]
pub struct CompanyTotals {
    pub name: String,
    pub budget: Budget,
    pub keys: u64,
    pub usage: WindowAmounts,
    pub byok_usage: WindowAmounts,
    /// rolling_7d, rolling_30d; `None` without complete activity data.
    pub rolling: [Option<Usd>; 2],
    /// Top models by spend over the last 30 completed days, the rest as `other`.
    pub models: Option<Vec<(String, ModelTotals)>>,
}

#[derive(Debug, Clone)]
pub struct SelectorMatches {
    pub company: String,
    pub selector: String,
    pub matches: u64,
}

/// Everything `/metrics` publishes about OpenRouter for one successful refresh.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// The listing this snapshot was built from, shared, not copied.
    pub data: Arc<UpstreamData>,
    /// Parallel to `keys`: index into `companies`.
    pub company_of_key: Vec<usize>,
    /// Config companies in file order, then the unassigned company.
    pub companies: Vec<CompanyTotals>,
    pub selector_matches: Vec<SelectorMatches>,
    pub conflicts: u64,
    pub credits: Option<Credits>,
    /// Account usage minus the lifetime usage of every listed key.
    pub unattributed_usage: Option<Usd>,
    /// Direct keys: (key, company index, up). Keys without any data yet have no figures.
    pub direct: Arc<Vec<DirectKey>>,
    /// Parallel to `keys()`: rolling_7d and rolling_30d of each listed key.
    pub key_rolling: Vec<[Option<f64>; 2]>,
    /// Direct keys also found in the listing (same masked label): not counted twice.
    pub direct_duplicates: Vec<String>,
}

pub fn key_usage(key: &ApiKey, window: Window) -> Option<f64> {
    match window {
        Window::Daily => key.usage_daily,
        Window::Weekly => key.usage_weekly,
        Window::Monthly => key.usage_monthly,
        Window::Lifetime => key.usage,
    }
}

pub fn key_byok_usage(key: &ApiKey, window: Window) -> Option<f64> {
    match window {
        Window::Daily => key.byok_usage_daily,
        Window::Weekly => key.byok_usage_weekly,
        Window::Monthly => key.byok_usage_monthly,
        Window::Lifetime => key.byok_usage,
    }
}

/// Adds `value` into `total`; an unknown value poisons the total.
fn accumulate(total: &mut Option<Usd>, value: Option<f64>) {
    *total = match (*total, value.and_then(Usd::from_f64)) {
        (Some(t), Some(v)) => t.checked_add(v),
        _ => None,
    };
}

impl Snapshot {
    pub fn build(
        config: &Config,
        data: Arc<UpstreamData>,
        extras: &Extras,
        taken_at: DateTime<Utc>,
    ) -> Snapshot {
        let attributor = Attributor::new(config);
        let attribution = attributor.attribute(&data.keys);

        let mut companies: Vec<CompanyTotals> = config
            .companies
            .iter()
            .map(|c| (c.name.clone(), c.budget))
            .chain(std::iter::once((
                config.unassigned_company.clone(),
                Budget::default(),
            )))
            .map(|(name, budget)| CompanyTotals {
                name,
                budget,
                keys: 0,
                usage: [Some(Usd::ZERO); 4],
                byok_usage: [Some(Usd::ZERO); 4],
                rolling: [Some(Usd::ZERO); 2],
                models: Some(Vec::new()),
            })
            .collect();
        let today = taken_at.date_naive();
        let activity = extras.activity.as_deref();
        let mut model_sums: Vec<Option<std::collections::BTreeMap<String, ModelTotals>>> =
            vec![Some(Default::default()); companies.len()];
        let mut key_rolling = Vec::with_capacity(if activity.is_some() {
            data.keys.len()
        } else {
            0
        });

        let mut all_keys_lifetime = Some(Usd::ZERO);
        for (key, &company) in data.keys.iter().zip(&attribution.company_of_key) {
            let totals = &mut companies[company];
            totals.keys += 1;
            for (i, window) in Window::ALL.into_iter().enumerate() {
                accumulate(&mut totals.usage[i], key_usage(key, window));
                accumulate(&mut totals.byok_usage[i], key_byok_usage(key, window));
            }
            accumulate(&mut all_keys_lifetime, key.usage);
            if let Some(cache) = activity {
                let mut rolling = [None; 2];
                for (i, (_, days)) in ROLLING.iter().enumerate() {
                    let value = match (
                        cache.completed_usage(&key.hash, today, *days),
                        key.usage_daily,
                    ) {
                        (Some(done), Some(today_usage)) => {
                            Usd::from_f64(today_usage).and_then(|t| t.checked_add(done))
                        }
                        _ => None,
                    };
                    rolling[i] = value.map(|v| v.nanos() as f64 / 1e9);
                    totals.rolling[i] = match (totals.rolling[i], value) {
                        (Some(a), Some(b)) => a.checked_add(b),
                        _ => None,
                    };
                }
                key_rolling.push(rolling);
                let mix = &mut model_sums[company];
                match (mix.as_mut(), cache.models(&key.hash, today, 30)) {
                    (Some(mix), Some(models)) => {
                        for (model, t) in models {
                            mix.entry(model).or_default().add(&t);
                        }
                    }
                    _ => *mix = None,
                }
            }
        }

        // Direct keys: their company is fixed by the config; a key also listed
        // by the management API (same masked label) is counted there only.
        // Built only when some direct key has figures: 100k labels otherwise for nothing.
        let listed_labels: std::collections::HashSet<&str> =
            if extras.direct.iter().any(|d| d.key.is_some()) {
                data.keys
                    .iter()
                    .map(|k| k.label.as_str())
                    .filter(|l| !l.is_empty())
                    .collect()
            } else {
                Default::default()
            };
        let mut direct_duplicates = Vec::new();
        for direct in extras.direct.iter() {
            let totals = &mut companies[direct.company];
            let Some(key) = &direct.key else {
                // Never polled successfully: the company's figures are unknown.
                totals.usage = [None; 4];
                totals.byok_usage = [None; 4];
                totals.rolling = [None; 2];
                continue;
            };
            if listed_labels.contains(key.label.as_str()) {
                direct_duplicates.push(key.name.clone());
                continue;
            }
            totals.keys += 1;
            for (i, window) in Window::ALL.into_iter().enumerate() {
                accumulate(&mut totals.usage[i], key_usage(key, window));
                accumulate(&mut totals.byok_usage[i], key_byok_usage(key, window));
            }
            // Activity needs a key hash, which direct mode does not have.
            totals.rolling = [None; 2];
            model_sums[direct.company] = None;
        }
        if activity.is_some() {
            for (totals, mix) in companies.iter_mut().zip(model_sums) {
                totals.models = mix.map(|m| top_models(m, config.activity.top_models));
            }
        } else {
            for totals in &mut companies {
                totals.rolling = [None; 2];
                totals.models = None;
            }
        }

        let unattributed_usage = match (data.credits, all_keys_lifetime) {
            (Some(credits), Some(keys_total)) => {
                Usd::from_f64(credits.total_usage).and_then(|u| u.checked_sub(keys_total))
            }
            _ => None,
        };

        let selector_matches = config
            .companies
            .iter()
            .zip(&attribution.selector_matches)
            .flat_map(|(company, counts)| {
                company
                    .selectors
                    .iter()
                    .zip(counts)
                    .map(|(selector, &matches)| SelectorMatches {
                        company: company.name.clone(),
                        selector: selector.to_string(),
                        matches,
                    })
            })
            .collect();

        Snapshot {
            taken_at,
            company_of_key: attribution.company_of_key,
            companies,
            selector_matches,
            conflicts: attribution.conflicts,
            credits: data.credits,
            unattributed_usage,
            data,
            direct: Arc::clone(&extras.direct),
            key_rolling,
            direct_duplicates,
        }
    }

    pub fn keys(&self) -> &[ApiKey] {
        &self.data.keys
    }

    pub fn company_of(&self, key_index: usize) -> &str {
        &self.companies[self.company_of_key[key_index]].name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_sums_are_exact_where_f64_drifts() {
        let parts = [0.1, 0.2, 0.3, 454.542594979, -29.9999982];
        let f64_sum: f64 = parts.iter().sum();
        let mut exact = Some(Usd::ZERO);
        for p in parts {
            accumulate(&mut exact, Some(p));
        }
        assert_eq!(exact.unwrap().to_string(), "425.142596779");
        assert_ne!(f64_sum.to_string(), "425.142596779");
    }

    #[test]
    fn usd_formats_exact_decimals() {
        assert_eq!(Usd::from_f64(12.5).unwrap().to_string(), "12.5");
        assert_eq!(Usd::from_f64(3.0).unwrap().to_string(), "3");
        assert_eq!(Usd::from_f64(-0.25).unwrap().to_string(), "-0.25");
        assert_eq!(Usd::from_f64(-1e-9).unwrap().to_string(), "-0.000000001");
        assert_eq!(Usd::from_f64(f64::NAN), None);
        assert_eq!(Usd::from_f64(f64::INFINITY), None);
    }

    #[test]
    fn unknown_poisons_the_sum() {
        let mut total = Some(Usd::ZERO);
        accumulate(&mut total, Some(1.0));
        accumulate(&mut total, None);
        accumulate(&mut total, Some(1.0));
        assert_eq!(total, None);
    }

    #[test]
    fn window_ends_are_utc_calendar_boundaries() {
        // Wednesday 2026-12-30 15:00 UTC.
        let now = Utc.with_ymd_and_hms(2026, 12, 30, 15, 0, 0).unwrap();
        let ymd = |w: Window| w.end(now).unwrap().format("%Y-%m-%d %H:%M").to_string();
        assert_eq!(ymd(Window::Daily), "2026-12-31 00:00");
        assert_eq!(ymd(Window::Weekly), "2027-01-04 00:00"); // next Monday
        assert_eq!(ymd(Window::Monthly), "2027-01-01 00:00");
        assert_eq!(Window::Lifetime.end(now), None);
        // On a Monday the week ends the next Monday.
        let monday = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        assert_eq!(
            Window::Weekly.end(monday).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()
        );
    }
}
