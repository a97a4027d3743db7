//! The publish event loop: owns the MQTT connection and drives the sans-IO
//! [`crate::outbox::Outbox`] with it.
//!
//! Two tasks: the *connection* task polls rumqttc's `EventLoop` (reconnecting with exponential
//! backoff and jitter) and forwards connection changes and incoming receipts; the *publisher*
//! loop reacts to those, to new messages in the store, to resend deadlines and to the status
//! timer, and hands publishes to rumqttc. rumqttc's own replay queue is cleared on every
//! disconnection: the outbox decides all resends.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use record::topic::DeviceTopic;
use record::{Receipt, ReceiptOutcome};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, QoS};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::mqtt::MqttSettings;
use crate::outbox::{DeliveryConfig, Outbox, OutboxError, Retired, Store};
use crate::telemetry::{self, Health};

/// Most receipts applied in one store transaction.
const RECEIPT_BATCH: usize = 4096;
/// rumqttc's limit of publishes awaiting the broker's PubAck.
const MQTT_INFLIGHT: u16 = 100;
/// How long shutdown waits for the offline status to leave.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the publisher stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The outbox database failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The MQTT connection could not be configured.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What the connection task reports.
#[derive(Debug)]
enum Link {
    Up,
    Down(String),
    Message { topic: String, payload: Vec<u8> },
}

/// The publish stage.
#[derive(Debug)]
pub struct Publisher {
    settings: MqttSettings,
    store: Store,
    delivery: DeliveryConfig,
    health: Health,
}

impl Publisher {
    /// A publisher of `store`'s messages.
    pub fn new(
        settings: MqttSettings,
        store: Store,
        delivery: DeliveryConfig,
        health: Health,
    ) -> Self {
        Self {
            settings,
            store,
            delivery,
            health,
        }
    }

    /// Runs until `shutdown`; then publishes an offline status and disconnects.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), PublishError> {
        let device = self.settings.device.clone();
        let options = self
            .settings
            .options(&self.health, self.store.backlog(), MQTT_INFLIGHT)?;
        let capacity = 2 * self.delivery.window + 64;
        let (client, mut eventloop) = AsyncClient::new(options, capacity);
        eventloop
            .network_options
            .set_connection_timeout(self.settings.config.connect_timeout_secs.max(1));
        let (link_tx, mut link_rx) = mpsc::unbounded_channel();
        let conn = tokio::spawn(connection(
            eventloop,
            link_tx,
            Duration::from_millis(self.settings.config.reconnect_min_ms),
            Duration::from_millis(self.settings.config.reconnect_max_ms),
        ));

        let records_topic = DeviceTopic::Records.topic(&device);
        let rejections_topic = DeviceTopic::Rejections.topic(&device);
        let receipts_topic = DeviceTopic::Receipts.topic(&device);
        let status_topic = DeviceTopic::Status.topic(&device);
        let mut outbox = Outbox::new(self.store.clone(), self.delivery)?;
        let mut connected = false;
        // The last connection error logged while disconnected: each new kind is logged once
        // (a wrong CA or password must show in the log, not only in the status).
        let mut last_failure: Option<String> = None;
        let mut status = tokio::time::interval(Duration::from_secs(
            self.settings.config.status_every_secs.max(1),
        ));
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);

        loop {
            let deadline = outbox.next_deadline();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                link = link_rx.recv() => {
                    let Some(link) = link else { break };
                    let mut receipts = Vec::new();
                    let mut next = Some(link);
                    while let Some(link) = next.take() {
                        match link {
                            Link::Up => {
                                connected = true;
                                last_failure = None;
                                metrics::counter!(telemetry::CONNECTIONS).increment(1);
                                info!(device = %device, broker = %self.settings.broker.host, "Connected to the broker.");
                                if let Err(e) = client.try_subscribe(receipts_topic.clone(), QoS::AtLeastOnce) {
                                    warn!(error = %e, "Could not subscribe to receipts.");
                                }
                                self.publish_status(&client, &status_topic, true);
                                outbox.on_connected(Instant::now());
                            }
                            Link::Down(e) => {
                                if connected {
                                    warn!(device = %device, error = %e, backlog = self.store.backlog().messages, "Disconnected from the broker.");
                                } else if last_failure.as_deref() != Some(e.as_str()) {
                                    warn!(device = %device, broker = %self.settings.broker.host, error = %e, backlog = self.store.backlog().messages, "Cannot connect to the broker; retrying with backoff.");
                                }
                                last_failure = Some(e.clone());
                                connected = false;
                                outbox.on_disconnected();
                                self.health.set_error(format!("broker connection: {e}"));
                            }
                            Link::Message { topic, payload } if topic == receipts_topic => {
                                if let Some(receipt) = self.receipt(&payload) {
                                    receipts.push(receipt);
                                }
                            }
                            Link::Message { topic, .. } => debug!(topic, "Ignored message."),
                        }
                        if receipts.len() < RECEIPT_BATCH {
                            next = link_rx.try_recv().ok();
                        }
                    }
                    if !receipts.is_empty() {
                        let retired =
                            outbox.on_receipts(Instant::now(), chrono::Utc::now(), &receipts)?;
                        self.settled(&retired);
                    }
                }
                _ = self.store.enqueued() => {}
                _ = sleep_until(deadline), if deadline.is_some() => {}
                _ = status.tick() => {
                    if connected {
                        self.publish_status(&client, &status_topic, true);
                    }
                }
            }
            if connected {
                for t in outbox.poll_transmit(Instant::now())? {
                    let topic = match t.pending.kind {
                        crate::outbox::Kind::Record => &records_topic,
                        crate::outbox::Kind::Rejection => &rejections_topic,
                    };
                    if t.attempt == 0 {
                        telemetry::count(telemetry::MESSAGES_PUBLISHED, t.pending.kind);
                    } else {
                        metrics::counter!(telemetry::MESSAGES_RESENT).increment(1);
                    }
                    if let Err(e) = client.try_publish(
                        topic.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        t.pending.payload,
                    ) {
                        // The message stays in flight and is resent on the next reconnect or timeout.
                        debug!(id = %t.pending.id, error = %e, "Publish queue full.");
                    }
                }
            }
        }

        if connected {
            self.publish_status(&client, &status_topic, false);
            let _sent = client.try_disconnect();
            let _disconnected = tokio::time::timeout(SHUTDOWN_GRACE, async {
                while let Some(l) = link_rx.recv().await {
                    if matches!(l, Link::Down(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        conn.abort();
        self.store.flush()?;
        Ok(())
    }

    fn publish_status(&self, client: &AsyncClient, topic: &str, online: bool) {
        let report = self
            .health
            .report(&self.settings.device, online, self.store.backlog());
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, record::encode(&report)) {
            debug!(error = %e, "Could not queue the status message.");
        }
    }

    /// Decodes a receipt and counts it by outcome; `None` (logged) when it is not one.
    fn receipt(&self, payload: &[u8]) -> Option<Receipt> {
        let receipt: Receipt = match record::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                warn!(device = %self.settings.device, error = %e, "Ignored an undecodable receipt.");
                return None;
            }
        };
        let reason = receipt.reason.as_deref().unwrap_or("");
        match receipt.outcome {
            ReceiptOutcome::Stored | ReceiptOutcome::Duplicate => {}
            ReceiptOutcome::Deferred => debug!(
                device = %self.settings.device, id = %receipt.record_id, reason,
                "The hub deferred a message; it stays in the outbox."
            ),
            ReceiptOutcome::Rejected => warn!(
                device = %self.settings.device, id = %receipt.record_id, reason,
                "The hub rejected a message; it is kept in the outbox's rejected part (agent outbox list --rejected)."
            ),
        }
        metrics::counter!(telemetry::RECEIPTS, "outcome" => receipt.outcome.as_str()).increment(1);
        Some(receipt)
    }

    /// Reports what a batch of receipts did: counters, gauges, the status `last_error`.
    fn settled(&self, retired: &Retired) {
        self.health.delivered(retired.removed as u64);
        let backlog = self.store.backlog();
        telemetry::set_backlog(backlog);
        if let Some((id, reason)) = &retired.last_rejection {
            self.health.set_error(format!(
                "record {id} rejected by the hub: {reason}; kept in the outbox (agent outbox list --rejected)"
            ));
        }
        if let Some(reason) = &retired.last_deferral {
            let error = telemetry::deferred_error(backlog.deferred, reason);
            if self.health.set_deferred_error(error.clone()) {
                warn!(device = %self.settings.device, deferred = backlog.deferred, "{error}; they stay in the outbox and are retried with a backoff.");
            }
        } else if backlog.deferred == 0 {
            self.health.clear_deferred_error();
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Polls the MQTT event loop for ever, reconnecting with exponential backoff and jitter.
async fn connection(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Link>,
    min: Duration,
    max: Duration,
) {
    let mut backoff = min;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff = min;
                if tx.send(Link::Up).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let link = Link::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                };
                if tx.send(link).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                // The outbox resends whatever was in flight; drop rumqttc's replay queue.
                eventloop.pending.clear();
                metrics::counter!(telemetry::CONNECTION_ERRORS).increment(1);
                if let ConnectionError::ConnectionRefused(code) = &e {
                    error!(code = ?code, "The broker refused the connection: check device_id and the broker credentials.");
                }
                if tx.send(Link::Down(e.to_string())).is_err() {
                    return;
                }
                let jitter = rand::thread_rng().gen_range(0.5..1.5);
                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                backoff = (backoff * 2).min(max);
            }
        }
    }
}
