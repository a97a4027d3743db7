//! Embedded-broker mode: `rumqttd` runs in the hub process on a loopback-only listener whose
//! authentication hook (rumqttd's `external_auth`) accepts one login: the hub's random
//! per-process secret. Devices never reach it directly; they connect to the
//! [`gate`](crate::subscribe::gate), which verifies them and relays with that secret. The hub's
//! own clients ([`crate::subscribe::mqtt`]) use the secret too.
//!
//! rumqttd has no stop; its threads end with the process.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::Secret;
use crate::subscribe::mqtt::Endpoint;

/// Username of the hub's own clients on the internal listener.
pub const HUB_USER: &str = "examlink-hub";

/// The embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No loopback port.
    #[error("reserving a loopback port for the embedded broker")]
    Port(#[source] std::io::Error),
    /// The broker thread.
    #[error("starting the embedded broker thread")]
    Thread(#[source] std::io::Error),
    /// The broker never accepted connections.
    #[error("the embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    internal: SocketAddr,
    secret: Secret,
}

/// How much of each subscription filter's stream the embedded broker keeps in memory.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Bytes per segment (at least one packet).
    pub segment_bytes: usize,
    /// Segments per topic.
    pub segments: usize,
}

impl EmbeddedBroker {
    /// Starts rumqttd on a free loopback port.
    pub async fn start(
        max_connections: usize,
        max_packet_bytes: usize,
        retention: Retention,
    ) -> Result<Self, EmbeddedError> {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let secret = Secret::new(base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes));
        // rumqttd binds by itself and does not report the port: reserve one and release it.
        let internal = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(EmbeddedError::Port)?;
        let expected = secret.clone();
        let auth: rumqttd::AuthHandler = Arc::new(move |_client, user: String, pass: String| {
            user.len() <= 64 && constant_time_eq(pass.as_bytes(), expected.expose().as_bytes())
        });
        let server = ServerSettings {
            name: "examlink-internal".into(),
            listen: internal,
            tls: None,
            next_connection_delay_ms: 0,
            connections: ConnectionSettings {
                connection_timeout_ms: 10_000,
                max_payload_size: max_packet_bytes,
                max_inflight_count: 1000,
                auth: None,
                external_auth: Some(auth),
                dynamic_filters: true,
            },
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: max_connections + 16,
                max_outgoing_packet_count: 1000,
                // rumqttd keeps each filter's recent messages in memory, consumed or not, in a
                // ring of segments: this bounds the broker's memory per filter. A subscriber
                // that falls further behind skips ahead (the agent resends what the hub did not
                // receipt, so nothing is lost, but it costs a resend timeout). See hub.toml.
                max_segment_size: retention.segment_bytes.max(max_packet_bytes),
                max_segment_count: retention.segments,
                ..Default::default()
            },
            v4: Some(HashMap::from([("internal".to_owned(), server)])),
            ..Default::default()
        };
        std::thread::Builder::new()
            .name("rumqttd".into())
            .spawn(move || {
                let mut broker = Broker::new(config);
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "Embedded broker stopped.");
                }
            })
            .map_err(EmbeddedError::Thread)?;
        // Listening once the port can no longer be bound (a probe connection would make
        // rumqttd log an aborted CONNECT).
        for _ in 0..500 {
            if TcpListener::bind(internal).is_err() {
                return Ok(Self { internal, secret });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(EmbeddedError::NotListening(internal))
    }

    /// The loopback listener.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal
    }

    /// The secret rumqttd accepts.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// Where the hub's own clients connect.
    pub fn endpoint(&self, max_packet_bytes: usize) -> Endpoint {
        let mut suffix = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut suffix);
        Endpoint {
            host: self.internal.ip().to_string(),
            port: self.internal.port(),
            // A "." never occurs in a device id, so no device can take over these client ids.
            client_id: format!("examlink.hub-{}", hex::encode(suffix)),
            login: Some((HUB_USER.to_owned(), self.secret.clone())),
            keep_alive: Duration::from_secs(30),
            max_packet_bytes,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
