//! status: the agents' retained status reports and their rejection notices.
//!
//! A [`StatusReport`] updates its device's row in `devices` (online, backlog, counters, last
//! error, last seen); a [`Rejection`] (an export the agent could not read) is stored once in
//! `device_rejections` and answered, after the insert, with a receipt naming
//! [`Rejection::receipt_id`] (`stored`, or `duplicate` for a resend), so the agent retires it
//! from its outbox. A payload that does not decode, or names another device than its topic, is
//! stored in `rejects`. An empty payload (a cleared retained message) is ignored.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use record::topic::DeviceTopic;
use record::{Receipt, ReceiptOutcome, Rejection, StatusReport};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use crate::load::Db;
use crate::subscribe::Inbound;
use crate::telemetry;

/// Applies status and rejection messages from `rx` until it closes; retries while the
/// database is down (giving up at shutdown).
pub async fn run(
    db: Arc<Db>,
    receipts: AsyncClient,
    reject_cap: usize,
    mut rx: mpsc::Receiver<Inbound>,
    shutdown: watch::Receiver<bool>,
) {
    while let Some(m) = rx.recv().await {
        if m.payload.is_empty() {
            continue;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match apply(&db, &m, reject_cap).await {
                Ok(None) => break,
                Ok(Some((device, receipt))) => {
                    let topic = DeviceTopic::Receipts.topic(&device);
                    if let Err(error) = receipts
                        .publish(topic, QoS::AtLeastOnce, false, record::encode(&receipt))
                        .await
                    {
                        // The agent resends the rejection and gets a duplicate receipt.
                        warn!(device = %device, %error, "Rejection receipt not sent.");
                    }
                    break;
                }
                Err(error) => {
                    error!(topic = %m.topic, %error, "Could not store a device message; retrying.");
                    let mut stop = shutdown.clone();
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    debug!("Status stage stopped.");
}

/// Stores one device message; returns the receipt to send, if any (for a rejection notice).
async fn apply(
    db: &Db,
    m: &Inbound,
    reject_cap: usize,
) -> Result<Option<(record::DeviceId, Receipt)>, tokio_postgres::Error> {
    let client = db.client().await?;
    let Some(device) = &m.device else {
        return Ok(None);
    };
    let mut receipt = None;
    let problem = match m.kind {
        Some(DeviceTopic::Status) => match record::decode::<StatusReport>(&m.payload) {
            Ok(s) if s.device_id == *device => {
                metrics::counter!(telemetry::DEVICE_MESSAGES, "kind" => "status").increment(1);
                client
                    .execute(
                        "UPDATE devices SET online = $2, agent_version = $3, backlog = $4, \
                         exports = $5, delivered = $6, rejected = $7, last_error = $8, \
                         status_at = $9, last_seen_at = greatest(last_seen_at, now()) \
                         WHERE device_id = $1 AND (status_at IS NULL OR status_at <= $9)",
                        &[
                            &device.as_str(),
                            &s.online,
                            &s.agent_version.replace('\0', ""),
                            &(s.backlog as i64),
                            &(s.exports as i64),
                            &(s.delivered as i64),
                            &(s.rejected as i64),
                            &s.last_error.map(|e| e.replace('\0', "")),
                            &s.at,
                        ],
                    )
                    .await?;
                None
            }
            Ok(s) => Some((
                "device_mismatch",
                format!("status for {} on {device}'s topic", s.device_id),
            )),
            Err(e) => Some(("status", e.to_string())),
        },
        Some(DeviceTopic::Rejections) => match record::decode::<Rejection>(&m.payload) {
            Ok(r) if r.device_id == *device => {
                metrics::counter!(telemetry::DEVICE_MESSAGES, "kind" => "rejection").increment(1);
                let clean = |s: &str| s.replace('\0', "");
                let inserted = client
                    .execute(
                        "INSERT INTO device_rejections (device_id, source_file, file_sha256, code, \
                         reason, quarantined_as, at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT DO NOTHING",
                        &[
                            &device.as_str(),
                            &clean(&r.source_file),
                            &clean(&r.file_sha256),
                            &clean(&r.code),
                            &clean(&r.reason),
                            &clean(&r.quarantined_as),
                            &r.at,
                        ],
                    )
                    .await?;
                let outcome = if inserted == 1 {
                    ReceiptOutcome::Stored
                } else {
                    ReceiptOutcome::Duplicate
                };
                receipt = Some((
                    device.clone(),
                    Receipt {
                        record_id: r.receipt_id(),
                        outcome,
                        reason: None,
                    },
                ));
                None
            }
            Ok(r) => Some((
                "device_mismatch",
                format!("rejection for {} on {device}'s topic", r.device_id),
            )),
            Err(e) => Some(("rejection", e.to_string())),
        },
        _ => None,
    };
    if let Some((code, reason)) = problem {
        warn!(device = %device, code, %reason, "Device message rejected.");
        metrics::counter!(telemetry::DEVICE_MESSAGES, "kind" => "rejected").increment(1);
        let cap = m.payload.len().min(reject_cap);
        client
            .execute(
                "INSERT INTO rejects (received_at, device_id, topic, code, reason, payload_size, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &Utc::now(),
                    &device.as_str(),
                    &m.topic.replace('\0', ""),
                    &code,
                    &reason.replace('\0', ""),
                    &(m.payload.len() as i32),
                    &&m.payload[..cap],
                ],
            )
            .await?;
    }
    Ok(receipt)
}
