//! Workspace identifiers: `openrouter.workspaces` and `workspace:` selectors
//! name a workspace by UUID or by slug, and only a UUID can filter `/keys`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workspaces {
    All,
    /// The entries as written (trimmed), in file order, each a workspace UUID
    /// or slug; [`WorkspaceRef::parse`] tells which.
    Only(Vec<String>),
}

impl Workspaces {
    /// The configured entries classified as UUID or slug; `None` for `all`.
    /// A slug must be resolved (e.g. `GET /workspaces/{slug}`, or the
    /// `/workspaces` listing's `slug` field) before it is used as
    /// `/keys?workspace_id=`, which the spec types `format: uuid`.
    #[cfg(test)]
    pub fn refs(&self) -> Option<Vec<WorkspaceRef>> {
        match self {
            Workspaces::All => None,
            Workspaces::Only(entries) => {
                Some(entries.iter().map(|e| WorkspaceRef::parse(e)).collect())
            }
        }
    }
}

/// One `openrouter.workspaces` entry: a workspace UUID or a workspace slug.
///
/// OpenRouter's `GET /workspaces/{id}` accepts either, but `GET /keys`'s
/// `workspace_id` filter takes only the UUID, so slugs need resolving first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkspaceRef {
    /// A workspace UUID in canonical 8-4-4-4-12 form, lowercased.
    Id(String),
    /// Anything else: a workspace slug such as `default` or `research-lab`
    /// (as written; slugs are matched exactly).
    Slug(String),
}

impl WorkspaceRef {
    /// Classifies one entry (surrounding whitespace ignored). Never fails:
    /// whether a slug is well formed is checked by [`WorkspaceRef::slug_problem`].
    pub fn parse(entry: &str) -> WorkspaceRef {
        let entry = entry.trim();
        if is_uuid(entry) {
            WorkspaceRef::Id(entry.to_ascii_lowercase())
        } else {
            WorkspaceRef::Slug(entry.to_string())
        }
    }

    /// The UUID or the slug, as the API takes it.
    pub fn as_str(&self) -> &str {
        match self {
            WorkspaceRef::Id(s) | WorkspaceRef::Slug(s) => s,
        }
    }

    /// Why this entry cannot be a slug (`None` for UUIDs and good slugs):
    /// slugs are letters, digits, `-`, `_` and `.`, so they fit a URL path unescaped.
    pub fn slug_problem(&self) -> Option<String> {
        let WorkspaceRef::Slug(slug) = self else {
            return None;
        };
        if slug.is_empty() {
            return Some("workspace id is empty".to_string());
        }
        let ok = slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        (!ok).then(|| {
            format!(
                "{slug:?} is neither a workspace UUID (8-4-4-4-12 hex digits) nor a slug \
                 (letters, digits, '-', '_', '.')"
            )
        })
    }
}

impl fmt::Display for WorkspaceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkspaceRef::Id(id) => write!(f, "workspace {id}"),
            WorkspaceRef::Slug(slug) => write!(f, "workspace slug {slug:?}"),
        }
    }
}

/// A canonical UUID (8-4-4-4-12 hex digits, any case): a workspace id, as
/// `/keys?workspace_id=` requires, rather than a slug.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
