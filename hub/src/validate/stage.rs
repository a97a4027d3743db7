//! The validate stage's loop: every inbound message from the subscribe stage, checked, on to
//! the load stage.

use chrono::Utc;
use record::{DeviceId, RecordId};
use tokio::sync::mpsc;

use super::{Checked, Validator};
use crate::subscribe::Inbound;
use crate::telemetry;

/// The stage loop: checks every message from `rx` and sends the outcome to `tx`; ends when
/// either side closes.
pub async fn run(validator: Validator, mut rx: mpsc::Receiver<Inbound>, tx: mpsc::Sender<Checked>) {
    while let Some(inbound) = rx.recv().await {
        metrics::counter!(telemetry::RECORDS_RECEIVED).increment(1);
        let checked = validator.check(inbound, Utc::now());
        match &checked {
            Checked::Rejected(r) if r.defer => tracing::info!(
                device = r.device.as_ref().map(DeviceId::as_str).unwrap_or("?"),
                record = r.record_id.as_ref().map(RecordId::as_str).unwrap_or("?"),
                code = r.code,
                reason = %r.reason,
                "Record deferred: the hub cannot take it yet; the agent keeps it."
            ),
            Checked::Rejected(r) => tracing::warn!(
                device = r.device.as_ref().map(DeviceId::as_str).unwrap_or("?"),
                record = r.record_id.as_ref().map(RecordId::as_str).unwrap_or("?"),
                code = r.code,
                reason = %r.reason,
                "Record rejected."
            ),
            Checked::Valid(v) => {
                if let Some(why) = &v.clock {
                    tracing::warn!(
                        device = %v.record.device_id,
                        record = %v.record.record_id,
                        file = %v.record.source_file,
                        reason = %why,
                        "Clock suspect: stored, with a review item."
                    );
                }
            }
        }
        if tx.send(checked).await.is_err() {
            break;
        }
    }
}
