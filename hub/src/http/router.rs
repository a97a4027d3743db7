//! The routes, the state the handlers share, and the error every handler returns.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::load::Db;
use crate::users::Logins;

use super::{api, blind_page, pages, patients_page, review_page, session};

/// A request that failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The database did not answer (or the audit entry could not be written).
    #[error("database unavailable: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A bad query parameter or form field.
    #[error("{0}")]
    BadRequest(String),
    /// No valid session.
    #[error("login required: log in at /login, or send Authorization: Bearer <token from POST /api/token>")]
    Unauthorized,
    /// The session's role may not do this, or the CSRF token is missing or wrong.
    #[error("{0}")]
    Forbidden(String),
    /// Wrong user name or password.
    #[error("wrong user name or password")]
    BadLogin,
    /// Too many failed logins from this address.
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    Backoff(Duration),
    /// Adding a device that exists, and the like.
    #[error("{0}")]
    Conflict(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let text = self.to_string();
        match self {
            HttpError::Db(_) => (StatusCode::SERVICE_UNAVAILABLE, text).into_response(),
            HttpError::BadRequest(_) => (StatusCode::BAD_REQUEST, text).into_response(),
            HttpError::Unauthorized | HttpError::BadLogin => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"examlink\"")],
                text,
            )
                .into_response(),
            HttpError::Forbidden(_) => (StatusCode::FORBIDDEN, text).into_response(),
            HttpError::Backoff(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
                text,
            )
                .into_response(),
            HttpError::Conflict(_) => (StatusCode::CONFLICT, text).into_response(),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The API's own connection (queries under `load.api_statement_timeout_ms`).
    pub db: Arc<Db>,
    /// Logins and session lookups (on the login connection, never the API's).
    pub logins: Arc<Logins>,
    /// How recent a status must be for "online".
    pub online_window_secs: u64,
    /// Session lifetime (the cookie's Max-Age).
    pub session_ttl: Duration,
    /// Whether the listener speaks TLS (the cookie is then `Secure`).
    pub tls: bool,
    /// The template versions (review decisions are checked against a record's own version).
    pub catalog: Arc<crate::templates::Catalog>,
    /// Which stages ended unexpectedly (`/healthz` fails while any did).
    pub stages: Arc<crate::supervise::StageHealth>,
    /// Which fields are keyed blind by two reviewers.
    pub review: Arc<crate::review::ReviewConfig>,
    /// How FHIR resources are written (`/fhir`).
    pub fhir: Arc<crate::fhir::FhirConfig>,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics_text))
        .route("/api/token", post(session::token))
        .route("/api/logout", post(session::api_logout))
        .route("/api/records", get(api::records))
        .route("/api/devices", get(api::devices).post(api::add_device))
        .route("/api/audit", get(api::audit_trail))
        .route(
            "/api/review",
            get(api::review_queue).post(api::review_resolve),
        )
        .route("/login", get(pages::login_form).post(session::page_login))
        .route("/logout", post(session::page_logout))
        .route(
            "/review",
            get(review_page::review_page).post(review_page::review_decide),
        )
        .route(
            "/review/patients",
            get(patients_page::patients_page).post(patients_page::open_for_matching),
        )
        .route(
            "/review/blind",
            get(blind_page::blind_page).post(blind_page::blind_answer),
        )
        .route("/review/quality", get(blind_page::quality_page))
        .route("/", get(pages::fleet_page))
        .merge(crate::fhir::serve::routes())
        .with_state(state)
}
