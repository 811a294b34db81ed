//! Per-key daily activity (`GET /activity?api_key_hash=H`): true rolling
//! windows and the per-company model mix.
//!
//! The activity API returns one row per (UTC date, model, provider endpoint)
//! for the last 30 *completed* UTC days and never today. The cache keeps,
//! per key, the days it has read (and when) and their per-model rows:
//!
//! - **Incremental.** Results are kept per key as they arrive; one failing
//!   key leaves only its own days unknown. A 404 is "key gone" (deleted since
//!   the listing): skipped, not a failure.
//! - **Never a fake zero.** A day is known only when a successful call covered
//!   it and every row of that call was readable (a date in its first 10
//!   characters, a finite `usage`); otherwise the key's days stay unknown.
//! - **Self-correcting.** A completed day is read again 6 h and 24 h after it
//!   closes ([`RESTATE_HOURS`]); a re-read replaces the day's rows, so
//!   restated figures win and nothing is counted twice (a restart refills
//!   from nothing, equally without double counting).
//! - **Cheap.** One day due: a dated call; two or more (the first fill, or
//!   after midnight: yesterday plus the 24 h re-read of the day before): one
//!   undated call that covers all 30. Steady state: 2 calls per key per day.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use serde::Deserialize;

use crate::money::Usd;
use crate::upstream::{Client, UpstreamError};

/// Completed days the API returns.
pub const HISTORY_DAYS: i64 = 30;

/// One row of `GET /activity`. Counts that real accounts have sent as `null`
/// (or as floats) read as their value or 0; a missing or `null` `usage`
/// leaves the row unreadable, and with it the days its call covered.
#[derive(Debug, Clone, Deserialize)]
pub struct ActivityRow {
    pub date: String,
    pub model: String,
    #[serde(default, deserialize_with = "lenient_number")]
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

/// A number as JSON sends it: a number, a numeric string (as OpenRouter's
/// analytics API sends counts), or `null`/anything else (`None`).
fn lenient_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|v| v.is_finite()))
}

fn lenient_amount<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(lenient_number(d)?.unwrap_or(0.0))
}

fn lenient_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = lenient_number(d)?.unwrap_or(0.0);
    Ok(if value > 0.0 { value.round() as u64 } else { 0 })
}

/// After a day closes (UTC midnight), it is read again once this many hours
/// later, each: billing pipelines restate the last days.
pub const RESTATE_HOURS: [i64; 2] = [6, 24];

/// A key answered 404 ("gone") is not asked again for this long (while a stale
/// listing may still name it).
pub const GONE_RETRY_HOURS: i64 = 6;

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

/// One (day, model) of one key, compact: 56 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    day: NaiveDate,
    /// Index into [`ActivityCache::models`].
    model: u32,
    /// Nano-dollars.
    usage: i64,
    byok: i64,
    requests: u64,
    prompt: u64,
    completion: u64,
    reasoning: u64,
}

impl Row {
    fn totals(&self) -> ModelTotals {
        ModelTotals {
            usage: Usd::from_nanos(self.usage.into()),
            byok_usage: Usd::from_nanos(self.byok.into()),
            requests: self.requests,
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
            reasoning_tokens: self.reasoning,
        }
    }

    fn add(&mut self, other: &Row) -> Option<()> {
        self.usage = self.usage.checked_add(other.usage)?;
        self.byok = self.byok.checked_add(other.byok)?;
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt = self.prompt.saturating_add(other.prompt);
        self.completion = self.completion.saturating_add(other.completion);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
        Some(())
    }
}

/// What the cache holds for one key.
#[derive(Debug, Clone, Default)]
struct KeyState {
    /// Known days, oldest first, with when each was last read (Unix seconds).
    days: Vec<(NaiveDate, u32)>,
    /// The known days' rows, ordered by (day, model).
    rows: Vec<Row>,
    /// The last call for this key failed (its missing days stay unknown).
    failed: bool,
    /// When a call answered 404 (Unix seconds; 0 = never).
    gone_at: u32,
}

impl KeyState {
    fn known(&self, day: NaiveDate) -> Option<u32> {
        self.days
            .binary_search_by_key(&day, |(d, _)| *d)
            .ok()
            .map(|i| self.days[i].1)
    }

    fn complete(&self, today: NaiveDate) -> bool {
        history(today).all(|d| self.known(d).is_some())
    }
}

/// How far the listed keys' histories are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every completed day of the history known: rolling windows published.
    pub complete: usize,
    /// Some day still to fetch (not yet tried in this fill).
    pub pending: usize,
    /// The last call failed; retried on the next run.
    pub failed: usize,
    /// Answered 404 (deleted since the listing); skipped.
    pub gone: usize,
}

/// Cached activity of every key, by hash.
#[derive(Debug, Clone, Default)]
pub struct ActivityCache {
    keys: HashMap<Box<str>, KeyState>,
    /// Model names, interned: rows carry an index.
    models: Vec<Box<str>>,
    model_ids: HashMap<Box<str>, u32>,
}

/// The completed days the API covers when today is `today`: oldest first.
pub fn history(today: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    (1..=HISTORY_DAYS)
        .rev()
        .filter_map(move |back| today.checked_sub_signed(ChronoDuration::days(back)))
}

/// Unix seconds as stored (saturating into `u32`, good until 2106).
fn stamp(at: DateTime<Utc>) -> u32 {
    u32::try_from(at.timestamp().max(0)).unwrap_or(u32::MAX)
}

/// Whether a day last read at `read_at` is due for a re-read at `now`.
fn restatement_due(day: NaiveDate, read_at: u32, now: i64) -> bool {
    let Some(close) = day
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
    else {
        return false;
    };
    RESTATE_HOURS.iter().any(|h| {
        let point = close + h * 3600;
        now >= point && i64::from(read_at) < point
    })
}

/// Why a response could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable {
    /// Rows without a readable date or a finite usage, or (dated call) for another day.
    pub rows: usize,
}

impl ActivityCache {
    /// Keys with at least one known day.
    pub fn keys(&self) -> usize {
        self.keys.values().filter(|k| !k.days.is_empty()).count()
    }

    /// Rows held (all keys, all days): the cache's size.
    pub fn rows(&self) -> usize {
        self.keys.values().map(|k| k.rows.len()).sum()
    }

    /// The known days of one key, with per-model figures (tests, tools).
    pub fn days(&self, hash: &str) -> Option<KeyDays> {
        let state = self.keys.get(hash)?;
        if state.days.is_empty() {
            return None;
        }
        let mut out: KeyDays = state
            .days
            .iter()
            .map(|(d, _)| (*d, BTreeMap::new()))
            .collect();
        for row in &state.rows {
            out.entry(row.day)
                .or_default()
                .entry(self.models[row.model as usize].to_string())
                .or_default()
                .add(&row.totals());
        }
        Some(out)
    }

    /// Whether every completed day of `hash`'s history is known.
    pub fn is_complete(&self, hash: &str, today: NaiveDate) -> bool {
        self.keys.get(hash).is_some_and(|k| k.complete(today))
    }

    /// Where each listed key stands.
    pub fn progress<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a str>,
        today: NaiveDate,
    ) -> Progress {
        let mut p = Progress::default();
        for hash in hashes {
            match self.keys.get(hash) {
                Some(k) if k.gone_at != 0 => p.gone += 1,
                Some(k) if k.complete(today) => p.complete += 1,
                Some(k) if k.failed => p.failed += 1,
                _ => p.pending += 1,
            }
        }
        p
    }

    /// The calls a run at `now` needs: unknown days, and days due for a
    /// re-read ([`RESTATE_HOURS`]). Nothing for a key whose history is complete
    /// and settled; keys answered 404 lately are skipped.
    pub fn plan<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a str>,
        now: DateTime<Utc>,
    ) -> Vec<(String, Fetch)> {
        let today = now.date_naive();
        let now_s = now.timestamp();
        let mut plan = Vec::new();
        for hash in hashes {
            let Some(state) = self.keys.get(hash) else {
                plan.push((hash.to_string(), Fetch::All));
                continue;
            };
            if state.gone_at != 0 && now_s - i64::from(state.gone_at) < GONE_RETRY_HOURS * 3600 {
                continue;
            }
            let mut due = history(today).filter(|d| match state.known(*d) {
                None => true,
                Some(read_at) => restatement_due(*d, read_at, now_s),
            });
            match (due.next(), due.next()) {
                (None, _) => {}
                (Some(day), None) => plan.push((hash.to_string(), Fetch::Day(day))),
                _ => plan.push((hash.to_string(), Fetch::All)),
            }
        }
        plan
    }

    /// [`ActivityCache::apply_at`] read at the start of `today` (tests, tools).
    pub fn apply(
        &mut self,
        hash: &str,
        fetch: &Fetch,
        rows: &[ActivityRow],
        today: NaiveDate,
    ) -> usize {
        let at = today
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_default();
        match self.apply_at(hash, fetch, rows, today, at) {
            Ok(()) => 0,
            Err(e) => e.rows,
        }
    }

    /// Records a successful call planned on `today` and answered at `read_at`:
    /// every day it covers becomes known with exactly its rows, replacing what
    /// was there (a restatement wins; a repeat changes nothing). When a row
    /// cannot be read (no day, no finite usage, or a dated call's row for
    /// another day), nothing is recorded: the key is marked failed and its
    /// unknown days stay unknown, never a cached zero.
    pub fn apply_at(
        &mut self,
        hash: &str,
        fetch: &Fetch,
        rows: &[ActivityRow],
        today: NaiveDate,
        read_at: DateTime<Utc>,
    ) -> Result<(), Unreadable> {
        let covered: Vec<NaiveDate> = match fetch {
            Fetch::All => history(today).collect(),
            Fetch::Day(day) => vec![*day],
        };
        let (Some(&first), Some(&last)) = (covered.first(), covered.last()) else {
            return Ok(());
        };
        let mut fresh: Vec<(NaiveDate, &str, Row)> = Vec::with_capacity(rows.len());
        let mut unreadable = 0;
        for row in rows {
            let usage = row
                .usage
                .and_then(Usd::from_f64)
                .and_then(|u| i64::try_from(u.nanos()).ok());
            let byok =
                Usd::from_f64(row.byok_usage_inference).and_then(|u| i64::try_from(u.nanos()).ok());
            let (Some(day), Some(usage), Some(byok)) = (row.day(), usage, byok) else {
                unreadable += 1;
                continue;
            };
            if day < first || day > last {
                // An undated call may reach a day past either end (today, or
                // the 31st day back while upstream rolls over): not ours. A dated
                // call answering for another day is not an answer for its day.
                if matches!(fetch, Fetch::Day(_)) {
                    unreadable += 1;
                }
                continue;
            }
            fresh.push((
                day,
                row.model.as_str(),
                Row {
                    day,
                    model: 0,
                    usage,
                    byok,
                    requests: row.requests,
                    prompt: row.prompt_tokens,
                    completion: row.completion_tokens,
                    reasoning: row.reasoning_tokens,
                },
            ));
        }
        if unreadable > 0 {
            self.mark_failed(hash);
            return Err(Unreadable { rows: unreadable });
        }
        let mut merged: Vec<Row> = Vec::with_capacity(fresh.len());
        for (_, model, mut row) in fresh {
            row.model = self.intern(model);
            merged.push(row);
        }
        merged.sort_by_key(|r| (r.day, r.model));
        merged.dedup_by(|next, kept| {
            // Provider endpoints of one model and day are summed.
            (next.day, next.model) == (kept.day, kept.model) && kept.add(next).is_some()
        });
        let read_at = stamp(read_at);
        let state = self.keys.entry(Box::from(hash)).or_default();
        state.failed = false;
        state.gone_at = 0;
        state.rows.retain(|r| r.day < first || r.day > last);
        state.rows.extend(merged);
        state.rows.sort_by_key(|r| (r.day, r.model));
        state.rows.shrink_to_fit();
        state.days.retain(|(d, _)| *d < first || *d > last);
        state.days.extend(covered.iter().map(|d| (*d, read_at)));
        state.days.sort_unstable_by_key(|(d, _)| *d);
        state.days.shrink_to_fit();
        Ok(())
    }

    /// The last call for `hash` failed: its known days stay, the rest stay unknown.
    pub fn mark_failed(&mut self, hash: &str) {
        self.keys.entry(Box::from(hash)).or_default().failed = true;
    }

    /// `hash` answered 404: deleted since the listing. Skipped for
    /// [`GONE_RETRY_HOURS`]; its figures go when the listing drops it.
    pub fn mark_gone(&mut self, hash: &str, at: DateTime<Utc>) {
        let state = self.keys.entry(Box::from(hash)).or_default();
        state.gone_at = stamp(at).max(1);
        state.failed = false;
    }

    fn intern(&mut self, model: &str) -> u32 {
        if let Some(id) = self.model_ids.get(model) {
            return *id;
        }
        let id = u32::try_from(self.models.len()).unwrap_or(u32::MAX);
        self.models.push(Box::from(model));
        self.model_ids.insert(Box::from(model), id);
        id
    }

    /// Forgets keys no longer listed and days older than the API's history.
    pub fn prune(&mut self, listed: &HashSet<&str>, today: NaiveDate) {
        self.keys.retain(|hash, _| listed.contains(&**hash));
        let oldest = today - ChronoDuration::days(HISTORY_DAYS);
        for state in self.keys.values_mut() {
            state.days.retain(|(d, _)| *d >= oldest);
            state.rows.retain(|r| r.day >= oldest);
        }
    }

    /// The rows of one key's last `completed_days` completed days; `None`
    /// unless every one of those days is known.
    fn completed_rows(
        &self,
        hash: &str,
        today: NaiveDate,
        completed_days: i64,
    ) -> Option<impl Iterator<Item = &Row>> {
        let state = self.keys.get(hash)?;
        let first = today.checked_sub_signed(ChronoDuration::days(completed_days))?;
        let mut day = first;
        while day < today {
            state.known(day)?;
            day = day.succ_opt()?;
        }
        Some(
            state
                .rows
                .iter()
                .filter(move |r| r.day >= first && r.day < today),
        )
    }

    /// Spend of the last `completed_days` completed days; `None` if any is unknown.
    pub fn completed_usage(
        &self,
        hash: &str,
        today: NaiveDate,
        completed_days: i64,
    ) -> Option<Usd> {
        let mut total = Usd::ZERO;
        for row in self.completed_rows(hash, today, completed_days)? {
            total = total.checked_add(Usd::from_nanos(row.usage.into()))?;
        }
        Some(total)
    }

    /// Per-model totals of one key over the last `completed_days` completed days;
    /// `None` if any day is unknown.
    pub fn models(
        &self,
        hash: &str,
        today: NaiveDate,
        completed_days: i64,
    ) -> Option<BTreeMap<String, ModelTotals>> {
        let mut out: BTreeMap<String, ModelTotals> = BTreeMap::new();
        for row in self.completed_rows(hash, today, completed_days)? {
            let name = &self.models[row.model as usize];
            match out.get_mut(&**name) {
                Some(t) => t.add(&row.totals()),
                None => {
                    out.insert(name.to_string(), row.totals());
                }
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

/// One finished call.
pub type Outcome = (String, Fetch, Result<Vec<ActivityRow>, UpstreamError>);

/// Runs planned calls with at most `concurrency` in flight and at most
/// `calls_per_second` started per second, handing back each result as it
/// arrives ([`Fetcher::next`]). Dropping it aborts the calls in flight.
pub struct Fetcher {
    client: Client,
    plan: std::vec::IntoIter<(String, Fetch)>,
    tasks: tokio::task::JoinSet<Outcome>,
    concurrency: usize,
    period: Duration,
    next_start: tokio::time::Instant,
}

impl Fetcher {
    pub fn new(
        client: Client,
        plan: Vec<(String, Fetch)>,
        concurrency: usize,
        calls_per_second: u32,
    ) -> Fetcher {
        Fetcher {
            client,
            plan: plan.into_iter(),
            tasks: tokio::task::JoinSet::new(),
            concurrency: concurrency.max(1),
            period: Duration::from_secs(1) / calls_per_second.max(1),
            next_start: tokio::time::Instant::now(),
        }
    }

    /// Calls not finished yet (not started, or in flight).
    pub fn remaining(&self) -> usize {
        self.plan.len() + self.tasks.len()
    }

    /// Starts nothing more; calls in flight still finish.
    pub fn stop(&mut self) {
        self.plan = Vec::new().into_iter();
    }

    /// The next finished call; `None` once all are done.
    pub async fn next(&mut self) -> Option<Outcome> {
        loop {
            let can_start = self.plan.len() > 0 && self.tasks.len() < self.concurrency;
            if !can_start && self.tasks.is_empty() {
                return None;
            }
            let finished = tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => Some(joined),
                _ = tokio::time::sleep_until(self.next_start), if can_start => None,
            };
            match finished {
                Some(Ok(outcome)) => return Some(outcome),
                // A task only ends without an outcome if it panicked: skip it (the key stays pending).
                Some(Err(_)) => continue,
                None => self.start_one(),
            }
        }
    }

    fn start_one(&mut self) {
        let Some((hash, what)) = self.plan.next() else {
            return;
        };
        // Never faster than the rate, also after waiting for a free slot.
        self.next_start = self.next_start.max(tokio::time::Instant::now()) + self.period;
        let client = self.client.clone();
        self.tasks.spawn(async move {
            let date = match &what {
                Fetch::All => None,
                Fetch::Day(day) => Some(day.to_string()),
            };
            let rows = client.activity(&hash, date.as_deref()).await;
            (hash, what, rows)
        });
    }
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

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn apply(cache: &mut ActivityCache, fetch: Fetch, rows: &[ActivityRow], now: &str) {
        let now = at(now);
        cache
            .apply_at("h", &fetch, rows, now.date_naive(), now)
            .unwrap();
    }

    #[test]
    fn first_fill_then_new_day_and_restatements() {
        let mut cache = ActivityCache::default();
        let noon = "2026-11-26T12:00:00Z";
        assert_eq!(cache.plan(["h"], at(noon)), vec![("h".into(), Fetch::All)]);
        apply(
            &mut cache,
            Fetch::All,
            &[row("2026-11-25", "m", 1.0, 1)],
            noon,
        );
        // Yesterday was read 12 h after it closed: past the 6 h re-read, before the 24 h one.
        assert!(cache.plan(["h"], at("2026-11-26T23:59:00Z")).is_empty());
        // After midnight: the new day, and the 24 h re-read of the day before: one undated call.
        let after_midnight = "2026-11-27T00:10:00Z";
        assert_eq!(
            cache.plan(["h"], at(after_midnight)),
            vec![("h".into(), Fetch::All)]
        );
        apply(&mut cache, Fetch::All, &[], after_midnight);
        assert!(cache.plan(["h"], at("2026-11-27T05:59:00Z")).is_empty());
        // 6 h after it closed, yesterday is read once more: a dated call.
        let six = "2026-11-27T06:05:00Z";
        assert_eq!(
            cache.plan(["h"], at(six)),
            vec![("h".into(), Fetch::Day(day("2026-11-26")))]
        );
        apply(&mut cache, Fetch::Day(day("2026-11-26")), &[], six);
        assert!(cache.plan(["h"], at("2026-11-27T23:00:00Z")).is_empty());
    }

    #[test]
    fn a_restated_day_replaces_its_figures_and_a_repeat_counts_nothing_twice() {
        let mut cache = ActivityCache::default();
        let today = day("2026-11-26");
        let rows = [
            row("2026-11-25", "m", 1.0, 1),
            row("2026-11-25", "m", 0.5, 1),
        ];
        apply(&mut cache, Fetch::All, &rows, "2026-11-26T00:10:00Z");
        assert_eq!(cache.completed_usage("h", today, 1), Usd::from_f64(1.5));
        // The same answer again (a refill, a restart): the same figures.
        apply(&mut cache, Fetch::All, &rows, "2026-11-26T00:20:00Z");
        assert_eq!(cache.completed_usage("h", today, 1), Usd::from_f64(1.5));
        assert_eq!(cache.rows(), 1, "endpoints of one model and day merged");
        // Restated later: the new figure replaces the old one.
        apply(
            &mut cache,
            Fetch::Day(day("2026-11-25")),
            &[row("2026-11-25", "m", 2.25, 3)],
            "2026-11-26T06:10:00Z",
        );
        assert_eq!(cache.completed_usage("h", today, 1), Usd::from_f64(2.25));
        assert_eq!(cache.models("h", today, 1).unwrap()["m"].requests, 3);
    }

    #[test]
    fn unreadable_rows_leave_days_unknown_and_the_key_failed() {
        let today = day("2026-11-26");
        let now = at("2026-11-26T01:00:00Z");
        let mut cache = ActivityCache::default();
        let mut bad = row("2026-11-25", "m", 1.0, 1);
        bad.date = "25/11/2026".into();
        let err = cache
            .apply_at(
                "h",
                &Fetch::All,
                &[row("2026-11-24", "m", 1.0, 1), bad],
                today,
                now,
            )
            .unwrap_err();
        assert_eq!(err.rows, 1);
        assert_eq!(
            cache.completed_usage("h", today, 1),
            None,
            "never a cached zero"
        );
        assert!(cache.days("h").is_none());
        assert_eq!(cache.progress(["h"], today).failed, 1);
        // A missing usage: the same.
        let mut no_usage = row("2026-11-25", "m", 1.0, 1);
        no_usage.usage = None;
        assert!(cache
            .apply_at("h", &Fetch::All, &[no_usage], today, now)
            .is_err());
        // A dated call answering for another day is no answer for its day.
        let err = cache
            .apply_at(
                "h",
                &Fetch::Day(day("2026-11-25")),
                &[row("2026-11-20", "m", 1.0, 1)],
                today,
                now,
            )
            .unwrap_err();
        assert_eq!(err.rows, 1);
        assert!(cache.days("h").is_none());
        // Timestamp-shaped dates are read by their first 10 characters.
        cache
            .apply_at(
                "h",
                &Fetch::All,
                &[row("2026-11-25 00:00:00", "m", 1.0, 1)],
                today,
                now,
            )
            .unwrap();
        assert_eq!(cache.completed_usage("h", today, 1), Usd::from_f64(1.0));
        assert_eq!(cache.progress(["h"], today).complete, 1);
    }

    #[test]
    fn progress_and_gone_keys() {
        let now = at("2026-11-26T01:00:00Z");
        let today = now.date_naive();
        let mut cache = ActivityCache::default();
        cache
            .apply_at("done", &Fetch::All, &[], today, now)
            .unwrap();
        cache.mark_failed("bad");
        cache.mark_gone("gone", now);
        let p = cache.progress(["done", "bad", "gone", "new"], today);
        assert_eq!(
            p,
            Progress {
                complete: 1,
                pending: 1,
                failed: 1,
                gone: 1
            }
        );
        let plan = cache.plan(["done", "bad", "gone", "new"], now);
        let planned: Vec<&str> = plan.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(planned, ["bad", "new"], "a gone key is skipped for a while");
        let later = now + ChronoDuration::hours(GONE_RETRY_HOURS);
        assert!(cache.plan(["gone"], later).iter().any(|(h, _)| h == "gone"));
    }

    #[test]
    fn lenient_numbers_decode() {
        let rows: Vec<ActivityRow> = serde_json::from_str(
            r#"[{"date":"2026-11-25 00:00:00","model":"m","usage":"0.25","requests":2.0,
                 "prompt_tokens":"7","completion_tokens":null,"reasoning_tokens":null,
                 "byok_usage_inference":null}]"#,
        )
        .unwrap();
        assert_eq!(rows[0].usage, Some(0.25));
        assert_eq!(rows[0].requests, 2);
        assert_eq!(rows[0].prompt_tokens, 7);
        assert_eq!(rows[0].completion_tokens, 0);
        assert_eq!(rows[0].day(), Some(day("2026-11-25")));
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
        cache.apply(
            "keep",
            &Fetch::All,
            &[row("2026-11-01", "m", 1.0, 1)],
            today,
        );
        cache.apply("gone", &Fetch::All, &[], today);
        let later = day("2026-12-10");
        cache.prune(&["keep"].into_iter().collect(), later);
        assert_eq!(cache.keys(), 1);
        assert_eq!(cache.rows(), 0, "the 2026-11-01 row is past the history");
        let days = cache.days("keep").unwrap();
        assert!(days
            .keys()
            .all(|d| *d >= later - ChronoDuration::days(HISTORY_DAYS)));
    }
}
