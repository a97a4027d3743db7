//! The review station page (#13): one flagged field at a time, in clinical order, keyboard
//! first. Server-rendered HTML and a few lines of inline script; no build step.
//!
//! - `GET /review` shows the first pending item (`?skip=N`: the N+1-th): the field's crop, large;
//!   what the reader read, its confidence and the reason for the flag; device, template and
//!   firmware; the exam's other fields; this patient's earlier values of the same field.
//! - Keys: type the value as the export prints it and press **Enter**; **Tab** skips to the next
//!   item; **Alt+A** absent on the export; **Alt+E** cannot tell, escalate; **Alt+W** wrong
//!   patient / not this exam (the exam loses its patient and goes to the patients to match).
//! - `GET /review?record=R&field=F` shows that one item (from the patients list: `&back=patients`
//!   returns there after the decision).
//! - `GET /review/patients` lists the exams without a patient; each is matched through its
//!   `patient_id` item (`POST /review/patients` opens one where there is none).
//! - A double-keyed field (`[review] double_key`: `patient_id`, axial length, K1/K2) is keyed
//!   blind: the reader's guess and the other entries are not shown; two equal entries resolve it,
//!   a mismatch waits for a third reviewer.
//! - `POST /review` applies the decision through [`crate::review::resolve`] (the same grammar,
//!   range and rule checks as the agent's; audited) and goes on to the next item at once; a value
//!   that fails its checks comes back in place with the reason.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use crate::review::{self, Context, Decision, Item, ReviewError};
use crate::users::Permission;

use super::pages::{escape, hidden_inputs};
use super::router::{HttpError, HttpState};
use super::session::Authed;

/// `GET /review` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Items to pass over (Tab).
    #[serde(default)]
    skip: i64,
    /// One item: its record ...
    record: Option<String>,
    /// ... and field.
    field: Option<String>,
    /// Where to go after the decision (`patients`).
    back: Option<String>,
}

/// `POST /review` form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageDecision {
    record_id: String,
    field: String,
    #[serde(default)]
    value: String,
    /// `value` (Enter), `absent` or `escalate`.
    action: String,
    csrf: String,
    #[serde(default)]
    skip: i64,
    /// `patients`: back to the patients list after the decision.
    #[serde(default)]
    back: String,
}

/// Which item a page shows: the one at a queue position, or one by name.
#[derive(Debug, Clone)]
enum Target {
    At(i64),
    One { record: String, field: String },
}

impl Target {
    fn of(q: &PageQuery) -> Self {
        match (&q.record, &q.field) {
            (Some(record), Some(field)) => Target::One {
                record: record.clone(),
                field: field.clone(),
            },
            _ => Target::At(q.skip),
        }
    }
}

/// The item `target` names, with its context.
async fn item_at(
    s: &HttpState,
    actor: &str,
    target: &Target,
) -> Result<Option<(Item, Context)>, HttpError> {
    let client = s.db.client().await?;
    let item = match target {
        Target::At(skip) => review::pending(&client, &s.review, actor, 1, (*skip).clamp(0, 999))
            .await?
            .into_iter()
            .next(),
        Target::One { record, field } => {
            review::item(&client, &s.review, actor, record, field).await?
        }
    };
    let Some(item) = item else {
        return Ok(None);
    };
    let context = review::context(&client, actor, &item.record_id, &item.field).await?;
    Ok(Some((item, context)))
}

/// `GET /review` (reviewer).
pub async fn review_page(
    State(s): State<HttpState>,
    a: Authed,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, HttpError> {
    let who = a.require(Permission::ResolveReviews)?;
    let target = Target::of(&q);
    let item = item_at(&s, &who.user, &target).await?;
    let page = Page {
        user: &who.user,
        csrf: &who.csrf,
        skip: q.skip,
        back: q.back.as_deref().unwrap_or(""),
        one: matches!(target, Target::One { .. }),
    };
    Ok(Html(render(&page, item.as_ref(), None, "")))
}

/// `POST /review` (reviewer): one decision, then the next item (303), or the same item with the
/// reason (400) when the value fails its checks.
pub async fn review_decide(
    State(s): State<HttpState>,
    a: Authed,
    headers: HeaderMap,
    Form(f): Form<PageDecision>,
) -> Result<Response, HttpError> {
    let who = a.require_change(Permission::ResolveReviews, &headers, Some(&f.csrf))?;
    let decision = match f.action.as_str() {
        "value" if f.value.trim().is_empty() => {
            return Err(HttpError::BadRequest(
                "type the value as the export prints it, or Alt+A (absent) / Alt+E (escalate)"
                    .into(),
            ))
        }
        "value" => Decision::Value(f.value.trim().to_owned()),
        "absent" => Decision::Absent,
        "escalate" => Decision::Escalate,
        "wrong_exam" => Decision::WrongExam,
        other => {
            return Err(HttpError::BadRequest(format!(
                "action {other:?}: use value, absent, escalate or wrong_exam"
            )))
        }
    };
    let client = s.db.client().await?;
    let outcome = review::resolve(
        &client,
        &s.catalog,
        &s.review,
        &who.user,
        &f.record_id,
        &f.field,
        &decision,
    )
    .await;
    drop(client);
    // An item that stays pending in place (escalated; another field of a wrong exam): the
    // next one is one further on.
    let stays = matches!(decision, Decision::Escalate | Decision::WrongExam);
    let next = f.skip + i64::from(stays);
    let back = f.back == "patients";
    match outcome {
        Ok(_) | Err(ReviewError::NotPending { .. } | ReviewError::AlreadyKeyed { .. }) => {
            let to = if back {
                "/review/patients".to_owned()
            } else {
                format!("/review?skip={next}")
            };
            Ok((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
        }
        Err(ReviewError::Db(e)) => Err(HttpError::Db(e)),
        Err(e) => {
            let target = if back {
                Target::One {
                    record: f.record_id.clone(),
                    field: f.field.clone(),
                }
            } else {
                Target::At(f.skip)
            };
            let item = item_at(&s, &who.user, &target).await?;
            let page = Page {
                user: &who.user,
                csrf: &who.csrf,
                skip: f.skip,
                back: &f.back,
                one: back,
            };
            let html = render(&page, item.as_ref(), Some(&e.to_string()), &f.value);
            Ok((StatusCode::BAD_REQUEST, Html(html)).into_response())
        }
    }
}

/// The review station's look (also the blind-check pages').
pub(super) const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;max-width:60em}\
    .crop{height:110px;image-rendering:pixelated;border:1px solid #888;background:#fff}\
    .ctx{margin:0 0 1em 0}.ctx svg{width:100%;max-width:48em;border:1px solid #888}\
    .ctx rect{fill:none;stroke:#e00;stroke-width:2}\
    .read{font-size:1.4em;font-family:monospace}.err{color:#b00;font-weight:bold}\
    input[name=value]{font-size:1.6em;font-family:monospace;width:12em}\
    td,th{padding:1px 10px;text-align:left}.muted{color:#777}kbd{border:1px solid #999;padding:0 3px}";

/// Tab (with nothing typed, or always) skips; the accesskeys give Alt+A and Alt+E.
pub(super) const SCRIPT: &str = "document.addEventListener('DOMContentLoaded',()=>{\
    const v=document.querySelector('input[name=value]');if(!v)return;v.focus();\
    v.addEventListener('keydown',e=>{if(e.key==='Tab'){e.preventDefault();\
    location.href=document.getElementById('skip').href;}});});";

/// Who is looking, and how the page was reached.
struct Page<'a> {
    user: &'a str,
    csrf: &'a str,
    skip: i64,
    /// `patients` when reached from the patients list.
    back: &'a str,
    /// One item by name (no queue position).
    one: bool,
}

/// The page's head and navigation.
pub(super) fn head(user: &str, title: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>examlink {title}</title>\
         <style>{STYLE}</style><script>{SCRIPT}</script></head><body>\
         <p class=\"muted\"><a href=\"/\">fleet</a> · <a href=\"/review\">review station</a> · \
         <a id=\"patients-link\" href=\"/review/patients\">patients to match</a> · \
         <a id=\"blind-link\" href=\"/review/blind\">blind check</a> · \
         <a href=\"/review/quality\">quality</a> · {} </p>",
        escape(user)
    )
}

fn render(
    p: &Page<'_>,
    item: Option<&(Item, Context)>,
    error: Option<&str>,
    typed: &str,
) -> String {
    let (user, csrf, skip) = (p.user, p.csrf, p.skip);
    let mut h = head(user, "review");
    let Some((it, ctx)) = item else {
        if p.one {
            h += "<h1 id=\"empty\">Not pending for you</h1><p>This item is resolved, or you keyed \
                  it already. <a href=\"/review/patients\">Back to the patients to match</a>.</p>\
                  </body></html>";
            return h;
        }
        h += "<h1 id=\"empty\">Nothing to review</h1><p>Every flagged field is resolved";
        if skip > 0 {
            h += " or skipped: <a href=\"/review\">start again from the first</a>";
        }
        h += ".</p></body></html>";
        return h;
    };
    h += &format!(
        "<h1 id=\"item\">{field}</h1><p>{status}{reason}</p>",
        field = escape(&it.field),
        status = escape(&it.status),
        reason = it
            .reason
            .as_deref()
            .map(|r| format!(": {}", escape(r)))
            .unwrap_or_default(),
    );
    match &it.crop_png_base64 {
        Some(png) => {
            h += &format!(
                "<p><img class=\"crop\" alt=\"the field as exported\" src=\"data:image/png;base64,{png}\"></p>"
            )
        }
        None => h += "<p class=\"muted\">(no crop was sent for this field)</p>",
    }
    if let (Some(png), Some(&[x, y, w, hh]), Some((vw, vh))) = (
        &it.context_png_base64,
        it.context_box.as_deref(),
        it.context_size,
    ) {
        // The box is outlined over the image in the image's own pixels (the page scales both).
        h += &format!(
            "<figure id=\"context\" class=\"ctx\"><svg viewBox=\"0 0 {vw} {vh}\" \
             role=\"img\" aria-label=\"the export around the field, the field outlined\">\
             <image width=\"{vw}\" height=\"{vh}\" href=\"data:image/png;base64,{png}\"/>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{hh}\"/></svg>\
             <figcaption class=\"muted\">the export around it</figcaption></figure>",
        );
    }
    if it.blind {
        h += &format!(
            "<p id=\"blind\"><b>Blind entry</b>: type what the crop shows. This field is keyed by two \
             reviewers; the reader's guess and the other entries are hidden ({} made so far).</p>",
            it.entries
        );
    } else {
        h += &format!(
            "<p>The reader read <span class=\"read\" id=\"read\">{}</span> (confidence {}).</p>",
            escape(it.raw.as_deref().unwrap_or("nothing")),
            it.confidence
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    if let Some(e) = error {
        h += &format!("<p class=\"err\" id=\"error\">{}</p>", escape(e));
    }
    let fields = hidden_inputs(&[
        ("record_id", &it.record_id),
        ("field", &it.field),
        ("csrf", csrf),
        ("skip", &skip.to_string()),
        ("back", p.back),
    ]);
    let skip_to = if p.one {
        "/review/patients".to_owned()
    } else {
        format!("/review?skip={}", skip + 1)
    };
    h += &format!(
        "<form method=\"post\" action=\"/review\">{fields}\
         <input name=\"value\" autocomplete=\"off\" spellcheck=\"false\" value=\"{typed}\" \
         aria-label=\"value as the export prints it\"> \
         <button name=\"action\" value=\"value\">Accept <kbd>Enter</kbd></button> \
         <button name=\"action\" value=\"absent\" accesskey=\"a\">Absent <kbd>Alt+A</kbd></button> \
         <button name=\"action\" value=\"escalate\" accesskey=\"e\">Cannot tell <kbd>Alt+E</kbd></button> \
         <button name=\"action\" value=\"wrong_exam\" accesskey=\"w\">Wrong patient / not this exam <kbd>Alt+W</kbd></button> \
         <a id=\"skip\" href=\"{skip_to}\">Skip <kbd>Tab</kbd></a></form>",
        typed = escape(typed),
    );
    h += &format!(
        "<p>Device {} · template {} · firmware {} · patient {} · exam {}{}</p>",
        escape(&it.device_id),
        escape(&it.template),
        escape(&it.firmware),
        escape(it.patient_id.as_deref().unwrap_or("unknown")),
        escape(it.exam_date.as_deref().unwrap_or("unknown")),
        if it.escalated {
            " · <b>escalated before</b>"
        } else {
            ""
        },
    );
    if !ctx.earlier.is_empty() {
        h += "<h2>This patient's earlier exams</h2><table><tr><th>exam</th><th>value</th><th>status</th></tr>";
        for (date, value, status) in &ctx.earlier {
            h += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(date.as_deref().unwrap_or("")),
                escape(value.as_deref().unwrap_or("")),
                escape(status)
            );
        }
        h += "</table>";
    }
    h += "<h2>The exam's other fields</h2><table><tr><th>field</th><th>value</th><th>status</th></tr>";
    for (name, value, status) in &ctx.fields {
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(value.as_deref().unwrap_or("")),
            escape(status)
        );
    }
    h += "</table></body></html>";
    h
}
