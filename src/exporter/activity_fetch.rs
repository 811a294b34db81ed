//! Runs the planned `GET /activity` calls of an activity run: at most
//! `activity.concurrency` in flight and `activity.calls_per_second` started
//! per second, each result handed back as it arrives.
//!
//! The client shares one budget of calls in flight with the key listing, and
//! its back-off too, but only up to [`SHARED_PAUSE`]: a longer wait asked for
//! by an activity call (`Retry-After: 600`) holds this run's calls alone, so
//! the listing goes on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::activity::{ActivityRow, Plan, Planned};
use crate::sync::lock;
use crate::upstream::{Client, UpstreamError};

/// One finished call.
pub type Outcome = (Planned, Result<Vec<ActivityRow>, UpstreamError>);

/// The longest back-off an activity call imposes on every call (the key
/// listing's included): the listing's own deadline has room for it.
const SHARED_PAUSE: Duration = Duration::from_secs(5);
/// The longest wait an activity call honours before it gives up (the key is
/// then retried by the next run); and how many such waits one key gets.
const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
const WAITS_PER_KEY: u32 = 2;

/// Runs planned calls with at most `concurrency` in flight and at most
/// `calls_per_second` started per second, handing back each result as it
/// arrives ([`Fetcher::next`]). Dropping it aborts the calls in flight.
pub struct Fetcher {
    client: Client,
    plan: Plan,
    tasks: tokio::task::JoinSet<Outcome>,
    concurrency: usize,
    period: Duration,
    next_start: Instant,
    /// No call of this run starts before this (a long `Retry-After`).
    held_until: Arc<Mutex<Instant>>,
}

impl Fetcher {
    pub fn new(client: Client, plan: Plan, concurrency: usize, calls_per_second: u32) -> Fetcher {
        Fetcher {
            client,
            plan,
            tasks: tokio::task::JoinSet::new(),
            concurrency: concurrency.max(1),
            period: Duration::from_secs(1) / calls_per_second.max(1),
            next_start: Instant::now(),
            held_until: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Calls not finished yet (not started, or in flight).
    pub fn remaining(&self) -> usize {
        self.plan.len() + self.tasks.len()
    }

    /// Starts nothing more; calls in flight still finish.
    pub fn stop(&mut self) {
        self.plan = Plan::default();
    }

    /// The next finished call; `None` once all are done.
    pub async fn next(&mut self) -> Option<Outcome> {
        loop {
            let can_start = !self.plan.is_empty() && self.tasks.len() < self.concurrency;
            if !can_start && self.tasks.is_empty() {
                return None;
            }
            let start_at = self.next_start.max(*lock(&self.held_until));
            let finished = tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => Some(joined),
                _ = tokio::time::sleep_until(start_at), if can_start => None,
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
        let now = Instant::now();
        if *lock(&self.held_until) > now {
            return; // held meanwhile: wait again
        }
        let Some(planned) = self.plan.next() else {
            return;
        };
        // Never faster than the rate, also after waiting for a free slot.
        self.next_start = self.next_start.max(now) + self.period;
        let client = self.client.clone();
        let held_until = Arc::clone(&self.held_until);
        self.tasks.spawn(async move {
            let rows = read_history(&client, &planned.hash, &held_until).await;
            (planned, rows)
        });
    }
}

/// One key's history. A back-off longer than [`SHARED_PAUSE`] (asked by
/// this call, or already held by another) comes back as
/// `RetryAfterPastDeadline`; it is waited out here, holding the run's other
/// calls too, then the call is made again.
async fn read_history(
    client: &Client,
    hash: &str,
    held_until: &Mutex<Instant>,
) -> Result<Vec<ActivityRow>, UpstreamError> {
    let mut waits = 0;
    loop {
        let capped = client.with_deadline(Instant::now() + SHARED_PAUSE);
        match capped.activity(hash).await {
            Err(UpstreamError::RetryAfterPastDeadline { retry_after, .. })
                if waits < WAITS_PER_KEY && retry_after <= LONGEST_WAIT =>
            {
                waits += 1;
                let until = Instant::now() + retry_after;
                {
                    let mut held = lock(held_until);
                    if *held < until {
                        *held = until;
                        warn!(
                            wait_seconds = retry_after.as_secs(),
                            "OpenRouter asks the activity calls to wait; this run waits, the key listing does not"
                        );
                    }
                }
                tokio::time::sleep_until(until).await;
            }
            other => return other,
        }
    }
}
