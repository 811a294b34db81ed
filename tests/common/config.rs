//! The one builder of test configs: every test file states only what differs
//! from a 30 s refresh, a 2 s request timeout and no companies.

use openrouter_cost_exporter::config::Config;

/// A config YAML pointing at a simulator.
#[derive(Debug, Clone)]
pub struct TestConfig {
    base_url: String,
    refresh: String,
    timeout: String,
    top: String,
    openrouter: String,
    companies: String,
}

impl TestConfig {
    pub fn new(base_url: &str) -> TestConfig {
        TestConfig {
            base_url: base_url.to_string(),
            refresh: "30s".into(),
            timeout: "2s".into(),
            top: String::new(),
            openrouter: String::new(),
            companies: String::new(),
        }
    }

    /// `refresh_interval`.
    pub fn refresh(mut self, interval: &str) -> TestConfig {
        self.refresh = interval.into();
        self
    }

    /// `openrouter.request_timeout`.
    pub fn timeout(mut self, timeout: &str) -> TestConfig {
        self.timeout = timeout.into();
        self
    }

    /// More top-level YAML (whole lines, e.g. an `activity:` section).
    pub fn extra(mut self, yaml: &str) -> TestConfig {
        self.top.push_str(yaml);
        self
    }

    /// More lines under `openrouter:` (indented by two spaces).
    pub fn openrouter(mut self, yaml: &str) -> TestConfig {
        self.openrouter.push_str(yaml);
        self
    }

    /// The YAML under `companies:` (indented by two spaces).
    pub fn companies(mut self, yaml: &str) -> TestConfig {
        self.companies = yaml.into();
        self
    }

    pub fn yaml(&self) -> String {
        let companies = if self.companies.is_empty() {
            " {}\n"
        } else {
            "\n"
        };
        format!(
            "refresh_interval: {}\n{}openrouter:\n  base_url: {}\n  request_timeout: {}\n{}companies:{companies}{}",
            self.refresh, self.top, self.base_url, self.timeout, self.openrouter, self.companies
        )
    }

    pub fn build(&self) -> Config {
        Config::parse(&self.yaml(), "test config").expect("valid test config")
    }
}

/// The OpenRouter-derived part of a body: everything before the status families.
pub fn snapshot_part(text: &str) -> &str {
    let cut = text
        .find("# HELP openrouter_up ")
        .expect("status part present");
    &text[..cut]
}
