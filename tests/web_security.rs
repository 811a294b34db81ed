//! Serving securely: `--web.config.file` (TLS, client certificates, basic
//! auth, extra headers), and hardening against stalled or slow clients.
//!
//! Certificates are made here with rcgen (a CA, a server and a client
//! certificate signed by it) and bcrypt hashes with cost 4, so the tests need
//! no fixtures and stay fast.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::web_server::{acme_account, assert_metrics, client_builder, start, PASSWORD, USER};
use common::*;
use openrouter_cost_exporter::webconfig::{ClientAuth, WebConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Certificates and configs.

/// A certificate authority that signs server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// (certificate PEM, private key PEM) for a server on 127.0.0.1/localhost or a client.
    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory with a CA, a server certificate and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA");
        let (server_cert, server_key) = ca.issue("exporter", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = ca.issue("prometheus", ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(dir.path().join("server.crt"), server_cert).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        Pki {
            dir,
            ca,
            client_cert,
            client_key,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `yaml` as `web.yml` here (relative file names resolve here) and returns its path.
    fn write_config(&self, yaml: &str) -> PathBuf {
        let path = self.path("web.yml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn load(&self, yaml: &str) -> WebConfig {
        WebConfig::load(&self.write_config(yaml)).expect("valid web config")
    }
}

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

fn tls_and_auth_yaml() -> String {
    format!(
        "{TLS}basic_auth_users:\n  {USER}: '{}'\n",
        bcrypt_hash(PASSWORD)
    )
}

// ---------------------------------------------------------------------------
// Clients.

fn https_client(ca_pem: &str) -> reqwest::Client {
    client_builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

fn https_client_with_identity(ca_pem: &str, cert: &str, key: &str) -> reqwest::Client {
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    client_builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .identity(identity)
        .build()
        .unwrap()
}

/// Sends raw bytes and returns whatever comes back before the server closes
/// or `limit` passes.
async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    out
}

// ---------------------------------------------------------------------------
// TLS.

#[tokio::test]
async fn tls_serves_every_endpoint_to_a_client_that_trusts_the_ca() {
    let pki = Pki::new();
    let web = pki.load(TLS);
    assert!(web.tls_enabled());
    let running = start(web, |_| {}).await;
    let client = https_client(&pki.ca.pem());
    let resp = client.get(running.https("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_metrics(&resp.text().await.unwrap());
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/", 200),
        ("/nope", 404),
    ] {
        let resp = client.get(running.https(path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
    }
    // A client that does not trust the CA refuses the certificate.
    let err = client_builder()
        .build()
        .unwrap()
        .get(running.https("/metrics"))
        .send()
        .await
        .expect_err("an unknown CA must not be trusted");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    running.stop().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_200() {
    let pki = Pki::new();
    let running = start(pki.load(TLS), |_| {}).await;
    // reqwest speaking plain HTTP: an error or a non-200, never the metrics.
    match client_builder()
        .build()
        .unwrap()
        .get(running.http("/metrics"))
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            assert_ne!(status, 200);
            assert!(
                !body.contains("openrouter_"),
                "metrics leaked over plain HTTP"
            );
        }
        Err(e) => assert!(e.is_connect() || e.is_request() || e.is_body(), "{e:?}"),
    }
    // On the wire: a 400 that says why, then the connection is closed.
    let answer = raw_exchange(
        running.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer:?}");
    assert!(answer.contains("HTTPS server"), "{answer:?}");
    assert!(!answer.contains("openrouter_"));
    // TLS still works afterwards.
    let resp = https_client(&pki.ca.pem())
        .get(running.https("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    running.stop().await;
}

#[tokio::test]
async fn tls_version_and_suite_settings_are_applied() {
    let pki = Pki::new();
    let yaml = format!(
        "{TLS}  min_version: TLS12\n  max_version: TLS12\n  cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n  curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: true\n"
    );
    let running = start(pki.load(&yaml), |_| {}).await;
    let resp = https_client(&pki.ca.pem())
        .get(running.https("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A TLS 1.3-only client cannot connect to a TLS 1.2-only server.
    let err = client_builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap())
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .build()
        .unwrap()
        .get(running.https("/metrics"))
        .send()
        .await;
    assert!(err.is_err(), "max_version: TLS12 was not applied");
    running.stop().await;
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let running = start(pki.load(TLS), |_| {}).await;
    let old_client = https_client(&pki.ca.pem());
    assert_eq!(
        old_client
            .get(running.https("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Rotate to a certificate from another CA: a rename over the old files,
    // as cert-manager and editors do.
    let new_ca = Ca::new("rotated CA");
    let (cert, key) = new_ca.issue("exporter", ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(pki.path("server.crt.new"), cert).unwrap();
    std::fs::write(pki.path("server.key.new"), key).unwrap();
    std::fs::rename(pki.path("server.key.new"), pki.path("server.key")).unwrap();
    std::fs::rename(pki.path("server.crt.new"), pki.path("server.crt")).unwrap();
    let new_client = https_client(&new_ca.pem());
    let start_time = Instant::now();
    loop {
        // New clients: connection reuse would hide the new certificate.
        if let Ok(resp) = https_client(&new_ca.pem())
            .get(running.https("/healthz"))
            .send()
            .await
        {
            assert_eq!(resp.status(), 200);
            break;
        }
        assert!(
            start_time.elapsed() < Duration::from_secs(10),
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(new_client);
    let err = https_client(&pki.ca.pem())
        .get(running.https("/healthz"))
        .send()
        .await;
    assert!(err.is_err(), "the old certificate is still served");
    // A broken replacement keeps the current certificate.
    std::fs::write(pki.path("server.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = https_client(&new_ca.pem())
        .get(running.https("/healthz"))
        .send()
        .await
        .expect("a broken replacement must not take TLS down");
    assert_eq!(resp.status(), 200);
    running.stop().await;
}

// ---------------------------------------------------------------------------
// Client certificates.

#[tokio::test]
async fn require_and_verify_client_cert() {
    let pki = Pki::new();
    let yaml =
        format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n");
    let web = pki.load(&yaml);
    assert_eq!(web.client_auth(), ClientAuth::RequireAndVerifyClientCert);
    let running = start(web, |_| {}).await;

    // No client certificate: the handshake (or the first read) fails.
    let without = https_client(&pki.ca.pem())
        .get(running.https("/metrics"))
        .send()
        .await;
    assert!(
        without.is_err(),
        "served without a client certificate: {without:?}"
    );

    // A certificate from another CA is refused too.
    let other = Ca::new("someone else");
    let (cert, key) = other.issue("intruder", ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = https_client_with_identity(&pki.ca.pem(), &cert, &key)
        .get(running.https("/metrics"))
        .send()
        .await;
    assert!(
        stranger.is_err(),
        "served a client certificate from an unknown CA"
    );

    // Signed by the configured CA: served.
    let resp = https_client_with_identity(&pki.ca.pem(), &pki.client_cert, &pki.client_key)
        .get(running.https("/metrics"))
        .send()
        .await
        .expect("client certificate signed by the CA");
    assert_eq!(resp.status(), 200);
    assert_metrics(&resp.text().await.unwrap());
    running.stop().await;
}

#[tokio::test]
async fn inline_cert_key_and_client_ca() {
    let pki = Pki::new();
    let indent = |pem: String| pem.trim_end().replace('\n', "\n    ");
    let yaml = format!(
        "tls_server_config:\n  cert: |\n    {}\n  key: |\n    {}\n  client_ca: |\n    {}\n  client_auth_type: RequireAndVerifyClientCert\n",
        indent(std::fs::read_to_string(pki.path("server.crt")).unwrap()),
        indent(std::fs::read_to_string(pki.path("server.key")).unwrap()),
        indent(pki.ca.pem()),
    );
    let running = start(pki.load(&yaml), |_| {}).await;
    let resp = https_client_with_identity(&pki.ca.pem(), &pki.client_cert, &pki.client_key)
        .get(running.https("/healthz"))
        .send()
        .await
        .expect("inline certificate, key and client CA");
    assert_eq!(resp.status(), 200);
    assert!(https_client(&pki.ca.pem())
        .get(running.https("/healthz"))
        .send()
        .await
        .is_err());
    running.stop().await;
}

#[tokio::test]
async fn verify_client_cert_if_given_accepts_none_but_refuses_strangers() {
    let pki = Pki::new();
    let yaml =
        format!("{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n");
    let running = start(pki.load(&yaml), |_| {}).await;
    let resp = https_client(&pki.ca.pem())
        .get(running.https("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let other = Ca::new("someone else");
    let (cert, key) = other.issue("intruder", ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = https_client_with_identity(&pki.ca.pem(), &cert, &key)
        .get(running.https("/healthz"))
        .send()
        .await;
    assert!(stranger.is_err());
    running.stop().await;
}

// ---------------------------------------------------------------------------
// Basic auth.

#[tokio::test]
async fn basic_auth_right_wrong_missing_and_unknown() {
    let pki = Pki::new();
    let web = pki.load(&tls_and_auth_yaml());
    assert!(web.basic_auth().is_some());
    let running = start(web, |_| {}).await;
    let client = https_client(&pki.ca.pem());
    let url = running.https("/metrics");

    let ok = client
        .get(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_metrics(&ok.text().await.unwrap());
    // Cached or not, the answer stays the same.
    for _ in 0..3 {
        let again = client
            .get(&url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 200);
    }

    let cases: [(&str, Option<(&str, &str)>); 4] = [
        (
            "wrong password",
            Some((USER, "Correct horse battery staple")),
        ),
        ("unknown user", Some(("grafana", PASSWORD))),
        ("empty password", Some((USER, ""))),
        ("missing", None),
    ];
    for (case, creds) in cases {
        let mut req = client.get(&url);
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{case}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"openrouter-cost-exporter\""),
            "{case}"
        );
        let body = resp.text().await.unwrap();
        assert!(!body.contains("openrouter_"), "{case}: metrics leaked");
    }
    // Not a Basic credential at all.
    let bearer = client.get(&url).bearer_auth("token").send().await.unwrap();
    assert_eq!(bearer.status(), 401);

    // Every endpoint is protected, as with exporter-toolkit.
    for path in ["/", "/healthz", "/readyz", "/nope"] {
        let resp = client.get(running.https(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} without credentials");
        let resp = client
            .get(running.https(path))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), 401, "{path} with credentials");
    }
    running.stop().await;
}

#[tokio::test]
async fn basic_auth_without_tls_excluded_paths_and_configured_headers() {
    let pki = Pki::new();
    let yaml = format!(
        "basic_auth_users:\n  {USER}: '{}'\n  second: '{}'\nauth_excluded_paths: [/healthz]\nhttp_server_config:\n  http2: true\n  headers:\n    X-Content-Type-Options: nosniff\n    X-Frame-Options: deny\n",
        bcrypt_hash(PASSWORD),
        bcrypt_hash("another one")
    );
    let web = pki.load(&yaml);
    assert!(!web.tls_enabled());
    let running = start(web, |_| {}).await;
    let client = client_builder().build().unwrap();
    for (user, password, status) in [
        (USER, PASSWORD, 200),
        ("second", "another one", 200),
        ("second", PASSWORD, 401),
    ] {
        let resp = client
            .get(running.http("/metrics"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{user}");
        // The configured headers are on every response, 401s included.
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers()["x-frame-options"], "deny");
    }
    // Excluded paths (exact match) need no credentials; nothing else is opened.
    for (path, status) in [
        ("/healthz", 200),
        ("/healthz/", 401),
        ("/metrics", 401),
        ("/", 401),
    ] {
        let resp = client.get(running.http(path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
    }
    running.stop().await;
}

// ---------------------------------------------------------------------------
// Stalled and slow clients.

/// Opens `n` TCP connections that send nothing (or `prefix`) and keeps them open.
async fn stalled_connections(addr: SocketAddr, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        if !prefix.is_empty() {
            conn.write_all(prefix).await.unwrap();
        }
        conns.push(conn);
    }
    conns
}

#[tokio::test]
async fn three_hundred_idle_connections_do_not_block_a_scrape() {
    // Plain HTTP, then TLS (where idle clients stall in the handshake). One
    // test, one after the other, to keep the open files of this process low.
    let pki = Pki::new();
    for (name, yaml) in [("plain", String::new()), ("tls", tls_and_auth_yaml())] {
        let running = start(pki.load(&yaml), |_| {}).await;
        let idle = stalled_connections(running.addr, 300, b"").await;
        let client = if name == "tls" {
            https_client(&pki.ca.pem())
        } else {
            client_builder().build().unwrap()
        };
        let url = if name == "tls" {
            running.https("/metrics")
        } else {
            running.http("/metrics")
        };
        // "Answered at all within 5 s" (the client's timeout), not a speed claim.
        let resp = client
            .get(&url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("{name}: scrape not answered with 300 idle connections open: {e}")
            });
        assert_eq!(resp.status(), 200, "{name}");
        assert_metrics(&resp.text().await.unwrap());
        drop(idle);
        running.stop().await;
    }
}

#[tokio::test]
async fn stalled_clients_are_dropped_so_a_saturated_server_recovers() {
    // 20 slots, 40 stalled clients: half idle, half trickling a request
    // header one byte at a time. A 1 s header timeout frees the slots, so a
    // real scrape queued behind them is still answered.
    let running = start(WebConfig::default(), |o| {
        o.max_connections = 20;
        o.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let idle = stalled_connections(running.addr, 20, b"").await;
    let mut tricklers = stalled_connections(running.addr, 20, b"G").await;
    let trickle = tokio::spawn(async move {
        for byte in b"ET /metrics HTTP/1.1\r\nHost: x\r\n"
            .iter()
            .cycle()
            .take(100)
        {
            for conn in tricklers.iter_mut() {
                let _ = conn.write_all(&[*byte]).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tricklers
    });
    let started = Instant::now();
    let resp = client_builder()
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap()
        .get(running.http("/metrics"))
        .send()
        .await
        .expect("scrape answered once the stalled connections time out");
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(8));
    trickle.abort();
    drop(idle);
    running.stop().await;
}

/// A client with a tiny receive buffer that pipelines `requests` GETs and never reads.
async fn non_reader(addr: SocketAddr, requests: usize) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);
    // The server may stop reading once its writes stall: do not wait for all of it.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.write_all(&request)).await;
    conn
}

#[tokio::test]
async fn clients_that_stop_reading_do_not_hold_slots_forever() {
    // 2 slots, both taken by clients that pipeline requests and never read
    // the answers: the server's writes stall, and the write timeout frees the
    // slots so a real scrape is answered.
    let running = start(WebConfig::default(), |o| {
        o.max_connections = 2;
        o.write_timeout = Duration::from_secs(1);
    })
    .await;
    let a = non_reader(running.addr, 2000).await;
    let b = non_reader(running.addr, 2000).await;
    let resp = client_builder()
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap()
        .get(running.http("/metrics"))
        .send()
        .await
        .expect("scrape answered once the stalled writers time out");
    assert_eq!(resp.status(), 200);
    drop((a, b));
    running.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_header_timeout() {
    let pki = Pki::new();
    let running = start(pki.load(TLS), |o| {
        o.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    for (case, prefix) in [
        ("silent", &b""[..]),
        (
            "partial ClientHello",
            &[0x16, 0x03, 0x01, 0x00, 0xff, 0x01][..],
        ),
    ] {
        let mut conn = TcpStream::connect(running.addr).await.unwrap();
        conn.write_all(prefix).await.unwrap();
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "{case}: the server kept a stalled handshake open"
        );
    }
    running.stop().await;
}

// ---------------------------------------------------------------------------
// The real binary.

/// Starts the binary with a valid exporter config (in `pki`'s directory,
/// pointing at `base_url`) and `web_path` as its web config, on a free port;
/// returns the process and its listen address.
fn spawn_with_web_config(pki: &Pki, base_url: &str, web_path: &Path) -> (ChildGuard, String) {
    let config_path = pki.path("config.yaml");
    std::fs::write(
        &config_path,
        config_yaml(base_url, "  acme:\n    keys: [acme-production]\n"),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let guard = spawn_binary(
        &[
            "--config.file",
            config_path.to_str().unwrap(),
            "--web.listen-address",
            &listen,
            "--web.config.file",
            web_path.to_str().unwrap(),
        ],
        &[("OPENROUTER_MANAGEMENT_KEY", MANAGEMENT_KEY)],
    );
    (guard, listen)
}

#[tokio::test]
async fn binary_serves_tls_and_basic_auth_end_to_end() {
    let sim = start_sim(acme_account(2.0, 50.0)).await;
    let pki = Pki::new();
    let web_path = pki.write_config(&tls_and_auth_yaml());
    let (exporter, listen) = spawn_with_web_config(&pki, &sim.base_url(), &web_path);
    let client = https_client(&pki.ca.pem());
    let url = format!("https://{listen}/metrics");
    let started = Instant::now();
    let body = loop {
        if let Ok(resp) = client
            .get(&url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
        {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status == 200 && text.contains("\nopenrouter_up 1\n") {
                break text;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no authenticated TLS scrape succeeded; logs:\n{}",
            exporter.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_metrics(&body);
    let samples = parse(&body);
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        20.0
    );
    let denied = client.get(&url).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = client
        .get(&url)
        .basic_auth(USER, Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    if let Ok(resp) = client_builder()
        .build()
        .unwrap()
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
    {
        assert_ne!(resp.status(), 200, "plain HTTP served by the TLS listener");
    }
    let logs = exporter.logs();
    assert!(
        logs.contains("tls=true"),
        "startup log says TLS is on:\n{logs}"
    );
    assert!(!logs.contains(PASSWORD));
    assert!(!logs.contains(MANAGEMENT_KEY));
}

/// Runs the binary with `web_yaml` as its web config; returns (exit status, output).
fn run_with_web_config(pki: &Pki, web_yaml: Option<&str>) -> (std::process::ExitStatus, String) {
    let web_path = match web_yaml {
        Some(yaml) => pki.write_config(yaml),
        None => pki.path("does-not-exist.yml"),
    };
    let (mut guard, _listen) = spawn_with_web_config(pki, "http://127.0.0.1:9/api/v1", &web_path);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            panic!(
                "the exporter kept running with a bad web config; logs:\n{}",
                guard.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, guard.logs())
}

#[test]
fn binary_refuses_bad_web_configs_with_a_clear_error() {
    let pki = Pki::new();
    let cases: Vec<(&str, Option<String>, Vec<String>)> = vec![
        (
            "unknown field",
            Some(format!("{TLS}  cert_fil: typo.crt\n")),
            vec!["cert_fil".into(), "web.yml".into()],
        ),
        (
            "unknown top-level field",
            Some("basic_auth:\n  a: b\n".into()),
            vec!["basic_auth".into(), "web.yml".into()],
        ),
        (
            "missing cert file",
            Some("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".into()),
            vec!["missing.crt".into(), "cert_file".into()],
        ),
        (
            "key that is not a key",
            Some("tls_server_config:\n  cert_file: server.crt\n  key_file: ca.crt\n".into()),
            vec!["ca.crt".into(), "private key".into()],
        ),
        (
            "invalid bcrypt hash",
            Some("basic_auth_users:\n  alice: hunter2-in-plaintext\n".into()),
            vec!["basic_auth_users.alice".into(), "bcrypt".into()],
        ),
        (
            "client CA without verification",
            Some(format!("{TLS}  client_ca_file: ca.crt\n")),
            vec!["client_auth_type".into()],
        ),
        (
            "unverified client certificates",
            Some(format!(
                "{TLS}  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.crt\n"
            )),
            vec!["RequireAnyClientCert".into()],
        ),
        (
            "web config file missing",
            None,
            vec!["does-not-exist.yml".into()],
        ),
    ];
    for (case, yaml, wanted) in cases {
        let (status, logs) = run_with_web_config(&pki, yaml.as_deref());
        assert!(!status.success(), "{case}: exited 0\n{logs}");
        assert!(!logs.contains("panicked"), "{case}: panicked\n{logs}");
        for want in wanted {
            assert!(
                logs.contains(&want),
                "{case}: error does not mention {want:?}:\n{logs}"
            );
        }
        assert!(
            !logs.contains("hunter2-in-plaintext"),
            "{case}: the bad hash value was echoed"
        );
        assert!(!logs.contains(MANAGEMENT_KEY));
    }
}

#[test]
fn the_example_web_config_loads_once_its_placeholders_are_filled() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("web-config.example.yml");
    let text = std::fs::read_to_string(&example).expect("web-config.example.yml");
    // Verbatim it must not start: its files do not exist here and its
    // password hash is a placeholder (fail closed when copied unedited).
    assert!(WebConfig::parse(&text, &example).is_err());
    let pki = Pki::new();
    let text = text
        .replace("/etc/openrouter-cost-exporter/tls/server.crt", "server.crt")
        .replace("/etc/openrouter-cost-exporter/tls/server.key", "server.key")
        .replace(
            "REPLACE_WITH_BCRYPT_HASH",
            &format!("'{}'", bcrypt_hash(PASSWORD)),
        );
    let web = pki.load(&text);
    assert!(web.tls_enabled());
    assert!(web.basic_auth().is_some());
    assert!(!web.headers().is_empty());
}
