//! Direct keys (polled with their own secret, `GET /key`) and how one that
//! the management API also lists is paired with its listed self, so it
//! counts once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Key, Window, LIFETIME};
use crate::money::Usd;

/// A direct key that the management API also lists.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectDuplicate {
    /// The direct key's name in the config.
    pub name: String,
    /// Its configured company, which the figures go to.
    pub company: String,
    /// The company the listed key's selectors would have given it.
    pub listed_company: String,
}

/// Pairs (direct index, listed index) of the same key seen both ways.
///
/// The masked label names the key (only 6 characters of it, so it could
/// name two), and the lifetime figures must be in the order the two reads
/// were made: spend only grows, and it goes on between them. A direct key
/// that answered was polled after the listing (listed ≤ direct); one whose
/// poll failed keeps figures from an earlier refresh (direct ≤ listed).
/// When several listed keys carry the label, the closest lifetime of those
/// in order wins; a tie pairs none. Each listed key pairs at most once.
pub(super) fn also_listed(listed: &[Key], direct: &[DirectKey]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    if direct.iter().all(|d| d.key.is_none()) {
        return pairs;
    }
    let by_label: HashMap<&str, Vec<usize>> = listed
        .iter()
        .enumerate()
        .filter(|(_, k)| !k.label.is_empty())
        .fold(Default::default(), |mut map, (i, k)| {
            map.entry(k.label.as_ref()).or_default().push(i);
            map
        });
    let mut taken = HashSet::new();
    for (d, direct) in direct.iter().enumerate() {
        let Some(key) = &direct.key else { continue };
        let Some(direct_lifetime) = key.usage[LIFETIME].and_then(Usd::from_f64) else {
            continue;
        };
        let Some(candidates) = by_label.get(key.label.as_ref()) else {
            continue;
        };
        // The lifetime spent between the older read and the newer one.
        let gap = |i: usize| {
            let listed_lifetime = listed[i].usage[LIFETIME].and_then(Usd::from_f64)?;
            let (older, newer) = if direct.up {
                (listed_lifetime, direct_lifetime)
            } else {
                (direct_lifetime, listed_lifetime)
            };
            newer.checked_sub(older).filter(|g| *g >= Usd::ZERO)
        };
        let mut in_order: Vec<(Usd, usize)> = candidates
            .iter()
            .filter(|i| !taken.contains(*i))
            .filter_map(|&i| Some((gap(i)?, i)))
            .collect();
        in_order.sort();
        let found = match in_order.as_slice() {
            [(_, i)] => Some(*i),
            [(closest, i), (next, _), ..] if closest < next => Some(*i),
            [] => None,
            _ => {
                warn!(direct_key = %direct.name, "several listed keys carry this direct key's masked label with the same lifetime figure; not paired");
                None
            }
        };
        if let Some(i) = found {
            taken.insert(i);
            pairs.push((d, i));
        }
    }
    pairs
}

/// A key polled with its own secret (`GET /key`), not listed by the management API.
#[derive(Debug, Clone)]
pub struct DirectKey {
    /// Index into the config's companies.
    pub company: usize,
    /// The key's name from the config.
    pub name: String,
    /// Last good figures (`hash` = [`DirectKey::hash_for`]); `None` until the first success.
    pub key: Option<Key>,
    /// When the poll that read `key` was sent: its calendar figures count
    /// only while the windows open at that moment last.
    pub fetched_at: Option<DateTime<Utc>>,
    /// Whether the last poll succeeded (in the refresh of the listing it is
    /// built with); `false` also for a key not polled yet.
    pub up: bool,
}

impl DirectKey {
    /// The `key_hash` label of a direct key, which has no listed hash.
    pub fn hash_for(name: &str) -> String {
        format!("direct:{name}")
    }

    pub fn hash(&self) -> String {
        DirectKey::hash_for(&self.name)
    }

    /// This key as published at `now`: a figure read in a calendar window
    /// that has since ended is not the current window's, so it becomes
    /// unknown (and with it the company's total), never yesterday's value.
    pub fn as_of(&self, now: DateTime<Utc>) -> DirectKey {
        let mut direct = self.clone();
        if let (Some(key), Some(at)) = (&mut direct.key, self.fetched_at) {
            for (i, window) in Window::ALL.into_iter().enumerate() {
                if window.end(at).is_some_and(|end| end <= now) {
                    key.usage[i] = None;
                    key.byok_usage[i] = None;
                }
            }
        }
        direct
    }
}
