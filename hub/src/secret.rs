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

/// Where a secret lives: a file or an environment variable, read by the rule of
/// [`record::secret`] (one of the two; a file's first line). Neither set means no secret.
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
        record::secret::read(self.password_file.as_deref(), self.password_env.as_deref())
            .map(|s| s.map(Secret))
            .map_err(|e| match e {
                record::secret::SecretError::Read { path, source } => ConfigError::Io {
                    key,
                    path,
                    error: source,
                },
                e => ConfigError::Invalid {
                    key,
                    problem: match e {
                        record::secret::SecretError::Both => {
                            "set password_file or password_env, not both".into()
                        }
                        e => e.to_string(),
                    },
                },
            })
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
