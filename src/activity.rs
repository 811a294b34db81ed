//! Per-key daily activity (`GET /activity?api_key_hash=H`): true rolling
//! windows and the per-company model mix.
//!
//! The activity API returns one row per (UTC date, model, provider endpoint)
//! for the last 30 *completed* UTC days and never today. The cache keeps, per
//! key, only what is published from those rows: the spend of each span in
//! [`SPANS`] and a per-model total over all 30 days, both for the UTC day the
//! history was read on. That is ~200 bytes a key, where every (day, model) row
//! was ~2 KB (BENCHMARKS.md, "Activity collection").
//!
//! - **Incremental.** Results are kept per key as they arrive; one failing
//!   key leaves only its own figures unknown. A 404 is "key gone" (deleted
//!   since the listing): skipped, not a failure.
//! - **Never a fake zero.** A key's figures exist only for the day its history
//!   was read on, and only when every row of that call was readable (a date in
//!   its first 10 characters, a finite `usage`). After UTC midnight they are
//!   unknown until the key's history is read again.
//! - **Self-correcting.** Every read is the whole history (one undated call),
//!   and replaces the key's figures: restated days win and nothing is counted
//!   twice (a restart refills from nothing, equally). Each key is read once
//!   after UTC midnight (the new day, and every earlier day again: the 24 h
//!   re-read of the day before included) and once more [`REREAD_AFTER_HOURS`]
//!   later (yesterday's 6 h re-read). Steady state: 2 calls per key per day.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use serde::Deserialize;

use crate::money::Usd;
use crate::snapshot::KeyActivity;
use crate::upstream::{Client, UpstreamError};

/// Completed days the API returns.
pub const HISTORY_DAYS: i64 = crate::snapshot::COMPLETED_DAYS;

/// The spans of completed UTC days (ending yesterday) whose spend is kept per
/// key: rolling_7d and rolling_30d add today to 6 and 29 of them; the model
/// mix and `completed_30d` cover all 30.
pub const SPANS: [i64; 3] = [6, 29, HISTORY_DAYS];

/// One row of `GET /activity`. Counts that real accounts have sent as `null`
/// (or as floats) read as their value or 0; a missing or `null` `usage`
/// leaves the row unreadable, and with it the call.
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

/// A key's history is read again this many hours after UTC midnight, so that
/// yesterday's late corrections (restatement) are picked up the same day.
pub const REREAD_AFTER_HOURS: i64 = 6;

/// A key answered 404 ("gone") is not asked again for this long (while a stale
/// listing may still name it).
pub const GONE_RETRY_HOURS: i64 = 6;

pub use crate::snapshot::ModelTotals;

/// One model's 30-day totals for one key, compact: 56 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelRow {
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

impl ModelRow {
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

    /// `None` when a dollar figure overflows (over $9.2 billion).
    fn add(&mut self, other: &ModelRow) -> Option<()> {
        self.usage = self.usage.checked_add(other.usage)?;
        self.byok = self.byok.checked_add(other.byok)?;
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt = self.prompt.saturating_add(other.prompt);
        self.completion = self.completion.saturating_add(other.completion);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
        Some(())
    }
}

/// A key hash as the cache stores it: OpenRouter's 64 lowercase hex digits as
/// their 32 bytes, anything else as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyId {
    Sha256([u8; 32]),
    Text(Box<str>),
}

impl KeyId {
    fn new(hash: &str) -> KeyId {
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if hash.len() == 64 && hash.as_bytes().iter().all(lower_hex) {
            let mut bytes = [0u8; 32];
            for (i, byte) in bytes.iter_mut().enumerate() {
                match u8::from_str_radix(&hash[2 * i..2 * i + 2], 16) {
                    Ok(b) => *byte = b,
                    Err(_) => return KeyId::Text(Box::from(hash)),
                }
            }
            KeyId::Sha256(bytes)
        } else {
            KeyId::Text(Box::from(hash))
        }
    }

    /// The hash as OpenRouter spells it.
    fn hash(&self) -> String {
        match self {
            KeyId::Sha256(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
            KeyId::Text(text) => text.to_string(),
        }
    }
}

/// The keys an activity run reads, in listing order (40 bytes a key).
#[derive(Debug, Default)]
pub struct Plan(Vec<KeyId>);

impl Plan {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The planned keys' hashes (tests, tools).
    pub fn hashes(&self) -> Vec<String> {
        self.0.iter().map(KeyId::hash).collect()
    }
}

/// What the cache holds for one key.
#[derive(Debug, Clone, Default)]
struct KeyState {
    /// The UTC day the history was read for: the figures cover the 30 days
    /// before it, and count only on that day.
    read_for: Option<NaiveDate>,
    /// When that read was answered (Unix seconds).
    read_at: u32,
    /// Spend of each span in [`SPANS`], nano-dollars.
    spend: [i64; SPANS.len()],
    /// Per-model totals over the 30 days, by model index.
    models: Box<[ModelRow]>,
    /// The last call for this key failed (its figures stay unknown).
    failed: bool,
    /// When a call answered 404 (Unix seconds; 0 = never).
    gone_at: u32,
}

impl KeyState {
    fn complete(&self, today: NaiveDate) -> bool {
        self.read_for == Some(today)
    }
}

pub use crate::status::Progress;

/// Cached activity of every key, by hash.
#[derive(Debug, Clone, Default)]
pub struct ActivityCache {
    keys: HashMap<KeyId, KeyState>,
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

/// Why a response could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable {
    /// Rows without a readable date or a finite usage (or whose sums overflow).
    pub rows: usize,
}

/// What the cache keeps of one read of a key's history: the spend of each
/// span and one total per model over the 30 days (names not yet interned).
/// Built as soon as a call is answered, so the rows never wait in memory.
#[derive(Debug, Clone)]
pub struct History {
    read_for: NaiveDate,
    spend: [i64; SPANS.len()],
    models: Vec<(Box<str>, ModelRow)>,
}

/// The figures of one key's rows read on `today`: exactly those of the rows
/// for the 30 days before `today`. Rows for other days (today, or a 31st day
/// back while upstream rolls over) are not ours. A row without a readable day
/// or a finite usage (or sums that overflow) makes the whole call unreadable.
pub fn summarize(rows: &[ActivityRow], today: NaiveDate) -> Result<History, Unreadable> {
    let first = today
        .checked_sub_signed(ChronoDuration::days(HISTORY_DAYS))
        .ok_or(Unreadable { rows: rows.len() })?;
    let span_start = SPANS.map(|days| today - ChronoDuration::days(days));
    let mut spend = [0i64; SPANS.len()];
    let mut models: Vec<(Box<str>, ModelRow)> = Vec::new();
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
        if day < first || day >= today {
            continue;
        }
        let fresh = ModelRow {
            model: 0,
            usage,
            byok,
            requests: row.requests,
            prompt: row.prompt_tokens,
            completion: row.completion_tokens,
            reasoning: row.reasoning_tokens,
        };
        let mut sums_ok = spend
            .iter_mut()
            .zip(span_start)
            .filter(|(_, start)| day >= *start)
            .all(|(total, _)| match total.checked_add(usage) {
                Some(sum) => {
                    *total = sum;
                    true
                }
                None => false,
            });
        // Days and provider endpoints of one model are summed.
        match models.iter_mut().find(|(name, _)| **name == *row.model) {
            Some((_, kept)) => sums_ok &= kept.add(&fresh).is_some(),
            None => models.push((Box::from(row.model.as_str()), fresh)),
        }
        if !sums_ok {
            unreadable += 1;
        }
    }
    if unreadable > 0 {
        return Err(Unreadable { rows: unreadable });
    }
    models.shrink_to_fit();
    Ok(History {
        read_for: today,
        spend,
        models,
    })
}

impl ActivityCache {
    /// Keys with a history read (for any day).
    pub fn keys(&self) -> usize {
        self.keys.values().filter(|k| k.read_for.is_some()).count()
    }

    /// Per-model totals held (all keys): the cache's size.
    pub fn model_rows(&self) -> usize {
        self.keys.values().map(|k| k.models.len()).sum()
    }

    /// Whether `hash`'s history is read for `today`.
    pub fn is_complete(&self, hash: &str, today: NaiveDate) -> bool {
        self.keys
            .get(&KeyId::new(hash))
            .is_some_and(|k| k.complete(today))
    }

    /// Where each listed key stands.
    pub fn progress<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a str>,
        today: NaiveDate,
    ) -> Progress {
        let mut p = Progress::default();
        for hash in hashes {
            match self.keys.get(&KeyId::new(hash)) {
                Some(k) if k.gone_at != 0 => p.gone += 1,
                Some(k) if k.complete(today) => p.complete += 1,
                Some(k) if k.failed => p.failed += 1,
                _ => p.pending += 1,
            }
        }
        p
    }

    /// The keys whose history a run at `now` reads: those not read for
    /// today, and those read for today before its [`REREAD_AFTER_HOURS`]
    /// re-read when that time has come. Keys answered 404 lately are skipped.
    pub fn plan<'a>(&self, hashes: impl IntoIterator<Item = &'a str>, now: DateTime<Utc>) -> Plan {
        let today = now.date_naive();
        let now_s = now.timestamp();
        let reread = today.and_hms_opt(0, 0, 0).map_or(i64::MAX, |t| {
            t.and_utc().timestamp() + REREAD_AFTER_HOURS * 3600
        });
        Plan(
            hashes
                .into_iter()
                .map(KeyId::new)
                .filter(|id| match self.keys.get(id) {
                    None => true,
                    Some(state)
                        if state.gone_at != 0
                            && now_s - i64::from(state.gone_at) < GONE_RETRY_HOURS * 3600 =>
                    {
                        false
                    }
                    Some(state) if !state.complete(today) => true,
                    Some(state) => now_s >= reread && i64::from(state.read_at) < reread,
                })
                .collect(),
        )
    }

    /// [`ActivityCache::apply_at`] read at the start of `today` (tests, tools).
    pub fn apply(&mut self, hash: &str, rows: &[ActivityRow], today: NaiveDate) -> usize {
        let at = today
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_default();
        match self.apply_at(hash, rows, today, at) {
            Ok(()) => 0,
            Err(e) => e.rows,
        }
    }

    /// Records a successful read of `hash`'s history, planned on `today` and
    /// answered at `read_at` ([`summarize`], then [`ActivityCache::record`]).
    /// When a row cannot be read, nothing is recorded: the key is marked
    /// failed and its figures stay unknown, never a cached zero.
    pub fn apply_at(
        &mut self,
        hash: &str,
        rows: &[ActivityRow],
        today: NaiveDate,
        read_at: DateTime<Utc>,
    ) -> Result<(), Unreadable> {
        match summarize(rows, today) {
            Ok(history) => {
                self.record(hash, history, read_at);
                Ok(())
            }
            Err(e) => {
                self.mark_failed(hash);
                Err(e)
            }
        }
    }

    /// Makes `history` the key's figures, replacing what was there (a
    /// restatement wins; a repeat changes nothing).
    pub fn record(&mut self, hash: &str, history: History, read_at: DateTime<Utc>) {
        let mut models: Vec<ModelRow> = history
            .models
            .iter()
            .map(|(name, row)| ModelRow {
                model: self.intern(name),
                ..*row
            })
            .collect();
        models.sort_by_key(|r| r.model);
        let state = self.keys.entry(KeyId::new(hash)).or_default();
        *state = KeyState {
            read_for: Some(history.read_for),
            read_at: stamp(read_at),
            spend: history.spend,
            models: models.into_boxed_slice(),
            failed: false,
            gone_at: 0,
        };
    }

    /// The last call for `hash` failed: its figures stay as they were (unknown
    /// once their day has passed).
    pub fn mark_failed(&mut self, hash: &str) {
        self.keys.entry(KeyId::new(hash)).or_default().failed = true;
    }

    /// `hash` answered 404: deleted since the listing. Skipped for
    /// [`GONE_RETRY_HOURS`]; its figures go when the listing drops it.
    pub fn mark_gone(&mut self, hash: &str, at: DateTime<Utc>) {
        let state = self.keys.entry(KeyId::new(hash)).or_default();
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

    /// Makes room for `keys` keys at once, so that a fill never holds the
    /// old and the grown table together (~20 MB at 100k keys).
    pub fn reserve(&mut self, keys: usize) {
        self.keys.reserve(keys.saturating_sub(self.keys.len()));
    }

    /// Forgets keys no longer listed. (Figures read for an earlier day stay
    /// until the key is read again; they answer only for that day.)
    pub fn prune<'a>(&mut self, listed: impl IntoIterator<Item = &'a str>) {
        let listed: HashSet<KeyId> = listed.into_iter().map(KeyId::new).collect();
        self.keys.retain(|id, _| listed.contains(id));
    }

    /// Spend of the last `days` completed days before `today` (`days` one of
    /// [`SPANS`]); `None` unless `hash`'s history was read for `today`.
    pub fn completed_usage(&self, hash: &str, today: NaiveDate, days: i64) -> Option<Usd> {
        let state = self.keys.get(&KeyId::new(hash))?;
        let span = SPANS.iter().position(|d| *d == days)?;
        state
            .complete(today)
            .then(|| Usd::from_nanos(state.spend[span].into()))
    }

    /// Per-model totals of one key over the last [`HISTORY_DAYS`] completed
    /// days before `today`; `None` unless its history was read for `today`.
    pub fn models(
        &self,
        hash: &str,
        today: NaiveDate,
    ) -> Option<impl Iterator<Item = (&str, ModelTotals)>> {
        let state = self.keys.get(&KeyId::new(hash))?;
        state.complete(today).then(|| {
            state
                .models
                .iter()
                .map(|row| (&*self.models[row.model as usize], row.totals()))
        })
    }
}

/// What a snapshot reads of the cache.
impl KeyActivity for ActivityCache {
    fn completed_usage(&self, hash: &str, today: NaiveDate, days: i64) -> Option<Usd> {
        ActivityCache::completed_usage(self, hash, today, days)
    }

    fn each_model(
        &self,
        hash: &str,
        today: NaiveDate,
        each: &mut dyn FnMut(&str, ModelTotals),
    ) -> bool {
        let Some(models) = self.models(hash, today) else {
            return false;
        };
        for (model, totals) in models {
            each(model, totals);
        }
        true
    }
}

/// One finished call.
pub type Outcome = (String, Result<Vec<ActivityRow>, UpstreamError>);

/// Runs planned calls with at most `concurrency` in flight and at most
/// `calls_per_second` started per second, handing back each result as it
/// arrives ([`Fetcher::next`]). Dropping it aborts the calls in flight.
pub struct Fetcher {
    client: Client,
    plan: std::vec::IntoIter<KeyId>,
    tasks: tokio::task::JoinSet<Outcome>,
    concurrency: usize,
    period: Duration,
    next_start: tokio::time::Instant,
}

impl Fetcher {
    pub fn new(client: Client, plan: Plan, concurrency: usize, calls_per_second: u32) -> Fetcher {
        Fetcher {
            client,
            plan: plan.0.into_iter(),
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
        let Some(hash) = self.plan.next().map(|id| id.hash()) else {
            return;
        };
        // Never faster than the rate, also after waiting for a free slot.
        self.next_start = self.next_start.max(tokio::time::Instant::now()) + self.period;
        let client = self.client.clone();
        self.tasks.spawn(async move {
            let rows = client.activity(&hash).await;
            (hash, rows)
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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

    fn apply(cache: &mut ActivityCache, rows: &[ActivityRow], now: &str) {
        let now = at(now);
        cache.apply_at("h", rows, now.date_naive(), now).unwrap();
    }

    fn mix(cache: &ActivityCache, today: NaiveDate) -> BTreeMap<String, ModelTotals> {
        cache
            .models("h", today)
            .unwrap()
            .map(|(m, t)| (m.to_string(), t))
            .collect()
    }

    #[test]
    fn first_fill_then_new_day_and_restatements() {
        let mut cache = ActivityCache::default();
        let noon = "2026-11-26T12:00:00Z";
        assert_eq!(cache.plan(["h"], at(noon)).hashes(), ["h"]);
        apply(&mut cache, &[row("2026-11-25", "m", 1.0, 1)], noon);
        // Read 12 h after yesterday closed: past the 6 h re-read already.
        assert!(cache.plan(["h"], at("2026-11-26T23:59:00Z")).is_empty());
        // After midnight: the new day, and every earlier day again (the 24 h
        // re-read of the day before among them).
        let after_midnight = "2026-11-27T00:10:00Z";
        assert_eq!(cache.plan(["h"], at(after_midnight)).hashes(), ["h"]);
        apply(&mut cache, &[], after_midnight);
        assert!(cache.plan(["h"], at("2026-11-27T05:59:00Z")).is_empty());
        // 6 h after midnight, once more for yesterday's late corrections.
        let six = "2026-11-27T06:05:00Z";
        assert_eq!(cache.plan(["h"], at(six)).hashes(), ["h"]);
        apply(&mut cache, &[], six);
        assert!(cache.plan(["h"], at("2026-11-27T23:00:00Z")).is_empty());
    }

    #[test]
    fn a_restated_day_replaces_its_figures_and_a_repeat_counts_nothing_twice() {
        let mut cache = ActivityCache::default();
        let today = day("2026-11-26");
        let rows = [
            row("2026-11-25", "m", 1.0, 1),
            row("2026-11-25", "m", 0.5, 1),
            row("2026-11-10", "m", 0.25, 1),
        ];
        apply(&mut cache, &rows, "2026-11-26T00:10:00Z");
        assert_eq!(cache.completed_usage("h", today, 6), Usd::from_f64(1.5));
        assert_eq!(cache.completed_usage("h", today, 30), Usd::from_f64(1.75));
        // The same answer again (a refill, a restart): the same figures.
        apply(&mut cache, &rows, "2026-11-26T00:20:00Z");
        assert_eq!(cache.completed_usage("h", today, 30), Usd::from_f64(1.75));
        assert_eq!(
            cache.model_rows(),
            1,
            "days and endpoints of one model merged"
        );
        assert_eq!(mix(&cache, today)["m"].requests, 3);
        // Restated later: the new figures replace the old ones.
        apply(
            &mut cache,
            &[
                row("2026-11-25", "m", 2.25, 3),
                row("2026-11-10", "m", 0.25, 1),
            ],
            "2026-11-26T06:10:00Z",
        );
        assert_eq!(cache.completed_usage("h", today, 6), Usd::from_f64(2.25));
        assert_eq!(cache.completed_usage("h", today, 30), Usd::from_f64(2.5));
        assert_eq!(mix(&cache, today)["m"].requests, 4);
        assert_eq!(mix(&cache, today)["m"].usage, Usd::from_f64(2.5).unwrap());
    }

    #[test]
    fn unreadable_rows_leave_the_key_unknown_and_failed() {
        let today = day("2026-11-26");
        let now = at("2026-11-26T01:00:00Z");
        let mut cache = ActivityCache::default();
        let mut bad = row("2026-11-25", "m", 1.0, 1);
        bad.date = "25/11/2026".into();
        let err = cache
            .apply_at("h", &[row("2026-11-24", "m", 1.0, 1), bad], today, now)
            .unwrap_err();
        assert_eq!(err.rows, 1);
        assert_eq!(
            cache.completed_usage("h", today, 6),
            None,
            "never a cached zero"
        );
        assert!(cache.models("h", today).is_none());
        assert_eq!(cache.progress(["h"], today).failed, 1);
        assert_eq!(cache.plan(["h"], now).hashes(), ["h"], "retried");
        // A missing usage: the same.
        let mut no_usage = row("2026-11-25", "m", 1.0, 1);
        no_usage.usage = None;
        assert!(cache.apply_at("h", &[no_usage], today, now).is_err());
        assert_eq!(cache.completed_usage("h", today, 6), None);
        // Timestamp-shaped dates are read by their first 10 characters.
        cache
            .apply_at("h", &[row("2026-11-25 00:00:00", "m", 1.0, 1)], today, now)
            .unwrap();
        assert_eq!(cache.completed_usage("h", today, 6), Usd::from_f64(1.0));
        assert_eq!(cache.progress(["h"], today).complete, 1);
        // A later failure keeps the day's figures (the page says the run failed).
        cache.mark_failed("h");
        assert_eq!(cache.completed_usage("h", today, 6), Usd::from_f64(1.0));
    }

    #[test]
    fn progress_and_gone_keys() {
        let now = at("2026-11-26T01:00:00Z");
        let today = now.date_naive();
        let mut cache = ActivityCache::default();
        cache.apply_at("done", &[], today, now).unwrap();
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
        assert_eq!(
            plan.hashes(),
            ["bad", "new"],
            "a gone key is skipped for a while"
        );
        let later = now + ChronoDuration::hours(GONE_RETRY_HOURS);
        assert_eq!(cache.plan(["gone"], later).hashes(), ["gone"]);
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
    fn spans_end_yesterday_never_include_today_and_count_only_on_their_day() {
        let today = day("2026-11-26");
        let mut cache = ActivityCache::default();
        let rows = [
            row("2026-11-25", "a", 1.0, 1),
            row("2026-11-25", "b", 0.5, 1),
            row("2026-11-20", "a", 2.0, 1), // 6 days back: inside the 6-day span
            row("2026-11-19", "a", 4.0, 1), // 7 days back: outside
            row("2026-10-28", "a", 8.0, 1), // 29 days back: inside the 29-day span
            row("2026-10-27", "a", 16.0, 1), // 30 days back: the 30-day span only
            row("2026-10-26", "a", 32.0, 1), // 31 days back: past the history; ignored
            row("2026-11-26", "a", 100.0, 1), // today: the API never sends it; ignored
        ];
        assert_eq!(cache.apply("h", &rows, today), 0);
        assert_eq!(cache.completed_usage("h", today, 6), Usd::from_f64(3.5));
        assert_eq!(cache.completed_usage("h", today, 29), Usd::from_f64(15.5));
        assert_eq!(cache.completed_usage("h", today, 30), Usd::from_f64(31.5));
        // The model mix covers the 30 days and sums to the 30-day span.
        let models = mix(&cache, today);
        assert_eq!(models["a"].usage, Usd::from_f64(31.0).unwrap());
        assert_eq!(models["b"].usage, Usd::from_f64(0.5).unwrap());
        assert_eq!(models["a"].requests, 5);
        assert_eq!(cache.completed_usage("unknown", today, 6), None);
        // A span the cache does not keep is not made up.
        assert_eq!(cache.completed_usage("h", today, 5), None);
        // A day later, before the key is read again: unknown, not yesterday's.
        let tomorrow = day("2026-11-27");
        assert_eq!(cache.completed_usage("h", tomorrow, 6), None);
        assert!(cache.models("h", tomorrow).is_none());
        assert!(!cache.is_complete("h", tomorrow));
    }

    #[test]
    fn spans_match_the_published_windows() {
        for (_, days) in crate::snapshot::ROLLING {
            assert!(SPANS.contains(&days), "{days}");
        }
        assert!(SPANS.contains(&crate::snapshot::COMPLETED_DAYS));
    }

    #[test]
    fn key_ids_keep_every_hash_apart() {
        let hex = "f01d52606dc8f0a8303a7b5cc3fa07109c2e346cec7c0a16b40de462992ce943";
        assert!(matches!(KeyId::new(hex), KeyId::Sha256(_)));
        assert_eq!(KeyId::new(hex).hash(), hex);
        // Upper case is not folded into the lower-case hash: text, so distinct.
        let upper = hex.to_uppercase();
        assert!(matches!(KeyId::new(&upper), KeyId::Text(_)));
        assert_ne!(KeyId::new(hex), KeyId::new(&upper));
        assert!(matches!(KeyId::new("h"), KeyId::Text(_)));
        let today = day("2026-11-26");
        let mut cache = ActivityCache::default();
        cache.apply(hex, &[row("2026-11-25", "m", 1.0, 1)], today);
        cache.apply(&upper, &[row("2026-11-25", "m", 2.0, 1)], today);
        assert_eq!(cache.completed_usage(hex, today, 6), Usd::from_f64(1.0));
        assert_eq!(cache.completed_usage(&upper, today, 6), Usd::from_f64(2.0));
    }

    #[test]
    fn prune_forgets_deleted_keys() {
        let today = day("2026-11-26");
        let mut cache = ActivityCache::default();
        cache.apply("keep", &[row("2026-11-01", "m", 1.0, 1)], today);
        cache.apply("gone", &[], today);
        cache.prune(["keep"]);
        assert_eq!(cache.keys(), 1);
        assert_eq!(cache.model_rows(), 1);
        assert_eq!(cache.completed_usage("gone", today, 30), None);
        // A listing taken just before midnight, published after a run of the
        // new day: still that day's figures, never a zero.
        assert_eq!(cache.completed_usage("keep", today, 30), Usd::from_f64(1.0));
    }
}
