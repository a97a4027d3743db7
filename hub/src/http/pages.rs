//! The HTML pages: the login form and the fleet status page (with a logout form carrying the
//! session's CSRF token). Every value shown is HTML-escaped.

use axum::extract::State;
use axum::response::Html;

use crate::users::Permission;

use super::api::fleet;
use super::router::{HttpError, HttpState};
use super::session::Authed;

/// HTML-escapes `s`.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Hidden form inputs, one per `(name, value)`, the values escaped.
pub fn hidden_inputs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value)
            )
        })
        .collect()
}

/// `GET /` (reader): the fleet.
pub async fn fleet_page(State(s): State<HttpState>, a: Authed) -> Result<Html<String>, HttpError> {
    let who = a.require(Permission::ReadRecords)?;
    let fleet = fleet(&s).await?;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>examlink hub</title>\
         <style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}\
         .off{color:#999}.warn{background:#fdd}</style></head><body><h1>examlink hub</h1>",
    );
    let online = fleet.iter().filter(|d| d.online).count();
    html += &format!("<p>{} devices, {online} online.</p><table><tr><th>device</th><th>type</th>\
        <th>online</th><th>last seen</th><th>backlog</th><th>records</th><th>deferred</th><th>quarantined</th>\
        <th>to review</th><th>rejects</th><th>agent</th><th>last error</th><th>last quarantined</th></tr>", fleet.len());
    for d in &fleet {
        html += &format!(
            "<tr class=\"{}{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if d.online { "on" } else { "off" },
            // A device whose exports keep being refused, or whose hub keeps rejects, stands out.
            if d.quarantined > 0 || d.rejects > 0 || d.last_error.is_some() { " warn" } else { "" },
            escape(&d.device_id),
            escape(&d.device_type),
            if d.revoked { "revoked" } else if d.online { "yes" } else { "no" },
            d.last_seen_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
            d.backlog.map(|b| b.to_string()).unwrap_or_default(),
            d.records,
            d.deferred,
            d.quarantined,
            d.review_pending,
            d.rejects,
            escape(d.agent_version.as_deref().unwrap_or("")),
            escape(d.last_error.as_deref().unwrap_or("")),
            escape(d.last_quarantine.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</table>");
    if who.may(Permission::ResolveReviews) {
        html += "<p><a id=\"review\" href=\"/review\">Review station</a> · \
                 <a id=\"blind-checks\" href=\"/review/blind\">Blind checks</a></p>";
    }
    html += "<p><a id=\"quality\" href=\"/review/quality\">Quality: fields read ok, checked blind</a></p>";
    html += &format!(
        "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         {} ({}) <button>Log out</button></form></body></html>",
        escape(&who.csrf),
        escape(&who.user),
        who.role.as_str()
    );
    Ok(Html(html))
}

/// `GET /login`
pub async fn login_form() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>examlink hub: log in</title></head>\
         <body><h1>examlink hub</h1><form method=\"post\" action=\"/login\">\
         <label>User <input name=\"name\" autocomplete=\"username\"></label> \
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label> \
         <button>Log in</button></form></body></html>",
    )
}
