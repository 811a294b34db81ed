//! How a counted listing is paged (`offset`/`limit` until `total_count`,
//! each page overlapping the one before by one item:
//! [`continuity`](super::continuity)), and the organization endpoints built
//! on it: workspaces, members, guardrails (per workspace), guardrail
//! assignments, and the (unpaged) workspace budgets.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use tracing::warn;

use super::continuity::{Broken, Continuity};
use super::error::{pagination, redact_keys, Endpoint, UpstreamError};
use super::wire::{
    CountedPage, Guardrail, GuardrailKeyAssignment, Member, Workspace, WorkspaceBudget,
};
use super::Client;

/// Pagination guard: 1,000,000 pages is far beyond any real account.
pub(super) const MAX_PAGES: usize = 1_000_000;
/// Items asked for per page of a counted list (the documented maximum is 100).
const COUNTED_PAGE: usize = 100;
/// A list that shifted under its listing is listed again at most this many
/// times before the listing fails (`reason="pagination"`).
pub(super) const RELISTS: usize = 2;

/// A counted listing that failed, and the offset of the page it failed on.
struct Failed {
    offset: usize,
    error: UpstreamError,
}

impl Client {
    /// Every item of a list endpoint paged with `offset`/`limit` (at most
    /// 100), with `query` beside them, until `total_count` items are in (or
    /// a page asked from the last item holds nothing past it). A list that
    /// shifts while it is paged is listed again, at most [`RELISTS`] times; a
    /// page that adds nothing new where new items were due fails the listing
    /// (`reason="pagination"`).
    pub async fn list_counted<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
        query: &[(&str, &str)],
        id_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, UpstreamError> {
        self.counted_pages(endpoint, path, query, id_of)
            .await
            .map_err(|failed| failed.error)
    }

    /// The paging of [`Client::list_counted`], saying where it failed.
    async fn counted_pages<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
        query: &[(&str, &str)],
        id_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, Failed> {
        let mut relists = 0;
        loop {
            let (offset, broken) = match self.counted_once(endpoint, path, query, &id_of).await? {
                Ok(all) => return Ok(all),
                Err(broken) => broken,
            };
            let message = match broken {
                Broken::Shifted(message) if relists < RELISTS => {
                    relists += 1;
                    warn!(listing = %redact_keys(path), reason = %message, relists, "the list shifted while it was paged; listing it again");
                    continue;
                }
                Broken::Shifted(message) => {
                    format!("{message}; still so after {RELISTS} new listings")
                }
                Broken::Repeats(message) => message,
            };
            let error = pagination(path, message);
            return Err(Failed { offset, error });
        }
    }

    /// One listing of a counted list; `Ok(Err((offset, _)))` when it broke at `offset`.
    async fn counted_once<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
        query: &[(&str, &str)],
        id_of: &impl Fn(&T) -> String,
    ) -> Result<Result<Vec<T>, (usize, Broken)>, Failed> {
        let mut all: Vec<T> = Vec::new();
        // An item listed twice (a workspace's keys would be listed twice) counts once.
        let mut seen = HashSet::new();
        let mut listed = Continuity::default();
        for _ in 0..MAX_PAGES {
            let offset = listed.next_offset();
            let (offset_text, limit) = (offset.to_string(), COUNTED_PAGE.to_string());
            let mut paged = vec![("offset", offset_text.as_str()), ("limit", limit.as_str())];
            paged.extend_from_slice(query);
            let page: CountedPage<T> = self
                .get(endpoint, path, &paged)
                .await
                .and_then(|body| self.decode_page(endpoint, &body))
                .map_err(|error| Failed { offset, error })?;
            let ids: Vec<String> = page.data.iter().map(id_of).collect();
            let from = match listed.locate(offset, &ids) {
                Ok(from) => from,
                Err(broken) => return Ok(Err((offset, broken))),
            };
            let total = page.total_count;
            let mut added = 0;
            for (at, (item, id)) in page.data.into_iter().zip(&ids).enumerate() {
                if seen.insert(id.clone()) {
                    added += usize::from(at >= from);
                    all.push(item);
                }
            }
            if total.is_some_and(|total| all.len() as u64 >= total) {
                return Ok(Ok(all));
            }
            let last = ids.last().map(String::as_str);
            match listed.advance(offset, ids.len(), from, last, added) {
                Ok(true) => return Ok(Ok(all)),
                Ok(false) => {}
                Err(broken) => return Ok(Err((offset, broken))),
            }
        }
        let offset = listed.next_offset();
        let error = pagination(path, format!("more than {MAX_PAGES} pages"));
        Err(Failed { offset, error })
    }

    /// Every workspace, paged until `total_count` (or an empty page). `None`
    /// when this account cannot list workspaces (403 or 404 on the first
    /// page): the caller falls back to the default listing, with a warning.
    pub async fn list_workspaces(&self) -> Result<Option<Vec<Workspace>>, UpstreamError> {
        let id_of = |w: &Workspace| w.id.clone();
        match self
            .counted_pages(Endpoint::Workspaces, "/workspaces", &[], id_of)
            .await
        {
            Ok(all) => {
                if all.is_empty() {
                    warn!(
                        "GET /workspaces listed no workspace; listing the default workspace only"
                    );
                }
                Ok(Some(all))
            }
            Err(Failed { offset: 0, error }) if matches!(error.status(), Some(403 | 404)) => {
                warn!(%error, "cannot list workspaces; listing the default workspace only");
                Ok(None)
            }
            Err(failed) => Err(failed.error),
        }
    }

    /// Every member of the organization (`GET /organization/members`).
    pub async fn list_members(&self) -> Result<Vec<Member>, UpstreamError> {
        self.list_counted(
            Endpoint::Members,
            "/organization/members",
            &[],
            |m: &Member| m.id.clone(),
        )
        .await
    }

    /// The guardrails of one workspace (`GET /guardrails?workspace_id=…`),
    /// or, with `None`, of the workspace OpenRouter picks when none is named
    /// (the default one).
    pub async fn list_guardrails(
        &self,
        workspace: Option<&str>,
    ) -> Result<Vec<Guardrail>, UpstreamError> {
        let query: Vec<(&str, &str)> = workspace.map(|w| ("workspace_id", w)).into_iter().collect();
        self.list_counted(
            Endpoint::Guardrails,
            "/guardrails",
            &query,
            |g: &Guardrail| g.id.clone(),
        )
        .await
    }

    /// Every guardrail assigned to a key (`GET /guardrails/assignments/keys`).
    pub async fn list_guardrail_key_assignments(
        &self,
    ) -> Result<Vec<GuardrailKeyAssignment>, UpstreamError> {
        self.list_counted(
            Endpoint::GuardrailAssignments,
            "/guardrails/assignments/keys",
            &[],
            |a: &GuardrailKeyAssignment| format!("{}/{}", a.key_hash, a.guardrail_id),
        )
        .await
    }

    /// The budgets of one workspace (`GET /workspaces/{id}/budgets`, not paged).
    pub async fn workspace_budgets(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<WorkspaceBudget>, UpstreamError> {
        let path = format!("/workspaces/{workspace_id}/budgets");
        let body = self
            .get(Endpoint::WorkspaceBudgets, &path, &[] as &[(&str, &str)])
            .await?;
        self.decode(Endpoint::WorkspaceBudgets, &body)
    }
}
