//! Whole-file validation of the raw shapes: one validator per YAML section,
//! all writing into one [`Problems`] list, so every problem in the file is
//! reported at once, each with its location (`companies.acme.keys[2]`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{
    RawActivity, RawCompany, RawConfig, RawOpenRouter, RawWorkspaces, DEFAULT_KEY_ENV,
    DEFAULT_REQUEST_TIMEOUT, MAX_CONCURRENT_REQUESTS_LIMIT,
};
use super::secret::{looks_like_key, SecretSource};
use super::selector::{parse_selector, Selector};
use super::workspace::{WorkspaceRef, Workspaces};
use super::yaml::UniqueMap;
use super::{
    ActivityOptions, Billing, Budget, Company, Config, OpenRouterConfig, Problem,
    MAX_MARKUP_PERCENT,
};

/// The problems found so far, in the order the checks ran.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            location: location.into(),
            message: message.into(),
        });
    }
}

/// Exact names, hashes, workspaces, creators and direct-key names, each with
/// the first company that claimed it: they may belong to one company only.
type Owners = HashMap<Selector, String>;

/// Checks every rule serde cannot express; the config, or every problem found.
pub(super) fn validate(raw: RawConfig, text: &str) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    if raw.refresh_interval < Duration::from_secs(1) {
        problems.push(
            "refresh_interval",
            format!(
                "must be at least 1s, got {}",
                humantime::format_duration(raw.refresh_interval)
            ),
        );
    }
    if raw.stale_after_intervals == 0 {
        problems.push("stale_after_intervals", "must be at least 1");
    }
    let use_management_key = raw.openrouter.use_management_key;
    let openrouter = validate_openrouter(raw.openrouter, raw.refresh_interval, &mut problems);
    let activity = validate_activity(raw.activity, use_management_key, &mut problems);
    if raw.unassigned_company.trim().is_empty() {
        problems.push("unassigned_company", "must not be empty");
    }
    let companies = validate_companies(raw.companies, &raw.unassigned_company, text, &mut problems);
    let has_direct = companies
        .iter()
        .flat_map(|c| &c.selectors)
        .any(|s| matches!(s, Selector::Direct { .. }));
    if !use_management_key && !has_direct {
        problems.push(
            "openrouter.use_management_key",
            "is false, but no company has a direct key (name + secret_env/secret_file): nothing to poll",
        );
    }
    if raw.organization_refresh_intervals == 0 {
        problems.push(
            "organization_refresh_intervals",
            "must be at least 1 (1 = read workspaces, members and caps on every refresh)",
        );
    }
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(Config {
        refresh_interval: raw.refresh_interval,
        openrouter,
        companies,
        unassigned_company: raw.unassigned_company,
        stale_after_intervals: raw.stale_after_intervals,
        metrics: raw.metrics,
        activity,
        organization_refresh_intervals: raw.organization_refresh_intervals,
    })
}

/// `openrouter:`: the URL, the management key's source, timeout, concurrency, workspaces.
fn validate_openrouter(
    or: RawOpenRouter,
    refresh_interval: Duration,
    problems: &mut Problems,
) -> OpenRouterConfig {
    match reqwest::Url::parse(&or.base_url) {
        Ok(url) if url.scheme() == "http" || url.scheme() == "https" => {}
        Ok(url) => problems.push(
            "openrouter.base_url",
            format!("scheme must be http or https, got {:?}", url.scheme()),
        ),
        Err(e) => problems.push(
            "openrouter.base_url",
            format!("not a URL ({e}): {:?}", or.base_url),
        ),
    }
    let management_key = management_key(
        or.use_management_key,
        or.management_key_env,
        or.management_key_file,
        problems,
    );
    let request_timeout = request_timeout(or.request_timeout, refresh_interval, problems);
    if !(1..=MAX_CONCURRENT_REQUESTS_LIMIT).contains(&or.max_concurrent_requests) {
        problems.push(
            "openrouter.max_concurrent_requests",
            format!(
                "must be between 1 and {MAX_CONCURRENT_REQUESTS_LIMIT}, got {}",
                or.max_concurrent_requests
            ),
        );
    }
    OpenRouterConfig {
        base_url: or.base_url.trim_end_matches('/').to_string(),
        management_key,
        request_timeout,
        max_concurrent_requests: or.max_concurrent_requests,
        workspaces: validate_workspaces(or.workspaces, problems),
    }
}

/// Where the management key comes from: `None` in direct-key mode (or when both sources are set).
fn management_key(
    use_management_key: bool,
    env: Option<String>,
    file: Option<PathBuf>,
    problems: &mut Problems,
) -> Option<SecretSource> {
    match (env, file) {
        (env, file) if !use_management_key => {
            if env.is_some() || file.is_some() {
                problems.push(
                    "openrouter.use_management_key",
                    "is false, so management_key_env/management_key_file must not be set",
                );
            }
            None
        }
        (Some(_), Some(_)) => {
            problems.push(
                "openrouter",
                "set only one of management_key_env and management_key_file",
            );
            None
        }
        (Some(var), None) => {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                problems.push(
                    "openrouter.management_key_env",
                    format!("not a valid environment variable name: {var:?}"),
                );
            } else if looks_like_key(&var) {
                // Someone pasted the key itself. Say so without echoing it.
                problems.push(
                    "openrouter.management_key_env",
                    "looks like a key, not a variable name: put the key in the environment \
                     and name the variable here",
                );
            }
            Some(SecretSource::Env(var))
        }
        (None, Some(path)) => Some(SecretSource::File(path)),
        (None, None) => Some(SecretSource::Env(DEFAULT_KEY_ENV.to_string())),
    }
}

/// Unset: 15 s, or the interval when that is shorter (a 10 s interval alone
/// is valid). Only a timeout the file sets can be too long.
fn request_timeout(
    configured: Option<Duration>,
    refresh_interval: Duration,
    problems: &mut Problems,
) -> Duration {
    match configured {
        None => DEFAULT_REQUEST_TIMEOUT.min(refresh_interval),
        Some(t) if t.is_zero() => {
            problems.push("openrouter.request_timeout", "must be above 0");
            t
        }
        Some(t) if t >= refresh_interval => {
            problems.push(
                "openrouter.request_timeout",
                format!(
                    "must be shorter than refresh_interval ({} >= {})",
                    humantime::format_duration(t),
                    humantime::format_duration(refresh_interval)
                ),
            );
            t
        }
        Some(t) => t,
    }
}

/// `openrouter.workspaces`: `all`, or a non-empty list of distinct UUIDs and slugs.
fn validate_workspaces(raw: RawWorkspaces, problems: &mut Problems) -> Workspaces {
    let ids = match raw {
        RawWorkspaces::Keyword(k) if k == "all" => return Workspaces::All,
        RawWorkspaces::Keyword(k) => {
            problems.push(
                "openrouter.workspaces",
                format!("must be \"all\" or a list of workspace ids, got {k:?}"),
            );
            return Workspaces::All;
        }
        RawWorkspaces::List(ids) => ids,
    };
    if ids.is_empty() {
        problems.push(
            "openrouter.workspaces",
            "the list is empty; use \"all\" or name at least one workspace id",
        );
    }
    let mut seen = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let loc = format!("openrouter.workspaces[{i}]");
        let entry = WorkspaceRef::parse(id);
        if let Some(message) = entry.slug_problem() {
            problems.push(loc, message);
        } else if let Some(first) = seen.insert(entry, i) {
            problems.push(
                loc,
                format!("duplicate of openrouter.workspaces[{first}] ({id:?})"),
            );
        }
    }
    Workspaces::Only(ids.iter().map(|id| id.trim().to_string()).collect())
}

/// `activity:`: on by default whenever the management API is used; its
/// limits are checked only when it is on.
fn validate_activity(
    raw: RawActivity,
    use_management_key: bool,
    problems: &mut Problems,
) -> ActivityOptions {
    let activity = ActivityOptions {
        enabled: raw.enabled.unwrap_or(use_management_key),
        refresh_interval: raw.refresh_interval,
        concurrency: raw.concurrency,
        calls_per_second: raw.calls_per_second,
        top_models: raw.top_models,
    };
    if !activity.enabled {
        return activity;
    }
    if !use_management_key {
        problems.push(
            "activity.enabled",
            "the activity API needs a management key (openrouter.use_management_key is false)",
        );
    }
    if activity.refresh_interval < Duration::from_secs(60) {
        problems.push(
            "activity.refresh_interval",
            format!(
                "must be at least 1m (one call per key), got {}",
                humantime::format_duration(activity.refresh_interval)
            ),
        );
    }
    if !(1..=64).contains(&activity.concurrency) {
        problems.push(
            "activity.concurrency",
            format!("must be between 1 and 64, got {}", activity.concurrency),
        );
    }
    if !(1..=1000).contains(&activity.calls_per_second) {
        problems.push(
            "activity.calls_per_second",
            format!(
                "must be between 1 and 1000, got {}",
                activity.calls_per_second
            ),
        );
    }
    if activity.top_models == 0 {
        problems.push("activity.top_models", "must be at least 1");
    }
    activity
}

/// `companies:`, in file order (the order decides glob conflicts).
fn validate_companies(
    raw: UniqueMap<RawCompany>,
    unassigned: &str,
    text: &str,
    problems: &mut Problems,
) -> Vec<Company> {
    // A company named twice: serde would keep only the last block.
    for dup in &raw.duplicates {
        problems.push(
            format!("companies.{}", dup.key),
            dup.describe("company", text, &["companies"]),
        );
    }
    let mut owners = Owners::new();
    raw.entries
        .into_iter()
        .map(|(name, company)| validate_company(name, company, unassigned, &mut owners, problems))
        .collect()
}

/// One company: its name, its selectors (`keys`) and its budgets.
fn validate_company(
    name: String,
    company: RawCompany,
    unassigned: &str,
    owners: &mut Owners,
    problems: &mut Problems,
) -> Company {
    let base = format!("companies.{name}");
    if name.trim().is_empty() {
        problems.push(&base, "company name is empty");
    }
    if name == unassigned {
        problems.push(
            &base,
            format!("{name:?} is the unassigned_company label; pick another name"),
        );
    }
    if company.keys.is_empty() {
        problems.push(
            format!("{base}.keys"),
            "a company needs at least one key selector",
        );
    }
    let mut selectors: Vec<Selector> = Vec::with_capacity(company.keys.len());
    for (i, value) in company.keys.iter().enumerate() {
        let loc = format!("{base}.keys[{i}]");
        if let Some(selector) = validate_selector(&loc, value, &selectors, &name, owners, problems)
        {
            selectors.push(selector);
        }
    }
    validate_budget(&base, &company.budget_usd, problems);
    if let Some(billing) = &company.billing {
        validate_billing(&base, billing, problems);
    }
    Company {
        name,
        selectors,
        budget: company.budget_usd,
        billing: company.billing,
    }
}

/// One `keys` entry: well formed, not repeated in its company, and (unless a
/// glob) not claimed by another company. `None` when it cannot be used at all.
fn validate_selector(
    loc: &str,
    value: &serde_yaml::Value,
    earlier: &[Selector],
    company: &str,
    owners: &mut Owners,
    problems: &mut Problems,
) -> Option<Selector> {
    let selector = match parse_selector(value) {
        Ok(s) => s,
        Err(message) => {
            problems.push(loc, message);
            return None;
        }
    };
    if earlier.contains(&selector) {
        problems.push(
            loc,
            format!("duplicate selector {selector} in this company"),
        );
        return None;
    }
    if !matches!(selector, Selector::NameGlob(_)) {
        // A direct key's name is its identity, unique across companies like exact names.
        let identity = match &selector {
            Selector::Direct { name, .. } => Selector::Name(name.clone()),
            other => other.clone(),
        };
        if let Some(other) = owners.get(&identity) {
            problems.push(
                loc,
                format!("{selector} is already claimed by company {other:?}"),
            );
        } else {
            owners.insert(identity, company.to_string());
        }
    }
    Some(selector)
}

/// `billing.markup_percent`: a finite percentage from 0 to [`MAX_MARKUP_PERCENT`].
fn validate_billing(base: &str, billing: &Billing, problems: &mut Problems) {
    let percent = billing.markup_percent;
    if !percent.is_finite() || !(0.0..=MAX_MARKUP_PERCENT).contains(&percent) {
        problems.push(
            format!("{base}.billing.markup_percent"),
            format!("must be a finite percentage from 0 to {MAX_MARKUP_PERCENT}, got {percent}"),
        );
    }
}

/// `budget_usd`: each window, when set, a finite amount of at least 0.
fn validate_budget(base: &str, budget: &Budget, problems: &mut Problems) {
    for (window, value) in [
        ("daily", budget.daily),
        ("weekly", budget.weekly),
        ("monthly", budget.monthly),
    ] {
        if let Some(v) = value.filter(|v| !v.is_finite() || *v < 0.0) {
            problems.push(
                format!("{base}.budget_usd.{window}"),
                format!("must be a finite amount >= 0, got {v}"),
            );
        }
    }
}
