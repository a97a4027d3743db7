//! The MQTT connection settings: `[publish]` config, broker URL, credentials, TLS, last will.

use std::path::PathBuf;
use std::time::Duration;

use record::topic::DeviceTopic;
use record::DeviceId;
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::outbox::Backlog;
use crate::telemetry::Health;

/// `[publish]`: how the agent reaches the broker.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS with rustls).
    pub broker_url: String,
    /// Broker user name; empty: the device id.
    pub username: String,
    /// File holding the broker password (first line; [`record::secret`]). Set this or
    /// `password_env`, not both.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the broker password.
    pub password_env: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://`); absent: the
    /// platform's root certificates. The hub's certificate is verified against it, host name
    /// included: a certificate from another CA is refused.
    pub tls_ca_file: Option<PathBuf>,
    /// Accept a plain `mqtt://` broker URL (no TLS). Off by default; a WARN at every start.
    pub allow_plaintext: bool,
    /// MQTT keep-alive.
    pub keep_alive_secs: u64,
    /// Give up a connection attempt after this long.
    pub connect_timeout_secs: u64,
    /// First wait before reconnecting; doubles per failure, with ±50 % jitter.
    pub reconnect_min_ms: u64,
    /// Longest wait before reconnecting.
    pub reconnect_max_ms: u64,
    /// Period of the retained status message.
    pub status_every_secs: u64,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            broker_url: "mqtts://127.0.0.1:8883".into(),
            username: String::new(),
            password_file: None,
            password_env: None,
            tls_ca_file: None,
            allow_plaintext: false,
            keep_alive_secs: 30,
            connect_timeout_secs: 10,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            status_every_secs: 60,
        }
    }
}

impl std::fmt::Debug for PublishConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No secret is held here (only where to find it), but keep the shape explicit.
        f.debug_struct("PublishConfig")
            .field("broker_url", &self.broker_url)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish_non_exhaustive()
    }
}

/// A broker address parsed from `broker_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether to use TLS.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` (default 1883) or `mqtts://host[:port]` (default 8883).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} is not a URL: expected mqtt://host:port or mqtts://host:port")
        })?;
        let (tls, default_port) = match scheme {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}: use mqtt:// or mqtts://"
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '?', '@']) {
            return Err(format!(
                "{url:?}: expected only host[:port] after the scheme"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '[' in IPv6 host"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{url:?}: garbage after IPv6 host")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{url:?}: invalid port {p:?}"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(format!("{url:?}: empty host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// Settings resolved at start: secrets read, URL parsed. `Debug` redacts the password.
#[derive(Clone)]
pub struct MqttSettings {
    /// The device (client id and topic level).
    pub device: DeviceId,
    /// The broker.
    pub broker: BrokerUrl,
    /// User name and password, when a password was configured.
    pub credentials: Option<(String, String)>,
    /// CA certificate (PEM), for TLS.
    pub tls_ca: Option<Vec<u8>>,
    /// The `[publish]` section.
    pub config: PublishConfig,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("device", &self.device)
            .field("broker", &self.broker)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("password", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca.as_ref().map(|c| c.len()))
            .finish()
    }
}

impl PublishConfig {
    /// Validates the section and reads the secrets it points to.
    pub fn build(&self, device: &DeviceId) -> Result<MqttSettings, ConfigError> {
        let broker = BrokerUrl::parse(&self.broker_url)
            .map_err(|problem| ConfigError::invalid("publish.broker_url", problem))?;
        if !broker.tls {
            if !self.allow_plaintext {
                return Err(ConfigError::invalid(
                    "publish.broker_url",
                    format!(
                        "{:?} is plain MQTT (password and records in clear): use mqtts:// with \
                         publish.tls_ca_file = the hub's ca.pem, or set publish.allow_plaintext = true",
                        self.broker_url
                    ),
                ));
            }
            tracing::warn!(broker = %self.broker_url, "publish.allow_plaintext = true: the device password and every record cross the network in clear.");
        }
        let password =
            record::secret::read(self.password_file.as_deref(), self.password_env.as_deref())
                .map_err(|e| {
                    let key = match e {
                        record::secret::SecretError::NotSet { .. } => "publish.password_env",
                        record::secret::SecretError::Both => "publish.password_file",
                        record::secret::SecretError::Read { .. } => "publish.password_file",
                    };
                    ConfigError::invalid(key, e.to_string())
                })?;
        let username = if self.username.is_empty() {
            device.as_str().to_owned()
        } else {
            self.username.clone()
        };
        let tls_ca = match &self.tls_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ConfigError::invalid(
                    "publish.tls_ca_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?),
            None => None,
        };
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(ConfigError::invalid(
                "publish.reconnect_min_ms",
                "must be > 0 and ≤ publish.reconnect_max_ms",
            ));
        }
        if self.keep_alive_secs < 5 {
            return Err(ConfigError::invalid(
                "publish.keep_alive_secs",
                "must be ≥ 5",
            ));
        }
        let settings = MqttSettings {
            device: device.clone(),
            broker,
            credentials: password.map(|p| (username, p)),
            tls_ca,
            config: self.clone(),
        };
        if settings.broker.tls {
            settings.transport()?;
        }
        Ok(settings)
    }
}

impl MqttSettings {
    /// rumqttc options: client id = device id, clean session, credentials, TLS, packet sizes,
    /// and a retained last will saying the device is offline.
    pub fn options(
        &self,
        health: &Health,
        backlog: Backlog,
        inflight: u16,
    ) -> Result<MqttOptions, ConfigError> {
        let mut o = MqttOptions::new(self.device.as_str(), &self.broker.host, self.broker.port);
        o.set_keep_alive(Duration::from_secs(self.config.keep_alive_secs))
            .set_clean_session(true)
            .set_inflight(inflight.max(1))
            .set_max_packet_size(
                record::MAX_PAYLOAD_BYTES + 4096,
                record::MAX_PAYLOAD_BYTES + 4096,
            );
        if let Some((user, pass)) = &self.credentials {
            o.set_credentials(user.clone(), pass.clone());
        }
        if self.broker.tls {
            o.set_transport(self.transport()?);
        }
        let will = health.report(&self.device, false, backlog);
        o.set_last_will(LastWill::new(
            DeviceTopic::Status.topic(&self.device),
            record::encode(&will),
            QoS::AtLeastOnce,
            true,
        ));
        Ok(o)
    }

    fn transport(&self) -> Result<Transport, ConfigError> {
        match &self.tls_ca {
            Some(ca) => Ok(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: ca.clone(),
                alpn: None,
                client_auth: None,
            })),
            None => {
                // rumqttc panics when the platform's root store cannot be read; turn that into a
                // configuration error instead of a crash.
                std::panic::catch_unwind(Transport::tls_with_default_config).map_err(|_| {
                    ConfigError::invalid(
                        "publish.tls_ca_file",
                        "the platform's root certificates could not be loaded; set publish.tls_ca_file",
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        let u = BrokerUrl::parse("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1883, false));
        let u = BrokerUrl::parse("mqtts://hub.example").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("hub.example", 8883, true)
        );
        let u = BrokerUrl::parse("mqtt://[::1]:1884/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        for bad in [
            "127.0.0.1:1883",
            "http://x",
            "mqtt://",
            "mqtt://h:99999",
            "mqtt://u@h",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    fn plain() -> PublishConfig {
        PublishConfig {
            broker_url: "mqtt://127.0.0.1:1883".into(),
            allow_plaintext: true,
            ..PublishConfig::default()
        }
    }

    // See: #12
    #[test]
    fn plain_mqtt_only_when_allowed() {
        let device = DeviceId::new("dev-1").unwrap();
        let c = PublishConfig {
            allow_plaintext: false,
            ..plain()
        };
        let err = c.build(&device).unwrap_err().to_string();
        assert!(
            err.contains("publish.broker_url") && err.contains("allow_plaintext"),
            "{err}"
        );
        assert!(plain().build(&device).is_ok());
        // TLS with a CA file that is not there: a clear error naming the key.
        let c = PublishConfig {
            broker_url: "mqtts://127.0.0.1:8883".into(),
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..PublishConfig::default()
        };
        let err = c.build(&device).unwrap_err().to_string();
        assert!(err.contains("publish.tls_ca_file"), "{err}");
    }

    #[test]
    fn password_from_file_and_env_and_redacted_debug() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let device = DeviceId::new("dev-1").unwrap();
        let c = PublishConfig {
            password_file: Some(pw),
            ..plain()
        };
        let s = c.build(&device).unwrap();
        assert_eq!(s.credentials, Some(("dev-1".into(), "s3cret".into())));
        assert!(!format!("{s:?}").contains("s3cret"));

        let c = PublishConfig {
            password_env: Some("EXAMLINK_TEST_SURELY_UNSET_VAR".into()),
            ..plain()
        };
        let err = c.build(&device).unwrap_err().to_string();
        assert!(err.contains("publish.password_env"), "{err}");
    }
}
