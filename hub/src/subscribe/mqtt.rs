//! The hub's own MQTT connections, the same in both modes: a [`Subscriber`] that takes device
//! messages off the broker, and [`Publisher`]s that send receipts and results.
//!
//! They are separate connections on purpose: the subscriber blocks on the pipeline's bounded
//! channels (that is the backpressure), and a publisher sharing its event loop would then
//! stall the receipts that drain the pipeline. Receipts and results use a publisher each (see
//! [`crate::subscribe::embedded`] for why that bounds the embedded broker's memory).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::config::Secret;
use crate::subscribe::Inbound;
use record::topic::DeviceTopic;

/// A broker connection that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A request could not be queued (the connection's event loop is gone).
    #[error("MQTT client request failed: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// Where and how the hub's own clients connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id prefix; `-sub` / `-pub` are appended.
    pub client_id: String,
    /// Username and password, if the broker wants them.
    pub login: Option<(String, Secret)>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Largest packet either way.
    pub max_packet_bytes: usize,
    /// TLS, trusting these PEM CA certificates; `None`: plain TCP.
    pub tls_ca: Option<Vec<u8>>,
}

impl Endpoint {
    /// The client options of the connection called `suffix`.
    pub(crate) fn options(&self, suffix: &str) -> MqttOptions {
        let mut o = MqttOptions::new(
            format!("{}-{suffix}", self.client_id),
            self.host.clone(),
            self.port,
        );
        o.set_keep_alive(self.keep_alive)
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes)
            .set_clean_session(true)
            .set_inflight(1000);
        if let Some((user, password)) = &self.login {
            o.set_credentials(user.clone(), password.expose());
        }
        if let Some(ca) = &self.tls_ca {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: ca.clone(),
                    alpn: None,
                    client_auth: None,
                },
            ));
        }
        o
    }
}

/// Subscribes to the device filters and routes each publish: records (and anything not a
/// device topic) to the validate stage, status and rejections to the status stage.
pub struct Subscriber {
    client: AsyncClient,
    eventloop: EventLoop,
    filters: Vec<String>,
    subscribed: Option<oneshot::Sender<()>>,
}

impl Subscriber {
    /// A subscriber for `filters` (plain or `$share/...`).
    pub fn new(endpoint: &Endpoint, filters: Vec<String>) -> Self {
        let (client, eventloop) = AsyncClient::new(endpoint.options("sub"), 64);
        Self {
            client,
            eventloop,
            filters,
            subscribed: None,
        }
    }

    /// Signals `tx` when the broker first acknowledges the subscription.
    pub fn on_subscribed(mut self, tx: oneshot::Sender<()>) -> Self {
        self.subscribed = Some(tx);
        self
    }

    /// Runs until shutdown or until the pipeline closes.
    pub async fn run(
        mut self,
        records: mpsc::Sender<Inbound>,
        devices: mpsc::Sender<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let event = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    info!(filters = ?self.filters, "Subscriber connected.");
                    let subs = self
                        .filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(error) = self.client.try_subscribe_many(subs) {
                        warn!(%error, "Could not queue the subscription.");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    debug!(codes = ?ack.return_codes, "Subscribed.");
                    if let Some(tx) = self.subscribed.take() {
                        tx.send(()).ok();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let inbound = Inbound::from_broker(p.topic, p.payload);
                    let to = match inbound.kind {
                        Some(DeviceTopic::Status | DeviceTopic::Rejections) => &devices,
                        Some(DeviceTopic::Receipts) => continue,
                        Some(DeviceTopic::Records) | None => &records,
                    };
                    if to.send(inbound).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, retry_ms = backoff.as_millis() as u64, "Subscriber connection lost.");
                    tokio::select! {
                        _ = shutdown.wait_for(|s| *s) => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if self.client.try_disconnect().is_ok() {
            // Let the DISCONNECT go out; a broken connection just ends here.
            tokio::time::timeout(Duration::from_millis(500), self.eventloop.poll())
                .await
                .ok();
        }
        debug!("Subscriber stopped.");
    }
}

/// The publishing connection: [`Publisher::client`] queues publishes; [`Publisher::run`]
/// drives the connection until the client disconnects.
pub struct Publisher {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Publisher {
    /// A publisher for `endpoint`; `suffix` tells its client id apart from the hub's other
    /// connections.
    pub fn new(endpoint: &Endpoint, suffix: &str) -> Self {
        let (client, eventloop) = AsyncClient::new(endpoint.options(suffix), 1024);
        Self { client, eventloop }
    }

    /// A handle to queue publishes on.
    pub fn client(&self) -> AsyncClient {
        self.client.clone()
    }

    /// Drives the connection until a DISCONNECT has been sent (after every publish queued
    /// before it) or shutdown is forced.
    pub async fn run(mut self, mut force_stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        drop(self.client);
        loop {
            let event = tokio::select! {
                _ = force_stop.wait_for(|s| *s) => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    info!("Publisher connected.");
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::RequestsDone) => break,
                Err(error) => {
                    warn!(%error, retry_ms = backoff.as_millis() as u64, "Publisher connection lost.");
                    tokio::select! {
                        _ = force_stop.wait_for(|s| *s) => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        debug!("Publisher stopped.");
    }
}
