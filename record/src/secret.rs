//! secret: the one rule for reading a secret that the configuration names by a file or an
//! environment variable (the agent's broker password, the hub's database and broker
//! passwords), so that agent and hub read a secret the same way.
//!
//! - Set at most one of the two: both is an error (nobody has to guess which wins).
//! - A file's secret is its first line, trailing whitespace removed (a final newline, the `\r`
//!   of a file written on Windows).
//! - A variable's value is taken as it is.
//! - Neither set: no secret.

use std::path::{Path, PathBuf};

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Both a file and a variable were named.
    #[error("set the file or the environment variable, not both")]
    Both,
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The variable is not set (or not UTF-8).
    #[error("environment variable {var} is not set (or not UTF-8)")]
    NotSet {
        /// The variable.
        var: String,
    },
}

/// Reads the secret from `file` or `env` by the rule above.
pub fn read(file: Option<&Path>, env: Option<&str>) -> Result<Option<String>, SecretError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(SecretError::Both),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                path: path.to_owned(),
                source,
            })?;
            Ok(Some(
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_end()
                    .to_owned(),
            ))
        }
        (None, Some(var)) => std::env::var(var)
            .map(Some)
            .map_err(|_| SecretError::NotSet {
                var: var.to_owned(),
            }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gives_its_first_line_without_trailing_whitespace() {
        let dir = std::env::temp_dir().join(format!("examlink-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        std::fs::write(&p, "hunter2 \r\nsecond line\n").unwrap();
        assert_eq!(read(Some(&p), None).unwrap().as_deref(), Some("hunter2"));
        std::fs::write(&p, "").unwrap();
        assert_eq!(read(Some(&p), None).unwrap().as_deref(), Some(""));
        let missing = read(Some(&dir.join("nope")), None).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn both_is_an_error_and_neither_is_no_secret() {
        assert!(matches!(
            read(Some(Path::new("/x")), Some("X")),
            Err(SecretError::Both)
        ));
        assert_eq!(read(None, None).unwrap(), None);
        let unset = read(None, Some("EXAMLINK_TEST_SURELY_UNSET_VARIABLE")).unwrap_err();
        assert!(unset
            .to_string()
            .contains("EXAMLINK_TEST_SURELY_UNSET_VARIABLE"));
    }
}
