//! Per-key daily activity (`GET /activity?api_key_hash=H`): true rolling
//! windows and the per-company model mix.
//!
//! The activity API returns one row per (UTC date, model, provider endpoint)
//! for the last 30 *completed* UTC days. The cache keeps, per
//! key, only what is published from those rows: the spend of each span in
//! [`SPANS`] and a per-model total over all 30 days, both for the UTC day the
//! history was read on. That is ~200 bytes a key, where every (day, model) row
//! was ~2 KB (BENCHMARKS.md, "Activity collection").
//!
//! - **Incremental.** Results are kept per key as they arrive; one failing
//!   key leaves only its own figures unknown. A 404 is "key gone" (deleted
//!   since the listing): skipped, unless a later listing still lists the key
//!   ([`ActivityCache::fail_relisted`]): then it is a failure.
//! - **Never a fake zero.** A key's figures exist only for the day its history
//!   was read on, and only when every row of that call was readable (a date in
//!   its first 10 characters, a finite `usage`). After UTC midnight they are
//!   unknown until the key's history is read again.
//! - **Self-correcting.** Every read is the whole history (one undated call),
//!   and replaces the key's figures: restated days win and nothing is counted
//!   twice (a restart refills from nothing, equally). Each key holding an
//!   earlier day's figures is read again from [`FIRST_READ_MINUTES`] past UTC
//!   midnight (OpenRouter's own advice: a day still grows for minutes after
//!   it ends; the new day, and every earlier day again: the 24 h re-read of
//!   the day before included) and once more [`REREAD_AFTER_HOURS`] later
//!   (yesterday's 6 h re-read). Steady state: 2 calls per key per day. A key
//!   with no figures at all (a first fill, a new key) is read at once, and
//!   once more at 00:30 if that read came earlier.
//! - **Guarded.** A key's 30 completed days can never have cost more than its
//!   lifetime usage in a listing taken since they ended ([`spend_bound`]): an
//!   answer over it (an upstream that ignores `api_key_hash` sends the whole
//!   account's rows for every key) fails the key, loudly.
//! - **Not a day short.** Upstream's window rolls over some time after
//!   midnight; an answer read before that covers the 30 days ending the day
//!   before yesterday. Its tell: rows dated before `today − 30` (a 31st day
//!   back) and none for yesterday or today. But a rolled-over answer may carry
//!   a 31st day back too (a live undated call returned 31 dates), so a key idle
//!   yesterday looks the same. The rule ([`ActivityCache::take`]): such an
//!   answer leaves the key pending (retried by the next run) unless some
//!   answer read for the same day has shown a row for yesterday or today
//!   (upstream has rolled over: the key was idle), or it was read at or after
//!   the [`REREAD_AFTER_HOURS`] re-read (six hours late is no lag: an idle
//!   key). A lagging answer with no 31st day back cannot be told apart from a
//!   key idle yesterday; the 06:00 re-read corrects it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};

use crate::money::Usd;
use crate::snapshot::KeyActivity;
pub use crate::upstream::ActivityRow;

/// Completed days the API returns.
pub const HISTORY_DAYS: i64 = crate::snapshot::COMPLETED_DAYS;

/// The spans of completed UTC days (ending yesterday) whose spend is kept per
/// key: rolling_7d and rolling_30d add today to 6 and 29 of them; the model
/// mix and `completed_30d` cover all 30.
pub const SPANS: [i64; 3] = [6, 29, HISTORY_DAYS];

/// A key's history is read again this many hours after UTC midnight, so that
/// yesterday's late corrections (restatement) are picked up the same day.
pub const REREAD_AFTER_HOURS: i64 = 6;

/// A key answered 404 ("gone") is not asked again for this long (while a stale
/// listing may still name it).
pub const GONE_RETRY_HOURS: i64 = 6;

/// The new day is first read this many minutes after UTC midnight: a day
/// can still grow for minutes after it ends (requests are counted on the day
/// they started).
pub const FIRST_READ_MINUTES: i64 = 30;

/// The most a key's 30 completed days can have cost when a listing taken
/// since they ended says it has cost `lifetime` in all: that, plus 1 % and a
/// cent for rounding and for how the two figures are counted.
pub fn spend_bound(lifetime: Usd) -> Usd {
    let slack = (lifetime.nanos() / 100).max(Usd::from_nanos(10_000_000).nanos());
    Usd::from_nanos(lifetime.nanos().saturating_add(slack))
}

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

/// The keys an activity run reads, in listing order, each with the most its
/// 30 completed days can have cost (nano-dollars; `i64::MAX` when no listing
/// says): 48 bytes a key.
#[derive(Debug, Default)]
pub struct Plan(std::vec::IntoIter<(KeyId, i64)>);

/// One planned key, made when its call starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub hash: String,
    /// The most its 30 completed days can have cost ([`spend_bound`]).
    pub max_spend: Option<Usd>,
}

impl Plan {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The planned keys' hashes (tests, tools).
    pub fn hashes(&self) -> Vec<String> {
        self.0.as_slice().iter().map(|(id, _)| id.hash()).collect()
    }
}

/// The planned keys, in order.
impl Iterator for Plan {
    type Item = Planned;

    fn next(&mut self) -> Option<Planned> {
        self.0.next().map(|(id, max)| Planned {
            hash: id.hash(),
            max_spend: (max != i64::MAX).then(|| Usd::from_nanos(max.into())),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Plan {}

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
    /// The latest day an answer read for it showed a row for yesterday or
    /// today: upstream had rolled over to that day.
    rolled_over: Option<NaiveDate>,
}

/// What became of one answer ([`ActivityCache::take`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Recorded: the key's history is read for its day.
    Complete,
    /// From a window that has not rolled over yet: nothing recorded, the key
    /// stays pending and is read again.
    Behind,
    /// More 30-day spend than its lifetime usage allows: nothing recorded,
    /// the key failed.
    OverLifetime { spend: Usd, max: Usd },
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
    /// The newest day any row was dated (today's partial rows included).
    newest: Option<NaiveDate>,
    /// Some row was dated before the 30 days (a 31st day back).
    before_window: bool,
}

impl History {
    /// Spend of all 30 completed days.
    pub fn completed(&self) -> Usd {
        Usd::from_nanos(self.spend[SPANS.len() - 1].into())
    }

    /// A row dated yesterday or today: upstream's window has rolled over to
    /// the day this answer was read for.
    pub fn shows_rollover(&self) -> bool {
        self.newest
            .zip(self.read_for.pred_opt())
            .is_some_and(|(newest, yesterday)| newest >= yesterday)
    }

    /// The shape of an answer from a window that has not rolled over (a
    /// 31st day back, nothing for yesterday or today), or of a key idle
    /// yesterday: the module doc says how the two are told apart.
    pub fn looks_behind(&self) -> bool {
        self.before_window && !self.shows_rollover()
    }

    /// Whether an answer read at `read_at` is taken for one from a window not
    /// rolled over yet: it looks behind and came before the
    /// [`REREAD_AFTER_HOURS`] re-read of its day (after it, a 31st day back
    /// with nothing yesterday is an idle key, not a late window).
    pub fn behind_at(&self, read_at: DateTime<Utc>) -> bool {
        let reread = self
            .read_for
            .and_hms_opt(REREAD_AFTER_HOURS as u32, 0, 0)
            .map(|t| t.and_utc());
        self.looks_behind() && reread.is_some_and(|t| read_at < t)
    }
}

/// The figures of one key's rows read on `today`: exactly those of the rows
/// for the 30 days before `today`. Rows for other days (a partial today, or a
/// 31st day back) are not counted, only noted ([`History::looks_behind`]). A
/// row without a readable day or a finite usage (or sums that overflow) makes
/// the whole call unreadable.
pub fn summarize(rows: &[ActivityRow], today: NaiveDate) -> Result<History, Unreadable> {
    let first = today
        .checked_sub_signed(ChronoDuration::days(HISTORY_DAYS))
        .ok_or(Unreadable { rows: rows.len() })?;
    let span_start = SPANS.map(|days| today - ChronoDuration::days(days));
    let mut spend = [0i64; SPANS.len()];
    let mut models: Vec<(Box<str>, ModelRow)> = Vec::new();
    let mut unreadable = 0;
    let (mut newest, mut before_window) = (None, false);
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
        newest = newest.max(Some(day));
        before_window |= day < first;
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
        newest,
        before_window,
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

    /// [`ActivityCache::plan_bounded`] with no lifetime bounds (tests, tools).
    pub fn plan<'a>(&self, hashes: impl IntoIterator<Item = &'a str>, now: DateTime<Utc>) -> Plan {
        self.plan_bounded(hashes.into_iter().map(|hash| (hash, None)), now)
    }

    /// The keys whose history a run at `now` reads, each given with its
    /// lifetime usage in a listing taken since today began (`None`: no bound):
    /// - a key never read: at once;
    /// - a key holding an earlier day's figures: from [`FIRST_READ_MINUTES`]
    ///   past midnight;
    /// - a key read for today: again at that time if read before it, and at
    ///   the [`REREAD_AFTER_HOURS`] re-read if read before that.
    ///
    /// Keys answered 404 lately are skipped.
    pub fn plan_bounded<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, Option<Usd>)>,
        now: DateTime<Utc>,
    ) -> Plan {
        let today = now.date_naive();
        let now_s = now.timestamp();
        let midnight = today
            .and_hms_opt(0, 0, 0)
            .map_or(i64::MAX, |t| t.and_utc().timestamp());
        let first_read = midnight.saturating_add(FIRST_READ_MINUTES * 60);
        let reread = midnight.saturating_add(REREAD_AFTER_HOURS * 3600);
        let read_again = |at: i64| now_s >= at;
        let due = |state: &KeyState| match state {
            KeyState { gone_at, .. }
                if *gone_at != 0 && now_s - i64::from(*gone_at) < GONE_RETRY_HOURS * 3600 =>
            {
                false
            }
            KeyState { read_for: None, .. } => true,
            state if !state.complete(today) => read_again(first_read),
            state => {
                let read_at = i64::from(state.read_at);
                (read_again(first_read) && read_at < first_read)
                    || (read_again(reread) && read_at < reread)
            }
        };
        let bound = |lifetime: Option<Usd>| {
            lifetime
                .and_then(|l| i64::try_from(spend_bound(l).nanos()).ok())
                .unwrap_or(i64::MAX)
        };
        Plan(
            keys.into_iter()
                .map(|(hash, lifetime)| (KeyId::new(hash), lifetime))
                .filter(|(id, _)| self.keys.get(id).map_or(true, due))
                .map(|(id, lifetime)| (id, bound(lifetime)))
                .collect::<Vec<_>>()
                .into_iter(),
        )
    }

    /// Takes one answer read at `read_at` for `hash`, planned with
    /// `max_spend` ([`spend_bound`]): records it, or leaves the key pending
    /// (a window not rolled over yet, by the module doc's rule), or fails the
    /// key (over its lifetime usage).
    pub fn take(
        &mut self,
        hash: &str,
        history: History,
        read_at: DateTime<Utc>,
        max_spend: Option<Usd>,
    ) -> Taken {
        let spend = history.completed();
        if let Some(max) = max_spend.filter(|max| spend > *max) {
            self.mark_failed(hash);
            return Taken::OverLifetime { spend, max };
        }
        self.note_rollover(&history);
        if history.behind_at(read_at) && self.rolled_over != Some(history.read_for) {
            let state = self.keys.entry(KeyId::new(hash)).or_default();
            state.failed = false;
            state.gone_at = 0;
            return Taken::Behind;
        }
        self.record(hash, history, read_at);
        Taken::Complete
    }

    /// Notes that upstream has rolled over when `history` shows it (answers
    /// taken in one batch are all noted first: arrival order is no proof).
    pub fn note_rollover(&mut self, history: &History) {
        if history.shows_rollover() {
            self.rolled_over = self.rolled_over.max(Some(history.read_for));
        }
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

    /// Keys answered 404 that a listing taken at `listed_at`, at least
    /// `margin` later (so fetched wholly after the 404), still lists: not
    /// deleted, so the 404 was a failure. Call right after
    /// [`ActivityCache::prune`] with that listing. Marks them failed (read
    /// again by the next run) and returns how many.
    pub fn fail_relisted(
        &mut self,
        listed_at: DateTime<Utc>,
        margin: std::time::Duration,
    ) -> usize {
        let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
        let before = listed_at.timestamp().saturating_sub(margin);
        let mut relisted = 0;
        for state in self.keys.values_mut() {
            if state.gone_at != 0 && i64::from(state.gone_at) <= before {
                state.gone_at = 0;
                state.failed = true;
                relisted += 1;
            }
        }
        relisted
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
        // Not before 00:30: the day that just ended may still grow.
        assert!(cache.plan(["h"], at("2026-11-27T00:29:00Z")).is_empty());
        // Then the new day, and every earlier day again (the 24 h re-read of
        // the day before among them).
        let after_midnight = "2026-11-27T00:30:00Z";
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
    fn a_key_never_read_is_read_at_once_and_again_at_half_past_midnight() {
        let mut cache = ActivityCache::default();
        let early = "2026-11-27T00:05:00Z";
        assert_eq!(cache.plan(["h"], at(early)).hashes(), ["h"]);
        apply(&mut cache, &[], early);
        assert!(cache.plan(["h"], at("2026-11-27T00:20:00Z")).is_empty());
        let half_past = "2026-11-27T00:30:00Z";
        assert_eq!(cache.plan(["h"], at(half_past)).hashes(), ["h"]);
        apply(&mut cache, &[], half_past);
        assert!(cache.plan(["h"], at("2026-11-27T05:00:00Z")).is_empty());
    }

    fn take(cache: &mut ActivityCache, rows: &[ActivityRow], now: &str, max: Option<f64>) -> Taken {
        let now = at(now);
        let history = summarize(rows, now.date_naive()).unwrap();
        cache.take("h", history, now, max.and_then(Usd::from_f64))
    }

    #[test]
    fn thirty_days_over_the_lifetime_usage_fail_the_key() {
        let mut cache = ActivityCache::default();
        let rows = [
            row("2026-11-20", "m", 5.0, 1),
            row("2026-11-25", "m", 6.0, 1),
        ];
        let noon = "2026-11-26T12:00:00Z";
        let max = spend_bound(Usd::from_f64(10.0).unwrap());
        assert_eq!(max, Usd::from_f64(10.1).unwrap(), "1 % of slack");
        assert_eq!(
            spend_bound(Usd::ZERO),
            Usd::from_f64(0.01).unwrap(),
            "or a cent"
        );
        let taken = take(&mut cache, &rows, noon, Some(10.1));
        assert_eq!(
            taken,
            Taken::OverLifetime {
                spend: Usd::from_f64(11.0).unwrap(),
                max: Usd::from_f64(10.1).unwrap()
            }
        );
        let today = at(noon).date_naive();
        assert_eq!(cache.progress(["h"], today).failed, 1);
        assert_eq!(cache.completed_usage("h", today, 30), None);
        // Within the bound (or with none): recorded.
        assert_eq!(take(&mut cache, &rows, noon, Some(11.0)), Taken::Complete);
        assert_eq!(take(&mut cache, &rows, noon, None), Taken::Complete);
        assert_eq!(cache.completed_usage("h", today, 30), Usd::from_f64(11.0));
        // The plan carries the bound of each key's lifetime.
        let mut plan = ActivityCache::default().plan_bounded(
            [("a", Some(Usd::from_f64(10.0).unwrap())), ("b", None)],
            at(noon),
        );
        assert_eq!(plan.next().unwrap().max_spend, Some(max));
        assert_eq!(plan.next().unwrap().max_spend, None);
    }

    /// Today is 2026-11-27: the 30 days are 10-28 ..= 11-26.
    #[test]
    fn an_answer_from_a_window_not_rolled_over_leaves_the_key_pending() {
        let now = "2026-11-27T00:40:00Z";
        let today = at(now).date_naive();
        // Upstream still serves 10-27 ..= 11-25: a 31st day back, no yesterday.
        let behind = [
            row("2026-10-27", "m", 1.0, 1),
            row("2026-11-25", "m", 1.0, 1),
        ];
        let mut cache = ActivityCache::default();
        assert_eq!(take(&mut cache, &behind, now, None), Taken::Behind);
        assert_eq!(cache.progress(["h"], today).pending, 1);
        assert_eq!(cache.completed_usage("h", today, 30), None);
        assert_eq!(cache.plan(["h"], at(now)).hashes(), ["h"], "read again");
        // A rolled-over answer of 31 dates (10-27 ..= 11-26) and a partial
        // today: complete, counting only the 30 days.
        let rolled = [
            row("2026-10-27", "m", 1.0, 1),
            row("2026-11-26", "m", 2.0, 1),
            row("2026-11-27", "m", 4.0, 1),
        ];
        assert_eq!(take(&mut cache, &rolled, now, None), Taken::Complete);
        assert_eq!(cache.completed_usage("h", today, 30), Usd::from_f64(2.0));
        // Once an answer showed yesterday, the same shape is a key idle
        // yesterday, not a lag: complete.
        assert_eq!(take(&mut cache, &behind, now, None), Taken::Complete);
        assert_eq!(cache.completed_usage("h", today, 30), Usd::from_f64(1.0));
        // Without that proof, it is taken as idle from the 06:00 re-read on.
        let mut fresh = ActivityCache::default();
        assert_eq!(
            take(&mut fresh, &behind, "2026-11-27T05:59:00Z", None),
            Taken::Behind
        );
        assert_eq!(
            take(&mut fresh, &behind, "2026-11-27T06:00:00Z", None),
            Taken::Complete
        );
        // No 31st day back: nothing tells a lag from an idle yesterday.
        let mut quiet = ActivityCache::default();
        let no_tell = [row("2026-11-20", "m", 1.0, 1)];
        assert_eq!(take(&mut quiet, &no_tell, now, None), Taken::Complete);
    }

    #[test]
    fn a_404_for_a_key_a_later_listing_still_lists_is_a_failure() {
        let mut cache = ActivityCache::default();
        let t = at("2026-11-26T12:00:00Z");
        cache.mark_gone("h", t);
        let margin = std::time::Duration::from_secs(30);
        // A listing that may have been fetched before the 404: still gone.
        assert_eq!(
            cache.fail_relisted(t + ChronoDuration::seconds(29), margin),
            0
        );
        assert_eq!(cache.progress(["h"], t.date_naive()).gone, 1);
        assert_eq!(
            cache.fail_relisted(t + ChronoDuration::seconds(30), margin),
            1
        );
        assert_eq!(cache.progress(["h"], t.date_naive()).failed, 1);
        assert_eq!(cache.plan(["h"], t).hashes(), ["h"], "read again");
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
