//! The workspace endpoints: `GET /workspaces` (paged, with `total_count`, in
//! the mode [`WorkspacesMode`] picks) and `GET /workspaces/{id or slug}`.

use std::collections::HashMap;

use hyper::Response;
use serde_json::{json, Value};

use super::account::{slugify, SimState, WorkspacesMode};
use super::http::{error_response, json_response, offset_and_limit, percent_decode, SimBody};

/// `GET /workspaces`: the workspaces in pages of at most
/// `st.workspaces_page_size`, or the error or empty list the mode asks for.
pub(super) fn list(params: &HashMap<String, String>, st: &SimState) -> Response<SimBody> {
    let mode = if st.workspaces_api {
        st.workspaces_mode
    } else {
        WorkspacesMode::Status(404)
    };
    let listed: Vec<&(String, String)> = match mode {
        WorkspacesMode::Status(status) => {
            return error_response(status, "simulated /workspaces failure")
        }
        WorkspacesMode::Empty => Vec::new(),
        WorkspacesMode::List => st
            .workspaces
            .iter()
            .skip(usize::from(!st.list_default_workspace))
            .collect(),
    };
    let Some((offset, limit)) = offset_and_limit(params) else {
        return error_response(400, "limit must be between 1 and 100");
    };
    let page: Vec<Value> = listed
        .iter()
        .skip(offset)
        .take(limit.min(st.workspaces_page_size))
        .map(|(id, name)| workspace_json(id, name))
        .collect();
    json_response(200, json!({"data": page, "total_count": listed.len()}))
}

/// `GET /workspaces/{id}`, which takes "the workspace ID (UUID) or slug".
pub(super) fn get(wanted: &str, st: &SimState) -> Response<SimBody> {
    match st.workspace(&percent_decode(wanted)) {
        Some((id, name)) => json_response(200, json!({"data": workspace_json(id, name)})),
        None => error_response(404, "Workspace not found"),
    }
}

/// A workspace object with the spec's required fields.
fn workspace_json(id: &str, name: &str) -> Value {
    json!({
        "id": id, "name": name, "slug": slugify(name), "description": null,
        "default_text_model": null, "default_image_model": null, "default_provider_sort": null,
        "default_guardrail_id": null,
        "is_observability_io_logging_enabled": false, "is_observability_broadcast_enabled": false,
        "is_data_discount_logging_enabled": false, "io_logging_sampling_rate": 1,
        "io_logging_api_key_ids": null,
        "created_at": "2026-04-20T00:00:00Z", "updated_at": null, "created_by": null,
    })
}
