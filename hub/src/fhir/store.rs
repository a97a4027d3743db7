//! Reading stored exports for FHIR: records, their measurements and review decisions, and the
//! model and firmware string of the template version each was read with.

use std::collections::HashMap;

use chrono::NaiveDate;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use super::resources::{Exam, Measurement, Review};
use crate::templates::Catalog;

/// Which records to read. Superseded records (re-read under a newer template) are left out
/// unless `record_ids` names them.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this chart number.
    pub patient: Option<String>,
    /// Exam date bounds: `(operator, date)`, operator one of `=`, `<>`, `>=`, `<=`, `>`, `<`.
    pub dates: Vec<(&'static str, NaiveDate)>,
    /// Only records whose id starts with this (32 hex digits).
    pub record_prefix: Option<String>,
    /// Only these records (superseded ones too).
    pub record_ids: Vec<String>,
    /// Only records of an export whose digest starts with this.
    pub image_prefix: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// Only records with a measurement of one of these fields (empty: any).
    pub fields: Vec<String>,
    /// At most this many records (newest exam first).
    pub limit: i64,
}

/// The records matching `filter`, newest exam first, with measurements and reviews.
pub async fn exams(
    client: &impl GenericClient,
    catalog: &Catalog,
    filter: &Filter,
) -> Result<Vec<Exam>, tokio_postgres::Error> {
    let mut sql = String::from(
        "SELECT record_id, device_id, device_type, template, template_version, firmware, \
                patient_id, to_char(exam_date, 'YYYY-MM-DD'), exam_time, source_file, \
                image_sha256, captured_at, received_at \
         FROM records r WHERE true",
    );
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync + Send>| {
        params.push(v);
        *sql += &clause.replace('?', &format!("${}", params.len()));
    };
    if filter.record_ids.is_empty() {
        sql += " AND superseded_by IS NULL";
    } else {
        arg(
            &mut sql,
            " AND record_id = ANY(?)",
            Box::new(filter.record_ids.clone()),
        );
    }
    if let Some(p) = &filter.patient {
        arg(&mut sql, " AND patient_id = ?", Box::new(p.clone()));
    }
    for (op, d) in &filter.dates {
        arg(&mut sql, &format!(" AND exam_date {op} ?"), Box::new(*d));
    }
    if let Some(p) = &filter.record_prefix {
        arg(
            &mut sql,
            " AND left(record_id, 32) = ?",
            Box::new(p.clone()),
        );
    }
    if let Some(p) = &filter.image_prefix {
        arg(
            &mut sql,
            " AND left(image_sha256, 60) = ?",
            Box::new(p.clone()),
        );
    }
    if let Some(d) = &filter.device {
        arg(&mut sql, " AND device_id = ?", Box::new(d.clone()));
    }
    if !filter.fields.is_empty() {
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM measurements m WHERE m.record_id = r.record_id \
               AND m.field = ANY(?))",
            Box::new(filter.fields.clone()),
        );
    }
    arg(
        &mut sql,
        " ORDER BY exam_date DESC NULLS LAST, captured_at DESC, record_id LIMIT ?",
        Box::new(filter.limit.max(1)),
    );
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client.query(&sql, &refs).await?;
    let versions = catalog.snapshot();
    let mut exams: Vec<Exam> = rows
        .iter()
        .map(|r| {
            let (template, version): (String, i32) = (r.get(3), r.get(4));
            let t = versions.get_stored(&template, version);
            Exam {
                record_id: r.get(0),
                device_id: r.get(1),
                device_type: r.get(2),
                model: t.map(|t| t.model.clone()),
                firmware_string: t.map(|t| t.firmware_string.clone()),
                template: format!("{template} v{version}"),
                firmware: r.get(5),
                patient_id: r.get(6),
                exam_date: r.get(7),
                exam_time: r.get(8),
                source_file: r.get(9),
                image_sha256: r.get(10),
                captured_at: r.get(11),
                received_at: r.get(12),
                measurements: Vec::new(),
                reviews: Vec::new(),
            }
        })
        .collect();
    if exams.is_empty() {
        return Ok(exams);
    }
    let ids: Vec<String> = exams.iter().map(|e| e.record_id.clone()).collect();
    let at: HashMap<String, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect();
    for r in client
        .query(
            "SELECT record_id, field, value, number, status, reason, reviewed_by \
             FROM measurements WHERE record_id = ANY($1) ORDER BY record_id, field",
            &[&ids],
        )
        .await?
    {
        let id: String = r.get(0);
        exams[at[&id]].measurements.push(Measurement {
            field: r.get(1),
            value: r.get(2),
            number: r.get(3),
            status: r.get(4),
            reason: r.get(5),
            reviewed_by: r.get(6),
        });
    }
    for r in client
        .query(
            "SELECT q.record_id, q.field, q.decision, q.value, q.resolved_by, q.resolved_at, \
                    coalesce(h.value, q.raw), coalesce(h.status, q.status), \
                    coalesce((SELECT array_agg(e.reviewer ORDER BY e.entered_at) FROM review_entries e \
                      WHERE e.record_id = q.record_id AND e.field = q.field \
                        AND e.reviewer <> q.resolved_by), '{}') \
             FROM review_queue q \
             LEFT JOIN LATERAL (SELECT value, status FROM measurement_history x \
                 WHERE x.record_id = q.record_id AND x.field = q.field ORDER BY x.id LIMIT 1) h ON true \
             WHERE q.record_id = ANY($1) AND q.resolved_at IS NOT NULL \
             ORDER BY q.resolved_at, q.field",
            &[&ids],
        )
        .await?
    {
        let id: String = r.get(0);
        exams[at[&id]].reviews.push(Review {
            field: r.get(1),
            decision: r.get::<_, Option<String>>(2).unwrap_or_default(),
            value: r.get(3),
            by: r.get::<_, Option<String>>(4).unwrap_or_default(),
            at: r.get(5),
            before: r.get(6),
            before_status: r.get(7),
            also: r.get(8),
        });
    }
    Ok(exams)
}
