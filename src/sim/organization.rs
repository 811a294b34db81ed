//! The organization endpoints: members, guardrails (one workspace's at a
//! time) and their key assignments (counted lists paged on `offset`/`limit`),
//! workspace budgets, and the spec-shaped items tests put in them.

use std::collections::HashMap;

use hyper::Response;
use serde_json::{json, Value};

use super::account::SimState;
use super::http::{error_response, json_response, offset_and_limit, percent_decode, SimBody};

/// A counted list (`/organization/members`, `/guardrails`,
/// `/guardrails/assignments/keys`): one page of `items`, at most
/// `st.org_page_size` long whatever `limit` asks, with `total_count`.
pub(super) fn list(
    items: &[Value],
    params: &HashMap<String, String>,
    st: &SimState,
) -> Response<SimBody> {
    let Some((offset, limit)) = offset_and_limit(params) else {
        return error_response(400, "limit must be between 1 and 100");
    };
    let page: Vec<Value> = items
        .iter()
        .skip(offset)
        .take(limit.min(st.org_page_size))
        .cloned()
        .collect();
    json_response(200, json!({"data": page, "total_count": items.len()}))
}

/// `GET /guardrails`: the guardrails of the workspace `workspace_id` names
/// (default: the first), as the spec has it. A guardrail whose
/// `workspace_id` is `null` belongs to the first (default) workspace.
pub(super) fn guardrails(params: &HashMap<String, String>, st: &SimState) -> Response<SimBody> {
    let default = st.workspaces.first().map(|(id, _)| id.as_str());
    let workspace = match params.get("workspace_id") {
        Some(wanted) => match st.workspaces.iter().find(|(id, _)| id == wanted) {
            Some((id, _)) => Some(id.as_str()),
            None => return error_response(404, "Workspace not found"),
        },
        None => default,
    };
    let listed: Vec<Value> = st
        .guardrails
        .iter()
        .filter(|g| match g.get("workspace_id").and_then(Value::as_str) {
            Some(own) => Some(own) == workspace,
            None => workspace == default,
        })
        .cloned()
        .collect();
    list(&listed, params, st)
}

/// `GET /workspaces/{id or slug}/budgets`.
pub(super) fn budgets(wanted: &str, st: &SimState) -> Response<SimBody> {
    let Some((id, _)) = st.workspace(&percent_decode(wanted)) else {
        return error_response(404, "Workspace not found");
    };
    let budgets = st.workspace_budgets.get(id).cloned().unwrap_or_default();
    json_response(
        200,
        json!({"data": budgets, "include_byok_in_budgets": false}),
    )
}

/// A member as `GET /organization/members` lists it (spec shape).
pub fn member_json(id: &str, email: &str, first_name: &str, last_name: &str) -> Value {
    json!({"id": id, "email": email, "first_name": first_name, "last_name": last_name, "role": "org:member"})
}

/// A guardrail as `GET /guardrails` lists it; `limit_usd` and `reset_interval` may be `None` (null).
/// Its `workspace_id` is `null`: the default workspace's (set it to put it in another).
pub fn guardrail_json(id: &str, name: &str, limit_usd: Option<f64>, reset: Option<&str>) -> Value {
    json!({
        "id": id, "name": name, "description": null, "limit_usd": limit_usd,
        "reset_interval": reset, "allowed_providers": null, "allowed_models": null,
        "enforce_zdr": false, "workspace_id": null,
        "created_at": "2026-04-20T00:00:00Z", "updated_at": null,
    })
}

/// One key assignment as `GET /guardrails/assignments/keys` lists it (spec shape).
pub fn assignment_json(id: &str, key_hash: &str, guardrail_id: &str) -> Value {
    json!({
        "id": id, "key_hash": key_hash, "guardrail_id": guardrail_id, "key_name": null,
        "key_label": null, "assigned_by": "user_sim", "created_at": "2026-04-20T00:00:00Z",
    })
}

/// One workspace budget as `GET /workspaces/{id}/budgets` lists it (spec
/// shape; `reset` `None` = lifetime).
pub fn budget_json(id: &str, workspace_id: &str, limit_usd: f64, reset: Option<&str>) -> Value {
    json!({
        "id": id, "workspace_id": workspace_id, "limit_usd": limit_usd, "reset_interval": reset,
        "created_at": "2026-04-20T00:00:00Z", "updated_at": null,
    })
}
