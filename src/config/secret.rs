//! Where a secret lives (an environment variable or a file) and loading it.
//! Errors name the source, never the value.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

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

#[cfg(test)]
mod tests {
    use super::*;

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
