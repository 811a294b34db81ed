//! How a counted listing is paged (`offset`/`limit` until `total_count`), and
//! the organization endpoints built on it: workspaces, members, guardrails,
//! guardrail assignments, and the (unpaged) workspace budgets.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use tracing::warn;

use super::error::{pagination, Endpoint, UpstreamError};
use super::wire::{
    CountedPage, Guardrail, GuardrailKeyAssignment, Member, Workspace, WorkspaceBudget,
};
use super::Client;

/// Pagination guard: 1,000,000 pages is far beyond any real account.
pub(super) const MAX_PAGES: usize = 1_000_000;
/// Items asked for per page of a counted list (the documented maximum is 100).
const COUNTED_PAGE: usize = 100;

/// A counted listing that failed, and the offset of the page it failed on.
struct Failed {
    offset: usize,
    error: UpstreamError,
}

impl Client {
    /// Every item of a list endpoint paged with `offset`/`limit` (at most
    /// 100), until `total_count` items are in (or a page is empty). A page
    /// that adds nothing new fails the listing (`reason="pagination"`).
    pub async fn list_counted<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
        id_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, UpstreamError> {
        self.counted_pages(endpoint, path, id_of)
            .await
            .map_err(|failed| failed.error)
    }

    /// The paging of [`Client::list_counted`], saying where it failed.
    async fn counted_pages<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &str,
        id_of: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, Failed> {
        let mut all: Vec<T> = Vec::new();
        // An item listed twice (a workspace's keys would be listed twice) counts once.
        let mut seen = HashSet::new();
        let mut offset = 0;
        let failed = |offset, error| Failed { offset, error };
        for _ in 0..MAX_PAGES {
            let query = [("offset", offset), ("limit", COUNTED_PAGE)];
            let page: CountedPage<T> = self
                .get(endpoint, path, &query)
                .await
                .and_then(|body| self.decode_page(endpoint, &body))
                .map_err(|e| failed(offset, e))?;
            let len = page.data.len();
            let before = all.len();
            all.extend(
                page.data
                    .into_iter()
                    .filter(|item| seen.insert(id_of(item))),
            );
            let complete = page
                .total_count
                .is_some_and(|total| all.len() as u64 >= total);
            if len == 0 || complete {
                return Ok(all);
            }
            if all.len() == before {
                let message = format!(
                    "page at offset {offset} repeats earlier items before total_count {:?}",
                    page.total_count
                );
                return Err(failed(offset, pagination(path, message)));
            }
            // The server may serve fewer than asked: advance by what came.
            offset += len;
        }
        let message = format!("more than {MAX_PAGES} pages");
        Err(failed(offset, pagination(path, message)))
    }

    /// Every workspace, paged until `total_count` (or an empty page). `None`
    /// when this account cannot list workspaces (403 or 404 on the first
    /// page): the caller falls back to the default listing, with a warning.
    pub async fn list_workspaces(&self) -> Result<Option<Vec<Workspace>>, UpstreamError> {
        let id_of = |w: &Workspace| w.id.clone();
        match self
            .counted_pages(Endpoint::Workspaces, "/workspaces", id_of)
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
        self.list_counted(Endpoint::Members, "/organization/members", |m: &Member| {
            m.id.clone()
        })
        .await
    }

    /// Every guardrail (`GET /guardrails`).
    pub async fn list_guardrails(&self) -> Result<Vec<Guardrail>, UpstreamError> {
        self.list_counted(Endpoint::Guardrails, "/guardrails", |g: &Guardrail| {
            g.id.clone()
        })
        .await
    }

    /// Every guardrail assigned to a key (`GET /guardrails/assignments/keys`).
    pub async fn list_guardrail_key_assignments(
        &self,
    ) -> Result<Vec<GuardrailKeyAssignment>, UpstreamError> {
        self.list_counted(
            Endpoint::GuardrailAssignments,
            "/guardrails/assignments/keys",
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
