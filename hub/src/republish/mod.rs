//! republish: after COMMIT, tell each device what happened to its record (its receipts topic)
//! and publish each newly stored record, as validated JSON, on the live results tree
//! (`examlink/v1/results/<device_type>/<device_id>`, schema in `hub/schema/`). Both QoS 1,
//! each on its own connection.
//!
//! A result carries `"revision": 1` ([`with_revision`]); [`revisions`] publishes each review
//! decision's new revision of a record on the same topic (durable queue, after PUBACK).
//!
//! A receipt lost here (broker gone) is not a loss: the agent resends the record and gets a
//! Duplicate receipt.

pub mod revisions;

use bytes::Bytes;
use record::topic::DeviceTopic;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::load::Outcome;
use crate::telemetry;

/// Publishes every outcome from `rx` until it closes: receipts on `receipts`, results on
/// `results`. Then disconnects both (after the publishes queued before).
pub async fn run(receipts: AsyncClient, results: AsyncClient, mut rx: mpsc::Receiver<Outcome>) {
    while let Some(o) = rx.recv().await {
        if let (Some(device), Some(receipt)) = (&o.device, &o.receipt) {
            let topic = DeviceTopic::Receipts.topic(device);
            if let Err(error) = receipts
                .publish(topic, QoS::AtLeastOnce, false, record::encode(receipt))
                .await
            {
                warn!(device = %device, record = %receipt.record_id, %error, "Receipt not sent.");
                break;
            }
            metrics::counter!(telemetry::RECEIPTS_SENT).increment(1);
        }
        if let Some((topic, payload)) = o.result {
            if let Err(error) = results
                .publish_bytes(topic, QoS::AtLeastOnce, false, with_revision(&payload, 1))
                .await
            {
                warn!(%error, "Result not published.");
                break;
            }
            metrics::counter!(telemetry::RESULTS_PUBLISHED).increment(1);
        }
    }
    for client in [receipts, results] {
        if client.disconnect().await.is_err() {
            debug!("Publisher already gone at shutdown.");
        }
    }
}

/// `encoded` (a JSON object, as [`record::encode`] writes it) with `"revision": n` added.
pub fn with_revision(encoded: &[u8], revision: i32) -> Bytes {
    let body = encoded.trim_ascii_end();
    debug_assert!(body.ends_with(b"}") && body.len() >= 2);
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(&body[..body.len() - 1]);
    if body.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(format!("\"revision\":{revision}}}").as_bytes());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::with_revision;

    #[test]
    fn a_revision_is_one_more_key() {
        let v: serde_json::Value =
            serde_json::from_slice(&with_revision(br#"{"a":1}"#, 3)).unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "revision": 3}));
        let v: serde_json::Value = serde_json::from_slice(&with_revision(b"{}", 1)).unwrap();
        assert_eq!(v, serde_json::json!({"revision": 1}));
    }

    /// The committed JSON Schema names exactly the keys a republished record carries.
    #[test]
    fn results_schema_matches_the_payload() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/result.schema.json")).unwrap();
        let d = record::DeviceId::new("autoref-01").unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&with_revision(
            &record::encode(&crate::testkit::record(&d, 1)),
            1,
        ))
        .unwrap();
        let mut have: Vec<&String> = payload.as_object().unwrap().keys().collect();
        let mut want: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        have.sort();
        want.sort();
        assert_eq!(have, want);
        let field_keys: Vec<&String> = payload["fields"][0].as_object().unwrap().keys().collect();
        for k in field_keys {
            assert!(
                schema["properties"]["fields"]["items"]["properties"]
                    .get(k)
                    .is_some(),
                "{k}"
            );
        }
    }
}
