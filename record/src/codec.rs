//! The payload codec: JSON (so any MQTT client can read it) with a schema version.
//!
//! Wire format: one JSON object, the message's own fields plus `"schema_version": 1`.
//! Decoding checks, in order: size ≤ [`MAX_PAYLOAD_BYTES`], valid JSON object, a
//! `schema_version` equal to [`SCHEMA_VERSION`], then the message's fields (unknown fields are
//! errors). JSON Schemas for the payloads are in `record/schema/`.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// The payload schema version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
/// Key of the schema version in every payload.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";
/// Largest accepted payload (a record with its review crops stays well below).
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON.
    #[error("payload is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("payload is not a JSON object")]
    NotAnObject,
    /// No `schema_version`.
    #[error("payload has no integer schema_version")]
    MissingVersion,
    /// A schema version this build does not read.
    #[error("unsupported schema_version {found} (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// Right version, wrong fields.
    #[error("payload does not match schema v{SCHEMA_VERSION}: {0}")]
    Schema(#[source] serde_json::Error),
}

/// Encodes a message with the schema version.
///
/// # Panics
/// If `T` does not serialise to a JSON object (a bug in this crate's types, not an input error).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(message).expect("contract types serialise");
    let Value::Object(map) = &mut value else {
        panic!("contract types serialise to objects");
    };
    map.insert(SCHEMA_VERSION_KEY.into(), SCHEMA_VERSION.into());
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// Decodes a message, checking size and schema version first.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(CodecError::TooLarge {
            size: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let value: Value = serde_json::from_slice(payload).map_err(CodecError::Json)?;
    let Value::Object(mut map) = value else {
        return Err(CodecError::NotAnObject);
    };
    let found = map
        .remove(SCHEMA_VERSION_KEY)
        .and_then(|v| v.as_u64())
        .ok_or(CodecError::MissingVersion)?;
    if found != SCHEMA_VERSION {
        return Err(CodecError::UnsupportedVersion { found });
    }
    serde_json::from_value(Value::Object(map)).map_err(CodecError::Schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, RecordId};
    use crate::record::{Field, FieldStatus, Receipt, ReceiptOutcome, Record};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn record(value: Option<String>, confidence: f32) -> Record {
        let device_id = DeviceId::new("autoref-01").unwrap();
        let at = chrono::Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        Record {
            record_id: RecordId::derive(&device_id, "00", "autoref_fw2", 1),
            device_id,
            device_type: "autoref".into(),
            template_id: "autoref_fw2".into(),
            template_version: 1,
            firmware: "fw2".into(),
            source_file: "a.png".into(),
            image_sha256: "00".into(),
            patient_id: Some("00482913".into()),
            exam_date: Some("2021-05-13".into()),
            exam_time: None,
            fields: vec![Field {
                name: "r_sph".into(),
                number: value.as_deref().and_then(|v| v.parse().ok()),
                value,
                unit: Some("D".into()),
                status: FieldStatus::Ok,
                confidence,
                reason: None,
                raw: None,
            }],
            review_crops: vec![],
            agent_version: "0.1.0".into(),
            model_version: "m1".into(),
            captured_at: at,
            recognized_at: at,
        }
    }

    #[test]
    fn rejects_unknown_version_missing_fields_and_oversize() {
        let mut v: Value = serde_json::from_slice(&encode(&record(None, 0.5))).unwrap();
        v["schema_version"] = 2.into();
        let err = decode::<Record>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(err, CodecError::UnsupportedVersion { found: 2 }),
            "{err}"
        );

        v["schema_version"] = 1.into();
        v.as_object_mut().unwrap().remove("device_id");
        let err = decode::<Record>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("device_id"), "{err}");

        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            decode::<Record>(&big),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            decode::<Record>(b"[1]"),
            Err(CodecError::NotAnObject)
        ));
        assert!(matches!(decode::<Record>(b"{"), Err(CodecError::Json(_))));
        assert!(matches!(
            decode::<Record>(b"{}"),
            Err(CodecError::MissingVersion)
        ));
    }

    #[test]
    fn receipt_round_trips() {
        let r = Receipt {
            record_id: record(None, 0.0).record_id,
            outcome: ReceiptOutcome::Rejected,
            reason: Some("range".into()),
        };
        assert_eq!(decode::<Receipt>(&encode(&r)).unwrap(), r);
    }

    proptest! {
        #[test]
        fn record_round_trips(value in proptest::option::of("[+-]?[0-9]{1,2}\\.[0-9]{2}"), c in 0.0f32..=1.0) {
            let r = record(value, c);
            prop_assert_eq!(decode::<Record>(&encode(&r)).unwrap(), r);
        }
    }
}
