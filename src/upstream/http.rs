//! How one call is made: one GET with a place in the shared budget, retries
//! with back-off, and the checks on its answer (status, redirect, content
//! type, size). A redirect is never followed (the client is built with
//! `redirect::Policy::none()`): it fails the call as an invalid response.

use std::sync::atomic::Ordering;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::warn;

use super::error::{
    body_reset_wait, redact, redirect_error, status_error, transport_error, Endpoint,
    UpstreamError, MAX_BODY_BYTES,
};
use super::wire::{self, CountedPage};
use super::Client;

impl Client {
    /// GET `path` with `query`, with retries; the raw body of the first success.
    /// Each attempt takes a place in the shared budget; a 429 or 503 shrinks
    /// the window and, when its back-off fits the deadline, holds every call.
    pub(super) async fn get<Q: serde::Serialize + ?Sized>(
        &self,
        endpoint: Endpoint,
        path: &str,
        query: &Q,
    ) -> Result<Vec<u8>, UpstreamError> {
        let mut retry = 0;
        loop {
            let (permit, in_flight) = self.limiter.acquire(endpoint, self.deadline).await?;
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(UpstreamError::Transport {
                    endpoint,
                    message: "no longer needed".into(),
                });
            }
            self.stats
                .peak_in_flight
                .fetch_max(in_flight, Ordering::Relaxed);
            let result = self.get_once(endpoint, path, query).await;
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            let took = permit.sent.elapsed();
            self.stats.latency_micros.fetch_add(
                u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            match result {
                Ok(body) => {
                    self.limiter.succeeded();
                    return Ok(body);
                }
                Err((error, retry_after)) => {
                    retry += 1;
                    let delay = self.retry.delay(retry, retry_after);
                    let fits = self
                        .deadline
                        .map_or(true, |deadline| Instant::now() + delay <= deadline);
                    if matches!(error.status(), Some(429 | 503)) {
                        self.telemetry.count_throttled();
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        // The calls it holds wait out a back-off the refresh can afford.
                        self.limiter
                            .throttled(endpoint, permit.sent, fits.then_some(delay));
                    }
                    drop(permit);
                    if !error.retryable() || retry >= self.retry.attempts {
                        return Err(error);
                    }
                    if let (false, Some(after)) = (fits, retry_after) {
                        return Err(UpstreamError::RetryAfterPastDeadline {
                            endpoint,
                            retry_after: after,
                        });
                    }
                    warn!(%error, retry, delay_ms = delay.as_millis() as u64, "retrying OpenRouter call");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One HTTP call; on failure also returns the wait the server asks for:
    /// its `Retry-After` header, else a 429 body's `X-RateLimit-Reset`.
    async fn get_once<Q: serde::Serialize + ?Sized>(
        &self,
        endpoint: Endpoint,
        path: &str,
        query: &Q,
    ) -> Result<Vec<u8>, (UpstreamError, Option<Duration>)> {
        let url = format!("{}{}", self.base_url, path);
        let sent = self
            .http
            .get(&url)
            .query(query)
            .bearer_auth(self.bearer.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let code = if e.is_timeout() { "timeout" } else { "error" };
                self.telemetry.count_request(endpoint.as_str(), code);
                return Err((transport_error(endpoint, e), None));
            }
        };
        let status = response.status().as_u16();
        self.telemetry
            .count_request(endpoint.as_str(), &status.to_string());
        let secret = self.bearer.expose_secret();
        if response.status().is_redirection() {
            let location = response.headers().get(reqwest::header::LOCATION);
            return Err((redirect_error(endpoint, status, location, secret), None));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);

        let mut body = Vec::new();
        read_capped(endpoint, &mut response, &mut body)
            .await
            .map_err(|e| (e, retry_after))?;
        if !(200..300).contains(&status) {
            let retry_after = match retry_after {
                None if status == 429 => body_reset_wait(&body, epoch_millis()),
                header => header,
            };
            return Err((status_error(endpoint, status, &body, secret), retry_after));
        }
        if let Some(ct) = content_type {
            if !ct.to_ascii_lowercase().contains("json") {
                let message = redact(&format!("expected JSON, got content type {ct:?}"), secret);
                return Err((UpstreamError::Decode { endpoint, message }, None));
            }
        }
        Ok(body)
    }

    /// A `{"data": T}` body, decoded ([`wire::from_json`] says how).
    pub(super) fn decode<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<T, UpstreamError> {
        let (value, lone) = wire::decode(endpoint, body)?;
        self.count_lone_surrogates(endpoint, lone);
        Ok(value)
    }

    /// One page of a counted list, decoded as [`Client::decode`] does.
    pub(super) fn decode_page<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<CountedPage<T>, UpstreamError> {
        let (page, lone) = wire::from_json(endpoint, body)?;
        self.count_lone_surrogates(endpoint, lone);
        Ok(page)
    }

    /// Lone surrogate escapes read as U+FFFD: counted in this refresh's
    /// [`CallStats`](super::CallStats) and logged (not the text: a name may be private).
    fn count_lone_surrogates(&self, endpoint: Endpoint, lone: usize) {
        if lone > 0 {
            self.stats
                .lone_surrogates
                .fetch_add(lone as u64, Ordering::Relaxed);
            warn!(
                %endpoint,
                lone,
                "an answer held a lone UTF-16 surrogate escape; read as U+FFFD"
            );
        }
    }
}

/// Now, in epoch milliseconds (the unit of a 429 body's `X-RateLimit-Reset`).
fn epoch_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads the body into `body` (cleared first), refusing more than
/// `MAX_BODY_BYTES`. Each chunk is copied and dropped at once, so that the
/// connection's read buffer is free to be reused for the next response
/// (holding on to it made every page a fresh 64 KiB mapping); `body` is sized
/// once from `Content-Length`.
async fn read_capped(
    endpoint: Endpoint,
    response: &mut reqwest::Response,
    body: &mut Vec<u8>,
) -> Result<(), UpstreamError> {
    body.clear();
    let declared = response.content_length();
    if let Some(len) = declared {
        if len > MAX_BODY_BYTES as u64 {
            return Err(UpstreamError::TooLarge { endpoint });
        }
        body.reserve(len as usize);
    }
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(UpstreamError::TooLarge { endpoint });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(transport_error(endpoint, e)),
        }
    }
}
