//! One refresh's view of the account: every key with its company, per-company
//! totals, and account figures. Built from config + upstream data, then rendered.
//!
//! Upstream wire types stop here: [`Listing::from_upstream`] converts them
//! once (parsing dates), and the renderer sees only the types of this module
//! and its children: `organization` (workspaces, members, caps),
//! `key_activity` (what a snapshot reads of per-key activity) and `departed`
//! (keys that left the listing, still counted until their windows end).
//!
//! Sums are exact ([`Usd`]): a company total equals the sum of its keys to
//! the last reported digit. An unknown amount makes every sum that includes
//! it unknown; it never counts as zero.

mod departed;
mod direct;
mod key_activity;
mod listing;
mod organization;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use tracing::warn;

use crate::attribution::{waiting_for, Attribution, Attributor, KeyIdentity, Lookup};
use crate::config::{Budget, Config};
use crate::money::Usd;

pub use departed::{departed_after, Departed, DepartedKey};
use direct::also_listed;
pub use direct::{DirectDuplicate, DirectKey};
#[cfg(test)]
pub(crate) use key_activity::EveryKeyRead;
pub use key_activity::{top_models, KeyActivity, ModelTotals};
pub use listing::{parse_timestamp, AccountCredits, Key, Listing};
pub use organization::{Cap, OrgList, Organization, DEFAULT_WORKSPACE};

/// Rolling windows built from activity: (label, completed days added to today's usage).
pub const ROLLING: [(&str, i64); 2] = [("rolling_7d", 6), ("rolling_30d", 29)];

/// The model mix's window, and the company figure it sums to: the last
/// `COMPLETED_DAYS` completed UTC days (all the activity API returns), today excluded.
pub const COMPLETED_30D: &str = "completed_30d";
/// Completed UTC days the activity API returns (`activity::HISTORY_DAYS`).
pub const COMPLETED_DAYS: i64 = 30;

/// What a snapshot is built from besides the listing.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub direct: Arc<Vec<DirectKey>>,
    /// Present once an activity run has succeeded.
    pub activity: Option<Arc<dyn KeyActivity>>,
    /// Workspaces, members and caps, read at a slower cadence than keys.
    pub organization: Arc<Organization>,
    /// Keys that left the listing, sorted by hash ([`departed_after`]).
    pub departed: Arc<Vec<DepartedKey>>,
    /// Each company's exact spend in the previous UTC month once that month
    /// is final, from the statements ledger; by company name. Empty without one.
    pub previous_month: Arc<Vec<(String, Usd)>>,
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

/// Index of the daily window in per-window arrays ([`Window::ALL`] order).
pub const DAILY: usize = 0;
/// Index of the lifetime window in per-window arrays.
pub const LIFETIME: usize = 3;

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
    /// Spend over the last 30 completed days (`completed_30d`): what `models` sums to.
    pub completed: Option<Usd>,
    /// Top models by spend over the last 30 completed days, the rest as `other`.
    pub models: Option<Vec<(String, ModelTotals)>>,
    /// The organization list whose first read decides which keys are this
    /// company's: until then its totals and key count are not published
    /// (they are still part of the account's total).
    pub awaiting: Option<OrgList>,
}

#[derive(Debug, Clone)]
pub struct SelectorMatches {
    pub company: String,
    pub selector: String,
    pub matches: u64,
}

/// Everything `/metrics` publishes about OpenRouter for one successful refresh.
///
/// Three vectors run beside the listed keys (`keys()`), read by key index, and
/// each is empty under its own condition: `company_of_key` is never empty (one
/// entry per key); `key_rolling` has one entry per key while activity data
/// exists, and is empty when there is none (collection off, or no run has
/// succeeded yet); `listed_as_direct` has one entry per key only when some
/// direct key is also listed, and is empty otherwise (the common case costs
/// nothing). So the last two are read with `get(i)`: a missing entry means
/// "no rolling figures" and "not a duplicate".
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// The listing this snapshot was built from, shared, not copied.
    pub data: Arc<Listing>,
    /// Parallel to `keys`: index into `companies`.
    pub company_of_key: Vec<usize>,
    /// Config companies in file order, then the unassigned company.
    pub companies: Vec<CompanyTotals>,
    pub selector_matches: Vec<SelectorMatches>,
    pub conflicts: u64,
    pub credits: Option<AccountCredits>,
    /// Listed keys whose `expires_at` did not parse.
    pub unreadable_expiries: u64,
    /// Account usage minus the lifetime usage of every listed key.
    pub unattributed_usage: Option<Usd>,
    /// Direct keys; those without any data yet have no figures.
    pub direct: Arc<Vec<DirectKey>>,
    /// Parallel to `keys()` (or empty without activity data): rolling_7d and
    /// rolling_30d of each listed key.
    pub key_rolling: Vec<[Option<f64>; 2]>,
    /// Direct keys also found in the listing: counted once, under the direct key's company.
    pub direct_duplicates: Vec<DirectDuplicate>,
    /// Parallel to `keys()` (or empty when no direct key is listed): the
    /// listed key is a direct key's duplicate and is not published as listed.
    pub listed_as_direct: Vec<bool>,
    /// Workspaces, members and caps this snapshot was attributed with.
    pub organization: Arc<Organization>,
    /// Keys that left the listing and still count for their company, as published.
    pub departed: Vec<Departed>,
    /// [`Extras::previous_month`], as it was when this snapshot was built.
    pub previous_month: Arc<Vec<(String, Usd)>>,
}

/// One key as published, on `/metrics` and on the company pages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishedKey<'a> {
    pub key: &'a Key,
    /// Index into [`Snapshot::companies`].
    pub company: usize,
    /// rolling_7d and rolling_30d; `None` for direct keys and without activity data.
    pub rolling: Option<&'a [Option<f64>; 2]>,
    /// Direct keys: whether the last poll succeeded; `None` for listed keys.
    pub direct_up: Option<bool>,
    /// Departed keys: when they were last listed; `None` for the others.
    pub departed: Option<DateTime<Utc>>,
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
        data: Arc<Listing>,
        extras: &Extras,
        taken_at: DateTime<Utc>,
    ) -> Snapshot {
        let attributor = Attributor::new(config);
        let attribution = attribute(&attributor, &data.keys, &extras.organization);
        let activity = extras.activity.as_deref();
        let mut sums = Sums::new(config, activity, taken_at.date_naive());
        // A direct key that the management API also lists (`also_listed`: same
        // masked label, lifetimes in order) counts once, under the direct key's
        // configured company; the listed row is left out and the pair reported.
        let (listed_as_direct, direct_duplicates) = match_direct(
            &data.keys,
            &extras.direct,
            &attribution.company_of_key,
            &sums.companies,
        );
        let (key_rolling, all_keys_lifetime) =
            sums.add_listed(&data.keys, &attribution.company_of_key, &listed_as_direct);
        let direct: Vec<DirectKey> = extras.direct.iter().map(|d| d.as_of(taken_at)).collect();
        sums.add_direct(&direct);
        let departed = sums.add_departed(&attributor, extras, taken_at);
        let unattributed_usage = match (data.credits, all_keys_lifetime) {
            (Some(credits), Some(keys_total)) => {
                Usd::from_f64(credits.total_usage).and_then(|u| u.checked_sub(keys_total))
            }
            _ => None,
        };
        let mut companies = sums.finish(config.activity.top_models);
        for (totals, awaiting) in companies
            .iter_mut()
            .zip(awaiting(config, &extras.organization))
        {
            totals.awaiting = awaiting;
        }
        Snapshot {
            taken_at,
            selector_matches: selector_matches(config, &attribution.selector_matches),
            company_of_key: attribution.company_of_key,
            companies,
            conflicts: attribution.conflicts,
            credits: data.credits,
            unreadable_expiries: data.keys.iter().filter(|k| k.expiry_unreadable).count() as u64,
            unattributed_usage,
            data,
            direct: Arc::new(direct),
            key_rolling,
            direct_duplicates,
            listed_as_direct,
            organization: Arc::clone(&extras.organization),
            departed,
            previous_month: Arc::clone(&extras.previous_month),
        }
    }

    pub fn keys(&self) -> &[Key] {
        &self.data.keys
    }

    /// Whether listed key `key_index` is a direct key's duplicate, published
    /// through the direct key instead.
    pub fn is_listed_as_direct(&self, key_index: usize) -> bool {
        self.listed_as_direct
            .get(key_index)
            .copied()
            .unwrap_or(false)
    }

    pub fn company_of(&self, key_index: usize) -> &str {
        &self.companies[self.company_of_key[key_index]].name
    }

    /// The keys that are published, the one rule for `/metrics` and the pages:
    /// listed keys but those that are a direct key's duplicate, in listing
    /// order, then the direct keys that have figures, in config order. Made
    /// afresh on each call rather than collected: at 100k keys a collected
    /// list would be another ~11 MB alive during a render.
    pub fn published_keys(&self) -> impl Iterator<Item = PublishedKey<'_>> {
        let listed = self
            .keys()
            .iter()
            .zip(&self.company_of_key)
            .enumerate()
            .filter(|(i, _)| !self.is_listed_as_direct(*i))
            .map(|(i, (key, &company))| PublishedKey {
                key,
                company,
                rolling: self.key_rolling.get(i),
                direct_up: None,
                departed: None,
            });
        let direct = self.direct.iter().filter_map(|d| {
            Some(PublishedKey {
                key: d.key.as_ref()?,
                company: d.company,
                rolling: None,
                direct_up: Some(d.up),
                departed: None,
            })
        });
        let departed = self.departed.iter().map(|d| PublishedKey {
            key: &d.key,
            company: d.company,
            rolling: None,
            direct_up: None,
            departed: Some(d.last_seen),
        });
        listed.chain(direct).chain(departed)
    }
}

/// Each listed key's company, with its workspace slug and creator's email
/// looked up in `org`.
fn attribute(attributor: &Attributor, keys: &[Key], org: &Organization) -> Attribution {
    attributor.attribute(keys.iter().map(|k| KeyIdentity {
        hash: &k.hash,
        name: &k.name,
        workspace_id: k.workspace_id.as_deref(),
        workspace_slug: org.workspace_slug(k.workspace_id.as_deref()),
        creator_email: org.creator_email(k.creator_user_id.as_deref()),
    }))
}

/// The listed keys that are a direct key's duplicate (empty when none is),
/// and each such pair as reported, logged once per build.
fn match_direct(
    keys: &[Key],
    direct: &[DirectKey],
    company_of_key: &[usize],
    companies: &[CompanyTotals],
) -> (Vec<bool>, Vec<DirectDuplicate>) {
    let matches = also_listed(keys, direct);
    let mut listed_as_direct = vec![false; if matches.is_empty() { 0 } else { keys.len() }];
    let mut duplicates = Vec::with_capacity(matches.len());
    for (d, k) in matches {
        listed_as_direct[k] = true;
        let direct = &direct[d];
        let company = companies[direct.company].name.clone();
        let listed_company = companies[company_of_key[k]].name.clone();
        warn!(
            direct_key = %direct.name,
            key_hash = %keys[k].hash,
            %company,
            %listed_company,
            "a direct key is also listed by the management API; counted once, under the direct key's company"
        );
        duplicates.push(DirectDuplicate {
            name: direct.name.clone(),
            company,
            listed_company,
        });
    }
    (listed_as_direct, duplicates)
}

/// For each company, the organization list it waits for (see
/// [`waiting_for`]); none without a management key, when there is no
/// listing to attribute.
fn awaiting(config: &Config, org: &Organization) -> Vec<Option<OrgList>> {
    if config.openrouter.management_key.is_none() {
        return Vec::new();
    }
    waiting_for(
        config,
        org.workspace_slugs.is_some(),
        org.member_emails.is_some(),
    )
    .into_iter()
    .map(|lookup| {
        lookup.map(|l| match l {
            Lookup::WorkspaceSlugs => OrgList::Workspaces,
            Lookup::MemberEmails => OrgList::Members,
        })
    })
    .collect()
}

/// What each config selector matched.
fn selector_matches(config: &Config, counts: &[Vec<u64>]) -> Vec<SelectorMatches> {
    config
        .companies
        .iter()
        .zip(counts)
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
        .collect()
}

/// The per-company sums of a build, added to key by key.
struct Sums<'a> {
    companies: Vec<CompanyTotals>,
    /// Per company, the model mix so far; `None` once one key's is unknown.
    models: Vec<Option<BTreeMap<String, ModelTotals>>>,
    activity: Option<&'a dyn KeyActivity>,
    today: NaiveDate,
}

impl<'a> Sums<'a> {
    /// Zero totals for the config's companies, then the unassigned company.
    fn new(config: &Config, activity: Option<&'a dyn KeyActivity>, today: NaiveDate) -> Sums<'a> {
        let companies: Vec<CompanyTotals> = config
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
                completed: Some(Usd::ZERO),
                models: Some(Vec::new()),
                awaiting: None,
            })
            .collect();
        Sums {
            models: vec![Some(BTreeMap::new()); companies.len()],
            companies,
            activity,
            today,
        }
    }

    /// Adds every listed key to its company (a direct key's duplicate only to
    /// the account's keys total). Returns the keys' rolling figures (empty
    /// without activity data) and the lifetime usage of all listed keys.
    fn add_listed(
        &mut self,
        keys: &[Key],
        company_of_key: &[usize],
        listed_as_direct: &[bool],
    ) -> (Vec<[Option<f64>; 2]>, Option<Usd>) {
        let mut key_rolling = Vec::with_capacity(if self.activity.is_some() {
            keys.len()
        } else {
            0
        });
        let mut all_keys_lifetime = Some(Usd::ZERO);
        for (index, (key, &company)) in keys.iter().zip(company_of_key).enumerate() {
            accumulate(&mut all_keys_lifetime, key.usage[LIFETIME]);
            let rolling = if listed_as_direct.get(index).copied().unwrap_or(false) {
                // Counted through the direct key (and in the account's keys total).
                [None; 2]
            } else {
                let totals = &mut self.companies[company];
                totals.keys += 1;
                for i in 0..Window::ALL.len() {
                    accumulate(&mut totals.usage[i], key.usage[i]);
                    accumulate(&mut totals.byok_usage[i], key.byok_usage[i]);
                }
                self.add_activity(company, key)
            };
            if self.activity.is_some() {
                key_rolling.push(rolling);
            }
        }
        (key_rolling, all_keys_lifetime)
    }

    /// Adds a listed key's activity figures to its company; returns its
    /// rolling_7d and rolling_30d (unknown without activity data).
    fn add_activity(&mut self, company: usize, key: &Key) -> [Option<f64>; 2] {
        let mut rolling = [None; 2];
        let Some(cache) = self.activity else {
            return rolling;
        };
        let totals = &mut self.companies[company];
        for (i, (_, days)) in ROLLING.iter().enumerate() {
            let value = match (
                cache.completed_usage(&key.hash, self.today, *days),
                key.usage[DAILY],
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
        totals.completed = totals.completed.and_then(|total| {
            total.checked_add(cache.completed_usage(&key.hash, self.today, COMPLETED_DAYS)?)
        });
        let mix = &mut self.models[company];
        if let Some(sums) = mix.as_mut() {
            let complete = cache.each_model(&key.hash, self.today, &mut |model, t| match sums
                .get_mut(model)
            {
                Some(sum) => sum.add(&t),
                None => {
                    sums.insert(model.to_string(), t);
                }
            });
            if !complete {
                *mix = None;
            }
        }
        rolling
    }

    /// Adds the direct keys to their companies. A key never polled
    /// successfully makes its company's figures unknown; activity needs a key
    /// hash, which direct mode does not have, so its company has no rolling
    /// figures or model mix.
    fn add_direct(&mut self, direct: &[DirectKey]) {
        for direct in direct {
            let totals = &mut self.companies[direct.company];
            let Some(key) = &direct.key else {
                totals.usage = [None; 4];
                totals.byok_usage = [None; 4];
                totals.rolling = [None; 2];
                totals.completed = None;
                continue;
            };
            totals.keys += 1;
            for i in 0..Window::ALL.len() {
                accumulate(&mut totals.usage[i], key.usage[i]);
                accumulate(&mut totals.byok_usage[i], key.byok_usage[i]);
            }
            totals.rolling = [None; 2];
            totals.completed = None;
            self.models[direct.company] = None;
        }
    }

    /// The companies' totals, each model mix folded to its `top_models`
    /// (without activity data: no rolling figures and no mix).
    fn finish(self, top: usize) -> Vec<CompanyTotals> {
        let mut companies = self.companies;
        if self.activity.is_some() {
            for (totals, mix) in companies.iter_mut().zip(self.models) {
                totals.models = mix.map(|m| top_models(m, top));
            }
        } else {
            for totals in &mut companies {
                totals.rolling = [None; 2];
                totals.completed = None;
                totals.models = None;
            }
        }
        companies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ApiKey;

    #[test]
    fn timestamps_parse_leniently() {
        assert_eq!(parse_timestamp("2027-12-31T23:59:59Z"), Some(1830297599));
        assert_eq!(
            parse_timestamp("2025-02-19T20:52:27.363244+00:00"),
            Some(1739998347)
        );
        assert_eq!(parse_timestamp("not a date"), None);
    }

    #[test]
    fn an_unreadable_expiry_is_flagged_not_dropped() {
        let wire: ApiKey =
            serde_json::from_str(r#"{"hash":"h","expires_at":"next tuesday"}"#).unwrap();
        let key = Key::from(wire);
        assert_eq!(key.expires_at, None);
        assert!(key.expiry_unreadable);
        let wire: ApiKey =
            serde_json::from_str(r#"{"hash":"h","expires_at":"2027-12-31T23:59:59Z"}"#).unwrap();
        let key = Key::from(wire);
        assert_eq!(key.expires_at, Some(1830297599));
        assert!(!key.expiry_unreadable);
    }

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

    fn listed(json: &str) -> Key {
        Key::from(serde_json::from_str::<ApiKey>(json).unwrap())
    }

    /// Listed keys a1, a2 (also direct key d1's) and b1; direct keys d1
    /// (with figures) and d2 (never answered).
    fn snapshot_with_a_duplicate(activity: Option<Arc<dyn KeyActivity>>) -> Snapshot {
        let config = Config::parse(
            "companies:\n  acme:\n    keys: [{name_glob: 'a*'}]\n",
            "test",
        )
        .unwrap();
        let keys = vec![
            listed(r#"{"hash":"h1","name":"a1","label":"sk-1","usage":1,"usage_daily":0.25}"#),
            listed(r#"{"hash":"h2","name":"a2","label":"sk-2","usage":2}"#),
            listed(r#"{"hash":"h3","name":"b1","label":"sk-3","usage":3}"#),
        ];
        let mut d1 = listed(r#"{"hash":"direct:d1","name":"d1","label":"sk-2","usage":2}"#);
        d1.usage[DAILY] = Some(0.5);
        let direct = |name: &str, company, key| DirectKey {
            company,
            name: name.to_string(),
            key,
            fetched_at: None,
            up: true,
        };
        let extras = Extras {
            direct: Arc::new(vec![direct("d1", 1, Some(d1)), direct("d2", 0, None)]),
            activity,
            organization: Arc::default(),
            departed: Arc::default(),
            previous_month: Arc::default(),
        };
        let data = Arc::new(Listing {
            keys,
            credits: None,
        });
        let taken_at = Utc.with_ymd_and_hms(2026, 3, 4, 10, 0, 0).unwrap();
        Snapshot::build(&config, data, &extras, taken_at)
    }

    #[test]
    fn published_keys_are_listed_ones_but_duplicates_then_direct_ones_with_figures() {
        let snap = snapshot_with_a_duplicate(None);
        let published: Vec<_> = snap
            .published_keys()
            .map(|p| (&*p.key.name, p.company, p.rolling, p.direct_up))
            .collect();
        // a2 is d1's duplicate, published once as d1 under d1's company
        // (unassigned, index 1); d2 has no figures.
        assert_eq!(
            published,
            [
                ("a1", 0, None, None),
                ("b1", 1, None, None),
                ("d1", 1, None, Some(true)),
            ]
        );
        assert_eq!(snap.direct_duplicates.len(), 1);
    }

    #[test]
    fn published_listed_keys_carry_their_rolling_figures() {
        let snap = snapshot_with_a_duplicate(Some(Arc::new(EveryKeyRead)));
        let rolling: Vec<_> = snap
            .published_keys()
            .map(|p| (&*p.key.name, p.rolling.copied()))
            .collect();
        // Today's figure plus the completed days (0 here); unknown without a
        // daily figure; direct keys have no rolling windows at all.
        let a1 = Some([Some(0.25), Some(0.25)]);
        assert_eq!(
            rolling,
            [("a1", a1), ("b1", Some([None, None])), ("d1", None)]
        );
        assert_eq!(snap.key_rolling.len(), snap.keys().len());
    }
}
