//! HTTP basic auth from the web config: `Authorization: Basic` checked
//! against bcrypt hashes, with a bounded cache of recent successes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use hyper::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use super::AUTH_CACHE_CAPACITY;

/// Checks `Authorization: Basic` against bcrypt hashes, remembering successes.
pub struct BasicAuth {
    pub(super) users: HashMap<String, SecretString>,
    /// Verified for unknown users, so a wrong user name costs as long as a wrong password.
    dummy_hash: String,
    /// SHA-256 of (user, hash, password) of successful verifications.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// bcrypt is deliberately slow: one verification at a time keeps a flood
    /// of guesses from taking every core.
    bcrypt_slot: tokio::sync::Semaphore,
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
        let mut cost = None;
        for (user, hash) in &users {
            // bcrypt's own error quotes the value, which may be a plaintext password.
            let parts: bcrypt::HashParts = hash.expose_secret().parse().map_err(|_| {
                format!(
                    "basic_auth_users.{user}: not a bcrypt hash (expected \"$2y$\" or \"$2b$\", \
                     a cost and 53 characters); create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                )
            })?;
            if !(4..=31).contains(&parts.get_cost()) {
                return Err(format!(
                    "basic_auth_users.{user}: bcrypt cost {} is outside 4..31",
                    parts.get_cost()
                ));
            }
            cost.get_or_insert(parts.get_cost());
        }
        let dummy_hash = bcrypt::hash("not a real password", cost.unwrap_or(10))
            .map_err(|e| format!("basic_auth_users: cannot prepare bcrypt: {e}"))?;
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            dummy_hash,
            cache: Mutex::new(HashSet::new()),
            bcrypt_slot: tokio::sync::Semaphore::new(1),
        })
    }

    /// True when `authorization` carries the right user name and password.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get(u));
        let hash = match known {
            Some(h) => h.expose_secret().to_string(),
            None => self.dummy_hash.clone(),
        };
        let key = cache_key(&user, &hash, &password);
        if known.is_some() && self.cache_lock().contains(&key) {
            return true;
        }
        let Ok(_slot) = self.bcrypt_slot.acquire().await else {
            return false;
        };
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        let ok = verified && known.is_some();
        if ok {
            let mut cache = self.cache_lock();
            if cache.len() >= AUTH_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }

    pub(super) fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
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
