//! openrouter-cost-exporter: OpenRouter spend per API key and per company, for Prometheus.
//!
//! Data flows one way, and a module imports only from the layers below it:
//!
//! ```text
//! main (binary) ── CLI, logging, signals, reload watcher
//!   server ── HTTP: routes, slots, timeouts                 (reads a ReadHandle)
//!   webconfig ── TLS, basic auth
//!   page ── the HTML pages and CSV, from body::Published    (never calls OpenRouter)
//!   exporter ── state machine: refresh, reload, publish     (owns the loops and
//!               every write to the shared state)
//!   direct, activity ── extra collectors run by the exporter
//!   body ── render a snapshot + status once, identity and open gzip
//!   exposition ── the text format and every metric family   (sees model types only)
//!   snapshot, status ── `Key`/`Listing`/`Snapshot`, exact sums; the exporter's status
//!   attribution ── which company owns each key
//!   upstream ── the OpenRouter client and its wire types
//!   config, money, telemetry, sync ── ground floor: no crate imports above them
//! ```
//!
//! [`sim`] (a simulated OpenRouter) and [`demo`] stand beside the stack: the
//! demo, tests and benchmarks drive the real client against them.
//! `docs/architecture.md` draws the runtime (tasks, locks, the publish
//! sequence) and holds the layer table that `tests/layering.rs` enforces.
#![forbid(unsafe_code)]

pub mod activity;
pub mod attribution;
pub mod body;
pub mod config;
pub mod demo;
pub mod direct;
pub mod exporter;
pub mod exposition;
pub mod ledger;
pub mod money;
pub mod page;
pub mod server;
pub mod sim;
pub mod snapshot;
pub mod status;
pub mod sync;
pub mod telemetry;
pub mod upstream;
pub mod webconfig;
