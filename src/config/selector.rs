//! Key selectors: how a company claims keys (`name`, `hash`, `name_glob`,
//! `workspace`, `creator`, or a direct key with its own secret), parsed from
//! YAML one by one so each bad entry is reported with its own index.

use std::fmt;
use std::path::PathBuf;

use super::secret::{looks_like_key, SecretSource};
use super::workspace::WorkspaceRef;

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

/// Parses one `keys` entry and checks it is well formed on its own: a valid
/// glob, a workspace UUID or slug, a member's email or `@domain`. Whether it
/// clashes with other selectors is for the caller, which sees them all.
pub(super) fn parse_selector(value: &serde_yaml::Value) -> Result<Selector, String> {
    let selector = parse_shape(value)?;
    let problem = match &selector {
        Selector::NameGlob(pattern) => glob::Pattern::new(pattern)
            .err()
            .map(|e| format!("invalid name_glob {pattern:?}: {e}")),
        Selector::Workspace(workspace) => WorkspaceRef::parse(workspace).slug_problem(),
        Selector::Creator(creator) => creator_problem(creator),
        _ => None,
    };
    match problem {
        Some(message) => Err(message),
        None => Ok(selector),
    }
}

/// A selector is a bare string (exact name) or a one-entry map: `name`, `hash`,
/// `name_glob`, `workspace` or `creator`; with `secret_env`/`secret_file`, a direct key.
fn parse_shape(value: &serde_yaml::Value) -> Result<Selector, String> {
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
                if looks_like_key(var) {
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
