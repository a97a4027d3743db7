//! Secrets: values that must never be logged or kept in a config file ([`Secret`], whose
//! `Debug` prints `***`), and where the configuration says they live ([`SecretRef`]: a file
//! or an environment variable).

use std::fmt;
use std::path::PathBuf;

use crate::config::ConfigError;

/// A secret value. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret lives: a file (first line, trailing whitespace removed) or an environment
/// variable. Neither set means no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretRef {
    /// File holding the secret.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the secret.
    pub password_env: Option<String>,
}

impl SecretRef {
    /// Reads the secret; `key` names the config section in errors.
    pub fn resolve(&self, key: &'static str) -> Result<Option<Secret>, ConfigError> {
        match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                key,
                problem: "set password_file or password_env, not both".into(),
            }),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
                    key,
                    path: path.clone(),
                    error,
                })?;
                Ok(Some(Secret(text.trim_end().to_owned())))
            }
            (None, Some(var)) => {
                std::env::var(var)
                    .map(|v| Some(Secret(v)))
                    .map_err(|_| ConfigError::Invalid {
                        key,
                        problem: format!("environment variable {var} is not set"),
                    })
            }
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        let r = SecretRef {
            password_file: Some(p),
            password_env: None,
        };
        let s = r.resolve("load").unwrap().unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{s:?}"), "***");
    }
}
