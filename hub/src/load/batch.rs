//! One batch, one transaction. Tables and columns are those of `hub/migrations/`.
//!
//! 1. Look up the batch's devices: a record from an unregistered or revoked device, or with a
//!    device type other than the registered one, is deferred (the device may be registered
//!    later; the agent keeps it).
//! 2. `INSERT INTO records ... SELECT FROM UNNEST(...) ON CONFLICT (record_id) DO NOTHING
//!    RETURNING record_id`: the returned ids are new (Stored), the others already were there
//!    (Duplicate). A second hub inserting the same id concurrently waits for the first's
//!    COMMIT and then skips it, so each record is stored once.
//! 3. `COPY measurements FROM STDIN BINARY`, the review queue and the blind checks (one per
//!    sample crop: quality sampling), for new records only (a record whose clocks look wrong
//!    gets a `captured_at` review item with the reason). A new record for an export already
//!    stored under another record id (a re-read under a new template version) supersedes it:
//!    `supersedes` / `superseded_by` link the two.
//! 4. Rejects (kept whole) and deferrals (noted, one row per record id, counted); a stored
//!    record's deferral row goes.
//! 5. COMMIT. Only then are the [`Outcome`]s returned.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use record::topic::{results_topic, DeviceTopic};
use record::{DeviceId, Receipt, ReceiptOutcome, Record};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::validate::{Checked, Reject, Valid};

/// What to tell the device (and the live listeners) about one message, after COMMIT.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Whose receipts topic the receipt goes to.
    pub device: Option<DeviceId>,
    /// The receipt, when the record id is known.
    pub receipt: Option<Receipt>,
    /// For a newly stored record: its results topic and payload.
    pub result: Option<(String, Bytes)>,
}

/// The batch's prepared statements (prepared once per connection).
pub struct Statements {
    devices: Statement,
    records: Statement,
    review: Statement,
    blind: Statement,
    rejects: Statement,
    deferrals: Statement,
    undefer: Statement,
    supersede: Statement,
}

const INSERT_RECORDS: &str = "
INSERT INTO records (record_id, device_id, device_type, template, template_version, firmware,
    patient_id, exam_date, exam_time, source_file, image_sha256, model_version, agent_version,
    captured_at, recognized_at, received_at, review_count, payload, clock_suspect)
SELECT r.record_id, r.device_id, r.device_type, r.template, r.template_version, r.firmware,
    r.patient_id, r.exam_date, r.exam_time, r.source_file, r.image_sha256, r.model_version,
    r.agent_version, r.captured_at, r.recognized_at, r.received_at, r.review_count, r.payload::jsonb,
    r.clock_suspect
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::text[], $7::text[],
    $8::date[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
    $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::int4[], $18::text[],
    $19::bool[])
  AS r(record_id, device_id, device_type, template, template_version, firmware, patient_id,
    exam_date, exam_time, source_file, image_sha256, model_version, agent_version, captured_at,
    recognized_at, received_at, review_count, payload, clock_suspect)
ON CONFLICT (record_id) DO NOTHING
RETURNING record_id";

const INSERT_REVIEW: &str = "
INSERT INTO review_queue (record_id, field, status, raw, reason, crop_png, context_png, context_box)
SELECT r, f, s, w, why, crop, ctx, box::int4[]
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bytea[], $8::text[])
    AS u(r, f, s, w, why, crop, ctx, box)
ON CONFLICT DO NOTHING";

const INSERT_BLIND_CHECKS: &str = "
INSERT INTO blind_checks (record_id, field, template, template_version, read_value, crop_png)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::bytea[])
ON CONFLICT DO NOTHING";

const INSERT_REJECTS: &str = "
INSERT INTO rejects (received_at, device_id, record_id, topic, code, reason, payload_size, payload)
SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::text[], $7::int4[], $8::bytea[])";

const INSERT_DEFERRALS: &str = "
INSERT INTO deferrals (record_id, device_id, code, reason, payload_size, first_at, last_at)
SELECT d.record_id, d.device_id, d.code, d.reason, d.size, d.at, d.at
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::timestamptz[])
  AS d(record_id, device_id, code, reason, size, at)
ON CONFLICT (record_id) DO UPDATE SET code = EXCLUDED.code, reason = EXCLUDED.reason,
    last_at = greatest(deferrals.last_at, EXCLUDED.last_at), attempts = deferrals.attempts + 1";

const DELETE_DEFERRALS: &str = "DELETE FROM deferrals WHERE record_id = ANY($1)";

/// Links each new record to an earlier record of the same export (same device and image) that
/// is not superseded yet.
const SUPERSEDE: &str = "
WITH n AS (SELECT record_id, device_id, image_sha256 FROM records WHERE record_id = ANY($1)),
old AS (
    UPDATE records o SET superseded_by = n.record_id FROM n
    WHERE o.device_id = n.device_id AND o.image_sha256 = n.image_sha256
      AND o.record_id <> ALL($1) AND o.superseded_by IS NULL
    RETURNING o.record_id AS old_id, n.record_id AS new_id)
UPDATE records r SET supersedes = old.old_id FROM old WHERE r.record_id = old.new_id";

const COPY_MEASUREMENTS: &str = "COPY measurements (record_id, field, value, number, unit, \
    status, confidence, reason) FROM STDIN BINARY";

impl Statements {
    /// Prepares the statements on `client`.
    pub async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            devices: client
                .prepare(
                    "SELECT device_id, device_type FROM devices \
                     WHERE device_id = ANY($1) AND revoked_at IS NULL",
                )
                .await?,
            records: client.prepare(INSERT_RECORDS).await?,
            review: client.prepare(INSERT_REVIEW).await?,
            blind: client.prepare(INSERT_BLIND_CHECKS).await?,
            rejects: client.prepare(INSERT_REJECTS).await?,
            deferrals: client.prepare(INSERT_DEFERRALS).await?,
            undefer: client.prepare(DELETE_DEFERRALS).await?,
            supersede: client.prepare(SUPERSEDE).await?,
        })
    }
}

fn clean(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// Turns a valid record the database side refuses into a reject.
pub fn reject_valid(v: &Valid, code: &'static str, reason: String, cap: usize) -> Reject {
    let r = &v.record;
    Reject {
        device: Some(r.device_id.clone()),
        record_id: Some(r.record_id.clone()),
        topic: DeviceTopic::Records.topic(&r.device_id),
        defer: crate::validate::is_deferred(code),
        code,
        reason,
        payload: v.encoded.slice(..v.encoded.len().min(cap)),
        payload_size: v.encoded.len(),
        received_at: v.received_at,
    }
}

/// Writes one batch in one transaction and returns each message's outcome, in batch order.
pub async fn write(
    client: &mut Client,
    st: &Statements,
    items: &[Checked],
    reject_cap: usize,
) -> Result<Vec<Outcome>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let ids: Vec<&str> = items
        .iter()
        .filter_map(|c| match c {
            Checked::Valid(v) => Some(v.record.device_id.as_str()),
            Checked::Rejected(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let registered: HashMap<String, String> = if ids.is_empty() {
        HashMap::new()
    } else {
        tx.query(&st.devices, &[&ids])
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    // Records to insert (first occurrence of each id) and rejects, keeping batch order.
    let mut rejects: Vec<Reject> = Vec::new();
    let mut order: Vec<Slot> = Vec::with_capacity(items.len());
    let mut valid: Vec<&Valid> = Vec::new();
    let mut seen = HashSet::new();
    for c in items {
        match c {
            Checked::Rejected(r) => {
                order.push(Slot::Reject(rejects.len()));
                rejects.push(r.clone());
            }
            Checked::Valid(v) => {
                let r = &v.record;
                let why = match registered.get(r.device_id.as_str()) {
                    None => Some((
                        "unknown_device",
                        format!("device {} is not registered (or revoked)", r.device_id),
                    )),
                    Some(t) if *t != r.device_type => Some((
                        "device_type",
                        format!(
                            "device {} is registered as {t}, record says {}",
                            r.device_id, r.device_type
                        ),
                    )),
                    Some(_) => None,
                };
                if let Some((code, reason)) = why {
                    order.push(Slot::Reject(rejects.len()));
                    rejects.push(reject_valid(v, code, reason, reject_cap));
                } else if seen.insert(r.record_id.as_str()) {
                    order.push(Slot::Record(valid.len()));
                    valid.push(v);
                } else {
                    order.push(Slot::Repeat(v));
                }
            }
        }
    }
    let new: HashSet<String> = insert_records(&tx, st, &valid).await?.into_iter().collect();
    let fresh: Vec<&Valid> = valid
        .iter()
        .copied()
        .filter(|v| new.contains(v.record.record_id.as_str()))
        .collect();
    let fresh_records: Vec<&Record> = fresh.iter().map(|v| &v.record).collect();
    copy_measurements(&tx, &fresh_records).await?;
    insert_review(&tx, st, &fresh).await?;
    insert_blind_checks(&tx, st, &fresh).await?;
    if !fresh.is_empty() {
        let ids: Vec<&str> = fresh.iter().map(|v| v.record.record_id.as_str()).collect();
        tx.execute(&st.supersede, &[&ids]).await?;
    }
    if !valid.is_empty() {
        let ids: Vec<&str> = valid.iter().map(|v| v.record.record_id.as_str()).collect();
        tx.execute(&st.undefer, &[&ids]).await?;
    }
    let (deferred, refused): (Vec<&Reject>, Vec<&Reject>) = rejects.iter().partition(|r| r.defer);
    insert_rejects(&tx, st, &refused).await?;
    insert_deferrals(&tx, st, &deferred).await?;
    tx.commit().await?;

    Ok(order
        .into_iter()
        .map(|slot| match slot {
            Slot::Record(i) => {
                let v = valid[i];
                let stored = new.contains(v.record.record_id.as_str());
                outcome_of(v, stored)
            }
            Slot::Repeat(v) => outcome_of(v, false),
            Slot::Reject(i) => {
                let r = &rejects[i];
                Outcome {
                    device: r.device.clone(),
                    receipt: r.record_id.clone().map(|record_id| Receipt {
                        record_id,
                        outcome: if r.defer {
                            ReceiptOutcome::Deferred
                        } else {
                            ReceiptOutcome::Rejected
                        },
                        reason: Some(format!("{}: {}", r.code, r.reason)),
                    }),
                    result: None,
                }
            }
        })
        .collect())
}

enum Slot<'a> {
    Record(usize),
    Repeat(&'a Valid),
    Reject(usize),
}

fn outcome_of(v: &Valid, stored: bool) -> Outcome {
    let r = &v.record;
    Outcome {
        device: Some(r.device_id.clone()),
        receipt: Some(Receipt {
            record_id: r.record_id.clone(),
            outcome: if stored {
                ReceiptOutcome::Stored
            } else {
                ReceiptOutcome::Duplicate
            },
            reason: None,
        }),
        result: stored.then(|| {
            (
                results_topic(&r.device_type, &r.device_id),
                v.encoded.clone(),
            )
        }),
    }
}

async fn insert_records(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    valid: &[&Valid],
) -> Result<Vec<String>, tokio_postgres::Error> {
    if valid.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&Valid) -> &str| valid.iter().map(|&v| f(v)).collect::<Vec<&str>>();
    let record_id = col(|v| v.record.record_id.as_str());
    let device_id = col(|v| v.record.device_id.as_str());
    let device_type = col(|v| &v.record.device_type);
    let template = col(|v| &v.record.template_id);
    let firmware = col(|v| &v.record.firmware);
    let source_file = col(|v| &v.record.source_file);
    let image = col(|v| &v.record.image_sha256);
    let model = col(|v| &v.record.model_version);
    let agent = col(|v| &v.record.agent_version);
    let payload = col(|v| &v.stored_json);
    let version: Vec<i32> = valid
        .iter()
        .map(|v| i32::try_from(v.record.template_version).unwrap_or(-1))
        .collect();
    let patient: Vec<Option<&str>> = valid
        .iter()
        .map(|v| v.record.patient_id.as_deref())
        .collect();
    let exam_time: Vec<Option<&str>> = valid
        .iter()
        .map(|v| v.record.exam_time.as_deref())
        .collect();
    let exam_date: Vec<Option<NaiveDate>> = valid
        .iter()
        .map(|v| v.record.exam_date.as_deref().and_then(|d| d.parse().ok()))
        .collect();
    let captured: Vec<DateTime<Utc>> = valid.iter().map(|v| v.record.captured_at).collect();
    let recognized: Vec<DateTime<Utc>> = valid.iter().map(|v| v.record.recognized_at).collect();
    let received: Vec<DateTime<Utc>> = valid.iter().map(|v| v.received_at).collect();
    let review: Vec<i32> = valid
        .iter()
        .map(|v| v.record.review_count() as i32 + i32::from(v.clock.is_some()))
        .collect();
    let clock: Vec<bool> = valid.iter().map(|v| v.clock.is_some()).collect();
    let params: [&(dyn ToSql + Sync); 19] = [
        &record_id,
        &device_id,
        &device_type,
        &template,
        &version,
        &firmware,
        &patient,
        &exam_date,
        &exam_time,
        &source_file,
        &image,
        &model,
        &agent,
        &captured,
        &recognized,
        &received,
        &review,
        &payload,
        &clock,
    ];
    let rows = tx.query(&st.records, &params).await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// COPYs the measurements of `records` into `measurements` inside `tx` (the load stage's bulk
/// path; `hub-bench` measures its ceiling with the same writer).
pub async fn copy_measurements(
    tx: &tokio_postgres::Transaction<'_>,
    records: &[&Record],
) -> Result<(), tokio_postgres::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(COPY_MEASUREMENTS).await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::FLOAT8,
        Type::TEXT,
        Type::TEXT,
        Type::FLOAT4,
        Type::TEXT,
    ];
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    for r in records {
        let id = r.record_id.as_str();
        for f in &r.fields {
            let status = f.status.as_str();
            writer
                .as_mut()
                .write(&[
                    &id,
                    &f.name,
                    &f.value,
                    &f.number,
                    &f.unit,
                    &status,
                    &f.confidence,
                    &f.reason,
                ])
                .await?;
        }
    }
    writer.finish().await?;
    Ok(())
}

async fn insert_review(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    fresh: &[&Valid],
) -> Result<(), tokio_postgres::Error> {
    let (mut ids, mut fields, mut status, mut raw, mut reason, mut crop) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    // The context crop and its box (as an array literal, cast in the statement).
    let (mut context, mut boxes): (Vec<Option<&[u8]>>, Vec<Option<String>>) = (vec![], vec![]);
    for v in fresh {
        for f in v.record.fields.iter().filter(|f| f.status.needs_review()) {
            ids.push(v.record.record_id.as_str());
            fields.push(f.name.as_str());
            status.push(f.status.as_str());
            raw.push(f.raw.as_deref());
            reason.push(f.reason.as_deref());
            crop.push(
                v.crops
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map(|(_, png)| png.as_slice()),
            );
            let ctx = v.contexts.iter().find(|(n, _, _)| *n == f.name);
            context.push(ctx.map(|(_, png, _)| png.as_slice()));
            boxes.push(ctx.map(|(_, _, [x, y, w, h])| format!("{{{x},{y},{w},{h}}}")));
        }
    }
    for v in fresh {
        if let Some(why) = &v.clock {
            ids.push(v.record.record_id.as_str());
            fields.push("captured_at");
            status.push("clock_suspect");
            raw.push(None);
            reason.push(Some(why.as_str()));
            crop.push(None);
            context.push(None);
            boxes.push(None);
        }
    }
    if !ids.is_empty() {
        tx.execute(
            &st.review,
            &[
                &ids, &fields, &status, &raw, &reason, &crop, &context, &boxes,
            ],
        )
        .await?;
    }
    Ok(())
}

/// One blind check per sample crop of a new record: the crop and the value read `ok` (the
/// validate stage made sure each names a field read `ok`, so it has a value).
async fn insert_blind_checks(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    fresh: &[&Valid],
) -> Result<(), tokio_postgres::Error> {
    let (mut ids, mut fields, mut template, mut version, mut read, mut crop) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for v in fresh {
        let r = &v.record;
        for (name, png) in &v.samples {
            let Some(value) = r.field(name).and_then(|f| f.value.as_deref()) else {
                continue;
            };
            ids.push(r.record_id.as_str());
            fields.push(name.as_str());
            template.push(r.template_id.as_str());
            version.push(i32::try_from(r.template_version).unwrap_or(-1));
            read.push(value);
            crop.push(png.as_slice());
        }
    }
    if !ids.is_empty() {
        tx.execute(
            &st.blind,
            &[&ids, &fields, &template, &version, &read, &crop],
        )
        .await?;
    }
    Ok(())
}

async fn insert_deferrals(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    deferred: &[&Reject],
) -> Result<(), tokio_postgres::Error> {
    // One row per record id; a deferral without an id cannot be answered, so it is a reject.
    let mut by_id: HashMap<&str, &Reject> = HashMap::new();
    for r in deferred {
        if let (Some(id), Some(_)) = (&r.record_id, &r.device) {
            by_id.insert(id.as_str(), r);
        }
    }
    if by_id.is_empty() {
        return Ok(());
    }
    let rows: Vec<&Reject> = by_id.into_values().collect();
    let id: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.record_id.as_ref().map(|x| x.as_str()))
        .collect();
    let device: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.device.as_ref().map(DeviceId::as_str))
        .collect();
    let code: Vec<&str> = rows.iter().map(|r| r.code).collect();
    let reason: Vec<String> = rows.iter().map(|r| clean(&r.reason)).collect();
    let size: Vec<i32> = rows
        .iter()
        .map(|r| i32::try_from(r.payload_size).unwrap_or(i32::MAX))
        .collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.received_at).collect();
    tx.execute(&st.deferrals, &[&id, &device, &code, &reason, &size, &at])
        .await?;
    Ok(())
}

async fn insert_rejects(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    rejects: &[&Reject],
) -> Result<(), tokio_postgres::Error> {
    if rejects.is_empty() {
        return Ok(());
    }
    let at: Vec<DateTime<Utc>> = rejects.iter().map(|r| r.received_at).collect();
    let device: Vec<Option<&str>> = rejects
        .iter()
        .map(|r| r.device.as_ref().map(DeviceId::as_str))
        .collect();
    let record: Vec<Option<&str>> = rejects
        .iter()
        .map(|r| r.record_id.as_ref().map(|x| x.as_str()))
        .collect();
    let topic: Vec<String> = rejects.iter().map(|r| clean(&r.topic)).collect();
    let code: Vec<&str> = rejects.iter().map(|r| r.code).collect();
    let reason: Vec<String> = rejects.iter().map(|r| clean(&r.reason)).collect();
    let size: Vec<i32> = rejects
        .iter()
        .map(|r| i32::try_from(r.payload_size).unwrap_or(i32::MAX))
        .collect();
    let payload: Vec<&[u8]> = rejects.iter().map(|r| r.payload.as_ref()).collect();
    tx.execute(
        &st.rejects,
        &[
            &at, &device, &record, &topic, &code, &reason, &size, &payload,
        ],
    )
    .await?;
    Ok(())
}
