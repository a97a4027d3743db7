//! The JSON API: records (audited), the fleet, device registration, the audit trail.

use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Form, Json};
use chrono::{DateTime, Utc};
use record::DeviceId;
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::auth::{self, AuthError};
use crate::telemetry;
use crate::users::Permission;

use super::router::{HttpError, HttpState};
use super::session::Authed;

/// `GET /healthz`: `200 ok` when every stage runs and PostgreSQL answers; `503` naming the
/// stage that ended, or the database error, otherwise.
pub async fn healthz(State(s): State<HttpState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let failed = s.stages.failed();
    if !failed.is_empty() {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            failed.join("; "),
        )
            .into_response();
    }
    let db = async { s.db.client().await?.simple_query("SELECT 1").await };
    match db.await {
        Ok(_) => "ok".into_response(),
        Err(e) => HttpError::from(e).into_response(),
    }
}

/// `GET /metrics`: the recorder's metrics, with the quality-sampling figures read from the
/// database first (when it does not answer, the rest is rendered anyway).
pub async fn metrics_text(State(s): State<HttpState>) -> String {
    let quality = async { crate::quality::publish_metrics(&*s.db.client().await?).await };
    if let Err(error) = quality.await {
        // /healthz reports the database; one line per scrape would only repeat it.
        tracing::debug!(%error, "Blind-check metrics not refreshed from the database.");
    }
    telemetry::prometheus().render()
}

/// `/api/records` query.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    patient_id: Option<String>,
    device_id: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Longest text parameter accepted (ids are far shorter).
pub const MAX_PARAM_CHARS: usize = 128;

impl RecordsQuery {
    /// Parses a query string the way the route does (unknown keys, bad numbers and dates
    /// refused) and checks the values; `Err` says what is wrong.
    pub fn parse(query: &str) -> Result<(Self, i64, i64), HttpError> {
        let q: Self = serde_urlencoded::from_str(query)
            .map_err(|e| HttpError::BadRequest(format!("query: {e}")))?;
        let (limit, offset) = q.check()?;
        Ok((q, limit, offset))
    }

    /// `(limit, offset)` after checking every parameter.
    pub fn check(&self) -> Result<(i64, i64), HttpError> {
        let limit = self.limit.unwrap_or(100);
        let offset = self.offset.unwrap_or(0);
        if !(1..=1000).contains(&limit) || !(0..=10_000_000).contains(&offset) {
            return Err(HttpError::BadRequest(
                "limit must be 1..=1000 and offset 0..=10000000".into(),
            ));
        }
        for (name, v) in [
            ("patient_id", &self.patient_id),
            ("device_id", &self.device_id),
        ] {
            if v.as_ref()
                .is_some_and(|v| v.chars().count() > MAX_PARAM_CHARS)
            {
                return Err(HttpError::BadRequest(format!(
                    "{name} longer than {MAX_PARAM_CHARS} characters"
                )));
            }
        }
        Ok((limit, offset))
    }
}

/// One row of `/api/records`.
#[derive(Debug, Serialize)]
pub struct RecordRow {
    record_id: String,
    device_id: String,
    device_type: String,
    template: String,
    patient_id: Option<String>,
    exam_date: Option<String>,
    exam_time: Option<String>,
    captured_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    review_count: i32,
    /// The device clocks looked wrong: dates to be checked by a person.
    clock_suspect: bool,
    /// The earlier record of the same export this one replaces (a re-read).
    supersedes: Option<String>,
    payload: serde_json::Value,
}

/// `GET /api/records` (reader): the query and the number of records returned go to the
/// audit trail before the records go out; no audit entry, no records.
pub async fn records(
    State(s): State<HttpState>,
    a: Authed,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<RecordRow>>, HttpError> {
    let who = a.require(Permission::ReadRecords)?;
    let (q, limit, offset) = RecordsQuery::parse(raw.as_deref().unwrap_or(""))?;
    let client = s.db.client().await?;
    let rows = client
        .query(
            "SELECT record_id, device_id, device_type, template, patient_id, \
                    to_char(exam_date, 'YYYY-MM-DD'), exam_time, captured_at, received_at, \
                    review_count, payload, clock_suspect, supersedes \
             FROM records \
             WHERE superseded_by IS NULL \
               AND ($1::text IS NULL OR patient_id = $1) \
               AND ($2::text IS NULL OR device_id = $2) \
               AND ($3::timestamptz IS NULL OR captured_at >= $3) \
               AND ($4::timestamptz IS NULL OR captured_at < $4) \
             ORDER BY captured_at DESC, record_id \
             LIMIT $5 OFFSET $6",
            &[&q.patient_id, &q.device_id, &q.from, &q.to, &limit, &offset],
        )
        .await?;
    audit::append(
        &*client,
        &who.user,
        audit::actions::RECORDS_READ,
        serde_json::json!({"query": q, "count": rows.len()}),
    )
    .await?;
    Ok(Json(
        rows.iter()
            .map(|r| RecordRow {
                record_id: r.get(0),
                device_id: r.get(1),
                device_type: r.get(2),
                template: r.get(3),
                patient_id: r.get(4),
                exam_date: r.get(5),
                exam_time: r.get(6),
                captured_at: r.get(7),
                received_at: r.get(8),
                review_count: r.get(9),
                payload: r.get(10),
                clock_suspect: r.get(11),
                supersedes: r.get(12),
            })
            .collect(),
    ))
}

/// One row of `/api/devices`.
#[derive(Debug, Serialize)]
pub struct DeviceRow {
    pub(crate) device_id: String,
    pub(crate) device_type: String,
    pub(crate) revoked: bool,
    pub(crate) last_seen_at: Option<DateTime<Utc>>,
    pub(crate) online: bool,
    pub(crate) backlog: Option<i64>,
    pub(crate) agent_version: Option<String>,
    pub(crate) last_error: Option<String>,
    pub(crate) records: i64,
    /// Records the hub answered `deferred` and has not stored yet.
    pub(crate) deferred: i64,
    /// Exports the agent quarantined (its rejection notices).
    pub(crate) quarantined: i64,
    /// The latest quarantine: file and reason.
    pub(crate) last_quarantine: Option<String>,
    /// Review items of this device's records still pending.
    pub(crate) review_pending: i64,
    /// Messages from this device the hub kept as rejects.
    pub(crate) rejects: i64,
}

/// The fleet, as the API and the page show it.
pub async fn fleet(s: &HttpState) -> Result<Vec<DeviceRow>, HttpError> {
    let client = s.db.client().await?;
    let window = s.online_window_secs as f64;
    let rows = client
        .query(
            "SELECT d.device_id, d.device_type, d.revoked_at IS NOT NULL, d.last_seen_at, \
                    d.online AND d.last_seen_at > now() - make_interval(secs => $1), \
                    d.backlog, d.agent_version, d.last_error, \
                    (SELECT count(*) FROM records r WHERE r.device_id = d.device_id), \
                    (SELECT count(*) FROM deferrals x WHERE x.device_id = d.device_id), \
                    (SELECT count(*) FROM device_rejections q WHERE q.device_id = d.device_id), \
                    (SELECT q.source_file || ': ' || q.code || ': ' || q.reason FROM device_rejections q \
                     WHERE q.device_id = d.device_id ORDER BY q.at DESC LIMIT 1), \
                    (SELECT count(*) FROM review_queue v JOIN records r USING (record_id) \
                     WHERE r.device_id = d.device_id AND v.resolved_at IS NULL), \
                    (SELECT count(*) FROM rejects j WHERE j.device_id = d.device_id) \
             FROM devices d ORDER BY d.device_id",
            &[&window],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeviceRow {
            device_id: r.get(0),
            device_type: r.get(1),
            revoked: r.get(2),
            last_seen_at: r.get(3),
            online: r.get::<_, Option<bool>>(4).unwrap_or(false),
            backlog: r.get(5),
            agent_version: r.get(6),
            last_error: r.get(7),
            records: r.get(8),
            deferred: r.get(9),
            quarantined: r.get(10),
            last_quarantine: r.get(11),
            review_pending: r.get(12),
            rejects: r.get(13),
        })
        .collect())
}

/// `GET /api/devices` (reader).
pub async fn devices(
    State(s): State<HttpState>,
    a: Authed,
) -> Result<Json<Vec<DeviceRow>>, HttpError> {
    a.require(Permission::ReadRecords)?;
    Ok(Json(fleet(&s).await?))
}

/// `POST /api/devices` form.
#[derive(Debug, Deserialize)]
pub struct AddDevice {
    id: String,
    #[serde(rename = "type")]
    device_type: String,
    csrf: Option<String>,
}

/// `POST /api/devices` (admin): registers a device; `201` with its password as the body.
pub async fn add_device(
    State(s): State<HttpState>,
    a: Authed,
    headers: HeaderMap,
    Form(f): Form<AddDevice>,
) -> Result<(StatusCode, String), HttpError> {
    let who = a.require_change(Permission::ManageDevices, &headers, f.csrf.as_deref())?;
    let id = DeviceId::new(&f.id).map_err(|e| HttpError::BadRequest(format!("id: {e}")))?;
    let client = s.db.client().await?;
    match auth::add_device(&client, &who.user, &id, &f.device_type).await {
        Ok(pw) => Ok((StatusCode::CREATED, pw.expose().to_owned())),
        Err(AuthError::Db(e)) => Err(HttpError::Db(e)),
        Err(e @ AuthError::Exists(_)) => Err(HttpError::Conflict(e.to_string())),
        Err(e) => Err(HttpError::BadRequest(e.to_string())),
    }
}

/// `GET /api/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/audit` (admin): the newest entries, oldest first.
pub async fn audit_trail(
    State(s): State<HttpState>,
    a: Authed,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<audit::Entry>>, HttpError> {
    a.require(Permission::ManageUsers)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(HttpError::BadRequest("limit must be 1..=10000".into()));
    }
    let filter = audit::Filter {
        actor: q.actor,
        action: q.action,
        since: None,
        limit,
    };
    Ok(Json(audit::list(&*s.db.client().await?, &filter).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_parameters_are_checked() {
        assert!(RecordsQuery::parse("").is_ok());
        let (_, limit, offset) = RecordsQuery::parse("limit=5&offset=10").unwrap();
        assert_eq!((limit, offset), (5, 10));
        for bad in [
            "limit=0",
            "limit=1001",
            "offset=-1",
            "after=3",
            "from=yesterday",
            "limit=1e3",
            "limit=99999999999999999999",
        ] {
            let e = RecordsQuery::parse(bad).unwrap_err();
            assert!(matches!(e, HttpError::BadRequest(_)), "{bad}: {e}");
        }
        let long = format!("patient_id={}", "9".repeat(MAX_PARAM_CHARS + 1));
        assert!(RecordsQuery::parse(&long).is_err());
        assert!(RecordsQuery::parse("from=2024-05-01T00:00:00Z&to=2024-06-01T00:00:00Z").is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        // Random and mutated query strings: never a panic, always Ok or a 400 with a reason.
        #[test]
        fn random_query_strings_are_answered_or_refused(
            raw in prop::collection::vec(any::<u8>(), 0..300),
            base in prop::sample::select(vec![
                "patient_id=00000001&limit=10",
                "device_id=autoref-01&from=2024-05-01T00:00:00Z",
                "to=2024-05-01T00:00:00%2B02:00&offset=5",
            ]),
            cut in 0usize..60,
        ) {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let mut mutated = base.to_owned();
            mutated.truncate(cut.min(mutated.len()));
            mutated.push_str(&text);
            for q in [text.as_str(), mutated.as_str()] {
                match RecordsQuery::parse(q) {
                    Ok((_, limit, offset)) => {
                        prop_assert!((1..=1000).contains(&limit) && offset >= 0);
                    }
                    Err(HttpError::BadRequest(reason)) => prop_assert!(!reason.is_empty()),
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }
    }
}

/// `GET /api/review` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    limit: Option<i64>,
}

/// `GET /api/review` (reviewer): the pending items in clinical order (audited).
pub async fn review_queue(
    State(s): State<HttpState>,
    a: Authed,
    Query(q): Query<ReviewQuery>,
) -> Result<Json<Vec<crate::review::Item>>, HttpError> {
    let who = a.require(Permission::ResolveReviews)?;
    let client = s.db.client().await?;
    let items =
        crate::review::pending(&client, &s.review, &who.user, q.limit.unwrap_or(50), 0).await?;
    Ok(Json(items))
}

/// `POST /api/review` form: `record_id`, `field`, and `value` (as the export prints it) or
/// `action` = `absent` | `escalate` | `wrong_exam`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecision {
    record_id: String,
    field: String,
    value: Option<String>,
    action: Option<String>,
    csrf: Option<String>,
}

/// `POST /api/review` (reviewer): resolves one item; `200` with the outcome, `400` with the
/// reason when the value fails the field's checks, `409` when the item is not pending.
pub async fn review_resolve(
    State(s): State<HttpState>,
    a: Authed,
    headers: HeaderMap,
    Form(f): Form<ReviewDecision>,
) -> Result<Json<crate::review::Resolved>, HttpError> {
    use crate::review::{Decision, ReviewError};
    let who = a.require_change(Permission::ResolveReviews, &headers, f.csrf.as_deref())?;
    let decision = match (f.action.as_deref(), f.value) {
        (None | Some("value"), Some(v)) => Decision::Value(v),
        (Some("absent"), None) => Decision::Absent,
        (Some("escalate"), None) => Decision::Escalate,
        (Some("wrong_exam"), None) => Decision::WrongExam,
        _ => {
            return Err(HttpError::BadRequest(
                "give value=..., or action=absent|escalate|wrong_exam (not both)".into(),
            ))
        }
    };
    let client = s.db.client().await?;
    match crate::review::resolve(
        &client,
        &s.catalog,
        &s.review,
        &who.user,
        &f.record_id,
        &f.field,
        &decision,
    )
    .await
    {
        Ok(r) => Ok(Json(r)),
        Err(ReviewError::Db(e)) => Err(HttpError::Db(e)),
        Err(e @ (ReviewError::NotPending { .. } | ReviewError::AlreadyKeyed { .. })) => {
            Err(HttpError::Conflict(e.to_string()))
        }
        Err(e) => Err(HttpError::BadRequest(e.to_string())),
    }
}
