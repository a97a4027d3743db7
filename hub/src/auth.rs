//! Device accounts: one per device, its password stored as an argon2id hash in the `devices`
//! table; plus read-only `reader` accounts (device type [`READER`]) for live result listeners.
//!
//! [`Credentials::verify`] runs at every CONNECT on the embedded broker. Argon2 is slow on
//! purpose, so a verified password is remembered (as a SHA-256 digest, next to the stored hash
//! it matched): a reconnect costs one indexed query and no argon2, and a rotated or revoked
//! password takes effect at the next CONNECT because the stored hash no longer matches.
//! When PostgreSQL is unreachable, the remembered logins still work.
//!
//! Every argon2 run goes through the [`Guard`]'s semaphore, and an unknown or malformed user
//! name is verified against the guard's dummy hash, so it costs what a wrong password costs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use base64::Engine;
use rand::RngCore;
use record::{catalog, DeviceId};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::audit;
use crate::config::Secret;
use crate::guard::Guard;
use crate::load::Db;

/// Device type of a read-only account: may subscribe to results and status, publish nothing.
pub const READER: &str = "reader";

/// A device account change that failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Database trouble.
    #[error("devices table")]
    Db(#[from] tokio_postgres::Error),
    /// Unknown device type.
    #[error("unknown device type {0:?} (use a catalog type or \"reader\")")]
    DeviceType(String),
    /// Adding an existing device.
    #[error("device {0} already exists (use rotate)")]
    Exists(DeviceId),
    /// Rotating or revoking a device that does not exist.
    #[error("no device {0}")]
    NotFound(DeviceId),
    /// Hashing failed (never for valid inputs).
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes under its own topics, reads its receipts.
    Device,
    /// Reads results and status.
    Reader,
}

/// An authenticated account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The device id (= MQTT username = client id).
    pub device: DeviceId,
    /// Its role.
    pub role: Role,
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user, wrong password, revoked, or malformed login.
    BadCredentials,
    /// The database is unreachable and the login is not remembered.
    Unavailable,
}

struct Remembered {
    hash: String,
    digest: [u8; 32],
    role: Role,
}

/// Verifies device logins against the `devices` table.
pub struct Credentials {
    db: Arc<Db>,
    guard: Arc<Guard>,
    remembered: Mutex<HashMap<DeviceId, Remembered>>,
}

impl Credentials {
    /// Verifier backed by `db`, hashing through `guard`.
    pub fn new(db: Arc<Db>, guard: Arc<Guard>) -> Self {
        Self {
            db,
            guard,
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one dummy verification, so a refusal for an unknown user takes as long as one
    /// for a wrong password.
    async fn decoy(&self, password: &str) {
        let (g, p) = (self.guard.clone(), password.to_owned());
        let guard = self.guard.clone();
        guard
            .hash(move || verify_password(g.dummy_hash(), &p))
            .await;
    }

    /// Checks a login. The username must be a registered, unrevoked device id.
    pub async fn verify(&self, username: &str, password: &str) -> Result<Account, Refusal> {
        let Ok(device) = DeviceId::new(username) else {
            self.decoy(password).await;
            return Err(Refusal::BadCredentials);
        };
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let stored = match self.lookup(&device).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                self.decoy(password).await;
                return Err(Refusal::BadCredentials);
            }
            Err(error) => {
                warn!(device = %device, %error, "Device lookup failed; using remembered logins.");
                let map = self.remembered.lock().expect("credentials lock poisoned");
                return match map.get(&device) {
                    Some(r) if r.digest == digest => Ok(Account {
                        device,
                        role: r.role,
                    }),
                    Some(_) => Err(Refusal::BadCredentials),
                    None => Err(Refusal::Unavailable),
                };
            }
        };
        let (hash, role) = stored;
        {
            let map = self.remembered.lock().expect("credentials lock poisoned");
            if let Some(r) = map.get(&device) {
                if r.hash == hash && r.digest == digest {
                    return Ok(Account { device, role });
                }
            }
        }
        let (h, p) = (hash.clone(), password.to_owned());
        let ok = self.guard.hash(move || verify_password(&h, &p)).await;
        if !ok {
            return Err(Refusal::BadCredentials);
        }
        self.remembered
            .lock()
            .expect("credentials lock poisoned")
            .insert(device.clone(), Remembered { hash, digest, role });
        Ok(Account { device, role })
    }

    /// Whether `account`'s login still holds: the device is not revoked and its password was
    /// not rotated since `verify` accepted it. `None` when the database cannot tell (an open
    /// session is then left alone).
    pub async fn still_valid(&self, account: &Account) -> Option<bool> {
        let current = self.lookup(&account.device).await.ok()?;
        let map = self.remembered.lock().expect("credentials lock poisoned");
        Some(match (current, map.get(&account.device)) {
            (Some((hash, _)), Some(r)) => r.hash == hash,
            (Some(_), None) => true,
            (None, _) => false,
        })
    }

    async fn lookup(
        &self,
        device: &DeviceId,
    ) -> Result<Option<(String, Role)>, tokio_postgres::Error> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT password_hash, device_type FROM devices \
                 WHERE device_id = $1 AND revoked_at IS NULL",
                &[&device.as_str()],
            )
            .await?;
        Ok(row.map(|r| {
            let t: &str = r.get(1);
            let role = if t == READER {
                Role::Reader
            } else {
                Role::Device
            };
            (r.get(0), role)
        }))
    }
}

/// Whether `password` matches the PHC-format argon2 `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A fresh random password (32 URL-safe characters) and its argon2id hash.
pub fn new_password() -> Result<(Secret, String), AuthError> {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_password(&password)?;
    Ok((Secret::new(password), hash))
}

/// The argon2id hash (PHC string, random salt) of `password`.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?
        .to_string())
}

/// Registers a device and returns its password (shown once, never stored in clear). The
/// change and `actor` go to the audit trail in the same statement.
pub async fn add_device(
    client: &tokio_postgres::Client,
    actor: &str,
    device: &DeviceId,
    device_type: &str,
) -> Result<Secret, AuthError> {
    add_device_with(client, actor, device, device_type, None).await
}

/// Shortest password accepted from an operator for a device.
pub const MIN_DEVICE_PASSWORD: usize = 16;

/// As [`add_device`], with the password `given` (an agent installed before its device was
/// registered already has one) instead of a fresh one.
pub async fn add_device_with(
    client: &tokio_postgres::Client,
    actor: &str,
    device: &DeviceId,
    device_type: &str,
    given: Option<Secret>,
) -> Result<Secret, AuthError> {
    if device_type != READER && catalog::fields(device_type).is_none() {
        return Err(AuthError::DeviceType(device_type.to_owned()));
    }
    let (password, hash) = match given {
        Some(p) if p.expose().chars().count() < MIN_DEVICE_PASSWORD => {
            return Err(AuthError::Hash(format!(
                "a device password needs at least {MIN_DEVICE_PASSWORD} characters"
            )))
        }
        Some(p) => {
            let hash = hash_password(p.expose())?;
            (p, hash)
        }
        None => new_password()?,
    };
    let n = client
        .execute(
            "WITH changed AS ( \
                 INSERT INTO devices (device_id, device_type, password_hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (device_id) DO NOTHING RETURNING device_id) \
             INSERT INTO audit (actor, action, detail) \
             SELECT $4, $5, jsonb_build_object('device', device_id, 'type', $2::text) FROM changed",
            &[
                &device.as_str(),
                &device_type,
                &hash,
                &actor,
                &audit::actions::DEVICE_ADD,
            ],
        )
        .await?;
    if n == 0 {
        return Err(AuthError::Exists(device.clone()));
    }
    Ok(password)
}

/// Gives a device a new password (and un-revokes it); returns the password. Audited.
pub async fn rotate_device(
    client: &tokio_postgres::Client,
    actor: &str,
    device: &DeviceId,
) -> Result<Secret, AuthError> {
    let (password, hash) = new_password()?;
    let n = client
        .execute(
            "WITH changed AS ( \
                 UPDATE devices SET password_hash = $2, rotated_at = now(), revoked_at = NULL \
                 WHERE device_id = $1 RETURNING device_id) \
             INSERT INTO audit (actor, action, detail) \
             SELECT $3, $4, jsonb_build_object('device', device_id) FROM changed",
            &[
                &device.as_str(),
                &hash,
                &actor,
                &audit::actions::DEVICE_ROTATE,
            ],
        )
        .await?;
    if n == 0 {
        return Err(AuthError::NotFound(device.clone()));
    }
    Ok(password)
}

/// Revokes a device: its next CONNECT is refused and its records are rejected. Audited.
pub async fn revoke_device(
    client: &tokio_postgres::Client,
    actor: &str,
    device: &DeviceId,
) -> Result<(), AuthError> {
    let n = client
        .execute(
            "WITH changed AS ( \
                 UPDATE devices SET revoked_at = now() WHERE device_id = $1 RETURNING device_id) \
             INSERT INTO audit (actor, action, detail) \
             SELECT $2, $3, jsonb_build_object('device', device_id) FROM changed",
            &[&device.as_str(), &actor, &audit::actions::DEVICE_REVOKE],
        )
        .await?;
    if n == 0 {
        return Err(AuthError::NotFound(device.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let (p, h) = new_password().unwrap();
        assert_eq!(p.expose().len(), 32);
        assert!(verify_password(&h, p.expose()));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("not a hash", p.expose()));
    }
}
