//! The exporter's slower-cadence organization lists (workspaces, members,
//! guardrails, workspace budgets) and the start-up management-key check.
//! A failure here never fails a key refresh: last good values are kept.
//!
//! Time: the lists share a budget of 0.45 × `refresh_interval`. The
//! workspace list goes first (guardrails and budgets are read per
//! workspace), with at most half of it; the others are then read side by
//! side, each with all the time left, so that one slow list (members
//! retrying) never leaves the others unread.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::Exporter;
use crate::config::{Config, Selector};
use crate::snapshot::{OrgList, Organization};
use crate::sync::lock;
use crate::upstream::{
    Client, Endpoint, Guardrail, GuardrailKeyAssignment, Member, UpstreamError, Workspace,
    WorkspaceBudget,
};

impl Exporter {
    /// Reads workspaces, members (when a company has a `creator` selector),
    /// guardrails, their key assignments and workspace budgets, then re-attributes
    /// the last listing and publishes. Each list that fails keeps its last good
    /// value and is marked stale; no failure here fails a key refresh.
    pub async fn refresh_organization(&self) {
        self.read_organization().await;
        let _serial = self.shared.refresh_lock.lock().await;
        self.rebuild_snapshot().await;
        self.publish().await;
    }

    /// The reading part of [`Exporter::refresh_organization`]: stores the lists
    /// in the state for the next snapshot (the caller rebuilds or refreshes).
    pub(super) async fn read_organization(&self) {
        let config = self.config();
        if config.openrouter.management_key.is_none() {
            return;
        }
        let (client, previous) = {
            let state = lock(&self.shared.state);
            (state.client.clone(), Arc::clone(&state.organization))
        };
        let budget = config
            .refresh_interval
            .mul_f64(0.45)
            .max(Duration::from_millis(250));
        let started = Instant::now();
        let mut org = (*previous).clone();

        let first_deadline = started + budget / 2;
        let workspaces = client.with_deadline(first_deadline);
        let read = read_in_time(workspaces, first_deadline, OrgList::Workspaces, None).await;
        apply(&mut org, OrgList::Workspaces, read);

        let ids = workspace_ids(&org);
        let deadline = started + budget;
        let client = client.with_deadline(deadline);
        let mut tasks = JoinSet::new();
        let mut unread = Vec::new();
        for list in lists_to_read(&config) {
            let (client, ids) = (client.clone(), ids.clone());
            tasks.spawn(async move { (list, read_in_time(client, deadline, list, ids).await) });
            unread.push(list);
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok((list, read)) = joined {
                unread.retain(|l| *l != list);
                apply(&mut org, list, read);
            }
        }
        // Only a task that panicked is left unread.
        for list in unread {
            org.mark(list, false);
        }
        lock(&self.shared.state).set_organization(org);
    }

    /// At start: says plainly when the management key is not one (`GET /key`
    /// answers `is_management_key: false`) or is refused, instead of leaving
    /// it to a generic 401/403 from `/keys`. Logs once; never fails.
    pub async fn check_management_key(&self) {
        let config = self.config();
        let Some(source) = config.openrouter.management_key.clone() else {
            return;
        };
        let client = lock(&self.shared.state).client.clone();
        match client.check_key().await {
            Ok(check) if check.is_management_key == Some(false) => error!(
                key_source = %source,
                "the key in {source} is not a management key (GET /key answers is_management_key: false); \
                 the exporter needs one: create a management key at https://openrouter.ai/settings/management-keys \
                 and put it in {source}"
            ),
            Ok(_) => debug!("management key check passed"),
            Err(e @ UpstreamError::Unauthorized { .. }) => error!(
                key_source = %source, error = %e,
                "OpenRouter refuses the key in {source}: it is revoked, mistyped or not a management key; \
                 create a management key at https://openrouter.ai/settings/management-keys and put it in {source}"
            ),
            Err(e) => {
                debug!(error = %e, "management key check inconclusive; the refresh will tell")
            }
        }
    }
}

pub(super) fn has_creator_selectors(config: &Config) -> bool {
    config
        .companies
        .iter()
        .flat_map(|c| &c.selectors)
        .any(|s| matches!(s, Selector::Creator(_)))
}

/// The lists read after the workspace list: members only when a company
/// selects keys by creator.
fn lists_to_read(config: &Config) -> Vec<OrgList> {
    let mut lists = Vec::new();
    if has_creator_selectors(config) {
        lists.push(OrgList::Members);
    }
    lists.extend([
        OrgList::Guardrails,
        OrgList::GuardrailAssignments,
        OrgList::WorkspaceBudgets,
    ]);
    lists
}

/// The ids of the workspaces last listed, sorted; `None` while never listed.
fn workspace_ids(org: &Organization) -> Option<Vec<String>> {
    let mut ids: Vec<String> = org.workspace_slugs.as_ref()?.keys().cloned().collect();
    ids.sort();
    Some(ids)
}

/// One organization list as read.
enum Read {
    Workspaces(Vec<Workspace>),
    Members(Vec<Member>),
    Guardrails(Vec<Guardrail>),
    Assignments(Vec<GuardrailKeyAssignment>),
    Budgets(Vec<WorkspaceBudget>),
}

/// Stores a list read into `org`, or keeps its last good value and marks it stale.
fn apply(org: &mut Organization, list: OrgList, read: Result<Read, UpstreamError>) {
    org.mark(list, read.is_ok());
    match read {
        Ok(Read::Workspaces(listed)) => org.set_workspaces(listed),
        Ok(Read::Members(members)) => org.set_members(members),
        Ok(Read::Guardrails(guardrails)) => org.set_guardrails(guardrails),
        Ok(Read::Assignments(assignments)) => org.set_guardrail_assignments(assignments),
        Ok(Read::Budgets(budgets)) => org.set_workspace_budgets(budgets),
        Err(e) => {
            warn!(list = list.as_str(), error = %e, "reading an organization list failed; keeping its last good values (openrouter_organization_list_stale 1)")
        }
    }
}

/// The endpoint a list is read from (for an error that names none).
fn endpoint_of(list: OrgList) -> Endpoint {
    match list {
        OrgList::Workspaces => Endpoint::Workspaces,
        OrgList::Members => Endpoint::Members,
        OrgList::Guardrails => Endpoint::Guardrails,
        OrgList::GuardrailAssignments => Endpoint::GuardrailAssignments,
        OrgList::WorkspaceBudgets => Endpoint::WorkspaceBudgets,
    }
}

/// [`read_list`], given up at `deadline` (the list's share of the budget).
async fn read_in_time(
    client: Client,
    deadline: Instant,
    list: OrgList,
    workspaces: Option<Vec<String>>,
) -> Result<Read, UpstreamError> {
    match tokio::time::timeout_at(deadline, read_list(&client, list, workspaces)).await {
        Ok(read) => read,
        Err(_) => {
            warn!(
                list = list.as_str(),
                "reading an organization list did not finish in its time; it keeps its last values"
            );
            Err(UpstreamError::Timeout {
                endpoint: endpoint_of(list),
            })
        }
    }
}

/// Reads one list. Guardrails and budgets are read per workspace listed
/// (`workspaces`); guardrails of the default workspace alone when none is.
async fn read_list(
    client: &Client,
    list: OrgList,
    workspaces: Option<Vec<String>>,
) -> Result<Read, UpstreamError> {
    Ok(match list {
        OrgList::Workspaces => {
            Read::Workspaces(client.list_workspaces().await?.unwrap_or_default())
        }
        OrgList::Members => Read::Members(client.list_members().await?),
        OrgList::GuardrailAssignments => {
            Read::Assignments(client.list_guardrail_key_assignments().await?)
        }
        OrgList::Guardrails => {
            let ids = workspaces.filter(|ids| !ids.is_empty());
            let Some(ids) = ids else {
                return Ok(Read::Guardrails(client.list_guardrails(None).await?));
            };
            let mut guardrails = per_workspace(client, ids, |client, id| async move {
                client.list_guardrails(Some(&id)).await
            })
            .await?;
            // A guardrail listed under two workspaces counts once.
            let mut seen = std::collections::HashSet::new();
            guardrails.retain(|g| seen.insert(g.id.clone()));
            Read::Guardrails(guardrails)
        }
        OrgList::WorkspaceBudgets => {
            let Some(ids) = workspaces else {
                return Err(UpstreamError::Transport {
                    endpoint: Endpoint::WorkspaceBudgets,
                    message:
                        "the workspace list was never read, so which workspaces to ask is unknown"
                            .into(),
                });
            };
            Read::Budgets(
                per_workspace(client, ids, |client, id| async move {
                    client.workspace_budgets(&id).await
                })
                .await?,
            )
        }
    })
}

/// `call` for each workspace id, side by side (the client's budget of calls
/// in flight bounds them), joined in the order of `ids`; the first failure fails all.
async fn per_workspace<T, F, Fut>(
    client: &Client,
    ids: Vec<String>,
    call: F,
) -> Result<Vec<T>, UpstreamError>
where
    T: Send + 'static,
    F: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, UpstreamError>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (index, id) in ids.into_iter().enumerate() {
        let call = call(client.clone(), id);
        tasks.spawn(async move { (index, call.await) });
    }
    let mut read = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, items) = joined.map_err(|e| UpstreamError::Transport {
            endpoint: Endpoint::WorkspaceBudgets,
            message: format!("task failed: {e}"),
        })?;
        read.push((index, items?));
    }
    read.sort_by_key(|(index, _)| *index);
    Ok(read.into_iter().flat_map(|(_, items)| items).collect())
}
