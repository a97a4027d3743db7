//! rejects: what the hub refused, kept whole, and how an operator gets it back.
//!
//! Every message that can never be stored as it is lands in the `rejects` table with its code,
//! its reason and its payload (up to `validate.reject_payload_cap_bytes`, by default the codec's
//! whole limit). After the cause is fixed (a template corrected, a device re-registered),
//! `hub rejects replay` puts the kept records through the same checks again ([`Validator`]) and
//! loads those that pass with the load stage's own transaction ([`batch::write`]):
//!
//! - idempotent: a record's id is its primary key, so a record replayed twice, or replayed
//!   while its agent resends it, is stored once (the second time is `duplicate`);
//! - crash-safe: each reject is marked `replayed_at` only after its record's COMMIT; a replay
//!   killed in between finds the record stored on the next run and marks it then;
//! - never widened: only messages from a device's own records topic are replayed, never one the
//!   gate refused (`forbidden`, `topic`: a device publishing as another), nor a payload kept
//!   only in part;
//! - a reject that still fails stays, with `replay_outcome` saying why; one the hub still
//!   cannot take *yet* (a device not registered) is left for a later replay.
//!
//! A replay is audited (`rejects.replay`), as is reading rejects (`rejects.read`). The replayed
//! records are not republished on the live results tree (the CLI holds no MQTT connection);
//! subscribers that need them query the API.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use record::topic::{parse_device_topic, DeviceTopic};
use record::ReceiptOutcome;
use serde::Serialize;
use tokio_postgres::Client;

use crate::audit;
use crate::load::batch::{self, Statements};
use crate::subscribe::Inbound;
use crate::validate::{Checked, Validator};

/// Codes never replayed: the publish broke the topic rules, so its topic names a device other
/// than the one that sent it.
const NEVER_REPLAYED: &[&str] = &["forbidden", "topic"];

/// Which rejects.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    /// Only this code.
    pub code: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// Only this reject id.
    pub id: Option<i64>,
    /// Also those already replayed.
    pub include_replayed: bool,
    /// At most this many (oldest first).
    pub limit: i64,
}

/// One kept reject, without its payload.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Reject id.
    pub id: i64,
    /// When the hub received it.
    pub received_at: DateTime<Utc>,
    /// Device, when known.
    pub device_id: Option<String>,
    /// Record id, when the payload carried one.
    pub record_id: Option<String>,
    /// Topic.
    pub topic: String,
    /// Code.
    pub code: String,
    /// Reason.
    pub reason: String,
    /// The payload's size as received.
    pub payload_size: i32,
    /// Bytes kept.
    pub kept: i32,
    /// When a replay stored it.
    pub replayed_at: Option<DateTime<Utc>>,
    /// What the last replay did.
    pub replay_outcome: Option<String>,
}

const COLUMNS: &str = "id, received_at, device_id, record_id, topic, code, reason, payload_size, \
    length(payload), replayed_at, replay_outcome";

fn row(r: &tokio_postgres::Row) -> Row {
    Row {
        id: r.get(0),
        received_at: r.get(1),
        device_id: r.get(2),
        record_id: r.get(3),
        topic: r.get(4),
        code: r.get(5),
        reason: r.get(6),
        payload_size: r.get(7),
        kept: r.get(8),
        replayed_at: r.get(9),
        replay_outcome: r.get(10),
    }
}

async fn select(
    client: &Client,
    filter: &Filter,
    with_payload: bool,
) -> Result<Vec<(Row, Option<Vec<u8>>)>, tokio_postgres::Error> {
    let payload = if with_payload { ", payload" } else { "" };
    let sql = format!(
        "SELECT {COLUMNS}{payload} FROM rejects \
         WHERE ($1::text IS NULL OR code = $1) AND ($2::text IS NULL OR device_id = $2) \
           AND ($3::bigint IS NULL OR id = $3) AND ($4 OR replayed_at IS NULL) \
         ORDER BY id LIMIT $5"
    );
    let rows = client
        .query(
            &sql,
            &[
                &filter.code,
                &filter.device,
                &filter.id,
                &filter.include_replayed,
                &filter.limit.max(0),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (row(r), with_payload.then(|| r.get(11))))
        .collect())
}

/// The rejects matching `filter`, oldest first (audited as `actor`).
pub async fn list(
    client: &Client,
    actor: &str,
    filter: &Filter,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let rows: Vec<Row> = select(client, filter, false)
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    audit::append(
        client,
        actor,
        audit::actions::REJECTS_READ,
        serde_json::json!({"filter": filter, "count": rows.len()}),
    )
    .await?;
    Ok(rows)
}

/// One reject with its payload (audited as `actor`).
pub async fn show(
    client: &Client,
    actor: &str,
    id: i64,
) -> Result<Option<(Row, Vec<u8>)>, tokio_postgres::Error> {
    let filter = Filter {
        id: Some(id),
        include_replayed: true,
        limit: 1,
        ..Filter::default()
    };
    let found = select(client, &filter, true).await?.into_iter().next();
    audit::append(
        client,
        actor,
        audit::actions::REJECTS_READ,
        serde_json::json!({"id": id, "count": usize::from(found.is_some())}),
    )
    .await?;
    Ok(found.map(|(r, p)| (r, p.unwrap_or_default())))
}

/// What a replay did, by outcome (`stored`, `duplicate`, `still_rejected`, `deferred`,
/// `not_replayable`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Count per outcome.
    pub outcomes: BTreeMap<String, usize>,
}

impl Summary {
    fn add(&mut self, outcome: &str) {
        *self.outcomes.entry(outcome.to_owned()).or_default() += 1;
    }

    /// How many had `outcome`.
    pub fn count(&self, outcome: &str) -> usize {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

/// Replays the rejects matching `filter` (never those already replayed), one transaction
/// each, and returns what happened; audited as `actor`.
pub async fn replay(
    client: &mut Client,
    validator: &Validator,
    actor: &str,
    filter: &Filter,
    reject_cap: usize,
) -> Result<Summary, tokio_postgres::Error> {
    let filter = Filter {
        include_replayed: false,
        ..filter.clone()
    };
    let statements = Statements::prepare(client).await?;
    let mut summary = Summary::default();
    for (r, payload) in select(client, &filter, true).await? {
        let payload = payload.unwrap_or_default();
        let parsed = parse_device_topic(&r.topic);
        let replayable = matches!(parsed, Some((_, DeviceTopic::Records)))
            && !NEVER_REPLAYED.contains(&r.code.as_str())
            && usize::try_from(r.payload_size).ok() == Some(payload.len());
        if !replayable {
            summary.add("not_replayable");
            note(
                client,
                r.id,
                None,
                "not replayable: a gate refusal, not a record, or kept in part",
            )
            .await?;
            continue;
        }
        let inbound = Inbound::from_broker(r.topic.clone(), Bytes::from(payload));
        match validator.check(inbound, Utc::now()) {
            Checked::Rejected(x) => {
                let outcome = if x.defer {
                    "deferred"
                } else {
                    "still_rejected"
                };
                summary.add(outcome);
                note(
                    client,
                    r.id,
                    None,
                    &format!("{outcome}: {}: {}", x.code, x.reason),
                )
                .await?;
            }
            Checked::Valid(v) => {
                let id = v.record.record_id.clone();
                let outcomes =
                    batch::write(client, &statements, &[Checked::Valid(v)], reject_cap).await?;
                let receipt = outcomes.into_iter().next().and_then(|o| o.receipt);
                match receipt.map(|x| (x.outcome, x.reason)) {
                    Some((ReceiptOutcome::Stored, _)) => {
                        summary.add("stored");
                        note(client, r.id, Some(Utc::now()), "stored").await?;
                    }
                    Some((ReceiptOutcome::Duplicate, _)) => {
                        summary.add("duplicate");
                        note(client, r.id, Some(Utc::now()), "duplicate: already stored").await?;
                    }
                    Some((outcome, reason)) => {
                        // The device is not registered (yet): the write noted a deferral for
                        // a record no agent holds any more; the reject itself keeps it.
                        client
                            .execute(
                                "DELETE FROM deferrals WHERE record_id = $1",
                                &[&id.as_str()],
                            )
                            .await?;
                        let o = if outcome == ReceiptOutcome::Deferred {
                            "deferred"
                        } else {
                            "still_rejected"
                        };
                        summary.add(o);
                        note(
                            client,
                            r.id,
                            None,
                            &format!("{o}: {}", reason.unwrap_or_default()),
                        )
                        .await?;
                    }
                    None => summary.add("still_rejected"),
                }
            }
        }
    }
    audit::append(
        &*client,
        actor,
        audit::actions::REJECTS_REPLAY,
        serde_json::json!({"filter": filter, "outcomes": summary.outcomes}),
    )
    .await?;
    Ok(summary)
}

async fn note(
    client: &Client,
    id: i64,
    replayed_at: Option<DateTime<Utc>>,
    outcome: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE rejects SET replayed_at = coalesce($2, replayed_at), replay_outcome = $3 WHERE id = $1",
            &[&id, &replayed_at, &outcome],
        )
        .await?;
    Ok(())
}
