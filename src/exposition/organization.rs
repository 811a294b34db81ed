//! The families of the organization lists read at a slower cadence than
//! keys: workspace budgets, and which lists are stale. (Guardrail caps are
//! per key: `keys.rs`.)

use std::io::{self, Write};

use crate::snapshot::Organization;

use super::writer::{Family, Kind, MetricWriter};

pub(super) const WORKSPACE_BUDGET: Family = Family {
    name: "openrouter_workspace_budget_usd",
    kind: Kind::Gauge,
    help: "Budget in US dollars that OpenRouter enforces on one workspace (GET /workspaces/{id}/budgets); \
           reset = daily/weekly/monthly (UTC) or never. workspace is the slug. \
           Read every organization_refresh_intervals refreshes.",
};
pub(super) const LIST_STALE: Family = Family {
    name: "openrouter_organization_list_stale",
    kind: Kind::Gauge,
    help: "1 when the last read of an organization list (workspaces, members, guardrails, \
           guardrail_assignments, workspace_budgets) failed and its last good values are still used \
           (or none, if it never succeeded); 0 when it is current.",
};

/// Every family this file writes.
pub(super) const FAMILIES: &[Family] = &[WORKSPACE_BUDGET, LIST_STALE];

/// Workspace budgets once read, and the staleness of every list ever attempted.
pub(super) fn write<W: Write>(w: &mut MetricWriter<W>, org: &Organization) -> io::Result<()> {
    if let Some(budgets) = &org.workspace_budgets {
        w.header(&WORKSPACE_BUDGET)?;
        for (workspace_id, caps) in budgets {
            let slug = org.workspace_slug(Some(workspace_id)).unwrap_or_default();
            for cap in caps {
                let labels = [
                    ("workspace", slug),
                    ("workspace_id", workspace_id.as_str()),
                    ("reset", cap.reset.as_str()),
                ];
                w.sample_f64(WORKSPACE_BUDGET.name, &labels, cap.limit_usd)?;
            }
        }
    }
    if !org.attempted.is_empty() {
        w.header(&LIST_STALE)?;
        for list in &org.attempted {
            w.sample(
                LIST_STALE.name,
                &[("list", list.as_str())],
                format_args!("{}", u8::from(org.stale.contains(list))),
            )?;
        }
    }
    Ok(())
}
