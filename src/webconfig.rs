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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tracing::{info, warn};

use crate::config::UniqueMap;

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
            message: format!("cannot read it: {e}"),
        })?;
        WebConfig::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (relative file names resolve against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let error = |message: String| WebConfigError {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_yaml::from_str::<Option<RawWebConfig>>(text)
                .map_err(|e| error(e.to_string()))?
                .unwrap_or_default()
        };
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
        Ok(WebConfig {
            tls,
            client_auth,
            auth,
            auth_excluded_paths: Arc::new(excluded),
            headers: Arc::new(headers),
        })
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
// TLS.

/// Where a PEM blob comes from.
#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Inline(Arc<SecretString>),
}

impl Pem {
    fn pick(
        inline: Option<String>,
        file: Option<PathBuf>,
        inline_name: &str,
        file_name: &str,
        dir: &Path,
    ) -> Result<Option<Pem>, String> {
        let inline = inline.filter(|s| !s.is_empty());
        let file = file.filter(|p| !p.as_os_str().is_empty());
        match (inline, file) {
            (Some(_), Some(_)) => Err(format!(
                "tls_server_config: set either {inline_name} or {file_name}, not both"
            )),
            (Some(s), None) => Ok(Some(Pem::Inline(Arc::new(SecretString::from(s))))),
            (None, Some(p)) => Ok(Some(Pem::File(dir.join(p)))),
            (None, None) => Ok(None),
        }
    }

    fn read(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            Pem::File(p) => {
                std::fs::read(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
            }
            Pem::Inline(s) => Ok(s.expose_secret().as_bytes().to_vec()),
        }
    }

    fn describe(&self, what: &str) -> String {
        match self {
            Pem::File(p) => format!("{what} {}", p.display()),
            Pem::Inline(_) => format!("inline {what}"),
        }
    }

    fn stamp(&self) -> Option<FileStamp> {
        match self {
            Pem::File(p) => FileStamp::of(p),
            Pem::Inline(_) => None,
        }
    }
}

fn load_certs(pem: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = pem.read(what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {e}", pem.describe(what)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: contains no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
            pem.describe(what)
        ));
    }
    Ok(certs)
}

fn load_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    let what = if matches!(pem, Pem::File(_)) {
        "key_file"
    } else {
        "key"
    };
    let bytes = pem.read(what)?;
    // The PEM error's detail could quote key material: keep it out of the message.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{}: contains no PEM private key (PKCS#8, PKCS#1/RSA or SEC1/EC)",
            pem.describe(what)
        ),
        _ => format!("{}: malformed PEM private key", pem.describe(what)),
    })
}

fn load_pair(cert: &Pem, key: &Pem, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let cert_what = if matches!(cert, Pem::File(_)) {
        "cert_file"
    } else {
        "cert"
    };
    let chain = load_certs(cert, cert_what)?;
    let key_der = load_key(key)?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        format!(
            "{} and {} do not form a usable pair: {e}",
            cert.describe(cert_what),
            key.describe("key")
        )
    })
}

fn parse_version(field: &str, v: &str) -> Result<u8, String> {
    match v {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        other => Err(format!(
            "tls_server_config.{field}: unknown TLS version {other:?} (expected TLS10, TLS11, TLS12 or TLS13)"
        )),
    }
}

fn build_tls(raw: RawTls, dir: &Path) -> Result<Option<(Arc<ServerConfig>, ClientAuth)>, String> {
    let enabled = set(&raw.cert)
        || raw
            .key
            .as_ref()
            .is_some_and(|k| !k.expose_secret().is_empty())
        || set(&raw.client_ca)
        || set_path(&raw.cert_file)
        || set_path(&raw.key_file)
        || set_path(&raw.client_ca_file)
        || set(&raw.client_auth_type);
    let tuning = set(&raw.min_version)
        || set(&raw.max_version)
        || raw.cipher_suites.as_ref().is_some_and(|c| !c.is_empty())
        || raw
            .curve_preferences
            .as_ref()
            .is_some_and(|c| !c.is_empty())
        || raw.client_allowed_sans.is_some();
    if !enabled {
        if tuning {
            // exporter-toolkit would silently serve plain HTTP here; refuse instead.
            return Err(
                "tls_server_config: TLS options are set but neither cert_file nor cert is: \
                 set cert_file and key_file to enable TLS, or remove tls_server_config"
                    .to_string(),
            );
        }
        return Ok(None);
    }
    if raw.client_allowed_sans.is_some() {
        return Err(
            "tls_server_config.client_allowed_sans: not supported by this exporter; \
             restrict clients with client_ca_file (a CA that only signs your scrapers' certificates)"
                .to_string(),
        );
    }

    let key_inline = raw
        .key
        .filter(|k| !k.expose_secret().is_empty())
        .map(|k| k.expose_secret().to_string());
    let cert = Pem::pick(raw.cert, raw.cert_file, "cert", "cert_file", dir)?
        .ok_or("tls_server_config: missing one of cert or cert_file")?;
    let key = Pem::pick(key_inline, raw.key_file, "key", "key_file", dir)?
        .ok_or("tls_server_config: missing one of key or key_file")?;
    let client_ca = Pem::pick(
        raw.client_ca,
        raw.client_ca_file,
        "client_ca",
        "client_ca_file",
        dir,
    )?;

    // Cipher suites and key exchange groups, on the ring provider.
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = raw.cipher_suites.filter(|c| !c.is_empty()) {
        let tls12: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_none())
            .copied()
            .collect();
        let mut chosen: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        for name in &names {
            let suite = tls12
                .iter()
                .find(|s| s.suite().as_str() == Some(name.as_str()))
                .ok_or_else(|| {
                    let known: Vec<_> = tls12.iter().filter_map(|s| s.suite().as_str()).collect();
                    format!(
                        "tls_server_config.cipher_suites: {name:?} is not supported (supported TLS 1.2 suites: {}; TLS 1.3 suites are always enabled)",
                        known.join(", ")
                    )
                })?;
            chosen.push(*suite);
        }
        provider.cipher_suites = chosen;
    }
    if let Some(names) = raw.curve_preferences.filter(|c| !c.is_empty()) {
        use rustls::crypto::ring::kx_group;
        let mut groups = Vec::new();
        for name in &names {
            let group = match name.as_str() {
                "X25519" => kx_group::X25519,
                "CurveP256" => kx_group::SECP256R1,
                "CurveP384" => kx_group::SECP384R1,
                other => {
                    return Err(format!(
                        "tls_server_config.curve_preferences: {other:?} is not supported \
                         (supported: X25519, CurveP256, CurveP384)"
                    ))
                }
            };
            groups.push(group);
        }
        provider.kx_groups = groups;
    }
    let provider = Arc::new(provider);

    // Versions: rustls speaks TLS 1.2 and 1.3 only.
    let min = match raw.min_version.filter(|v| !v.is_empty()) {
        Some(v) => parse_version("min_version", &v)?,
        None => 12,
    };
    let max = match raw.max_version.filter(|v| !v.is_empty()) {
        Some(v) => parse_version("max_version", &v)?,
        None => 13,
    };
    if max < 12 {
        return Err(
            "tls_server_config.max_version: TLS 1.0 and 1.1 are not supported; use TLS12 or TLS13"
                .to_string(),
        );
    }
    if min > max {
        return Err("tls_server_config: min_version is higher than max_version".to_string());
    }
    if min < 12 {
        warn!("tls_server_config.min_version below TLS12: TLS 1.0 and 1.1 are not offered; TLS 1.2 is the minimum");
    }
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if min <= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }

    // Client certificates.
    let client_auth = match raw.client_auth_type.as_deref().filter(|s| !s.is_empty()) {
        None | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(t @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {t} accepts certificates without verifying them \
                 and is not supported; use RequireAndVerifyClientCert with client_ca_file"
            ))
        }
        Some(other) => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown value {other:?} (expected NoClientCert, \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ))
        }
    };
    let verifier = match (&client_ca, client_auth) {
        (Some(_), ClientAuth::NoClientCert) => {
            return Err(
                "tls_server_config: client CAs are configured but client_auth_type is NoClientCert; \
                 set client_auth_type: RequireAndVerifyClientCert"
                    .to_string(),
            )
        }
        (None, ClientAuth::NoClientCert) => None,
        (None, _) => {
            return Err(
                "tls_server_config: client_auth_type verifies client certificates but no client_ca_file (or client_ca) is set"
                    .to_string(),
            )
        }
        (Some(ca), mode) => {
            let what = if matches!(ca, Pem::File(_)) {
                "client_ca_file"
            } else {
                "client_ca"
            };
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(load_certs(ca, what)?);
            if added == 0 {
                return Err(format!(
                    "{}: none of its certificates can be used as a trust anchor",
                    ca.describe(what)
                ));
            }
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            if mode == ClientAuth::VerifyClientCertIfGiven {
                builder = builder.allow_unauthenticated();
            }
            Some(
                builder
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.describe(what)))?,
            )
        }
    };

    let resolver = CertResolver::new(cert, key, Arc::clone(&provider))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
    Ok(Some((Arc::new(config), client_auth)))
}

/// Modification time and size of a file, to notice a replaced certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        // `metadata` follows symlinks: Kubernetes' secret volume swaps work.
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

/// Serves the certificate pair, reloading it when its files change.
struct CertResolver {
    cert: Pem,
    key: Pem,
    provider: Arc<CryptoProvider>,
    state: Mutex<ResolverState>,
}

struct ResolverState {
    current: Arc<CertifiedKey>,
    stamps: (Option<FileStamp>, Option<FileStamp>),
    checked: Instant,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert", &self.cert.describe("cert"))
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    fn new(cert: Pem, key: Pem, provider: Arc<CryptoProvider>) -> Result<CertResolver, String> {
        let stamps = (cert.stamp(), key.stamp());
        let current = Arc::new(load_pair(&cert, &key, &provider)?);
        Ok(CertResolver {
            cert,
            key,
            provider,
            state: Mutex::new(ResolverState {
                current,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let watched = matches!(self.cert, Pem::File(_)) || matches!(self.key, Pem::File(_));
        if watched && state.checked.elapsed() >= CERT_RECHECK {
            state.checked = Instant::now();
            let stamps = (self.cert.stamp(), self.key.stamp());
            if stamps != state.stamps {
                // Remember the stamps either way: a broken pair is reported once, not per handshake.
                state.stamps = stamps;
                match load_pair(&self.cert, &self.key, &self.provider) {
                    Ok(pair) => {
                        state.current = Arc::new(pair);
                        info!("TLS certificate reloaded");
                    }
                    Err(e) => {
                        warn!(error = %e, "TLS certificate files changed but cannot be loaded; keeping the previous certificate")
                    }
                }
            }
        }
        Arc::clone(&state.current)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
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

// ---------------------------------------------------------------------------
// Basic auth.

/// Checks `Authorization: Basic` against bcrypt hashes, remembering successes.
pub struct BasicAuth {
    users: HashMap<String, SecretString>,
    /// Verified for unknown users, so a wrong user name costs as long as a wrong password.
    dummy_hash: String,
    /// SHA-256 of (user, hash, password) of successful verifications.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// bcrypt is deliberately slow: one verification at a time keeps a flood
    /// of guesses from taking every core.
    bcrypt_slot: tokio::sync::Semaphore,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn new(users: BTreeMap<String, SecretString>) -> Result<BasicAuth, String> {
        let mut cost = None;
        for (user, hash) in &users {
            // bcrypt's own error quotes the value, which may be a plaintext password.
            let parts: bcrypt::HashParts = hash.expose_secret().parse().map_err(|_| {
                format!(
                    "basic_auth_users.{user}: not a bcrypt hash (expected \"$2y$\" or \"$2b$\", \
                     a cost and 53 characters); create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                )
            })?;
            if !(4..=31).contains(&parts.get_cost()) {
                return Err(format!(
                    "basic_auth_users.{user}: bcrypt cost {} is outside 4..31",
                    parts.get_cost()
                ));
            }
            cost.get_or_insert(parts.get_cost());
        }
        let dummy_hash = bcrypt::hash("not a real password", cost.unwrap_or(10))
            .map_err(|e| format!("basic_auth_users: cannot prepare bcrypt: {e}"))?;
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            dummy_hash,
            cache: Mutex::new(HashSet::new()),
            bcrypt_slot: tokio::sync::Semaphore::new(1),
        })
    }

    /// True when `authorization` carries the right user name and password.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get(u));
        let hash = match known {
            Some(h) => h.expose_secret().to_string(),
            None => self.dummy_hash.clone(),
        };
        let key = cache_key(&user, &hash, &password);
        if known.is_some() && self.cache_lock().contains(&key) {
            return true;
        }
        let Ok(_slot) = self.bcrypt_slot.acquire().await else {
            return false;
        };
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        let ok = verified && known.is_some();
        if ok {
            let mut cache = self.cache_lock();
            if cache.len() >= AUTH_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn cache_key(user: &[u8], hash: &str, password: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash.as_bytes(), password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(value: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(yaml, Path::new("/etc/exporter/web.yml"))
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
}
