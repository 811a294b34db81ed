//! The exporter's activity collection: incremental runs of `GET /activity`
//! per listed key (see `crate::activity`), recorded as results arrive and
//! published with the rest, and the loop that runs them.

use super::*;

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

impl Exporter {
    /// One activity run: reads the history of each listed key not read for
    /// today or due for its re-read, at most `activity.calls_per_second`, keeping each key's
    /// result as it arrives. Returns the calls planned; `Err` (the first
    /// failure) when any key's call failed: the other keys' results are kept,
    /// and `openrouter_activity_up` is 0 until a run succeeds for every key.
    pub async fn refresh_activity(&self) -> Result<usize, UpstreamError> {
        self.refresh_activity_at(Utc::now()).await
    }

    /// [`Exporter::refresh_activity`] as if the current UTC date were `today`
    /// (at the current time of day).
    pub async fn refresh_activity_on(&self, today: NaiveDate) -> Result<usize, UpstreamError> {
        let at = today.and_time(Utc::now().time()).and_utc();
        self.refresh_activity_at(at).await
    }

    /// [`Exporter::refresh_activity`] as if it were `now`: the run's days are
    /// those completed before `now`'s UTC date, even if it crosses midnight.
    pub async fn refresh_activity_at(&self, now: DateTime<Utc>) -> Result<usize, UpstreamError> {
        let config = self.config();
        if !config.activity.enabled || config.openrouter.management_key.is_none() {
            return Ok(0);
        }
        let today = now.date_naive();
        let started = Instant::now();
        // Prune and plan against the latest listing; under the lock no
        // snapshot build holds the cache, so it is updated in place, never copied.
        // The run keeps no listing of its own: a refresh during a long fill
        // replaces it, and two listings alive would double its memory.
        let (client, plan) = {
            let _serial = self.shared.refresh_lock.lock().await;
            let mut guard = lock(&self.shared.state);
            let state = &mut *guard;
            // Nothing is listed before the first refresh.
            let Some(listing) = state.listing.as_deref() else {
                return Ok(0);
            };
            // Company by company (as last attributed), so that each company's
            // totals, which wait for all its keys, appear as soon as they can
            // rather than all at the end of a long fill or a new day's pass.
            let mut order: Vec<(usize, &str)> = match &state.snapshot {
                Some(snap) if std::ptr::eq(&*snap.data, listing) => snap
                    .company_of_key
                    .iter()
                    .zip(&listing.keys)
                    .map(|(company, key)| (*company, key.hash.as_ref()))
                    .collect(),
                _ => listing.keys.iter().map(|k| (0, k.hash.as_ref())).collect(),
            };
            order.sort_by_key(|(company, _)| *company);
            let cache = Arc::make_mut(state.activity.get_or_insert_with(Default::default));
            cache.prune(listing.keys.iter().map(|k| k.hash.as_ref()));
            cache.reserve(listing.keys.len());
            let plan = cache.plan(order.into_iter().map(|(_, hash)| hash), now);
            (state.client.clone(), plan)
        };
        let calls = plan.len();
        let rate = config.activity.calls_per_second.max(1);
        if calls > 0 {
            info!(
                calls,
                calls_per_second = rate,
                eta_seconds = calls.div_ceil(rate as usize),
                "activity run started"
            );
        }
        let mut fetcher = activity::Fetcher::new(client, plan, config.activity.concurrency, rate);
        let mut batch: Vec<ActivityResult> = Vec::new();
        let mut first_error: Option<UpstreamError> = None;
        let (mut failed, mut gone, mut unreadable) = (0usize, 0usize, 0usize);
        let mut last_flush = Instant::now();
        let mut last_publish = Instant::now();
        let mut past_midnight = false;
        while let Some((hash, result)) = fetcher.next().await {
            let read_at = now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
            if read_at.date_naive() != today {
                // Answered after UTC midnight: upstream's 30 days have moved on
                // (the oldest planned day may be missing), so this is no answer
                // for `today`. The next run reads the new day.
                if !past_midnight {
                    past_midnight = true;
                    fetcher.stop();
                    info!("UTC midnight passed during the activity run; the keys left are read for the new day by the next run");
                }
                continue;
            }
            match result {
                // Summarized at once: a batch waiting for the lock holds
                // ~100 bytes a key, not the rows (~250 bytes each).
                Ok(rows) => batch.push(match activity::summarize(&rows, today) {
                    Ok(history) => ActivityResult::Read(hash, history, read_at),
                    Err(e) => ActivityResult::Unreadable(hash, e.rows),
                }),
                Err(e) if e.status() == Some(404) => {
                    gone += 1;
                    debug!(key_hash = %hash, "activity: 404, the key is gone since the listing; skipped");
                    batch.push(ActivityResult::Gone(hash, read_at));
                }
                Err(e) => {
                    failed += 1;
                    if failed <= 3 {
                        warn!(key_hash = %hash, error = %e, "activity call failed; the key's figures stay unknown until the next run");
                    }
                    if matches!(e, UpstreamError::Unauthorized { .. }) {
                        // Every other call would be refused too.
                        fetcher.stop();
                    }
                    first_error.get_or_insert(e);
                    batch.push(ActivityResult::Failed(hash));
                }
            }
            let finished = fetcher.remaining() == 0;
            if last_flush.elapsed() >= ACTIVITY_FLUSH_EVERY || finished {
                // Never waits for a refresh in progress: the batch just grows.
                if let Ok(_serial) = self.shared.refresh_lock.try_lock() {
                    unreadable += self.apply_activity(&mut batch, today, None);
                    last_flush = Instant::now();
                    if last_publish.elapsed() >= ACTIVITY_PUBLISH_EVERY && !finished {
                        self.rebuild_snapshot().await;
                        self.publish().await;
                        last_publish = Instant::now();
                        let p = lock(&self.shared.state)
                            .status
                            .activity
                            .and_then(|a| a.keys)
                            .unwrap_or_default();
                        info!(
                            complete = p.complete,
                            pending = p.pending,
                            failed = p.failed,
                            gone = p.gone,
                            calls_left = fetcher.remaining(),
                            eta_seconds = fetcher.remaining().div_ceil(rate as usize),
                            "activity fill in progress"
                        );
                    }
                }
            }
        }
        let _serial = self.shared.refresh_lock.lock().await;
        let ok = failed == 0;
        let mut last = None;
        unreadable += self.apply_activity(&mut batch, today, Some(&mut last));
        let ok = ok && unreadable == 0;
        if let Some(status) = lock(&self.shared.state).status.activity.as_mut() {
            status.up = ok;
            if ok {
                status.last_success = Some(Utc::now());
            }
        }
        if !ok {
            self.shared
                .telemetry
                .count_refresh_failure(FailureReason::Activity);
        }
        self.rebuild_snapshot().await;
        self.publish().await;
        let p = last.unwrap_or_default();
        let seconds = started.elapsed().as_secs();
        if ok {
            info!(
                calls,
                gone,
                complete = p.complete,
                seconds,
                "activity run succeeded"
            );
            Ok(calls)
        } else {
            warn!(
                calls,
                failed,
                unreadable,
                gone,
                complete = p.complete,
                seconds,
                "activity run incomplete; the other keys' results are kept, the failed keys are retried next run"
            );
            Err(first_error.unwrap_or_else(|| UpstreamError::Decode {
                endpoint: crate::upstream::Endpoint::Activity,
                message: format!(
                    "{unreadable} key(s) answered rows without a readable date or usage; their figures stay unknown"
                ),
            }))
        }
    }

    /// Records finished activity calls in the cache and the progress in the
    /// status. Caller holds `refresh_lock`. Returns the keys whose rows could not be read.
    fn apply_activity(
        &self,
        batch: &mut Vec<ActivityResult>,
        today: NaiveDate,
        progress: Option<&mut Option<activity::Progress>>,
    ) -> usize {
        let mut guard = lock(&self.shared.state);
        let state = &mut *guard;
        let cache = Arc::make_mut(state.activity.get_or_insert_with(Default::default));
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
        // Progress of the latest listing (a refresh may have replaced the run's).
        let listed = state.listing.iter().flat_map(|l| l.keys.iter());
        let keys = cache.progress(listed.map(|k| k.hash.as_ref()), today);
        let cached_keys = cache.keys();
        if let Some(out) = progress {
            *out = Some(keys);
        }
        if let Some(status) = state.status.activity.as_mut() {
            status.cached_keys = cached_keys;
            status.keys = Some(keys);
        }
        unreadable
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
