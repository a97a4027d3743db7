//! Decisions: a value, absent, escalate, wrong exam; blind double keying.

use std::sync::Arc;

use chrono::NaiveDate;
use record::rules::Seen;
use record::{Field, FieldStatus};
use serde::Serialize;
use tokio_postgres::Client;

use super::{Decision, ReviewConfig, ReviewError};
use crate::audit;
use crate::templates::Catalog;

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

/// Wrong patient / not this exam, on the pending item `(record = $1, field = $2)` by `$3`, with
/// reason `$4`: the record's patient is cleared (new revision), its `patient_id` measurement
/// turns invalid with the reason (history kept), and `patient_id` gets a pending item
/// (`wrong_exam`) whose blind entries, if any, are void. Audited.
const WRONG_EXAM: &str = "
WITH item AS (
    SELECT q.record_id FROM review_queue q JOIN records r USING (record_id)
    WHERE q.record_id = $1 AND q.field = $2 AND q.resolved_at IS NULL AND r.superseded_by IS NULL),
was_pending AS (
    SELECT 1 FROM review_queue q JOIN item USING (record_id)
    WHERE q.field = 'patient_id' AND q.resolved_at IS NULL),
patient_item AS (
    INSERT INTO review_queue (record_id, field, status, reason, decision, resolved_by)
    SELECT record_id, 'patient_id', 'wrong_exam', $4, 'wrong_exam', $3 FROM item
    ON CONFLICT (record_id, field) DO UPDATE SET status = 'wrong_exam', reason = $4,
        resolved_at = NULL, decision = 'wrong_exam', resolved_by = $3, value = NULL
    RETURNING record_id),
void AS (
    DELETE FROM review_entries e USING item
    WHERE e.record_id = item.record_id AND e.field = 'patient_id'
    RETURNING 1),
before AS (
    SELECT m.value FROM measurements m JOIN item USING (record_id) WHERE m.field = 'patient_id'),
hist AS (
    INSERT INTO measurement_history (record_id, field, revision, value, number, status, reason, changed_by)
    SELECT m.record_id, m.field, r.revision, m.value, m.number, m.status, m.reason, $3
    FROM measurements m JOIN item USING (record_id) JOIN records r USING (record_id)
    WHERE m.field = 'patient_id'
    RETURNING 1),
meas AS (
    UPDATE measurements m SET value = NULL, number = NULL, status = 'invalid', reason = $4,
        reviewed_by = $3, reviewed_at = now()
    FROM item WHERE m.record_id = item.record_id AND m.field = 'patient_id'
    RETURNING 1),
rec AS (
    UPDATE records r SET revision = r.revision + 1, patient_id = NULL,
        review_count = r.review_count + CASE WHEN EXISTS (SELECT 1 FROM was_pending) THEN 0 ELSE 1 END
    FROM item WHERE r.record_id = item.record_id
    RETURNING r.revision),
aud AS (
    INSERT INTO audit (actor, action, detail)
    SELECT $3, $5, jsonb_build_object('record', $1::text, 'field', $2::text,
        'before', (SELECT value FROM before), 'after', NULL, 'decision', 'wrong_exam', 'reason', $4::text)
    FROM item RETURNING 1)
SELECT (SELECT revision FROM rec), (SELECT count(*) FROM patient_item), (SELECT count(*) FROM void),
    (SELECT count(*) FROM hist), (SELECT count(*) FROM meas), (SELECT count(*) FROM aud)";

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
    if *decision == Decision::WrongExam {
        let reason = format!("wrong patient / not this exam, per {actor}");
        let row = client
            .query_one(
                WRONG_EXAM,
                &[
                    &record,
                    &field,
                    &actor,
                    &reason,
                    &audit::actions::REVIEW_RESOLVE,
                ],
            )
            .await?;
        return match row.get::<_, Option<i32>>(0) {
            Some(revision) => Ok(Resolved {
                revision,
                status: "wrong_exam".into(),
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
    let t = versions
        .get_stored(&template, version)
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
        Decision::Escalate | Decision::WrongExam => unreachable!("handled above"),
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
