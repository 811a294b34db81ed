//! The exporter's activity collection: incremental runs of `GET /activity`
//! per listed key (see `crate::activity`), recorded as results arrive and
//! published with the rest, and the loop that runs them.
//!
//! A run is three phases: [`Exporter::plan_activity`] picks the keys due
//! (the first run after a start takes back what the statements ledger holds
//! first), an [`ActivityRun`] takes each answer as it comes and records
//! batches without waiting for a refresh, and [`Exporter::finish_activity`]
//! records the rest and says whether every key was read. With a ledger, each
//! recorded answer's rows go to it too, in batches ([`LedgerBatch`]), and the
//! account-wide `/activity` is read beside the keys when due (`account.rs`):
//! its failure is no failure of the run.
//!
//! A run fails (`openrouter_activity_up 0`, `reason="activity"`) when a call
//! fails, when rows cannot be read, when a key's 30 days cost more than its
//! lifetime usage, when every answer is a 404, or when a listing taken after
//! a 404 still lists the key. Keys whose answer came from a window not
//! rolled over yet stay pending, and the next run comes sooner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::activity_fetch::Fetcher;
use super::ledger::{LedgerBatch, PendingRead};
use super::Exporter;
use crate::activity::{self, ActivityRow, Plan, Planned, Progress, Taken, FIRST_READ_MINUTES};
use crate::money::Usd;
use crate::snapshot::LIFETIME;
use crate::sync::lock;
use crate::telemetry::FailureReason;
use crate::upstream::{Client, Endpoint, UpstreamError};

/// How often a long activity run records what has arrived, and publishes it.
const ACTIVITY_FLUSH_EVERY: Duration = Duration::from_secs(1);
const ACTIVITY_PUBLISH_EVERY: Duration = Duration::from_secs(30);
/// The next run comes at most this long after one that met a window not
/// rolled over yet.
const BEHIND_RETRY: Duration = Duration::from_secs(10 * 60);

/// One finished activity call, waiting to be recorded.
enum ActivityResult {
    /// The history, when it was read, the most it can have cost, and the
    /// rows themselves when a ledger records them.
    Read {
        hash: String,
        history: activity::History,
        read_at: DateTime<Utc>,
        max_spend: Option<Usd>,
        rows: Option<Vec<ActivityRow>>,
    },
    /// Answered with rows that could not be read (how many).
    Unreadable(String, usize),
    Gone(String, DateTime<Utc>),
    Failed(String),
}

/// What one batch of results did to the cache.
#[derive(Debug, Default)]
struct Applied {
    unreadable: usize,
    over_lifetime: usize,
    behind: usize,
}

/// The running tally of one activity run.
struct ActivityRun {
    /// The run's clock: its days are those completed before `today`.
    now: DateTime<Utc>,
    today: NaiveDate,
    started: Instant,
    calls: usize,
    rate: u32,
    batch: Vec<ActivityResult>,
    first_error: Option<UpstreamError>,
    /// Answers taken for `today` (any status).
    answered: usize,
    failed: usize,
    gone: usize,
    /// Keys answered 404 that a later listing still lists.
    relisted: usize,
    applied: Applied,
    past_midnight: bool,
    /// Activity was disabled by a reload during the run.
    disabled: bool,
    last_flush: Instant,
    last_publish: Instant,
    /// The answers on their way to the statements ledger, if there is one.
    ledger: Option<LedgerBatch>,
}

impl ActivityRun {
    fn new(now: DateTime<Utc>, calls: usize, rate: u32) -> ActivityRun {
        ActivityRun {
            now,
            today: now.date_naive(),
            started: Instant::now(),
            calls,
            rate,
            batch: Vec::new(),
            first_error: None,
            answered: 0,
            failed: 0,
            gone: 0,
            relisted: 0,
            applied: Applied::default(),
            past_midnight: false,
            disabled: false,
            last_flush: Instant::now(),
            last_publish: Instant::now(),
            ledger: None,
        }
    }

    /// Takes one answer into the batch. An answer after UTC midnight is
    /// dropped and stops the run: upstream's 30 days have moved on (the
    /// oldest planned day may be missing), so it is no answer for `today`.
    fn on_result(
        &mut self,
        fetcher: &mut Fetcher,
        planned: Planned,
        result: Result<Vec<ActivityRow>, UpstreamError>,
    ) {
        let read_at =
            self.now + chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default();
        if read_at.date_naive() != self.today {
            if !self.past_midnight {
                self.past_midnight = true;
                fetcher.stop();
                info!("UTC midnight passed during the activity run; the keys left are read for the new day by the next run");
            }
            return;
        }
        self.answered += 1;
        let Planned { hash, max_spend } = planned;
        let recorded = match result {
            // Summarized at once: without a ledger, a batch waiting for the
            // lock holds ~100 bytes a key, not the rows (~250 bytes each).
            Ok(rows) => match activity::summarize(&rows, self.today) {
                Ok(history) => ActivityResult::Read {
                    hash,
                    history,
                    read_at,
                    max_spend,
                    rows: self.ledger.is_some().then_some(rows),
                },
                Err(e) => ActivityResult::Unreadable(hash, e.rows),
            },
            Err(e) if e.status() == Some(404) => {
                self.gone += 1;
                debug!(key_hash = %hash, "activity: 404, the key is gone since the listing; skipped");
                ActivityResult::Gone(hash, read_at)
            }
            Err(e) => {
                self.failed += 1;
                if self.failed <= 3 {
                    warn!(key_hash = %hash, error = %e, "activity call failed; the key's figures stay unknown until the next run");
                }
                if matches!(e, UpstreamError::Unauthorized { .. }) {
                    // Every other call would be refused too.
                    fetcher.stop();
                }
                self.first_error.get_or_insert(e);
                ActivityResult::Failed(hash)
            }
        };
        self.batch.push(recorded);
    }

    /// Every answer was a 404: an upstream that knows none of the listed
    /// keys, not keys deleted since the listing.
    fn all_gone(&self) -> bool {
        self.answered > 0 && self.gone == self.answered
    }

    /// A key of this run failed already (whatever the rest brings).
    fn failing(&self) -> bool {
        let a = &self.applied;
        self.failed > 0 || a.unreadable > 0 || a.over_lifetime > 0 || self.relisted > 0
    }

    fn ok(&self) -> bool {
        !self.failing() && !self.all_gone()
    }

    /// The run's result: the calls planned, or the first failure.
    fn outcome(self, progress: Progress) -> Result<usize, UpstreamError> {
        let seconds = self.started.elapsed().as_secs();
        let (calls, answered, gone, behind) =
            (self.calls, self.answered, self.gone, self.applied.behind);
        let complete = progress.complete;
        if self.disabled {
            info!(
                calls,
                answered, "activity was disabled during the run; its results are dropped"
            );
            return Ok(calls);
        }
        if self.ok() {
            info!(
                calls,
                answered, gone, behind, complete, seconds, "activity run succeeded"
            );
            return Ok(calls);
        }
        let (failed, relisted) = (self.failed, self.relisted);
        let Applied {
            unreadable,
            over_lifetime,
            ..
        } = self.applied;
        warn!(
            calls, answered, failed, unreadable, over_lifetime, gone, relisted, complete, seconds,
            "activity run incomplete; the other keys' results are kept, the failed keys are retried next run"
        );
        let decode = |message: String| UpstreamError::Decode {
            endpoint: Endpoint::Activity,
            message,
        };
        let not_found = |message: String| UpstreamError::Status {
            endpoint: Endpoint::Activity,
            status: 404,
            message,
        };
        Err(if let Some(e) = self.first_error {
            e
        } else if unreadable > 0 {
            decode(format!("{unreadable} key(s) answered rows without a readable date or usage; their figures stay unknown"))
        } else if over_lifetime > 0 {
            decode(format!("{over_lifetime} key(s) answered more 30-day spend than their lifetime usage (is api_key_hash ignored?); their figures stay unknown"))
        } else if relisted > 0 {
            not_found(format!(
                "{relisted} key(s) answered 404 but are still listed"
            ))
        } else {
            not_found(format!("every one of {gone} call(s) answered 404"))
        })
    }
}

impl Exporter {
    /// One activity run: reads the history of each listed key not read for
    /// today or due for its re-read, at most `activity.calls_per_second`, keeping each key's
    /// result as it arrives. Returns the calls planned; `Err` (the first
    /// failure) when the run failed (module doc): the other keys' results are
    /// kept, and `openrouter_activity_up` is 0 until a run succeeds.
    pub async fn refresh_activity(&self) -> Result<usize, UpstreamError> {
        self.refresh_activity_at(Utc::now()).await
    }

    /// [`Exporter::refresh_activity`] as if it were `now`: the run's days are
    /// those completed before `now`'s UTC date, even if it crosses midnight.
    pub async fn refresh_activity_at(&self, now: DateTime<Utc>) -> Result<usize, UpstreamError> {
        self.activity_run(now).await.0
    }

    /// One run, and whether some key's answer came from a window not rolled
    /// over yet (the next run should come soon).
    async fn activity_run(&self, now: DateTime<Utc>) -> (Result<usize, UpstreamError>, bool) {
        let config = self.config();
        if !config.activity.enabled || config.openrouter.management_key.is_none() {
            return (Ok(0), false);
        }
        self.restore_activity(now).await;
        let Some((client, plan, relisted)) = self.plan_activity(now).await else {
            return (Ok(0), false);
        };
        let rate = config.activity.calls_per_second.max(1);
        let mut run = ActivityRun::new(now, plan.len(), rate);
        run.relisted = relisted;
        run.ledger = self
            .ledger()
            .map(|ledger| LedgerBatch::new(ledger, run.today));
        if run.calls > 0 {
            info!(
                calls = run.calls,
                calls_per_second = rate,
                eta_seconds = run.calls.div_ceil(rate as usize),
                "activity run started"
            );
        }
        // With a ledger, the account's own spend is read beside the keys.
        let account = self.start_account_call(&client, now);
        let mut fetcher = Fetcher::new(client, plan, config.activity.concurrency, rate);
        while let Some((planned, result)) = fetcher.next().await {
            run.on_result(&mut fetcher, planned, result);
            self.maybe_flush(&mut run, &mut fetcher).await;
        }
        let behind = run.applied.behind > 0;
        let outcome = self.finish_activity(run).await;
        // Recorded after the keys are published: the account never holds them back.
        let account_behind = match account {
            Some(call) => self.finish_account_call(call).await,
            None => false,
        };
        (outcome, behind || account_behind)
    }

    /// Prunes the cache and plans against the latest listing. Under the lock
    /// no snapshot build holds the cache, so it is updated in place, never
    /// copied. The run keeps no listing of its own: a refresh during a long
    /// fill replaces it, and two listings alive would double its memory.
    /// `None` before the first listing (or while activity is disabled);
    /// else the client, the plan, and the keys answered 404 that this
    /// listing still lists.
    async fn plan_activity(&self, now: DateTime<Utc>) -> Option<(Client, Plan, usize)> {
        let margin = self.config().refresh_interval;
        let _serial = self.shared.refresh_lock.lock().await;
        let mut guard = lock(&self.shared.state);
        let state = &mut *guard;
        let listing = Arc::clone(state.listing.as_ref()?);
        // A lifetime bounds the completed days only if read after they ended.
        let bounded = state
            .taken_at
            .is_some_and(|t| t.date_naive() >= now.date_naive());
        let listed_at = state.taken_at;
        // Company by company (as last attributed), so that each company's
        // totals, which wait for all its keys, appear as soon as they can
        // rather than all at the end of a long fill or a new day's pass.
        let mut order: Vec<(usize, usize)> = match &state.snapshot {
            Some(snap) if Arc::ptr_eq(&snap.data, &listing) => snap
                .company_of_key
                .iter()
                .copied()
                .enumerate()
                .map(|(i, c)| (c, i))
                .collect(),
            _ => (0..listing.keys.len()).map(|i| (0, i)).collect(),
        };
        order.sort_by_key(|(company, _)| *company);
        let client = state.client.clone();
        let cache = state.start_activity_run()?;
        cache.prune(listing.keys.iter().map(|k| k.hash.as_ref()));
        let relisted = listed_at.map_or(0, |at| cache.fail_relisted(at, margin));
        cache.reserve(listing.keys.len());
        let keys = order.into_iter().map(|(_, i)| {
            let key = &listing.keys[i];
            let lifetime = key.usage[LIFETIME].and_then(Usd::from_f64);
            (key.hash.as_ref(), lifetime.filter(|_| bounded))
        });
        let plan = cache.plan_bounded(keys, now);
        Some((client, plan, relisted))
    }

    /// Every second, records the batch if no refresh holds the lock (the
    /// batch just grows meanwhile); every 30 s, publishes too.
    async fn maybe_flush(&self, run: &mut ActivityRun, fetcher: &mut Fetcher) {
        let finished = fetcher.remaining() == 0;
        if run.last_flush.elapsed() < ACTIVITY_FLUSH_EVERY && !finished {
            return;
        }
        let Ok(_serial) = self.shared.refresh_lock.try_lock() else {
            return;
        };
        let progress = self.apply_activity(run);
        run.last_flush = Instant::now();
        if let Some(batch) = run.ledger.as_mut() {
            batch.write_if_due(lock(&self.shared.state).snapshot.clone());
        }
        let Some(p) = progress else {
            fetcher.stop();
            return;
        };
        if run.last_publish.elapsed() < ACTIVITY_PUBLISH_EVERY || finished {
            return;
        }
        self.rebuild_snapshot().await;
        self.publish().await;
        run.last_publish = Instant::now();
        let left = fetcher.remaining();
        info!(
            complete = p.complete,
            pending = p.pending,
            failed = p.failed,
            gone = p.gone,
            calls_left = left,
            eta_seconds = left.div_ceil(run.rate as usize),
            "activity fill in progress"
        );
    }

    /// Records what is left of the run, holds the keys answered 404 against
    /// the newest listing, sets the run's health, and publishes.
    async fn finish_activity(&self, mut run: ActivityRun) -> Result<usize, UpstreamError> {
        let margin = self.config().refresh_interval;
        let _serial = self.shared.refresh_lock.lock().await;
        let progress = self.apply_activity(&mut run).unwrap_or_default();
        {
            let mut guard = lock(&self.shared.state);
            let state = &mut *guard;
            if let (Some(listing), Some(at)) = (state.listing.clone(), state.taken_at) {
                if let Some(cache) = state.activity_cache() {
                    cache.prune(listing.keys.iter().map(|k| k.hash.as_ref()));
                    run.relisted += cache.fail_relisted(at, margin);
                }
            }
        }
        let ok = run.ok();
        if !run.disabled {
            lock(&self.shared.state).finish_activity_run(ok);
            if !ok {
                self.shared
                    .telemetry
                    .count_refresh_failure(FailureReason::Activity);
            }
        }
        if let Some(batch) = run.ledger.take() {
            let snapshot = lock(&self.shared.state).snapshot.clone();
            batch.finish(snapshot).await;
        }
        if let Some(ledger) = self.ledger() {
            self.update_ledger_status(&ledger, run.now).await;
        }
        self.rebuild_snapshot().await;
        self.publish().await;
        run.outcome(progress)
    }

    /// Records the run's finished calls in the cache, and returns the
    /// progress of the latest listing for the run's day. Caller holds
    /// `refresh_lock`. `None` (the batch dropped) once a reload has disabled
    /// activity. A run that has failed so far turns `openrouter_activity_up` 0.
    fn apply_activity(&self, run: &mut ActivityRun) -> Option<Progress> {
        let mut state = lock(&self.shared.state);
        let Some(cache) = state.activity_cache() else {
            run.batch.clear();
            run.disabled = true;
            return None;
        };
        for result in &run.batch {
            if let ActivityResult::Read { history, .. } = result {
                cache.note_rollover(history);
            }
        }
        let applied = &mut run.applied;
        for result in run.batch.drain(..) {
            match result {
                ActivityResult::Read {
                    hash,
                    history,
                    read_at,
                    max_spend,
                    rows,
                } => {
                    let taken = cache.take(&hash, history, read_at, max_spend);
                    match taken {
                        // Only what the cache took is recorded: not an answer
                        // from a window not rolled over, nor one over the lifetime.
                        Taken::Complete => {
                            if let (Some(batch), Some(rows)) = (run.ledger.as_mut(), rows) {
                                batch.push(PendingRead {
                                    hash,
                                    read_at,
                                    rows,
                                });
                            }
                        }
                        Taken::Behind => applied.behind += 1,
                        Taken::OverLifetime { spend, max } => {
                            applied.over_lifetime += 1;
                            warn!(key_hash = %hash, spend = %spend, most = %max, "activity: the key's 30 completed days cost more than its lifetime usage allows (is api_key_hash ignored?); its figures stay unknown");
                        }
                    }
                }
                ActivityResult::Unreadable(hash, rows) => {
                    warn!(key_hash = %hash, rows, "activity rows without a readable date or usage; the key's figures stay unknown");
                    cache.mark_failed(&hash);
                    applied.unreadable += 1;
                }
                ActivityResult::Gone(hash, at) => cache.mark_gone(&hash, at),
                ActivityResult::Failed(hash) => cache.mark_failed(&hash),
            }
        }
        if run.failing() {
            state.activity_failing();
        }
        state.activity_progress(run.today)
    }

    /// Runs activity collection every `activity.refresh_interval` and shortly
    /// after each UTC midnight (when a day completes), sooner while upstream
    /// has not rolled over, until `shutdown`. A long first fill runs in the
    /// background of the refresh loop; shutdown stops it at once, keeping
    /// what has arrived.
    pub async fn run_activity(&self, mut shutdown: watch::Receiver<bool>) {
        let mut config_changed = self.watch_config();
        loop {
            let config = self.config();
            let listed = lock(&self.shared.state).listing.is_some();
            let wait = if config.activity.enabled && !listed {
                // Activity is per listed key: wait for the first listing.
                Duration::from_millis(250)
            } else if config.activity.enabled {
                let mut behind = false;
                tokio::select! {
                    (_, b) = self.activity_run(Utc::now()) => behind = b,
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
                let interval = config.activity.refresh_interval;
                let interval = if behind {
                    interval.min(BEHIND_RETRY)
                } else {
                    interval
                };
                interval.min(until_after_midnight(Utc::now()))
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = config_changed.changed() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// How long until [`FIRST_READ_MINUTES`] past the next UTC midnight (or past
/// the last one, if that is still ahead): when a completed day is first read.
fn until_after_midnight(now: DateTime<Utc>) -> Duration {
    let after = |day: NaiveDate| {
        day.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc() + chrono::Duration::minutes(FIRST_READ_MINUTES) - now)
            .and_then(|d| d.to_std().ok())
            .filter(|d| !d.is_zero())
    };
    let today = now.date_naive();
    after(today)
        .or_else(|| today.succ_opt().and_then(after))
        .unwrap_or(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_new_day_is_read_thirty_minutes_after_midnight() {
        let minutes = |s: &str| until_after_midnight(at(s)).as_secs() / 60;
        assert_eq!(minutes("2026-11-30T23:00:00Z"), 90);
        // A run that ended just after midnight: the new day at 00:30, not an hour later.
        assert_eq!(minutes("2026-12-01T00:00:05Z"), 29);
        assert_eq!(minutes("2026-12-01T00:10:00Z"), 20);
        assert_eq!(minutes("2026-12-01T00:30:00Z"), 24 * 60);
    }
}
