//! The key endpoints: `GET /keys` (the paged listing of a workspace) and
//! `GET /key` (the key that authenticates, management or inference).

use std::collections::HashMap;

use hyper::Response;
use serde_json::{json, Value};

use super::account::{SimKey, SimState};
use super::http::{error_response, json_response, SimBody};
use crate::config::is_uuid;

/// `GET /keys`: one page of a workspace's keys (default: the first
/// workspace), enabled only unless `include_disabled=true`, and not yet
/// expired (an `expires_at` in the past) unless `include_expired=true`, as
/// newer OpenRouter lists them.
pub(super) fn list(params: &HashMap<String, String>, st: &SimState) -> Response<SimBody> {
    let workspace = match params.get("workspace_id") {
        Some(ws) => {
            if !st.workspaces.iter().any(|(id, _)| id == ws) {
                if !is_uuid(ws) {
                    // The spec types `workspace_id` as `format: uuid`; a slug is refused.
                    return error_response(400, "Invalid workspace_id: expected a UUID");
                }
                return error_response(404, "Workspace not found");
            }
            ws.clone()
        }
        None => st
            .workspaces
            .first()
            .map(|(id, _)| id.clone())
            .unwrap_or_default(),
    };
    let include_disabled = params.get("include_disabled").map(String::as_str) == Some("true");
    let include_expired = params.get("include_expired").map(String::as_str) == Some("true");
    let now = chrono::Utc::now();
    let offset: usize = params
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let page_size = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .map_or(st.keys_page_size, |l| l.min(st.keys_page_size));
    let listed = st
        .keys
        .iter()
        .filter(|k| k.listed_in(&workspace))
        .filter(|k| {
            include_disabled
                || !k
                    .fields
                    .get("disabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
        })
        .filter(|k| include_expired || !k.expired_at(now));
    let ordered: Vec<&SimKey> = if st.newest_first {
        listed.rev().collect()
    } else {
        listed.collect()
    };
    let page: Vec<Value> = ordered
        .into_iter()
        .skip(offset)
        .take(page_size)
        .map(|k| Value::Object(k.fields.clone()))
        .collect();
    json_response(200, json!({ "data": page }))
}

/// `GET /key`: answers for any key, about the key that authenticates.
pub(super) fn current(auth: Option<&str>, st: &SimState) -> Response<SimBody> {
    let secret = auth.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    if secret == st.management_key {
        return json_response(
            200,
            json!({"data": {
                "label": "sk-or-v1-man...agmt", "limit": null, "limit_remaining": null,
                "limit_reset": null, "usage": 0.0, "usage_daily": 0.0, "usage_weekly": 0.0,
                "usage_monthly": 0.0, "is_free_tier": false,
                "is_management_key": st.management_key_is_management,
                "is_provisioning_key": st.management_key_is_management,
                "creator_user_id": null, "expires_at": null,
            }}),
        );
    }
    let Some(hash) = st.inference_keys.get(secret) else {
        return error_response(401, "User not found.");
    };
    let Some(key) = st.keys.iter().find(|k| k.hash() == hash) else {
        return error_response(401, "User not found.");
    };
    let mut fields = key.fields.clone();
    for hidden in [
        "hash",
        "name",
        "disabled",
        "workspace_id",
        "created_at",
        "updated_at",
    ] {
        fields.remove(hidden);
    }
    fields.insert("is_free_tier".into(), json!(false));
    fields.insert("is_management_key".into(), json!(false));
    fields.insert("is_provisioning_key".into(), json!(false));
    json_response(200, json!({ "data": fields }))
}
