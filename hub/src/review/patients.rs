//! Patients to match: exams stored without a patient (the chart number unreadable, absent on
//! the export, or disputed as the wrong patient). Each is matched through a `patient_id` review
//! item, so the same checks, blind double keying, revision and audit apply.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use super::ReviewError;
use crate::audit;

/// One exam without a patient.
#[derive(Debug, Clone, Serialize)]
pub struct Unmatched {
    /// Record id.
    pub record_id: String,
    /// Device.
    pub device_id: String,
    /// Template and version.
    pub template: String,
    /// Export file name.
    pub source_file: String,
    /// Exam date, when known.
    pub exam_date: Option<String>,
    /// Exam time, when known.
    pub exam_time: Option<String>,
    /// When the agent took the export.
    pub captured_at: DateTime<Utc>,
    /// The pending `patient_id` item's status (`unreadable`, `invalid`, `wrong_exam`,
    /// `unmatched`), or `None` when there is none yet ([`open_for_matching`]).
    pub pending: Option<String>,
    /// Blind entries made so far on that item.
    pub entries: i64,
}

/// The exams without a patient, newest first (at most `limit`; audited as `actor`).
pub async fn unmatched(
    client: &Client,
    actor: &str,
    limit: i64,
) -> Result<Vec<Unmatched>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT r.record_id, r.device_id, r.template || ' v' || r.template_version, \
                 r.source_file, to_char(r.exam_date, 'YYYY-MM-DD'), r.exam_time, r.captured_at, \
                 q.status, (SELECT count(*) FROM review_entries e \
                     WHERE e.record_id = r.record_id AND e.field = 'patient_id') \
             FROM records r LEFT JOIN review_queue q ON q.record_id = r.record_id \
                 AND q.field = 'patient_id' AND q.resolved_at IS NULL \
             WHERE r.patient_id IS NULL AND r.superseded_by IS NULL \
             ORDER BY r.captured_at DESC, r.record_id LIMIT $1",
            &[&limit.clamp(1, 1000)],
        )
        .await?;
    let list: Vec<Unmatched> = rows
        .iter()
        .map(|r| Unmatched {
            record_id: r.get(0),
            device_id: r.get(1),
            template: r.get(2),
            source_file: r.get(3),
            exam_date: r.get(4),
            exam_time: r.get(5),
            captured_at: r.get(6),
            pending: r.get(7),
            entries: r.get(8),
        })
        .collect();
    audit::append(
        client,
        actor,
        audit::actions::REVIEW_READ,
        serde_json::json!({"unmatched": list.len()}),
    )
    .await?;
    Ok(list)
}

/// Gives the exam `record`, which has no patient, a pending `patient_id` item (status
/// `unmatched`) when it has none: a chart number absent on the export, or a resolved item
/// whose value was later disputed. Audited. `NotPending` when the record has a patient or is
/// superseded. Blind entries of an earlier, resolved item are void.
pub async fn open_for_matching(
    client: &Client,
    actor: &str,
    record: &str,
) -> Result<(), ReviewError> {
    let reason = format!("no patient: opened for matching by {actor}");
    let row = client
        .query_one(
            "WITH exam AS ( \
                 SELECT record_id FROM records \
                 WHERE record_id = $1 AND patient_id IS NULL AND superseded_by IS NULL), \
             opened AS ( \
                 INSERT INTO review_queue (record_id, field, status, reason) \
                 SELECT record_id, 'patient_id', 'unmatched', $3 FROM exam \
                 ON CONFLICT (record_id, field) DO UPDATE SET status = 'unmatched', reason = $3, \
                     resolved_at = NULL, resolved_by = NULL, decision = NULL, value = NULL \
                 WHERE review_queue.resolved_at IS NOT NULL \
                 RETURNING record_id), \
             void AS ( \
                 DELETE FROM review_entries e USING opened \
                 WHERE e.record_id = opened.record_id AND e.field = 'patient_id' RETURNING 1), \
             counted AS ( \
                 UPDATE records r SET review_count = r.review_count + 1 \
                 FROM opened WHERE r.record_id = opened.record_id RETURNING 1), \
             aud AS ( \
                 INSERT INTO audit (actor, action, detail) \
                 SELECT $2, $4, jsonb_build_object('record', $1::text, 'field', 'patient_id', \
                     'decision', 'open_for_matching') FROM opened RETURNING 1) \
             SELECT (SELECT count(*) FROM exam), (SELECT count(*) FROM counted), \
                 (SELECT count(*) FROM void)",
            &[&record, &actor, &reason, &audit::actions::REVIEW_RESOLVE],
        )
        .await?;
    if row.get::<_, i64>(0) == 0 {
        return Err(ReviewError::NotPending {
            record: record.to_owned(),
            field: "patient_id".to_owned(),
        });
    }
    Ok(())
}
