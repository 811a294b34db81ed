//! Hardening of the OpenRouter client (issue 24; security review 2026-12,
//! F1, F5 and F7): redirects are never followed, so the management key goes
//! to the configured origin only; key-shaped text is redacted from every
//! upstream error; and one key name with a lone UTF-16 surrogate escape no
//! longer stops the account's figures.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use openrouter_cost_exporter::config::Workspaces;
use openrouter_cost_exporter::sim::{Fault, FaultResponse};
use openrouter_cost_exporter::telemetry::Telemetry;
use openrouter_cost_exporter::upstream::{parse_keys_page, Client};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a loopback server answers to a request, given its request line.
type Answer = Box<dyn Fn(&str) -> String + Send + Sync>;

/// A one-purpose HTTP/1.1 server on a loopback port: it records the head of
/// every request (request line and headers) and answers with `answer`, then
/// closes the connection.
struct Loopback {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Loopback {
    async fn start(answer: Answer) -> Loopback {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&heads);
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let request_line = head.lines().next().unwrap_or_default().to_string();
                    log.lock().expect("log").push(head);
                    let _ = stream.write_all(answer(&request_line).as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Loopback { port, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("log").clone()
    }
}

/// The path of a request line (`GET /path HTTP/1.1`).
fn path_of(request_line: &str) -> &str {
    request_line.split(' ').nth(1).unwrap_or("/")
}

fn redirect(location: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

fn json(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

// ------------------------------------------------------------ redirects (F1)

/// The two-hop redirect of F1: the configured upstream sends the client to
/// another origin, which redirects to itself. Followed, the second hop got
/// the management key back. Not followed, the other origin hears nothing, and
/// the refresh fails as an invalid response naming where it was sent.
#[tokio::test]
async fn a_redirect_is_not_followed_and_the_key_never_leaves_the_configured_origin() {
    let foreign = Loopback::start(Box::new(|line: &str| {
        match path_of(line).strip_prefix("/hop1") {
            // A same-origin hop: where reqwest's default policy gave the key back.
            Some(rest) => redirect(&format!("/hop2{rest}")),
            None => json(r#"{"data":[],"total_count":0}"#),
        }
    }))
    .await;
    let foreign_port = foreign.port;
    let upstream = Loopback::start(Box::new(move |line: &str| {
        let path = path_of(line);
        redirect(&format!("http://127.0.0.1:{foreign_port}/hop1{path}"))
    }))
    .await;

    let base_url = format!("http://127.0.0.1:{}/api/v1", upstream.port);
    let exporter = exporter(config(&base_url, "  acme:\n    keys: [acme-prod]\n"));
    let result = exporter.refresh().await;

    for head in foreign.heads() {
        assert!(
            !head.to_ascii_lowercase().contains("authorization"),
            "the foreign origin got an Authorization header: {head}"
        );
        assert!(!head.contains(MANAGEMENT_KEY), "{head}");
    }
    assert!(
        foreign.heads().is_empty(),
        "the redirect was followed: {:?}",
        foreign.heads()
    );
    let err = result.expect_err("a redirect fails the refresh");
    let asked = upstream.heads();
    assert_eq!(asked.len(), 1, "a redirect is not retried: {asked:?}");
    assert!(
        asked[0].contains(MANAGEMENT_KEY),
        "the configured origin gets the key"
    );

    assert_eq!(err.reason().as_str(), "invalid_response", "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "http://127.0.0.1:{foreign_port}/hop1/api/v1/workspaces"
        )),
        "the error names where it was sent: {message}"
    );
    assert!(!message.contains(MANAGEMENT_KEY), "{message}");
    assert!(!format!("{err:?}").contains(MANAGEMENT_KEY));

    let text = body(&exporter);
    assert_eq!(value(&parse(&text), "openrouter_up", &[]), 0.0);
    assert_eq!(failures(&text, "invalid_response"), 1.0);
    assert_eq!(
        value(
            &parse(&text),
            "openrouter_upstream_requests_total",
            &[("endpoint", "workspaces"), ("code", "302")]
        ),
        1.0
    );
}

// ------------------------------------------------- key redaction (F5)

/// A key-shaped string that is not the configured management key: a proxy
/// or a debugging upstream may echo any key, not only the one sent.
const OTHER_KEY: &str = "sk-or-v1-LEAKTEST0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978";

/// One refresh against an account whose first `/keys` page is `fault`; its error.
async fn refresh_error(fault: FaultResponse) -> openrouter_cost_exporter::exporter::RefreshError {
    let sim = start_sim(empty_state()).await;
    sim.state()
        .faults
        .push(Fault::new("/keys", fault).for_workspace(WS_A));
    let exporter = exporter(config(&sim.base_url(), "  acme:\n    keys: [acme-prod]\n"));
    exporter.refresh().await.expect_err("the refresh fails")
}

#[track_caller]
fn assert_no_key(err: &openrouter_cost_exporter::exporter::RefreshError) {
    let text = format!("{err} | {err:?}").to_ascii_lowercase();
    assert!(!text.contains("leaktest"), "{text}");
    assert!(!text.contains("testsecret"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
}

#[tokio::test]
async fn a_key_where_json_structure_is_expected_is_redacted_from_the_decode_error() {
    let err = refresh_error(FaultResponse::Raw {
        content_type: "application/json".into(),
        body: format!(r#"{{"data": "{OTHER_KEY}"}}"#),
    })
    .await;
    assert_eq!(err.reason().as_str(), "invalid_response", "{err}");
    assert!(err.to_string().contains("invalid type: string"), "{err}");
    assert_no_key(&err);
}

#[tokio::test]
async fn a_json_escaped_key_in_an_error_body_is_redacted() {
    for key in [OTHER_KEY, MANAGEMENT_KEY] {
        let escaped = key.replace('-', "\\u002d");
        let err = refresh_error(FaultResponse::Reply {
            status: 400,
            body: format!(r#"{{"detail":"{escaped}"}}"#),
        })
        .await;
        assert_eq!(err.reason().as_str(), "client_error", "{err}");
        assert_no_key(&err);
    }
}

#[tokio::test]
async fn a_key_in_an_upper_case_content_type_is_redacted() {
    let err = refresh_error(FaultResponse::ContentType(format!(
        "text/x-{}",
        OTHER_KEY.to_uppercase()
    )))
    .await;
    assert_eq!(err.reason().as_str(), "invalid_response", "{err}");
    assert!(err.to_string().contains("text/x-[REDACTED]"), "{err}");
    assert_no_key(&err);
}

// ------------------------------------------- a lone surrogate (F7)

/// A `/keys` page as OpenRouter would send it, one name holding an unpaired
/// high surrogate escape (`\ud800`) beside a proper pair (an emoji).
fn page_with_a_lone_surrogate() -> String {
    format!(
        r#"{{"data":[{{"hash":"{}","name":"acme-\ud800one","usage":1.0,"disabled":false}},{{"hash":"{}","name":"acme-two \ud83d\ude00","usage":2.0,"disabled":false}}]}}"#,
        hash(1),
        hash(2)
    )
}

#[test]
fn a_page_with_a_lone_surrogate_decodes_with_the_replacement_character() {
    let page = page_with_a_lone_surrogate();
    assert!(serde_json::from_str::<serde_json::Value>(&page).is_err());
    let keys = parse_keys_page(page.as_bytes()).expect("the page decodes");
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_ref()).collect();
    assert_eq!(names, ["acme-\u{FFFD}one", "acme-two \u{1F600}"]);
    assert_eq!(keys[0].usage, Some(1.0));
    assert_eq!(keys[1].usage, Some(2.0));
}

#[tokio::test]
async fn one_odd_key_name_no_longer_stops_the_accounts_figures() {
    let mut state = empty_state();
    // The account holds the keys the odd page lists: the page asked next,
    // from the last key (issue 22), finds it.
    state.keys = vec![
        key_with_usage(WS_A, 1, "acme-one", 1.0),
        key_with_usage(WS_A, 2, "acme-two", 2.0),
    ];
    state.total_credits = 10.0;
    state.total_usage = 3.0;
    let sim = start_sim(state).await;
    sim.state().faults.push(
        Fault::new(
            "/keys",
            FaultResponse::Raw {
                content_type: "application/json".into(),
                body: page_with_a_lone_surrogate(),
            },
        )
        .for_workspace(WS_A)
        .at_offset(0),
    );
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [{name_glob: 'acme-*'}]\n",
    ));
    exporter.refresh().await.expect("the refresh succeeds");
    let samples = parse(&body(&exporter));
    assert_eq!(value(&samples, "openrouter_up", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "openrouter_key_usage_usd",
            &[("key", "acme-\u{FFFD}one"), ("window", "lifetime")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "openrouter_company_usage_usd",
            &[("company", "acme"), ("window", "lifetime")]
        ),
        3.0
    );

    // The client counts what it read as U+FFFD, for this refresh.
    let client = Client::new(
        &sim.base_url(),
        SecretString::from(MANAGEMENT_KEY.to_string()),
        Duration::from_secs(2),
        fast_retry(),
        Arc::new(Telemetry::new()),
    )
    .expect("client")
    .with_deadline(tokio::time::Instant::now() + Duration::from_secs(10));
    let data = client.fetch_all(&Workspaces::All).await.expect("listing");
    assert_eq!(data.keys.len(), 2);
    assert_eq!(client.call_stats().lone_surrogates, 1);
}
