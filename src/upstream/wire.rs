//! What OpenRouter sends: every JSON shape the client decodes, and the one
//! decoder every endpoint goes through. Wire types stop at this module's
//! users: the snapshot converts them once (`snapshot::Listing`).

use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::{Endpoint, UpstreamError};

/// `null` reads as the type's default (an empty name or label is "not reported").
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One key as listed by `GET /keys`. Every field but `hash` may be `null` or
/// absent (older or partial responses): unknown stays unknown (`None`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ApiKey {
    pub hash: Box<str>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: Box<str>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub label: Box<str>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub limit: Option<f64>,
    #[serde(default)]
    pub limit_remaining: Option<f64>,
    #[serde(default)]
    pub limit_reset: Option<Box<str>>,
    #[serde(default)]
    pub usage: Option<f64>,
    #[serde(default)]
    pub usage_daily: Option<f64>,
    #[serde(default)]
    pub usage_weekly: Option<f64>,
    #[serde(default)]
    pub usage_monthly: Option<f64>,
    #[serde(default)]
    pub byok_usage: Option<f64>,
    #[serde(default)]
    pub byok_usage_daily: Option<f64>,
    #[serde(default)]
    pub byok_usage_weekly: Option<f64>,
    #[serde(default)]
    pub byok_usage_monthly: Option<f64>,
    #[serde(default)]
    pub workspace_id: Option<Box<str>>,
    #[serde(default)]
    pub expires_at: Option<Box<str>>,
    /// The organization member who created the key (`GET /organization/members` ids).
    #[serde(default)]
    pub creator_user_id: Option<Box<str>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Workspace {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub slug: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct Credits {
    pub total_credits: f64,
    pub total_usage: f64,
}

/// One organization member (`GET /organization/members`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Member {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
}

/// One guardrail (`GET /guardrails`): a spending cap (`limit_usd`, per
/// `reset_interval`; `null` = lifetime) and/or model and provider rules.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Guardrail {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub limit_usd: Option<f64>,
    #[serde(default)]
    pub reset_interval: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
}

/// One guardrail assigned to one key (`GET /guardrails/assignments/keys`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct GuardrailKeyAssignment {
    pub key_hash: String,
    pub guardrail_id: String,
}

/// One budget OpenRouter enforces on a workspace (`GET /workspaces/{id}/budgets`;
/// `reset_interval` `null` = lifetime).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WorkspaceBudget {
    #[serde(default)]
    pub id: Option<String>,
    pub workspace_id: String,
    pub limit_usd: f64,
    #[serde(default)]
    pub reset_interval: Option<String>,
}

/// What `GET /key` says about the calling key (the management-key check at start).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct KeyCheck {
    #[serde(default)]
    pub is_management_key: Option<bool>,
    #[serde(default)]
    pub is_provisioning_key: Option<bool>,
}

/// One page of a list endpoint that reports `total_count` (`/workspaces`,
/// members, guardrails, guardrail assignments).
#[derive(Debug, Deserialize)]
pub struct CountedPage<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// One row of `GET /activity`. Counts that real accounts have sent as `null`
/// (or as floats) read as their value or 0; a missing or `null` `usage`
/// leaves the row unreadable, and with it the call.
#[derive(Debug, Clone, Deserialize)]
pub struct ActivityRow {
    pub date: String,
    pub model: String,
    #[serde(default, deserialize_with = "lenient_number")]
    pub usage: Option<f64>,
    #[serde(default, deserialize_with = "lenient_amount")]
    pub byok_usage_inference: f64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub requests: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub reasoning_tokens: u64,
}

impl ActivityRow {
    /// The UTC day of the row: `date` may be `YYYY-MM-DD` or carry a time
    /// part (`2025-08-24 00:00:00`), so its first 10 characters are read.
    pub fn day(&self) -> Option<NaiveDate> {
        let date = self.date.trim();
        NaiveDate::parse_from_str(date.get(..10)?, "%Y-%m-%d").ok()
    }
}

/// A number as JSON sends it: a number, a numeric string (as OpenRouter's
/// analytics API sends counts), or `null`/anything else (`None`).
fn lenient_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|v| v.is_finite()))
}

fn lenient_amount<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(lenient_number(d)?.unwrap_or(0.0))
}

fn lenient_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = lenient_number(d)?.unwrap_or(0.0);
    Ok(if value > 0.0 { value.round() as u64 } else { 0 })
}

#[derive(Debug, Deserialize)]
struct DataEnvelope<T> {
    data: T,
}

/// Decodes one `GET /keys` page body (`{"data": [key, ...]}`): the code the
/// client runs on every page, exposed for fuzzing. Never panics.
pub fn parse_keys_page(bytes: &[u8]) -> Result<Vec<ApiKey>, UpstreamError> {
    decode(Endpoint::Keys, bytes)
}

/// Decodes the `{"data": T}` envelope every endpoint but the counted lists sends.
pub(super) fn decode<T: DeserializeOwned>(
    endpoint: Endpoint,
    bytes: &[u8],
) -> Result<T, UpstreamError> {
    from_json::<DataEnvelope<T>>(endpoint, bytes).map(|envelope| envelope.data)
}

/// Decodes a whole body as `T`.
pub(super) fn from_json<T: DeserializeOwned>(
    endpoint: Endpoint,
    bytes: &[u8],
) -> Result<T, UpstreamError> {
    serde_json::from_slice::<T>(bytes).map_err(|e| UpstreamError::Decode {
        endpoint,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::FailureReason;

    #[test]
    fn key_with_only_required_fields_parses_and_nulls_stay_unknown() {
        let key: ApiKey = serde_json::from_str(
            r#"{"hash":"h","name":null,"label":null,"disabled":null,"limit":null,
                "limit_remaining":null,"limit_reset":null,"usage":1.5,"usage_daily":null,
                "created_at":"2025-01-01T00:00:00Z","some_future_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(key.usage, Some(1.5));
        assert_eq!(key.usage_daily, None);
        assert_eq!(key.limit, None);
        assert_eq!(key.disabled, None);
        assert_eq!(&*key.name, "");
        assert_eq!(&*key.label, "");
        assert_eq!(key.workspace_id, None);
        assert_eq!(key.expires_at, None);
        let bare: ApiKey = serde_json::from_str(r#"{"hash":"h"}"#).unwrap();
        assert_eq!(bare.disabled, None);
        assert_eq!(bare.usage, None);
    }

    #[test]
    fn a_page_without_data_is_an_invalid_response() {
        let e = parse_keys_page(br#"{"keys":[]}"#).unwrap_err();
        assert_eq!(e.reason(), FailureReason::InvalidResponse);
        assert!(parse_keys_page(br#"{"data":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn lenient_numbers_decode() {
        let rows: Vec<ActivityRow> = serde_json::from_str(
            r#"[{"date":"2026-11-25 00:00:00","model":"m","usage":"0.25","requests":2.0,
                 "prompt_tokens":"7","completion_tokens":null,"reasoning_tokens":null,
                 "byok_usage_inference":null}]"#,
        )
        .unwrap();
        assert_eq!(rows[0].usage, Some(0.25));
        assert_eq!(rows[0].requests, 2);
        assert_eq!(rows[0].prompt_tokens, 7);
        assert_eq!(rows[0].completion_tokens, 0);
        assert_eq!(rows[0].day(), NaiveDate::from_ymd_opt(2026, 11, 25));
    }
}
