//! The patients to match (#13): every exam stored without a patient, newest first, so none
//! stays invisible to a patient query. Each row links to its `patient_id` item on the review
//! page (typed, checked, double-keyed and audited like any other); an exam with no pending
//! item (the chart number absent on the export, a match undone) gets one with **Match**.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use crate::review::{self, ReviewError, Unmatched};
use crate::users::Permission;

use super::pages::escape;
use super::review_page::head;
use super::router::{HttpError, HttpState};
use super::session::Authed;

/// Exams listed per page.
const LIST: i64 = 200;

/// `POST /review/patients` form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenForm {
    record_id: String,
    csrf: String,
}

/// `GET /review/patients` (reviewer).
pub async fn patients_page(
    State(s): State<HttpState>,
    a: Authed,
) -> Result<Html<String>, HttpError> {
    let who = a.require(Permission::ResolveReviews)?;
    let client = s.db.client().await?;
    let list = review::unmatched(&client, &who.user, LIST).await?;
    Ok(Html(render(&who.user, &who.csrf, &list)))
}

/// `POST /review/patients` (reviewer): opens the exam's `patient_id` item, then shows it.
pub async fn open_for_matching(
    State(s): State<HttpState>,
    a: Authed,
    headers: HeaderMap,
    Form(f): Form<OpenForm>,
) -> Result<Response, HttpError> {
    let who = a.require_change(Permission::ResolveReviews, &headers, Some(&f.csrf))?;
    let id = record::RecordId::parse(&f.record_id)
        .map_err(|e| HttpError::BadRequest(format!("record_id: {e}")))?;
    let client = s.db.client().await?;
    match review::open_for_matching(&client, &who.user, id.as_str()).await {
        Ok(()) => {}
        Err(ReviewError::Db(e)) => return Err(HttpError::Db(e)),
        Err(e) => return Err(HttpError::Conflict(e.to_string())),
    }
    // A record id is 64 hex digits: safe in a URL as it is.
    let to = format!(
        "/review?record={}&field=patient_id&back=patients",
        id.as_str()
    );
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
}

fn render(user: &str, csrf: &str, list: &[Unmatched]) -> String {
    let mut h = head(user, "patients to match");
    h += &format!(
        "<h1 id=\"patients\">Patients to match</h1><p>{} exam(s) stored without a patient \
         (newest first{}). Each is matched through its <code>patient_id</code> item: the same \
         checks, double keying and audit as every review.</p>",
        list.len(),
        if list.len() as i64 == LIST {
            ", the first 200"
        } else {
            ""
        },
    );
    if list.is_empty() {
        h += "<p id=\"none\">Every exam has a patient.</p></body></html>";
        return h;
    }
    h += "<table><tr><th>exam</th><th>device</th><th>template</th><th>file</th><th>taken</th>\
          <th>patient_id item</th><th></th></tr>";
    for u in list {
        let exam = format!(
            "{} {}",
            u.exam_date.as_deref().unwrap_or("date unknown"),
            u.exam_time.as_deref().unwrap_or("")
        );
        let action = match &u.pending {
            Some(_) => format!(
                "<a class=\"match\" href=\"/review?record={}&amp;field=patient_id&amp;back=patients\">Match</a>",
                escape(&u.record_id)
            ),
            None => format!(
                "<form method=\"post\" action=\"/review/patients\">\
                 <input type=\"hidden\" name=\"record_id\" value=\"{}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button class=\"match\">Match</button></form>",
                escape(&u.record_id),
                escape(csrf)
            ),
        };
        h += &format!(
            "<tr data-record=\"{rid}\"><td>{exam}</td><td>{dev}</td><td>{tpl}</td><td>{file}</td>\
             <td>{taken}</td><td>{item}</td><td>{action}</td></tr>",
            rid = escape(&u.record_id),
            exam = escape(exam.trim()),
            dev = escape(&u.device_id),
            tpl = escape(&u.template),
            file = escape(&u.source_file),
            taken = u.captured_at.format("%Y-%m-%d %H:%M UTC"),
            item = match &u.pending {
                Some(status) if u.entries > 0 => format!(
                    "{} ({} blind entr{})",
                    escape(status),
                    u.entries,
                    if u.entries == 1 { "y" } else { "ies" }
                ),
                Some(status) => escape(status),
                None => "none pending".to_owned(),
            },
        );
    }
    h += "</table></body></html>";
    h
}
