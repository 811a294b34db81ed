//! Why an OpenRouter call failed: [`Endpoint`], [`UpstreamError`] and its
//! bounded failure reason, and the error text taken from an answer, with the
//! management key kept out of it.

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

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "GET /{endpoint}: HTTP {status}: {message} (OpenRouter needs a management key here, \
         created at https://openrouter.ai/settings/management-keys; an inference key is refused)"
    )]
    Unauthorized {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    #[error("GET /{endpoint}: HTTP {status}: {message}")]
    Status {
        endpoint: Endpoint,
        status: u16,
        message: String,
    },
    #[error("GET /{endpoint}: rate limited: the server asks to wait {retry_after:?}, past the refresh deadline")]
    RetryAfterPastDeadline {
        endpoint: Endpoint,
        retry_after: Duration,
    },
    #[error("GET /{endpoint}: timed out")]
    Timeout { endpoint: Endpoint },
    #[error("GET /{endpoint}: {message}")]
    Transport { endpoint: Endpoint, message: String },
    #[error("GET /{endpoint}: invalid response: {message}")]
    Decode { endpoint: Endpoint, message: String },
    #[error("GET /{endpoint}: response body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { endpoint: Endpoint },
    /// `listing` names what was being listed: `/workspaces` or `/keys?workspace_id=…`.
    #[error("GET {listing}: pagination did not end: {message}")]
    Pagination { listing: String, message: String },
    #[error(
        "workspace {0:?} is neither a workspace id nor the slug of a workspace of this account"
    )]
    UnknownWorkspace(String),
    #[error("cannot build the HTTP client: {0}")]
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
            UpstreamError::Decode { .. } | UpstreamError::TooLarge { .. } => {
                FailureReason::InvalidResponse
            }
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

    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Unauthorized { status, .. } | UpstreamError::Status { status, .. } => {
                Some(*status)
            }
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
    UpstreamError::Transport { endpoint, message }
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

/// A proxy or server that echoes the request (headers included) into its
/// error body must not carry the management key into our logs and errors.
pub(super) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        return text.to_string();
    }
    text.replace(secret, "[REDACTED]")
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
}
