//! Runs the planned `GET /activity` calls of an activity run: at most
//! `activity.concurrency` in flight and `activity.calls_per_second` started
//! per second, each result handed back as it arrives.

use std::time::Duration;

use crate::activity::{ActivityRow, Plan};
use crate::upstream::{Client, UpstreamError};

/// One finished call.
pub type Outcome = (String, Result<Vec<ActivityRow>, UpstreamError>);

/// Runs planned calls with at most `concurrency` in flight and at most
/// `calls_per_second` started per second, handing back each result as it
/// arrives ([`Fetcher::next`]). Dropping it aborts the calls in flight.
pub struct Fetcher {
    client: Client,
    plan: Plan,
    tasks: tokio::task::JoinSet<Outcome>,
    concurrency: usize,
    period: Duration,
    next_start: tokio::time::Instant,
}

impl Fetcher {
    pub fn new(client: Client, plan: Plan, concurrency: usize, calls_per_second: u32) -> Fetcher {
        Fetcher {
            client,
            plan,
            tasks: tokio::task::JoinSet::new(),
            concurrency: concurrency.max(1),
            period: Duration::from_secs(1) / calls_per_second.max(1),
            next_start: tokio::time::Instant::now(),
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
            let finished = tokio::select! {
                biased;
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => Some(joined),
                _ = tokio::time::sleep_until(self.next_start), if can_start => None,
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
        let Some(hash) = self.plan.next() else {
            return;
        };
        // Never faster than the rate, also after waiting for a free slot.
        self.next_start = self.next_start.max(tokio::time::Instant::now()) + self.period;
        let client = self.client.clone();
        self.tasks.spawn(async move {
            let rows = client.activity(&hash).await;
            (hash, rows)
        });
    }
}
