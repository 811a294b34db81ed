//! The account's structure, read at a slower cadence than keys
//! (`organization_refresh_intervals`): workspace slugs, member emails,
//! guardrail caps and their assignments, workspace budgets, and which of
//! those lists are stale. Converted from the wire once, in the `set_*` calls.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::upstream::{Guardrail, GuardrailKeyAssignment, Member, Workspace, WorkspaceBudget};

/// The slug the `workspace` label shows for keys listed without a workspace id.
pub const DEFAULT_WORKSPACE: &str = "default";

/// The lists read at a slower cadence than keys (`organization_refresh_intervals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrgList {
    Workspaces,
    Members,
    Guardrails,
    GuardrailAssignments,
    WorkspaceBudgets,
}

impl OrgList {
    pub const ALL: [OrgList; 5] = [
        OrgList::Workspaces,
        OrgList::Members,
        OrgList::Guardrails,
        OrgList::GuardrailAssignments,
        OrgList::WorkspaceBudgets,
    ];

    /// The `list` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OrgList::Workspaces => "workspaces",
            OrgList::Members => "members",
            OrgList::Guardrails => "guardrails",
            OrgList::GuardrailAssignments => "guardrail_assignments",
            OrgList::WorkspaceBudgets => "workspace_budgets",
        }
    }
}

/// A spending cap OpenRouter enforces (a guardrail or a workspace budget).
#[derive(Debug, Clone, PartialEq)]
pub struct Cap {
    /// The guardrail's name (its id when unnamed), or the budget's workspace slug.
    pub name: String,
    pub limit_usd: f64,
    /// daily / weekly / monthly, or `never` (a lifetime cap).
    pub reset: String,
}

fn reset_label(interval: Option<String>) -> String {
    interval
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "never".to_string())
}

/// The account's structure, as last read: each list keeps its last good
/// value when a read fails (and is then marked stale). `None` = never read.
#[derive(Debug, Clone, Default)]
pub struct Organization {
    /// Workspace UUID (lowercased) → slug.
    pub workspace_slugs: Option<HashMap<String, String>>,
    /// Member id → email (lowercased).
    pub member_emails: Option<HashMap<String, String>>,
    /// Guardrail id → its cap (guardrails without `limit_usd` cap nothing and are left out).
    pub guardrail_caps: Option<HashMap<String, Cap>>,
    /// Key hash (lowercased) → guardrail ids assigned to it.
    pub key_guardrails: Option<HashMap<String, Vec<String>>>,
    /// Workspace UUID (lowercased) → its budgets (name = the workspace slug).
    pub workspace_budgets: Option<BTreeMap<String, Vec<Cap>>>,
    /// The lists whose last read failed (their last good value is kept).
    pub stale: BTreeSet<OrgList>,
    /// The lists ever attempted (their staleness is published).
    pub attempted: BTreeSet<OrgList>,
}

impl Organization {
    pub fn set_workspaces(&mut self, workspaces: Vec<Workspace>) {
        self.workspace_slugs = Some(
            workspaces
                .into_iter()
                .filter_map(|w| {
                    Some((w.id.to_ascii_lowercase(), w.slug.filter(|s| !s.is_empty())?))
                })
                .collect(),
        );
    }

    pub fn set_members(&mut self, members: Vec<Member>) {
        self.member_emails = Some(
            members
                .into_iter()
                .filter(|m| !m.email.is_empty())
                .map(|m| (m.id, m.email.trim().to_lowercase()))
                .collect(),
        );
    }

    pub fn set_guardrails(&mut self, guardrails: Vec<Guardrail>) {
        self.guardrail_caps = Some(
            guardrails
                .into_iter()
                .filter_map(|g| {
                    let limit = g.limit_usd.filter(|l| l.is_finite())?;
                    let name = if g.name.is_empty() {
                        g.id.clone()
                    } else {
                        g.name
                    };
                    Some((
                        g.id,
                        Cap {
                            name,
                            limit_usd: limit,
                            reset: reset_label(g.reset_interval),
                        },
                    ))
                })
                .collect(),
        );
    }

    pub fn set_guardrail_assignments(&mut self, assignments: Vec<GuardrailKeyAssignment>) {
        let mut map: HashMap<String, Vec<String>> = Default::default();
        for a in assignments {
            map.entry(a.key_hash.to_ascii_lowercase())
                .or_default()
                .push(a.guardrail_id);
        }
        self.key_guardrails = Some(map);
    }

    /// Budgets per workspace id; slugs are looked up when published.
    pub fn set_workspace_budgets(&mut self, budgets: Vec<WorkspaceBudget>) {
        let mut map: BTreeMap<String, Vec<Cap>> = Default::default();
        for b in budgets.into_iter().filter(|b| b.limit_usd.is_finite()) {
            let id = b.workspace_id.to_ascii_lowercase();
            map.entry(id.clone()).or_default().push(Cap {
                name: id,
                limit_usd: b.limit_usd,
                reset: reset_label(b.reset_interval),
            });
        }
        self.workspace_budgets = Some(map);
    }

    /// Records the outcome of reading `list`.
    pub fn mark(&mut self, list: OrgList, ok: bool) {
        self.attempted.insert(list);
        if ok {
            self.stale.remove(&list);
        } else {
            self.stale.insert(list);
        }
    }

    /// The `workspace` label of a key: its workspace's slug; `default` when it
    /// was listed without a workspace id; `None` while the slug is unknown.
    pub fn workspace_slug<'a>(&'a self, workspace_id: Option<&'a str>) -> Option<&'a str> {
        let Some(id) = workspace_id else {
            return Some(DEFAULT_WORKSPACE);
        };
        let slugs = self.workspace_slugs.as_ref()?;
        match slugs.get(id) {
            Some(slug) => Some(slug.as_str()),
            None => slugs.get(&id.to_ascii_lowercase()).map(String::as_str),
        }
    }

    /// The email of the member who created a key, when known.
    pub fn creator_email(&self, creator_user_id: Option<&str>) -> Option<&str> {
        self.member_emails
            .as_ref()?
            .get(creator_user_id?)
            .map(String::as_str)
    }

    /// The guardrail caps assigned to key `hash`, in assignment order.
    pub fn key_caps(&self, hash: &str) -> Vec<&Cap> {
        let (Some(assigned), Some(caps)) = (&self.key_guardrails, &self.guardrail_caps) else {
            return Vec::new();
        };
        let found = match assigned.get(hash) {
            Some(ids) => ids,
            None => match assigned.get(&hash.to_ascii_lowercase()) {
                Some(ids) => ids,
                None => return Vec::new(),
            },
        };
        found.iter().filter_map(|id| caps.get(id)).collect()
    }

    /// The budgets of a key's workspace.
    pub fn budgets_of(&self, workspace_id: Option<&str>) -> &[Cap] {
        workspace_id
            .and_then(|id| {
                self.workspace_budgets
                    .as_ref()?
                    .get(&id.to_ascii_lowercase())
            })
            .map_or(&[], Vec::as_slice)
    }
}
