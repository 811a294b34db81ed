//! The YAML configuration: strict parsing, whole-file validation and secret loading.
//!
//! Parsing happens in two steps, like blackbox_exporter: serde rejects unknown
//! fields and malformed YAML (with line and column) while reading the shapes
//! in [`raw`], then [`validate`] checks every rule that serde cannot express
//! and reports *all* problems at once, each with its location as a path such
//! as `companies.acme.keys[2]`. This module holds the validated types the rest
//! of the program uses.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod raw;
mod secret;
mod selector;
mod validate;
mod warnings;
mod workspace;
pub(crate) mod yaml;

pub use raw::{
    DEFAULT_ACTIVITY_CALLS_PER_SECOND, DEFAULT_BASE_URL, DEFAULT_KEY_ENV,
    DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_ORGANIZATION_REFRESH_INTERVALS,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_UNASSIGNED, MAX_CONCURRENT_REQUESTS_LIMIT,
};
pub(crate) use secret::redact_keys;
pub use secret::{SecretError, SecretSource};
pub use selector::Selector;
pub use workspace::{is_uuid, WorkspaceRef, Workspaces};

use raw::{
    RawConfig, DEFAULT_ACTIVITY_CONCURRENCY, DEFAULT_ACTIVITY_REFRESH_INTERVAL, DEFAULT_TOP_MODELS,
};
use validate::validate;

/// Everything that can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", redact_keys(&path.display().to_string()))]
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

#[derive(Debug, Clone, PartialEq)]
pub struct Company {
    pub name: String,
    pub selectors: Vec<Selector>,
    pub budget: Budget,
    /// How the company is invoiced (statements); `None`: at cost.
    pub billing: Option<Billing>,
}

/// `companies.<name>.billing`: what the statements add to the company's cost.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Billing {
    /// Billed = cost × (1 + N/100), rounded to the cent per line; 0 to 1000.
    pub markup_percent: f64,
}

/// The largest `billing.markup_percent` accepted (an elevenfold bill).
pub const MAX_MARKUP_PERCENT: f64 = 1000.0;

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
#[serde(default, deny_unknown_fields)]
pub struct MetricsOptions {
    /// Publish per-key families (`openrouter_key_*`). Off: company-level only.
    pub per_key: bool,
    /// Publish `openrouter_key_byok_usage_usd` (company BYOK sums stay).
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

impl Default for ActivityOptions {
    /// The defaults with a management key configured.
    fn default() -> Self {
        ActivityOptions {
            enabled: true,
            refresh_interval: DEFAULT_ACTIVITY_REFRESH_INTERVAL,
            concurrency: DEFAULT_ACTIVITY_CONCURRENCY,
            calls_per_second: DEFAULT_ACTIVITY_CALLS_PER_SECOND,
            top_models: DEFAULT_TOP_MODELS,
        }
    }
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

    /// The markup of `company` in percent (`billing.markup_percent`), if it has one.
    pub fn markup_percent(&self, company: &str) -> Option<f64> {
        let company = self.companies.iter().find(|c| c.name == company)?;
        company.billing.map(|b| b.markup_percent)
    }

    /// How old the last successful refresh may get before the data counts as
    /// stale (and `/readyz` fails): `stale_after_intervals` refresh intervals.
    pub fn stale_after(&self) -> Duration {
        self.refresh_interval
            .saturating_mul(self.stale_after_intervals)
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
    fn stale_after_is_that_many_refresh_intervals() {
        let cfg = parse("refresh_interval: 2m\nstale_after_intervals: 4\n").unwrap();
        assert_eq!(cfg.stale_after(), Duration::from_secs(480));
        let cfg = parse("{}\n").unwrap();
        assert_eq!(
            cfg.stale_after(),
            Duration::from_secs(900),
            "5m × 3 by default"
        );
        // Saturates instead of overflowing.
        let mut cfg = cfg;
        cfg.refresh_interval = Duration::MAX;
        assert_eq!(cfg.stale_after(), Duration::MAX);
    }

    #[test]
    fn a_markup_is_a_percentage_from_0_to_1000() {
        let yaml = |billing: &str| {
            format!("companies:\n  acme:\n    keys: [a]\n    billing: {billing}\n  beta:\n    keys: [b]\n")
        };
        let cfg = parse(&yaml("{markup_percent: 12.5}")).unwrap();
        assert_eq!(cfg.markup_percent("acme"), Some(12.5));
        assert_eq!(cfg.markup_percent("beta"), None, "no billing: at cost");
        assert_eq!(cfg.markup_percent("nobody"), None);
        assert_eq!(
            parse(&yaml("{markup_percent: 0}"))
                .unwrap()
                .markup_percent("acme"),
            Some(0.0)
        );
        assert!(parse(&yaml("{markup_percent: 1000}")).is_ok());
        for bad in ["-1", "1000.5", ".nan", ".inf"] {
            let found = problems(&yaml(&format!("{{markup_percent: {bad}}}")));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].location, "companies.acme.billing.markup_percent");
            assert!(found[0].message.contains("from 0 to 1000"), "{found:?}");
        }
        // The one field is required, and nothing else is allowed.
        assert!(parse(&yaml("{}")).is_err());
        assert!(parse(&yaml("{markup_percent: 5, rounding: up}")).is_err());
    }

    #[test]
    fn a_key_in_the_wrong_field_never_reaches_the_error() {
        let key = "sk-or-v1-0f1e2d3c4b5a6978";
        let leaks = |text: &str| text.to_ascii_lowercase().contains("0f1e2d");
        // Where a variable name belongs: refused as a key, in any spelling.
        for yaml in [
            format!("openrouter:\n  management_key_env: \"Bearer {key}\"\n"),
            format!("openrouter:\n  management_key_env: \" {key}\"\n"),
            format!(
                "openrouter:\n  management_key_env: {}\n",
                key.to_uppercase()
            ),
            format!("companies:\n  a:\n    keys: [{{name: a, secret_env: \"Bearer {key}\"}}]\n"),
        ] {
            let err = parse(&yaml).unwrap_err().to_string();
            assert!(err.contains("looks like a key"), "{err}");
            assert!(!leaks(&err), "{err}");
        }
        // Where a file path belongs: a file may be called anything, so only
        // loading fails, and its error does not echo the path.
        for yaml in [
            format!("openrouter:\n  management_key_file: {key}\n"),
            format!(
                "openrouter:\n  use_management_key: false\n\
                 companies:\n  a:\n    keys: [{{name: a, secret_file: /run/{key}}}]\n"
            ),
        ] {
            let cfg = parse(&yaml).unwrap();
            let source = match cfg.direct_keys().next() {
                Some((_, _, direct)) => direct.clone(),
                None => cfg.openrouter.management_key.clone().unwrap(),
            };
            let err = source.load().unwrap_err().to_string();
            assert!(err.contains("[REDACTED]") && !leaks(&err), "{err}");
            assert!(!leaks(&format!("{cfg:?}")), "Debug of the config");
        }
        // Echoed values in syntax errors and problems, upper case or JSON-escaped.
        for yaml in [
            format!("refresh_interval: {}\n", key.to_uppercase()),
            format!("openrouter:\n  workspaces: [\"{key} x\"]\n"),
            "openrouter:\n  base_url: \"sk\\\\u002dor\\\\u002dv1\\\\u002d0f1e2d\"\n".to_string(),
        ] {
            let err = parse(&yaml).unwrap_err().to_string();
            assert!(err.contains("[REDACTED]") && !leaks(&err), "{yaml}: {err}");
        }
        let err = Config::load(Path::new(&format!("/nonexistent/{key}")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[REDACTED]") && !leaks(&err), "{err}");
    }
}
