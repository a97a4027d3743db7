//! review: people resolve the fields the reader flagged.
//!
//! Every field stored `unreadable` or `invalid`, and every record whose clocks look wrong, has a
//! row in `review_queue`. A reviewer ([`crate::users::Permission::ResolveReviews`]) takes the
//! pending items in clinical order ([`PRIORITY`]: identity first, then the values that drive
//! surgery and lens choice, then the rest) and decides each one ([`Decision`]):
//!
//! - a value, typed as the export prints it: it goes through the same grammar, range and
//!   cross-field rules as the agent's reading ([`record::FieldSpec::check_printed`], the
//!   template's rules, the exact template version the record was read with); a value that fails
//!   is refused with the reason, and nothing changes;
//! - *absent on the export*;
//! - *escalate*: the item stays pending, marked, for someone who can tell.
//!
//! A decision is one SQL statement, so it is atomic on the shared connection: the review row
//! is resolved (once: a second decision on the same item is a conflict), the measurement's old
//! value goes to `measurement_history`, the measurement takes the reviewed value with status
//! `verified` (same as the reader's) or `corrected`, the record becomes a new revision (its
//! header columns follow a reviewed `patient_id` / `exam_date` / `exam_time`), and the audit
//! trail gets who, when, before → after.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use record::rules::Seen;
use record::{Field, FieldStatus};
use serde::Serialize;
use tokio_postgres::Client;

use crate::audit;
use crate::templates::Catalog;

/// Field order of the queue: lower first. Identity, then surgical and lens values.
pub const PRIORITY: &str = "CASE \
    WHEN q.field IN ('patient_id', 'eye', 'exam_date') THEN 0 \
    WHEN q.field ~ '(^|_)(k1|k2|km|kmax|al|acd|cct|iop|iopc|apex_pachy|thinnest_pachy|lt)$' THEN 1 \
    ELSE 2 END";

/// `[review]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Fields keyed blind by two reviewers (exact names, or `*_suffix`).
    pub double_key: Vec<String>,
}

impl ReviewConfig {
    /// Whether `field` is keyed blind by two reviewers.
    pub fn double_keyed(&self, field: &str) -> bool {
        self.double_key.iter().any(|p| match p.strip_prefix('*') {
            Some(suffix) => field.ends_with(suffix),
            None => p == field,
        })
    }
}

/// What a reviewer decided for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The value as the export prints it.
    Value(String),
    /// The export shows no value for this field.
    Absent,
    /// Cannot tell: leave it pending for someone else.
    Escalate,
}

/// Why a decision was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// This reviewer already keyed this double-keyed item.
    #[error("you already keyed {field} of record {record}: another reviewer keys it too")]
    AlreadyKeyed {
        /// Record.
        record: String,
        /// Field.
        field: String,
    },
    /// No pending item for that record and field.
    #[error("no pending review item for record {record} field {field}")]
    NotPending {
        /// Record.
        record: String,
        /// Field.
        field: String,
    },
    /// The value fails the field's checks.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The record's template version is not known to this hub.
    #[error("template {0} is not known to this hub")]
    Template(String),
    /// Database.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

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
    /// Escalated by someone before.
    pub escalated: bool,
    /// Keyed blind by two reviewers: the reader's guess (`raw`, `confidence`) is withheld.
    pub blind: bool,
    /// Blind entries made so far (by others: an item a reviewer keyed leaves their queue).
    pub entries: i64,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
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
    let rows = client
        .query(
            &format!(
                // The page of queue rows first (the priority index, no join), then the rest
                // of each item for those rows only.
                "WITH page AS ( \
                     SELECT q.record_id, q.field FROM review_queue q \
                     WHERE q.resolved_at IS NULL \
                       AND NOT EXISTS (SELECT 1 FROM records x \
                           WHERE x.record_id = q.record_id AND x.superseded_by IS NOT NULL) \
                       AND NOT EXISTS (SELECT 1 FROM review_entries e \
                           WHERE e.record_id = q.record_id AND e.field = q.field AND e.reviewer = $2) \
                     ORDER BY {PRIORITY}, q.queued_at, q.record_id, q.field LIMIT $1 OFFSET $3) \
                 SELECT q.record_id, q.field, q.status, q.raw, q.reason, m.confidence, r.device_id, \
                        r.template || ' v' || r.template_version, r.firmware, r.patient_id, \
                        to_char(r.exam_date, 'YYYY-MM-DD'), q.crop_png, q.decision = 'escalate', q.queued_at, \
                        (SELECT count(*) FROM review_entries e WHERE e.record_id = q.record_id AND e.field = q.field) \
                 FROM page JOIN review_queue q USING (record_id, field) JOIN records r USING (record_id) \
                 LEFT JOIN measurements m ON m.record_id = q.record_id AND m.field = q.field \
                 ORDER BY {PRIORITY}, q.queued_at, q.record_id, q.field"
            ),
            &[&limit.clamp(1, 1000), &actor, &offset.max(0)],
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

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    /// The record's revision now.
    pub revision: i32,
    /// The measurement's status now (`verified`, `corrected`, `absent`), or `escalated`.
    pub status: String,
    /// The normalised value stored.
    pub value: Option<String>,
}

const RESOLVE: &str = "
WITH item AS (
    UPDATE review_queue SET resolved_at = now(), resolved_by = $6, decision = $5, value = $3
    WHERE record_id = $1 AND field = $2 AND resolved_at IS NULL
    RETURNING record_id, field),
before AS (
    SELECT m.value, m.status FROM measurements m JOIN item USING (record_id, field)),
hist AS (
    INSERT INTO measurement_history (record_id, field, revision, value, number, status, reason, changed_by)
    SELECT m.record_id, m.field, r.revision, m.value, m.number, m.status, m.reason, $6
    FROM measurements m JOIN item USING (record_id, field) JOIN records r USING (record_id)
    RETURNING 1),
meas AS (
    UPDATE measurements m SET value = $3, number = $4, status = $5, reason = 'reviewed by ' || $6,
        reviewed_by = $6, reviewed_at = now()
    FROM item WHERE m.record_id = item.record_id AND m.field = item.field
    RETURNING 1),
rec AS (
    UPDATE records r SET revision = r.revision + 1,
        review_count = greatest(r.review_count - 1, 0),
        patient_id = CASE WHEN $2 = 'patient_id' THEN $3 ELSE r.patient_id END,
        exam_date = CASE WHEN $2 = 'exam_date' THEN $7 ELSE r.exam_date END,
        exam_time = CASE WHEN $2 = 'exam_time' THEN $3 ELSE r.exam_time END
    FROM item WHERE r.record_id = item.record_id
    RETURNING r.revision),
aud AS (
    INSERT INTO audit (actor, action, detail)
    SELECT $6, $8, jsonb_build_object('record', $1::text, 'field', $2::text,
        'before', (SELECT value FROM before), 'before_status', (SELECT status FROM before),
        'after', $3::text, 'decision', $5::text)
    FROM item RETURNING 1)
SELECT (SELECT revision FROM rec), (SELECT count(*) FROM hist), (SELECT count(*) FROM meas),
    (SELECT count(*) FROM aud)";

const ESCALATE: &str = "
WITH item AS (
    UPDATE review_queue SET decision = 'escalate', resolved_by = $3
    WHERE record_id = $1 AND field = $2 AND resolved_at IS NULL
    RETURNING record_id),
aud AS (
    INSERT INTO audit (actor, action, detail)
    SELECT $3, $4, jsonb_build_object('record', $1::text, 'field', $2::text, 'decision', 'escalate')
    FROM item RETURNING 1)
SELECT (SELECT revision FROM records WHERE record_id = $1 AND EXISTS (SELECT 1 FROM item)), (SELECT count(*) FROM aud)";

/// Applies `decision` to the pending item `(record, field)` as `actor`.
pub async fn resolve(
    client: &Client,
    catalog: &Arc<Catalog>,
    config: &ReviewConfig,
    actor: &str,
    record: &str,
    field: &str,
    decision: &Decision,
) -> Result<Resolved, ReviewError> {
    let not_pending = || ReviewError::NotPending {
        record: record.to_owned(),
        field: field.to_owned(),
    };
    if *decision == Decision::Escalate {
        let row = client
            .query_one(
                ESCALATE,
                &[&record, &field, &actor, &audit::actions::REVIEW_RESOLVE],
            )
            .await?;
        let revision: Option<i32> = row.get(0);
        return match revision {
            Some(revision) => Ok(Resolved {
                revision,
                status: "escalated".into(),
                value: None,
            }),
            None => Err(not_pending()),
        };
    }
    let Some(row) = client
        .query_opt(
            "SELECT r.template, r.template_version, r.payload -> 'fields', m.value, q.raw \
             FROM review_queue q JOIN records r USING (record_id) \
             LEFT JOIN measurements m ON m.record_id = q.record_id AND m.field = q.field \
             WHERE q.record_id = $1 AND q.field = $2 AND q.resolved_at IS NULL",
            &[&record, &field],
        )
        .await?
    else {
        return Err(not_pending());
    };
    let (template, version): (String, i32) = (row.get(0), row.get(1));
    let fields: Vec<Field> = serde_json::from_value(row.get(2)).unwrap_or_default();
    let (value_read, raw): (Option<String>, Option<String>) = (row.get(3), row.get(4));
    let versions = catalog.snapshot();
    let t = u32::try_from(version)
        .ok()
        .and_then(|v| versions.get(&template, v))
        .ok_or_else(|| ReviewError::Template(format!("{template} v{version}")))?;
    let invalid = |reason: String| ReviewError::Invalid {
        field: field.to_owned(),
        reason,
    };
    let (value, number, status) = match decision {
        Decision::Value(text) => {
            let Some(spec) = t.field(field).map(|f| &f.spec) else {
                // A record-level item (clock_suspect on captured_at): confirming it is all.
                return apply(client, actor, record, field, None, None, "verified", None).await;
            };
            let checked = spec.check_printed(text.trim());
            if checked.status != FieldStatus::Ok {
                return Err(invalid(
                    checked
                        .reason
                        .unwrap_or_else(|| format!("{text:?} is not a valid {field}")),
                ));
            }
            // The cross-field rules, with the reviewed value in place.
            let mut after = fields;
            if let Some(f) = after.iter_mut().find(|f| f.name == field) {
                f.status = FieldStatus::Ok;
                f.number = checked.number;
                f.value = checked.value.clone();
            }
            let seen = Seen::of_fields(&after);
            if let Some(v) = t.rules.iter().find_map(|rule| rule.check(&seen)) {
                return Err(invalid(format!("breaks a rule: {}", v.reason)));
            }
            // What the reader read: its value, or (flagged) its raw text, normalised.
            let read = value_read.or_else(|| raw.and_then(|r| spec.check_printed(&r).value));
            let status = if checked.value == read {
                "verified"
            } else {
                "corrected"
            };
            (checked.value, checked.number, status)
        }
        Decision::Absent => (None, None, "absent"),
        Decision::Escalate => unreachable!("handled above"),
    };
    let date = value
        .as_deref()
        .filter(|_| field == "exam_date")
        .and_then(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok());
    if config.double_keyed(field) {
        match key_blind(client, actor, record, field, &value).await? {
            Keyed::Decided => {}
            Keyed::Waiting(status) => {
                let revision: i32 = client
                    .query_one(
                        "SELECT revision FROM records WHERE record_id = $1",
                        &[&record],
                    )
                    .await?
                    .get(0);
                return Ok(Resolved {
                    revision,
                    status: status.into(),
                    value: None,
                });
            }
            Keyed::NoMajority => {
                return Box::pin(resolve(
                    client,
                    catalog,
                    config,
                    actor,
                    record,
                    field,
                    &Decision::Escalate,
                ))
                .await;
            }
        }
    }
    apply(client, actor, record, field, value, number, status, date).await
}

/// Where a blind entry leaves its item.
enum Keyed {
    /// The entries agree with this one: apply it.
    Decided,
    /// More entries are needed (`awaiting_second_key`, `mismatch_awaiting_third_key`).
    Waiting(&'static str),
    /// Three or more entries and this one agrees with none: escalate.
    NoMajority,
}

/// Records `actor`'s blind entry `value` (normalised; `None` = absent) for `(record, field)`
/// and decides: a second entry equal to the first, or a later one equal to any earlier one,
/// settles the item.
async fn key_blind(
    client: &Client,
    actor: &str,
    record: &str,
    field: &str,
    value: &Option<String>,
) -> Result<Keyed, ReviewError> {
    let inserted = client
        .execute(
            "INSERT INTO review_entries (record_id, field, reviewer, value) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM review_queue \
                 WHERE record_id = $1 AND field = $2 AND resolved_at IS NULL) \
             ON CONFLICT (record_id, field, reviewer) DO NOTHING",
            &[&record, &field, &actor, value],
        )
        .await?;
    if inserted == 0 {
        let keyed = client
            .query_opt(
                "SELECT 1 FROM review_entries WHERE record_id = $1 AND field = $2 AND reviewer = $3",
                &[&record, &field, &actor],
            )
            .await?;
        return Err(match keyed {
            Some(_) => ReviewError::AlreadyKeyed {
                record: record.to_owned(),
                field: field.to_owned(),
            },
            None => ReviewError::NotPending {
                record: record.to_owned(),
                field: field.to_owned(),
            },
        });
    }
    audit::append(
        client,
        actor,
        audit::actions::REVIEW_KEY,
        serde_json::json!({"record": record, "field": field, "value": value}),
    )
    .await?;
    let earlier: Vec<Option<String>> = client
        .query(
            "SELECT value FROM review_entries WHERE record_id = $1 AND field = $2 AND reviewer <> $3 \
             ORDER BY entered_at, reviewer",
            &[&record, &field, &actor],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(match earlier.len() {
        0 => Keyed::Waiting("awaiting_second_key"),
        _ if earlier.contains(value) => Keyed::Decided,
        1 => Keyed::Waiting("mismatch_awaiting_third_key"),
        _ => Keyed::NoMajority,
    })
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    client: &Client,
    actor: &str,
    record: &str,
    field: &str,
    value: Option<String>,
    number: Option<f64>,
    status: &str,
    date: Option<NaiveDate>,
) -> Result<Resolved, ReviewError> {
    let row = client
        .query_one(
            RESOLVE,
            &[
                &record,
                &field,
                &value,
                &number,
                &status,
                &actor,
                &date,
                &audit::actions::REVIEW_RESOLVE,
            ],
        )
        .await?;
    let revision: Option<i32> = row.get(0);
    match revision {
        Some(revision) => Ok(Resolved {
            revision,
            status: status.to_owned(),
            value,
        }),
        None => Err(ReviewError::NotPending {
            record: record.to_owned(),
            field: field.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_keyed_fields_match_by_name_or_suffix() {
        let c = ReviewConfig {
            double_key: vec!["patient_id".into(), "*_k1".into()],
        };
        assert!(c.double_keyed("patient_id"));
        assert!(c.double_keyed("r_k1") && c.double_keyed("l_k1"));
        assert!(!c.double_keyed("k1") && !c.double_keyed("r_k1_axis") && !c.double_keyed("pd"));
        let default = crate::config::HubConfig::default().review;
        for f in ["patient_id", "al", "r_al", "k1", "k2", "l_k2"] {
            assert!(default.double_keyed(f), "{f}");
        }
        assert!(!default.double_keyed("exam_date"));
    }
}
