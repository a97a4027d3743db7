//! quality: quality sampling at the hub. Blind checks of fields the reader marked `ok`, and
//! from their answers the production estimate of the ok-but-wrong rate.
//!
//! An agent sends the crop of a share of the fields it read `ok` (`recognize.quality_sample`,
//! 0.5% by default, drawn by record id and field; `Record::sample_crops`, payload schema v2).
//! The load stage queues each one as a row of `blind_checks` holding the crop and the value
//! stored (`hub/migrations/0009_blind_checks.sql`). A reviewer
//! ([`crate::users::Permission::ResolveReviews`]) takes the oldest pending check ([`next`]),
//! sees the crop, the field name, the device and the template, but never the read, and types
//! what the crop shows. [`answer`] puts the answer through the field's grammar and range
//! ([`record::FieldSpec::check_printed`], the record's exact template version); an answer that
//! fails is refused with the reason, and nothing changes. Otherwise the normalised answer is
//! compared with the stored value:
//!
//! - it agrees: the check is answered, `agrees = true`;
//! - it disagrees (or the reviewer says the export shows no value): the check is answered
//!   `agrees = false`, and the field goes to a person, because a value that drives surgery is
//!   never silently wrong. In the same SQL statement the measurement's old value goes to
//!   `measurement_history`, the measurement becomes `invalid` with the reason
//!   `blind check by <who> read <answer>`, a `review_queue` item (status `invalid`, the stored
//!   value as `raw`, the sample crop) puts it in the review station's queue, and the record
//!   becomes a new revision (a disagreed `patient_id`, `exam_date` or `exam_time` no longer
//!   heads the record until it is reviewed).
//!
//! Every answer is audited ([`audit::actions::REVIEW_BLIND`]); showing a check is a
//! patient-data read ([`audit::actions::REVIEW_READ`]: its crop is patient data).
//!
//! [`estimates`] counts the answered checks and the disagreements per template and field, each
//! with the rate and its 95% Wilson score interval ([`wilson`]); [`publish_metrics`] puts them
//! in `/metrics` (labels: template and field only).

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use record::FieldStatus;
use serde::Serialize;
use tokio_postgres::Client;
use tracing::{debug, warn};

use crate::audit;
use crate::telemetry;
use crate::templates::Catalog;

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// One pending blind check, as the reviewer sees it: no read value.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Record id.
    pub record_id: String,
    /// Field.
    pub field: String,
    /// Device.
    pub device_id: String,
    /// Device type.
    pub device_type: String,
    /// Template and version (`autoref_fw2 v3`).
    pub template: String,
    /// The field's crop (PNG, base64).
    pub crop_png_base64: String,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
}

/// What a reviewer typed for one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The value as the export prints it.
    Value(String),
    /// The export shows no value for this field.
    Absent,
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answered {
    /// Whether the answer equals the value stored as `ok`.
    pub agrees: bool,
    /// The normalised answer (`None`: absent on the export).
    pub answer: Option<String>,
    /// The record's revision now (one more after a disagreement).
    pub revision: i32,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    /// No pending blind check for that record and field (answered meanwhile, or never queued).
    #[error("no pending blind check for record {record} field {field}")]
    NotPending {
        /// Record.
        record: String,
        /// Field.
        field: String,
    },
    /// The answer fails the field's grammar or range.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The record's template version (or the field in it) is not known to this hub.
    #[error("template {0} is not known to this hub")]
    Template(String),
    /// Database.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// The pending check at position `skip` of the queue (oldest first), and how many are pending;
/// audited as `actor` (the crop is patient data).
pub async fn next(
    client: &Client,
    actor: &str,
    skip: i64,
) -> Result<(Option<Check>, i64), tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT b.record_id, b.field, r.device_id, r.device_type, \
                    b.template || ' v' || b.template_version, b.crop_png, b.queued_at \
             FROM blind_checks b JOIN records r USING (record_id) \
             WHERE b.answered_at IS NULL \
             ORDER BY b.queued_at, b.record_id, b.field LIMIT 1 OFFSET $1",
            &[&skip.clamp(0, 100_000)],
        )
        .await?;
    let check = row.map(|r| Check {
        record_id: r.get(0),
        field: r.get(1),
        device_id: r.get(2),
        device_type: r.get(3),
        template: r.get(4),
        crop_png_base64: base64::engine::general_purpose::STANDARD.encode(r.get::<_, &[u8]>(5)),
        queued_at: r.get(6),
    });
    let pending = pending_count(client).await?;
    let detail = match &check {
        Some(c) => {
            serde_json::json!({"blind_check": true, "record": c.record_id, "field": c.field})
        }
        None => serde_json::json!({"blind_check": true, "count": 0}),
    };
    audit::append(client, actor, audit::actions::REVIEW_READ, detail).await?;
    Ok((check, pending))
}

/// Blind checks not answered yet.
pub async fn pending_count(client: &Client) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM blind_checks WHERE answered_at IS NULL",
            &[],
        )
        .await?
        .get(0))
}

/// Answers the check (`$5` agrees); when it disagrees, sends the field to review (see the
/// module docs). Returns whether a pending check was answered, the revision, and the counts
/// of what it wrote.
const ANSWER: &str = "
WITH chk AS (
    UPDATE blind_checks SET answered_by = $3, answered_at = now(), answer = $4, agrees = $5
    WHERE record_id = $1 AND field = $2 AND answered_at IS NULL
    RETURNING record_id, field, read_value, crop_png),
wrong AS (SELECT * FROM chk WHERE NOT $5),
hist AS (
    INSERT INTO measurement_history (record_id, field, revision, value, number, status, reason, changed_by)
    SELECT m.record_id, m.field, r.revision, m.value, m.number, m.status, m.reason, $3
    FROM measurements m JOIN wrong USING (record_id, field) JOIN records r USING (record_id)
    RETURNING 1),
meas AS (
    UPDATE measurements m SET value = NULL, number = NULL, status = 'invalid', reason = $6
    FROM wrong WHERE m.record_id = wrong.record_id AND m.field = wrong.field
    RETURNING 1),
queue AS (
    INSERT INTO review_queue (record_id, field, status, raw, reason, crop_png)
    SELECT record_id, field, 'invalid', read_value, $6, crop_png FROM wrong
    RETURNING 1),
rec AS (
    UPDATE records r SET revision = r.revision + 1, review_count = r.review_count + 1,
        patient_id = CASE WHEN $2 = 'patient_id' THEN NULL ELSE r.patient_id END,
        exam_date = CASE WHEN $2 = 'exam_date' THEN NULL ELSE r.exam_date END,
        exam_time = CASE WHEN $2 = 'exam_time' THEN NULL ELSE r.exam_time END
    FROM wrong WHERE r.record_id = wrong.record_id
    RETURNING r.revision),
aud AS (
    INSERT INTO audit (actor, action, detail)
    SELECT $3, $7, jsonb_build_object('record', $1::text, 'field', $2::text,
        'read', chk.read_value, 'answer', $4::text, 'agrees', $5::bool)
    FROM chk RETURNING 1)
SELECT EXISTS (SELECT 1 FROM chk),
    coalesce((SELECT revision FROM rec), (SELECT revision FROM records WHERE record_id = $1)),
    (SELECT count(*) FROM hist) + (SELECT count(*) FROM meas) + (SELECT count(*) FROM queue),
    (SELECT count(*) FROM aud)";

/// Takes `actor`'s answer to the pending blind check `(record, field)`.
pub async fn answer(
    client: &Client,
    catalog: &Arc<Catalog>,
    actor: &str,
    record: &str,
    field: &str,
    answer: &Answer,
) -> Result<Answered, QualityError> {
    let not_pending = || QualityError::NotPending {
        record: record.to_owned(),
        field: field.to_owned(),
    };
    let Some(row) = client
        .query_opt(
            "SELECT template, template_version, read_value FROM blind_checks \
             WHERE record_id = $1 AND field = $2 AND answered_at IS NULL",
            &[&record, &field],
        )
        .await?
    else {
        return Err(not_pending());
    };
    let (template, version, read): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
    let versions = catalog.snapshot();
    let spec = versions
        .get_stored(&template, version)
        .and_then(|t| t.field(field))
        .map(|f| &f.spec)
        .ok_or_else(|| QualityError::Template(format!("{template} v{version} (field {field})")))?;
    let normalised = match answer {
        Answer::Absent => None,
        Answer::Value(text) => {
            let checked = spec.check_printed(text.trim());
            match checked.status {
                FieldStatus::Ok => checked.value,
                FieldStatus::Absent => None,
                FieldStatus::Invalid | FieldStatus::Unreadable => {
                    return Err(QualityError::Invalid {
                        field: field.to_owned(),
                        reason: checked
                            .reason
                            .unwrap_or_else(|| format!("{text:?} is not a valid {field}")),
                    })
                }
            }
        }
    };
    let agrees = normalised.as_deref() == Some(read.as_str());
    let reason = format!(
        "blind check by {actor} read {}",
        normalised.as_deref().unwrap_or("absent")
    );
    let row = client
        .query_one(
            ANSWER,
            &[
                &record,
                &field,
                &actor,
                &normalised,
                &agrees,
                &reason,
                &audit::actions::REVIEW_BLIND,
            ],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Err(not_pending());
    }
    let revision: i32 = row.get(1);
    if agrees {
        debug!(
            record,
            field,
            template,
            reviewer = actor,
            "Blind check agrees with the read."
        );
    } else {
        warn!(
            record,
            field,
            template,
            reviewer = actor,
            revision,
            "Blind check disagrees with the value read ok: the field goes to review."
        );
    }
    Ok(Answered {
        agrees,
        answer: normalised,
        revision,
    })
}

/// The ok-but-wrong estimate of one template and field (or of all of them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Template id (`None`: every template and field together).
    pub template: Option<String>,
    /// Field (`None`: every field together).
    pub field: Option<String>,
    /// Blind checks answered.
    pub answered: u64,
    /// Of those, the answers that disagreed with the read.
    pub disagreed: u64,
}

impl Estimate {
    /// The disagreement rate (`None` before any answer).
    pub fn rate(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.disagreed as f64 / self.answered as f64)
    }

    /// Its 95% Wilson score interval.
    pub fn interval(&self) -> (f64, f64) {
        wilson(self.disagreed, self.answered)
    }
}

/// The 95% Wilson score interval of `k` events in `n` trials, `(lower, upper)`: unlike the
/// normal approximation it stays inside `[0, 1]` and is honest at `k = 0`, the common case for
/// a good reader. `(0, 1)` when `n` is 0.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let k = k.min(n);
    let (kf, nf) = (k as f64, n as f64);
    let p = kf / nf;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denominator;
    let half = Z95 * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denominator;
    // At k = 0 (k = n) the bound is exactly 0 (1); rounding would leave a speck.
    let lower = if k == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let upper = if k == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (lower, upper)
}

/// Per template and field (in that order), then the overall estimate (last).
pub async fn estimates(client: &Client) -> Result<Vec<Estimate>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT template, field, count(*), count(*) FILTER (WHERE NOT agrees) \
             FROM blind_checks WHERE answered_at IS NOT NULL \
             GROUP BY template, field ORDER BY template, field",
            &[],
        )
        .await?;
    let mut out: Vec<Estimate> = rows
        .iter()
        .map(|r| Estimate {
            template: Some(r.get(0)),
            field: Some(r.get(1)),
            answered: r.get::<_, i64>(2).unsigned_abs(),
            disagreed: r.get::<_, i64>(3).unsigned_abs(),
        })
        .collect();
    let overall = Estimate {
        template: None,
        field: None,
        answered: out.iter().map(|e| e.answered).sum(),
        disagreed: out.iter().map(|e| e.disagreed).sum(),
    };
    out.push(overall);
    Ok(out)
}

/// Sets the blind-check metrics from the database (called when `/metrics` is rendered, so
/// every hub on the database shows the same totals, restarts included).
pub async fn publish_metrics(client: &Client) -> Result<(), tokio_postgres::Error> {
    let estimates = estimates(client).await?;
    let pending = pending_count(client).await?;
    metrics::gauge!(telemetry::BLIND_CHECKS_PENDING).set(pending as f64);
    for e in &estimates {
        let (lower, upper) = e.interval();
        let rate = e.rate().unwrap_or(0.0);
        let bounds = [("estimate", rate), ("lower", lower), ("upper", upper)];
        match (&e.template, &e.field) {
            (Some(t), Some(f)) => {
                let labels = || [("template", t.clone()), ("field", f.clone())];
                metrics::counter!(telemetry::BLIND_CHECKS_ANSWERED, &labels()).absolute(e.answered);
                metrics::counter!(telemetry::BLIND_CHECKS_DISAGREED, &labels())
                    .absolute(e.disagreed);
                for (bound, v) in bounds {
                    let mut l = labels().to_vec();
                    l.push(("bound", bound.to_owned()));
                    metrics::gauge!(telemetry::OK_WRONG_RATIO, &l).set(v);
                }
            }
            _ if e.answered > 0 => {
                for (bound, v) in bounds {
                    metrics::gauge!(telemetry::OK_WRONG_OVERALL_RATIO, "bound" => bound).set(v);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-4
    }

    #[test]
    fn wilson_interval_matches_known_values() {
        let (lo, hi) = wilson(0, 100);
        assert_eq!(lo, 0.0);
        assert!(close(hi, 0.0370), "{hi}");
        let (lo, hi) = wilson(5, 100);
        assert!(close(lo, 0.0215) && close(hi, 0.1118), "{lo} {hi}");
        let (lo, hi) = wilson(50, 100);
        assert!(close(lo, 0.4038) && close(hi, 0.5962), "{lo} {hi}");
        let (lo, hi) = wilson(100, 100);
        assert!(close(lo, 0.9630) && hi == 1.0, "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        // Narrower with more answers, always around the rate.
        let (lo, hi) = wilson(50, 10_000);
        assert!(lo < 0.005 && 0.005 < hi && hi - lo < 0.003, "{lo} {hi}");
    }

    #[test]
    fn estimate_rate_and_interval() {
        let e = Estimate {
            template: Some("autoref_fw2".into()),
            field: Some("r_sph".into()),
            answered: 100,
            disagreed: 5,
        };
        assert_eq!(e.rate(), Some(0.05));
        assert_eq!(e.interval(), wilson(5, 100));
        let none = Estimate {
            answered: 0,
            disagreed: 0,
            ..e
        };
        assert_eq!(none.rate(), None);
    }
}
