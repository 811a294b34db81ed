//! The exporter's activity collection: incremental runs of `GET /activity`
//! per listed key (see `crate::activity`), recorded as results arrive and
//! published with the rest, and the loop that runs them.
//!
//! A run is three phases: [`Exporter::plan_activity`] picks the keys due,
//! an [`ActivityRun`] takes each answer as it comes and records batches
//! without waiting for a refresh, and [`Exporter::finish_activity`] records
//! the rest and says whether every key was read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::activity_fetch::Fetcher;
use super::Exporter;
use crate::activity::{self, ActivityRow, Plan, Progress};
use crate::sync::lock;
use crate::telemetry::FailureReason;
use crate::upstream::{Client, Endpoint, UpstreamError};

/// How often a long activity run records what has arrived, and publishes it.
const ACTIVITY_FLUSH_EVERY: Duration = Duration::from_secs(1);
const ACTIVITY_PUBLISH_EVERY: Duration = Duration::from_secs(30);

/// One finished activity call, waiting to be recorded.
enum ActivityResult {
    Read(String, activity::History, DateTime<Utc>),
    /// Answered with rows that could not be read (how many).
    Unreadable(String, usize),
    Gone(String, DateTime<Utc>),
    Failed(String),
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
    failed: usize,
    gone: usize,
    unreadable: usize,
    past_midnight: bool,
    last_flush: Instant,
    last_publish: Instant,
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
            failed: 0,
            gone: 0,
            unreadable: 0,
            past_midnight: false,
            last_flush: Instant::now(),
            last_publish: Instant::now(),
        }
    }

    /// Takes one answer into the batch. An answer after UTC midnight is
    /// dropped and stops the run: upstream's 30 days have moved on (the
    /// oldest planned day may be missing), so it is no answer for `today`.
    fn on_result(
        &mut self,
        fetcher: &mut Fetcher,
        hash: String,
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
        let recorded = match result {
            // Summarized at once: a batch waiting for the lock holds
            // ~100 bytes a key, not the rows (~250 bytes each).
            Ok(rows) => match activity::summarize(&rows, self.today) {
                Ok(history) => ActivityResult::Read(hash, history, read_at),
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

    fn ok(&self) -> bool {
        self.failed == 0 && self.unreadable == 0
    }

    /// The run's result: the calls planned, or the first failure.
    fn outcome(self, progress: Progress) -> Result<usize, UpstreamError> {
        let seconds = self.started.elapsed().as_secs();
        let (calls, gone, complete) = (self.calls, self.gone, progress.complete);
        if self.ok() {
            info!(calls, gone, complete, seconds, "activity run succeeded");
            return Ok(calls);
        }
        let (failed, unreadable) = (self.failed, self.unreadable);
        warn!(
            calls, failed, unreadable, gone, complete, seconds,
            "activity run incomplete; the other keys' results are kept, the failed keys are retried next run"
        );
        Err(self.first_error.unwrap_or_else(|| UpstreamError::Decode {
            endpoint: Endpoint::Activity,
            message: format!(
                "{unreadable} key(s) answered rows without a readable date or usage; their figures stay unknown"
            ),
        }))
    }
}

impl Exporter {
    /// One activity run: reads the history of each listed key not read for
    /// today or due for its re-read, at most `activity.calls_per_second`, keeping each key's
    /// result as it arrives. Returns the calls planned; `Err` (the first
    /// failure) when any key's call failed: the other keys' results are kept,
    /// and `openrouter_activity_up` is 0 until a run succeeds for every key.
    pub async fn refresh_activity(&self) -> Result<usize, UpstreamError> {
        self.refresh_activity_at(Utc::now()).await
    }

    /// [`Exporter::refresh_activity`] as if it were `now`: the run's days are
    /// those completed before `now`'s UTC date, even if it crosses midnight.
    pub async fn refresh_activity_at(&self, now: DateTime<Utc>) -> Result<usize, UpstreamError> {
        let config = self.config();
        if !config.activity.enabled || config.openrouter.management_key.is_none() {
            return Ok(0);
        }
        let Some((client, plan)) = self.plan_activity(now).await else {
            return Ok(0);
        };
        let rate = config.activity.calls_per_second.max(1);
        let mut run = ActivityRun::new(now, plan.len(), rate);
        if run.calls > 0 {
            info!(
                calls = run.calls,
                calls_per_second = rate,
                eta_seconds = run.calls.div_ceil(rate as usize),
                "activity run started"
            );
        }
        let mut fetcher = Fetcher::new(client, plan, config.activity.concurrency, rate);
        while let Some((hash, result)) = fetcher.next().await {
            run.on_result(&mut fetcher, hash, result);
            self.maybe_flush(&mut run, &fetcher).await;
        }
        self.finish_activity(run).await
    }

    /// Prunes the cache and plans against the latest listing. Under the lock
    /// no snapshot build holds the cache, so it is updated in place, never
    /// copied. The run keeps no listing of its own: a refresh during a long
    /// fill replaces it, and two listings alive would double its memory.
    /// `None` before the first listing.
    async fn plan_activity(&self, now: DateTime<Utc>) -> Option<(Client, Plan)> {
        let _serial = self.shared.refresh_lock.lock().await;
        let mut guard = lock(&self.shared.state);
        let state = &mut *guard;
        let listing = Arc::clone(state.listing.as_ref()?);
        // Company by company (as last attributed), so that each company's
        // totals, which wait for all its keys, appear as soon as they can
        // rather than all at the end of a long fill or a new day's pass.
        let mut order: Vec<(usize, &str)> = match &state.snapshot {
            Some(snap) if Arc::ptr_eq(&snap.data, &listing) => snap
                .company_of_key
                .iter()
                .zip(&listing.keys)
                .map(|(company, key)| (*company, key.hash.as_ref()))
                .collect(),
            _ => listing.keys.iter().map(|k| (0, k.hash.as_ref())).collect(),
        };
        order.sort_by_key(|(company, _)| *company);
        let cache = state.activity_cache();
        cache.prune(listing.keys.iter().map(|k| k.hash.as_ref()));
        cache.reserve(listing.keys.len());
        let plan = cache.plan(order.into_iter().map(|(_, hash)| hash), now);
        Some((state.client.clone(), plan))
    }

    /// Every second, records the batch if no refresh holds the lock (the
    /// batch just grows meanwhile); every 30 s, publishes too.
    async fn maybe_flush(&self, run: &mut ActivityRun, fetcher: &Fetcher) {
        let finished = fetcher.remaining() == 0;
        if run.last_flush.elapsed() < ACTIVITY_FLUSH_EVERY && !finished {
            return;
        }
        let Ok(_serial) = self.shared.refresh_lock.try_lock() else {
            return;
        };
        let (unreadable, p) = self.apply_activity(&mut run.batch, run.today);
        run.unreadable += unreadable;
        run.last_flush = Instant::now();
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

    /// Records what is left of the run, its health, and publishes.
    async fn finish_activity(&self, mut run: ActivityRun) -> Result<usize, UpstreamError> {
        let _serial = self.shared.refresh_lock.lock().await;
        let (unreadable, progress) = self.apply_activity(&mut run.batch, run.today);
        run.unreadable += unreadable;
        let ok = run.ok();
        lock(&self.shared.state).finish_activity_run(ok);
        if !ok {
            self.shared
                .telemetry
                .count_refresh_failure(FailureReason::Activity);
        }
        self.rebuild_snapshot().await;
        self.publish().await;
        run.outcome(progress)
    }

    /// Records finished activity calls in the cache and the progress in the
    /// status. Caller holds `refresh_lock`. Returns the keys whose rows could
    /// not be read, and the progress.
    fn apply_activity(
        &self,
        batch: &mut Vec<ActivityResult>,
        today: NaiveDate,
    ) -> (usize, Progress) {
        let mut state = lock(&self.shared.state);
        let cache = state.activity_cache();
        let mut unreadable = 0;
        for result in batch.drain(..) {
            match result {
                ActivityResult::Read(hash, history, read_at) => {
                    cache.record(&hash, history, read_at)
                }
                ActivityResult::Unreadable(hash, rows) => {
                    warn!(key_hash = %hash, rows, "activity rows without a readable date or usage; the key's figures stay unknown");
                    cache.mark_failed(&hash);
                    unreadable += 1;
                }
                ActivityResult::Gone(hash, at) => cache.mark_gone(&hash, at),
                ActivityResult::Failed(hash) => cache.mark_failed(&hash),
            }
        }
        (unreadable, state.record_activity_progress(today))
    }

    /// Runs activity collection every `activity.refresh_interval` and shortly
    /// after each UTC midnight (when a day completes), until `shutdown`. A
    /// long first fill runs in the background of the refresh loop; shutdown
    /// stops it at once, keeping what has arrived.
    pub async fn run_activity(&self, mut shutdown: watch::Receiver<bool>) {
        let mut config_changed = self.watch_config();
        loop {
            let config = self.config();
            let listed = lock(&self.shared.state).listing.is_some();
            let wait = if config.activity.enabled && !listed {
                // Activity is per listed key: wait for the first listing.
                Duration::from_millis(250)
            } else if config.activity.enabled {
                tokio::select! {
                    _ = self.refresh_activity() => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
                config
                    .activity
                    .refresh_interval
                    .min(until_after_midnight(Utc::now()))
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

/// How long until 10 minutes past the next UTC midnight (or past the last
/// one, if that is still ahead): when a completed day is first read.
fn until_after_midnight(now: DateTime<Utc>) -> Duration {
    let after = |day: NaiveDate| {
        day.and_hms_opt(0, 10, 0)
            .map(|t| t.and_utc() - now)
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
    fn the_new_day_is_read_ten_minutes_after_midnight() {
        let minutes = |s: &str| until_after_midnight(at(s)).as_secs() / 60;
        assert_eq!(minutes("2026-11-30T23:00:00Z"), 70);
        // A run that ended just after midnight: the new day in 10 minutes, not an hour.
        assert_eq!(minutes("2026-12-01T00:00:05Z"), 9);
        assert_eq!(minutes("2026-12-01T00:10:00Z"), 24 * 60);
    }
}
