//! HTTP (axum over hyper, TLS by default): health, Prometheus metrics, the query API and the
//! pages, behind people's logins ([`crate::users`]).
//!
//! | route | who | answer |
//! |---|---|---|
//! | `GET /healthz` | anyone | `200 ok` when every stage runs and PostgreSQL answers, else `503` with the reason |
//! | `GET /metrics` | anyone | Prometheus text format (no patient data; the blind-check counts and the ok-but-wrong estimate read from the database) |
//! | `POST /api/token` | anyone | form `name`, `password` → a bearer token (text); `401` wrong, `429` backing off |
//! | `POST /api/logout` | bearer | ends the token |
//! | `GET /api/records?patient_id=&device_id=&from=&to=&limit=&offset=` | reader | stored records, newest capture first; `from`/`to` RFC 3339 bounds on `captured_at`; `limit` ≤ 1000 (default 100); audited |
//! | `GET /api/devices` | reader | the fleet: type, last seen, online, backlog, agent version |
//! | `POST /api/devices` | admin | form `id`, `type` → `201` and the device's password (text, once); audited |
//! | `GET /api/audit?limit=&actor=&action=` | admin | the audit trail, JSON |
//! | `GET /api/review?limit=` | reviewer | pending review items in clinical order (identity, surgical values, the rest), with crops, JSON (audited) |
//! | `POST /api/review` | reviewer | form `record_id`, `field`, `value` (as printed) or `action=absent\|escalate\|wrong_exam` → the new revision; `400` with the reason when the value fails its checks, `409` when not pending |
//! | `GET /login`, `POST /login` | anyone | login form; sets the session cookie |
//! | `POST /logout` | page session + CSRF | ends the session |
//! | `GET /` | reader | the fleet as a plain HTML page |
//! | `GET /review?skip=` or `?record=&field=&back=` | reviewer | the review station: one pending item, keyboard first (audited) |
//! | `POST /review` | page session + CSRF, reviewer | form `record_id`, `field`, `action=value\|absent\|escalate\|wrong_exam`, `value`, `skip`, `back` → `303` to the next item; `400` with the page and the reason |
//! | `GET /review/patients` | reviewer | the exams without a patient, to match (audited) |
//! | `POST /review/patients` | page session + CSRF, reviewer | form `record_id` → opens its `patient_id` item, `303` to it |
//! | `GET /review/blind?skip=` | reviewer | a blind check (quality sampling): the crop of a field read ok, never its value (audited) |
//! | `POST /review/blind` | page session + CSRF, reviewer | form `record_id`, `field`, `action=value\|absent`, `value`, `skip` → `303` to the next check; `400` with the page and the reason |
//! | `GET /review/quality` | reader | the ok-but-wrong estimate per template and field, with its 95% Wilson interval |
//! | `GET /fhir/metadata` | anyone | the FHIR CapabilityStatement |
//! | `GET /fhir/Observation?patient=&date=&code=`, `/fhir/DiagnosticReport/{id}`, ... | reader | FHIR R4 (`application/fhir+json`), searchset Bundles with paging; audited; see [`crate::fhir::serve`] |
//!
//! Without a valid session: `401` (`WWW-Authenticate: Bearer`). With a role that may not:
//! `403`. A page session's changes (every POST but the login) need its CSRF token, as the
//! `csrf` form field or the `X-CSRF-Token` header; bearer tokens are not ambient, so they need
//! none. Modules:
//!
//! - [`router`]: the routes, their shared state, the error type.
//! - [`session`]: who is asking: bearer token or cookie, roles, CSRF; login and logout.
//! - [`api`]: the JSON API.
//! - [`pages`]: the HTML pages.
//! - [`review_page`]: the review station page.
//! - [`patients_page`]: the exams without a patient, to match.
//! - [`blind_page`]: the quality-sampling pages: the blind check and the estimate.
//! - [`serve`]: the accept loop: per-address connection cap, TLS, header timeout.

pub mod api;
pub mod blind_page;
pub mod pages;
pub mod patients_page;
pub mod review_page;
pub mod router;
pub mod serve;
pub mod session;

pub use router::{router, HttpError, HttpState};
pub use session::{Authed, PeerAddr};
