//! One refresh in three phases: fetch within a deadline, install the listing
//! and build its snapshot, record the outcome. Then publish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::state::Fetched;
use super::{Exporter, RefreshError};
use crate::body::Published;
use crate::config::Config;
use crate::direct;
use crate::snapshot::{DirectKey, Extras, Listing, Snapshot, Window};
use crate::sync::lock;
use crate::telemetry::FailureReason;
use crate::upstream::{Client, UpstreamData, UpstreamError};

/// Listings of at least this many keys let their old snapshot go before the
/// new one is built (memory over a brief "rebuilding" on the pages).
pub(super) const LARGE_LISTING: usize = 20_000;

/// What the fetch phase brought back.
type Fetch = (Option<UpstreamData>, Vec<DirectKey>);

impl Exporter {
    /// One refresh attempt. On success the new snapshot is published; on
    /// failure the previous snapshot stays exactly as it was and
    /// `openrouter_up` drops to 0. A failing `/credits` or direct key is not a
    /// failed listing: the new figures are published, and the failing part
    /// shows in its own metric (and `openrouter_up 0` for a direct key).
    pub async fn refresh(&self) -> Result<(), RefreshError> {
        let _serial = self.shared.refresh_lock.lock().await;
        let config = self.config();
        let client = lock(&self.shared.state).client.clone();
        let started = Instant::now();
        // The whole refresh must end before the next one is due.
        let budget = config
            .refresh_interval
            .mul_f64(0.9)
            .max(Duration::from_millis(500));
        let deadline = tokio::time::Instant::now() + budget;
        let client = client.with_deadline(deadline);
        // The snapshot's clock starts with the fetch: no figure read before a
        // UTC boundary is published under the window that boundary opened.
        let fetch_started = self.now();
        let outcome = match self.fetch(&config, &client, budget, deadline).await {
            Ok(fetched) => self.install(&config, fetched, fetch_started).await,
            Err(e) => Err(e),
        };
        self.record(&client, &outcome, started.elapsed(), budget);
        self.publish().await;
        if matches!(outcome, Ok(true)) {
            // Ready only once the new body is what scrapes get.
            lock(&self.shared.state).last_success = Some(Instant::now());
        }
        outcome.map(|_| ())
    }

    /// Fetches the listing (with `/credits`) and polls direct keys, within `budget`.
    async fn fetch(
        &self,
        config: &Config,
        client: &Client,
        budget: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<Fetch, RefreshError> {
        let (direct_clients, previous_direct) = {
            let state = lock(&self.shared.state);
            (Arc::clone(&state.direct_clients), Arc::clone(&state.direct))
        };
        let clock = Arc::clone(&lock(&self.shared.clock));
        if client.previous_refresh().is_none() && config.openrouter.management_key.is_some() {
            info!(
                max_concurrent_requests = client.limiter().limit(),
                deadline_s = budget.as_secs(),
                "first refresh: no estimate of its duration yet; each later one is estimated from the one before"
            );
        }
        let work = async {
            let data = match config.openrouter.management_key {
                Some(_) => Some(client.fetch_all(&config.openrouter.workspaces).await?),
                None => None,
            };
            let direct = direct::poll(&direct_clients, &previous_direct, &clock).await;
            Ok::<_, UpstreamError>((data, direct))
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result.map_err(RefreshError::from),
            Err(_) => Err(RefreshError::Deadline(client.deadline_report(budget))),
        }
    }

    /// Converts what was fetched into a listing, installs it and builds its
    /// snapshot. `Ok(true)` when every direct key answered too.
    async fn install(
        &self,
        config: &Arc<Config>,
        (data, direct): Fetch,
        fetch_started: DateTime<Utc>,
    ) -> Result<bool, RefreshError> {
        let taken_at = self.now();
        let (mut listing, account_up) = match data {
            Some(data) => self.account_listing(data),
            None => (Listing::default(), None),
        };
        let crossed = crossed_windows(fetch_started, taken_at);
        if !crossed.is_empty() {
            warn!(windows = ?crossed, "a UTC boundary passed during the fetch; those windows are omitted until the next refresh");
            listing.omit_windows(&crossed);
        }
        let listing = Arc::new(listing);
        let direct_up = direct.iter().all(|d| d.up);
        if listing.keys.len() >= LARGE_LISTING {
            self.unpublish_snapshot();
        }
        let extras = lock(&self.shared.state).install_listing(Fetched {
            listing: Arc::clone(&listing),
            taken_at,
            direct: Arc::new(direct),
            account_up,
        });
        let snapshot = build_snapshot(Arc::clone(config), listing, extras, taken_at).await?;
        lock(&self.shared.state).install_snapshot(snapshot, direct_up, taken_at);
        Ok(direct_up)
    }

    /// For a large account two listings are never alive at once (~50 MB
    /// each at 100k keys): the published body lets go of its snapshot while
    /// the next is built, and the pages say "rebuilding" meanwhile. Small
    /// accounts keep the old one on show.
    pub(super) fn unpublish_snapshot(&self) {
        let current = self.published();
        self.shared.published.store(Arc::new(Published {
            snapshot: None,
            ..(*current).clone()
        }));
    }

    /// The listing, and whether `/credits` answered (a failure there is
    /// counted, never a failed refresh).
    fn account_listing(&self, mut data: UpstreamData) -> (Listing, Option<bool>) {
        let account_up = match data.credits_error.take() {
            Some(e) => {
                self.shared
                    .telemetry
                    .count_refresh_failure(FailureReason::Credits);
                warn!(error = %e, "GET /credits failed; publishing key and company figures without the account families");
                false
            }
            None => true,
        };
        (Listing::from_upstream(data), Some(account_up))
    }

    /// Records the outcome in the status, the counters and the logs.
    fn record(
        &self,
        client: &Client,
        outcome: &Result<bool, RefreshError>,
        elapsed: Duration,
        budget: Duration,
    ) {
        let (keys, seconds) = {
            let mut state = lock(&self.shared.state);
            state.finish_refresh(elapsed.as_secs_f64(), outcome.is_err());
            (
                state.listing.as_ref().map_or(0, |l| l.keys.len()),
                elapsed.as_secs_f64(),
            )
        };
        match outcome {
            Ok(direct_up) => {
                let record = client.record_refresh(Duration::from_secs_f64(seconds));
                info!(
                    keys,
                    duration_ms = (seconds * 1000.0) as u64,
                    calls = record.stats.calls,
                    peak_in_flight = record.stats.peak_in_flight,
                    direct_keys_up = direct_up,
                    "refresh succeeded"
                );
                // Half the deadline is the point to act, not the point of failure.
                if record.duration * 2 > budget {
                    warn!("{}; raise refresh_interval or openrouter.max_concurrent_requests (README: large accounts)", record.estimate(budget));
                } else {
                    info!("{}", record.estimate(budget));
                }
            }
            Err(e) => {
                self.shared.telemetry.count_refresh_failure(e.reason());
                if matches!(e.upstream(), Some(UpstreamError::Unauthorized { .. })) {
                    error!(error = %e, "refresh failed; keeping the previous data");
                } else {
                    warn!(error = %e, reason = %e.reason(), "refresh failed; keeping the previous data");
                }
            }
        }
    }
}

/// The calendar windows whose UTC boundary passed between `from` and `to`.
pub(super) fn crossed_windows(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Window> {
    Window::ALL
        .into_iter()
        .filter(|w| w.end(from).is_some_and(|end| end <= to))
        .collect()
}

/// Builds a snapshot off the async threads: at 100k keys it is real CPU work.
pub(super) async fn build_snapshot(
    config: Arc<Config>,
    listing: Arc<Listing>,
    extras: Extras,
    taken_at: DateTime<Utc>,
) -> Result<Arc<Snapshot>, RefreshError> {
    let job = move || Arc::new(Snapshot::build(&config, listing, &extras, taken_at));
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| RefreshError::Render(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn crossed_windows_are_the_boundaries_inside_the_fetch() {
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 11, 29, h, m, s).unwrap();
        // Sunday 23:59:59 → Monday 00:00:01 (not a month end): day and week.
        let monday = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 1).unwrap();
        assert_eq!(
            crossed_windows(at(23, 59, 59), monday),
            vec![Window::Daily, Window::Weekly]
        );
        assert!(crossed_windows(at(12, 0, 0), at(12, 0, 5)).is_empty());
        let december = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap();
        assert_eq!(
            crossed_windows(
                Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59).unwrap(),
                december
            ),
            vec![Window::Daily, Window::Monthly]
        );
    }
}
