//! Who is asking. [`Authed`] extracts the session from `Authorization: Bearer <token>` (the
//! API) or the `examlink_session` cookie (pages), checked against the database on every
//! request, so a revoked user is out at once. [`Authed::require`] checks the role;
//! [`Authed::require_change`] also checks a page session's CSRF token.
//!
//! The cookie is `HttpOnly; SameSite=Strict` (and `Secure` over TLS); its CSRF token is a
//! second random value bound to the session, rendered into each form.

use std::net::{IpAddr, Ipv4Addr};

use axum::extract::{FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use crate::users::{LoginError, Permission, Session, SessionKind};

use super::router::{HttpError, HttpState};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "examlink_session";
/// The header a page's script may carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The client's address, put on every request by [`super::serve`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub IpAddr);

/// A request from a logged-in person.
#[derive(Debug, Clone)]
pub struct Authed(pub Session);

impl Authed {
    /// The session, if its role may do `p`; else `403`.
    pub fn require(&self, p: Permission) -> Result<&Session, HttpError> {
        if self.0.may(p) {
            Ok(&self.0)
        } else {
            Err(HttpError::Forbidden(format!(
                "{} ({}) may not {p:?}",
                self.0.user,
                self.0.role.as_str()
            )))
        }
    }

    /// As [`Authed::require`], for a change: a page session must also send its CSRF token
    /// (`csrf` form field, or the `X-CSRF-Token` header).
    pub fn require_change(
        &self,
        p: Permission,
        headers: &HeaderMap,
        form_csrf: Option<&str>,
    ) -> Result<&Session, HttpError> {
        let s = self.require(p)?;
        check_csrf(s, headers, form_csrf)?;
        Ok(s)
    }
}

fn check_csrf(s: &Session, headers: &HeaderMap, form_csrf: Option<&str>) -> Result<(), HttpError> {
    if s.kind == SessionKind::Api {
        return Ok(());
    }
    let given = form_csrf.or_else(|| headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()));
    match given {
        Some(t) if s.csrf_matches(t) => Ok(()),
        _ => Err(HttpError::Forbidden(
            "missing or wrong CSRF token (reload the page)".into(),
        )),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[axum::async_trait]
impl FromRequestParts<HttpState> for Authed {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, HttpError> {
        let (token, kind) = match parts.headers.get(AUTHORIZATION) {
            Some(v) => {
                let v = v.to_str().map_err(|_| HttpError::Unauthorized)?;
                let t = v.strip_prefix("Bearer ").ok_or(HttpError::Unauthorized)?;
                (t.trim(), SessionKind::Api)
            }
            None => (
                cookie(&parts.headers, COOKIE_NAME).ok_or(HttpError::Unauthorized)?,
                SessionKind::Page,
            ),
        };
        state
            .logins
            .session(token, kind)
            .await?
            .map(Authed)
            .ok_or(HttpError::Unauthorized)
    }
}

/// A login form.
#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
}

fn peer(p: Option<Extension<PeerAddr>>) -> IpAddr {
    p.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |Extension(PeerAddr(ip))| ip,
    )
}

fn login_error(e: LoginError) -> HttpError {
    match e {
        LoginError::BadCredentials => HttpError::BadLogin,
        LoginError::Backoff(d) => HttpError::Backoff(d),
        LoginError::Db(e) => HttpError::Db(e),
    }
}

/// `POST /api/token`: a bearer token for the API, as the response body.
pub async fn token(
    State(s): State<HttpState>,
    addr: Option<Extension<PeerAddr>>,
    Form(f): Form<LoginForm>,
) -> Result<String, HttpError> {
    let (token, _) = s
        .logins
        .login(&f.name, &f.password, peer(addr), SessionKind::Api)
        .await
        .map_err(login_error)?;
    Ok(token.expose().to_owned())
}

/// `POST /api/logout`: ends the bearer token.
pub async fn api_logout(State(s): State<HttpState>, a: Authed) -> Result<StatusCode, HttpError> {
    s.logins.logout(&a.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /login`: sets the session cookie and goes to the fleet page.
pub async fn page_login(
    State(s): State<HttpState>,
    addr: Option<Extension<PeerAddr>>,
    Form(f): Form<LoginForm>,
) -> Result<Response, HttpError> {
    let (token, _) = s
        .logins
        .login(&f.name, &f.password, peer(addr), SessionKind::Page)
        .await
        .map_err(login_error)?;
    let secure = if s.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        token.expose(),
        s.session_ttl.as_secs()
    );
    Ok((
        StatusCode::SEE_OTHER,
        [(SET_COOKIE, cookie), (LOCATION, "/".to_owned())],
    )
        .into_response())
}

/// The logout form.
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /logout`: ends the page session (CSRF token required) and clears the cookie.
pub async fn page_logout(
    State(s): State<HttpState>,
    a: Authed,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, HttpError> {
    check_csrf(&a.0, &headers, f.csrf.as_deref())?;
    s.logins.logout(&a.0).await?;
    let clear = format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok((
        StatusCode::SEE_OTHER,
        [(SET_COOKIE, clear), (LOCATION, "/login".to_owned())],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; examlink_session=tok; b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE_NAME), Some("tok"));
        assert_eq!(cookie(&h, "examlink"), None);
        assert_eq!(cookie(&HeaderMap::new(), COOKIE_NAME), None);
    }
}
