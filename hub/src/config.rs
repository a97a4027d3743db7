//! The hub's configuration: TOML, every key optional with the defaults of the embedded
//! `hub.toml` ([`DEFAULT_CONFIG`]), unknown keys refused.
//!
//! [`HubConfig::from_toml`] parses and then checks the values; a [`ConfigError`] names the key.
//! Secrets (database and broker passwords) are never literal: they live in a file or an
//! environment variable ([`crate::secret`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::secret::{Secret, SecretRef};

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
    /// The review station.
    pub review: crate::review::ReviewConfig,
    /// TLS of the device listener and HTTP.
    pub tls: crate::tls::TlsConfig,
    /// Limits on unauthenticated clients.
    pub guard: crate::guard::GuardConfig,
    /// FHIR: the chart-number system and the optional push.
    pub fhir: crate::fhir::FhirConfig,
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
    /// Largest CONNECT packet accepted (refused from its fixed header, before buffering).
    pub max_connect_bytes: usize,
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
    /// Connect with TLS (`mqtts`), verifying the broker against `tls_ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// PEM CA certificate(s) the broker's certificate must chain to.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
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
    /// TLS to PostgreSQL: `disable` or `require` (verified against `tls_ca_file`).
    pub tls: PgTls,
    /// PEM CA certificate(s) the server's certificate must chain to.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// `statement_timeout` of the HTTP API's connection, in milliseconds.
    pub api_statement_timeout_ms: u64,
}

/// `load.tls`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgTls {
    /// Plain TCP (a database on the same host or a private network).
    Disable,
    /// TLS, the server verified against `load.tls_ca_file`.
    Require,
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
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("api_statement_timeout_ms", &self.api_statement_timeout_ms)
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
    /// How long a login session (cookie or bearer token) lasts.
    pub session_ttl_secs: u64,
    /// A request whose headers take longer than this is dropped.
    pub header_timeout_ms: u64,
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
        if !(256..=65536).contains(&em.max_connect_bytes) {
            return Err(invalid(
                "subscribe.embedded.max_connect_bytes",
                "must be 256..=65536",
            ));
        }
        let t = &self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err(invalid(
                "tls.cert_file",
                "set tls.cert_file and tls.key_file together (or neither: a generated certificate)",
            ));
        }
        let g = &self.guard;
        if g.max_concurrent_hashes == 0 || g.max_connections_per_address == 0 {
            return Err(invalid(
                "guard.max_concurrent_hashes",
                "guard.max_concurrent_hashes and max_connections_per_address must be at least 1",
            ));
        }
        if g.failures_before_backoff == 0 || g.backoff_max_secs == 0 {
            return Err(invalid(
                "guard.failures_before_backoff",
                "guard.failures_before_backoff and backoff_max_secs must be at least 1",
            ));
        }
        if self.http.header_timeout_ms == 0 {
            return Err(invalid("http.header_timeout_ms", "must be at least 1"));
        }
        if self.http.session_ttl_secs < 60 {
            return Err(invalid("http.session_ttl_secs", "must be at least 60"));
        }
        if l.tls == PgTls::Require && l.tls_ca_file.is_none() {
            return Err(invalid(
                "load.tls_ca_file",
                "load.tls = \"require\" needs the CA file that signed the server's certificate",
            ));
        }
        if l.api_statement_timeout_ms == 0 {
            return Err(invalid(
                "load.api_statement_timeout_ms",
                "must be at least 1",
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
            if e.tls && e.tls_ca_file.is_none() {
                return Err(invalid(
                    "subscribe.external.tls_ca_file",
                    "subscribe.external.tls = true needs the broker's CA file",
                ));
            }
            if e.keep_alive_secs < 5 {
                return Err(invalid(
                    "subscribe.external.keep_alive_secs",
                    "must be at least 5",
                ));
            }
        }
        self.fhir.check()?;
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

    // See: #12
    #[test]
    fn tls_is_the_default_and_its_halves_go_together() {
        let c = HubConfig::default();
        assert!(!c.tls.allow_plaintext && c.tls.cert_file.is_none());
        assert_eq!(c.subscribe.embedded.listen.port(), 8883);
        let err = HubConfig::from_toml_str("t", "[tls]\ncert_file = \"c.pem\"").unwrap_err();
        assert!(err.to_string().starts_with("tls.cert_file"), "{err}");
        let err = HubConfig::from_toml_str("t", "[load]\ntls = \"require\"").unwrap_err();
        assert!(err.to_string().starts_with("load.tls_ca_file"), "{err}");
        let err = HubConfig::from_toml_str("t", "[guard]\nmax_concurrent_hashes = 0").unwrap_err();
        assert!(err.to_string().starts_with("guard."), "{err}");
        let err =
            HubConfig::from_toml_str("t", "[subscribe.embedded]\nmax_connect_bytes = 1048576")
                .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("subscribe.embedded.max_connect_bytes"),
            "{err}"
        );
    }

    #[test]
    fn database_urls_are_redacted() {
        let mut c = HubConfig::default();
        c.load.url = "postgres://u:hunter2@h/db".into();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
