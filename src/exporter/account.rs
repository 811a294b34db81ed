//! The account's own spend for the statements ledger: the undated
//! account-wide `GET /activity` (no `api_key_hash`), read beside an activity
//! run when a ledger is open and recorded with `Ledger::record_account`. It
//! ties each statement to what OpenRouter billed: the account's spend less
//! every key's is the statement's "unattributed" line.
//!
//! It is read on a key's schedule: at once when the ledger lacks a day of its
//! window (a first start, or a restart after a gap), from
//! [`FIRST_READ_MINUTES`] past UTC midnight for the new day, and again at the
//! [`REREAD_AFTER_HOURS`] re-read that settles yesterday: twice a day. Its
//! answer is taken as a key's is: for the run's day only (not one that comes
//! after UTC midnight), and not from a window that has not rolled over yet.
//!
//! A failure fails nothing else: the key run goes on and is not reported as
//! failed. It is logged and counted in `openrouter_upstream_requests_total`
//! (`endpoint="activity"`), and the account's days stay missing, so the
//! statement shows the account line as unknown, never as zero, until a later
//! run reads it.

use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use tracing::{debug, info, warn};

use super::Exporter;
use crate::activity::{self, ActivityRow, FIRST_READ_MINUTES, REREAD_AFTER_HOURS};
use crate::ledger::AccountRead;
use crate::sync::lock;
use crate::upstream::{Client, UpstreamError};

/// The account call's retries never wait past this: a longer `Retry-After`
/// fails it, and the next run reads it.
const ACCOUNT_CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The account-wide call's answer, and when it came (on the run's clock).
type Answered = (Result<Vec<ActivityRow>, UpstreamError>, DateTime<Utc>);

/// One account-wide call on its way, started with an activity run.
pub(super) struct AccountCall {
    /// The run's day: the answer counts for it only.
    today: NaiveDate,
    handle: tokio::task::JoinHandle<Answered>,
}

impl Drop for AccountCall {
    /// A run stopped at shutdown stops its account call too.
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Whether the account is read by a run at `now`, when it was last read
/// (recorded) at `last`: the schedule of the module doc.
pub(super) fn account_due(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let Some(last) = last else {
        return true;
    };
    let today = now.date_naive();
    let Some(midnight) = today.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) else {
        return false;
    };
    let first_read = midnight + Duration::minutes(FIRST_READ_MINUTES);
    let reread = midnight + Duration::hours(REREAD_AFTER_HOURS);
    if last.date_naive() < today {
        return now >= first_read;
    }
    (now >= first_read && last < first_read) || (now >= reread && last < reread)
}

impl Exporter {
    /// Starts the account-wide call of a run at `now` when a ledger is open
    /// and the account is due; the key run goes on beside it.
    pub(super) fn start_account_call(
        &self,
        client: &Client,
        now: DateTime<Utc>,
    ) -> Option<AccountCall> {
        let due = {
            let state = lock(&self.shared.state);
            state.ledger().is_some() && account_due(state.account_read(), now)
        };
        if !due {
            return None;
        }
        let client = client.with_deadline(tokio::time::Instant::now() + ACCOUNT_CALL_DEADLINE);
        let started = Instant::now();
        let handle = tokio::spawn(async move {
            let result = client.account_activity().await;
            let read_at = now + Duration::from_std(started.elapsed()).unwrap_or_default();
            (result, read_at)
        });
        Some(AccountCall {
            today: now.date_naive(),
            handle,
        })
    }

    /// Waits for the account call and records its answer in the ledger.
    /// Returns whether the answer came from a window not rolled over yet
    /// (the next run should come soon). Failures are logged, nothing more.
    pub(super) async fn finish_account_call(&self, mut call: AccountCall) -> bool {
        let today = call.today;
        let (result, read_at) = match (&mut call.handle).await {
            Ok(answered) => answered,
            Err(e) => {
                warn!(error = %e, "activity: the account-wide call stopped; the account's days stay unknown until a later run reads them");
                return false;
            }
        };
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "activity: the account-wide call failed; the statements show the account's days as unknown until a later run reads them (the keys' figures are not affected)");
                return false;
            }
        };
        if read_at.date_naive() != today {
            info!("UTC midnight passed during the account-wide activity call; the next run reads it for the new day");
            return false;
        }
        match activity::summarize(&rows, today) {
            Ok(history) if history.behind_at(read_at) => {
                debug!("activity: the account-wide answer comes from a window not rolled over yet; read again by the next run");
                return true;
            }
            Ok(_) => {}
            Err(e) => {
                warn!(rows = e.rows, "activity: the account-wide answer has rows without a readable date or usage; the account's days stay unknown");
                return false;
            }
        }
        self.record_account(today, read_at, rows).await;
        false
    }

    /// Records one account-wide answer; notes when, so that the account is
    /// read again only when due.
    async fn record_account(
        &self,
        today: NaiveDate,
        read_at: DateTime<Utc>,
        rows: Vec<ActivityRow>,
    ) {
        if lock(&self.shared.state).status.activity.is_none() {
            return; // Activity was disabled by a reload meanwhile.
        }
        let Some(ledger) = self.ledger() else {
            return;
        };
        let writer = std::sync::Arc::clone(&ledger);
        let job = move || {
            writer.record_account(AccountRead {
                today,
                read_at,
                rows: &rows,
            })
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(Ok(summary)) if summary.refused.is_empty() => {
                lock(&self.shared.state).account_recorded(read_at);
                info!(
                    days_written = summary.days_written,
                    restated_days = summary.restated_days,
                    "ledger: the account's own spend recorded"
                );
                self.publish_ledger_status(&ledger, read_at).await;
            }
            Ok(Ok(_)) => warn!("ledger: the account-wide answer was refused (a sum over the 64-bit range); the account's days stay unknown"),
            Ok(Err(e)) => warn!(error = %e, "ledger: the account's spend could not be recorded; the next due run reads it again"),
            Err(e) => warn!(error = %e, "ledger: recording the account's spend stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_account_is_read_at_once_then_twice_a_day() {
        let due = |last: Option<&str>, now: &str| account_due(last.map(at), at(now));
        assert!(due(None, "2025-12-01T00:05:00Z"), "never read: at once");
        // Read yesterday: the new day from 00:30 on.
        assert!(!due(Some("2025-11-30T23:00:00Z"), "2025-12-01T00:20:00Z"));
        assert!(due(Some("2025-11-30T23:00:00Z"), "2025-12-01T00:30:00Z"));
        // Read at 00:40: again at the 6 h re-read, not before.
        assert!(!due(Some("2025-12-01T00:40:00Z"), "2025-12-01T05:59:00Z"));
        assert!(due(Some("2025-12-01T00:40:00Z"), "2025-12-01T06:10:00Z"));
        // Read at 06:10 (or restored as settled: 06:00): done for the day.
        assert!(!due(Some("2025-12-01T06:10:00Z"), "2025-12-01T23:00:00Z"));
        assert!(!due(Some("2025-12-01T06:00:00Z"), "2025-12-01T12:00:00Z"));
        // Read at 00:10 (a first start): again at 00:30.
        assert!(due(Some("2025-12-01T00:10:00Z"), "2025-12-01T00:35:00Z"));
    }
}
