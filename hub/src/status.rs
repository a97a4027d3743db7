//! status: the agents' retained status reports and their rejection notices.
//!
//! A [`StatusReport`] updates its device's row in `devices` (online, backlog, counters, last
//! error, last seen); a [`Rejection`] (an export the agent could not read) is stored once in
//! `device_rejections` and answered, after the insert, with a receipt naming
//! [`Rejection::receipt_id`] (`stored`, or `duplicate` for a resend), so the agent retires it
//! from its outbox. A payload that does not decode, or names another device than its topic, is
//! stored in `rejects`. An empty payload (a cleared retained message) is ignored.
//!
//! Poison isolation: every field of both messages is checked ([`check_status`],
//! [`check_rejection`]) before it reaches the database, and a database error is classified
//! ([`crate::load::is_retriable`]). A message that can never be stored (a bad field, a value
//! the database refuses) goes to `rejects` with its reason at once, and a rejection notice gets
//! a `rejected` receipt so its agent stops resending it; only while the database is
//! unreachable does the stage hold a message and retry. One device's bad message never stalls
//! another device's status, and never the shared subscriber.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use record::topic::DeviceTopic;
use record::{Receipt, ReceiptOutcome, Rejection, StatusReport};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use crate::load::{is_retriable, Db};
use crate::subscribe::Inbound;
use crate::telemetry;

/// Longest short text (versions, file names, codes).
const MAX_SHORT: usize = 256;
/// Longest long text (reasons, errors, paths).
const MAX_LONG: usize = 4096;

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
                    send(&receipts, &device, &receipt).await;
                    break;
                }
                Err(error) if !is_retriable(&error) => {
                    // Never storable as it is: keep it as a reject, answer a rejection notice.
                    let reason = format!("the database refused the message: {error}");
                    match store_reject(&db, &m, "database", &reason, reject_cap).await {
                        Ok(()) => {
                            warn!(topic = %m.topic, %error, "Device message refused by the database; kept in rejects.");
                            if let Some((device, receipt)) = refused_receipt(&m, &reason) {
                                send(&receipts, &device, &receipt).await;
                            }
                            break;
                        }
                        Err(e) if is_retriable(&e) => {
                            error!(topic = %m.topic, error = %e, "Could not store a reject; retrying.");
                        }
                        Err(e) => {
                            error!(topic = %m.topic, error = %e, "Could not even store the reject of a device message; dropping it.");
                            break;
                        }
                    }
                }
                Err(error) => {
                    error!(topic = %m.topic, %error, "PostgreSQL unavailable: holding a device message; retrying.");
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
            Ok(s) if s.device_id != *device => Some((
                "device_mismatch",
                format!("status for {} on {device}'s topic", s.device_id),
            )),
            Ok(s) if check_status(&s).is_err() => {
                Some(("status_field", check_status(&s).err().unwrap_or_default()))
            }
            Ok(mut s) => {
                // A fast device clock must not freeze the row (statuses apply in `at` order).
                s.at = s.at.min(Utc::now());
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
            Err(e) => Some(("status", e.to_string())),
        },
        Some(DeviceTopic::Rejections) => match record::decode::<Rejection>(&m.payload) {
            Ok(r) if r.device_id != *device => Some((
                "device_mismatch",
                format!("rejection for {} on {device}'s topic", r.device_id),
            )),
            Ok(r) if check_rejection(&r).is_err() => {
                let why = check_rejection(&r).err().unwrap_or_default();
                receipt = Some((
                    device.clone(),
                    Receipt {
                        record_id: r.receipt_id(),
                        outcome: ReceiptOutcome::Rejected,
                        reason: Some(format!("rejection_field: {why}")),
                    },
                ));
                Some(("rejection_field", why))
            }
            Ok(r) => {
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
            Err(e) => Some(("rejection", e.to_string())),
        },
        _ => None,
    };
    if let Some((code, reason)) = problem {
        warn!(device = %device, code, %reason, "Device message rejected.");
        store_reject(db, m, code, &reason, reject_cap).await?;
    }
    Ok(receipt)
}

/// Keeps a device message that can never be stored as it is, whole (up to the cap).
async fn store_reject(
    db: &Db,
    m: &Inbound,
    code: &str,
    reason: &str,
    reject_cap: usize,
) -> Result<(), tokio_postgres::Error> {
    metrics::counter!(telemetry::DEVICE_MESSAGES, "kind" => "rejected").increment(1);
    let client = db.client().await?;
    let cap = m.payload.len().min(reject_cap);
    let reason: String = reason.replace('\0', "").chars().take(MAX_LONG).collect();
    client
        .execute(
            "INSERT INTO rejects (received_at, device_id, topic, code, reason, payload_size, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &m.received_at,
                &m.device.as_ref().map(|d| d.as_str()),
                &m.topic.replace('\0', ""),
                &code,
                &reason,
                &(m.payload.len() as i32),
                &&m.payload[..cap],
            ],
        )
        .await?;
    Ok(())
}

/// The `rejected` receipt for a rejection notice the hub can never store.
fn refused_receipt(m: &Inbound, reason: &str) -> Option<(record::DeviceId, Receipt)> {
    if m.kind != Some(DeviceTopic::Rejections) {
        return None;
    }
    let device = m.device.clone()?;
    let r = record::decode::<Rejection>(&m.payload).ok()?;
    Some((
        device,
        Receipt {
            record_id: r.receipt_id(),
            outcome: ReceiptOutcome::Rejected,
            reason: Some(format!("database: {reason}")),
        },
    ))
}

async fn send(receipts: &AsyncClient, device: &record::DeviceId, receipt: &Receipt) {
    let topic = DeviceTopic::Receipts.topic(device);
    if let Err(error) = receipts
        .publish(topic, QoS::AtLeastOnce, false, record::encode(receipt))
        .await
    {
        // The agent resends the rejection and gets a duplicate receipt.
        warn!(device = %device, %error, "Rejection receipt not sent.");
    }
}

fn text(name: &str, v: &str, max: usize) -> Result<(), String> {
    if v.len() > max {
        return Err(format!("{name} is {} bytes, over {max}", v.len()));
    }
    if v.contains('\0') {
        return Err(format!("{name} holds NUL"));
    }
    Ok(())
}

/// Every field of a status report, bounded.
pub fn check_status(s: &StatusReport) -> Result<(), String> {
    text("agent_version", &s.agent_version, MAX_SHORT)?;
    if let Some(e) = &s.last_error {
        text("last_error", e, MAX_LONG)?;
    }
    for (name, n) in [
        ("backlog", s.backlog),
        ("exports", s.exports),
        ("delivered", s.delivered),
        ("rejected", s.rejected),
    ] {
        if i64::try_from(n).is_err() {
            return Err(format!("{name} {n} is out of range"));
        }
    }
    Ok(())
}

/// Every field of a rejection notice, bounded and well formed.
pub fn check_rejection(r: &Rejection) -> Result<(), String> {
    text("source_file", &r.source_file, MAX_SHORT)?;
    if !(record::ids::is_sha256_hex(&r.file_sha256) || r.file_sha256.is_empty()) {
        return Err(format!(
            "file_sha256 is not 64 lowercase hex digits (or empty): {} bytes",
            r.file_sha256.len()
        ));
    }
    let code_ok = !r.code.is_empty()
        && r.code.len() <= 64
        && r.code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !code_ok {
        return Err("code is not 1-64 of a-z, 0-9, _".into());
    }
    text("reason", &r.reason, MAX_LONG)?;
    text("quarantined_as", &r.quarantined_as, MAX_LONG)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection() -> Rejection {
        Rejection {
            device_id: record::DeviceId::new("autoref-01").unwrap(),
            source_file: "a.png".into(),
            file_sha256: "ab".repeat(32),
            code: "unknown_layout".into(),
            reason: "no template fits".into(),
            quarantined_as: "q/a.png".into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn poison_fields_are_caught_before_the_database() {
        assert_eq!(check_rejection(&rejection()), Ok(()));
        let mut r = rejection();
        r.file_sha256 = "a".repeat(12_000);
        assert!(check_rejection(&r).unwrap_err().contains("file_sha256"));
        let mut r = rejection();
        r.file_sha256 = String::new();
        assert_eq!(check_rejection(&r), Ok(()));
        let mut r = rejection();
        r.code = "Not A Code".into();
        assert!(check_rejection(&r).is_err());
        let mut r = rejection();
        r.reason = "x".repeat(MAX_LONG + 1);
        assert!(check_rejection(&r).unwrap_err().contains("reason"));
        let s = StatusReport {
            device_id: record::DeviceId::new("autoref-01").unwrap(),
            online: true,
            agent_version: "0.1.0".into(),
            backlog: 1,
            exports: 2,
            delivered: 1,
            rejected: 0,
            last_error: None,
            at: Utc::now(),
        };
        assert_eq!(check_status(&s), Ok(()));
        let mut bad = s.clone();
        bad.backlog = u64::MAX;
        assert!(check_status(&bad).unwrap_err().contains("backlog"));
        let mut bad = s;
        bad.agent_version = "v\0".into();
        assert!(check_status(&bad).is_err());
    }
}
