//! openrouter-cost-exporter: OpenRouter spend per API key and per company, for Prometheus.
//!
//! Data flows one way: [`config`] + [`upstream`] → [`attribution`] →
//! [`snapshot`] → [`exposition`] (rendered once per refresh by [`exporter`]) →
//! [`server`]. [`sim`] is a simulated OpenRouter used by [`demo`] and the tests.

pub mod activity;
pub mod attribution;
pub mod config;
pub mod demo;
pub mod exporter;
pub mod exposition;
pub mod server;
pub mod sim;
pub mod snapshot;
pub mod telemetry;
pub mod upstream;
pub mod webconfig;
pub mod zerocopy;
