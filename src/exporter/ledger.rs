//! The exporter's side of the statements ledger (issue #23): attaching it,
//! giving activity collection back what it holds after a restart (the
//! account's days included), recording activity reads in batches and the
//! listing hourly, pruning once a day, and publishing its health and the
//! previous month's final figures. The account's own spend is read and
//! recorded in `account.rs`.
//!
//! Every ledger call blocks on SQLite, so each runs in `spawn_blocking`. A
//! ledger that cannot be opened or written never stops `/metrics`: the
//! exporter runs on without it and says so (`openrouter_ledger_up 0`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Exporter;
use crate::activity::{ActivityCache, ActivityRow};
use crate::ledger::{
    KeyRead, Ledger, LedgerError, LedgerHealth, ListedKey, Markup, Month, PeriodStatus,
    RestoreSummary,
};
use crate::money::Usd;
use crate::snapshot::{Snapshot, DAILY};
use crate::status::{LedgerFigures, LedgerStatus};
use crate::sync::lock;

/// Activity reads recorded per ledger transaction.
const READS_PER_WRITE: usize = 1_000;
/// A slow run still writes what it has read at least this often.
const WRITE_AT_LEAST_EVERY: Duration = Duration::from_secs(60);
/// A listing is recorded at most this often (departures and today's listing
/// figures need no more).
const LISTING_EVERY: chrono::Duration = chrono::Duration::hours(1);
/// How often [`Exporter::run_ledger`] looks for chores.
const CHORES_EVERY: Duration = Duration::from_secs(5 * 60);

/// One answered activity read waiting for the ledger.
pub(super) struct PendingRead {
    pub hash: String,
    pub read_at: DateTime<Utc>,
    pub rows: Vec<ActivityRow>,
}

/// What the batches of one run recorded.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    recorded: usize,
    days_written: usize,
    restated: usize,
    /// Reads whose key the current snapshot does not attribute (not written).
    unattributed: usize,
    /// Reads lost with a failed transaction (written again with the keys' next read).
    failed: usize,
}

/// An activity run's reads on their way to the ledger: gathered, then
/// written [`READS_PER_WRITE`] a transaction, one transaction at a time, in
/// the background of the run.
pub(super) struct LedgerBatch {
    ledger: Arc<Ledger>,
    today: NaiveDate,
    pending: Vec<PendingRead>,
    writing: Option<tokio::task::JoinHandle<()>>,
    last_write: Instant,
    tally: Arc<Mutex<Tally>>,
}

impl LedgerBatch {
    pub(super) fn new(ledger: Arc<Ledger>, today: NaiveDate) -> LedgerBatch {
        LedgerBatch {
            ledger,
            today,
            pending: Vec::new(),
            writing: None,
            last_write: Instant::now(),
            tally: Arc::default(),
        }
    }

    pub(super) fn push(&mut self, read: PendingRead) {
        self.pending.push(read);
    }

    /// Starts writing what is pending once a batch is full (or has waited a
    /// minute) and the previous write is done; the run goes on meanwhile.
    pub(super) fn write_if_due(&mut self, snapshot: Option<Arc<Snapshot>>) {
        let due = self.pending.len() >= READS_PER_WRITE
            || (!self.pending.is_empty() && self.last_write.elapsed() >= WRITE_AT_LEAST_EVERY);
        if due && !self.writing.as_ref().is_some_and(|w| !w.is_finished()) {
            self.start_write(snapshot);
        }
    }

    /// Waits for the write in flight, then writes the rest; logs the run's tally.
    pub(super) async fn finish(mut self, snapshot: Option<Arc<Snapshot>>) {
        if let Some(writing) = self.writing.take() {
            let _ = writing.await;
        }
        if !self.pending.is_empty() {
            self.start_write(snapshot);
            if let Some(writing) = self.writing.take() {
                let _ = writing.await;
            }
        }
        let t = *lock(&self.tally);
        if t.recorded + t.failed + t.unattributed > 0 {
            info!(
                recorded = t.recorded,
                days_written = t.days_written,
                restated_days = t.restated,
                unattributed = t.unattributed,
                lost = t.failed,
                "ledger: activity reads recorded"
            );
        }
    }

    /// Writes everything pending in the background (the caller made sure no write is in flight).
    fn start_write(&mut self, snapshot: Option<Arc<Snapshot>>) {
        let reads = std::mem::take(&mut self.pending);
        let (ledger, today) = (Arc::clone(&self.ledger), self.today);
        let tally = Arc::clone(&self.tally);
        self.last_write = Instant::now();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write_reads(&ledger, today, &reads, snapshot.as_deref(), &tally);
        }));
    }
}

/// Records `reads` in one transaction, each with its key's company in
/// `snapshot` (the current attribution). A key the snapshot does not list
/// is left for its next read rather than filed under a guessed company:
/// days keep the company they were first recorded with.
fn write_reads(
    ledger: &Ledger,
    today: NaiveDate,
    reads: &[PendingRead],
    snapshot: Option<&Snapshot>,
    tally: &Mutex<Tally>,
) {
    let wanted: HashSet<&str> = reads.iter().map(|r| r.hash.as_str()).collect();
    let mut company: HashMap<&str, &str> = HashMap::with_capacity(reads.len());
    if let Some(snap) = snapshot {
        for (i, key) in snap.keys().iter().enumerate() {
            if let Some(hash) = wanted.get(&*key.hash) {
                company.insert(hash, snap.company_of(i));
            }
        }
    }
    let key_reads: Vec<KeyRead<'_>> = reads
        .iter()
        .filter_map(|r| {
            Some(KeyRead {
                hash: &r.hash,
                company: company.get(r.hash.as_str())?,
                today,
                read_at: r.read_at,
                rows: &r.rows,
            })
        })
        .collect();
    let unattributed = reads.len() - key_reads.len();
    let result = ledger.record_reads(&key_reads);
    let mut t = lock(tally);
    t.unattributed += unattributed;
    match result {
        Ok(summary) => {
            t.recorded += summary.keys;
            t.days_written += summary.days_written;
            t.restated += summary.restated_days;
        }
        Err(e) => {
            t.failed += key_reads.len();
            warn!(error = %e, reads = key_reads.len(), "ledger: activity reads could not be recorded; each key's next read records its days again");
        }
    }
}

impl Exporter {
    /// Attaches the statements ledger opened at start (`Ledger::open`), or
    /// why it could not be opened: the exporter then runs without one,
    /// `openrouter_ledger_up` is 0 and [`Exporter::ledger_error`] says why.
    /// Reads the ledger's health once (blocking briefly).
    pub fn with_ledger(self, opened: Result<Arc<Ledger>, LedgerError>) -> Exporter {
        let today = self.now().date_naive();
        let (opened, status) = match opened {
            Ok(ledger) => {
                let status = ledger_status(ledger.health(today));
                (Ok(ledger), status)
            }
            Err(e) => (Err(e.to_string()), LedgerStatus::default()),
        };
        let status = {
            let mut state = lock(&self.shared.state);
            state.attach_ledger(opened, status);
            state.status_at(self.now())
        };
        // Shown from the first scrape on, like the other status families.
        match self.render_body(self.published().snapshot.clone(), status) {
            Ok(published) => self.shared.published.store(Arc::new(published)),
            Err(e) => self.render_failed(e),
        }
        self
    }

    /// The open statements ledger; `None` without one or when it could not be opened.
    pub fn ledger(&self) -> Option<Arc<Ledger>> {
        lock(&self.shared.state).ledger()
    }

    /// Why the statements ledger could not be opened (for the statement
    /// pages' 503); `None` when it is open or the exporter runs without one.
    pub fn ledger_error(&self) -> Option<String> {
        lock(&self.shared.state).ledger_error()
    }

    /// `company`'s markup for its statements (`billing.markup_percent`), if any.
    pub fn markup(&self, company: &str) -> Option<Markup> {
        self.config()
            .markup_percent(company)
            .and_then(Markup::from_percent)
    }

    /// The ledger's chores, every few minutes until `shutdown`: prune once a
    /// day (at start too), record the listing hourly, publish its health.
    pub async fn run_ledger(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.refresh_ledger_at(self.now()).await;
            tokio::select! {
                _ = tokio::time::sleep(CHORES_EVERY) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// The ledger's chores as if it were `now`: prunes days past retention
    /// (once a UTC day), records the last listing if the last one recorded
    /// is an hour older, then publishes the ledger's health and the
    /// previous month's final figures. Nothing without a ledger.
    pub async fn refresh_ledger_at(&self, now: DateTime<Utc>) {
        let Some(ledger) = self.ledger() else {
            return;
        };
        let today = now.date_naive();
        let (recorded, pruned_on) = lock(&self.shared.state).ledger_chores();
        if pruned_on != Some(today) {
            let l = Arc::clone(&ledger);
            match tokio::task::spawn_blocking(move || l.prune(today)).await {
                Ok(Ok(p)) => {
                    lock(&self.shared.state).ledger_pruned(today);
                    if p.spend_rows + p.account_days + p.keys > 0 {
                        info!(
                            spend_rows = p.spend_rows,
                            account_days = p.account_days,
                            keys = p.keys,
                            "ledger: days past --storage.retention removed"
                        );
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "ledger: pruning failed; tried again with the next chores")
                }
                Err(e) => warn!(error = %e, "ledger: pruning stopped"),
            }
        }
        self.record_listing(&ledger, recorded).await;
        self.publish_ledger_status(&ledger, now).await;
    }

    /// Reads the ledger's health and the previous month's figures, and
    /// publishes them if they changed.
    pub(super) async fn publish_ledger_status(&self, ledger: &Arc<Ledger>, now: DateTime<Utc>) {
        let _serial = self.shared.refresh_lock.lock().await;
        let (health_changed, figures_changed) = self.update_ledger_status(ledger, now).await;
        if figures_changed {
            self.rebuild_snapshot().await;
        }
        // A render at 100k keys costs about a second: only when something shows.
        if health_changed || figures_changed {
            self.publish().await;
        }
    }

    /// Records the published snapshot's listing when the last one recorded
    /// is [`LISTING_EVERY`] older. Only a complete listing is passed (keys it
    /// misses are marked departed): never in direct-key mode, whose listing is empty.
    async fn record_listing(&self, ledger: &Arc<Ledger>, recorded: Option<DateTime<Utc>>) {
        if self.config().openrouter.management_key.is_none() {
            return;
        }
        let Some(snapshot) = lock(&self.shared.state).snapshot.clone() else {
            return;
        };
        let taken_at = snapshot.taken_at;
        if recorded.is_some_and(|r| taken_at < r + LISTING_EVERY) {
            return;
        }
        let l = Arc::clone(ledger);
        let job = move || l.record_listing(taken_at, &listed_keys(&snapshot));
        match tokio::task::spawn_blocking(job).await {
            Ok(Ok(s)) => {
                lock(&self.shared.state).listing_recorded(taken_at);
                debug!(
                    new_keys = s.new_keys,
                    updated_keys = s.updated_keys,
                    departed_keys = s.departed_keys,
                    "ledger: listing recorded"
                );
            }
            Ok(Err(e)) => {
                warn!(error = %e, "ledger: the listing could not be recorded; tried again with the next chores")
            }
            Err(e) => warn!(error = %e, "ledger: recording the listing stopped"),
        }
    }

    /// Reads the ledger's health and, unless known final, the previous
    /// month's figures into the state; whether the health and whether those
    /// figures changed (the snapshot is then rebuilt). Caller holds
    /// `refresh_lock` and publishes.
    pub(super) async fn update_ledger_status(
        &self,
        ledger: &Arc<Ledger>,
        now: DateTime<Utc>,
    ) -> (bool, bool) {
        let today = now.date_naive();
        let month = Month::of(today).previous();
        let known_final = lock(&self.shared.state).previous_month_final();
        let l = Arc::clone(ledger);
        let job = move || {
            let health = l.health(today);
            let restated = health.as_ref().map_or(0, |h| h.restated_days_total);
            let figures = if known_final == Some((month, restated)) {
                None
            } else {
                Some(
                    previous_month(&l, month, today)
                        .map(|(f, done)| (f, done.then_some((month, restated)))),
                )
            };
            (health, figures)
        };
        let Ok((health, figures)) = tokio::task::spawn_blocking(job).await else {
            return (false, false);
        };
        let mut state = lock(&self.shared.state);
        let health_changed = state.set_ledger_status(ledger_status(health));
        let figures_changed = match figures {
            Some(Ok((figures, final_for))) => state.set_previous_month(figures, final_for),
            Some(Err(e)) => {
                warn!(error = %e, "ledger: the previous month's statement could not be read");
                false
            }
            None => false,
        };
        (health_changed, figures_changed)
    }

    /// Before the first activity plan: takes back every key whose 30 days
    /// the ledger holds, so that only the keys it lacks are read. Once.
    pub(super) async fn restore_activity(&self, now: DateTime<Utc>) {
        let ledger = {
            let state = lock(&self.shared.state);
            if !state.activity_restore_due() {
                return;
            }
            state.ledger()
        };
        let Some(ledger) = ledger else {
            return;
        };
        let today = now.date_naive();
        let started = Instant::now();
        let job = move || {
            let mut cache = ActivityCache::default();
            let summary = ledger.restore(today, |k| {
                // The ledger's rows are whole days it wrote itself: always readable.
                let _ = cache.apply_at(&k.hash, &k.rows, today, k.read_at);
            });
            // The account's days too: read at once only if the ledger lacks one.
            let account = ledger.restore_account(today).unwrap_or_else(|e| {
                warn!(error = %e, "ledger: the account's days could not be restored; the account is read");
                None
            });
            (summary.map(|s| (cache, s)), account)
        };
        let restored = tokio::task::spawn_blocking(job).await;
        let (cache, summary, account) = match restored {
            Ok((Ok((cache, summary)), account)) => (Some(cache), summary, account),
            Ok((Err(e), account)) => {
                warn!(error = %e, "ledger: activity could not be restored; every key is read");
                (None, RestoreSummary::default(), account)
            }
            Err(e) => {
                warn!(error = %e, "ledger: restoring activity stopped; every key is read");
                (None, RestoreSummary::default(), None)
            }
        };
        let installed = {
            let mut state = lock(&self.shared.state);
            state.restore_account_read(account);
            state.install_restored_activity(cache)
        };
        if installed && summary.restored + summary.lacking > 0 {
            info!(
                restored = summary.restored,
                lacking = summary.lacking,
                seconds = started.elapsed().as_secs_f64(),
                "ledger: activity restored; only the keys it lacks are read"
            );
        }
    }
}

/// The listing as the ledger takes it: each key with its company, workspace
/// (slug when known), creator (email when known) and today's figures.
fn listed_keys(snap: &Snapshot) -> Vec<ListedKey<'_>> {
    let org = &snap.organization;
    let today = |usage: &[Option<f64>; 4]| usage[DAILY].and_then(Usd::from_f64);
    snap.keys()
        .iter()
        .enumerate()
        .map(|(i, key)| ListedKey {
            hash: &key.hash,
            name: &key.name,
            label: &key.label,
            workspace: org.workspace_slug(key.workspace_id.as_deref()),
            creator: org
                .creator_email(key.creator_user_id.as_deref())
                .or(key.creator_user_id.as_deref()),
            company: snap.company_of(i),
            expires_at: key.expires_at,
            usage_today: today(&key.usage),
            byok_today: today(&key.byok_usage),
        })
        .collect()
}

/// Each company's spend in `month` whose every day is settled, and whether
/// the whole month is final (then it need not be read again).
fn previous_month(
    ledger: &Ledger,
    month: Month,
    today: NaiveDate,
) -> Result<(Vec<(String, Usd)>, bool), LedgerError> {
    let statement = ledger.statement(month.days(), today)?;
    let all_final = statement.status == PeriodStatus::Final;
    let mut figures: Vec<(String, Usd)> = statement
        .companies
        .into_iter()
        .filter(|c| c.status == PeriodStatus::Final)
        .map(|c| (c.company, c.spend.usage))
        .collect();
    figures.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((figures, all_final))
}

/// The ledger's health as published; a health that cannot be read is down.
fn ledger_status(health: Result<LedgerHealth, LedgerError>) -> LedgerStatus {
    match health {
        Ok(h) => LedgerStatus {
            up: h.up,
            last_write: h.last_write,
            figures: Some(LedgerFigures {
                days_settled: h.days_settled,
                days_provisional: h.days_provisional,
                size_bytes: h.size_bytes,
                restated_days_total: h.restated_days_total,
            }),
        },
        Err(e) => {
            warn!(error = %e, "ledger: its health cannot be read");
            LedgerStatus::default()
        }
    }
}
