//! `--web.config.file`: TLS, client certificates and HTTP basic auth, in the
//! Prometheus exporter-toolkit web-config format
//! (<https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>).
//!
//! The file is read once at startup; a bad file stops the exporter with an
//! error naming the file and the field. Relative paths in `tls_server_config`
//! are relative to the web config file's directory, as in exporter-toolkit.
//! The certificate and key *files* are watched: when either changes on disk,
//! the next TLS handshake picks up the new pair (certificate rotation without
//! a restart); a broken replacement is logged and the previous pair kept.
//!
//! Supported, beyond exporter-toolkit's basics: inline `cert`/`key`/`client_ca`,
//! `min_version`/`max_version` (rustls speaks TLS 1.2 and 1.3 only),
//! `cipher_suites` (TLS 1.2 suites; TLS 1.3 suites are always on, as in Go),
//! `curve_preferences`, `prefer_server_cipher_suites`, and
//! `http_server_config.headers`, `auth_excluded_paths` (exact paths served
//! without basic auth, as in newer exporter-toolkit). Refused with a clear error: the client auth
//! types that accept unverified certificates, `client_allowed_sans` and
//! `rate_limit` — silently ignoring a security setting would be worse.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use rustls::ServerConfig;
use secrecy::SecretString;
use serde::Deserialize;

use crate::config::redact_keys;
use crate::config::yaml::UniqueMap;

mod basic_auth;
mod tls;

pub use basic_auth::BasicAuth;
use tls::build_tls;

/// The `WWW-Authenticate` value sent with every 401.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"openrouter-cost-exporter\"";

/// Successful verifications remembered; the map is cleared when it is full.
/// Only successes are cached, so wrong guesses cannot churn it.
const AUTH_CACHE_CAPACITY: usize = 1024;

/// How often, at most, the certificate files are checked for changes.
const CERT_RECHECK: Duration = Duration::from_secs(1);

/// A bad web config: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("web config file {}: {message}", path.display())]
pub struct WebConfigError {
    pub path: PathBuf,
    pub message: String,
}

/// The loaded web config. `Default` is plain HTTP without authentication.
/// Cheap to clone: everything is shared.
#[derive(Clone, Default)]
pub struct WebConfig {
    tls: Option<Arc<ServerConfig>>,
    client_auth: ClientAuth,
    auth: Option<Arc<BasicAuth>>,
    /// Paths served without basic auth (exact match), e.g. `/healthz` for probes.
    auth_excluded_paths: Arc<Vec<String>>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    /// Risky but valid settings, said at start and by `--config.check`.
    warnings: Arc<Vec<String>>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password hashes or keys: only what is switched on.
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field(
                "basic_auth_users",
                &self.auth.as_ref().map_or(0, |a| a.users.len()),
            )
            .field("auth_excluded_paths", &self.auth_excluded_paths)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How client certificates are handled when TLS is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl WebConfig {
    /// Reads and validates `path`, including the certificate, key and CA files.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| WebConfigError {
            path: path.to_path_buf(),
            message: redact_keys(&format!("cannot read it: {e}")),
        })?;
        WebConfig::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (relative file names resolve against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        // A key pasted into the wrong file is never echoed back.
        let error = |message: String| WebConfigError {
            path: path.to_path_buf(),
            message: redact_keys(&message),
        };
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_yaml::from_str::<Option<RawWebConfig>>(text)
                .map_err(|e| error(e.to_string()))?
                .unwrap_or_default()
        };
        let users_written = users_written(raw.basic_auth_users.as_ref(), text);
        let dir = path.parent().unwrap_or(Path::new(""));
        let (tls, client_auth) = match raw.tls_server_config {
            Some(t) => match build_tls(t, dir).map_err(error)? {
                Some((config, client_auth)) => (Some(config), client_auth),
                None => (None, ClientAuth::NoClientCert),
            },
            None => (None, ClientAuth::NoClientCert),
        };
        // A user or header given twice is an error naming both places, not "the last one wins".
        let headers = match raw.http_server_config.and_then(|http| http.headers) {
            Some(headers) => {
                if let Some(dup) = headers.duplicates.first() {
                    return Err(error(format!(
                        "http_server_config.headers.{}: {}",
                        dup.key,
                        dup.describe("header", text, &["http_server_config", "headers"])
                    )));
                }
                build_headers(headers.entries.into_iter().collect()).map_err(error)?
            }
            None => Vec::new(),
        };
        if let Some(rate) = raw.rate_limit {
            if rate.interval.is_some_and(|i| !i.is_zero()) {
                return Err(error(
                    "rate_limit: not supported by this exporter (put a reverse proxy in front, \
                     or remove the section)"
                        .to_string(),
                ));
            }
        }
        let auth = match raw.basic_auth_users {
            Some(users) if !users.duplicates.is_empty() => {
                let dup = &users.duplicates[0];
                return Err(error(format!(
                    "basic_auth_users.{}: {}",
                    dup.key,
                    dup.describe("user", text, &["basic_auth_users"])
                )));
            }
            Some(users) if !users.entries.is_empty() => Some(Arc::new(
                BasicAuth::new(users.entries.into_iter().collect()).map_err(error)?,
            )),
            _ => None,
        };
        let excluded = raw.auth_excluded_paths.unwrap_or_default();
        if let Some(bad) = excluded.iter().find(|p| !p.starts_with('/')) {
            return Err(error(format!(
                "auth_excluded_paths: {bad:?} is not a path (it must start with '/')"
            )));
        }
        let warnings = risks(tls.is_some(), client_auth, users_written)
            .into_iter()
            .map(|w| format!("web config file {}: {w}", path.display()))
            .collect();
        Ok(WebConfig {
            tls,
            client_auth,
            auth,
            auth_excluded_paths: Arc::new(excluded),
            headers: Arc::new(headers),
            warnings: Arc::new(warnings),
        })
    }

    /// Risky settings of the file, one sentence each, naming the file: said
    /// at start and by `--config.check`, never refused.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The rustls config, when TLS is on.
    pub fn tls(&self) -> Option<Arc<ServerConfig>> {
        self.tls.clone()
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The basic-auth checker, when `basic_auth_users` is not empty.
    pub fn basic_auth(&self) -> Option<&BasicAuth> {
        self.auth.as_deref()
    }

    /// The basic-auth checker that applies to a request for `path`: `None`
    /// when basic auth is off or `path` is listed in `auth_excluded_paths`.
    pub fn basic_auth_for(&self, path: &str) -> Option<&BasicAuth> {
        self.auth
            .as_deref()
            .filter(|_| !self.auth_excluded_paths.iter().any(|p| p == path))
    }

    /// Headers from `http_server_config.headers`, added to every response.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

// ---------------------------------------------------------------------------
// Warnings

/// Valid settings that protect less than they seem to. `users` is the number
/// of `basic_auth_users`, `None` when the field is not written at all. A file
/// with TLS and no authentication is not warned about: encryption alone is a
/// common, deliberate choice.
fn risks(tls: bool, client_auth: ClientAuth, users: Option<usize>) -> Vec<String> {
    let mut risks = Vec::new();
    let has_users = users.is_some_and(|n| n > 0);
    if has_users && !tls {
        risks.push(
            "basic_auth_users without tls_server_config: passwords cross the network in clear \
             (basic auth is only Base64); add TLS, or keep the exporter on a trusted network"
                .to_string(),
        );
    }
    if users == Some(0) {
        risks.push(
            "basic_auth_users is empty: basic auth is off, and every request is served \
             without a password"
                .to_string(),
        );
    }
    if client_auth == ClientAuth::VerifyClientCertIfGiven && !has_users {
        risks.push(
            "client_auth_type VerifyClientCertIfGiven without basic_auth_users: a client \
             without a certificate gets in, so nobody has to authenticate; use \
             RequireAndVerifyClientCert or add basic_auth_users"
                .to_string(),
        );
    }
    if !tls && users.is_none() {
        risks.push(
            "neither tls_server_config nor basic_auth_users is set: everything is served over \
             plain HTTP without authentication, as without --web.config.file"
                .to_string(),
        );
    }
    risks
}

/// How many `basic_auth_users` the file lists; `None` when it does not write
/// the field. serde reads `basic_auth_users:` with no value as no field at
/// all, so the text tells those two apart: an empty list is worth a warning.
fn users_written(users: Option<&UniqueMap<SecretString>>, text: &str) -> Option<usize> {
    match users {
        Some(users) => Some(users.entries.len()),
        None => serde_yaml::from_str::<serde_yaml::Value>(text)
            .is_ok_and(|v| v.get("basic_auth_users").is_some())
            .then_some(0),
    }
}

// ---------------------------------------------------------------------------
// The file format.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<UniqueMap<SecretString>>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    auth_excluded_paths: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<SecretString>,
    #[serde(default)]
    client_ca: Option<String>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; this exporter serves HTTP/1.1 only.
    #[serde(default)]
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<UniqueMap<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default)]
    #[allow(dead_code)]
    burst: Option<u64>,
}

/// Empty strings count as unset, as in Go.
fn set<T: AsRef<str>>(v: &Option<T>) -> bool {
    v.as_ref().is_some_and(|s| !s.as_ref().is_empty())
}

fn set_path(v: &Option<PathBuf>) -> bool {
    v.as_ref().is_some_and(|p| !p.as_os_str().is_empty())
}

// ---------------------------------------------------------------------------
// http_server_config.headers

fn build_headers(raw: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    // The same closed list as exporter-toolkit, with its enumerated values.
    const ALLOWED: &[(&str, &[&str])] = &[
        ("Strict-Transport-Security", &[]),
        ("X-Content-Type-Options", &["nosniff"]),
        ("X-Frame-Options", &["deny", "sameorigin"]),
        ("X-XSS-Protection", &[]),
        ("Content-Security-Policy", &[]),
    ];
    let mut out = Vec::new();
    for (name, value) in raw {
        let Some((canonical, values)) = ALLOWED.iter().find(|(n, _)| *n == name) else {
            let names: Vec<_> = ALLOWED.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "http_server_config.headers: HTTP header {name:?} can not be configured (allowed: {})",
                names.join(", ")
            ));
        };
        if value.is_empty() {
            continue;
        }
        if !values.is_empty() && !values.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers.{canonical}: invalid value {value:?} (expected one of: {})",
                values.join(", ")
            ));
        }
        let header_value = HeaderValue::from_str(&value).map_err(|_| {
            format!("http_server_config.headers.{canonical}: {value:?} is not a valid header value")
        })?;
        // `from_bytes` lowercases the canonical spelling.
        let header_name =
            HeaderName::from_bytes(canonical.as_bytes()).expect("allowed header names are valid");
        out.push((header_name, header_value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::basic_auth::parse_basic;
    use super::*;

    fn parse(yaml: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(yaml, Path::new("/etc/exporter/web.yml"))
    }

    #[test]
    fn a_key_pasted_into_the_web_config_is_not_echoed() {
        let err =
            parse("basic_auth_users: sk-or-v1-0123456789abcdef0123456789abcdef\n").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
    }

    #[test]
    fn empty_file_is_plain_http() {
        let c = parse("").unwrap();
        assert!(!c.tls_enabled());
        assert!(c.basic_auth().is_none());
        let c = parse("{}\n").unwrap();
        assert!(!c.tls_enabled());
        let c = parse("basic_auth_users: {}\ntls_server_config: {}\n").unwrap();
        assert!(c.basic_auth().is_none());
        assert!(!c.tls_enabled());
    }

    #[test]
    fn unknown_fields_name_file_and_field() {
        let e = parse("tls_server_config:\n  cert_fil: x\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/etc/exporter/web.yml"), "{msg}");
        assert!(msg.contains("cert_fil"), "{msg}");
        let e = parse("basic_auth:\n  a: b\n").unwrap_err().to_string();
        assert!(e.contains("basic_auth"), "{e}");
    }

    #[test]
    fn bad_hash_is_rejected_and_not_echoed() {
        let e = parse("basic_auth_users:\n  alice: plaintextpassword\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("basic_auth_users.alice"), "{e}");
        assert!(e.contains("bcrypt"), "{e}");
        assert!(!e.contains("plaintextpassword"), "{e}");
    }

    #[test]
    fn missing_cert_file_is_an_error() {
        let e = parse("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/exporter/nope.crt"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: a.crt\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key_file"), "{e}");
        let e = parse("tls_server_config:\n  min_version: TLS13\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cert_file"), "{e}");
    }

    #[test]
    fn headers_follow_the_toolkit_list() {
        let c = parse(
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"\"\n",
        )
        .unwrap();
        assert_eq!(c.headers().len(), 1);
        assert_eq!(c.headers()[0].0.as_str(), "x-frame-options");
        assert!(parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").is_err());
        assert!(parse("http_server_config:\n  headers:\n    Server: x\n").is_err());
    }

    #[test]
    fn a_user_or_header_twice_is_an_error_naming_both_places() {
        let hash = "$2y$04$abcdefghijklmnopqrstuuAbCdEfGhIjKlMnOpQrStUvWxYz012345";
        let e = parse(&format!(
            "basic_auth_users:\n  alice: {hash}\n  bob: {hash}\n  alice: {hash}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("basic_auth_users.alice"), "{e}");
        assert!(e.contains("defined twice"), "{e}");
        assert!(e.contains("lines 2 and 4"), "{e}");
        assert!(e.contains("entries 1 and 3"), "{e}");
        assert!(!e.contains(hash), "the hash is not echoed: {e}");

        let e = parse(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Frame-Options: sameorigin\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http_server_config.headers.X-Frame-Options"),
            "{e}"
        );
        assert!(e.contains("lines 3 and 4"), "{e}");
        // Flow style: no lines, but the entries still say where.
        let e = parse("basic_auth_users: {a: x, a: y}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("entries 1 and 2"), "{e}");
    }

    #[test]
    fn rate_limit_is_refused_unless_disabled() {
        assert!(parse("rate_limit:\n  interval: 1s\n  burst: 5\n").is_err());
        assert!(parse("rate_limit:\n  interval: 0s\n").is_ok());
    }

    #[test]
    fn basic_header_parsing() {
        let v = HeaderValue::from_static("Basic YWxpY2U6cDpzcw==");
        assert_eq!(parse_basic(&v), Some((b"alice".to_vec(), b"p:ss".to_vec())));
        assert_eq!(parse_basic(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(parse_basic(&HeaderValue::from_static("Basic !!!")), None);
        assert_eq!(
            parse_basic(&HeaderValue::from_static("Basic YWxpY2U=")),
            None
        );
    }

    #[tokio::test]
    async fn basic_auth_checks_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let mut users = BTreeMap::new();
        users.insert("alice".to_string(), SecretString::from(hash));
        let auth = BasicAuth::new(users).unwrap();
        let header = |u: &str, p: &str| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
        };
        assert!(auth.check(Some(&header("alice", "s3cret"))).await);
        assert_eq!(auth.cache_lock().len(), 1);
        assert!(auth.check(Some(&header("alice", "s3cret"))).await);
        assert!(!auth.check(Some(&header("alice", "wrong"))).await);
        assert!(!auth.check(Some(&header("bob", "s3cret"))).await);
        assert!(!auth.check(None).await);
        assert_eq!(auth.cache_lock().len(), 1, "failures are not cached");
    }

    #[test]
    fn settings_that_protect_less_than_they_seem_are_warned_about() {
        use ClientAuth::*;
        let says = |tls, client_auth, users| {
            risks(tls, client_auth, users)
                .iter()
                .map(|w| w.split(':').next().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            says(false, NoClientCert, Some(1)),
            ["basic_auth_users without tls_server_config"]
        );
        assert_eq!(
            says(false, NoClientCert, Some(0)),
            ["basic_auth_users is empty"]
        );
        assert_eq!(
            says(true, VerifyClientCertIfGiven, None),
            ["client_auth_type VerifyClientCertIfGiven without basic_auth_users"]
        );
        assert_eq!(
            says(true, VerifyClientCertIfGiven, Some(0)).len(),
            2,
            "empty users, and optional certificates"
        );
        assert_eq!(
            says(false, NoClientCert, None),
            ["neither tls_server_config nor basic_auth_users is set"]
        );
        // What does protect: TLS with users, required client certificates,
        // optional certificates backed by users; and TLS alone, by choice.
        assert!(says(true, NoClientCert, Some(1)).is_empty());
        assert!(says(true, RequireAndVerifyClientCert, None).is_empty());
        assert!(says(true, VerifyClientCertIfGiven, Some(2)).is_empty());
        assert!(says(true, NoClientCert, None).is_empty());
    }

    #[test]
    fn warnings_name_the_file_and_see_an_empty_user_list() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let c = parse(&format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
        assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
        assert!(c.warnings()[0].starts_with(
            "web config file /etc/exporter/web.yml: basic_auth_users without tls_server_config"
        ));
        assert!(!c.warnings()[0].contains(&hash));
        for empty in [
            "basic_auth_users:\n",
            "basic_auth_users: {}\n",
            "basic_auth_users: ~\n",
        ] {
            let c = parse(empty).unwrap();
            assert!(
                c.warnings()
                    .iter()
                    .any(|w| w.contains("basic_auth_users is empty")),
                "{empty:?}: {:?}",
                c.warnings()
            );
        }
        assert_eq!(parse("").unwrap().warnings().len(), 1);
        assert!(
            WebConfig::default().warnings().is_empty(),
            "no file, nothing to say"
        );
    }
}
