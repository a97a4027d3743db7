//! The queue: pending items in clinical order, and what a reviewer needs around one.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use super::{ReviewConfig, PRIORITY};
use crate::audit;

/// One pending item, as a reviewer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Record id.
    pub record_id: String,
    /// Field.
    pub field: String,
    /// Why it is here (`unreadable`, `invalid`, `clock_suspect`).
    pub status: String,
    /// What the reader read.
    pub raw: Option<String>,
    /// The reason for the flag.
    pub reason: Option<String>,
    /// The reader's confidence.
    pub confidence: Option<f32>,
    /// Device.
    pub device_id: String,
    /// Template and version.
    pub template: String,
    /// Firmware.
    pub firmware: String,
    /// Patient, when known.
    pub patient_id: Option<String>,
    /// Exam date, when known.
    pub exam_date: Option<String>,
    /// The field's crop (PNG, base64), when the agent sent one.
    pub crop_png_base64: Option<String>,
    /// The export around the field (PNG, base64), when the agent sent it (schema v2).
    pub context_png_base64: Option<String>,
    /// The field's box in the context crop: `[x, y, width, height]` pixels.
    pub context_box: Option<Vec<i32>>,
    /// The context crop's width and height.
    pub context_size: Option<(u32, u32)>,
    /// Escalated by someone before.
    pub escalated: bool,
    /// Keyed blind by two reviewers: the reader's guess (`raw`, `confidence`) is withheld.
    pub blind: bool,
    /// Blind entries made so far (by others: an item a reviewer keyed leaves their queue).
    pub entries: i64,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
}

/// Which pending items to read.
enum Selection<'a> {
    /// `limit` items after the first `offset`, in clinical order.
    Page { limit: i64, offset: i64 },
    /// One item.
    One { record: &'a str, field: &'a str },
}

/// Up to `limit` pending items after the first `offset`, in clinical order, leaving out those
/// `actor` keyed blind already (audited as `actor`).
pub async fn pending(
    client: &Client,
    config: &ReviewConfig,
    actor: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<Item>, tokio_postgres::Error> {
    let page = Selection::Page {
        limit: limit.clamp(1, 1000),
        offset: offset.max(0),
    };
    select(client, config, actor, page).await
}

/// The pending item `(record, field)`, unless `actor` keyed it blind already (audited).
pub async fn item(
    client: &Client,
    config: &ReviewConfig,
    actor: &str,
    record: &str,
    field: &str,
) -> Result<Option<Item>, tokio_postgres::Error> {
    let one = Selection::One { record, field };
    Ok(select(client, config, actor, one).await?.into_iter().next())
}

async fn select(
    client: &Client,
    config: &ReviewConfig,
    actor: &str,
    which: Selection<'_>,
) -> Result<Vec<Item>, tokio_postgres::Error> {
    let (limit, offset, one) = match which {
        Selection::Page { limit, offset } => (limit, offset, None),
        Selection::One { record, field } => (1_i64, 0_i64, Some([record, field])),
    };
    // A separate statement per selection, so the page keeps its plan on the priority index.
    let only = if one.is_some() {
        "AND q.record_id = $4 AND q.field = $5"
    } else {
        ""
    };
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&limit, &actor, &offset];
    if let Some([record, field]) = &one {
        params.extend([record as &(dyn tokio_postgres::types::ToSql + Sync), field]);
    }
    let rows = client
        .query(
            &format!(
                // The page of queue rows first (the priority index, no join), then the rest
                // of each item for those rows only.
                "WITH page AS ( \
                     SELECT q.record_id, q.field FROM review_queue q \
                     WHERE q.resolved_at IS NULL \
                       {only} \
                       AND NOT EXISTS (SELECT 1 FROM records x \
                           WHERE x.record_id = q.record_id AND x.superseded_by IS NOT NULL) \
                       AND NOT EXISTS (SELECT 1 FROM review_entries e \
                           WHERE e.record_id = q.record_id AND e.field = q.field AND e.reviewer = $2) \
                     ORDER BY {PRIORITY}, q.queued_at, q.record_id, q.field LIMIT $1 OFFSET $3) \
                 SELECT q.record_id, q.field, q.status, q.raw, q.reason, m.confidence, r.device_id, \
                        r.template || ' v' || r.template_version, r.firmware, r.patient_id, \
                        to_char(r.exam_date, 'YYYY-MM-DD'), q.crop_png, q.decision = 'escalate', q.queued_at, \
                        (SELECT count(*) FROM review_entries e WHERE e.record_id = q.record_id AND e.field = q.field), \
                        q.context_png, q.context_box \
                 FROM page JOIN review_queue q USING (record_id, field) JOIN records r USING (record_id) \
                 LEFT JOIN measurements m ON m.record_id = q.record_id AND m.field = q.field \
                 ORDER BY {PRIORITY}, q.queued_at, q.record_id, q.field"
            ),
            &params,
        )
        .await?;
    let items: Vec<Item> = rows
        .iter()
        .map(|r| {
            let field: String = r.get(1);
            let blind = config.double_keyed(&field);
            Item {
                record_id: r.get(0),
                field,
                status: r.get(2),
                raw: if blind { None } else { r.get(3) },
                reason: r.get(4),
                confidence: if blind { None } else { r.get(5) },
                device_id: r.get(6),
                template: r.get(7),
                firmware: r.get(8),
                patient_id: r.get(9),
                exam_date: r.get(10),
                crop_png_base64: r
                    .get::<_, Option<Vec<u8>>>(11)
                    .map(|png| base64::engine::general_purpose::STANDARD.encode(png)),
                escalated: r.get::<_, Option<bool>>(12).unwrap_or(false),
                queued_at: r.get(13),
                blind,
                entries: r.get(14),
                context_size: r
                    .get::<_, Option<&[u8]>>(15)
                    .and_then(crate::validate::fields::png_size),
                context_png_base64: r
                    .get::<_, Option<&[u8]>>(15)
                    .map(|png| base64::engine::general_purpose::STANDARD.encode(png)),
                context_box: r.get(16),
            }
        })
        .collect();
    audit::append(
        client,
        actor,
        audit::actions::REVIEW_READ,
        serde_json::json!({"count": items.len()}),
    )
    .await?;
    Ok(items)
}

/// What a reviewer needs around one item: the exam's other fields, and this patient's values of
/// the same field in earlier exams (a plausibility cue).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Context {
    /// The record's other fields: name, value, status, by name.
    pub fields: Vec<(String, Option<String>, String)>,
    /// Earlier exams of the same patient: exam date, value, status (newest first, at most 5).
    pub earlier: Vec<(Option<String>, Option<String>, String)>,
}

/// The [`Context`] of the pending item `(record, field)` (audited as `actor`: it is patient data).
pub async fn context(
    client: &Client,
    actor: &str,
    record: &str,
    field: &str,
) -> Result<Context, tokio_postgres::Error> {
    let fields = client
        .query(
            "SELECT m.field, m.value, m.status FROM measurements m \
             WHERE m.record_id = $1 AND m.field <> $2 ORDER BY m.field",
            &[&record, &field],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let earlier = client
        .query(
            "SELECT to_char(o.exam_date, 'YYYY-MM-DD'), m.value, m.status \
             FROM records r JOIN records o ON o.patient_id = r.patient_id AND o.record_id <> r.record_id \
                 AND o.superseded_by IS NULL AND (o.exam_date < r.exam_date OR r.exam_date IS NULL) \
             JOIN measurements m ON m.record_id = o.record_id AND m.field = $2 \
             WHERE r.record_id = $1 AND r.patient_id IS NOT NULL \
             ORDER BY o.exam_date DESC NULLS LAST LIMIT 5",
            &[&record, &field],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    audit::append(
        client,
        actor,
        audit::actions::REVIEW_READ,
        serde_json::json!({"record": record, "field": field, "context": true}),
    )
    .await?;
    Ok(Context { fields, earlier })
}
