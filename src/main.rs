//! Command line entry point: flags, logging, signals, and wiring of the library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use openrouter_cost_exporter::config::Config;
use openrouter_cost_exporter::demo::{demo_config, DemoLedger, DemoUpstream};
use openrouter_cost_exporter::exporter::Exporter;
use openrouter_cost_exporter::ledger::{Ledger, LedgerError};
use openrouter_cost_exporter::server::{serve, LedgerAccess, ServerOptions};
use openrouter_cost_exporter::upstream::RetryPolicy;
use openrouter_cost_exporter::webconfig::WebConfig;

const DEFAULT_LISTEN: &str = ":10115";

#[derive(Debug, Parser)]
#[command(
    name = "openrouter-cost-exporter",
    version,
    about = "Prometheus exporter for OpenRouter spend per API key and per company"
)]
struct Cli {
    /// Path to the YAML config file.
    #[arg(
        long = "config.file",
        value_name = "PATH",
        default_value = "config.yaml"
    )]
    config_file: PathBuf,

    /// Validate the config file and the management key's presence, then exit (0 = valid).
    #[arg(long = "config.check")]
    config_check: bool,

    /// Address to serve metrics on, as host:port (":10115" = all interfaces).
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = DEFAULT_LISTEN, global = true)]
    listen_address: String,

    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics",
        global = true
    )]
    telemetry_path: String,

    /// TLS and basic auth config, in the Prometheus exporter-toolkit web-config format.
    #[arg(long = "web.config.file", value_name = "PATH", global = true)]
    web_config_file: Option<PathBuf>,

    /// Grafana's base URL (http or https); the pages link its dashboards
    /// (`openrouter-overview`, `openrouter-company`).
    #[arg(long = "web.grafana-url", value_name = "URL", global = true)]
    grafana_url: Option<String>,

    /// Directory of the statements ledger (`ledger.sqlite3`), created if
    /// missing; one exporter per directory. [default: data/; demo: a
    /// temporary directory, removed at exit]
    #[arg(long = "storage.path", value_name = "DIR", global = true)]
    storage_path: Option<PathBuf>,

    /// How long the statements ledger keeps each day, in days (e.g. 400d, 2y).
    #[arg(
        long = "storage.retention",
        value_name = "DURATION",
        default_value = "400d",
        value_parser = parse_retention,
        global = true
    )]
    retention_days: u32,

    /// Log level.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    log_level: LogLevel,

    /// Log format.
    #[arg(long = "log.format", value_enum, default_value = "text", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run against a built-in simulated OpenRouter account: no key, no network.
    Demo,
    /// Exit 0 when URL answers 200 (a container HEALTHCHECK without a shell).
    Healthcheck {
        /// URL to probe; defaults to /healthz on --web.listen-address.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level, cli.log_format);
    let result = match &cli.command {
        _ if cli.config_check => check_config(&cli.config_file, cli.web_config_file.as_deref()),
        Some(Command::Healthcheck { url }) => healthcheck(url.as_deref(), &cli.listen_address),
        Some(Command::Demo) => run_async(run_demo(&cli)),
        None => run_async(run_exporter(&cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A check talks to a person at a terminal; a daemon to its log pipeline.
            if cli.config_check || matches!(cli.command, Some(Command::Healthcheck { .. })) {
                eprintln!("error: {e:#}");
            } else {
                error!("{e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run_async(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

fn check_config(path: &Path, web_config: Option<&Path>) -> anyhow::Result<()> {
    let mut warnings = Vec::new();
    if let Some(web) = web_config {
        warnings.extend_from_slice(WebConfig::load(web)?.warnings());
    }
    let config = Config::load(path)?;
    warnings.extend(config.warnings());
    if let Some(source) = &config.openrouter.management_key {
        source.load().context("management key")?;
    }
    for (_, name, secret) in config.direct_keys() {
        secret
            .load()
            .with_context(|| format!("direct key {name:?}"))?;
    }
    let selectors: usize = config.companies.iter().map(|c| c.selectors.len()).sum();
    println!(
        "{}: valid ({} companies, {} key selectors, refresh every {}; {})",
        path.display(),
        config.companies.len(),
        selectors,
        humantime::format_duration(config.refresh_interval),
        match &config.openrouter.management_key {
            Some(source) => format!("management key found in {source}"),
            None => "direct-key mode, no management key".to_string(),
        }
    );
    // Valid but risky: said, never refused.
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// `--storage.retention`: a duration of at least one day, in whole days.
fn parse_retention(text: &str) -> Result<u32, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let days = duration.as_secs() / 86_400;
    if days == 0 {
        return Err(format!("must be at least 1d, got {text:?}"));
    }
    u32::try_from(days).map_err(|_| format!("too long: {text:?}"))
}

/// Opens the statements ledger (SQLite, off the async threads). An error
/// is logged and handed on: the exporter runs without the ledger.
async fn open_ledger(dir: PathBuf, retention_days: u32) -> Result<Arc<Ledger>, LedgerError> {
    let path = dir.clone();
    let opened = tokio::task::spawn_blocking(move || Ledger::open(&path, retention_days))
        .await
        .unwrap_or_else(|e| {
            Err(LedgerError::PathUnusable {
                path: dir,
                reason: format!("opening stopped: {e}"),
            })
        });
    match &opened {
        Ok(ledger) => info!(
            path = %ledger.path().display(),
            retention_days,
            "statements ledger open"
        ),
        Err(e) => error!(
            error = %e,
            "statements ledger unavailable; /metrics keeps serving without it, the statement pages answer 503"
        ),
    }
    opened.map(Arc::new)
}

/// `:10115` means every interface, as in Go exporters.
fn parse_listen_address(addr: &str) -> anyhow::Result<SocketAddr> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.to_socket_addrs()
        .with_context(|| format!("invalid --web.listen-address {addr:?}"))?
        .next()
        .with_context(|| format!("--web.listen-address {addr:?} resolves to nothing"))
}

fn server_options(cli: &Cli) -> anyhow::Result<ServerOptions> {
    if !cli.telemetry_path.starts_with('/') {
        bail!(
            "--web.telemetry-path must start with '/', got {:?}",
            cli.telemetry_path
        );
    }
    let web = match &cli.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    for warning in web.warnings() {
        warn!("{warning}");
    }
    let grafana_url = match &cli.grafana_url {
        Some(url) => {
            let url = url.trim();
            let scheme_ok = ["http://", "https://"].iter().any(|p| {
                url.get(..p.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(p))
                    && url.len() > p.len()
            });
            if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("--web.grafana-url must be an http:// or https:// URL, got {url:?}");
            }
            Some(url.to_string())
        }
        None => None,
    };
    Ok(ServerOptions {
        telemetry_path: cli.telemetry_path.clone(),
        web,
        grafana_url,
        ..ServerOptions::default()
    })
}

async fn bind(cli: &Cli) -> anyhow::Result<TcpListener> {
    let addr = parse_listen_address(&cli.listen_address)?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Turns SIGTERM/SIGINT into the shutdown signal; returns its receiver.
fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

async fn run_exporter(cli: &Cli) -> anyhow::Result<()> {
    let path = cli.config_file.clone();
    let config = Config::load(&path)?;
    for warning in config.warnings() {
        warn!("{warning}");
    }
    if config.refresh_interval < Duration::from_secs(60) {
        warn!(
            refresh_interval = %humantime::format_duration(config.refresh_interval),
            "refresh_interval below 1m: every refresh lists every key, mind OpenRouter's rate limits"
        );
    }
    let storage = cli
        .storage_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("data/"));
    let ledger = open_ledger(storage, cli.retention_days).await;
    let exporter = Exporter::new(config, Some(path.clone()))?.with_ledger(ledger);
    // The web config (TLS files, hashes) is checked before anything starts.
    let mut options = server_options(cli)?;
    options.ledger = ledger_access(&exporter);
    let listener = bind(cli).await?;
    let shutdown = shutdown_on_signals()?;
    spawn_reloaders(exporter.clone(), path, shutdown.clone())?;
    let mut background = spawn_background(&exporter, &shutdown);
    serve(listener, exporter, options, shutdown).await?;
    background.abort_all();
    info!("stopped");
    Ok(())
}

/// What the statement pages read: the exporter's ledger, or why there is none.
fn ledger_access(exporter: &Exporter) -> LedgerAccess {
    match (exporter.ledger(), exporter.ledger_error()) {
        (Some(ledger), _) => LedgerAccess::Open(ledger),
        (None, Some(reason)) => LedgerAccess::Unavailable(reason),
        (None, None) => LedgerAccess::Off,
    }
}

/// The refresh loop, the (opt-in) activity loop and the ledger's chores.
fn spawn_background(
    exporter: &Exporter,
    shutdown: &watch::Receiver<bool>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let (e, s) = (exporter.clone(), shutdown.clone());
    tasks.spawn(async move { e.run(s).await });
    let (e, s) = (exporter.clone(), shutdown.clone());
    tasks.spawn(async move { e.run_activity(s).await });
    let (e, s) = (exporter.clone(), shutdown.clone());
    tasks.spawn(async move { e.run_ledger(s).await });
    tasks
}

/// SIGHUP and a change of the config file's content both reload it.
fn spawn_reloaders(
    exporter: Exporter,
    path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    tokio::spawn(async move {
        // Polling the content survives editors' rename-over and Kubernetes' symlink swaps.
        let mut last = std::fs::read(&path).ok();
        let mut poll = tokio::time::interval(Duration::from_secs(2));
        loop {
            let reason = tokio::select! {
                _ = hup.recv() => {
                    // The file poll must not reload the same content again.
                    last = std::fs::read(&path).ok();
                    "SIGHUP"
                }
                _ = poll.tick() => {
                    let now = std::fs::read(&path).ok();
                    if now.is_none() || now == last {
                        continue;
                    }
                    last = now;
                    "config file changed"
                }
                _ = shutdown.changed() => return,
            };
            match exporter.reload().await {
                Ok(()) => info!(reason, "config reloaded"),
                Err(e) => {
                    error!(reason, error = %e, "config reload failed; keeping the previous config")
                }
            }
        }
    });
    Ok(())
}

async fn run_demo(cli: &Cli) -> anyhow::Result<()> {
    let options = server_options(cli)?;
    let key = format!("sk-or-v1-demo-{:016x}", fastrand::u64(..));
    let upstream = DemoUpstream::start(&key)
        .await
        .context("cannot start the simulated OpenRouter")?;
    let config = demo_config(&upstream.server.base_url())?;
    // The demo's ledger goes with it (seeded with two past months of history),
    // unless --storage.path says where to keep it.
    let mut demo_ledger = None;
    let ledger = match &cli.storage_path {
        Some(dir) => open_ledger(dir.clone(), cli.retention_days).await,
        None => {
            remove_abandoned_demo_ledgers();
            let now = chrono::Utc::now();
            match tokio::task::spawn_blocking(move || DemoLedger::open(now)).await {
                Ok(Ok(demo)) => {
                    let ledger = demo.ledger();
                    demo_ledger = Some(demo);
                    Ok(ledger)
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(LedgerError::PathUnusable {
                    path: std::env::temp_dir(),
                    reason: format!("seeding the demo's ledger failed: {e}"),
                }),
            }
        }
    };
    let exporter = Exporter::with_key(config, SecretString::from(key), RetryPolicy::default())?
        .with_ledger(ledger);
    let mut options = options;
    options.ledger = ledger_access(&exporter);
    let listener = bind(cli).await?;
    let local = listener.local_addr()?;
    info!(
        upstream = %upstream.server.base_url(),
        "demo: simulated OpenRouter running; open {scheme}://{local}/ for the companies page, {scheme}://{local}{} for the metrics",
        cli.telemetry_path,
        scheme = if options.web.tls_enabled() { "https" } else { "http" },
    );
    let shutdown = shutdown_on_signals()?;
    let mut background = spawn_background(&exporter, &shutdown);
    let served = serve(listener, exporter, options, shutdown).await;
    background.abort_all();
    drop(upstream);
    if demo_ledger.is_some() {
        // The ledger's file is closed once the tasks holding it have ended;
        // dropping the demo's ledger then removes its directory.
        background.shutdown().await;
        drop(demo_ledger);
    }
    served?;
    Ok(())
}

/// The demo's ledger directory in the temp directory, followed by its process id.
const DEMO_LEDGER_PREFIX: &str = "openrouter-cost-exporter-demo-";

/// Removes the ledgers of demos that were killed before they could remove
/// their own (a process id no longer running). Linux only: elsewhere they stay.
fn remove_abandoned_demo_ledgers() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        // `<prefix><pid>-<random>`
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(DEMO_LEDGER_PREFIX))
            .map(|rest| rest.split('-').next().unwrap_or(rest));
        let Some(pid) = pid.filter(|p| p.parse::<u32>().is_ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A minimal HTTP/1.1 GET: distroless images have no curl.
fn healthcheck(url: Option<&str>, listen: &str) -> anyhow::Result<()> {
    let url = match url {
        Some(u) => u.to_string(),
        None => {
            let port = parse_listen_address(listen)?.port();
            format!("http://127.0.0.1:{port}/healthz")
        }
    };
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("only http:// URLs are supported, got {url:?}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host:?}"))?
        .next()
        .with_context(|| format!("{host:?} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    if status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        bail!(
            "{url} answered {:?}",
            status_line.lines().next().unwrap_or("")
        )
    }
}

/// glibc malloc settings for a process whose big allocations (a listing, a
/// body: tens of MB each at 100k keys) are replaced wholesale every refresh.
/// By default glibc raises its mmap threshold after freeing a large block, so
/// later ones land in the heap and their pages stay resident after `free`,
/// and each thread that allocates gets an arena of its own: at 100k keys idle
/// memory then doubles over a few refreshes (BENCHMARKS.md). This is the one
/// place the crate uses `unsafe`; the library forbids it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; both values are
    // valid, and it runs before any other thread exists.
    unsafe {
        // Blocks of 64 KiB and up get their own mapping, returned on free.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        // One arena (small allocations still go through per-thread caches).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // Small allocations (each key's strings, each key's activity totals)
    // interleave, so freeing a listing leaves holes in the heap that glibc
    // keeps resident; at 100k keys with activity that was ~20 MiB of peak.
    // Every few seconds, free pages anywhere in the heap go back to the system.
    std::thread::spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        // SAFETY: malloc_trim only releases free memory; it takes the arena's
        // lock like any allocation.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_whole_days_of_at_least_one() {
        use openrouter_cost_exporter::ledger::DEFAULT_RETENTION_DAYS;
        assert_eq!(parse_retention("400d"), Ok(DEFAULT_RETENTION_DAYS));
        assert_eq!(parse_retention("1y"), Ok(365));
        assert_eq!(parse_retention("36h"), Ok(1));
        assert!(parse_retention("23h").unwrap_err().contains("at least 1d"));
        assert!(parse_retention("soon").is_err());
    }
}
