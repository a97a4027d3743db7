//! Identifiers. A [`RecordId`] is derived from content (device id, image digest, template id and
//! version), so re-reading the same export after a crash gives the same id and the hub's
//! idempotent load turns the duplicate into a no-op.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest accepted device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// An invalid identifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Device ids are 1..=64 characters of `[a-z0-9_-]`, so they are safe as one MQTT topic level.
    #[error("invalid device id {0:?}: use 1-64 characters of a-z, 0-9, '-' and '_'")]
    DeviceId(String),
    /// Record ids are 64 lowercase hex digits (a SHA-256).
    #[error("invalid record id {0:?}: expected 64 lowercase hex digits")]
    RecordId(String),
}

/// The identity of one exam device (one agent). Safe to use as a single MQTT topic level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    /// Validates and wraps a device id.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= MAX_DEVICE_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(id))
        } else {
            Err(IdError::DeviceId(id))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<DeviceId> for String {
    fn from(d: DeviceId) -> String {
        d.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of one record: SHA-256 over device id, image digest, template id and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordId(String);

impl RecordId {
    /// Derives the id of the record read from an image with digest `image_sha256` (hex)
    /// by `device` with template `template_id` at `template_version`.
    pub fn derive(
        device: &DeviceId,
        image_sha256: &str,
        template_id: &str,
        template_version: u32,
    ) -> Self {
        let mut h = Sha256::new();
        // Length-prefix every part so no two different tuples hash the same bytes.
        for part in [
            device.as_str(),
            image_sha256,
            template_id,
            &template_version.to_string(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Self(hex::encode(h.finalize()))
    }

    /// Parses a record id (64 lowercase hex digits).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if is_sha256_hex(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::RecordId(s.to_owned()))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RecordId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<RecordId> for String {
    fn from(r: RecordId) -> String {
        r.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hex SHA-256 of a byte slice (the image digest used in record ids).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` has the shape [`sha256_hex`] gives: 64 lowercase hex digits (record ids and
/// file digests).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_rejects_topic_metacharacters() {
        for bad in ["", "a/b", "a+b", "a#", "UPPER", &"x".repeat(65)] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(DeviceId::new("autoref-01").is_ok());
    }

    #[test]
    fn record_id_is_stable_and_distinct() {
        let d = DeviceId::new("dev-1").unwrap();
        let a = RecordId::derive(&d, "ab", "autoref_fw2", 1);
        assert_eq!(a, RecordId::derive(&d, "ab", "autoref_fw2", 1));
        assert_ne!(a, RecordId::derive(&d, "ab", "autoref_fw2", 2));
        assert_ne!(a, RecordId::derive(&d, "a", "bautoref_fw2", 1));
        assert!(RecordId::parse(a.as_str()).is_ok());
    }
}
