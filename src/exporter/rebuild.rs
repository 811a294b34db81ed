//! Rebuilding the snapshot from the last listing, as of now: after a reload,
//! an activity run or the organization lists, and at each UTC boundary even
//! when no refresh succeeds. No published window outlives its end: the
//! figures of a day, week or month that has ended go at its boundary.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::refresh::{build_snapshot, crossed_windows, LARGE_LISTING};
use super::Exporter;
use crate::snapshot::Window;
use crate::sync::lock;

/// How long after a UTC boundary (by the exporter's clock) the timer fires:
/// a wake-up a little early would find nothing ended yet.
const BOUNDARY_MARGIN: Duration = Duration::from_millis(50);

impl Exporter {
    /// Re-publishes the last data as of now when a UTC boundary has passed
    /// since it was built: the windows that ended are dropped (keys,
    /// companies, direct keys), and so are the activity figures of an earlier
    /// day. The refresh loop calls it at each boundary; it never calls OpenRouter.
    pub async fn republish_as_of_now(&self) {
        let _serial = self.shared.refresh_lock.lock().await;
        let now = self.now();
        if self.outdated(now) {
            self.rebuild_snapshot_at(now).await;
            self.publish().await;
        }
    }

    /// Whether a UTC boundary passed since the snapshot was built.
    pub(super) fn outdated(&self, now: DateTime<Utc>) -> bool {
        let state = lock(&self.shared.state);
        state.snapshot.is_some()
            && state
                .as_of
                .is_some_and(|at| at.date_naive() != now.date_naive())
    }

    /// Rebuilds the snapshot from the last listing with the current config
    /// and activity data, as of now. Caller holds `refresh_lock`.
    pub(super) async fn rebuild_snapshot(&self) {
        self.rebuild_snapshot_at(self.now()).await;
    }

    pub(super) async fn rebuild_snapshot_at(&self, now: DateTime<Utc>) {
        let config = self.config();
        let (ended, large) = {
            let state = lock(&self.shared.state);
            let taken_at = state.taken_at.unwrap_or(now);
            let before = crossed_windows(taken_at, state.as_of.unwrap_or(taken_at));
            let ended: Vec<Window> = crossed_windows(taken_at, now)
                .into_iter()
                .filter(|w| !before.contains(w))
                .collect();
            let large = state
                .listing
                .as_ref()
                .is_some_and(|l| l.keys.len() >= LARGE_LISTING);
            (ended, large)
        };
        if !ended.is_empty() {
            info!(windows = ?ended, "a UTC boundary passed; the figures of the windows that ended are dropped until the next refresh");
            if large {
                self.unpublish_snapshot();
            }
        }
        let inputs = lock(&self.shared.state).as_of(now, &ended, large);
        let Some((listing, taken_at, extras)) = inputs else {
            return;
        };
        match build_snapshot(config, listing, extras, taken_at).await {
            Ok(snapshot) => lock(&self.shared.state).replace_snapshot(snapshot),
            Err(e) => {
                warn!(error = %e, "rebuilding the snapshot failed; keeping the previous one")
            }
        }
    }

    /// How long until just after the next UTC midnight, by the exporter's
    /// clock: every calendar window (day, week, month) ends at one.
    pub(super) fn until_next_boundary(&self) -> Duration {
        let now = self.now();
        let next = Window::Daily.end(now).unwrap_or(now);
        (next - now).to_std().unwrap_or_default() + BOUNDARY_MARGIN
    }
}
