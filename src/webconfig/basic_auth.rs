//! HTTP basic auth from the web config: `Authorization: Basic` checked
//! against bcrypt hashes, with bounded caches of recent verdicts and a
//! bounded queue in front of the one bcrypt slot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use hyper::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use super::AUTH_CACHE_CAPACITY;
use crate::sync::lock;

/// Verifications admitted at once (the one running plus those waiting for
/// the bcrypt slot). At cost 10 (~70 ms a check) a newly admitted credential
/// is checked within about 1.2 s, however many guesses arrive.
pub const MAX_PENDING_CHECKS: usize = 16;

/// Of [`MAX_PENDING_CHECKS`], at most this many from one client address (one
/// IPv6 /64), so a flood from one place cannot take every place in the queue.
/// Eight leaves room for a browser's six parallel first requests.
pub const MAX_PENDING_PER_PEER: usize = 8;

/// A credential could not be checked now: the verification queue is full.
/// The request should be answered with 429, not 401: nothing was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks pending")]
pub struct QueueFull;

/// Checks `Authorization: Basic` against bcrypt hashes, remembering verdicts.
pub struct BasicAuth {
    pub(super) users: HashMap<String, SecretString>,
    /// Verified for unknown users, at the highest cost any user has, so a
    /// wrong user name costs as long as the slowest wrong password.
    dummy_hash: String,
    /// SHA-256 of (user, hash, password) of successful verifications.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// The same for failed ones, kept apart so that wrong guesses can never
    /// push out a good entry. A repeated wrong guess is answered without
    /// bcrypt and takes no place in the queue.
    failures: Mutex<HashSet<[u8; 32]>>,
    /// bcrypt is deliberately slow: one verification at a time keeps a flood
    /// of guesses from taking every core.
    bcrypt_slot: tokio::sync::Semaphore,
    /// Admitted verifications, in total and per client address.
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    total: usize,
    per_peer: HashMap<PeerKey, usize>,
}

/// A client address for fairness: IPv4 as is, IPv6 by its /64 (one host's
/// usual allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for PeerKey {
    fn from(ip: IpAddr) -> PeerKey {
        match ip {
            IpAddr::V4(v4) => PeerKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(u32::from(v4)),
                None => PeerKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    pub(super) fn new(users: BTreeMap<String, SecretString>) -> Result<BasicAuth, String> {
        let mut max_cost = None;
        for (user, hash) in &users {
            // bcrypt's own error quotes the value, which may be a plaintext password.
            let parts: bcrypt::HashParts = hash.expose_secret().parse().map_err(|_| {
                format!(
                    "basic_auth_users.{user}: not a bcrypt hash (expected \"$2y$\" or \"$2b$\", \
                     a cost and 53 characters); create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                )
            })?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err(format!(
                    "basic_auth_users.{user}: bcrypt cost {cost} is outside 4..31"
                ));
            }
            max_cost = max_cost.max(Some(cost));
        }
        let dummy_hash = bcrypt::hash("not a real password", max_cost.unwrap_or(10))
            .map_err(|e| format!("basic_auth_users: cannot prepare bcrypt: {e}"))?;
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            dummy_hash,
            cache: Mutex::new(HashSet::new()),
            failures: Mutex::new(HashSet::new()),
            bcrypt_slot: tokio::sync::Semaphore::new(1),
            pending: Mutex::new(Pending::default()),
        })
    }

    /// True when `authorization` carries the right user name and password
    /// (false as well when the check could not run: see [`BasicAuth::verify`]).
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let anyone = IpAddr::from([0, 0, 0, 0]);
        self.verify(authorization, anyone).await == Ok(true)
    }

    /// Whether `authorization` carries the right user name and password, or
    /// [`QueueFull`] when the credential is not in a cache and the bcrypt
    /// queue has no place for it (in total, or for `peer`'s address).
    pub async fn verify(
        &self,
        authorization: Option<&HeaderValue>,
        peer: IpAddr,
    ) -> Result<bool, QueueFull> {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Ok(false);
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get(u));
        let hash = match known {
            Some(h) => h.expose_secret().to_string(),
            None => self.dummy_hash.clone(),
        };
        let key = cache_key(&user, &hash, &password);
        if let Some(verdict) = self.remembered(&key, known.is_some()) {
            return Ok(verdict);
        }
        let _admitted = self.admit(PeerKey::from(peer)).ok_or(QueueFull)?;
        let Ok(_slot) = self.bcrypt_slot.acquire().await else {
            return Ok(false);
        };
        // The same credential may have been checked while this one waited
        // (a browser's parallel first requests, a repeated guess).
        if let Some(verdict) = self.remembered(&key, known.is_some()) {
            return Ok(verdict);
        }
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        let ok = verified && known.is_some();
        let mut set = if ok {
            self.cache_lock()
        } else {
            lock(&self.failures)
        };
        if set.len() >= AUTH_CACHE_CAPACITY {
            set.clear();
        }
        set.insert(key);
        Ok(ok)
    }

    /// The cached verdict for `key`, if any. A success counts only for a
    /// known user (an unknown user's key is made with the dummy hash).
    fn remembered(&self, key: &[u8; 32], known: bool) -> Option<bool> {
        if known && self.cache_lock().contains(key) {
            return Some(true);
        }
        lock(&self.failures).contains(key).then_some(false)
    }

    /// A place in the verification queue for `peer`, released on drop;
    /// `None` when the queue is full in total or for `peer`.
    fn admit(&self, peer: PeerKey) -> Option<Admitted<'_>> {
        let mut pending = lock(&self.pending);
        let mine = pending.per_peer.get(&peer).copied().unwrap_or(0);
        if pending.total >= MAX_PENDING_CHECKS || mine >= MAX_PENDING_PER_PEER {
            return None;
        }
        pending.total += 1;
        pending.per_peer.insert(peer, mine + 1);
        Some(Admitted { auth: self, peer })
    }

    pub(super) fn cache_lock(&self) -> MutexGuard<'_, HashSet<[u8; 32]>> {
        lock(&self.cache)
    }
}

/// A place in the verification queue; dropping it (done, or the client went
/// away while waiting) frees the place.
struct Admitted<'a> {
    auth: &'a BasicAuth,
    peer: PeerKey,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut pending = lock(&self.auth.pending);
        pending.total = pending.total.saturating_sub(1);
        if let Some(n) = pending.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                pending.per_peer.remove(&self.peer);
            }
        }
    }
}

fn cache_key(user: &[u8], hash: &str, password: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash.as_bytes(), password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `Basic base64(user:password)` → (user, password).
pub(super) fn parse_basic(value: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(users: &[(&str, &str, u32)]) -> BasicAuth {
        let users = users
            .iter()
            .map(|(u, p, cost)| {
                let hash = bcrypt::hash(p, *cost).unwrap();
                (u.to_string(), SecretString::from(hash))
            })
            .collect();
        BasicAuth::new(users).unwrap()
    }

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[test]
    fn the_dummy_hash_has_the_highest_configured_cost() {
        let a = auth(&[("alice", "a", 4), ("zed", "z", 6), ("bob", "b", 5)]);
        let parts: bcrypt::HashParts = a.dummy_hash.parse().unwrap();
        assert_eq!(parts.get_cost(), 6);
    }

    #[test]
    fn ipv6_peers_are_grouped_by_their_64_prefix() {
        let key = |s: &str| PeerKey::from(s.parse::<IpAddr>().unwrap());
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }

    #[tokio::test]
    async fn wrong_guesses_are_remembered_apart_from_successes() {
        let a = auth(&[("alice", "s3cret", 4)]);
        let peer = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(
            a.verify(Some(&header("alice", "wrong")), peer).await,
            Ok(false)
        );
        assert_eq!(
            a.verify(Some(&header("nobody", "x")), peer).await,
            Ok(false)
        );
        assert_eq!(lock(&a.failures).len(), 2);
        assert!(
            a.cache_lock().is_empty(),
            "failures never enter the success cache"
        );
        assert_eq!(
            a.verify(Some(&header("alice", "s3cret")), peer).await,
            Ok(true)
        );
        assert_eq!(a.cache_lock().len(), 1);
        // Remembered verdicts need no place in the queue.
        let _held: Vec<_> = (0..MAX_PENDING_CHECKS)
            .map(|i| a.admit(PeerKey::V4(i as u32)).unwrap())
            .collect();
        assert_eq!(
            a.verify(Some(&header("alice", "s3cret")), peer).await,
            Ok(true)
        );
        assert_eq!(
            a.verify(Some(&header("alice", "wrong")), peer).await,
            Ok(false)
        );
        assert_eq!(
            a.verify(Some(&header("alice", "new guess")), peer).await,
            Err(QueueFull)
        );
    }

    #[test]
    fn the_queue_is_bounded_in_total_and_per_peer() {
        let a = auth(&[("alice", "s3cret", 4)]);
        let one = PeerKey::V4(1);
        let mut held: Vec<_> = (0..MAX_PENDING_PER_PEER)
            .map(|_| a.admit(one).expect("within the per-peer share"))
            .collect();
        assert!(a.admit(one).is_none(), "one address gets at most its share");
        for i in MAX_PENDING_PER_PEER..MAX_PENDING_CHECKS {
            held.push(a.admit(PeerKey::V4(i as u32 + 100)).expect("room in total"));
        }
        assert!(a.admit(PeerKey::V4(7)).is_none(), "the total is bounded");
        held.clear();
        assert_eq!(lock(&a.pending).total, 0);
        assert!(lock(&a.pending).per_peer.is_empty());
        assert!(a.admit(one).is_some(), "places are given back");
    }
}
