//! Direct keys: keys configured with their own secret and polled with
//! `GET /key`, for accounts without a management key (or keys outside it).
//!
//! A poll never fails as a whole: a key that fails keeps its last good
//! figures, marked down, and the snapshot stops counting a figure once the
//! calendar window it was read in has ended. A poll is stamped with the time
//! it was sent, so an answer that crossed a UTC boundary counts for no
//! window that boundary closed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::config::{Config, SecretError};
use crate::snapshot::{DirectKey, Key};
use crate::upstream::Client;

/// Keys polled at once.
const CONCURRENCY: usize = 8;

/// One direct key and the client that authenticates with its secret.
#[derive(Clone)]
pub struct DirectClient {
    /// Index into the config's companies.
    pub company: usize,
    pub name: String,
    client: Client,
}

/// A client per direct key of `config`, each with its own secret.
/// The error names the key whose secret could not be loaded.
pub fn clients(config: &Config, base: &Client) -> Result<Vec<DirectClient>, (String, SecretError)> {
    config
        .direct_keys()
        .map(|(company, name, secret)| {
            let key = secret.load().map_err(|e| (name.to_string(), e))?;
            Ok(DirectClient {
                company,
                name: name.to_string(),
                client: base.with_bearer(key),
            })
        })
        .collect()
}

/// The wall clock polls are stamped with (the exporter's, replaceable in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Polls every direct key, in config order. Each answer counts from the
/// moment its request was sent: the windows whose boundary passed before
/// the answer came are unknown.
pub async fn poll(
    clients: &[DirectClient],
    previous: &[DirectKey],
    clock: &Clock,
) -> Vec<DirectKey> {
    let mut tasks = tokio::task::JoinSet::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    for (index, direct) in clients.iter().cloned().enumerate() {
        let semaphore = Arc::clone(&semaphore);
        let clock = Arc::clone(clock);
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let hash = DirectKey::hash_for(&direct.name);
            let sent = clock();
            let key = direct.client.current_key(&hash, &direct.name).await;
            (index, direct, key, sent, clock())
        });
    }
    let mut polled = Vec::with_capacity(clients.len());
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, direct, key, sent, answered)) = joined else {
            continue;
        };
        let entry = match key {
            Ok(key) => DirectKey {
                company: direct.company,
                name: direct.name,
                key: Some(Key::from(key)),
                fetched_at: Some(sent),
                up: true,
            }
            .as_of(answered),
            Err(e) => {
                warn!(key = %direct.name, error = %e, "direct key poll failed; keeping its last figures");
                let last = previous.iter().find(|p| p.name == direct.name);
                DirectKey {
                    company: direct.company,
                    key: last.and_then(|p| p.key.clone()),
                    fetched_at: last.and_then(|p| p.fetched_at),
                    name: direct.name,
                    up: false,
                }
            }
        };
        polled.push((index, entry));
    }
    polled.sort_by_key(|(i, _)| *i);
    polled.into_iter().map(|(_, d)| d).collect()
}
