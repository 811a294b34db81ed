//! The exporter's shared state and every write to it. The other files of
//! `exporter/` read `State` under its lock and change it only through the
//! methods here, so its invariants live in one place:
//! - the old snapshot goes before a new listing's snapshot is built;
//! - direct keys keep their figures only while they stay in the config;
//! - activity figures exist only while activity is enabled;
//! - a key that leaves the listing is held as departed until its last
//!   calendar window ends, and is no longer departed once listed again.
//! - the statements ledger is attached once, and the activity cache is
//!   restored from it at most once, before anything else creates the cache.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::SecretString;
use tokio::sync::watch;

use crate::activity::{ActivityCache, Progress};
use crate::body::Published;
use crate::config::Config;
use crate::direct::DirectClient;
use crate::ledger::{Ledger, Month};
use crate::money::Usd;
use crate::snapshot::{
    departed_after, DepartedKey, DirectKey, Extras, Listing, Organization, Snapshot, Window,
};
use crate::status::{ActivityStatus, LedgerStatus, Status};
use crate::telemetry::Telemetry;
use crate::upstream::{Client, RetryPolicy};

/// Where the management key comes from: the config's source, or a fixed key (demo).
#[derive(Clone)]
pub(super) enum KeyProvider {
    FromConfig,
    Fixed(SecretString),
}

/// A source of the current UTC time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub(super) struct State {
    pub(super) client: Client,
    /// One client per direct key, authenticating with that key's own secret.
    pub(super) direct_clients: Arc<Vec<DirectClient>>,
    /// The last complete listing, converted from the wire.
    pub(super) listing: Option<Arc<Listing>>,
    /// When `listing` was fetched: the snapshot's clock for calendar windows.
    pub(super) taken_at: Option<DateTime<Utc>>,
    /// The moment the snapshot was last built as of: the windows that had
    /// ended by then are gone from `listing` and `direct`.
    pub(super) as_of: Option<DateTime<Utc>>,
    pub(super) direct: Arc<Vec<DirectKey>>,
    pub(super) activity: Option<Arc<ActivityCache>>,
    /// What the published body shows; re-rendered with every status change.
    pub(super) snapshot: Option<Arc<Snapshot>>,
    pub(super) status: Status,
    /// When a refresh last fully succeeded and its body was published (readiness).
    pub(super) last_success: Option<Instant>,
    /// Workspaces, members and caps as last read (`organization_refresh_intervals`).
    pub(super) organization: Arc<Organization>,
    /// Refreshes with a listing so far: the organization lists are read when
    /// this is a multiple of `organization_refresh_intervals`.
    pub(super) listings: u64,
    /// An activity run has ended since activity was enabled: until then a
    /// run in progress without failures reads as up.
    pub(super) activity_run_ended: bool,
    /// Keys that left the listing, with their last figures, until their
    /// last window ends (in memory only: a restart forgets them).
    pub(super) departed: Arc<Vec<DepartedKey>>,
    /// The statements ledger and what the exporter did with it.
    pub(super) ledger: LedgerState,
}

/// The statements ledger as the exporter holds it (issue #23).
#[derive(Default)]
pub(super) struct LedgerState {
    /// `None` without a ledger; `Err` with why it could not be opened.
    opened: Option<Result<Arc<Ledger>, String>>,
    /// Activity collection has taken back what the ledger holds.
    restored: bool,
    /// When the last listing recorded in the ledger was taken.
    listing_recorded: Option<DateTime<Utc>>,
    /// The UTC day the ledger was last pruned on.
    pruned_on: Option<NaiveDate>,
    /// When the account-wide `/activity` was last recorded (or the time the
    /// ledger's days stand for after a restart): when it is due again.
    account_read: Option<DateTime<Utc>>,
    /// The previous month's final figures per company, by name.
    previous_month: Arc<Vec<(String, Usd)>>,
    /// The month and restatement count of a final `previous_month`: it can
    /// only change with a new month or a restated day.
    previous_month_final: Option<(Month, u64)>,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// The one source of the config: every loop watches it.
    pub(super) config: watch::Sender<Arc<Config>>,
    pub(super) published: ArcSwap<Published>,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) keys: KeyProvider,
    pub(super) config_path: Option<PathBuf>,
    pub(super) retry: RetryPolicy,
    /// Serialises refreshes, reloads and publishes so they never go out of order.
    pub(super) refresh_lock: tokio::sync::Mutex<()>,
    /// The wall clock of refreshes (replaceable in tests, to cross a UTC boundary).
    pub(super) clock: Mutex<Clock>,
}

/// What a refresh installs: a new listing and what came with it.
pub(super) struct Fetched {
    pub(super) listing: Arc<Listing>,
    pub(super) taken_at: DateTime<Utc>,
    pub(super) direct: Arc<Vec<DirectKey>>,
    pub(super) account_up: Option<bool>,
}

impl State {
    pub(super) fn new(
        client: Client,
        direct_clients: Arc<Vec<DirectClient>>,
        status: Status,
    ) -> State {
        State {
            client,
            direct_clients,
            listing: None,
            taken_at: None,
            as_of: None,
            direct: Arc::new(Vec::new()),
            activity: None,
            snapshot: None,
            status,
            last_success: None,
            organization: Arc::new(Organization::default()),
            listings: 0,
            activity_run_ended: false,
            departed: Arc::new(Vec::new()),
            ledger: LedgerState::default(),
        }
    }

    /// What a snapshot is built from besides the listing.
    pub(super) fn extras(&self) -> Extras {
        Extras {
            direct: Arc::clone(&self.direct),
            activity: self.activity.clone().map(|cache| cache as _),
            organization: Arc::clone(&self.organization),
            departed: Arc::clone(&self.departed),
            previous_month: Arc::clone(&self.ledger.previous_month),
        }
    }

    /// Installs a new listing. The keys the old listing held and the new one
    /// does not become departed. The old snapshot goes first, so that its
    /// listing is never alive beside the new one while the new snapshot is built.
    pub(super) fn install_listing(&mut self, fetched: Fetched) -> Extras {
        self.departed = Arc::new(self.departed_after(&fetched));
        self.snapshot = None;
        self.listing = Some(fetched.listing);
        self.taken_at = Some(fetched.taken_at);
        self.as_of = Some(fetched.taken_at);
        self.direct = fetched.direct;
        self.status.account_up = fetched.account_up;
        self.extras()
    }

    /// The departed keys once `fetched` replaces the installed listing, each
    /// with the workspace slug and creator the old snapshot attributed it
    /// with. A key that was a direct key's duplicate is counted through the
    /// direct key, not held. Without a management key nothing is listed, so
    /// nothing departs.
    fn departed_after(&self, fetched: &Fetched) -> Vec<DepartedKey> {
        if fetched.account_up.is_none() {
            return Vec::new();
        }
        let old = self.listing.as_deref().zip(self.taken_at);
        let old_snapshot = self
            .snapshot
            .as_deref()
            .filter(|s| old.is_some_and(|(listing, _)| std::ptr::eq(&*s.data, listing)));
        departed_after(
            &self.departed,
            old,
            |i| old_snapshot.is_some_and(|s| s.is_listed_as_direct(i)),
            old_snapshot.map_or(&self.organization, |s| &s.organization),
            &fetched.listing,
            fetched.taken_at,
        )
    }

    /// A snapshot built from the installed listing is what the pages and
    /// `/metrics` show; `up` only when every direct key answered too.
    pub(super) fn install_snapshot(
        &mut self,
        snapshot: Arc<Snapshot>,
        up: bool,
        taken_at: DateTime<Utc>,
    ) {
        self.snapshot = Some(snapshot);
        self.status.up = up;
        if up {
            self.status.last_success = Some(taken_at);
        }
    }

    /// The end of every refresh attempt, successful or not.
    pub(super) fn finish_refresh(&mut self, seconds: f64, failed: bool) {
        self.status.last_duration_seconds = Some(seconds);
        if failed {
            self.status.up = false;
        }
    }

    /// A new config: new clients; direct keys keep their last figures only
    /// while they stay in it; activity figures go when activity is disabled.
    pub(super) fn apply_config(
        &mut self,
        config: &Config,
        client: Client,
        direct_clients: Vec<DirectClient>,
    ) {
        self.client = client;
        self.direct_clients = Arc::new(direct_clients);
        self.retain_direct(config);
        self.status.reload_successful = true;
        self.set_activity_enabled(config.activity.enabled);
    }

    /// A reload that could not be applied: everything else stays as it was.
    pub(super) fn reload_failed(&mut self) {
        self.status.reload_successful = false;
    }

    /// A snapshot rebuilt from the installed listing (reload, activity, lists).
    pub(super) fn replace_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        self.snapshot = Some(snapshot);
    }

    /// The organization lists as just read (each failed list keeps its last value).
    pub(super) fn set_organization(&mut self, organization: Organization) {
        self.organization = Arc::new(organization);
    }

    /// The config's direct keys, in its order: each keeps its last figures
    /// under its (possibly new) company; a key new to the config is unknown
    /// until polled, so its company is absent rather than `$0`.
    fn retain_direct(&mut self, config: &Config) {
        let kept: Vec<DirectKey> = config
            .direct_keys()
            .map(
                |(company, name, _)| match self.direct.iter().find(|d| d.name == name) {
                    Some(d) => DirectKey {
                        company,
                        ..d.clone()
                    },
                    None => DirectKey {
                        company,
                        name: name.to_string(),
                        key: None,
                        fetched_at: None,
                        up: false,
                    },
                },
            )
            .collect();
        self.direct = Arc::new(kept);
    }

    /// What a snapshot built as of `now` reads, `None` before the first
    /// listing. The windows in `ended` (their boundary passed since the last
    /// build) go from the listing and the direct keys for good; with
    /// `let_go` the old snapshot goes first, so that a large listing is
    /// changed in place, not copied. Activity figures count for the listing's
    /// UTC day only: on a later day they are left out.
    pub(super) fn as_of(
        &mut self,
        now: DateTime<Utc>,
        ended: &[Window],
        let_go: bool,
    ) -> Option<(Arc<Listing>, DateTime<Utc>, Extras)> {
        let listing = self.listing.as_mut()?;
        if !ended.is_empty() {
            if let_go {
                self.snapshot = None;
            }
            Arc::make_mut(listing).omit_windows(ended);
            let direct = self.direct.iter().map(|d| d.as_of(now)).collect();
            self.direct = Arc::new(direct);
        }
        let listing = Arc::clone(listing);
        let taken_at = self.taken_at.unwrap_or(now);
        self.as_of = Some(now);
        let mut extras = self.extras();
        if taken_at.date_naive() != now.date_naive() {
            extras.activity = None;
        }
        Some((listing, taken_at, extras))
    }

    fn set_activity_enabled(&mut self, enabled: bool) {
        self.status.activity = match (enabled, self.status.activity) {
            (true, Some(a)) => Some(a),
            (true, None) => Some(ActivityStatus::default()),
            (false, _) => None,
        };
        if !enabled {
            self.activity = None;
            self.activity_run_ended = false;
        }
    }

    /// The start of an activity run: the cache, created on first use; `None`
    /// while activity is disabled. Before the first run has ended, a run in
    /// progress reads as up until a call fails.
    pub(super) fn start_activity_run(&mut self) -> Option<&mut ActivityCache> {
        let status = self.status.activity.as_mut()?;
        if !self.activity_run_ended {
            status.up = true;
        }
        Some(Arc::make_mut(
            self.activity.get_or_insert_with(Default::default),
        ))
    }

    /// The activity cache, if a run created it and activity is still
    /// enabled: a run's results after a reload disabled activity are
    /// dropped, never a cache re-created. Copied only if a snapshot build
    /// still holds it, which the callers' `refresh_lock` rules out.
    pub(super) fn activity_cache(&mut self) -> Option<&mut ActivityCache> {
        let enabled = self.status.activity.is_some();
        self.activity
            .as_mut()
            .filter(|_| enabled)
            .map(Arc::make_mut)
    }

    /// Where the latest listing's keys stand on `today` (a refresh may have
    /// replaced the run's listing).
    pub(super) fn activity_progress(&self, today: NaiveDate) -> Option<Progress> {
        let cache = self.activity.as_deref()?;
        let listed = self.listing.iter().flat_map(|l| l.keys.iter());
        Some(cache.progress(listed.map(|k| k.hash.as_ref()), today))
    }

    /// The status to publish at `now`: the activity progress counted for
    /// `now`'s UTC day, so that `complete` means "read for today" at every
    /// publish, after midnight too.
    pub(super) fn status_at(&self, now: DateTime<Utc>) -> Status {
        let mut status = self.status;
        if let Some(activity) = status.activity.as_mut() {
            if let Some(progress) = self.activity_progress(now.date_naive()) {
                activity.keys = Some(progress);
            }
            if let Some(cache) = self.activity.as_deref() {
                activity.cached_keys = cache.keys();
            }
        }
        status
    }

    /// A call of the running activity run failed: `openrouter_activity_up`
    /// turns 0 at once, not only when the run ends.
    pub(super) fn activity_failing(&mut self) {
        if let Some(status) = self.status.activity.as_mut() {
            status.up = false;
        }
    }

    /// The end of an activity run.
    pub(super) fn finish_activity_run(&mut self, ok: bool) {
        if let Some(status) = self.status.activity.as_mut() {
            self.activity_run_ended = true;
            status.up = ok;
            if ok {
                status.last_success = Some(Utc::now());
            }
        }
    }

    /// Whether the organization lists are due with this refresh (and counts it).
    pub(super) fn organization_due(&mut self, every: u32) -> bool {
        let due = self.listings % u64::from(every.max(1)) == 0;
        self.listings += 1;
        due
    }

    /// The next refresh reads the organization lists first.
    pub(super) fn read_organization_next(&mut self) {
        self.listings = 0;
    }
}

/// The statements ledger's part of the state (kept apart from the rest).
impl State {
    /// Attaches the ledger opened at start, or why it could not be opened
    /// (`openrouter_ledger_up 0`), with its health as first read.
    pub(super) fn attach_ledger(
        &mut self,
        opened: Result<Arc<Ledger>, String>,
        status: LedgerStatus,
    ) {
        self.ledger.opened = Some(opened);
        self.status.ledger = Some(status);
    }

    /// The open ledger, if any.
    pub(super) fn ledger(&self) -> Option<Arc<Ledger>> {
        match &self.ledger.opened {
            Some(Ok(ledger)) => Some(Arc::clone(ledger)),
            _ => None,
        }
    }

    /// Why the ledger could not be opened (`None` when it is open, or when there is none).
    pub(super) fn ledger_error(&self) -> Option<String> {
        match &self.ledger.opened {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    /// The ledger's health as just read; whether it changed.
    pub(super) fn set_ledger_status(&mut self, status: LedgerStatus) -> bool {
        if self.ledger.opened.is_none() || self.status.ledger == Some(status) {
            return false;
        }
        self.status.ledger = Some(status);
        true
    }

    /// The activity cache as the ledger restored it, before any run created
    /// one: `false` (dropped) once a cache exists, or while activity is off.
    /// Restoring is tried once either way.
    pub(super) fn install_restored_activity(&mut self, cache: Option<ActivityCache>) -> bool {
        self.ledger.restored = true;
        let Some(cache) = cache else {
            return false;
        };
        if self.activity.is_some() || self.status.activity.is_none() {
            return false;
        }
        self.activity = Some(Arc::new(cache));
        true
    }

    /// When the account-wide `/activity` was last recorded in the ledger.
    pub(super) fn account_read(&self) -> Option<DateTime<Utc>> {
        self.ledger.account_read
    }

    pub(super) fn account_recorded(&mut self, read_at: DateTime<Utc>) {
        self.ledger.account_read = Some(read_at);
    }

    /// The account read as the ledger restored it after a start (`None`:
    /// it lacks a day, the account is read at once), unless read since.
    pub(super) fn restore_account_read(&mut self, read_at: Option<DateTime<Utc>>) {
        self.ledger.account_read = self.ledger.account_read.or(read_at);
    }

    /// Whether activity collection has yet to take back what the ledger holds.
    pub(super) fn activity_restore_due(&self) -> bool {
        !self.ledger.restored && self.ledger().is_some()
    }

    /// The last recorded listing's time, and the day the ledger was last pruned.
    pub(super) fn ledger_chores(&self) -> (Option<DateTime<Utc>>, Option<NaiveDate>) {
        (self.ledger.listing_recorded, self.ledger.pruned_on)
    }

    pub(super) fn listing_recorded(&mut self, taken_at: DateTime<Utc>) {
        self.ledger.listing_recorded = Some(taken_at);
    }

    pub(super) fn ledger_pruned(&mut self, today: NaiveDate) {
        self.ledger.pruned_on = Some(today);
    }

    /// The month and restatement count for which the previous month is
    /// known final (then it need not be read again).
    pub(super) fn previous_month_final(&self) -> Option<(Month, u64)> {
        self.ledger.previous_month_final
    }

    /// The previous month's figures as just read (`final_for` when the
    /// whole month is final); whether the published figures change.
    pub(super) fn set_previous_month(
        &mut self,
        figures: Vec<(String, Usd)>,
        final_for: Option<(Month, u64)>,
    ) -> bool {
        self.ledger.previous_month_final = final_for;
        if *self.ledger.previous_month == figures {
            return false;
        }
        self.ledger.previous_month = Arc::new(figures);
        true
    }
}
