//! People's accounts (table `users`) and their sessions (table `sessions`), for the HTTP API
//! and pages. Devices have their own accounts ([`crate::auth`]).
//!
//! - Roles, each including the one before: [`UserRole::Reader`] queries records and the fleet;
//!   [`UserRole::Reviewer`] also resolves review items; [`UserRole::Admin`] also manages
//!   devices and users. What a role may do is [`UserRole::may`], a pure function.
//! - A login ([`Logins::login`]) verifies the argon2 password (through the [`Guard`]: per-address
//!   backoff, the hashing semaphore, and the dummy hash for unknown users) and opens a session:
//!   a random 256-bit token, of which only the SHA-256 is stored, with its own CSRF token.
//!   Pages carry the token in a cookie, the API as `Authorization: Bearer`.
//! - A session holds while unexpired and not logged out, and while its user is neither revoked
//!   nor rotated since the session opened ([`Logins::session`] checks all of it on every request,
//!   so revoking a user ends their sessions at once).
//!
//! Every change here is written to the audit trail in the same statement as the change.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::audit::{self, actions};
use crate::auth::{new_password, verify_password};
use crate::config::Secret;
use crate::guard::Guard;
use crate::load::Db;

/// An account change or lookup that failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Database trouble.
    #[error("users table")]
    Db(#[from] tokio_postgres::Error),
    /// Not a valid user name.
    #[error("user name {0:?}: use 1-64 characters of a-z, 0-9, '.', '-' and '_'")]
    Name(String),
    /// Not a role.
    #[error("unknown role {0:?} (use reader, reviewer or admin)")]
    Role(String),
    /// A password given from a file that is too weak to accept.
    #[error("the password must be at least 12 characters")]
    WeakPassword,
    /// Adding an existing user.
    #[error("user {0} already exists (use rotate)")]
    Exists(String),
    /// Rotating or revoking a user that does not exist.
    #[error("no user {0}")]
    NotFound(String),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] crate::auth::AuthError),
}

/// What a person's account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UserRole {
    /// Queries records and the fleet.
    Reader,
    /// A reader who also resolves review items.
    Reviewer,
    /// A reviewer who also manages devices and users.
    Admin,
}

/// Something a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read records (patient data) and the fleet.
    ReadRecords,
    /// Resolve review items.
    ResolveReviews,
    /// Add, rotate and revoke devices.
    ManageDevices,
    /// Add, rotate and revoke people's accounts.
    ManageUsers,
}

impl UserRole {
    /// Parses `reader`, `reviewer` or `admin`.
    pub fn parse(s: &str) -> Result<Self, UsersError> {
        match s {
            "reader" => Ok(Self::Reader),
            "reviewer" => Ok(Self::Reviewer),
            "admin" => Ok(Self::Admin),
            other => Err(UsersError::Role(other.to_owned())),
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Reviewer => "reviewer",
            Self::Admin => "admin",
        }
    }

    /// Whether this role may do `p`.
    pub fn may(self, p: Permission) -> bool {
        let needs = match p {
            Permission::ReadRecords => Self::Reader,
            Permission::ResolveReviews => Self::Reviewer,
            Permission::ManageDevices | Permission::ManageUsers => Self::Admin,
        };
        self >= needs
    }
}

/// Whether `name` is a valid user name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn check_name(name: &str) -> Result<(), UsersError> {
    valid_name(name)
        .then_some(())
        .ok_or_else(|| UsersError::Name(name.to_owned()))
}

/// The password to set: the given one (at least 12 characters), else a fresh random one.
fn password_and_hash(given: Option<Secret>) -> Result<(Secret, String), UsersError> {
    match given {
        None => Ok(new_password()?),
        Some(p) if p.expose().chars().count() < 12 => Err(UsersError::WeakPassword),
        Some(p) => {
            let hash = crate::auth::hash_password(p.expose())?;
            Ok((p, hash))
        }
    }
}

/// Creates an account; returns its password (the given one, or a random one to show once).
pub async fn add_user(
    client: &tokio_postgres::Client,
    actor: &str,
    name: &str,
    role: UserRole,
    password: Option<Secret>,
) -> Result<Secret, UsersError> {
    check_name(name)?;
    let (password, hash) = password_and_hash(password)?;
    let n = client
        .execute(
            "WITH changed AS ( \
                 INSERT INTO users (name, role, password_hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING RETURNING name) \
             INSERT INTO audit (actor, action, detail) \
             SELECT $4, $5, jsonb_build_object('user', name, 'role', $2::text) FROM changed",
            &[&name, &role.as_str(), &hash, &actor, &actions::USER_ADD],
        )
        .await?;
    if n == 0 {
        return Err(UsersError::Exists(name.to_owned()));
    }
    Ok(password)
}

/// Replaces a user's password (and un-revokes them); every open session of theirs ends.
pub async fn rotate_user(
    client: &tokio_postgres::Client,
    actor: &str,
    name: &str,
    password: Option<Secret>,
) -> Result<Secret, UsersError> {
    check_name(name)?;
    let (password, hash) = password_and_hash(password)?;
    let n = client
        .execute(
            "WITH changed AS ( \
                 UPDATE users SET password_hash = $2, rotated_at = now(), revoked_at = NULL, \
                        sessions_after = clock_timestamp() \
                 WHERE name = $1 RETURNING name) \
             INSERT INTO audit (actor, action, detail) \
             SELECT $3, $4, jsonb_build_object('user', name) FROM changed",
            &[&name, &hash, &actor, &actions::USER_ROTATE],
        )
        .await?;
    if n == 0 {
        return Err(UsersError::NotFound(name.to_owned()));
    }
    Ok(password)
}

/// Revokes a user: no more logins, and every open session ends at its next request.
pub async fn revoke_user(
    client: &tokio_postgres::Client,
    actor: &str,
    name: &str,
) -> Result<(), UsersError> {
    check_name(name)?;
    let n = client
        .execute(
            "WITH changed AS ( \
                 UPDATE users SET revoked_at = now(), sessions_after = clock_timestamp() \
                 WHERE name = $1 RETURNING name) \
             INSERT INTO audit (actor, action, detail) \
             SELECT $2, $3, jsonb_build_object('user', name) FROM changed",
            &[&name, &actor, &actions::USER_REVOKE],
        )
        .await?;
    if n == 0 {
        return Err(UsersError::NotFound(name.to_owned()));
    }
    Ok(())
}

/// How a session is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A browser: cookie, CSRF token required on every change.
    Page,
    /// A program: `Authorization: Bearer`.
    Api,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Api => "api",
        }
    }
}

/// A logged-in person.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user name.
    pub user: String,
    /// Their role.
    pub role: UserRole,
    /// Cookie or bearer.
    pub kind: SessionKind,
    /// The token a page must send back with every change (`csrf` form field or
    /// `X-CSRF-Token` header).
    pub csrf: String,
    token_sha256: Vec<u8>,
}

impl Session {
    /// Whether the session's role may do `p`.
    pub fn may(&self, p: Permission) -> bool {
        self.role.may(p)
    }

    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user, wrong password or revoked account.
    #[error("wrong user name or password")]
    BadCredentials,
    /// Too many failures from this address: wait this long.
    #[error("too many failed logins; try again in {0:?}")]
    Backoff(Duration),
    /// The database did not answer.
    #[error("database unavailable: {0}")]
    Db(#[from] tokio_postgres::Error),
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Logins and session lookups. Logins use the login connection; never the HTTP query one.
pub struct Logins {
    db: Arc<Db>,
    guard: Arc<Guard>,
    ttl: Duration,
}

impl Logins {
    /// Sessions last `ttl`.
    pub fn new(db: Arc<Db>, guard: Arc<Guard>, ttl: Duration) -> Self {
        Self { db, guard, ttl }
    }

    /// Verifies `name`/`password` from `ip` and opens a session; returns its token (given to
    /// the client once) and the session.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        ip: IpAddr,
        kind: SessionKind,
    ) -> Result<(Secret, Session), LoginError> {
        self.guard
            .may_try(ip, Instant::now())
            .map_err(LoginError::Backoff)?;
        let client = self.db.client().await?;
        let row = if valid_name(name) {
            client
                .query_opt(
                    "SELECT role, password_hash FROM users WHERE name = $1 AND revoked_at IS NULL",
                    &[&name],
                )
                .await?
        } else {
            None
        };
        let (role, hash) = match &row {
            Some(r) => (UserRole::parse(r.get(0)).ok(), r.get::<_, String>(1)),
            None => (None, String::new()),
        };
        let (g, p) = (self.guard.clone(), password.to_owned());
        let ok = self
            .guard
            .hash(move || {
                let target = if hash.is_empty() {
                    g.dummy_hash()
                } else {
                    hash.as_str()
                };
                verify_password(target, &p) && !hash.is_empty()
            })
            .await;
        let Some(role) = role.filter(|_| ok) else {
            self.guard.failed(ip, Instant::now());
            metrics::counter!(crate::telemetry::LOGINS_REFUSED, "via" => "http").increment(1);
            return Err(LoginError::BadCredentials);
        };
        self.guard.succeeded(ip);
        let token = random_token();
        let csrf = random_token();
        let sha = digest(&token);
        let ttl = self.ttl.as_secs_f64();
        client
            .execute(
                "WITH opened AS ( \
                     INSERT INTO sessions (token_sha256, user_name, kind, csrf_token, expires_at) \
                     VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING user_name) \
                 INSERT INTO audit (actor, action, detail) \
                 SELECT user_name, $6, jsonb_build_object('kind', $3::text, 'address', $7::text) \
                 FROM opened",
                &[
                    &sha,
                    &name,
                    &kind.as_str(),
                    &csrf,
                    &ttl,
                    &actions::LOGIN,
                    &ip.to_string(),
                ],
            )
            .await?;
        Ok((
            Secret::new(token),
            Session {
                user: name.to_owned(),
                role,
                kind,
                csrf,
                token_sha256: sha,
            },
        ))
    }

    /// The session of `token`, if it still holds (see the module notes).
    pub async fn session(
        &self,
        token: &str,
        kind: SessionKind,
    ) -> Result<Option<Session>, tokio_postgres::Error> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let sha = digest(token);
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT u.name, u.role, s.csrf_token FROM sessions s \
                 JOIN users u ON u.name = s.user_name \
                 WHERE s.token_sha256 = $1 AND s.kind = $2 AND s.ended_at IS NULL \
                   AND s.expires_at > now() AND u.revoked_at IS NULL \
                   AND s.created_at >= u.sessions_after",
                &[&sha, &kind.as_str()],
            )
            .await?;
        Ok(row.and_then(|r| {
            Some(Session {
                user: r.get(0),
                role: UserRole::parse(r.get(1)).ok()?,
                kind,
                csrf: r.get(2),
                token_sha256: sha,
            })
        }))
    }

    /// Ends a session (logout).
    pub async fn logout(&self, session: &Session) -> Result<(), tokio_postgres::Error> {
        let client = self.db.client().await?;
        client
            .execute(
                "UPDATE sessions SET ended_at = now() WHERE token_sha256 = $1",
                &[&session.token_sha256],
            )
            .await?;
        audit::append(
            &*client,
            &session.user,
            actions::LOGOUT,
            serde_json::json!({"kind": session.kind.as_str()}),
        )
        .await
    }

    /// Deletes sessions that expired or ended more than a day ago; returns how many.
    pub async fn prune(&self) -> Result<u64, tokio_postgres::Error> {
        self.db
            .client()
            .await?
            .execute(
                "DELETE FROM sessions WHERE coalesce(ended_at, expires_at) < now() - interval '1 day'",
                &[],
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below() {
        use Permission::*;
        let table = [
            (UserRole::Reader, [true, false, false, false]),
            (UserRole::Reviewer, [true, true, false, false]),
            (UserRole::Admin, [true, true, true, true]),
        ];
        for (role, want) in table {
            let got =
                [ReadRecords, ResolveReviews, ManageDevices, ManageUsers].map(|p| role.may(p));
            assert_eq!(got, want, "{role:?}");
            assert_eq!(UserRole::parse(role.as_str()).unwrap(), role);
        }
        assert!(UserRole::parse("root").is_err());
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(valid_name("alice") && valid_name("dr.smith-2"));
        for bad in ["", "Alice", "a b", "x'; DROP", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(matches!(
            password_and_hash(Some(Secret::new("short"))),
            Err(UsersError::WeakPassword)
        ));
        let (p, h) = password_and_hash(None).unwrap();
        assert!(verify_password(&h, p.expose()));
    }
}
