//! The hub's configuration: TOML, every key optional with the defaults of the embedded
//! `hub.toml` ([`DEFAULT_CONFIG`]), unknown keys refused.
//!
//! [`HubConfig::from_toml`] parses and then checks the values; a [`ConfigError`] names the key.
//! Secrets (database and broker passwords) are never literal: they are read from a file or an
//! environment variable by [`SecretRef::resolve`], and [`Secret`]'s `Debug` prints `***`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default configuration, as shipped and printed by `hub print-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../hub.toml");

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// Where the text came from.
        file: String,
        /// The parser's message (it names the key and line).
        message: String,
    },
    /// A value out of its allowed range.
    #[error("{key}: {problem}")]
    Invalid {
        /// The dotted key (`load.batch_max_records`).
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A file the configuration names could not be read.
    #[error("{key}: reading {path}: {error}")]
    Io {
        /// The dotted key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

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
            (Some(_), Some(_)) => Err(invalid(key, "set password_file or password_env, not both")),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
                    key,
                    path: path.clone(),
                    error,
                })?;
                Ok(Some(Secret(text.trim_end().to_owned())))
            }
            (None, Some(var)) => std::env::var(var)
                .map(|v| Some(Secret(v)))
                .map_err(|_| invalid(key, format!("environment variable {var} is not set"))),
            (None, None) => Ok(None),
        }
    }
}

/// Whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Templates folder.
    pub templates_dir: PathBuf,
    /// Capacity of each inter-stage channel.
    pub queue_capacity: usize,
    /// The subscribe stage.
    pub subscribe: SubscribeConfig,
    /// The validate stage.
    pub validate: ValidateConfig,
    /// The load stage (PostgreSQL).
    pub load: LoadConfig,
    /// HTTP status and query API.
    pub http: HttpConfig,
}

/// Embedded broker or external broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// rumqttd inside the hub process.
    Embedded,
    /// An external broker with a shared subscription.
    External,
}

/// `[subscribe]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeConfig {
    /// Which broker.
    pub mode: BrokerMode,
    /// Largest MQTT packet accepted.
    pub max_packet_bytes: usize,
    /// `[subscribe.embedded]`
    pub embedded: EmbeddedConfig,
    /// `[subscribe.external]`
    pub external: ExternalConfig,
}

/// `[subscribe.embedded]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Device-facing listener.
    pub listen: SocketAddr,
    /// CONNECT deadline.
    pub connect_timeout_ms: u64,
    /// Most device connections.
    pub max_connections: usize,
    /// How often an open device session's login is checked again, in seconds.
    pub recheck_login_secs: u64,
    /// Bytes per in-memory segment of each topic in the embedded broker.
    pub retention_segment_bytes: usize,
    /// Segments kept per topic (the oldest is dropped when a new one starts).
    pub retention_segments: usize,
    /// Bytes the embedded broker keeps per live-results subscription filter.
    pub results_retention_bytes: usize,
    /// Bytes it keeps per other topic filter: each device's receipts.
    pub receipts_retention_bytes: usize,
    /// TLS certificate chain (PEM) of the device listener; with `tls_key_file` the listener
    /// speaks TLS only (devices use `mqtts://`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1) of the device listener.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// `[subscribe.external]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Shared subscription group.
    pub share_group: String,
    /// Client id prefix (a random suffix is added).
    pub client_id_prefix: String,
    /// Broker username.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the broker password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the broker password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// MQTT keep-alive.
    pub keep_alive_secs: u64,
}

impl ExternalConfig {
    /// Where the broker password lives.
    pub fn password(&self) -> SecretRef {
        SecretRef {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }
}

/// `[validate]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// Largest accepted payload.
    pub max_payload_bytes: usize,
    /// Bytes of a rejected payload kept.
    pub reject_payload_cap_bytes: usize,
    /// Allowed device clock lead.
    pub max_clock_skew_secs: u64,
}

/// `[load]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    /// Connection string.
    pub url: String,
    /// File holding the database password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the database password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Schema (search_path).
    pub schema: String,
    /// Records per transaction.
    pub batch_max_records: usize,
    /// Wait to fill a batch.
    pub batch_linger_ms: u64,
    /// First retry delay.
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
}

impl fmt::Debug for LoadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = if self.url.contains("password") || self.url.contains('@') {
            "<redacted: contains credentials>"
        } else {
            self.url.as_str()
        };
        f.debug_struct("LoadConfig")
            .field("url", &url)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("schema", &self.schema)
            .field("batch_max_records", &self.batch_max_records)
            .field("batch_linger_ms", &self.batch_linger_ms)
            .field("retry_initial_ms", &self.retry_initial_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .finish()
    }
}

impl LoadConfig {
    /// Where the database password lives.
    pub fn password(&self) -> SecretRef {
        SecretRef {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; empty disables HTTP.
    pub listen: String,
    /// Online window.
    pub online_window_secs: u64,
}

impl HttpConfig {
    /// The listen address, `None` when disabled.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        (!self.listen.is_empty())
            .then(|| self.listen.parse().ok())
            .flatten()
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self::from_toml_str("hub.toml", "").expect("the embedded default config is valid")
    }
}

impl HubConfig {
    /// Parses a configuration file's text over the defaults and checks it.
    pub fn from_toml_str(file: &str, text: &str) -> Result<Self, ConfigError> {
        let parse = |f: &str, t: &str| {
            toml::from_str::<toml::Table>(t).map_err(|e| ConfigError::Parse {
                file: f.to_owned(),
                message: e.to_string(),
            })
        };
        let mut merged = parse("embedded default config", DEFAULT_CONFIG)?;
        merge(&mut merged, parse(file, text)?);
        let config: HubConfig =
            merged
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    file: file.to_owned(),
                    message: e.to_string(),
                })?;
        config.check()?;
        Ok(config)
    }

    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            key: "(config file)",
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml_str(&path.display().to_string(), &text)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be at least 1"));
        }
        let v = &self.validate;
        if v.max_payload_bytes == 0 || v.max_payload_bytes > record::MAX_PAYLOAD_BYTES {
            return Err(invalid(
                "validate.max_payload_bytes",
                format!("must be 1..={}", record::MAX_PAYLOAD_BYTES),
            ));
        }
        if self.subscribe.max_packet_bytes < v.max_payload_bytes + 1024 {
            return Err(invalid(
                "subscribe.max_packet_bytes",
                "must exceed validate.max_payload_bytes by at least 1024 (topic and header)",
            ));
        }
        let l = &self.load;
        if l.batch_max_records == 0 || l.batch_max_records > 20_000 {
            return Err(invalid("load.batch_max_records", "must be 1..=20000"));
        }
        if l.retry_initial_ms == 0 || l.retry_initial_ms > l.retry_max_ms {
            return Err(invalid(
                "load.retry_initial_ms",
                "must be 1..=load.retry_max_ms",
            ));
        }
        if !valid_schema_name(&l.schema) {
            return Err(invalid(
                "load.schema",
                "use 1-63 characters of a-z, 0-9 and '_', starting with a letter or '_'",
            ));
        }
        if l.url.parse::<tokio_postgres::Config>().is_err() {
            return Err(invalid("load.url", "not a PostgreSQL connection string"));
        }
        let em = &self.subscribe.embedded;
        if em.recheck_login_secs == 0 {
            return Err(invalid(
                "subscribe.embedded.recheck_login_secs",
                "must be at least 1",
            ));
        }
        if em.retention_segments < 2 || em.retention_segment_bytes < self.subscribe.max_packet_bytes
        {
            return Err(invalid(
                "subscribe.embedded.retention_segment_bytes",
                "need at least 2 segments of at least subscribe.max_packet_bytes each",
            ));
        }
        if em.results_retention_bytes < 2 * self.subscribe.max_packet_bytes {
            return Err(invalid(
                "subscribe.embedded.results_retention_bytes",
                "must hold at least two packets of subscribe.max_packet_bytes",
            ));
        }
        if em.receipts_retention_bytes < 16 * 1024 {
            return Err(invalid(
                "subscribe.embedded.receipts_retention_bytes",
                "must be at least 16384 (a burst of receipts must fit)",
            ));
        }
        if em.tls_cert_file.is_some() != em.tls_key_file.is_some() {
            return Err(invalid(
                "subscribe.embedded.tls_cert_file",
                "set tls_cert_file and tls_key_file together (or neither, for plain MQTT)",
            ));
        }
        let e = &self.subscribe.external;
        if self.subscribe.mode == BrokerMode::External {
            if e.host.is_empty() {
                return Err(invalid("subscribe.external.host", "must not be empty"));
            }
            let group_ok = !e.share_group.is_empty() && !e.share_group.contains(['/', '+', '#']);
            if !group_ok {
                return Err(invalid(
                    "subscribe.external.share_group",
                    "must be non-empty without '/', '+' or '#'",
                ));
            }
            if e.keep_alive_secs < 5 {
                return Err(invalid(
                    "subscribe.external.keep_alive_secs",
                    "must be at least 5",
                ));
            }
        }
        if !self.http.listen.is_empty() && self.http.listen_addr().is_none() {
            return Err(invalid("http.listen", "not an address like 127.0.0.1:8080"));
        }
        Ok(())
    }
}

/// Whether `s` is safe to splice into SQL as a schema name.
pub fn valid_schema_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && s.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let c = HubConfig::from_toml_str("t", DEFAULT_CONFIG).unwrap();
        assert_eq!(c.subscribe.mode, BrokerMode::Embedded);
        assert_eq!(c.load.schema, "examlink");
        assert_eq!(HubConfig::default().load.batch_max_records, 2000);
    }

    #[test]
    fn errors_name_the_key() {
        let err = HubConfig::from_toml_str("t", "[load]\nschema = \"Bad-Name\"").unwrap_err();
        assert!(err.to_string().starts_with("load.schema:"), "{err}");
        let err = HubConfig::from_toml_str("t", "[load]\nbogus = 1").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err =
            HubConfig::from_toml_str("t", "[validate]\nmax_payload_bytes = 9999999").unwrap_err();
        assert!(
            err.to_string().starts_with("validate.max_payload_bytes"),
            "{err}"
        );
        for (key, value) in [
            ("receipts_retention_bytes", "1000"),
            ("results_retention_bytes", "1048576"),
        ] {
            let toml = format!("[subscribe.embedded]\n{key} = {value}");
            let err = HubConfig::from_toml_str("t", &toml).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("subscribe.embedded.{key}")),
                "{err}"
            );
        }
    }

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
        let mut c = HubConfig::default();
        c.load.url = "postgres://u:hunter2@h/db".into();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
