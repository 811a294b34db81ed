//! What OpenRouter sends: every JSON shape the client decodes, and the one
//! decoder every endpoint goes through. Wire types stop at this module's
//! users: the snapshot converts them once (`snapshot::Listing`).

use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::{redact_keys, Endpoint, UpstreamError};

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

/// Decodes one `GET /keys` page body (`{"data": [key, ...]}`) with the
/// decoder the client runs on every page; exposed for fuzzing. Never panics.
pub fn parse_keys_page(bytes: &[u8]) -> Result<Vec<ApiKey>, UpstreamError> {
    decode(Endpoint::Keys, bytes).map(|(keys, _)| keys)
}

/// Decodes the `{"data": T}` envelope every endpoint but the counted lists
/// sends; also says how many lone surrogate escapes were read as U+FFFD.
pub(super) fn decode<T: DeserializeOwned>(
    endpoint: Endpoint,
    bytes: &[u8],
) -> Result<(T, usize), UpstreamError> {
    from_json::<DataEnvelope<T>>(endpoint, bytes).map(|(envelope, lone)| (envelope.data, lone))
}

/// Decodes a whole body as `T`; also says how many lone surrogate escapes
/// were read as U+FFFD.
///
/// serde_json refuses a string with an unpaired UTF-16 surrogate escape
/// (`"\ud800"`), so one such key name would fail every listing and hide the
/// whole account's figures. A refused body that has some is read again with
/// each of them as `\uFFFD`, the replacement character.
pub(super) fn from_json<T: DeserializeOwned>(
    endpoint: Endpoint,
    bytes: &[u8],
) -> Result<(T, usize), UpstreamError> {
    let refused = match serde_json::from_slice::<T>(bytes) {
        Ok(value) => return Ok((value, 0)),
        Err(e) => e,
    };
    let lone = lone_surrogates(bytes);
    if lone.is_empty() {
        return Err(decode_error(endpoint, &refused));
    }
    let mut repaired = bytes.to_vec();
    for &at in &lone {
        // Both escapes are 6 bytes: every other byte keeps its place.
        repaired[at..at + 6].copy_from_slice(br"\uFFFD");
    }
    serde_json::from_slice::<T>(&repaired)
        .map(|value| (value, lone.len()))
        .map_err(|e| decode_error(endpoint, &e))
}

/// serde's message can quote the body (`invalid type: string "…"`): redacted.
fn decode_error(endpoint: Endpoint, error: &serde_json::Error) -> UpstreamError {
    UpstreamError::Decode {
        endpoint,
        message: redact_keys(&error.to_string()).into_owned(),
    }
}

/// Where `json` has a `\uXXXX` escape of a UTF-16 surrogate that is not
/// half of a high-then-low pair. Every other escape is stepped over whole,
/// so the `u` of an escaped backslash (`\\ud800`) is never read as one.
fn lone_surrogates(json: &[u8]) -> Vec<usize> {
    let mut lone = Vec::new();
    let mut from = 0;
    while let Some(found) = json
        .get(from..)
        .and_then(|rest| memchr::memchr(b'\\', rest))
    {
        let at = from + found;
        from = match code_unit(json, at) {
            Some(0xD800..=0xDBFF) if matches!(code_unit(json, at + 6), Some(0xDC00..=0xDFFF)) => {
                at + 12
            }
            Some(0xD800..=0xDFFF) => {
                lone.push(at);
                at + 6
            }
            Some(_) => at + 6,
            // `\\`, `\"`, `\n`…: the escaped byte is not an escape start.
            None => at + 2,
        };
    }
    lone
}

/// The UTF-16 code unit of the `\uXXXX` escape at `at`, if one is there.
fn code_unit(json: &[u8], at: usize) -> Option<u16> {
    let escape = json.get(at..at + 6)?;
    if !escape.starts_with(b"\\u") || !escape[2..].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(&escape[2..]).ok()?, 16).ok()
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

    #[test]
    fn only_unpaired_surrogate_escapes_are_found() {
        let found = |json: &str| lone_surrogates(json.as_bytes());
        assert_eq!(found(r#""\ud800x""#), [1]);
        assert_eq!(found(r#""\uDC00""#), [1], "a lone low half, upper case");
        assert!(
            found(r#""\ud83d\ude00""#).is_empty(),
            "a pair is a character"
        );
        assert_eq!(
            found(r#""\ud800\ud83d\ude00""#),
            [1],
            "a high half before a pair"
        );
        assert_eq!(
            found(r#""\ude00\ud83d""#),
            [1, 7],
            "low then high: two halves"
        );
        assert!(
            found(r#""\\ud800""#).is_empty(),
            "an escaped backslash, then text"
        );
        assert_eq!(
            found(r#""\\\ud800""#),
            [3],
            "an escaped backslash, then an escape"
        );
        assert!(found(r#""\u00e9 \n \" \ud7ff \ue000""#).is_empty());
        assert!(found(r"\").is_empty(), "a backslash at the very end");
        assert!(found(r"\ud80").is_empty(), "a cut escape");
        assert!(found(r"\u+800").is_empty(), "not hex");
    }

    #[test]
    fn a_key_name_with_a_lone_surrogate_reads_as_the_replacement_character() {
        let page =
            br#"{"data":[{"hash":"a","name":"\ud800lone"},{"hash":"b","name":"ok \ud83d\ude00"}]}"#;
        assert!(
            serde_json::from_slice::<DataEnvelope<Vec<ApiKey>>>(page).is_err(),
            "serde_json alone refuses the page"
        );
        let (keys, lone) = decode::<Vec<ApiKey>>(Endpoint::Keys, page).unwrap();
        assert_eq!(lone, 1);
        assert_eq!(&*keys[0].name, "\u{FFFD}lone");
        assert_eq!(&*keys[1].name, "ok \u{1F600}");
        assert_eq!(parse_keys_page(page).unwrap(), keys);
        // Nothing else is excused: a page still broken after the repair fails.
        let broken = br#"{"data":[{"hash":"a","name":"\ud800"},]}"#;
        assert_eq!(
            parse_keys_page(broken).unwrap_err().reason(),
            FailureReason::InvalidResponse
        );
    }

    #[test]
    fn a_key_quoted_by_serde_is_redacted_from_the_decode_error() {
        let secret = "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";
        let body = format!(r#"{{"data": "{secret}"}}"#);
        let e = parse_keys_page(body.as_bytes()).unwrap_err();
        let UpstreamError::Decode { message, .. } = &e else {
            panic!("{e:?}");
        };
        assert!(message.contains("invalid type: string"), "{message}");
        assert!(!format!("{e} {e:?}").contains("sk-or-v1"), "{e:?}");
    }
}
