//! Secrets: where one lives (an environment variable or a file), loading it,
//! and keeping anything shaped like a key out of error text. Errors name the
//! source, never the value, and even the source is redacted when someone put
//! the key itself where its variable name or file path belongs.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// A secret (the management key, or a direct key's) could not be loaded.
/// Names the source, never the value; the caller says whose secret it is.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {} is not set", redact_keys(.0))]
    EnvMissing(String),
    #[error("environment variable {} is empty", redact_keys(.0))]
    EnvEmpty(String),
    #[error("cannot read file {}: {error}", shown(path))]
    FileUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("file {} is empty", shown(.0))]
    FileEmpty(PathBuf),
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "environment variable {}", redact_keys(var)),
            SecretSource::File(path) => write!(f, "file {}", shown(path)),
        }
    }
}

impl fmt::Debug for SecretSource {
    /// Redacted like `Display`: a `Config` printed with `{:?}` must not show a misplaced key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => f.debug_tuple("Env").field(&redact_keys(var)).finish(),
            SecretSource::File(path) => f.debug_tuple("File").field(&shown(path)).finish(),
        }
    }
}

impl SecretSource {
    /// Reads the management key. The error names the variable or file, never the value.
    pub fn load(&self) -> Result<SecretString, SecretError> {
        let value = match self {
            SecretSource::Env(var) => {
                let value = std::env::var(var).map_err(|_| SecretError::EnvMissing(var.clone()))?;
                if value.trim().is_empty() {
                    return Err(SecretError::EnvEmpty(var.clone()));
                }
                value.trim().to_string()
            }
            SecretSource::File(path) => {
                let value =
                    std::fs::read_to_string(path).map_err(|error| SecretError::FileUnreadable {
                        path: path.clone(),
                        error,
                    })?;
                // Secret files usually end with a newline (echo, kubectl create secret).
                let value = value.trim_end_matches(['\n', '\r']).to_string();
                if value.trim().is_empty() {
                    return Err(SecretError::FileEmpty(path.clone()));
                }
                value
            }
        };
        Ok(SecretString::from(value))
    }
}

/// A path as error text, redacted.
fn shown(path: &Path) -> String {
    redact_keys(&path.display().to_string())
}

/// Replaces anything that looks like an OpenRouter key with `[REDACTED]`:
/// `sk-or-` in any letter case, its dashes possibly JSON-escaped
/// (`sk\u002dor\u002d…`), and the rest of the key after it.
pub(crate) fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((start, prefix)) = find_key(rest) {
        out.push_str(&rest[..start]);
        out.push_str("[REDACTED]");
        let tail = &rest[start + prefix..];
        rest = &tail[key_body_len(tail)..];
    }
    out.push_str(rest);
    out
}

/// True when `text` holds something shaped like an OpenRouter key.
pub(crate) fn looks_like_key(text: &str) -> bool {
    find_key(text).is_some()
}

/// Where the first `sk-or-` starts in `text`, and its length there.
fn find_key(text: &str) -> Option<(usize, usize)> {
    text.char_indices()
        .filter(|(_, c)| c.eq_ignore_ascii_case(&'s'))
        .find_map(|(i, _)| key_prefix_len(&text[i..]).map(|len| (i, len)))
}

/// The length of `sk-or-` (any case, either dash maybe `\u002d`) starting `s`.
fn key_prefix_len(s: &str) -> Option<usize> {
    let mut at = 0;
    for part in ["sk", "or"] {
        if !s.get(at..at + 2)?.eq_ignore_ascii_case(part) {
            return None;
        }
        at += 2;
        at += dash_len(&s[at..])?;
    }
    Some(at)
}

/// A dash, or its JSON escape `\u002d` (the backslash maybe escaped again,
/// as `{:?}` does), at the start of `s`: its length.
fn dash_len(s: &str) -> Option<usize> {
    if s.starts_with('-') {
        return Some(1);
    }
    let slashes = s.len() - s.trim_start_matches('\\').len();
    let escape = s.get(slashes..slashes + 5)?;
    (slashes > 0 && escape.eq_ignore_ascii_case("u002d")).then_some(slashes + 5)
}

/// How much of `s` continues a key: letters, digits, `_` and (escaped) dashes.
fn key_body_len(s: &str) -> usize {
    let mut at = 0;
    while let Some(rest) = s.get(at..).filter(|r| !r.is_empty()) {
        if let Some(len) = dash_len(rest) {
            at += len;
        } else if rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            at += 1;
        } else {
            break;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_trailing_newline_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-or-v1-abc\n").unwrap();
        let secret = SecretSource::File(path).load().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(secret.expose_secret(), "sk-or-v1-abc");
    }

    #[test]
    fn missing_secret_names_the_source() {
        let err = SecretSource::Env("OPENROUTER_TEST_SURELY_UNSET_VAR".into())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("OPENROUTER_TEST_SURELY_UNSET_VAR"));
        let err = SecretSource::File("/nonexistent/secret".into())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/secret"));
    }

    #[test]
    fn keys_of_any_case_and_escaping_are_redacted() {
        let cases = [
            ("sk-or-v1-0f1e", "[REDACTED]"),
            (
                "Bearer sk-or-v1-0f1e is not set",
                "Bearer [REDACTED] is not set",
            ),
            ("x SK-OR-V1-ABC_d, y", "x [REDACTED], y"),
            (
                "{\"detail\":\"sk\\u002dor\\u002dv1\\u002dLEAK\"}",
                "{\"detail\":\"[REDACTED]\"}",
            ),
            ("sk\\u002Dor-v1\\u002Dabc", "[REDACTED]"),
            ("\"sk\\\\u002dor\\\\u002dv1\"", "\"[REDACTED]\""),
            ("a sk-or-1 and sk-or-2.", "a [REDACTED] and [REDACTED]."),
            (
                "nothing here: sk-o, skor, sk-or",
                "nothing here: sk-o, skor, sk-or",
            ),
            ("ünïcode sk-or-é", "ünïcode [REDACTED]é"),
        ];
        for (text, redacted) in cases {
            assert_eq!(redact_keys(text), redacted, "{text}");
        }
        assert!(looks_like_key(" Sk-Or-v1-x"));
        assert!(!looks_like_key("OPENROUTER_MANAGEMENT_KEY"));
    }

    #[test]
    fn a_key_in_the_wrong_field_is_not_echoed() {
        let key = "sk-or-v1-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let sources = [
            SecretSource::File(key.into()),
            SecretSource::File(format!("/run/secrets/{key}").into()),
            SecretSource::Env(format!("Bearer {key}")),
            SecretSource::Env(format!(" {key}")),
        ];
        for source in sources {
            let err = source.load().unwrap_err().to_string();
            assert!(!err.contains("0f1e2d"), "{err}");
            assert!(err.contains("[REDACTED]"), "{err}");
            for shown in [source.to_string(), format!("{source:?}")] {
                assert!(!shown.contains("0f1e2d"), "{shown}");
            }
        }
        let empty = SecretError::FileEmpty(key.into()).to_string();
        assert_eq!(empty, "file [REDACTED] is empty");
        let empty = SecretError::EnvEmpty(key.into()).to_string();
        assert_eq!(empty, "environment variable [REDACTED] is empty");
    }
}
