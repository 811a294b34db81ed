//! The exporter served in process for the web tests (`web_security.rs`,
//! `hardening_web.rs`): one simulated account with one company key, a first
//! refresh done, and `serve` on a loopback port with the given web config.

use std::net::SocketAddr;
use std::time::Duration;

use openrouter_cost_exporter::server::{serve, ServerOptions};
use openrouter_cost_exporter::sim::{SimServer, SimState};
use openrouter_cost_exporter::webconfig::WebConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{config, empty_state, exporter, key_with_usage, start_sim, WS_A};

/// The basic-auth user and password the web tests configure.
pub const USER: &str = "prometheus";
pub const PASSWORD: &str = "correct horse battery staple";

/// A running server; `stop` shuts it down and checks that it ended cleanly.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _sim: SimServer,
}

impl Running {
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn https(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let result = tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("server stops after shutdown");
        result.expect("server task").expect("serve result");
    }
}

/// An account whose one key, `acme-production` (hash 1), has every window
/// set from `usage_base` (see `key_with_usage`), with `credits` bought.
pub fn acme_account(usage_base: f64, credits: f64) -> SimState {
    let mut state = empty_state();
    state
        .keys
        .push(key_with_usage(WS_A, 1, "acme-production", usage_base));
    state.total_credits = credits;
    state.total_usage = state.keys_lifetime_usage();
    state
}

/// Serves an exporter with company `acme` (key `acme-production`) under
/// `web`; `tweak` adjusts the other server options (limits, timeouts).
pub async fn start(web: WebConfig, tweak: impl FnOnce(&mut ServerOptions)) -> Running {
    let sim = start_sim(acme_account(1.5, 100.0)).await;
    let exporter = exporter(config(
        &sim.base_url(),
        "  acme:\n    keys: [acme-production]\n",
    ));
    exporter.refresh().await.expect("first refresh");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = ServerOptions {
        web,
        ..ServerOptions::default()
    };
    tweak(&mut options);
    let (shutdown, rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, exporter, options, rx));
    Running {
        addr,
        shutdown,
        server,
        _sim: sim,
    }
}

/// A loopback client: no proxy from the environment, a 5 s timeout.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
}

/// Asserts that `body` is the exporter's metrics for the account `start` serves.
#[track_caller]
pub fn assert_metrics(body: &str) {
    assert!(
        body.contains("openrouter_key_usage_usd{") && body.contains("\nopenrouter_up 1\n"),
        "not the exporter's metrics:\n{body}"
    );
}
