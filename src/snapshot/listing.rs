//! The listing as the snapshot sees it: each key converted from the wire
//! once (dates parsed, amounts kept as reported), and the account's credits.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::DateTime;
use tracing::warn;

use super::Window;
use crate::upstream::{ApiKey, UpstreamData};

/// One API key as the exporter publishes it. `None` = not reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub hash: Box<str>,
    pub name: Box<str>,
    /// OpenRouter's masked key (`sk-or-v1-abc...xyz`).
    pub label: Box<str>,
    pub disabled: Option<bool>,
    pub limit: Option<f64>,
    pub limit_remaining: Option<f64>,
    /// daily / weekly / monthly; `None` = the limit never resets.
    pub limit_reset: Option<Box<str>>,
    /// Credit spend per [`Window`] (daily, weekly, monthly, lifetime).
    pub usage: [Option<f64>; 4],
    pub byok_usage: [Option<f64>; 4],
    /// Shared by the keys of one workspace (a listing holds a few distinct ids).
    pub workspace_id: Option<Arc<str>>,
    /// Unix seconds; `None` when the key never expires (or its date did not parse).
    pub expires_at: Option<i64>,
    /// The key's `expires_at` was present but not a readable date.
    pub expiry_unreadable: bool,
    /// The organization member who created the key, when reported (shared
    /// by the keys of one member).
    pub creator_user_id: Option<Arc<str>>,
}

impl From<ApiKey> for Key {
    fn from(k: ApiKey) -> Key {
        Key::from_wire(k, &mut |id| Arc::from(id))
    }
}

impl Key {
    /// The key as listed; `share` turns the workspace and creator ids into
    /// shared strings (one per distinct id in a listing, not one per key).
    fn from_wire(k: ApiKey, share: &mut impl FnMut(Box<str>) -> Arc<str>) -> Key {
        let expires = k
            .expires_at
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(|t| (t, parse_timestamp(t)));
        Key {
            usage: [k.usage_daily, k.usage_weekly, k.usage_monthly, k.usage],
            byok_usage: [
                k.byok_usage_daily,
                k.byok_usage_weekly,
                k.byok_usage_monthly,
                k.byok_usage,
            ],
            expires_at: expires.and_then(|(_, ts)| ts),
            expiry_unreadable: matches!(expires, Some((_, None))),
            limit_reset: k.limit_reset.filter(|r| !r.is_empty()),
            hash: k.hash,
            name: k.name,
            label: k.label,
            disabled: k.disabled,
            limit: k.limit,
            limit_remaining: k.limit_remaining,
            workspace_id: k.workspace_id.map(&mut *share),
            creator_user_id: k.creator_user_id.filter(|c| !c.is_empty()).map(share),
        }
    }
}

/// Account-wide figures from `GET /credits`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccountCredits {
    pub total_credits: f64,
    pub total_usage: f64,
}

/// One complete listing, converted from the wire once.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub keys: Vec<Key>,
    /// `None` when `/credits` could not be read.
    pub credits: Option<AccountCredits>,
}

impl Listing {
    /// Converts a fetch. An `expires_at` that does not parse is logged here
    /// (and counted in `openrouter_key_expiry_unreadable`), never dropped silently.
    pub fn from_upstream(data: UpstreamData) -> Listing {
        let mut ids: HashSet<Arc<str>> = HashSet::new();
        let mut share = |id: Box<str>| match ids.get(&*id) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(id);
                ids.insert(Arc::clone(&shared));
                shared
            }
        };
        // In place: the keys take the wire list's memory, not a second list.
        let keys: Vec<Key> = data
            .keys
            .into_iter()
            .map(|k| Key::from_wire(k, &mut share))
            .collect();
        for key in keys.iter().filter(|k| k.expiry_unreadable) {
            warn!(key = %key.name, key_hash = %key.hash, "expires_at is not an RFC 3339 date; expiry unknown");
        }
        Listing {
            keys,
            credits: data.credits.map(|c| AccountCredits {
                total_credits: c.total_credits,
                total_usage: c.total_usage,
            }),
        }
    }
}

impl Listing {
    /// Makes `windows` unknown on every key: their figures may have been read
    /// on either side of a UTC boundary.
    pub fn omit_windows(&mut self, windows: &[Window]) {
        let indexes: Vec<usize> = Window::ALL
            .iter()
            .enumerate()
            .filter(|(_, w)| windows.contains(w))
            .map(|(i, _)| i)
            .collect();
        for key in &mut self.keys {
            for &i in &indexes {
                key.usage[i] = None;
                key.byok_usage[i] = None;
            }
        }
    }
}

/// RFC 3339 timestamp (with offset or `Z`, any fraction) to Unix seconds.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp())
}
