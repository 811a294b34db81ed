//! The YAML configuration: strict parsing, whole-file validation and secret loading.
//!
//! Parsing happens in two steps, like blackbox_exporter: serde rejects unknown
//! fields and malformed YAML (with line and column), then [`validate`] checks
//! every rule that serde cannot express and reports *all* problems at once,
//! each with its location as a path such as `companies.acme.keys[2]`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use secrecy::SecretString;
use serde::Deserialize;

pub const DEFAULT_BASE_URL: &str = "https://openrouter.ai/api/v1";
pub const DEFAULT_KEY_ENV: &str = "OPENROUTER_MANAGEMENT_KEY";
pub const DEFAULT_UNASSIGNED: &str = "unassigned";

/// Everything that can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {} problem(s):\n{}", problems.len(), format_problems(problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One validation problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A secret (the management key, or a direct key's) could not be loaded.
/// Names the source, never the value; the caller says whose secret it is.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("environment variable {0} is empty")]
    EnvEmpty(String),
    #[error("cannot read file {path}: {error}")]
    FileUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("file {0} is empty")]
    FileEmpty(PathBuf),
}

// ---------------------------------------------------------------------------
// Raw, serde-facing shapes. Unknown fields are errors everywhere.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_refresh", with = "humantime_serde")]
    refresh_interval: Duration,
    #[serde(default)]
    openrouter: RawOpenRouter,
    #[serde(default)]
    companies: UniqueMap<RawCompany>,
    #[serde(default = "default_unassigned")]
    unassigned_company: String,
    #[serde(default = "default_stale_after")]
    stale_after_intervals: u32,
    #[serde(default)]
    metrics: MetricsOptions,
    #[serde(default)]
    activity: RawActivity,
    /// Members, guardrails and workspace budgets are read every this many refreshes.
    #[serde(default = "default_organization_refresh_intervals")]
    organization_refresh_intervals: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenRouter {
    #[serde(default = "default_base_url")]
    base_url: String,
    management_key_env: Option<String>,
    management_key_file: Option<PathBuf>,
    /// `None` when unset: then min(15 s, refresh_interval) (issue 12 point 8).
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    #[serde(default = "default_max_concurrent_requests")]
    max_concurrent_requests: usize,
    #[serde(default)]
    workspaces: RawWorkspaces,
    #[serde(default = "yes")]
    use_management_key: bool,
}

impl Default for RawOpenRouter {
    fn default() -> Self {
        RawOpenRouter {
            base_url: default_base_url(),
            management_key_env: None,
            management_key_file: None,
            request_timeout: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            workspaces: RawWorkspaces::default(),
            use_management_key: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawWorkspaces {
    Keyword(String),
    List(Vec<String>),
}

impl Default for RawWorkspaces {
    fn default() -> Self {
        RawWorkspaces::Keyword("all".to_string())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompany {
    #[serde(default)]
    keys: Vec<serde_yaml::Value>,
    #[serde(default)]
    budget_usd: Budget,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
/// Requests in flight to OpenRouter at once, across workspaces, key pages,
/// `/credits`, direct keys and activity calls, unless the file says otherwise.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 8;
/// The most `openrouter.max_concurrent_requests` may be.
pub const MAX_CONCURRENT_REQUESTS_LIMIT: usize = 64;
fn default_max_concurrent_requests() -> usize {
    DEFAULT_MAX_CONCURRENT_REQUESTS
}
/// The request timeout when the file sets none and the interval is longer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_unassigned() -> String {
    DEFAULT_UNASSIGNED.to_string()
}
fn default_stale_after() -> u32 {
    3
}
/// Workspaces, members, guardrails and workspace budgets change rarely.
pub const DEFAULT_ORGANIZATION_REFRESH_INTERVALS: u32 = 10;
fn default_organization_refresh_intervals() -> u32 {
    DEFAULT_ORGANIZATION_REFRESH_INTERVALS
}

// ---------------------------------------------------------------------------
// The validated config the rest of the program uses.

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub refresh_interval: Duration,
    pub openrouter: OpenRouterConfig,
    /// In file order: the order decides glob conflicts.
    pub companies: Vec<Company>,
    pub unassigned_company: String,
    /// `/readyz` fails once the last success is older than this many intervals.
    pub stale_after_intervals: u32,
    pub metrics: MetricsOptions,
    pub activity: ActivityOptions,
    /// Workspaces, members, guardrails and workspace budgets are read on the
    /// first refresh and then every this many refreshes (at least 1).
    pub organization_refresh_intervals: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenRouterConfig {
    pub base_url: String,
    /// `None` in direct-key mode (`use_management_key: false`).
    pub management_key: Option<SecretSource>,
    pub request_timeout: Duration,
    /// Requests in flight at once, every endpoint together (1..=64, default 8).
    pub max_concurrent_requests: usize,
    pub workspaces: Workspaces,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "environment variable {var}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl SecretSource {
    /// Reads the management key. The error names the variable or file, never the value.
    pub fn load(&self) -> Result<SecretString, SecretError> {
        let value = match self {
            SecretSource::Env(var) => {
                let value = std::env::var(var).map_err(|_| SecretError::EnvMissing(var.clone()))?;
                if value.trim().is_empty() {
                    return Err(SecretError::EnvEmpty(var.clone()));
                }
                value.trim().to_string()
            }
            SecretSource::File(path) => {
                let value =
                    std::fs::read_to_string(path).map_err(|error| SecretError::FileUnreadable {
                        path: path.clone(),
                        error,
                    })?;
                // Secret files usually end with a newline (echo, kubectl create secret).
                let value = value.trim_end_matches(['\n', '\r']).to_string();
                if value.trim().is_empty() {
                    return Err(SecretError::FileEmpty(path.clone()));
                }
                value
            }
        };
        Ok(SecretString::from(value))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workspaces {
    All,
    /// The entries as written (trimmed), in file order, each a workspace UUID
    /// or slug; [`Workspaces::refs`] tells which.
    Only(Vec<String>),
}

impl Workspaces {
    /// The configured entries classified as UUID or slug; `None` for `all`.
    /// A slug must be resolved (e.g. `GET /workspaces/{slug}`, or the
    /// `/workspaces` listing's `slug` field) before it is used as
    /// `/keys?workspace_id=`, which the spec types `format: uuid`.
    pub fn refs(&self) -> Option<Vec<WorkspaceRef>> {
        match self {
            Workspaces::All => None,
            Workspaces::Only(entries) => {
                Some(entries.iter().map(|e| WorkspaceRef::parse(e)).collect())
            }
        }
    }
}

/// One `openrouter.workspaces` entry: a workspace UUID or a workspace slug.
///
/// OpenRouter's `GET /workspaces/{id}` accepts either, but `GET /keys`'s
/// `workspace_id` filter takes only the UUID, so slugs need resolving first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkspaceRef {
    /// A workspace UUID in canonical 8-4-4-4-12 form, lowercased.
    Id(String),
    /// Anything else: a workspace slug such as `default` or `research-lab`
    /// (as written; slugs are matched exactly).
    Slug(String),
}

impl WorkspaceRef {
    /// Classifies one entry (surrounding whitespace ignored). Never fails:
    /// whether a slug is well formed is checked by [`WorkspaceRef::slug_problem`].
    pub fn parse(entry: &str) -> WorkspaceRef {
        let entry = entry.trim();
        if is_uuid(entry) {
            WorkspaceRef::Id(entry.to_ascii_lowercase())
        } else {
            WorkspaceRef::Slug(entry.to_string())
        }
    }

    /// The UUID or the slug, as the API takes it.
    pub fn as_str(&self) -> &str {
        match self {
            WorkspaceRef::Id(s) | WorkspaceRef::Slug(s) => s,
        }
    }

    /// Why this entry cannot be a slug (`None` for UUIDs and good slugs):
    /// slugs are letters, digits, `-`, `_` and `.`, so they fit a URL path unescaped.
    pub fn slug_problem(&self) -> Option<String> {
        let WorkspaceRef::Slug(slug) = self else {
            return None;
        };
        if slug.is_empty() {
            return Some("workspace id is empty".to_string());
        }
        let ok = slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        (!ok).then(|| {
            format!(
                "{slug:?} is neither a workspace UUID (8-4-4-4-12 hex digits) nor a slug \
                 (letters, digits, '-', '_', '.')"
            )
        })
    }
}

impl fmt::Display for WorkspaceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkspaceRef::Id(id) => write!(f, "workspace {id}"),
            WorkspaceRef::Slug(slug) => write!(f, "workspace slug {slug:?}"),
        }
    }
}

/// A canonical UUID (8-4-4-4-12 hex digits, any case): a workspace id, as
/// `/keys?workspace_id=` requires, rather than a slug.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Company {
    pub name: String,
    pub selectors: Vec<Selector>,
    pub budget: Budget,
}

/// How a company claims a key. Precedence when matching: hash, then exact
/// name, then workspace, then creator (exact email before `@domain`), then glob.
/// A `Direct` key is not listed by the management API but polled with its own secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    Name(String),
    Hash(String),
    NameGlob(String),
    Direct {
        name: String,
        secret: SecretSource,
    },
    /// Every key of one workspace: its UUID (lowercased) or its slug (as written).
    Workspace(String),
    /// Keys created by one member: an email (lowercased), or `@domain` for every member of a domain.
    Creator(String),
}

impl fmt::Display for Selector {
    /// The `selector` label value of `openrouter_config_selector_matches`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(v) => write!(f, "name:{v}"),
            Selector::Hash(v) => write!(f, "hash:{v}"),
            Selector::NameGlob(v) => write!(f, "name_glob:{v}"),
            Selector::Direct { name, .. } => write!(f, "direct:{name}"),
            Selector::Workspace(v) => write!(f, "workspace:{v}"),
            Selector::Creator(v) => write!(f, "creator:{v}"),
        }
    }
}

/// Optional company budgets in US dollars per calendar window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub daily: Option<f64>,
    pub weekly: Option<f64>,
    pub monthly: Option<f64>,
}

/// Cardinality controls for very large accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsOptions {
    /// Publish per-key families (`openrouter_key_*`). Off: company-level only.
    #[serde(default = "yes")]
    pub per_key: bool,
    /// Publish `openrouter_key_byok_usage_usd` (company BYOK sums stay).
    #[serde(default = "yes")]
    pub per_key_byok: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            per_key: true,
            per_key_byok: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Per-key activity collection: rolling windows and the model mix. On
/// whenever a management key is configured, unless `enabled: false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityOptions {
    pub enabled: bool,
    /// How often to look for keys not yet read for today or due for a
    /// re-read (also right after each UTC midnight).
    pub refresh_interval: Duration,
    /// Activity calls in flight at once.
    pub concurrency: usize,
    /// Activity calls started per second at most (the first fill of a large
    /// account takes keys ÷ this many seconds).
    pub calls_per_second: u32,
    /// Models kept per company in the model mix; the rest fold into `model="other"`.
    pub top_models: usize,
}

/// `activity:` as written; `enabled` unset means "on with a management key".
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivity {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default = "default_activity_interval", with = "humantime_serde")]
    refresh_interval: Duration,
    #[serde(default = "default_activity_concurrency")]
    concurrency: usize,
    #[serde(default = "default_activity_rate")]
    calls_per_second: u32,
    #[serde(default = "default_top_models")]
    top_models: usize,
}

impl Default for RawActivity {
    fn default() -> Self {
        RawActivity {
            enabled: None,
            refresh_interval: default_activity_interval(),
            concurrency: default_activity_concurrency(),
            calls_per_second: default_activity_rate(),
            top_models: default_top_models(),
        }
    }
}

impl Default for ActivityOptions {
    /// The defaults with a management key configured.
    fn default() -> Self {
        let raw = RawActivity::default();
        ActivityOptions {
            enabled: true,
            refresh_interval: raw.refresh_interval,
            concurrency: raw.concurrency,
            calls_per_second: raw.calls_per_second,
            top_models: raw.top_models,
        }
    }
}

/// Default activity call rate: the first fill of 100k keys takes under 3 h.
pub const DEFAULT_ACTIVITY_CALLS_PER_SECOND: u32 = 10;

fn default_activity_rate() -> u32 {
    DEFAULT_ACTIVITY_CALLS_PER_SECOND
}
fn default_activity_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_activity_concurrency() -> usize {
    4
}
fn default_top_models() -> usize {
    10
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // Errors quote offending values; a key pasted into the file must not reach the log.
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: redact_keys(&e.to_string()),
        })?;
        validate(raw, text).map_err(|problems| ConfigError::Invalid {
            origin: origin.to_string(),
            problems: problems
                .into_iter()
                .map(|p| Problem {
                    location: redact_keys(&p.location),
                    message: redact_keys(&p.message),
                })
                .collect(),
        })
    }

    /// Every direct key: (company index, key name, secret source).
    pub fn direct_keys(&self) -> impl Iterator<Item = (usize, &str, &SecretSource)> {
        self.companies.iter().enumerate().flat_map(|(c, company)| {
            company.selectors.iter().filter_map(move |s| match s {
                Selector::Direct { name, secret } => Some((c, name.as_str(), secret)),
                _ => None,
            })
        })
    }

    pub fn company_names(&self) -> impl Iterator<Item = &str> {
        self.companies.iter().map(|c| c.name.as_str())
    }
}

fn validate(raw: RawConfig, text: &str) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |location: &str, message: String| {
        problems.push(Problem {
            location: location.to_string(),
            message,
        })
    };

    if raw.refresh_interval < Duration::from_secs(1) {
        problem(
            "refresh_interval",
            format!(
                "must be at least 1s, got {}",
                humantime::format_duration(raw.refresh_interval)
            ),
        );
    }
    if raw.stale_after_intervals == 0 {
        problem("stale_after_intervals", "must be at least 1".to_string());
    }

    let or = raw.openrouter;
    match reqwest::Url::parse(&or.base_url) {
        Ok(url) if url.scheme() == "http" || url.scheme() == "https" => {}
        Ok(url) => problem(
            "openrouter.base_url",
            format!("scheme must be http or https, got {:?}", url.scheme()),
        ),
        Err(e) => problem(
            "openrouter.base_url",
            format!("not a URL ({e}): {:?}", or.base_url),
        ),
    }
    let management_key = match (or.management_key_env, or.management_key_file) {
        (env, file) if !or.use_management_key => {
            if env.is_some() || file.is_some() {
                problem(
                    "openrouter.use_management_key",
                    "is false, so management_key_env/management_key_file must not be set"
                        .to_string(),
                );
            }
            None
        }
        (Some(_), Some(_)) => {
            problem(
                "openrouter",
                "set only one of management_key_env and management_key_file".to_string(),
            );
            None
        }
        (Some(var), None) => {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                problem(
                    "openrouter.management_key_env",
                    format!("not a valid environment variable name: {var:?}"),
                );
            } else if var.starts_with("sk-or-") {
                // Someone pasted the key itself. Say so without echoing it.
                problem(
                    "openrouter.management_key_env",
                    "looks like a key, not a variable name: put the key in the environment \
                     and name the variable here"
                        .to_string(),
                );
            }
            Some(SecretSource::Env(var))
        }
        (None, Some(path)) => Some(SecretSource::File(path)),
        (None, None) => Some(SecretSource::Env(DEFAULT_KEY_ENV.to_string())),
    };
    // Unset: 15 s, or the interval when that is shorter (a 10 s interval alone is valid).
    // Only a timeout the file sets can be too long.
    let request_timeout = match or.request_timeout {
        None => DEFAULT_REQUEST_TIMEOUT.min(raw.refresh_interval),
        Some(t) if t.is_zero() => {
            problem("openrouter.request_timeout", "must be above 0".to_string());
            t
        }
        Some(t) if t >= raw.refresh_interval => {
            problem(
                "openrouter.request_timeout",
                format!(
                    "must be shorter than refresh_interval ({} >= {})",
                    humantime::format_duration(t),
                    humantime::format_duration(raw.refresh_interval)
                ),
            );
            t
        }
        Some(t) => t,
    };
    if !(1..=MAX_CONCURRENT_REQUESTS_LIMIT).contains(&or.max_concurrent_requests) {
        problem(
            "openrouter.max_concurrent_requests",
            format!(
                "must be between 1 and {MAX_CONCURRENT_REQUESTS_LIMIT}, got {}",
                or.max_concurrent_requests
            ),
        );
    }
    let workspaces = match or.workspaces {
        RawWorkspaces::Keyword(k) if k == "all" => Workspaces::All,
        RawWorkspaces::Keyword(k) => {
            problem(
                "openrouter.workspaces",
                format!("must be \"all\" or a list of workspace ids, got {k:?}"),
            );
            Workspaces::All
        }
        RawWorkspaces::List(ids) => {
            if ids.is_empty() {
                problem(
                    "openrouter.workspaces",
                    "the list is empty; use \"all\" or name at least one workspace id".to_string(),
                );
            }
            let mut seen = HashMap::new();
            for (i, id) in ids.iter().enumerate() {
                let loc = format!("openrouter.workspaces[{i}]");
                let entry = WorkspaceRef::parse(id);
                if let Some(message) = entry.slug_problem() {
                    problem(&loc, message);
                } else if let Some(first) = seen.insert(entry, i) {
                    problem(
                        &loc,
                        format!("duplicate of openrouter.workspaces[{first}] ({id:?})"),
                    );
                }
            }
            Workspaces::Only(ids.iter().map(|id| id.trim().to_string()).collect())
        }
    };

    let raw_activity = raw.activity;
    let activity = ActivityOptions {
        // On by default whenever the management API is used.
        enabled: raw_activity.enabled.unwrap_or(or.use_management_key),
        refresh_interval: raw_activity.refresh_interval,
        concurrency: raw_activity.concurrency,
        calls_per_second: raw_activity.calls_per_second,
        top_models: raw_activity.top_models,
    };
    if activity.enabled {
        if !or.use_management_key {
            problem(
                "activity.enabled",
                "the activity API needs a management key (openrouter.use_management_key is false)"
                    .to_string(),
            );
        }
        if activity.refresh_interval < Duration::from_secs(60) {
            problem(
                "activity.refresh_interval",
                format!(
                    "must be at least 1m (one call per key), got {}",
                    humantime::format_duration(activity.refresh_interval)
                ),
            );
        }
        if !(1..=64).contains(&activity.concurrency) {
            problem(
                "activity.concurrency",
                format!("must be between 1 and 64, got {}", activity.concurrency),
            );
        }
        if !(1..=1000).contains(&activity.calls_per_second) {
            problem(
                "activity.calls_per_second",
                format!(
                    "must be between 1 and 1000, got {}",
                    activity.calls_per_second
                ),
            );
        }
        if activity.top_models == 0 {
            problem("activity.top_models", "must be at least 1".to_string());
        }
    }

    if raw.unassigned_company.trim().is_empty() {
        problem("unassigned_company", "must not be empty".to_string());
    }

    // A company named twice: serde would keep only the last block.
    for dup in &raw.companies.duplicates {
        problem(
            &format!("companies.{}", dup.key),
            dup.describe("company", text, &["companies"]),
        );
    }

    // Exact names and hashes must belong to one company only; remember the first owner.
    let mut exact_owner: HashMap<Selector, String> = HashMap::new();
    let mut companies = Vec::with_capacity(raw.companies.entries.len());
    for (name, company) in raw.companies.entries {
        let base = format!("companies.{name}");
        if name.trim().is_empty() {
            problem(&base, "company name is empty".to_string());
        }
        if name == raw.unassigned_company {
            problem(
                &base,
                format!("{name:?} is the unassigned_company label; pick another name"),
            );
        }
        if company.keys.is_empty() {
            problem(
                &format!("{base}.keys"),
                "a company needs at least one key selector".to_string(),
            );
        }
        let mut selectors: Vec<Selector> = Vec::with_capacity(company.keys.len());
        for (i, value) in company.keys.iter().enumerate() {
            let loc = format!("{base}.keys[{i}]");
            let selector = match parse_selector(value) {
                Ok(s) => s,
                Err(message) => {
                    problem(&loc, message);
                    continue;
                }
            };
            if let Selector::NameGlob(pattern) = &selector {
                if let Err(e) = glob::Pattern::new(pattern) {
                    problem(&loc, format!("invalid name_glob {pattern:?}: {e}"));
                    continue;
                }
            }
            if let Selector::Workspace(workspace) = &selector {
                if let Some(message) = WorkspaceRef::parse(workspace).slug_problem() {
                    problem(&loc, message);
                    continue;
                }
            }
            if let Selector::Creator(creator) = &selector {
                if let Some(message) = creator_problem(creator) {
                    problem(&loc, message);
                    continue;
                }
            }
            if selectors.contains(&selector) {
                problem(
                    &loc,
                    format!("duplicate selector {selector} in this company"),
                );
                continue;
            }
            if !matches!(selector, Selector::NameGlob(_)) {
                // A direct key's name is its identity, unique across companies like exact names.
                let identity = match &selector {
                    Selector::Direct { name, .. } => Selector::Name(name.clone()),
                    other => other.clone(),
                };
                if let Some(other) = exact_owner.get(&identity) {
                    problem(
                        &loc,
                        format!("{selector} is already claimed by company {other:?}"),
                    );
                } else {
                    exact_owner.insert(identity, name.clone());
                }
            }
            selectors.push(selector);
        }
        for (window, value) in [
            ("daily", company.budget_usd.daily),
            ("weekly", company.budget_usd.weekly),
            ("monthly", company.budget_usd.monthly),
        ] {
            if let Some(v) = value {
                if !v.is_finite() || v < 0.0 {
                    problem(
                        &format!("{base}.budget_usd.{window}"),
                        format!("must be a finite amount >= 0, got {v}"),
                    );
                }
            }
        }
        companies.push(Company {
            name,
            selectors,
            budget: company.budget_usd,
        });
    }

    let has_direct = companies
        .iter()
        .flat_map(|c: &Company| &c.selectors)
        .any(|s| matches!(s, Selector::Direct { .. }));
    if management_key.is_none() && or.use_management_key {
        // Already reported above (both sources set).
    } else if !or.use_management_key && !has_direct {
        problem(
            "openrouter.use_management_key",
            "is false, but no company has a direct key (name + secret_env/secret_file): nothing to poll"
                .to_string(),
        );
    }

    if raw.organization_refresh_intervals == 0 {
        problem(
            "organization_refresh_intervals",
            "must be at least 1 (1 = read workspaces, members and caps on every refresh)"
                .to_string(),
        );
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        refresh_interval: raw.refresh_interval,
        openrouter: OpenRouterConfig {
            base_url: or.base_url.trim_end_matches('/').to_string(),
            management_key,
            request_timeout,
            max_concurrent_requests: or.max_concurrent_requests,
            workspaces,
        },
        companies,
        unassigned_company: raw.unassigned_company,
        stale_after_intervals: raw.stale_after_intervals,
        metrics: raw.metrics,
        activity,
        organization_refresh_intervals: raw.organization_refresh_intervals,
    })
}

// ---------------------------------------------------------------------------
// Mappings whose keys must be unique.

/// A YAML mapping with string keys, in file order, that remembers keys given
/// twice instead of silently keeping the last (what `IndexMap`/`BTreeMap`
/// deserialisation does). The first definition is kept; callers turn
/// [`UniqueMap::duplicates`] into errors that name both locations.
#[derive(Debug)]
pub(crate) struct UniqueMap<V> {
    pub entries: IndexMap<String, V>,
    pub duplicates: Vec<Duplicate>,
}

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap {
            entries: IndexMap::new(),
            duplicates: Vec::new(),
        }
    }
}

/// A key defined twice in one mapping: its 1-based entry numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duplicate {
    pub key: String,
    pub first_entry: usize,
    pub again_entry: usize,
}

impl Duplicate {
    /// "company \"acme\" is defined twice: at lines 3 and 9 (entries 1 and 3);
    /// merge the two". Lines are found for block-style YAML under `parents`
    /// (the mapping's path from the top); entry numbers are always given.
    pub fn describe(&self, what: &str, text: &str, parents: &[&str]) -> String {
        let lines = block_key_lines(text, parents, &self.key);
        let lines = match lines.as_slice() {
            [first, again, ..] => format!("at lines {first} and {again} ("),
            _ => "(".to_string(),
        };
        format!(
            "{what} {:?} is defined twice: {lines}entries {} and {} of {}); \
             merge the two, only one definition can count",
            self.key,
            self.first_entry,
            self.again_entry,
            parents.join(".")
        )
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                // `companies:` with nothing under it, as an empty map.
                Ok(UniqueMap::default())
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = UniqueMap::default();
                let mut entry = 0;
                while let Some(key) = map.next_key::<String>()? {
                    entry += 1;
                    let value: V = map.next_value()?;
                    match out.entries.get_index_of(&key) {
                        Some(first) => out.duplicates.push(Duplicate {
                            key,
                            first_entry: first + 1,
                            again_entry: entry,
                        }),
                        None => {
                            out.entries.insert(key, value);
                        }
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// 1-based line numbers where `key:` is written as a block-style entry of the
/// mapping at `parents` (each parent a block-style key nested in the one
/// before, the first at column 0). Best effort: flow-style mappings give none.
pub(crate) fn block_key_lines(text: &str, parents: &[&str], key: &str) -> Vec<usize> {
    fn indent(line: &str) -> usize {
        line.len() - line.trim_start_matches(' ').len()
    }
    fn is_key(line: &str, key: &str) -> bool {
        let t = line.trim_start_matches(' ');
        [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| t == k.as_str() || t.starts_with(&format!("{k} ")))
    }
    let lines: Vec<&str> = text.lines().collect();
    // (first line index, last line index exclusive, indent of the children)
    let mut start = 0;
    let mut end = lines.len();
    let mut child_indent = 0;
    let content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    for parent in parents {
        let Some(at) =
            (start..end).find(|&i| indent(lines[i]) == child_indent && is_key(lines[i], parent))
        else {
            return Vec::new();
        };
        let Some(first_child) = (at + 1..end).find(|&i| content(lines[i])) else {
            return Vec::new();
        };
        let inner = indent(lines[first_child]);
        if inner <= child_indent {
            return Vec::new();
        }
        start = first_child;
        end = (first_child..end)
            .find(|&i| content(lines[i]) && indent(lines[i]) < inner)
            .unwrap_or(end);
        child_indent = inner;
    }
    (start..end)
        .filter(|&i| indent(lines[i]) == child_indent && is_key(lines[i], key))
        .map(|i| i + 1)
        .collect()
}

/// Replaces anything that looks like an OpenRouter key (`sk-or-…`) with `[REDACTED]`.
fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("sk-or-") {
        out.push_str(&rest[..start]);
        out.push_str("[REDACTED]");
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A selector is a bare string (exact name) or a one-entry map: `name`, `hash` or `name_glob`.
fn parse_selector(value: &serde_yaml::Value) -> Result<Selector, String> {
    use serde_yaml::Value;
    let non_empty = |kind: &str, v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::String(_) => Err(format!("{kind} must not be empty")),
            other => Err(format!("{kind} must be a string, got {}", type_name(other))),
        }
    };
    match value {
        Value::String(_) => non_empty("key name", value).map(Selector::Name),
        Value::Mapping(map)
            if map.contains_key("secret_env") || map.contains_key("secret_file") =>
        {
            parse_direct_key(map)
        }
        Value::Mapping(map) => {
            if map.len() != 1 {
                return Err(format!(
                    "a selector has exactly one of name, hash, name_glob, workspace, creator; got {} entries",
                    map.len()
                ));
            }
            let Some((k, v)) = map.iter().next() else {
                return Err("empty selector".to_string());
            };
            match k.as_str() {
                Some("name") => non_empty("name", v).map(Selector::Name),
                Some("hash") => non_empty("hash", v).map(|h| Selector::Hash(h.to_lowercase())),
                Some("name_glob") => non_empty("name_glob", v).map(Selector::NameGlob),
                Some("workspace") => non_empty("workspace", v).map(|w| {
                    Selector::Workspace(WorkspaceRef::parse(&w).as_str().to_string())
                }),
                Some("creator") => {
                    non_empty("creator", v).map(|c| Selector::Creator(c.trim().to_lowercase()))
                }
                Some(other) => Err(format!(
                    "unknown selector {other:?}: expected name, hash, name_glob, workspace or creator"
                )),
                None => Err("selector keys must be strings".to_string()),
            }
        }
        other => Err(format!(
            "a selector is a key name or a map with name, hash, name_glob, workspace or creator; got {}",
            type_name(other)
        )),
    }
}

/// Why `creator` (lowercased) is neither an email nor `@domain`.
fn creator_problem(creator: &str) -> Option<String> {
    let (local, domain) = creator.rsplit_once('@').unwrap_or(("", ""));
    let domain_ok = !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains(['@', ' ', '*']);
    if domain_ok && !local.contains(['@', ' ', '*']) {
        return None;
    }
    Some(format!(
        "creator {creator:?} is neither a member's email (jane@acme.com) nor a domain (\"@acme.com\")"
    ))
}

/// `{name: acme-direct, secret_env: ACME_KEY}` or `{name: …, secret_file: /path}`.
fn parse_direct_key(map: &serde_yaml::Mapping) -> Result<Selector, String> {
    let mut name = None;
    let mut secret = None;
    for (k, v) in map {
        let value = v.as_str().filter(|s| !s.is_empty());
        match (k.as_str(), value) {
            (Some("name"), Some(n)) => name = Some(n.to_string()),
            (Some("secret_env"), Some(var)) if secret.is_none() => {
                if var.starts_with("sk-or-") {
                    return Err("secret_env looks like a key, not a variable name: put the key \
                                in the environment and name the variable here"
                        .to_string());
                }
                secret = Some(SecretSource::Env(var.to_string()))
            }
            (Some("secret_file"), Some(path)) if secret.is_none() => {
                secret = Some(SecretSource::File(PathBuf::from(path)))
            }
            (Some("secret_env" | "secret_file"), Some(_)) => {
                return Err("a direct key has one of secret_env and secret_file, not both".to_string())
            }
            (Some(field @ ("name" | "secret_env" | "secret_file")), None) => {
                return Err(format!("{field} must be a non-empty string"))
            }
            (Some(other), _) => {
                return Err(format!(
                    "unknown field {other:?} in a direct key: expected name and secret_env or secret_file"
                ))
            }
            (None, _) => return Err("selector keys must be strings".to_string()),
        }
    }
    match (name, secret) {
        (Some(name), Some(secret)) => Ok(Selector::Direct { name, secret }),
        _ => Err(
            "a direct key needs a name (its key label) as well as secret_env or secret_file"
                .to_string(),
        ),
    }
}

fn type_name(v: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse(yaml, "test.yaml")
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = parse("companies:\n  acme:\n    keys: [acme-prod]\n").unwrap();
        assert_eq!(cfg.refresh_interval, Duration::from_secs(300));
        assert_eq!(cfg.openrouter.base_url, DEFAULT_BASE_URL);
        assert_eq!(
            cfg.openrouter.management_key,
            Some(SecretSource::Env(DEFAULT_KEY_ENV.into()))
        );
        assert_eq!(cfg.openrouter.workspaces, Workspaces::All);
        assert_eq!(cfg.unassigned_company, "unassigned");
        assert_eq!(
            cfg.companies[0].selectors,
            vec![Selector::Name("acme-prod".into())]
        );
    }

    #[test]
    fn all_selector_forms_parse_in_order() {
        let cfg = parse(
            "companies:\n  b:\n    keys: [x]\n  a:\n    keys:\n      - plain\n      - name: n\n      - hash: ABC\n      - name_glob: 'a-*'\n",
        )
        .unwrap();
        let names: Vec<_> = cfg.company_names().collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(
            cfg.companies[1].selectors,
            vec![
                Selector::Name("plain".into()),
                Selector::Name("n".into()),
                Selector::Hash("abc".into()),
                Selector::NameGlob("a-*".into()),
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            "refresh_interval: 500ms\nopenrouter:\n  workspaces: []\ncompanies:\n  a:\n    keys: [{hash: h}, {bogus: x}]\n    budget_usd: {daily: -1}\n  b:\n    keys: [{hash: h}]\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected validation errors")
        };
        let locations: Vec<_> = problems.iter().map(|p| p.location.as_str()).collect();
        assert!(locations.contains(&"refresh_interval"), "{locations:?}");
        assert!(locations.contains(&"openrouter.workspaces"));
        assert!(locations.contains(&"companies.a.keys[1]"));
        assert!(locations.contains(&"companies.a.budget_usd.daily"));
        assert!(locations.contains(&"companies.b.keys[0]"));
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        match parse(yaml) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn a_company_named_twice_is_an_error_naming_both_places() {
        let yaml = "companies:\n  acme:\n    keys: [a]\n  globex:\n    keys: [g]\n  acme:\n    keys: [b]\n";
        let found = problems(yaml);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].location, "companies.acme");
        let message = &found[0].message;
        assert!(message.contains("defined twice"), "{message}");
        assert!(message.contains("lines 2 and 6"), "{message}");
        assert!(
            message.contains("entries 1 and 3 of companies"),
            "{message}"
        );
        // Flow style, and quoted keys in block style.
        let found = problems("companies: {acme: {keys: [a]}, acme: {keys: [b]}}\n");
        assert!(found[0].message.contains("entries 1 and 2"), "{found:?}");
        let found = problems("companies:\n  'acme':\n    keys: [a]\n  \"acme\":\n    keys: [b]\n");
        assert!(found[0].message.contains("lines 2 and 4"), "{found:?}");
        // A company called like a nested field is found only at company depth.
        let found = problems("companies:\n  keys:\n    keys: [a]\n  keys:\n    keys: [b]\n");
        assert!(found[0].message.contains("lines 2 and 4"), "{found:?}");
    }

    #[test]
    fn block_key_lines_follow_indentation() {
        let text = "a:\n  b:\n    x: 1\n    # x: comment\n    x: 2\n  x: 3\nx: 4\n";
        assert_eq!(block_key_lines(text, &["a", "b"], "x"), vec![3, 5]);
        assert_eq!(block_key_lines(text, &["a"], "x"), vec![6]);
        assert_eq!(block_key_lines(text, &[], "x"), vec![7]);
        assert!(block_key_lines("a: {x: 1}\n", &["a"], "x").is_empty());
    }

    #[test]
    fn max_concurrent_requests_defaults_to_8_and_is_bounded() {
        let cfg = parse("openrouter: {}\n").unwrap();
        assert_eq!(cfg.openrouter.max_concurrent_requests, 8);
        let cfg = parse("openrouter:\n  max_concurrent_requests: 16\n").unwrap();
        assert_eq!(cfg.openrouter.max_concurrent_requests, 16);
        for bad in ["0", "65"] {
            let found = problems(&format!("openrouter:\n  max_concurrent_requests: {bad}\n"));
            assert_eq!(found[0].location, "openrouter.max_concurrent_requests");
        }
    }

    #[test]
    fn unset_request_timeout_fits_a_short_interval() {
        let cfg = parse("refresh_interval: 10s\n").unwrap();
        assert_eq!(cfg.openrouter.request_timeout, Duration::from_secs(10));
        let cfg = parse("refresh_interval: 2m\n").unwrap();
        assert_eq!(cfg.openrouter.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        let cfg = parse("refresh_interval: 10s\nopenrouter:\n  request_timeout: 4s\n").unwrap();
        assert_eq!(cfg.openrouter.request_timeout, Duration::from_secs(4));
        // Only an explicit one can be too long.
        let found = problems("refresh_interval: 10s\nopenrouter:\n  request_timeout: 15s\n");
        assert_eq!(found[0].location, "openrouter.request_timeout");
        assert!(found[0]
            .message
            .contains("must be shorter than refresh_interval"));
        let found = problems("openrouter:\n  request_timeout: 0s\n");
        assert_eq!(found[0].message, "must be above 0");
    }

    #[test]
    fn workspace_entries_are_uuids_or_slugs() {
        let cfg = parse(
            "openrouter:\n  workspaces: ['11111111-1111-4111-8111-11111111111A', default, research-lab]\n",
        )
        .unwrap();
        assert_eq!(
            cfg.openrouter.workspaces.refs(),
            Some(vec![
                WorkspaceRef::Id("11111111-1111-4111-8111-11111111111a".into()),
                WorkspaceRef::Slug("default".into()),
                WorkspaceRef::Slug("research-lab".into()),
            ])
        );
        assert_eq!(parse("{}\n").unwrap().openrouter.workspaces.refs(), None);
        assert_eq!(WorkspaceRef::parse(" default ").as_str(), "default");
        // The same UUID in two spellings is a duplicate.
        let found = problems(
            "openrouter:\n  workspaces: ['11111111-1111-4111-8111-11111111111a', '11111111-1111-4111-8111-11111111111A']\n",
        );
        assert_eq!(found[0].location, "openrouter.workspaces[1]");
        assert!(found[0]
            .message
            .contains("duplicate of openrouter.workspaces[0]"));
        // Not a slug: would need escaping in a URL path.
        let found = problems("openrouter:\n  workspaces: ['my team', 'a/b', '']\n");
        let locations: Vec<_> = found.iter().map(|p| p.location.as_str()).collect();
        assert_eq!(
            locations,
            [
                "openrouter.workspaces[0]",
                "openrouter.workspaces[1]",
                "openrouter.workspaces[2]"
            ]
        );
        assert!(
            found[0].message.contains("neither a workspace UUID"),
            "{found:?}"
        );
        assert_eq!(found[2].message, "workspace id is empty");
    }

    #[test]
    fn secret_file_trailing_newline_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-or-v1-abc\n").unwrap();
        let secret = SecretSource::File(path).load().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(secret.expose_secret(), "sk-or-v1-abc");
    }

    #[test]
    fn missing_secret_names_the_source() {
        let err = SecretSource::Env("OPENROUTER_TEST_SURELY_UNSET_VAR".into())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("OPENROUTER_TEST_SURELY_UNSET_VAR"));
        let err = SecretSource::File("/nonexistent/secret".into())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/secret"));
    }
}
