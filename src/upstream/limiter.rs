//! How calls are budgeted: the retry back-off ([`RetryPolicy`]) and the one
//! budget of calls in flight that every clone of a client shares ([`Limiter`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::error::{Endpoint, UpstreamError};
use crate::sync::lock;

/// Bounded exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based): exponential, capped at
    /// `max_delay`, with 50–100% jitter. A server's `Retry-After` wins when it
    /// is longer, uncapped: the caller checks it against the refresh deadline.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_delay);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        match retry_after {
            Some(after) => after.max(jittered),
            None => jittered,
        }
    }
}

/// The one budget of calls in flight that every clone of a
/// [`Client`](super::Client) shares (listing, `/credits`, direct keys,
/// activity), and the shared back-off.
///
/// Additive increase, multiplicative decrease: the window starts at the limit;
/// a 429 or 503 halves it (once per back-off: answers to calls sent before the
/// last decrease do not shrink it again) and pauses calls for the back-off;
/// each successful call then adds `1 / window`, so the window grows back by
/// about one call per round trip.
///
/// The window is shared, but a pause is scoped by [`Class`]: one asked for by
/// an activity call holds activity calls only, so that a `Retry-After` on
/// `/activity` never stops the key listing; one asked for by any other call
/// holds every call (activity calls are the ones that can wait).
#[derive(Debug)]
pub struct Limiter {
    limit: usize,
    state: Mutex<LimiterState>,
    released: tokio::sync::Notify,
}

#[derive(Debug)]
struct LimiterState {
    in_flight: usize,
    window: f64,
    /// Every call waits until then (a back-off asked for by a listing call).
    paused_until: Option<Instant>,
    /// Activity calls also wait until then (a back-off asked for by one of them).
    activity_paused_until: Option<Instant>,
    last_decrease: Option<Instant>,
}

/// Whose back-off a pause is: which calls it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// `GET /activity`: its pauses hold activity calls only.
    Activity,
    /// Everything else (the listing, credits, organization lists, direct
    /// keys): its pauses hold every call.
    Listing,
}

impl Class {
    pub(super) fn of(endpoint: Endpoint) -> Class {
        match endpoint {
            Endpoint::Activity => Class::Activity,
            _ => Class::Listing,
        }
    }
}

impl LimiterState {
    /// The end of the pause that holds a call of `class`, if one does now.
    fn paused_for(&self, class: Class, now: Instant) -> Option<Instant> {
        let own = match class {
            Class::Activity => self.activity_paused_until,
            Class::Listing => None,
        };
        self.paused_until.max(own).filter(|until| *until > now)
    }
}

/// One call's place in the budget; dropping it frees the place.
pub(super) struct Permit {
    limiter: Arc<Limiter>,
    /// When the place was given: the call's send time.
    pub(super) sent: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        lock(&self.limiter.state).in_flight -= 1;
        self.limiter.released.notify_waiters();
    }
}

impl Limiter {
    pub fn new(limit: usize) -> Limiter {
        let limit = limit.max(1);
        Limiter {
            limit,
            state: Mutex::new(LimiterState {
                in_flight: 0,
                window: limit as f64,
                paused_until: None,
                activity_paused_until: None,
                last_decrease: None,
            }),
            released: tokio::sync::Notify::new(),
        }
    }

    /// The configured most calls in flight.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The calls allowed in flight now (the limit, or fewer after throttling).
    pub fn window(&self) -> usize {
        lock(&self.state).window as usize
    }

    /// Waits for a place, and out any back-off that holds `endpoint`'s
    /// [`Class`]. A back-off that ends past `deadline` fails at once, as the
    /// call that started it did.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        endpoint: Endpoint,
        deadline: Option<Instant>,
    ) -> Result<(Permit, usize), UpstreamError> {
        let class = Class::of(endpoint);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let pause = {
                let mut st = lock(&self.state);
                let now = Instant::now();
                match st.paused_for(class, now) {
                    Some(until) => Some(until),
                    None => {
                        if st.in_flight < (st.window as usize).max(1) {
                            st.in_flight += 1;
                            let permit = Permit {
                                limiter: Arc::clone(self),
                                sent: now,
                            };
                            return Ok((permit, st.in_flight));
                        }
                        None
                    }
                }
            };
            match pause {
                Some(until) => {
                    if let Some(deadline) = deadline {
                        if until > deadline {
                            return Err(UpstreamError::RetryAfterPastDeadline {
                                endpoint,
                                retry_after: until - Instant::now(),
                            });
                        }
                    }
                    tokio::time::sleep_until(until).await;
                }
                None => released.await,
            }
        }
    }

    /// A call answered: the window grows back by `1 / window`.
    pub(super) fn succeeded(&self) {
        let mut st = lock(&self.state);
        if st.window < self.limit as f64 {
            let grown = st.window + 1.0 / st.window.max(1.0);
            st.window = grown.min(self.limit as f64);
            drop(st);
            self.released.notify_waiters();
        }
    }

    /// A call of `endpoint` sent at `sent` was answered 429 or 503: halve the
    /// window (once per back-off) and, when `pause` is given, hold the calls
    /// its [`Class`] holds until it ends.
    pub(super) fn throttled(&self, endpoint: Endpoint, sent: Instant, pause: Option<Duration>) {
        let mut st = lock(&self.state);
        let now = Instant::now();
        if st.last_decrease.map_or(true, |t| sent >= t) {
            st.window = (st.window / 2.0).max(1.0);
            st.last_decrease = Some(now);
        }
        if let Some(pause) = pause {
            let until = Some(now + pause);
            let held = match Class::of(endpoint) {
                Class::Activity => &mut st.activity_paused_until,
                Class::Listing => &mut st.paused_until,
            };
            *held = (*held).max(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::FailureReason;

    #[test]
    fn the_window_halves_once_per_back_off_and_grows_back_by_one_per_window() {
        let limiter = Limiter::new(8);
        assert_eq!((limiter.limit(), limiter.window()), (8, 8));
        let before = Instant::now();
        limiter.throttled(Endpoint::Keys, before, None);
        assert_eq!(limiter.window(), 4);
        // Another answer to a call sent before that decrease: the same congestion.
        limiter.throttled(Endpoint::Keys, before, None);
        assert_eq!(limiter.window(), 4);
        let later = lock(&limiter.state).last_decrease.unwrap_or(before);
        limiter.throttled(Endpoint::Keys, later, Some(Duration::from_millis(50)));
        assert_eq!(limiter.window(), 2);
        assert!(lock(&limiter.state).paused_until.is_some());
        for _ in 0..3 {
            limiter.throttled(
                Endpoint::Keys,
                Instant::now() + Duration::from_secs(1),
                None,
            );
        }
        assert_eq!(limiter.window(), 1, "never below one call");
        // About one more call per window of answers: 1 → 2 after one answer,
        // 2 → 3 after three more (2.5, 2.9, 3.24).
        limiter.succeeded();
        assert_eq!(limiter.window(), 2);
        limiter.succeeded();
        limiter.succeeded();
        assert_eq!(limiter.window(), 2);
        limiter.succeeded();
        assert_eq!(limiter.window(), 3);
        for _ in 0..100 {
            limiter.succeeded();
        }
        assert_eq!(limiter.window(), 8, "never above the limit");
    }

    #[tokio::test]
    async fn a_back_off_past_the_deadline_fails_at_once() {
        let limiter = Arc::new(Limiter::new(2));
        limiter.throttled(
            Endpoint::Keys,
            Instant::now(),
            Some(Duration::from_secs(3600)),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let Err(e) = limiter.acquire(Endpoint::Keys, Some(deadline)).await else {
            panic!("a place was given during the back-off");
        };
        assert_eq!(e.reason(), FailureReason::RateLimited);
    }

    #[tokio::test]
    async fn an_activity_back_off_holds_activity_calls_only() {
        let limiter = Arc::new(Limiter::new(4));
        limiter.throttled(
            Endpoint::Activity,
            Instant::now(),
            Some(Duration::from_secs(3600)),
        );
        assert_eq!(limiter.window(), 2, "the window is shared");
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        for listing in [Endpoint::Keys, Endpoint::Workspaces, Endpoint::Credits] {
            let placed = limiter.acquire(listing, deadline).await;
            assert!(placed.is_ok(), "{listing} held by an activity back-off");
        }
        let Err(e) = limiter.acquire(Endpoint::Activity, deadline).await else {
            panic!("an activity call was given a place during its own back-off");
        };
        assert_eq!(e.reason(), FailureReason::RateLimited);

        // A listing back-off holds every call, activity included.
        let limiter = Arc::new(Limiter::new(4));
        limiter.throttled(
            Endpoint::Keys,
            Instant::now(),
            Some(Duration::from_secs(3600)),
        );
        for any in [Endpoint::Keys, Endpoint::Activity] {
            assert!(limiter.acquire(any, deadline).await.is_err(), "{any}");
        }
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        for retry in 1..10 {
            let d = policy.delay(retry, None);
            assert!(d <= Duration::from_secs(2), "{d:?}");
            assert!(d >= Duration::from_millis(50));
        }
        assert!(policy.delay(1, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        // Retry-After is not capped here: the caller holds it against the deadline.
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(3600)
        );
    }
}
