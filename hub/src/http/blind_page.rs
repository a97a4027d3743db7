//! The quality-sampling pages: the blind check and the ok-but-wrong estimate
//! ([`crate::quality`]). Server-rendered HTML in the review station's style, keyboard first.
//!
//! - `GET /review/blind` (reviewer) shows the oldest pending blind check (`?skip=N`: the
//!   N+1-th): the field's crop, large, its name, the device and the template. Never the value
//!   the reader stored: the reviewer types what the crop shows and presses **Enter**; **Tab**
//!   skips; **Alt+A** says the export shows no value.
//! - `POST /review/blind` takes the answer through [`crate::quality::answer`] (the field's
//!   grammar and range; audited) and goes on to the next check at once (saying whether the last
//!   one agreed); an answer that fails its checks comes back in place with the reason.
//! - `GET /review/quality` (reader) shows, per template and field and overall, the checks
//!   answered, the disagreements, the rate and its 95% Wilson score interval, and how many
//!   checks are pending. Counts only: no patient data.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use crate::quality::{self, Answer, Check, QualityError};
use crate::users::{Permission, Session};

use super::pages::{escape, hidden_inputs};
use super::review_page::{SCRIPT, STYLE};
use super::router::{HttpError, HttpState};
use super::session::Authed;

/// `GET /review/blind` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlindQuery {
    /// Checks to pass over (Tab).
    #[serde(default)]
    skip: i64,
    /// How the previous answer went: `agreed` or `disagreed`.
    #[serde(default)]
    last: Option<String>,
}

/// `POST /review/blind` form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlindAnswer {
    record_id: String,
    field: String,
    #[serde(default)]
    value: String,
    /// `value` (Enter) or `absent`.
    action: String,
    csrf: String,
    #[serde(default)]
    skip: i64,
}

/// `GET /review/blind` (reviewer).
pub async fn blind_page(
    State(s): State<HttpState>,
    a: Authed,
    Query(q): Query<BlindQuery>,
) -> Result<Html<String>, HttpError> {
    let who = a.require(Permission::ResolveReviews)?;
    let skip = q.skip.clamp(0, 999);
    let shown = quality::next(&*s.db.client().await?, &who.user, skip).await?;
    let last = match q.last.as_deref() {
        Some("agreed") => Some("Your last answer agreed with the read."),
        Some("disagreed") => {
            Some("Your last answer differed from the read: that field went to the review queue.")
        }
        _ => None,
    };
    Ok(Html(Page::of(who, skip, &shown).render(last, None, "")))
}

/// `POST /review/blind` (reviewer): one answer, then the next check (303), or the same check
/// with the reason (400) when the answer fails the field's checks.
pub async fn blind_answer(
    State(s): State<HttpState>,
    a: Authed,
    headers: HeaderMap,
    Form(f): Form<BlindAnswer>,
) -> Result<Response, HttpError> {
    let who = a.require_change(Permission::ResolveReviews, &headers, Some(&f.csrf))?;
    let answer = match f.action.as_str() {
        "value" if f.value.trim().is_empty() => {
            return Err(HttpError::BadRequest(
                "type what the crop shows, or Alt+A when it shows no value".into(),
            ))
        }
        "value" => Answer::Value(f.value.trim().to_owned()),
        "absent" => Answer::Absent,
        other => {
            return Err(HttpError::BadRequest(format!(
                "action {other:?}: use value or absent"
            )))
        }
    };
    let client = s.db.client().await?;
    let outcome = quality::answer(
        &client,
        &s.catalog,
        &who.user,
        &f.record_id,
        &f.field,
        &answer,
    )
    .await;
    let skip = f.skip.clamp(0, 999);
    let next = |last: &str| {
        Ok((
            StatusCode::SEE_OTHER,
            [(
                header::LOCATION,
                format!("/review/blind?skip={skip}&last={last}"),
            )],
        )
            .into_response())
    };
    match outcome {
        Ok(a) if a.agrees => next("agreed"),
        Ok(_) => next("disagreed"),
        // Answered by someone else meanwhile: on to the next one.
        Err(QualityError::NotPending { .. }) => next("none"),
        Err(QualityError::Db(e)) => Err(HttpError::Db(e)),
        Err(e) => {
            let shown = quality::next(&client, &who.user, skip).await?;
            let html = Page::of(who, skip, &shown).render(None, Some(&e.to_string()), &f.value);
            Ok((StatusCode::BAD_REQUEST, Html(html)).into_response())
        }
    }
}

/// What the blind-check page shows.
struct Page<'a> {
    user: &'a str,
    csrf: &'a str,
    skip: i64,
    pending: i64,
    check: Option<&'a Check>,
}

impl<'a> Page<'a> {
    /// The page for `who` at queue position `skip`, showing `shown` (what [`quality::next`]
    /// returned).
    fn of(who: &'a Session, skip: i64, shown: &'a (Option<Check>, i64)) -> Self {
        Self {
            user: &who.user,
            csrf: &who.csrf,
            skip,
            pending: shown.1,
            check: shown.0.as_ref(),
        }
    }

    fn render(&self, last: Option<&str>, error: Option<&str>, typed: &str) -> String {
        let mut h = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>examlink blind check</title>\
             <style>{STYLE}</style><script>{SCRIPT}</script></head><body>\
             <p class=\"muted\"><a href=\"/\">fleet</a> · <a href=\"/review\">review station</a> · \
             blind check · <a href=\"/review/quality\">quality</a> · {}</p>",
            escape(self.user)
        );
        if let Some(l) = last {
            h += &format!("<p id=\"last\">{}</p>", escape(l));
        }
        let Some(c) = self.check else {
            h += "<h1 id=\"empty\">No blind check pending</h1><p>Every sampled field is checked";
            if self.skip > 0 {
                h += " or skipped: <a href=\"/review/blind\">start again from the first</a>";
            }
            h += ".</p></body></html>";
            return h;
        };
        h += &format!(
            "<h1 id=\"check\">{field}</h1>\
             <p id=\"blind\"><b>Blind check</b>: type what the crop shows. The reader read this \
             field as ok; its value is hidden, so that your reading is your own. {pending} pending.</p>\
             <p><img class=\"crop\" alt=\"the field as exported\" src=\"data:image/png;base64,{png}\"></p>",
            field = escape(&c.field),
            pending = self.pending,
            png = c.crop_png_base64,
        );
        if let Some(e) = error {
            h += &format!("<p class=\"err\" id=\"error\">{}</p>", escape(e));
        }
        let fields = hidden_inputs(&[
            ("record_id", &c.record_id),
            ("field", &c.field),
            ("csrf", self.csrf),
            ("skip", &self.skip.to_string()),
        ]);
        h += &format!(
            "<form method=\"post\" action=\"/review/blind\">{fields}\
             <input name=\"value\" autocomplete=\"off\" spellcheck=\"false\" value=\"{typed}\" \
             aria-label=\"what the crop shows, as the export prints it\"> \
             <button name=\"action\" value=\"value\">Answer <kbd>Enter</kbd></button> \
             <button name=\"action\" value=\"absent\" accesskey=\"a\">No value shown <kbd>Alt+A</kbd></button> \
             <a id=\"skip\" href=\"/review/blind?skip={next}\">Skip <kbd>Tab</kbd></a></form>\
             <p>Device {device} ({kind}) · template {template}</p></body></html>",
            typed = escape(typed),
            next = self.skip + 1,
            device = escape(&c.device_id),
            kind = escape(&c.device_type),
            template = escape(&c.template),
        );
        h
    }
}

/// `GET /review/quality` (reader): the ok-but-wrong estimate.
pub async fn quality_page(
    State(s): State<HttpState>,
    a: Authed,
) -> Result<Html<String>, HttpError> {
    let who = a.require(Permission::ReadRecords)?;
    let client = s.db.client().await?;
    let estimates = quality::estimates(&client).await?;
    let pending = quality::pending_count(&client).await?;
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>examlink quality</title>\
         <style>{STYLE}td.n{{text-align:right}}tr.all{{font-weight:bold}}</style></head><body>\
         <p class=\"muted\"><a href=\"/\">fleet</a> · <a href=\"/review\">review station</a> · \
         <a href=\"/review/blind\">blind check</a> · quality · {}</p>\
         <h1>Fields read ok, checked blind</h1>\
         <p>A share of the fields the reader marked ok is checked blind by a reviewer. The \
         disagreements estimate how often an ok field is wrong, with a 95% Wilson score \
         interval. <span id=\"pending\">{pending}</span> checks pending.</p>\
         <table id=\"quality\"><tr><th>template</th><th>field</th><th>answered</th>\
         <th>disagreed</th><th>rate</th><th>95% interval</th></tr>",
        escape(&who.user)
    );
    let percent = |v: f64| format!("{:.2}%", v * 100.0);
    for e in &estimates {
        let (lower, upper) = e.interval();
        let (class, template, field) = match (&e.template, &e.field) {
            (Some(t), Some(f)) => ("field", escape(t), escape(f)),
            _ => ("all", "all".to_owned(), "all".to_owned()),
        };
        h += &format!(
            "<tr class=\"{class}\"><td>{template}</td><td>{field}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            e.answered,
            e.disagreed,
            e.rate().map(percent).unwrap_or_else(|| "n/a".into()),
            if e.answered > 0 {
                format!("{} to {}", percent(lower), percent(upper))
            } else {
                "n/a".into()
            },
        );
    }
    h += "</table></body></html>";
    Ok(Html(h))
}
