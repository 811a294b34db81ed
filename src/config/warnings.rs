//! Settings that are valid but risky. They are warned about at start and by
//! `--config.check`, never refused: each may be what the operator means.
//! Every check is a pure function of what it looks at; [`Config::warnings`]
//! gathers them, reading only the secret files' metadata (never their content).

use std::net::IpAddr;
use std::path::Path;

use super::secret::{looks_like_key, redact_keys, SecretSource};
use super::{Config, Selector};

impl Config {
    /// The risky settings of this config, one sentence each, starting with
    /// the field. Keys are redacted, as in errors.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        warnings.extend(plain_http_warning(&self.openrouter.base_url));
        if let Some(SecretSource::File(path)) = &self.openrouter.management_key {
            warnings.extend(secret_file_warning("openrouter.management_key_file", path));
        }
        for company in &self.companies {
            for selector in &company.selectors {
                let Selector::Direct { name, secret } = selector else {
                    continue;
                };
                let field = format!("companies.{}: direct key {name:?}", company.name);
                if looks_like_key(name) {
                    warnings.push(format!(
                        "{field}: the name looks like a key, and a direct key's name is \
                         published in the selector label; name the key, and put the key \
                         itself in secret_env or secret_file"
                    ));
                }
                if let SecretSource::File(path) = secret {
                    warnings.extend(secret_file_warning(&format!("{field}: secret_file"), path));
                }
            }
        }
        warnings.iter().map(|w| redact_keys(w)).collect()
    }
}

/// `base_url` over plain HTTP to anything but this machine: every request
/// carries a key in its `Authorization` header, readable on the way.
fn plain_http_warning(base_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(base_url).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    if is_loopback(host) {
        return None;
    }
    // The host only: a URL may carry a user and password.
    Some(format!(
        "openrouter.base_url: plain http:// to {host}, which is not this machine: every \
         request's key crosses the network unencrypted; use https://"
    ))
}

/// `localhost`, a `*.localhost` name, or a loopback address (`[::1]` bracketed, as in URLs).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

/// A secret file others can read. `metadata` follows symlinks, so a
/// Kubernetes or Docker secret link is judged by the file it points to.
#[cfg(unix)]
fn secret_file_warning(field: &str, path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // An unreadable file is an error of its own, reported when the key is loaded.
    let meta = std::fs::metadata(path).ok()?;
    let who = readable_by(meta.mode(), meta.gid(), &own_groups())?;
    Some(format!(
        "{field} {}: readable by {who} (mode {:04o}); make it readable by the exporter's \
         user only (chmod 0400), or by its group (0440)",
        path.display(),
        meta.mode() & 0o7777
    ))
}

#[cfg(not(unix))]
fn secret_file_warning(_field: &str, _path: &Path) -> Option<String> {
    None
}

/// Who besides the exporter may read a file of `mode` owned by group `gid`,
/// when the exporter's groups are `own_groups`. Group read for the
/// exporter's own group is what Kubernetes' `fsGroup` with mode 0440 gives,
/// and is fine; any other group, or everyone, is not.
fn readable_by(mode: u32, gid: u32, own_groups: &[u32]) -> Option<&'static str> {
    if mode & 0o004 != 0 {
        Some("every user")
    } else if mode & 0o040 != 0 && !own_groups.contains(&gid) {
        Some("its group, which is not the exporter's")
    } else {
        None
    }
}

/// The exporter's group ids (real, effective, saved, filesystem and
/// supplementary), from `/proc/self/status`; empty where there is none, so
/// that any group read is then reported.
fn own_groups() -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Vec::new();
    };
    status
        .lines()
        .filter_map(|l| l.strip_prefix("Gid:").or_else(|| l.strip_prefix("Groups:")))
        .flat_map(str::split_whitespace)
        .filter_map(|g| g.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_fine_only_to_this_machine() {
        for quiet in [
            "https://openrouter.ai/api/v1",
            "https://192.0.2.10/api/v1",
            "http://127.0.0.1:8080/api/v1",
            "http://127.1.2.3/api/v1",
            "http://[::1]:9/api/v1",
            "http://localhost/api/v1",
            "http://LOCALHOST./api/v1",
            "http://sim.localhost:81/",
        ] {
            assert_eq!(plain_http_warning(quiet), None, "{quiet}");
        }
        for loud in [
            "http://192.0.2.10/api/v1",
            "http://openrouter.ai/api/v1",
            "http://[2001:db8::1]/",
            "http://user:pa55word@proxy.example/api/v1",
            "http://localhost.example.com/",
        ] {
            let warning = plain_http_warning(loud).expect(loud);
            assert!(warning.starts_with("openrouter.base_url: plain http://"));
            assert!(!warning.contains("pa55word"), "{warning}");
        }
    }

    #[test]
    fn secret_files_may_be_read_by_the_exporter_and_its_group_only() {
        let mine = [1000, 65532];
        assert_eq!(readable_by(0o100400, 0, &mine), None);
        assert_eq!(readable_by(0o100600, 0, &mine), None);
        assert_eq!(readable_by(0o100440, 65532, &mine), None, "fsGroup");
        assert_eq!(
            readable_by(0o100440, 4, &mine),
            Some("its group, which is not the exporter's")
        );
        assert_eq!(
            readable_by(0o100640, 4, &[]),
            readable_by(0o100440, 4, &mine)
        );
        assert_eq!(readable_by(0o100644, 65532, &mine), Some("every user"));
        assert_eq!(readable_by(0o100404, 0, &mine), Some("every user"));
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_is_judged_through_its_symlink() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("key");
        std::fs::write(&target, "sk-or-v1-abc\n").unwrap();
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        let cfg = |path: &Path| {
            Config::parse(
                &format!("openrouter:\n  management_key_file: {}\n", path.display()),
                "test.yaml",
            )
            .unwrap()
        };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warnings = cfg(&link).warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("openrouter.management_key_file "),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains("every user (mode 0644)"),
            "{warnings:?}"
        );
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(cfg(&link).warnings(), Vec::<String>::new());
        // Missing: no warning here; loading the key reports it.
        assert_eq!(
            cfg(&dir.path().join("nope")).warnings(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_direct_key_named_like_a_key_is_warned_about_without_echo() {
        let cfg = Config::parse(
            "openrouter:\n  use_management_key: false\ncompanies:\n  acme:\n    keys:\n      - {name: sk-or-v1-0f1e2d, secret_env: ACME_KEY}\n      - {name: acme-direct, secret_env: ACME_KEY2}\n",
            "test.yaml",
        )
        .unwrap();
        let warnings = cfg.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "companies.acme: direct key \"[REDACTED]\": the name looks like a key"
            ),
            "{warnings:?}"
        );
    }

    #[test]
    fn the_default_config_has_no_warnings() {
        let cfg = Config::parse("companies:\n  acme:\n    keys: [a]\n", "test.yaml").unwrap();
        assert_eq!(cfg.warnings(), Vec::<String>::new());
    }
}
