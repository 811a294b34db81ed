//! How the account's keys are listed: one refresh's pass over workspaces,
//! `/keys` pages and credits ([`Client::fetch_all`]), and the parallel pager
//! of one workspace's keys with its assembly in offset order.
//!
//! The API documents no page size for `/keys` (newer list endpoints default
//! to 50), so a listing never trusts one: it ends when a page asked from the
//! last key's position holds nothing past it. Pages overlap by one key, so a
//! key deleted mid-listing cannot make another vanish unseen
//! ([`continuity`](super::continuity)): such a shift is read past from one
//! page further back, or the workspace is listed again (at most
//! [`RELISTS`] times) before the refresh fails (`reason="pagination"`). A
//! page of keys already listed where new ones were due means the server
//! ignores `offset`: that fails the refresh too, rather than drop keys.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::continuity::{Broken, Continuity};
use super::error::{pagination, redact_keys, Endpoint, UpstreamError};
use super::organization::{MAX_PAGES, RELISTS};
use super::wire::{ApiKey, Credits};
use super::Client;
use crate::config::{is_uuid, Workspaces};

/// Everything one refresh learned from OpenRouter.
#[derive(Debug, Default)]
pub struct UpstreamData {
    /// Every listed key once, in listing order, with the workspace it was listed under.
    pub keys: Vec<ApiKey>,
    /// `None` when `/credits` could not be read (see `credits_error`).
    pub credits: Option<Credits>,
    /// Why `/credits` failed: the listing is still complete and published,
    /// only the account figures are unknown.
    pub credits_error: Option<UpstreamError>,
}

impl Client {
    /// One full pass: workspaces, every key page of every workspace, then
    /// credits. Fails whole if any listing call fails, so callers never see a
    /// partial listing; a failing `/credits` only leaves the credits unknown.
    pub async fn fetch_all(&self, workspaces: &Workspaces) -> Result<UpstreamData, UpstreamError> {
        let workspace_ids: Vec<Option<String>> = match workspaces {
            Workspaces::Only(entries) => self.resolve_workspaces(entries).await?,
            Workspaces::All => match self.list_workspaces().await? {
                Some(list) if !list.is_empty() => list.into_iter().map(|w| Some(w.id)).collect(),
                // No workspaces API here, or none listed: the default listing is everything.
                _ => vec![None],
            },
        };

        // Workspaces are listed side by side; the limiter bounds the calls.
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.limiter.limit()));
        let mut tasks = JoinSet::new();
        for (index, workspace) in workspace_ids.into_iter().enumerate() {
            let client = self.clone();
            let semaphore = Arc::clone(&semaphore);
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                (index, client.list_keys(workspace.as_deref()).await)
            });
        }
        let listing = async {
            let mut per_workspace = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                let (index, result) = joined.map_err(|e| UpstreamError::Transport {
                    endpoint: Endpoint::Keys,
                    message: format!("listing task failed: {e}"),
                })?;
                per_workspace.push((index, result?));
            }
            per_workspace.sort_by_key(|(index, _)| *index);
            Ok::<_, UpstreamError>(per_workspace)
        };
        // `/credits` goes out beside the listing: one round trip fewer.
        let (per_workspace, credits) = tokio::join!(listing, self.credits());
        let per_workspace = per_workspace?;

        // A key listed twice (offsets shift when keys are created mid-listing,
        // or a key moves between workspaces) counts once, where first listed.
        // The lists are joined into the first one, never copied whole.
        let mut lists = per_workspace.into_iter().map(|(_, listed)| listed);
        let mut keys = lists.next().unwrap_or_default();
        for listed in lists {
            keys.extend(listed);
        }
        let mut seen = Seen::with_capacity(keys.len());
        let first_listed: Vec<bool> = (0..keys.len()).map(|i| seen.insert(&keys, i)).collect();
        let mut first = first_listed.into_iter();
        keys.retain(|_| first.next().unwrap_or(false));
        let (credits, credits_error) = match credits {
            Ok(credits) => (Some(credits), None),
            Err(e) => (None, Some(e)),
        };
        Ok(UpstreamData {
            keys,
            credits,
            credits_error,
        })
    }

    /// Configured workspace entries as ids: UUIDs as they are, slugs looked
    /// up in the account's workspace list (never sent where an id is required).
    async fn resolve_workspaces(
        &self,
        entries: &[String],
    ) -> Result<Vec<Option<String>>, UpstreamError> {
        if entries.iter().all(|e| is_uuid(e)) {
            return Ok(entries.iter().cloned().map(Some).collect());
        }
        let listed = self.list_workspaces().await?.unwrap_or_default();
        entries
            .iter()
            .map(|entry| {
                if is_uuid(entry) {
                    return Ok(Some(entry.clone()));
                }
                listed
                    .iter()
                    .find(|w| w.slug.as_deref() == Some(entry.as_str()))
                    .map(|w| Some(w.id.clone()))
                    .ok_or_else(|| {
                        // A key pasted as a workspace is not echoed, even in `Debug`.
                        UpstreamError::UnknownWorkspace(redact_keys(entry).into_owned())
                    })
            })
            .collect()
    }

    /// Every key of one workspace (or the default one), disabled and
    /// expired keys included, each once. Listed again from the start when
    /// the list shifted under the listing in a way one page back could not
    /// mend; after [`RELISTS`] such tries the listing fails as `pagination`.
    pub async fn list_keys(&self, workspace: Option<&str>) -> Result<Vec<ApiKey>, UpstreamError> {
        let label = match workspace {
            Some(w) => format!("/keys?workspace_id={w}"),
            None => "/keys".to_string(),
        };
        let mut relists = 0;
        loop {
            match self.list_keys_once(workspace, &label).await? {
                Ok(keys) => return Ok(keys),
                Err(Broken::Shifted(message)) if relists < RELISTS => {
                    relists += 1;
                    warn!(listing = %redact_keys(&label), reason = %message, relists, "the key list shifted while it was paged; listing it again");
                }
                Err(Broken::Shifted(message)) => {
                    let message = format!("{message}; still so after {RELISTS} new listings");
                    return Err(pagination(&label, message));
                }
                Err(Broken::Repeats(message)) => return Err(pagination(&label, message)),
            }
        }
    }

    /// One listing of a workspace's keys; `Ok(Err(_))` when it broke.
    ///
    /// The first page alone shows the page size; the next offsets are then
    /// fetched ahead, up to the limiter's limit at once (growing from 1 by one
    /// per full page, so a small workspace costs what it did one page at a
    /// time), each from the last key of the page before. No new offset is
    /// issued once a page comes back short or empty. Pages are assembled in
    /// offset order, each once the key it overlaps is listed; a short page
    /// leaves a gap that is fetched from its last key. A page that does not
    /// hold the key listed last (keys deleted before it) is read past from
    /// one page further back, at most [`MAX_RESYNCS`] times.
    async fn list_keys_once(
        &self,
        workspace: Option<&str>,
        label: &str,
    ) -> Result<Result<Vec<ApiKey>, Broken>, UpstreamError> {
        let mut listing = Assembly::new(workspace);
        match listing.add(0, self.keys_page(workspace, 0).await?) {
            Ok(false) => {}
            Ok(true) => return Ok(Ok(listing.done())),
            Err(broken) => return Ok(Err(broken)),
        }
        let mut pages = PagesOut::new(self, workspace, &listing.continuity);
        let mut resyncs = 0;
        loop {
            pages.issue(listing.continuity.next_offset());
            if pages.asked > MAX_PAGES {
                return Err(pagination(label, format!("more than {MAX_PAGES} pages")));
            }
            if !pages.receive().await? {
                // Not reached: a page is always out here (the gap fill in `issue`).
                return Err(pagination(label, "no page left to fetch".into()));
            }
            while let Some((offset, page)) = pages.ready(listing.continuity.next_offset()) {
                let mut added = listing.add(offset, page);
                if matches!(added, Err(Broken::Shifted(_))) && resyncs < MAX_RESYNCS {
                    // The key listed last moved down: find it one page back.
                    resyncs += 1;
                    let back = listing.continuity.one_page_back();
                    debug!(listing = %redact_keys(label), offset, back, "the key list shifted; reading one page back");
                    added = listing.add(back, self.keys_page(workspace, back).await?);
                }
                match added {
                    Ok(false) => {}
                    // Pages still out past the end: see `PagesOut`.
                    Ok(true) => return Ok(Ok(listing.done())),
                    Err(broken) => return Ok(Err(broken)),
                }
            }
        }
    }

    /// One `GET /keys` page at `offset`.
    async fn keys_page(
        &self,
        workspace: Option<&str>,
        offset: usize,
    ) -> Result<Vec<ApiKey>, UpstreamError> {
        let mut query = vec![
            ("include_disabled", "true".to_string()),
            ("offset", offset.to_string()),
        ];
        if let Some(ws) = workspace {
            query.push(("workspace_id", ws.to_string()));
        }
        // Newer OpenRouter leaves expired keys out unless asked; their spend
        // this month is still billed spend.
        query.push(("include_expired", "true".to_string()));
        let body = self.get(Endpoint::Keys, "/keys", &query).await?;
        self.stats.key_pages.fetch_add(1, Ordering::Relaxed);
        // What `wire::parse_keys_page` (the fuzzed decoder) runs, counted.
        self.decode(Endpoint::Keys, &body)
    }
}

/// Reads one page back past a shift at most this many times per listing
/// (each costs one call); past that, the workspace is listed again.
const MAX_RESYNCS: usize = 64;

/// The page fetches of one listing after its first page: which offsets are
/// out, which pages are in but not yet assembled, and how many may be out.
///
/// Pages still out when the listing ends are not cut off: dropped (the
/// listing ended, failed or was itself dropped at the deadline), this lets
/// calls already sent finish in the background (keeping their place in the
/// budget until answered, so the server never sees more than the limit) and
/// makes the others return before they are sent.
struct PagesOut {
    tasks: JoinSet<(usize, Result<Vec<ApiKey>, UpstreamError>)>,
    stop: Arc<AtomicBool>,
    /// The client the pages go out with: its calls not yet sent stop with `stop`.
    pager: Client,
    workspace: Option<String>,
    /// The first page's length: the page size.
    step: usize,
    /// How far apart the pages are asked: the page size less the one key
    /// each page shares with the one before it.
    stride: usize,
    /// The most pages out or waiting at once (the limiter's limit), and how many now.
    most: usize,
    window: usize,
    next_offset: usize,
    /// False once a page came back short: no new offset is issued.
    issuing: bool,
    /// Pages asked for, the first included.
    asked: usize,
    in_flight: BTreeSet<usize>,
    arrived: BTreeMap<usize, Vec<ApiKey>>,
}

impl Drop for PagesOut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.detach_all();
    }
}

impl PagesOut {
    fn new(client: &Client, workspace: Option<&str>, listed: &Continuity) -> PagesOut {
        let stop = Arc::new(AtomicBool::new(false));
        let step = listed.step();
        let stride = step - listed.overlap();
        PagesOut {
            tasks: JoinSet::new(),
            pager: Client {
                cancel: Some(Arc::clone(&stop)),
                ..client.clone()
            },
            stop,
            workspace: workspace.map(str::to_string),
            step,
            stride,
            most: client.limiter.limit().max(1),
            window: 1,
            next_offset: stride,
            issuing: true,
            asked: 1,
            in_flight: BTreeSet::new(),
            arrived: BTreeMap::new(),
        }
    }

    fn spawn(&mut self, offset: usize) {
        let client = self.pager.clone();
        let workspace = self.workspace.clone();
        self.tasks
            .spawn(async move { (offset, client.keys_page(workspace.as_deref(), offset).await) });
        self.in_flight.insert(offset);
        self.asked += 1;
    }

    /// Sends what is due once the next page is due at offset `next` (the
    /// last key listed): a gap (a short page before later ones) from `next`
    /// itself, then new offsets up to the window.
    fn issue(&mut self, next: usize) {
        let lowest = match (self.in_flight.first(), self.arrived.keys().next()) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(b).copied(),
        };
        if lowest.map_or(true, |o| o > next) && !self.in_flight.contains(&next) {
            self.spawn(next);
            if next >= self.next_offset {
                self.next_offset = next + self.stride;
            }
        }
        while self.issuing && self.in_flight.len() + self.arrived.len() < self.window {
            self.spawn(self.next_offset);
            self.next_offset += self.stride;
        }
    }

    /// Waits for the next page (`false`: none was out). A full page lets one
    /// more be out; a short one stops new offsets.
    async fn receive(&mut self) -> Result<bool, UpstreamError> {
        let Some(joined) = self.tasks.join_next().await else {
            return Ok(false);
        };
        let (offset, page) = joined.map_err(|e| UpstreamError::Transport {
            endpoint: Endpoint::Keys,
            message: format!("listing task failed: {e}"),
        })?;
        let page = page?;
        self.in_flight.remove(&offset);
        if page.len() < self.step {
            self.issuing = false;
        } else {
            self.window = (self.window + 1).min(self.most);
        }
        self.arrived.insert(offset, page);
        Ok(true)
    }

    /// The lowest page in, once it starts at or before `next` (the offset
    /// the next page is due at).
    fn ready(&mut self, next: usize) -> Option<(usize, Vec<ApiKey>)> {
        let entry = self.arrived.first_entry()?;
        (*entry.key() <= next).then(|| entry.remove_entry())
    }
}

/// Which keys of a list have been seen, by hash: positions into the list,
/// so that no hash is copied (100k copied hashes were ~12 MB per listing).
/// Hashed with hashbrown's seeded foldhash: SipHash made these lookups a
/// tenth of a 100k-key refresh's CPU.
#[derive(Default)]
struct Seen {
    positions: hashbrown::HashTable<usize>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Seen {
    fn with_capacity(keys: usize) -> Seen {
        Seen {
            positions: hashbrown::HashTable::with_capacity(keys),
            hasher: Default::default(),
        }
    }

    /// Records `keys[at]` unless a key with its hash was recorded before
    /// (`true`: first seen). `keys` is the list every recorded position points into.
    fn insert(&mut self, keys: &[ApiKey], at: usize) -> bool {
        let hash = keys[at].hash.as_ref();
        let hasher = &self.hasher;
        let h = hasher.hash_one(hash);
        if self
            .positions
            .find(h, |&i| &*keys[i].hash == hash)
            .is_some()
        {
            return false;
        }
        self.positions
            .insert_unique(h, at, |&i| hasher.hash_one(keys[i].hash.as_ref()));
        true
    }
}

/// The keys of one workspace assembled in offset order.
struct Assembly<'a> {
    keys: Vec<ApiKey>,
    seen: Seen,
    continuity: Continuity,
    workspace: Option<&'a str>,
}

impl<'a> Assembly<'a> {
    fn new(workspace: Option<&'a str>) -> Assembly<'a> {
        Assembly {
            keys: Vec::new(),
            seen: Seen::default(),
            continuity: Continuity::default(),
            workspace,
        }
    }

    /// Adds the page at `offset` (never past `continuity.next_offset()`).
    /// `Ok(true)`: the listing is complete. A page that broke the listing
    /// adds nothing.
    fn add(&mut self, offset: usize, page: Vec<ApiKey>) -> Result<bool, Broken> {
        let from = self
            .continuity
            .locate(offset, page.iter().map(|k| &*k.hash))?;
        let len = page.len();
        let page_last = page.last().map(|k| k.hash.clone());
        let before = self.keys.len();
        let mut added = 0;
        for (at, key) in page.into_iter().enumerate() {
            self.keys.push(key);
            if !self.seen.insert(&self.keys, self.keys.len() - 1) {
                self.keys.pop();
            } else if at >= from {
                added += 1;
            }
        }
        for key in &mut self.keys[before..] {
            if key.workspace_id.is_none() {
                key.workspace_id = self.workspace.map(Box::from);
            }
        }
        self.continuity
            .advance(offset, len, from, page_last.as_deref(), added)
    }

    fn done(self) -> Vec<ApiKey> {
        debug!(
            workspace = self.workspace.unwrap_or("default"),
            keys = self.keys.len(),
            "listed keys"
        );
        self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(hashes: &[&str]) -> Vec<ApiKey> {
        hashes
            .iter()
            .map(|h| serde_json::from_str(&format!(r#"{{"hash":"{h}"}}"#)).unwrap())
            .collect()
    }

    #[test]
    fn pages_assemble_from_the_last_key_and_end_on_it_alone() {
        let mut a = Assembly::new(Some("ws"));
        assert_eq!(a.add(0, listed(&["a", "b"])), Ok(false));
        assert_eq!(a.continuity.next_offset(), 1);
        // A page holding the last key further on (a key created before it): repeats are fine.
        assert_eq!(a.add(1, listed(&["a", "b", "c"])), Ok(false));
        assert_eq!(a.continuity.covered(), 4);
        // A page without the last key (keys deleted before it) breaks the listing.
        assert!(matches!(a.add(3, Vec::new()), Err(Broken::Shifted(_))));
        assert!(matches!(
            a.add(3, listed(&["d", "e"])),
            Err(Broken::Shifted(_))
        ));
        // A full page of repeats where new keys were due: offset ignored.
        assert!(matches!(
            a.add(3, listed(&["b", "c"])),
            Err(Broken::Repeats(_))
        ));
        assert_eq!(a.add(3, listed(&["c"])), Ok(true));
        let keys = a.done();
        let hashes: Vec<&str> = keys.iter().map(|k| k.hash.as_ref()).collect();
        assert_eq!(hashes, ["a", "b", "c"]);
        assert!(keys.iter().all(|k| k.workspace_id.as_deref() == Some("ws")));
    }

    #[test]
    fn workspace_ids_and_slugs_are_told_apart() {
        assert!(is_uuid("550e8400-e29b-41d4-a716-446655440000"));
        assert!(!is_uuid("production"));
        assert!(!is_uuid("550e8400-e29b-41d4-a716-44665544000g"));
        assert!(!is_uuid("550e8400e29b41d4a716446655440000"));
    }
}
