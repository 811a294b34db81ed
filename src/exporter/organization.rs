//! The exporter's slower-cadence organization lists (workspaces, members,
//! guardrails, workspace budgets) and the start-up management-key check.
//! A failure here never fails a key refresh: last good values are kept.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, warn};

use super::Exporter;
use crate::config::{Config, Selector};
use crate::snapshot::{OrgList, Organization};
use crate::sync::lock;
use crate::upstream::{Client, Endpoint, UpstreamError};

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
        let deadline = tokio::time::Instant::now() + budget;
        let client = client.with_deadline(deadline);
        let mut org = (*previous).clone();
        let mut lists = vec![OrgList::Workspaces];
        if has_creator_selectors(&config) {
            lists.push(OrgList::Members);
        }
        lists.extend([
            OrgList::Guardrails,
            OrgList::GuardrailAssignments,
            OrgList::WorkspaceBudgets,
        ]);
        let mut done = Vec::new();
        let work = read_lists(&client, &lists, &mut org, &mut done);
        if tokio::time::timeout_at(deadline, work).await.is_err() {
            warn!(
                seconds = budget.as_secs_f64(),
                "reading workspaces, members and caps did not finish in time; the unread lists keep their last values"
            );
        }
        for list in lists {
            if !done.contains(&list) {
                org.mark(list, false);
            }
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

/// Reads `lists` into `org`, recording each one read in `done`.
async fn read_lists(
    client: &Client,
    lists: &[OrgList],
    org: &mut Organization,
    done: &mut Vec<OrgList>,
) {
    for &list in lists {
        let result: Result<(), UpstreamError> = async {
            match list {
                OrgList::Workspaces => {
                    let listed = client.list_workspaces().await?.unwrap_or_default();
                    org.set_workspaces(listed);
                }
                OrgList::Members => org.set_members(client.list_members().await?),
                OrgList::Guardrails => org.set_guardrails(client.list_guardrails().await?),
                OrgList::GuardrailAssignments => {
                    org.set_guardrail_assignments(client.list_guardrail_key_assignments().await?)
                }
                OrgList::WorkspaceBudgets => {
                    let Some(slugs) = org.workspace_slugs.as_ref() else {
                        return Err(UpstreamError::Transport {
                            endpoint: Endpoint::WorkspaceBudgets,
                            message: "the workspace list was never read, so which workspaces to ask is unknown".into(),
                        });
                    };
                    let mut ids: Vec<String> = slugs.keys().cloned().collect();
                    ids.sort();
                    let mut budgets = Vec::new();
                    for id in ids {
                        budgets.extend(client.workspace_budgets(&id).await?);
                    }
                    org.set_workspace_budgets(budgets);
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            warn!(list = list.as_str(), error = %e, "reading an organization list failed; keeping its last good values (openrouter_organization_list_stale 1)");
        }
        org.mark(list, result.is_ok());
        done.push(list);
    }
}
