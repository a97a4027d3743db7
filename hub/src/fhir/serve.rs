//! The `/fhir` routes: read-only FHIR R4 (JSON, `application/fhir+json`) behind the people's
//! logins ([`Permission::ReadRecords`]: readers, reviewers, admins), every answer that carries
//! patient data audited (`fhir.read`: the resource type, the query or id, how many resources)
//! before it goes out. Errors are OperationOutcomes.
//!
//! | route | answer |
//! |---|---|
//! | `GET /fhir/metadata` | the CapabilityStatement (open: no patient data) |
//! | `GET /fhir/Observation?patient=&date=&code=&_count=&_offset=` | searchset Bundle |
//! | `GET /fhir/Observation/{id}` | one Observation |
//! | `GET /fhir/DiagnosticReport?patient=&date=` | searchset Bundle |
//! | `GET /fhir/DiagnosticReport/{id}` | one DiagnosticReport (id = record id) |
//! | `GET /fhir/Provenance?target=\|patient=` | searchset Bundle of review decisions |
//! | `GET /fhir/Provenance/{id}`, `/fhir/DocumentReference/{id}`, `/fhir/Device/{id}` | one resource |

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::resources::{self, RenderContext, Rendered};
use super::search::{self, Kind, Search};
use super::store::{self, Filter};
use super::FhirConfig;
use crate::audit;
use crate::http::{Authed, HttpError, HttpState};
use crate::users::Permission;

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

use crate::audit::actions::FHIR_READ;

/// The routes (merged into [`crate::http::router`]).
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/Observation", get(observation_search))
        .route("/fhir/Observation/:id", get(observation_read))
        .route("/fhir/DiagnosticReport", get(report_search))
        .route("/fhir/DiagnosticReport/:id", get(report_read))
        .route("/fhir/Provenance", get(provenance_search))
        .route("/fhir/Provenance/:id", get(provenance_read))
        .route("/fhir/DocumentReference/:id", get(document_read))
        .route("/fhir/Device/:id", get(device_read))
}

/// A FHIR request that failed: an OperationOutcome with the status.
#[derive(Debug)]
pub enum FhirError {
    /// From the shared HTTP layer (login, role, database).
    Http(HttpError),
    /// No such resource.
    NotFound(String),
}

impl From<HttpError> for FhirError {
    fn from(e: HttpError) -> Self {
        FhirError::Http(e)
    }
}

impl From<tokio_postgres::Error> for FhirError {
    fn from(e: tokio_postgres::Error) -> Self {
        FhirError::Http(HttpError::Db(e))
    }
}

fn outcome(code: &str, text: &str) -> Value {
    json!({"resourceType": "OperationOutcome",
           "issue": [{"severity": "error", "code": code, "diagnostics": text}]})
}

/// A FHIR JSON answer.
pub fn fhir_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let e = match self {
            FhirError::NotFound(what) => {
                return fhir_json(
                    StatusCode::NOT_FOUND,
                    &outcome("not-found", &format!("{what} not found")),
                )
            }
            FhirError::Http(e) => e,
        };
        let text = e.to_string();
        let (status, code) = match &e {
            HttpError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid"),
            HttpError::Unauthorized | HttpError::BadLogin => (StatusCode::UNAUTHORIZED, "login"),
            HttpError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            HttpError::Backoff(_) => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            HttpError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            HttpError::Db(_) => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
        };
        let mut r = fhir_json(status, &outcome(code, &text));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"examlink\""),
            );
        }
        r
    }
}

/// How `config` asks resources to be rendered.
pub fn render_context(config: &FhirConfig) -> RenderContext {
    RenderContext {
        patient_system: config.patient_system.clone(),
        exam_utc_offset: Some(config.exam_utc_offset.clone()).filter(|o| !o.is_empty()),
    }
}

fn base(s: &HttpState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{}://{host}/fhir", if s.tls { "https" } else { "http" })
}

type Authorised = Result<Authed, HttpError>;

fn reader(a: Authorised) -> Result<String, FhirError> {
    Ok(a?.require(Permission::ReadRecords)?.user.clone())
}

/// Renders the exams `filter` selects.
async fn rendered(
    s: &HttpState,
    client: &tokio_postgres::Client,
    filter: &Filter,
) -> Result<Vec<Rendered>, FhirError> {
    let exams = store::exams(client, &s.catalog, filter).await?;
    if exams.len() as i64 > search::MAX_RECORDS {
        return Err(HttpError::BadRequest(format!(
            "more than {} exports match: narrow the search (date)",
            search::MAX_RECORDS
        ))
        .into());
    }
    let ctx = render_context(&s.fhir);
    Ok(exams.iter().map(|e| resources::render(e, &ctx)).collect())
}

async fn run_search(
    s: HttpState,
    a: Authorised,
    headers: HeaderMap,
    raw: Option<String>,
    kind: Kind,
) -> Result<Response, FhirError> {
    let who = reader(a)?;
    let q: Search = search::parse(kind, raw.as_deref().unwrap_or(""), &s.fhir.patient_system)
        .map_err(HttpError::BadRequest)?;
    let filter = Filter {
        patient: q.patient.clone(),
        dates: q.dates.clone(),
        fields: if kind == Kind::Observation {
            q.fields()
        } else {
            Vec::new()
        },
        record_prefix: q.target_record(),
        limit: search::MAX_RECORDS + 1,
        ..Default::default()
    };
    let client = s.db.client().await.map_err(HttpError::from)?;
    let all = rendered(&s, &client, &filter).await?;
    let target = q.target.as_ref().map(|(t, id)| format!("{t}/{id}"));
    let matches: Vec<Value> = all
        .into_iter()
        .flat_map(|r| -> Vec<Value> {
            match kind {
                Kind::Observation => r
                    .observations
                    .into_iter()
                    .filter(|o| q.wants(o.code.system, o.code.code))
                    .map(|o| o.resource)
                    .collect(),
                Kind::DiagnosticReport => vec![r.report],
                Kind::Provenance => r
                    .provenances
                    .into_iter()
                    .filter(|p| {
                        target.as_ref().is_none_or(|t| {
                            p["target"]
                                .as_array()
                                .is_some_and(|ts| ts.iter().any(|x| x["reference"] == *t))
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    let total = matches.len();
    let page: Vec<Value> = matches.into_iter().skip(q.offset).take(q.count).collect();
    audit::append(
        &*client,
        &who,
        FHIR_READ,
        json!({"type": kind.name(), "query": q.pairs, "offset": q.offset,
               "count": page.len(), "total": total}),
    )
    .await?;
    Ok(fhir_json(
        StatusCode::OK,
        &search::bundle(&base(&s, &headers), kind, &q, total, page),
    ))
}

/// `GET /fhir/Observation`
pub async fn observation_search(
    State(s): State<HttpState>,
    a: Authorised,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    run_search(s, a, headers, raw, Kind::Observation).await
}

/// `GET /fhir/DiagnosticReport`
pub async fn report_search(
    State(s): State<HttpState>,
    a: Authorised,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    run_search(s, a, headers, raw, Kind::DiagnosticReport).await
}

/// `GET /fhir/Provenance`
pub async fn provenance_search(
    State(s): State<HttpState>,
    a: Authorised,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    run_search(s, a, headers, raw, Kind::Provenance).await
}

/// One resource by id: the records `filter` selects are rendered and `pick` finds it; the read
/// is audited whether found or not.
async fn read_one(
    s: HttpState,
    a: Authorised,
    kind: &str,
    id: String,
    filter: Option<Filter>,
    pick: impl Fn(Rendered) -> Option<Value>,
) -> Result<Response, FhirError> {
    let who = reader(a)?;
    let client = s.db.client().await.map_err(HttpError::from)?;
    let found = match filter.filter(|_| search::valid_id(&id)) {
        Some(f) => rendered(&s, &client, &f).await?.into_iter().find_map(&pick),
        None => None,
    };
    audit::append(
        &*client,
        &who,
        FHIR_READ,
        json!({"type": kind, "id": id, "count": usize::from(found.is_some())}),
    )
    .await?;
    match found {
        Some(r) => Ok(fhir_json(StatusCode::OK, &r)),
        None => Err(FhirError::NotFound(format!("{kind}/{id}"))),
    }
}

fn by_prefix(id: &str) -> Option<Filter> {
    search::record_prefix(id).map(|p| Filter {
        record_prefix: Some(p),
        limit: 16,
        ..Default::default()
    })
}

/// `GET /fhir/Observation/{id}`
pub async fn observation_read(
    State(s): State<HttpState>,
    a: Authorised,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let f = by_prefix(&id);
    let want = id.clone();
    read_one(s, a, "Observation", id, f, move |r| {
        r.observations
            .into_iter()
            .map(|o| o.resource)
            .find(|o| o["id"] == want.as_str())
    })
    .await
}

/// `GET /fhir/Provenance/{id}`
pub async fn provenance_read(
    State(s): State<HttpState>,
    a: Authorised,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let f = by_prefix(&id);
    let want = id.clone();
    read_one(s, a, "Provenance", id, f, move |r| {
        r.provenances.into_iter().find(|p| p["id"] == want.as_str())
    })
    .await
}

/// `GET /fhir/DiagnosticReport/{id}` (the record id; a superseded record's report too).
pub async fn report_read(
    State(s): State<HttpState>,
    a: Authorised,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let f = record::ids::is_sha256_hex(&id).then(|| Filter {
        record_ids: vec![id.clone()],
        limit: 1,
        ..Default::default()
    });
    read_one(s, a, "DiagnosticReport", id, f, |r| Some(r.report)).await
}

/// `GET /fhir/DocumentReference/{id}`
pub async fn document_read(
    State(s): State<HttpState>,
    a: Authorised,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let f = id
        .strip_prefix("img-")
        .filter(|p| p.len() == 60)
        .map(|p| Filter {
            image_prefix: Some(p.to_owned()),
            limit: 1,
            ..Default::default()
        });
    let want = id.clone();
    read_one(s, a, "DocumentReference", id, f, move |r| {
        Some(r.document).filter(|d| d["id"] == want.as_str())
    })
    .await
}

/// `GET /fhir/Device/{id}`: as the device's newest export describes it.
pub async fn device_read(
    State(s): State<HttpState>,
    a: Authorised,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let f = Some(Filter {
        device: Some(search::device_of(&id)),
        limit: 1,
        ..Default::default()
    });
    read_one(s, a, "Device", id, f, |r| Some(r.device)).await
}

/// `GET /fhir/metadata`: what this server does.
pub async fn metadata(State(s): State<HttpState>) -> Response {
    fhir_json(StatusCode::OK, &capability_statement(s.tls))
}

/// The CapabilityStatement.
pub fn capability_statement(tls: bool) -> Value {
    let param = |name: &str, kind: &str, doc: &str| json!({"name": name, "type": kind, "documentation": doc});
    let patient = param(
        "patient",
        "reference",
        "The chart number (Patient is referenced by identifier in the configured system; \
         patient:identifier=system|value also works). Required unless target is given.",
    );
    let date = param(
        "date",
        "date",
        "Exam date, YYYY-MM-DD with prefix eq, ne, ge, le, gt or lt; repeat for a range.",
    );
    let paging = "Results page with _count (1-500, default 50) and the next link (_offset). \
                  Unknown parameters are refused with 400.";
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "publisher": "examlink",
        "kind": "instance",
        "software": {"name": "examlink hub", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "examlink hub: ophthalmic exam results, read-only"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": paging,
            "security": {"cors": false, "description": format!(
                "Bearer token from POST /api/token (or a page session) of a reader, reviewer or \
                 admin; every read is audited.{}", if tls { "" } else { " This hub runs without TLS." })},
            "resource": [
                {"type": "Observation", "interaction": [{"code": "read"}, {"code": "search-type"}],
                 "documentation": paging,
                 "searchParam": [patient, date,
                     param("code", "token", "system|code or code; comma-separated alternatives; matches Observation.code")]},
                {"type": "DiagnosticReport", "interaction": [{"code": "read"}, {"code": "search-type"}],
                 "searchParam": [patient, date]},
                {"type": "Provenance", "interaction": [{"code": "read"}, {"code": "search-type"}],
                 "searchParam": [patient, param("target", "reference", "Observation/<id> or DiagnosticReport/<id>")]},
                {"type": "DocumentReference", "interaction": [{"code": "read"}]},
                {"type": "Device", "interaction": [{"code": "read"}]},
            ],
        }],
    })
}
