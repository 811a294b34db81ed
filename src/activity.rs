//! Per-key daily activity (`GET /activity?api_key_hash=H`): true rolling
//! windows and the per-company model mix.
//!
//! The activity API returns one row per (UTC date, model, provider endpoint)
//! for the last 30 *completed* UTC days and never today. Completed days do not
//! change, so they are cached: the first run costs one call per key, later runs
//! one call per key per new day (`date=` the day that just ended), and a key
//! missing more than one day is refilled with one undated call. A run is
//! all-or-nothing, like the main refresh: if any call fails, the cache is left
//! exactly as it was.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{Duration as ChronoDuration, NaiveDate};
use serde::Deserialize;

use crate::money::Usd;
use crate::upstream::{Client, Endpoint, UpstreamError};

/// Completed days the API returns.
pub const HISTORY_DAYS: i64 = 30;

/// One row of `GET /activity`. Counts that real accounts have sent as `null`
/// (or as floats) read as their value or 0; a missing or `null` `usage`
/// leaves the row unreadable, and with it the days its call covered.
#[derive(Debug, Clone, Deserialize)]
pub struct ActivityRow {
    pub date: String,
    pub model: String,
    #[serde(default)]
    pub usage: Option<f64>,
    #[serde(default, deserialize_with = "lenient_amount")]
    pub byok_usage_inference: f64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub requests: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub reasoning_tokens: u64,
}

impl ActivityRow {
    /// The UTC day of the row: `date` may be `YYYY-MM-DD` or carry a time
    /// part (`2025-08-24 00:00:00`), so its first 10 characters are read.
    pub fn day(&self) -> Option<NaiveDate> {
        let date = self.date.trim();
        NaiveDate::parse_from_str(date.get(..10)?, "%Y-%m-%d").ok()
    }
}

fn lenient_amount<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?
        .filter(|v| v.is_finite())
        .unwrap_or(0.0))
}

fn lenient_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = Option::<f64>::deserialize(d)?.unwrap_or(0.0);
    Ok(if value.is_finite() && value > 0.0 {
        value.round() as u64
    } else {
        0
    })
}

/// One model's figures for one key and day (provider endpoints merged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelTotals {
    pub usage: Usd,
    pub byok_usage: Usd,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
}

impl ModelTotals {
    pub fn add(&mut self, other: &ModelTotals) {
        self.usage = self.usage.checked_add(other.usage).unwrap_or(self.usage);
        self.byok_usage = self
            .byok_usage
            .checked_add(other.byok_usage)
            .unwrap_or(self.byok_usage);
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
    }
}

/// Known days of one key: a day present with no models had no activity (a known zero).
pub type KeyDays = BTreeMap<NaiveDate, BTreeMap<String, ModelTotals>>;

/// What one key needs fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// No date: all 30 completed days.
    All,
    /// One completed day.
    Day(NaiveDate),
}

/// Cached activity of every key, by hash.
#[derive(Debug, Clone, Default)]
pub struct ActivityCache {
    keys: HashMap<String, KeyDays>,
}

/// The completed days the API covers when today is `today`: oldest first.
pub fn history(today: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    (1..=HISTORY_DAYS)
        .rev()
        .filter_map(move |back| today.checked_sub_signed(ChronoDuration::days(back)))
}

impl ActivityCache {
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    pub fn days(&self, hash: &str) -> Option<&KeyDays> {
        self.keys.get(hash)
    }

    /// The calls a run needs: nothing for keys whose history is complete.
    pub fn plan<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a str>,
        today: NaiveDate,
    ) -> Vec<(String, Fetch)> {
        let mut plan = Vec::new();
        for hash in hashes {
            let missing: Vec<NaiveDate> = match self.keys.get(hash) {
                None => {
                    plan.push((hash.to_string(), Fetch::All));
                    continue;
                }
                Some(days) => history(today).filter(|d| !days.contains_key(d)).collect(),
            };
            match missing.as_slice() {
                [] => {}
                [day] => plan.push((hash.to_string(), Fetch::Day(*day))),
                _ => plan.push((hash.to_string(), Fetch::All)),
            }
        }
        plan
    }

    /// Records a successful fetch: every day it covers becomes known. When a
    /// row cannot be read (no day, no usage), nothing is recorded, the days
    /// stay missing (fetched again next run, never a cached zero), and the
    /// unreadable row count is returned.
    pub fn apply(
        &mut self,
        hash: &str,
        fetch: &Fetch,
        rows: &[ActivityRow],
        today: NaiveDate,
    ) -> usize {
        let unreadable = rows
            .iter()
            .filter(|r| r.day().is_none() || r.usage.and_then(Usd::from_f64).is_none())
            .count();
        if unreadable > 0 {
            return unreadable;
        }
        let covered: Vec<NaiveDate> = match fetch {
            Fetch::All => history(today).collect(),
            Fetch::Day(day) => vec![*day],
        };
        let covered_set: HashSet<NaiveDate> = covered.iter().copied().collect();
        let days = self.keys.entry(hash.to_string()).or_default();
        for day in &covered {
            days.insert(*day, BTreeMap::new());
        }
        for row in rows {
            let (Some(date), Some(usage)) = (row.day(), row.usage.and_then(Usd::from_f64)) else {
                continue;
            };
            if !covered_set.contains(&date) {
                continue;
            }
            let totals = ModelTotals {
                usage,
                byok_usage: Usd::from_f64(row.byok_usage_inference).unwrap_or(Usd::ZERO),
                requests: row.requests,
                prompt_tokens: row.prompt_tokens,
                completion_tokens: row.completion_tokens,
                reasoning_tokens: row.reasoning_tokens,
            };
            days.entry(date)
                .or_default()
                .entry(row.model.clone())
                .or_default()
                .add(&totals);
        }
        0
    }

    /// Forgets keys no longer listed and days older than the API's history.
    pub fn prune(&mut self, listed: &HashSet<&str>, today: NaiveDate) {
        self.keys.retain(|hash, _| listed.contains(hash.as_str()));
        let oldest = today - ChronoDuration::days(HISTORY_DAYS);
        for days in self.keys.values_mut() {
            days.retain(|d, _| *d >= oldest);
        }
    }

    /// Spend of the last `completed_days` completed days; `None` if any is unknown.
    pub fn completed_usage(
        &self,
        hash: &str,
        today: NaiveDate,
        completed_days: i64,
    ) -> Option<Usd> {
        let days = self.keys.get(hash)?;
        let mut total = Usd::ZERO;
        for back in 1..=completed_days {
            let day = today.checked_sub_signed(ChronoDuration::days(back))?;
            for model in days.get(&day)?.values() {
                total = total.checked_add(model.usage)?;
            }
        }
        Some(total)
    }

    /// Per-model totals of one key over the last `completed_days` completed days
    /// (known days only; `None` if any day is unknown).
    pub fn models(
        &self,
        hash: &str,
        today: NaiveDate,
        completed_days: i64,
    ) -> Option<BTreeMap<String, ModelTotals>> {
        let days = self.keys.get(hash)?;
        let mut out: BTreeMap<String, ModelTotals> = BTreeMap::new();
        for back in 1..=completed_days {
            let day = today.checked_sub_signed(ChronoDuration::days(back))?;
            for (model, totals) in days.get(&day)? {
                out.entry(model.clone()).or_default().add(totals);
            }
        }
        Some(out)
    }
}

/// Keeps the `top` models by spend (ties by name) and folds the rest into `other`,
/// so every total over the result equals the total over the input.
pub fn top_models(models: BTreeMap<String, ModelTotals>, top: usize) -> Vec<(String, ModelTotals)> {
    let mut ranked: Vec<(String, ModelTotals)> = models.into_iter().collect();
    ranked.sort_by(|a, b| b.1.usage.cmp(&a.1.usage).then_with(|| a.0.cmp(&b.0)));
    if ranked.len() <= top {
        return ranked;
    }
    let rest = ranked.split_off(top);
    let mut other = ModelTotals::default();
    for (_, totals) in &rest {
        other.add(totals);
    }
    // A real model literally named "other" joins the folded bucket.
    if let Some(pos) = ranked.iter().position(|(m, _)| m == "other") {
        let (_, totals) = ranked.remove(pos);
        other.add(&totals);
    }
    ranked.push(("other".to_string(), other));
    ranked
}

/// Runs the planned calls with bounded concurrency. All-or-nothing: the first
/// failure cancels the rest and nothing is returned.
pub async fn fetch(
    client: &Client,
    plan: Vec<(String, Fetch)>,
    concurrency: usize,
) -> Result<Vec<(String, Fetch, Vec<ActivityRow>)>, UpstreamError> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (hash, what) in plan {
        let client = client.clone();
        let semaphore = Arc::clone(&semaphore);
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let date = match &what {
                Fetch::All => None,
                Fetch::Day(day) => Some(day.to_string()),
            };
            let rows: Result<Vec<ActivityRow>, _> = client.activity(&hash, date.as_deref()).await;
            rows.map(|rows| (hash, what, rows))
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.map_err(|e| UpstreamError::Transport {
            endpoint: Endpoint::Activity,
            message: format!("activity task failed: {e}"),
        })?;
        match outcome {
            Ok(result) => results.push(result),
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn row(date: &str, model: &str, usage: f64, requests: u64) -> ActivityRow {
        ActivityRow {
            date: date.into(),
            model: model.into(),
            usage: Some(usage),
            byok_usage_inference: 0.0,
            requests,
            prompt_tokens: 10,
            completion_tokens: 5,
            reasoning_tokens: 1,
        }
    }

    #[test]
    fn first_fill_then_one_call_per_new_day() {
        let today = day("2026-11-26");
        let mut cache = ActivityCache::default();
        assert_eq!(cache.plan(["h"], today), vec![("h".into(), Fetch::All)]);
        cache.apply("h", &Fetch::All, &[row("2026-11-25", "m", 1.0, 1)], today);
        assert!(cache.plan(["h"], today).is_empty(), "history complete");
        let tomorrow = day("2026-11-27");
        assert_eq!(
            cache.plan(["h"], tomorrow),
            vec![("h".into(), Fetch::Day(day("2026-11-26")))]
        );
        // Two days missing: one undated call instead of two dated ones.
        assert_eq!(
            cache.plan(["h"], day("2026-11-28")),
            vec![("h".into(), Fetch::All)]
        );
    }

    #[test]
    fn rolling_sums_need_every_day_and_never_include_today() {
        let today = day("2026-11-26");
        let mut cache = ActivityCache::default();
        let rows = [
            row("2026-11-25", "a", 1.0, 1),
            row("2026-11-25", "b", 0.5, 1),
            row("2026-11-20", "a", 2.0, 1), // 6 days back: inside rolling_7d
            row("2026-11-19", "a", 4.0, 1), // 7 days back: outside
            row("2026-11-26", "a", 100.0, 1), // today: the API never sends it; ignored
        ];
        cache.apply("h", &Fetch::All, &rows, today);
        assert_eq!(cache.completed_usage("h", today, 6), Usd::from_f64(3.5));
        assert_eq!(cache.completed_usage("h", today, 29), Usd::from_f64(7.5));
        assert_eq!(cache.completed_usage("unknown", today, 6), None);
        // A day later without fetching the new day, the 6-day sum is unknown.
        assert_eq!(cache.completed_usage("h", day("2026-11-27"), 6), None);
    }

    #[test]
    fn top_n_folds_the_rest_into_other_and_keeps_sums() {
        let mut models = BTreeMap::new();
        for (i, name) in ["a", "b", "c", "d", "other"].iter().enumerate() {
            models.insert(
                name.to_string(),
                ModelTotals {
                    usage: Usd::from_f64(i as f64 + 1.0).unwrap(),
                    requests: 1,
                    ..ModelTotals::default()
                },
            );
        }
        let total: i128 = models.values().map(|m| m.usage.nanos()).sum();
        let folded = top_models(models, 2);
        let names: Vec<_> = folded.iter().map(|(m, _)| m.as_str()).collect();
        // "other" (5) and "d" (4) rank first; the real "other" joins the bucket.
        assert_eq!(names, ["d", "other"]);
        assert_eq!(
            folded.iter().map(|(_, m)| m.usage.nanos()).sum::<i128>(),
            total
        );
        assert_eq!(folded.iter().map(|(_, m)| m.requests).sum::<u64>(), 5);
    }

    #[test]
    fn prune_forgets_deleted_keys_and_old_days() {
        let today = day("2026-11-26");
        let mut cache = ActivityCache::default();
        cache.apply("keep", &Fetch::All, &[], today);
        cache.apply("gone", &Fetch::All, &[], today);
        let later = day("2026-12-10");
        cache.prune(&["keep"].into_iter().collect(), later);
        assert_eq!(cache.keys(), 1);
        let days = cache.days("keep").unwrap();
        assert!(days
            .keys()
            .all(|d| *d >= later - ChronoDuration::days(HISTORY_DAYS)));
    }
}
