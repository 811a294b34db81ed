//! The simulated account: its workspaces and keys ([`SimKey`], shaped freely
//! by tests), credits, activity rows, organization lists, and the switches
//! ([`SimState`]) that turn on the API's known odd shapes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

#[cfg(any(test, feature = "testing"))]
use super::faults::Fault;
use super::http::{SimRequest, WORKSPACES_MAX_LIMIT};

/// Keys per `/keys` page unless [`SimState::keys_page_size`] says otherwise:
/// the 100 that OpenRouter's guide prose mentions. The simulator owns this
/// number; the client must not rely on it (issue 12: stop on an empty page).
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// `limit`, `limit_remaining`, `limit_reset`: nullable per the spec.
pub const KEY_LIMIT_FIELDS: &[&str] = &["limit", "limit_remaining", "limit_reset"];
/// Date fields of a listed key.
pub const KEY_DATE_FIELDS: &[&str] = &["created_at", "updated_at", "expires_at"];
/// Every BYOK field of a listed key.
pub const KEY_BYOK_FIELDS: &[&str] = &[
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
    "include_byok_in_limit",
];
/// Identity fields the spec marks required and non-null, which some clients type as nullable.
pub const KEY_IDENTITY_FIELDS: &[&str] = &["name", "label", "disabled"];

/// One key as the simulated server lists it: its workspace and its JSON object,
/// which tests may shape freely (missing fields, odd values).
#[derive(Debug, Clone)]
pub struct SimKey {
    pub workspace: String,
    pub fields: Map<String, Value>,
    /// Further workspaces whose `/keys` listing also returns this key (a key
    /// listed twice must count once).
    pub also_listed_in: Vec<String>,
}

impl SimKey {
    /// A key with every field of the current API and zero usage.
    pub fn new(workspace: &str, hash: &str, name: &str) -> SimKey {
        let fields = json!({
            "hash": hash, "name": name, "label": format!("sk-or-v1-{}...{}", &hash[..3.min(hash.len())], "abcd"),
            "disabled": false, "limit": null, "limit_remaining": null, "limit_reset": null,
            "include_byok_in_limit": false,
            "usage": 0.0, "usage_daily": 0.0, "usage_weekly": 0.0, "usage_monthly": 0.0,
            "byok_usage": 0.0, "byok_usage_daily": 0.0, "byok_usage_weekly": 0.0, "byok_usage_monthly": 0.0,
            "created_at": "2025-08-24T10:30:00Z", "updated_at": null, "creator_user_id": null,
            "workspace_id": workspace, "expires_at": null,
        });
        let Value::Object(fields) = fields else {
            unreachable!("json! of an object literal is an object")
        };
        SimKey {
            workspace: workspace.to_string(),
            fields,
            also_listed_in: Vec::new(),
        }
    }

    /// Sets `field` to JSON `null`.
    pub fn null(self, field: &str) -> SimKey {
        self.set(field, Value::Null)
    }

    /// Sets each of `fields` to JSON `null` (e.g. [`KEY_BYOK_FIELDS`]).
    pub fn nulls(self, fields: &[&str]) -> SimKey {
        fields.iter().fold(self, |key, f| key.null(f))
    }

    /// Removes each of `fields` from the JSON object.
    pub fn without_all(self, fields: &[&str]) -> SimKey {
        fields.iter().fold(self, |key, f| key.without(f))
    }

    /// Also lists this key under `workspace` (its `workspace_id` field stays the first).
    pub fn also_in(mut self, workspace: &str) -> SimKey {
        self.also_listed_in.push(workspace.to_string());
        self
    }

    pub(super) fn listed_in(&self, workspace: &str) -> bool {
        self.workspace == workspace || self.also_listed_in.iter().any(|w| w == workspace)
    }

    /// Whether the key's `expires_at` (RFC 3339) is at or before `now`.
    pub(super) fn expired_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.fields
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .is_some_and(|at| at <= now)
    }

    pub fn set(mut self, field: &str, value: Value) -> SimKey {
        self.fields.insert(field.to_string(), value);
        self
    }

    pub fn without(mut self, field: &str) -> SimKey {
        self.fields.remove(field);
        self
    }

    /// Sets usage for all windows: daily, weekly, monthly, lifetime.
    pub fn usage(self, daily: f64, weekly: f64, monthly: f64, lifetime: f64) -> SimKey {
        self.set("usage_daily", json!(daily))
            .set("usage_weekly", json!(weekly))
            .set("usage_monthly", json!(monthly))
            .set("usage", json!(lifetime))
    }

    pub fn byok(self, daily: f64, weekly: f64, monthly: f64, lifetime: f64) -> SimKey {
        self.set("byok_usage_daily", json!(daily))
            .set("byok_usage_weekly", json!(weekly))
            .set("byok_usage_monthly", json!(monthly))
            .set("byok_usage", json!(lifetime))
    }

    pub fn hash(&self) -> &str {
        self.fields
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn num(&self, field: &str) -> Option<f64> {
        self.fields.get(field).and_then(Value::as_f64)
    }
}

/// The simulated account.
#[derive(Debug, Clone)]
pub struct SimState {
    pub management_key: String,
    /// (id, name); the first is the default workspace (listed by `/keys`
    /// without `workspace_id`). Each has a slug: [`SimState::slug_of`].
    pub workspaces: Vec<(String, String)>,
    /// When false, `/workspaces` answers 404 like an older API (same as
    /// `workspaces_mode = WorkspacesMode::Status(404)`).
    pub workspaces_api: bool,
    /// What `GET /workspaces` answers.
    pub workspaces_mode: WorkspacesMode,
    /// When false, `GET /workspaces` leaves the default workspace (the first) out.
    pub list_default_workspace: bool,
    /// Most workspaces per `/workspaces` page, whatever `limit` asks
    /// (default [`WORKSPACES_MAX_LIMIT`]). `total_count` is always the full count.
    pub workspaces_page_size: usize,
    /// Keys per `/keys` page (default [`DEFAULT_PAGE_SIZE`]). The client sends
    /// no `limit`; if one is sent it can only make pages smaller.
    pub keys_page_size: usize,
    /// List keys most recent first (reverse insertion order), as the real API does.
    pub newest_first: bool,
    pub keys: Vec<SimKey>,
    /// Items to delete while their list is paged ([`Deletion`]): each fires
    /// once, in order.
    pub deletions: Vec<Deletion>,
    pub total_credits: f64,
    pub total_usage: f64,
    /// Scripted faults, tried in order (tests only: the `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    pub faults: Vec<Fault>,
    /// Every request's path and query, in order.
    pub requests: Vec<String>,
    /// Every request's path and query with when it was answered (after
    /// `latency`), in order: `requests` with times.
    pub answered: Vec<(std::time::Instant, String)>,
    /// `GET /activity` rows per key hash (`date`, `model`, `usage`, …). A
    /// `date` may carry a time part (`"2026-07-27 00:00:00"`, as live accounts
    /// send it): the day is its first 10 characters. A hash that is not a
    /// listed key answers 404, as upstream does for a deleted key, but its
    /// rows stay the account's: the undated call without `api_key_hash`
    /// serves every hash's rows. So rows under a hash never in `keys` are
    /// spend of a key the exporter never listed (created and deleted between
    /// two listings): the statements' unattributed difference.
    pub activity: HashMap<String, Vec<Value>>,
    /// `GET /activity` for these key hashes answers this status instead.
    pub activity_failures: HashMap<String, u16>,
    /// The account-wide `GET /activity` (no `api_key_hash`) answers this
    /// status instead; the per-key calls are unaffected.
    pub account_activity_failure: Option<u16>,
    /// The UTC day `/activity` takes for today (its window is the 30 days
    /// before it); `None`: the wall clock's. A test that moves the
    /// exporter's clock across a month boundary moves this with it.
    pub today: Option<chrono::NaiveDate>,
    /// Rows (without `date`) that every listed key not in `activity` answers
    /// for each of its 30 completed days: a dense account for benchmarks.
    pub activity_every_day: Vec<Value>,
    /// The hashes of `keys`, for an account whose keys never change (the
    /// benchmarks' fake server at 100k keys): `/activity` then looks a hash
    /// up here instead of scanning every key. `None` (tests that add and
    /// delete keys): the scan.
    pub key_hashes: Option<std::collections::HashSet<String>>,
    /// Inference keys' secrets → the hash of the key they belong to (`GET /key`).
    pub inference_keys: HashMap<String, String>,
    /// Every request waits this long before it is answered (faults included):
    /// a network round trip. Zero by default.
    pub latency: Duration,
    /// Requests being handled right now (counted from arrival to answer).
    pub in_flight: usize,
    /// The most requests ever handled at once; a test may reset it to 0.
    pub max_in_flight: usize,
    /// `GET /organization/members` items ([`member_json`](super::member_json)).
    pub members: Vec<Value>,
    /// `GET /guardrails` items ([`guardrail_json`](super::guardrail_json)).
    pub guardrails: Vec<Value>,
    /// `GET /guardrails/assignments/keys` items ([`assignment_json`](super::assignment_json)).
    pub guardrail_key_assignments: Vec<Value>,
    /// Workspace id → `GET /workspaces/{id}/budgets` items ([`budget_json`](super::budget_json)).
    pub workspace_budgets: HashMap<String, Vec<Value>>,
    /// Most items per page of the member and guardrail lists, whatever `limit` asks.
    pub org_page_size: usize,
    /// When false, the management key is an ordinary key: `GET /key` says
    /// `is_management_key: false` and the management endpoints answer 401.
    pub management_key_is_management: bool,
}

impl SimState {
    pub fn new(management_key: &str) -> SimState {
        SimState {
            management_key: management_key.to_string(),
            workspaces: Vec::new(),
            workspaces_api: true,
            workspaces_mode: WorkspacesMode::List,
            list_default_workspace: true,
            workspaces_page_size: WORKSPACES_MAX_LIMIT,
            keys_page_size: DEFAULT_PAGE_SIZE,
            newest_first: false,
            keys: Vec::new(),
            deletions: Vec::new(),
            total_credits: 0.0,
            total_usage: 0.0,
            #[cfg(any(test, feature = "testing"))]
            faults: Vec::new(),
            requests: Vec::new(),
            answered: Vec::new(),
            activity: Default::default(),
            activity_failures: Default::default(),
            account_activity_failure: None,
            today: None,
            activity_every_day: Vec::new(),
            key_hashes: None,
            inference_keys: Default::default(),
            latency: Duration::ZERO,
            in_flight: 0,
            max_in_flight: 0,
            members: Vec::new(),
            guardrails: Vec::new(),
            guardrail_key_assignments: Vec::new(),
            workspace_budgets: Default::default(),
            org_page_size: WORKSPACES_MAX_LIMIT,
            management_key_is_management: true,
        }
    }

    pub fn key_mut(&mut self, hash: &str) -> Option<&mut SimKey> {
        self.keys.iter_mut().find(|k| k.hash() == hash)
    }

    /// Makes every request to `path` (e.g. `"/credits"`) answer `status` from now on.
    #[cfg(any(test, feature = "testing"))]
    pub fn fail_forever(&mut self, path: &str, status: u16) {
        self.faults.push(Fault::status(path, status));
    }

    /// The slug of workspace `id`: its name, lowercased, spaces as dashes
    /// (the default workspace's real slug is `default`).
    pub fn slug_of(&self, id: &str) -> Option<String> {
        self.workspaces
            .iter()
            .find(|(w, _)| w == id)
            .map(|(_, name)| slugify(name))
    }

    /// The workspace whose id or slug is `wanted`, as `GET /workspaces/{id}` finds it.
    pub(super) fn workspace(&self, wanted: &str) -> Option<&(String, String)> {
        self.workspaces
            .iter()
            .find(|(id, name)| id == wanted || slugify(name) == wanted)
    }

    /// Records a request as it arrives: [`SimState::requests`] and [`SimState::answered`].
    pub(super) fn record(&mut self, request: &SimRequest) {
        let seen = request.path_and_query.clone();
        self.answered
            .push((std::time::Instant::now(), seen.clone()));
        self.requests.push(seen);
    }

    /// The deletion hook: the first [`Deletion`] due deletes its item as a
    /// request to its path asking from its offset or beyond arrives (before
    /// the request is answered).
    pub(super) fn delete_on_arrival(&mut self, request: &SimRequest) {
        let offset: usize = request
            .params
            .get("offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let Some(due) = self.deletions.first() else {
            return;
        };
        if due.path != request.path || offset < due.offset {
            return;
        }
        let Deletion { id, .. } = self.deletions.remove(0);
        let has_id = |item: &Value| item.get("id").and_then(Value::as_str) == Some(id.as_str());
        match request.path.as_str() {
            "/keys" => self.keys.retain(|k| k.hash() != id),
            "/workspaces" => self.workspaces.retain(|(w, _)| *w != id),
            "/organization/members" => self.members.retain(|m| !has_id(m)),
            "/guardrails" => self.guardrails.retain(|g| !has_id(g)),
            "/guardrails/assignments/keys" => self.guardrail_key_assignments.retain(|a| !has_id(a)),
            _ => {}
        }
    }

    /// Sum of `usage` over all keys: what `/credits` would report with nothing deleted.
    pub fn keys_lifetime_usage(&self) -> f64 {
        self.keys.iter().filter_map(|k| k.num("usage")).sum()
    }
}

/// An item deleted while its list is paged: when the first request to
/// `path` (`/keys`, `/workspaces`, `/organization/members`, `/guardrails`,
/// `/guardrails/assignments/keys`) asking from `offset` or beyond arrives,
/// the item `id` (a key's hash, or the `id` of a workspace or list item) is
/// deleted before that request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub path: String,
    pub offset: usize,
    pub id: String,
}

impl Deletion {
    pub fn new(path: &str, offset: usize, id: &str) -> Deletion {
        Deletion {
            path: path.to_string(),
            offset,
            id: id.to_string(),
        }
    }
}

/// What `GET /workspaces` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkspacesMode {
    /// The workspaces, paged, with `total_count`.
    #[default]
    List,
    /// `{"data": [], "total_count": 0}`.
    Empty,
    /// An OpenRouter error body with this status (403, 404, 500, …), forever.
    Status(u16),
}

pub(super) fn slugify(name: &str) -> String {
    name.trim().to_lowercase().replace(char::is_whitespace, "-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::is_uuid;

    #[test]
    fn uuids_and_slugs() {
        assert!(is_uuid("11111111-1111-4111-8111-111111111111"));
        assert!(is_uuid("ABCDEF01-1111-4111-8111-111111111111"));
        assert!(!is_uuid("default"));
        assert!(!is_uuid("11111111-1111-4111-8111-11111111111"));
        assert_eq!(slugify("Research Lab"), "research-lab");
        let mut state = SimState::new("k");
        state.workspaces = vec![("w".into(), "Default".into())];
        assert_eq!(state.slug_of("w").as_deref(), Some("default"));
        assert_eq!(state.slug_of("x"), None);
    }

    #[test]
    fn key_shaping_helpers() {
        let key = SimKey::new("ws", "abcdef", "n")
            .nulls(KEY_BYOK_FIELDS)
            .without_all(KEY_DATE_FIELDS)
            .null("label")
            .also_in("other");
        assert_eq!(key.fields["byok_usage"], Value::Null);
        assert_eq!(key.fields["label"], Value::Null);
        assert!(!key.fields.contains_key("created_at"));
        assert!(key.listed_in("ws") && key.listed_in("other") && !key.listed_in("third"));
    }
}
