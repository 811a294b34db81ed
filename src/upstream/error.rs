//! Why an OpenRouter call failed: [`Endpoint`], [`UpstreamError`] and its
//! bounded failure reason, and what is taken from an error answer: its text,
//! with the management key kept out of it, and the wait a 429 body names.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;

use crate::telemetry::FailureReason;

/// Bodies above this are refused: a key page is ~100 KiB, so this is a hostile or broken upstream.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Which API call failed; a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Workspaces,
    Keys,
    Credits,
    Activity,
    /// `GET /key`: the calling key itself (direct-key mode).
    Key,
    /// `GET /organization/members`.
    Members,
    /// `GET /guardrails`.
    Guardrails,
    /// `GET /guardrails/assignments/keys`.
    GuardrailAssignments,
    /// `GET /workspaces/{id}/budgets`.
    WorkspaceBudgets,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Workspaces => "workspaces",
            Endpoint::Keys => "keys",
            Endpoint::Credits => "credits",
            Endpoint::Activity => "activity",
            Endpoint::Key => "key",
            Endpoint::Members => "organization/members",
            Endpoint::Guardrails => "guardrails",
            Endpoint::GuardrailAssignments => "guardrails/assignments/keys",
            Endpoint::WorkspaceBudgets => "workspaces/{id}/budgets",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every text field is redacted of key-shaped text twice over: when the
/// error is built from an answer (so `Debug` carries no key either) and again
/// in `Display`, whatever built it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "GET /{endpoint}: HTTP {status}: {} (OpenRouter needs a management key here, \
         created at https://openrouter.ai/settings/management-keys; an inference key is refused)",
        redact_keys(.message)
    )]
    Unauthorized {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    #[error("GET /{endpoint}: HTTP {status}: {}", redact_keys(.message))]
    Status {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    /// A 3xx answer. OpenRouter's API never redirects, and a redirect is never
    /// followed: a second hop could carry the key to another origin.
    #[error(
        "GET /{endpoint}: HTTP {status} redirect to {}, not followed: OpenRouter's API does not \
         redirect; check openrouter.base_url",
        redact_keys(.location)
    )]
    Redirect {
        endpoint: Endpoint,
        status: u16,
        location: String,
    },
    #[error("GET /{endpoint}: rate limited: the server asks to wait {retry_after:?}, past the refresh deadline")]
    RetryAfterPastDeadline {
        endpoint: Endpoint,
        retry_after: Duration,
    },
    #[error("GET /{endpoint}: timed out")]
    Timeout { endpoint: Endpoint },
    #[error("GET /{endpoint}: {}", redact_keys(.message))]
    Transport { endpoint: Endpoint, message: String },
    #[error("GET /{endpoint}: invalid response: {}", redact_keys(.message))]
    Decode { endpoint: Endpoint, message: String },
    #[error("GET /{endpoint}: response body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { endpoint: Endpoint },
    /// `listing` names what was being listed: `/workspaces` or `/keys?workspace_id=…`.
    #[error(
        "GET {}: pagination did not end: {}",
        redact_keys(.listing),
        redact_keys(.message)
    )]
    Pagination { listing: String, message: String },
    #[error(
        "workspace {:?} is neither a workspace id nor the slug of a workspace of this account",
        redact_keys(.0)
    )]
    UnknownWorkspace(String),
    #[error("cannot build the HTTP client: {}", redact_keys(.0))]
    Client(String),
}

impl UpstreamError {
    /// Bounded `reason` label for `openrouter_refresh_failures_total`.
    pub fn reason(&self) -> FailureReason {
        match self {
            UpstreamError::Unauthorized { .. } => FailureReason::Unauthorized,
            UpstreamError::Status { status: 429, .. }
            | UpstreamError::RetryAfterPastDeadline { .. } => FailureReason::RateLimited,
            UpstreamError::Status { status, .. } if *status >= 500 => FailureReason::ServerError,
            UpstreamError::Status { .. } | UpstreamError::UnknownWorkspace(_) => {
                FailureReason::ClientError
            }
            UpstreamError::Timeout { .. } => FailureReason::Timeout,
            UpstreamError::Transport { .. } | UpstreamError::Client(_) => FailureReason::Connection,
            UpstreamError::Decode { .. }
            | UpstreamError::TooLarge { .. }
            | UpstreamError::Redirect { .. } => FailureReason::InvalidResponse,
            UpstreamError::Pagination { .. } => FailureReason::Pagination,
        }
    }

    /// Worth another attempt: 429, 5xx, a timeout or a transport failure.
    pub(super) fn retryable(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => *status == 429 || *status >= 500,
            UpstreamError::Timeout { .. } | UpstreamError::Transport { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status, when the server answered with an error or a redirect.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Unauthorized { status, .. }
            | UpstreamError::Status { status, .. }
            | UpstreamError::Redirect { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A listing that did not end (`reason="pagination"`).
pub(super) fn pagination(listing: &str, message: String) -> UpstreamError {
    UpstreamError::Pagination {
        listing: listing.to_string(),
        message,
    }
}

/// A non-2xx answer: 401 and 403 ask for a management key, the rest carry
/// the server's own message (`secret` redacted).
pub(super) fn status_error(
    endpoint: Endpoint,
    status: u16,
    body: &[u8],
    secret: &str,
) -> UpstreamError {
    let message = upstream_message(body, secret);
    if status == 401 || status == 403 {
        UpstreamError::Unauthorized {
            endpoint,
            status,
            message,
        }
    } else {
        UpstreamError::Status {
            endpoint,
            status,
            message,
        }
    }
}

/// A 3xx answer, naming where it pointed (`secret` redacted, cut to 300 bytes).
pub(super) fn redirect_error(
    endpoint: Endpoint,
    status: u16,
    location: Option<&reqwest::header::HeaderValue>,
    secret: &str,
) -> UpstreamError {
    let location = match location.map(|v| v.to_str()) {
        Some(Ok(location)) => truncate(&redact(location, secret), 300),
        Some(Err(_)) => "a Location that is not text".to_string(),
        None => "no Location".to_string(),
    };
    UpstreamError::Redirect {
        endpoint,
        status,
        location,
    }
}

pub(super) fn transport_error(endpoint: Endpoint, error: reqwest::Error) -> UpstreamError {
    if error.is_timeout() {
        return UpstreamError::Timeout { endpoint };
    }
    // The URL holds no secret, but the error chain is what operators need.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    UpstreamError::Transport {
        endpoint,
        message: redact_keys(&message).into_owned(),
    }
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

/// The `error.message` of an OpenRouter error body, or a short excerpt of
/// whatever came back, with the management key (`secret`) redacted.
fn upstream_message(body: &[u8], secret: &str) -> String {
    // Redact before truncating, so no prefix of the key survives a cut.
    let text = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => redact(&envelope.error.message, secret),
        Err(_) => redact(String::from_utf8_lossy(body).trim(), secret),
    };
    if text.is_empty() {
        "empty body".to_string()
    } else {
        truncate(&text, 300)
    }
}

/// The wait a 429 body names when no `Retry-After` header came: live 429s
/// copy the rate-limit headers into `error.metadata.headers`, as strings,
/// with `X-RateLimit-Reset` in epoch **milliseconds**. `now_ms` is the
/// current time in epoch milliseconds; a reset already past waits nothing.
pub(super) fn body_reset_wait(body: &[u8], now_ms: u64) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let headers = value
        .get("error")?
        .get("metadata")?
        .get("headers")?
        .as_object()?;
    let reset = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-ratelimit-reset"))?
        .1;
    let reset_ms = match reset {
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok()?,
        other => other.as_u64()?,
    };
    Some(Duration::from_millis(reset_ms.saturating_sub(now_ms)))
}

/// A proxy or server that echoes the request (headers included) into its
/// error body must not carry the management key into our logs and errors:
/// `secret` itself goes, and anything else shaped like a key ([`redact_keys`]).
pub(super) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        return redact_keys(text).into_owned();
    }
    redact_keys(&text.replace(secret, "[REDACTED]")).into_owned()
}

/// Replaces anything shaped like an OpenRouter key with `[REDACTED]`:
/// `sk-or-` in any case, then every key character after it, where each
/// character may also be spelt as a JSON `\uXXXX` escape, once or twice
/// escaped (`sk\u002dor\u002dv1…`, as an echoing server or serde's message
/// may write it).
pub(super) fn redact_keys(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        let Some(end) = key_at(bytes, at) else {
            at += 1;
            continue;
        };
        // `at` and `end` border ASCII units, so both are char boundaries.
        out.push_str(&text[copied..at]);
        out.push_str("[REDACTED]");
        copied = end;
        at = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The end of a key-shaped run starting at `at`, if one starts there.
fn key_at(bytes: &[u8], at: usize) -> Option<usize> {
    let mut end = at;
    for want in *b"sk-or-" {
        let (got, len) = ascii_unit(bytes, end)?;
        if got.to_ascii_lowercase() != want {
            return None;
        }
        end += len;
    }
    while let Some((got, len)) = ascii_unit(bytes, end) {
        if !(got.is_ascii_alphanumeric() || got == b'-' || got == b'_') {
            break;
        }
        end += len;
    }
    Some(end)
}

/// The ASCII character at `at` and its length in `bytes`: itself, or a
/// `\uXXXX` escape behind one or more backslashes.
fn ascii_unit(bytes: &[u8], at: usize) -> Option<(u8, usize)> {
    let first = *bytes.get(at)?;
    if first != b'\\' {
        return first.is_ascii().then_some((first, 1));
    }
    let slashes = bytes[at..].iter().take_while(|&&b| b == b'\\').count();
    let escape = bytes.get(at + slashes..at + slashes + 5)?;
    if escape[0] != b'u' || !escape[1..].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let hex = std::str::from_utf8(&escape[1..]).ok()?;
    let unit = u8::try_from(u16::from_str_radix(hex, 16).ok()?).ok()?;
    unit.is_ascii().then_some((unit, slashes + 5))
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_extracted_and_truncated() {
        assert_eq!(
            upstream_message(br#"{"error":{"code":500,"message":"boom"}}"#, "k"),
            "boom"
        );
        assert_eq!(upstream_message(b"", "k"), "empty body");
        let long = "x".repeat(1000);
        assert!(upstream_message(long.as_bytes(), "k").chars().count() <= 301);
    }

    #[test]
    fn a_429_body_names_its_reset_in_epoch_milliseconds() {
        // The live shape (error_429.free_models_per_min_2025-12-13.json).
        let body = br#"{"error":{"message":"Rate limit exceeded: free-models-per-min. ","code":429,
            "metadata":{"headers":{"X-RateLimit-Limit":"20","X-RateLimit-Remaining":"0",
            "X-RateLimit-Reset":"1765661700000"},"provider_name":null}},
            "user_id":"user_2tsSIuSAxDMYKP7X6YbWZaK19xm"}"#;
        let now = 1_765_661_700_000 - 42_500;
        assert_eq!(
            body_reset_wait(body, now),
            Some(Duration::from_millis(42_500))
        );
        assert_eq!(
            body_reset_wait(body, now + 60_000),
            Some(Duration::ZERO),
            "a reset already past waits nothing"
        );
        let number = br#"{"error":{"metadata":{"headers":{"x-ratelimit-reset":2000}}}}"#;
        assert_eq!(
            body_reset_wait(number, 500),
            Some(Duration::from_millis(1500))
        );
        for none in [
            &br#"{"error":{"code":429,"message":"Rate limit exceeded"}}"#[..],
            br#"{"error":{"metadata":{"headers":{"X-RateLimit-Reset":"soon"}}}}"#,
            b"not json",
        ] {
            assert_eq!(body_reset_wait(none, 0), None);
        }
    }

    #[test]
    fn an_echoed_management_key_is_redacted_before_truncation() {
        let secret = "sk-or-v1-SECRET-abcdef";
        let echo = format!("{}Authorization: Bearer {secret}", "x".repeat(290));
        let message = upstream_message(echo.as_bytes(), secret);
        assert!(!message.contains("sk-or-v1-SECRET"), "{message}");
        let json = format!(r#"{{"error":{{"code":400,"message":"bad header Bearer {secret}"}}}}"#);
        assert_eq!(
            upstream_message(json.as_bytes(), secret),
            "bad header Bearer [REDACTED]"
        );
    }

    const KEY: &str = "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";

    #[test]
    fn key_shaped_text_is_redacted_in_every_spelling() {
        let escaped = KEY.replace('-', "\\u002d");
        let cases = [
            format!("Bearer {KEY}"),
            format!("Bearer {}", KEY.to_uppercase()),
            format!("Bearer Sk-Or-{}", &KEY[6..]),
            format!(r#"{{"detail":"{escaped}"}}"#),
            format!(r#"{{"detail":"{}"}}"#, KEY.replace('-', "\\u002D")),
            format!(r#"{{"detail":"{}"}}"#, escaped.replace('\\', "\\\\")),
            format!("{}{}", "\\u0073\\u006b", &KEY[2..]),
            format!(r#"invalid type: string "{KEY}", expected a sequence at line 1 column 78"#),
            format!("text/x-{KEY}; charset=utf-8"),
        ];
        for text in &cases {
            let redacted = redact_keys(text);
            assert!(redacted.contains("[REDACTED]"), "{text} -> {redacted}");
            assert!(
                !redacted.to_ascii_lowercase().contains("0f1e2d3c"),
                "{text} -> {redacted}"
            );
        }
        assert_eq!(
            redact_keys(&format!(r#"string "{KEY}", expected"#)),
            r#"string "[REDACTED]", expected"#
        );
        assert_eq!(
            redact_keys(&format!(r#""{escaped}\" tail"#)),
            r#""[REDACTED]\" tail"#,
            "an escape that is not a key character ends the key"
        );
        assert_eq!(
            redact_keys(&format!("a {KEY} b {KEY} c")),
            "a [REDACTED] b [REDACTED] c"
        );
        // Text without a key is left alone, byte for byte.
        for text in ["plain", "skor sk-o sk_or-x", "é \\u002d \\ \\u00", "sk-"] {
            assert!(
                matches!(redact_keys(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn every_error_text_is_redacted_in_display() {
        let endpoint = Endpoint::Keys;
        let leak = || format!("echo {KEY}");
        let errors = [
            UpstreamError::Unauthorized {
                endpoint,
                status: 401,
                message: leak(),
            },
            UpstreamError::Status {
                endpoint,
                status: 400,
                message: leak(),
            },
            UpstreamError::Redirect {
                endpoint,
                status: 302,
                location: format!("https://example.com/?k={KEY}"),
            },
            UpstreamError::Transport {
                endpoint,
                message: leak(),
            },
            UpstreamError::Decode {
                endpoint,
                message: leak(),
            },
            UpstreamError::Pagination {
                listing: format!("/keys?workspace_id={KEY}"),
                message: leak(),
            },
            UpstreamError::UnknownWorkspace(KEY.to_string()),
            UpstreamError::Client(leak()),
        ];
        for e in &errors {
            let text = e.to_string();
            assert!(!text.contains("sk-or-"), "{text}");
            assert!(text.contains("[REDACTED]"), "{text}");
        }
    }

    #[test]
    fn an_echoed_key_is_redacted_from_error_bodies_in_any_spelling() {
        // The configured key, even when it is not shaped like one.
        assert_eq!(
            upstream_message(b"got Bearer abc123", "abc123"),
            "got Bearer [REDACTED]"
        );
        // Any key-shaped text, JSON-escaped in a body that is not an error envelope.
        let body = format!(r#"{{"detail":"{}"}}"#, KEY.replace('-', "\\u002d"));
        let message = upstream_message(body.as_bytes(), "another-secret");
        assert_eq!(message, r#"{"detail":"[REDACTED]"}"#);
        // In upper case, as a lower-cased content type could once have hidden it.
        assert_eq!(redact(&KEY.to_uppercase(), KEY), "[REDACTED]");
    }

    #[test]
    fn a_redirect_names_its_location_without_the_key() {
        let location = reqwest::header::HeaderValue::from_str(&format!(
            "https://elsewhere.example/api?token={KEY}"
        ))
        .unwrap();
        let e = redirect_error(Endpoint::Credits, 302, Some(&location), KEY);
        assert_eq!(e.reason(), FailureReason::InvalidResponse);
        assert_eq!(e.status(), Some(302));
        assert!(!e.retryable());
        let text = format!("{e} {e:?}");
        assert!(
            text.contains("https://elsewhere.example/api?token=[REDACTED]"),
            "{text}"
        );
        assert!(!text.contains("sk-or-"), "{text}");
        let none = redirect_error(Endpoint::Credits, 301, None, KEY);
        assert!(
            none.to_string().contains("redirect to no Location"),
            "{none}"
        );
    }
}
