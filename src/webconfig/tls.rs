//! TLS from the web config: certificates and keys (files or inline PEM),
//! versions, cipher suites and curves, client-certificate verification, and
//! certificate files re-read when they change on disk.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

use super::{set, set_path, ClientAuth, RawTls, CERT_RECHECK};

/// Where a PEM blob comes from.
#[derive(Clone)]
pub(super) enum Pem {
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

pub(super) fn build_tls(
    raw: RawTls,
    dir: &Path,
) -> Result<Option<(Arc<ServerConfig>, ClientAuth)>, String> {
    if !tls_enabled(&raw)? {
        return Ok(None);
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
    let provider = Arc::new(tls_provider(raw.cipher_suites, raw.curve_preferences)?);
    let versions = protocol_versions(raw.min_version, raw.max_version)?;
    let client_auth = client_auth_type(raw.client_auth_type.as_deref())?;
    let verifier = client_verifier(client_ca.as_ref(), client_auth, &provider)?;

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

/// Whether TLS is configured at all; TLS options without a certificate, or
/// options this exporter does not support, are an error.
fn tls_enabled(raw: &RawTls) -> Result<bool, String> {
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
        return Ok(false);
    }
    if raw.client_allowed_sans.is_some() {
        return Err(
            "tls_server_config.client_allowed_sans: not supported by this exporter; \
             restrict clients with client_ca_file (a CA that only signs your scrapers' certificates)"
                .to_string(),
        );
    }
    Ok(true)
}

/// The ring provider with the configured cipher suites and key exchange groups.
fn tls_provider(
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = cipher_suites.filter(|c| !c.is_empty()) {
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
    if let Some(names) = curve_preferences.filter(|c| !c.is_empty()) {
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
    Ok(provider)
}

/// The protocol versions to offer: rustls speaks TLS 1.2 and 1.3 only.
fn protocol_versions(
    min_version: Option<String>,
    max_version: Option<String>,
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let min = match min_version.filter(|v| !v.is_empty()) {
        Some(v) => parse_version("min_version", &v)?,
        None => 12,
    };
    let max = match max_version.filter(|v| !v.is_empty()) {
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
    Ok(versions)
}

/// `client_auth_type`, refusing the modes that accept unverified certificates.
fn client_auth_type(client_auth_type: Option<&str>) -> Result<ClientAuth, String> {
    let mode = match client_auth_type.filter(|s| !s.is_empty()) {
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
    Ok(mode)
}

/// The verifier of client certificates, when `client_auth` asks for one.
fn client_verifier(
    client_ca: Option<&Pem>,
    client_auth: ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let verifier = match (client_ca, client_auth) {
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
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
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
    Ok(verifier)
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
