//! Embedded-broker mode: `rumqttd` runs in the hub process on a loopback-only listener whose
//! authentication hook (rumqttd's `external_auth`) accepts one login: the hub's random
//! per-process secret. Devices never reach it directly; they connect to the
//! [`gate`](crate::subscribe::gate), which verifies them and relays with that secret. The hub's
//! own clients ([`crate::subscribe::mqtt`]) use the secret too.
//!
//! rumqttd has no stop; its threads end with the process.
//!
//! # Memory
//!
//! rumqttd keeps each subscription filter's recent messages in a ring of in-memory segments,
//! read or not, and a kept message holds on to the whole network read buffer it arrived in
//! (8 KiB, shared with its neighbours on the same connection). So the broker's memory is set
//! by [`Retention`], per kind of filter:
//!
//! - the filters the hub reads (every device's records, rejections and status): large, because
//!   they must hold what the fleet sends ahead of its receipts;
//! - the live results tree: one ring per subscriber filter, for the live readers;
//! - everything else, in practice each device's receipts topic: small. Receipts are read as
//!   they come, but the ring of an idle device keeps its last receipts for good, so its size
//!   multiplies by the fleet. Receipts go out on their own connection (not the results'), so
//!   the buffers a kept receipt holds on to hold receipts only.
//!
//! Topics nobody subscribes to are not kept at all.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use record::topic::{self, DeviceTopic};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

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
    /// Bytes per segment of the filters the hub reads (at least one packet).
    pub segment_bytes: usize,
    /// Segments of the filters the hub reads.
    pub segments: usize,
    /// Bytes kept per live-results filter (two segments).
    pub results_bytes: usize,
    /// Bytes kept per other filter, such as a device's receipts (two segments).
    pub other_bytes: usize,
}

impl Retention {
    /// rumqttd's default (every other filter) and its overrides, by filter pattern.
    fn router(&self, max_packet_bytes: usize) -> (SegmentConfig, HashMap<String, SegmentConfig>) {
        let halves = |bytes: usize| SegmentConfig {
            // rumqttd refuses segments under 1 KiB.
            max_segment_size: (bytes / 2).max(1024),
            max_segment_count: 2,
        };
        let hub_reads = SegmentConfig {
            max_segment_size: self.segment_bytes.max(max_packet_bytes),
            max_segment_count: self.segments,
        };
        let mut custom: HashMap<String, SegmentConfig> = [
            DeviceTopic::Records,
            DeviceTopic::Rejections,
            DeviceTopic::Status,
        ]
        .into_iter()
        .map(|t| (t.filter_all(), hub_reads.clone()))
        .collect();
        custom.insert(topic::results_filter_all(), halves(self.results_bytes));
        (halves(self.other_bytes), custom)
    }
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
        // A subscriber that falls further behind than its filter's ring skips ahead (the agent
        // resends what the hub did not receipt, so nothing is lost, but it costs a resend
        // timeout). See the module's notes on memory, and hub.toml.
        let (other, custom) = retention.router(max_packet_bytes);
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: max_connections + 16,
                max_outgoing_packet_count: 1000,
                max_segment_size: other.max_segment_size,
                max_segment_count: other.max_segment_count,
                custom_segment: Some(custom),
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
            tls_ca: None,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring rumqttd gives a filter: the override whose pattern matches it (by rumqttd's own
    /// matcher), else the default.
    fn ring(filter: &str, retention: &Retention) -> (usize, usize) {
        let (default, custom) = retention.router(1 << 20);
        let chosen: Vec<&SegmentConfig> = custom
            .iter()
            .filter(|(pattern, _)| rumqttd::protocol::matches(filter, pattern))
            .map(|(_, c)| c)
            .collect();
        // rumqttd takes the last match in hash order: overlapping patterns would be a lottery.
        assert!(chosen.len() <= 1, "{filter} matches several overrides");
        let c = chosen.first().copied().unwrap_or(&default);
        (c.max_segment_size, c.max_segment_count)
    }

    #[test]
    fn each_kind_of_filter_gets_its_own_ring() {
        let r = Retention {
            segment_bytes: 16 << 20,
            segments: 4,
            results_bytes: 8 << 20,
            other_bytes: 256 << 10,
        };
        let d = record::DeviceId::new("autoref-01").unwrap();
        for t in [
            DeviceTopic::Records,
            DeviceTopic::Rejections,
            DeviceTopic::Status,
        ] {
            assert_eq!(ring(&t.filter_all(), &r), (16 << 20, 4), "{t:?}");
        }
        for results in [
            "examlink/v1/results/#".to_owned(),
            "examlink/v1/results/+/+".to_owned(),
            topic::results_topic("autoref", &d),
        ] {
            assert_eq!(ring(&results, &r), (4 << 20, 2), "{results}");
        }
        // Each device's receipts: small, as the fleet multiplies it.
        let receipts = DeviceTopic::Receipts.topic(&d);
        assert_eq!(ring(&receipts, &r), (128 << 10, 2));
        // A segment is never under rumqttd's 1 KiB floor.
        let tiny = Retention {
            other_bytes: 100,
            ..r
        };
        assert_eq!(ring(&receipts, &tiny), (1024, 2));
    }
}
