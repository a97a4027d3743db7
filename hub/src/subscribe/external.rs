//! External-broker mode: the hub is an ordinary client of a broker it does not run
//! (Mosquitto), and subscribes with `$share/<group>/` so several hubs split the records.
//!
//! Authentication and topic ACLs are then the broker's job (one account per device, each
//! allowed to publish only under its own `examlink/v1/devices/<id>/`); the hub still checks
//! that a payload's device id equals its topic's, and that the device is registered.

use std::time::Duration;

use rand::Rng;
use record::topic::DeviceTopic;

use crate::config::{ConfigError, ExternalConfig};
use crate::subscribe::mqtt::Endpoint;

/// The filters a hub subscribes to, optionally behind a shared-subscription group.
pub fn filters(share_group: Option<&str>) -> Vec<String> {
    [
        DeviceTopic::Records,
        DeviceTopic::Rejections,
        DeviceTopic::Status,
    ]
    .into_iter()
    .map(|t| match share_group {
        Some(g) => format!("$share/{g}/{}", t.filter_all()),
        None => t.filter_all(),
    })
    .collect()
}

/// The endpoint of the external broker, with the password resolved.
pub fn endpoint(config: &ExternalConfig, max_packet_bytes: usize) -> Result<Endpoint, ConfigError> {
    let password = config.password().resolve("subscribe.external")?;
    let login = match (&config.username, password) {
        (Some(u), Some(p)) => Some((u.clone(), p)),
        (Some(u), None) => Some((u.clone(), crate::config::Secret::new(""))),
        (None, Some(_)) => {
            return Err(ConfigError::Invalid {
                key: "subscribe.external.username",
                problem: "a password is configured without a username".into(),
            })
        }
        (None, None) => None,
    };
    let tls_ca = match (&config.tls, &config.tls_ca_file) {
        (true, Some(path)) => Some(std::fs::read(path).map_err(|error| ConfigError::Io {
            key: "subscribe.external.tls_ca_file",
            path: path.clone(),
            error,
        })?),
        _ => None,
    };
    if tls_ca.is_none() && !crate::load::postgres::is_local_host(&config.host) {
        tracing::warn!(host = %config.host, "subscribe.external.tls = false: the hub's broker login and every record cross the network in clear.");
    }
    Ok(Endpoint {
        host: config.host.clone(),
        port: config.port,
        client_id: format!(
            "{}-{:08x}",
            config.client_id_prefix,
            rand::thread_rng().gen::<u32>()
        ),
        login,
        keep_alive: Duration::from_secs(config.keep_alive_secs),
        max_packet_bytes,
        tls_ca,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_filters() {
        let f = super::filters(Some("g1"));
        assert_eq!(f[0], "$share/g1/examlink/v1/devices/+/records");
        assert_eq!(super::filters(None)[2], "examlink/v1/devices/+/status");
    }
}
