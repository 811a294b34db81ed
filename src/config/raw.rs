//! The config file as serde reads it: every section's raw shape and its
//! defaults. Unknown fields are errors everywhere; a missing field takes the
//! section's `Default`, built from the `DEFAULT_*` constants below.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::yaml::UniqueMap;
use super::{Billing, Budget, MetricsOptions};

pub const DEFAULT_BASE_URL: &str = "https://openrouter.ai/api/v1";
pub const DEFAULT_KEY_ENV: &str = "OPENROUTER_MANAGEMENT_KEY";
pub const DEFAULT_UNASSIGNED: &str = "unassigned";
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_STALE_AFTER_INTERVALS: u32 = 3;
/// Requests in flight to OpenRouter at once, across workspaces, key pages,
/// `/credits`, direct keys and activity calls, unless the file says otherwise.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 8;
/// The most `openrouter.max_concurrent_requests` may be.
pub const MAX_CONCURRENT_REQUESTS_LIMIT: usize = 64;
/// The request timeout when the file sets none and the interval is longer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Workspaces, members, guardrails and workspace budgets change rarely.
pub const DEFAULT_ORGANIZATION_REFRESH_INTERVALS: u32 = 10;
/// Default activity call rate: the first fill of 100k keys takes under 3 h.
pub const DEFAULT_ACTIVITY_CALLS_PER_SECOND: u32 = 10;
pub const DEFAULT_ACTIVITY_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_ACTIVITY_CONCURRENCY: usize = 4;
pub const DEFAULT_TOP_MODELS: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    pub openrouter: RawOpenRouter,
    pub companies: UniqueMap<RawCompany>,
    pub unassigned_company: String,
    pub stale_after_intervals: u32,
    pub metrics: MetricsOptions,
    pub activity: RawActivity,
    /// Members, guardrails and workspace budgets are read every this many refreshes.
    pub organization_refresh_intervals: u32,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            openrouter: RawOpenRouter::default(),
            companies: UniqueMap::default(),
            unassigned_company: DEFAULT_UNASSIGNED.to_string(),
            stale_after_intervals: DEFAULT_STALE_AFTER_INTERVALS,
            metrics: MetricsOptions::default(),
            activity: RawActivity::default(),
            organization_refresh_intervals: DEFAULT_ORGANIZATION_REFRESH_INTERVALS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawOpenRouter {
    pub base_url: String,
    pub management_key_env: Option<String>,
    pub management_key_file: Option<PathBuf>,
    /// `None` when unset: then min(15 s, refresh_interval) (issue 12 point 8).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    pub max_concurrent_requests: usize,
    pub workspaces: RawWorkspaces,
    pub use_management_key: bool,
}

impl Default for RawOpenRouter {
    fn default() -> Self {
        RawOpenRouter {
            base_url: DEFAULT_BASE_URL.to_string(),
            management_key_env: None,
            management_key_file: None,
            request_timeout: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            workspaces: RawWorkspaces::default(),
            use_management_key: true,
        }
    }
}

/// `workspaces: all`, or a list of workspace UUIDs and slugs.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawWorkspaces {
    Keyword(String),
    List(Vec<String>),
}

impl Default for RawWorkspaces {
    fn default() -> Self {
        RawWorkspaces::Keyword("all".to_string())
    }
}

/// A company as written: its selectors stay YAML values until validation,
/// so each bad one is reported with its own index.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCompany {
    pub keys: Vec<serde_yaml::Value>,
    pub budget_usd: Budget,
    pub billing: Option<Billing>,
}

/// `activity:` as written; `enabled` unset means "on with a management key".
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawActivity {
    pub enabled: Option<bool>,
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    pub concurrency: usize,
    pub calls_per_second: u32,
    pub top_models: usize,
}

impl Default for RawActivity {
    fn default() -> Self {
        RawActivity {
            enabled: None,
            refresh_interval: DEFAULT_ACTIVITY_REFRESH_INTERVAL,
            concurrency: DEFAULT_ACTIVITY_CONCURRENCY,
            calls_per_second: DEFAULT_ACTIVITY_CALLS_PER_SECOND,
            top_models: DEFAULT_TOP_MODELS,
        }
    }
}
