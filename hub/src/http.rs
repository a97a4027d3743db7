//! HTTP (axum): health, Prometheus metrics, a small query API and a status page.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` when PostgreSQL answers, else `503` |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /api/records?patient_id=&device_id=&from=&to=&limit=&offset=` | stored records, newest capture first; `from`/`to` are RFC 3339 bounds on `captured_at`; `limit` ≤ 1000 (default 100) |
//! | `GET /api/devices` | the fleet: type, last seen, online, backlog, agent version |
//! | `GET /` | the fleet as a plain HTML page |

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::load::Db;
use crate::telemetry;

/// A request that failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The database did not answer.
    #[error("database unavailable: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A bad query parameter.
    #[error("{0}")]
    BadRequest(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match self {
            HttpError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The shared database connection.
    pub db: Arc<Db>,
    /// How recent a status must be for "online".
    pub online_window_secs: u64,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/records", get(records))
        .route("/api/devices", get(devices))
        .route("/", get(page))
        .with_state(state)
}

async fn healthz(State(s): State<HttpState>) -> Result<&'static str, HttpError> {
    s.db.client().await?.simple_query("SELECT 1").await?;
    Ok("ok")
}

async fn metrics_text() -> String {
    telemetry::prometheus().render()
}

/// `/api/records` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    patient_id: Option<String>,
    device_id: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<i64>,
    offset: Option<i64>,
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
    payload: serde_json::Value,
}

async fn records(
    State(s): State<HttpState>,
    Query(q): Query<RecordsQuery>,
) -> Result<Json<Vec<RecordRow>>, HttpError> {
    let limit = q.limit.unwrap_or(100);
    let offset = q.offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) || offset < 0 {
        return Err(HttpError::BadRequest(
            "limit must be 1..=1000 and offset ≥ 0".into(),
        ));
    }
    let client = s.db.client().await?;
    let rows = client
        .query(
            "SELECT record_id, device_id, device_type, template, patient_id, \
                    to_char(exam_date, 'YYYY-MM-DD'), exam_time, captured_at, received_at, \
                    review_count, payload \
             FROM records \
             WHERE ($1::text IS NULL OR patient_id = $1) \
               AND ($2::text IS NULL OR device_id = $2) \
               AND ($3::timestamptz IS NULL OR captured_at >= $3) \
               AND ($4::timestamptz IS NULL OR captured_at < $4) \
             ORDER BY captured_at DESC, record_id \
             LIMIT $5 OFFSET $6",
            &[&q.patient_id, &q.device_id, &q.from, &q.to, &limit, &offset],
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
            })
            .collect(),
    ))
}

/// One row of `/api/devices`.
#[derive(Debug, Serialize)]
pub struct DeviceRow {
    device_id: String,
    device_type: String,
    revoked: bool,
    last_seen_at: Option<DateTime<Utc>>,
    online: bool,
    backlog: Option<i64>,
    agent_version: Option<String>,
    last_error: Option<String>,
    records: i64,
}

async fn fleet(s: &HttpState) -> Result<Vec<DeviceRow>, HttpError> {
    let client = s.db.client().await?;
    let window = s.online_window_secs as f64;
    let rows = client
        .query(
            "SELECT d.device_id, d.device_type, d.revoked_at IS NOT NULL, d.last_seen_at, \
                    d.online AND d.last_seen_at > now() - make_interval(secs => $1), \
                    d.backlog, d.agent_version, d.last_error, \
                    (SELECT count(*) FROM records r WHERE r.device_id = d.device_id) \
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
        })
        .collect())
}

async fn devices(State(s): State<HttpState>) -> Result<Json<Vec<DeviceRow>>, HttpError> {
    Ok(Json(fleet(&s).await?))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(s): State<HttpState>) -> Result<Html<String>, HttpError> {
    let fleet = fleet(&s).await?;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>examlink hub</title>\
         <style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}\
         .off{color:#999}</style></head><body><h1>examlink hub</h1>",
    );
    let online = fleet.iter().filter(|d| d.online).count();
    html += &format!("<p>{} devices, {online} online.</p><table><tr><th>device</th><th>type</th>\
        <th>online</th><th>last seen</th><th>backlog</th><th>records</th><th>agent</th><th>last error</th></tr>", fleet.len());
    for d in &fleet {
        html += &format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if d.online { "on" } else { "off" },
            escape(&d.device_id),
            escape(&d.device_type),
            if d.revoked { "revoked" } else if d.online { "yes" } else { "no" },
            d.last_seen_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
            d.backlog.map(|b| b.to_string()).unwrap_or_default(),
            d.records,
            escape(d.agent_version.as_deref().unwrap_or("")),
            escape(d.last_error.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</table></body></html>");
    Ok(Html(html))
}
