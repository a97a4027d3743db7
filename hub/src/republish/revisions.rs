//! The revisions stage: a review decision made a new revision of a stored record (trigger on
//! `records.revision`, migration 0008, queues it in `republish_queue`); this stage publishes the
//! record again, as it stands now, on the live results topic
//! (`examlink/v1/results/<device_type>/<device_id>`, QoS 1), with `"revision": n`. The queue
//! row is deleted only after the broker's PUBACK, and only if no newer revision was queued
//! meanwhile, so a broker or hub restart loses no revision and a subscriber always ends with
//! the newest one.
//!
//! The payload is the stored record (`records.payload`, without its crops) with the reviewed
//! state in place: each field's `value`, `number`, `status` (`verified`, `corrected`,
//! `absent`, or the reader's status), `reason` and `reviewed_by`; the header's `patient_id`,
//! `exam_date` and `exam_time`.

use std::time::Duration;

use record::topic::results_topic;
use record::DeviceId;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::load::PgTarget;
use crate::subscribe::mqtt::Endpoint;
use crate::supervise::sleep_or_stop;
use crate::telemetry;

/// How long the stage waits for the broker's PUBACK before it reconnects and tries again.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the stage looks for new revisions (a decision reaches subscribers within this).
const POLL: Duration = Duration::from_millis(500);
/// Records read from the queue per pass.
const BATCH: i64 = 100;

/// One queued revision, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// Record id.
    pub record_id: String,
    /// The queue row's sequence number (the row is deleted only if it is unchanged).
    pub seq: i64,
    /// The record's revision.
    pub revision: i32,
    /// Topic.
    pub topic: String,
    /// Payload (JSON).
    pub payload: Vec<u8>,
}

/// The queued revisions, oldest first (at most `limit`), as they will be published.
pub async fn queued(
    client: &tokio_postgres::Client,
    limit: i64,
) -> Result<Vec<Revision>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT q.record_id, q.seq, r.revision, r.device_type, r.device_id, r.payload, \
                 r.patient_id, to_char(r.exam_date, 'YYYY-MM-DD'), r.exam_time, \
                 coalesce((SELECT jsonb_object_agg(m.field, jsonb_build_object( \
                     'value', m.value, 'number', m.number, 'status', m.status, \
                     'reason', m.reason, 'reviewed_by', m.reviewed_by)) \
                   FROM measurements m WHERE m.record_id = q.record_id), '{}'::jsonb) \
             FROM republish_queue q JOIN records r USING (record_id) \
             ORDER BY q.seq LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let record_id: String = r.get(0);
            let device = match DeviceId::new(r.get::<_, String>(4)) {
                Ok(d) => d,
                Err(error) => {
                    warn!(record = %record_id, %error, "Revision not republished: bad device id.");
                    return None;
                }
            };
            let revision: i32 = r.get(2);
            let payload = revised(
                r.get(5),
                revision,
                [
                    ("patient_id", r.get(6)),
                    ("exam_date", r.get(7)),
                    ("exam_time", r.get(8)),
                ],
                r.get(9),
            );
            Some(Revision {
                record_id,
                seq: r.get(1),
                revision,
                topic: results_topic(&r.get::<_, String>(3), &device),
                payload: serde_json::to_vec(&payload).expect("a JSON value serialises"),
            })
        })
        .collect())
}

/// The stored record `stored` with the reviewed state: header columns, each field's
/// measurement row (by name), and `revision`.
fn revised(
    mut stored: Value,
    revision: i32,
    header: [(&str, Option<String>); 3],
    measurements: Value,
) -> Value {
    let Some(map) = stored.as_object_mut() else {
        return stored;
    };
    for (key, value) in header {
        map.insert(key.into(), value.map(Value::String).unwrap_or(Value::Null));
    }
    if let Some(Value::Array(fields)) = map.get_mut("fields") {
        for f in fields.iter_mut().filter_map(Value::as_object_mut) {
            let Some(m) = f
                .get("name")
                .and_then(Value::as_str)
                .and_then(|n| measurements.get(n))
                .and_then(Value::as_object)
            else {
                continue;
            };
            for key in ["value", "number", "status", "reason"] {
                f.insert(key.into(), m.get(key).cloned().unwrap_or(Value::Null));
            }
            if let Some(by) = m.get("reviewed_by").filter(|v| !v.is_null()) {
                f.insert("reviewed_by".into(), by.clone());
            }
        }
    }
    map.remove("review_crops");
    map.insert("revision".into(), revision.into());
    stored
}

/// Runs the stage until `stop`.
pub async fn run(target: PgTarget, endpoint: Endpoint, stop: watch::Receiver<bool>) {
    let (poll, mut stop) = (POLL, stop);
    let (client, mut events) = AsyncClient::new(endpoint.options("rev"), 16);
    let mut db: Option<tokio_postgres::Client> = None;
    let mut backoff = poll;
    while !*stop.borrow() {
        let c = match db.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => match target.connect().await {
                Ok(c) => c,
                Err(error) => {
                    warn!(%error, "Republishing revisions: PostgreSQL unavailable; retrying.");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    idle(&mut events, &mut stop, backoff).await;
                    continue;
                }
            },
        };
        match queued(&c, BATCH).await {
            Ok(due) if due.is_empty() => {
                backoff = poll;
                idle(&mut events, &mut stop, poll).await;
            }
            Ok(due) => {
                for r in due {
                    if *stop.borrow() {
                        break;
                    }
                    if let Err(why) = publish(&client, &mut events, &r).await {
                        warn!(record = %r.record_id, revision = r.revision, why, "Revision not republished yet; retrying.");
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        idle(&mut events, &mut stop, backoff).await;
                        break;
                    }
                    backoff = poll;
                    metrics::counter!(telemetry::REVISIONS_PUBLISHED).increment(1);
                    debug!(record = %r.record_id, revision = r.revision, "Revision republished.");
                    if let Err(error) = c
                        .execute(
                            "DELETE FROM republish_queue WHERE record_id = $1 AND seq = $2",
                            &[&r.record_id, &r.seq],
                        )
                        .await
                    {
                        // Published but still queued: it goes out again (at least once).
                        warn!(record = %r.record_id, %error, "Republished revision not dequeued.");
                        break;
                    }
                }
            }
            Err(error) => {
                warn!(%error, "Republishing revisions: reading the queue failed.");
                idle(&mut events, &mut stop, poll).await;
                continue;
            }
        }
        db = Some(c);
    }
    client.disconnect().await.ok();
    info!("Revision republishing stopped.");
}

/// Publishes `r` and waits for its PUBACK.
async fn publish(client: &AsyncClient, events: &mut EventLoop, r: &Revision) -> Result<(), String> {
    client
        .publish(r.topic.clone(), QoS::AtLeastOnce, false, r.payload.clone())
        .await
        .map_err(|e| e.to_string())?;
    let wait = async {
        let mut pkid = None;
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(id))) if pkid.is_none() => pkid = Some(id),
                Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == pkid => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(format!("broker connection: {error}")),
            }
        }
    };
    tokio::time::timeout(ACK_TIMEOUT, wait)
        .await
        .map_err(|_| format!("no PUBACK within {ACK_TIMEOUT:?}"))?
}

/// Keeps the connection alive (pings, reconnects) for `d`, or until `stop`.
async fn idle(events: &mut EventLoop, stop: &mut watch::Receiver<bool>, d: Duration) {
    let pause = sleep_or_stop(stop, d);
    tokio::pin!(pause);
    loop {
        tokio::select! {
            _ = &mut pause => return,
            e = events.poll() => if e.is_err() {
                // Reconnects on the next poll; don't spin.
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_revision_shows_the_reviewed_state() {
        let stored = json!({
        "schema_version": 1, "record_id": "r", "patient_id": null, "exam_date": "2026-11-30",
        "exam_time": null, "review_crops": [],
        "fields": [
            {"name": "patient_id", "value": null, "status": "unreadable", "confidence": 0.2, "raw": "0048?913"},
            {"name": "r_sph", "value": "+1.25", "number": 1.25, "status": "ok", "confidence": 0.99},
        ]});
        let m = json!({
            "patient_id": {"value": "00482913", "number": null, "status": "corrected",
                "reason": "reviewed by ana", "reviewed_by": "ana"},
            "r_sph": {"value": "+1.25", "number": 1.25, "status": "ok", "reason": null, "reviewed_by": null},
        });
        let v = revised(
            stored,
            2,
            [
                ("patient_id", Some("00482913".into())),
                ("exam_date", Some("2026-11-30".into())),
                ("exam_time", None),
            ],
            m,
        );
        assert_eq!(v["revision"], 2);
        assert_eq!(v["patient_id"], "00482913");
        assert!(v.get("review_crops").is_none());
        assert_eq!(v["fields"][0]["status"], "corrected");
        assert_eq!(v["fields"][0]["reviewed_by"], "ana");
        assert_eq!(
            v["fields"][0]["raw"], "0048?913",
            "the reader's raw text stays"
        );
        assert!(v["fields"][1].get("reviewed_by").is_none());
        let _: serde_json::Map<String, Value> = serde_json::from_value(v).unwrap();
    }
}
