//! Keys that left the listing (deleted, rotated, expired away): their last
//! figures keep counting for their company until each calendar window ends,
//! so that a customer who rotates a key mid-month is still billed for the
//! month. Kept in memory only (a restart forgets them).

// hashbrown with foldhash: 100k hashes per refresh.
use hashbrown::HashSet;

use chrono::{DateTime, Utc};

use super::organization::Organization;
use super::{accumulate, Extras, Key, Listing, Sums, Window};
use crate::attribution::{Attributor, KeyIdentity};

/// The calendar windows a departed key keeps counting in. Lifetime is not
/// one of them: a company's lifetime is that of its listed keys, and a
/// departed key's lifetime moves to the account's unattributed spend at once.
const HELD_WINDOWS: [Window; 3] = [Window::Daily, Window::Weekly, Window::Monthly];

/// A key the last listing no longer holds, as it was last listed.
#[derive(Debug, Clone, PartialEq)]
pub struct DepartedKey {
    /// The key as last listed.
    pub key: Key,
    /// Its workspace's slug and its creator's email when it was last listed:
    /// it is attributed with them (a member who has left keeps their keys' company).
    pub workspace_slug: Option<Box<str>>,
    pub creator_email: Option<Box<str>>,
    /// When the last listing that held it was taken: its figures are that moment's windows.
    pub last_seen: DateTime<Utc>,
}

impl DepartedKey {
    /// `key` as last listed at `last_seen`, with what `org` then knew of it.
    pub fn new(key: &Key, org: &Organization, last_seen: DateTime<Utc>) -> DepartedKey {
        let workspace_slug = org.workspace_slug(key.workspace_id.as_deref());
        let creator_email = org.creator_email(key.creator_user_id.as_deref());
        DepartedKey {
            key: key.clone(),
            workspace_slug: workspace_slug.map(Box::from),
            creator_email: creator_email.map(Box::from),
            last_seen,
        }
    }

    /// Whether its figure for `window` still counts at `now`: the calendar
    /// window it was read in has not ended. Never for lifetime.
    pub fn holds(&self, window: Window, now: DateTime<Utc>) -> bool {
        HELD_WINDOWS.contains(&window) && window.end(self.last_seen).is_some_and(|end| end > now)
    }

    /// Whether anything of it still counts at `now`; once not, it is forgotten.
    pub fn counts_at(&self, now: DateTime<Utc>) -> bool {
        HELD_WINDOWS.iter().any(|&w| self.holds(w, now))
    }

    /// The key as published at `now`: spend of the windows it still holds,
    /// and nothing that a key no longer listed does not have (limit, state,
    /// expiry, lifetime).
    pub fn as_of(&self, now: DateTime<Utc>) -> Key {
        let mut key = self.key.clone();
        for (i, window) in Window::ALL.into_iter().enumerate() {
            if !self.holds(window, now) {
                key.usage[i] = None;
                key.byok_usage[i] = None;
            }
        }
        key.disabled = None;
        key.limit = None;
        key.limit_remaining = None;
        key.limit_reset = None;
        key.expires_at = None;
        key.expiry_unreadable = false;
        key
    }
}

/// A departed key as a snapshot publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Departed {
    /// Its figures of the windows it still holds ([`DepartedKey::as_of`]).
    pub key: Key,
    /// Index into the snapshot's companies.
    pub company: usize,
    /// When it was last listed.
    pub last_seen: DateTime<Utc>,
}

impl Sums<'_> {
    /// Adds the departed keys that still count at `now` to their companies:
    /// each window it still holds, and the key to the company's key count.
    /// They are attributed like listed keys, with the workspace slug and
    /// creator they had when last listed; they have no activity, so they add
    /// nothing to the rolling windows or the model mix.
    pub(super) fn add_departed(
        &mut self,
        attributor: &Attributor,
        extras: &Extras,
        now: DateTime<Utc>,
    ) -> Vec<Departed> {
        let org = &extras.organization;
        let counting: Vec<&DepartedKey> = extras
            .departed
            .iter()
            .filter(|d| d.counts_at(now))
            .collect();
        let attribution = attributor.attribute(counting.iter().map(|d| {
            let workspace_id = d.key.workspace_id.as_deref();
            KeyIdentity {
                hash: &d.key.hash,
                name: &d.key.name,
                workspace_id,
                workspace_slug: d
                    .workspace_slug
                    .as_deref()
                    .or_else(|| org.workspace_slug(workspace_id)),
                creator_email: d
                    .creator_email
                    .as_deref()
                    .or_else(|| org.creator_email(d.key.creator_user_id.as_deref())),
            }
        }));
        counting
            .into_iter()
            .zip(attribution.company_of_key)
            .map(|(d, company)| {
                let totals = &mut self.companies[company];
                totals.keys += 1;
                for (i, window) in Window::ALL.into_iter().enumerate() {
                    if d.holds(window, now) {
                        accumulate(&mut totals.usage[i], d.key.usage[i]);
                        accumulate(&mut totals.byok_usage[i], d.key.byok_usage[i]);
                    }
                }
                Departed {
                    key: d.as_of(now),
                    company,
                    last_seen: d.last_seen,
                }
            })
            .collect()
    }
}

/// The departed keys once `listing` (taken at `now`) replaces `old` (taken
/// at its own time): those still departed whose windows have not all
/// ended, and every key of `old` that `listing` no longer holds, but those
/// `skip` names (a direct key's duplicate, counted through the direct key).
/// Sorted by hash. A key listed again is no longer departed.
pub fn departed_after(
    departed: &[DepartedKey],
    old: Option<(&Listing, DateTime<Utc>)>,
    skip: impl Fn(usize) -> bool,
    org: &Organization,
    listing: &Listing,
    now: DateTime<Utc>,
) -> Vec<DepartedKey> {
    if departed.is_empty() && old.is_none() {
        return Vec::new();
    }
    let listed: HashSet<&str> = listing.keys.iter().map(|k| k.hash.as_ref()).collect();
    let mut kept: Vec<DepartedKey> = departed
        .iter()
        .filter(|d| !listed.contains(d.key.hash.as_ref()) && d.counts_at(now))
        .cloned()
        .collect();
    if let Some((old, seen)) = old {
        let leaving = old
            .keys
            .iter()
            .enumerate()
            .filter(|(i, key)| !listed.contains(key.hash.as_ref()) && !skip(*i))
            .map(|(_, key)| DepartedKey::new(key, org, seen))
            .filter(|d| d.counts_at(now));
        kept.extend(leaving);
    }
    // The newest record of a hash wins (a listing may repeat a key).
    kept.sort_by(|a, b| {
        a.key
            .hash
            .cmp(&b.key.hash)
            .then(b.last_seen.cmp(&a.last_seen))
    });
    kept.dedup_by(|later, first| later.key.hash == first.key.hash);
    kept
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::upstream::ApiKey;

    fn key(hash: &str, monthly: f64) -> Key {
        let json = format!(
            r#"{{"hash":"{hash}","name":"k-{hash}","usage":100,"usage_daily":1,
                "usage_weekly":2,"usage_monthly":{monthly},"limit":5,"disabled":false}}"#
        );
        Key::from(serde_json::from_str::<ApiKey>(&json).unwrap())
    }

    fn listing(keys: Vec<Key>) -> Listing {
        Listing {
            keys,
            credits: None,
        }
    }

    /// Wednesday 2026-12-30 15:00 UTC plus `hours`.
    fn at(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 30, 15, 0, 0).unwrap() + chrono::Duration::hours(hours)
    }

    #[test]
    fn each_window_is_held_until_it_ends_and_the_key_until_the_last_ends() {
        let d = DepartedKey::new(&key("h", 3.0), &Organization::default(), at(0));
        let windows = |now| HELD_WINDOWS.map(|w| d.holds(w, now));
        assert_eq!(windows(at(8)), [true, true, true]);
        // Thursday: a new day. 2027-01-01: a new month, the week goes on.
        assert_eq!(windows(at(9)), [false, true, true]);
        assert_eq!(windows(at(33)), [false, true, false]);
        assert!(d.counts_at(at(33)));
        // Monday 2027-01-04: the week has ended too, and the key is forgotten.
        assert!(!d.counts_at(at(105)));
        assert!(!d.holds(Window::Lifetime, at(0)));
    }

    #[test]
    fn the_published_key_has_only_the_windows_it_holds() {
        let d = DepartedKey::new(&key("h", 3.0), &Organization::default(), at(0));
        let published = d.as_of(at(9));
        assert_eq!(published.usage, [None, Some(2.0), Some(3.0), None]);
        assert_eq!((published.limit, published.disabled), (None, None));
        assert_eq!(published.hash, d.key.hash);
    }

    #[test]
    fn keys_leave_come_back_and_are_forgotten() {
        let org = Organization::default();
        let old = listing(vec![key("a", 1.0), key("b", 2.0), key("c", 3.0)]);
        let new = listing(vec![key("a", 1.0)]);
        // c is a direct key's duplicate: counted through the direct key.
        let gone = departed_after(&[], Some((&old, at(0))), |i| i == 2, &org, &new, at(1));
        let hashes: Vec<&str> = gone.iter().map(|d| d.key.hash.as_ref()).collect();
        assert_eq!(hashes, ["b"]);
        assert_eq!(gone[0].last_seen, at(0));
        // b is listed again: no longer departed; a leaves.
        let back = listing(vec![key("b", 2.5)]);
        let gone = departed_after(&gone, Some((&new, at(1))), |_| false, &org, &back, at(2));
        let hashes: Vec<&str> = gone.iter().map(|d| d.key.hash.as_ref()).collect();
        assert_eq!(hashes, ["a"]);
        // Once all its windows have ended (the week, on Monday), a is forgotten.
        let gone = departed_after(&gone, Some((&back, at(2))), |_| false, &org, &back, at(105));
        assert!(gone.is_empty());
    }
}
