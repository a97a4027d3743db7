//! The payload codec: JSON (so any MQTT client can read it) with a schema version.
//!
//! Wire format: one JSON object, the message's own fields plus `"schema_version": N`.
//!
//! Versions: this build reads [`OLDEST_SCHEMA_VERSION`]`..=`[`SCHEMA_VERSION`]. It writes each
//! message with the oldest version that can carry it ([`Versioned::schema_version`]): version 1,
//! unless the message holds content only a newer schema has (v2: a [`Record`]'s
//! `sample_crops`, or a review crop's `context`; v3: a [`Record`]'s `alignment`). So a reader of an older build sees a newer version only when the message
//! carries content it cannot read, and the hub defers such a record rather than refusing it.
//!
//! | version | adds |
//! |---|---|
//! | 1 | the messages of [`crate::record`] |
//! | 2 | `Record.sample_crops` (quality sampling: crops of fields read `ok`, for blind checks); `ReviewCrop.context` (the export around a flagged field, with its box) |
//! | 3 | `Record.alignment` (the fitted transform of an export aligned past its template's declared variation) |
//!
//! Decoding checks, in order: size ≤ [`MAX_PAYLOAD_BYTES`], valid JSON object, a
//! `schema_version` this build reads, then the message's fields (unknown fields are errors),
//! then that the content is within the version the payload says (a v1 payload carrying v2
//! content is a [`CodecError::Schema`] error). JSON Schemas for the payloads are in
//! `record/schema/` (`record.v1.json`, `record.v2.json`, ...).
//!
//! [`Record`]: crate::Record

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::record::{Receipt, Record, Rejection, StatusReport};

/// The newest payload schema version this build reads (and writes, when a message needs it).
pub const SCHEMA_VERSION: u64 = 3;
/// The oldest payload schema version this build reads.
pub const OLDEST_SCHEMA_VERSION: u64 = 1;
/// Key of the schema version in every payload.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";
/// Largest accepted payload (a record with its review crops stays well below).
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// A message the codec writes and reads: it names the schema version it is written with.
pub trait Versioned {
    /// The oldest schema version that carries this message's content (1 unless the message
    /// holds something a newer schema added). [`encode`] writes it; [`decode`] refuses a
    /// payload whose content needs a newer version than the one it says.
    fn schema_version(&self) -> u64 {
        OLDEST_SCHEMA_VERSION
    }
}

impl Versioned for Record {
    /// 3 when the record carries an `alignment`; else 2 when it carries `sample_crops` or a
    /// review crop with its `context`; else 1.
    fn schema_version(&self) -> u64 {
        let context = self.review_crops.iter().any(|c| c.context.is_some());
        if self.alignment.is_some() {
            3
        } else if self.sample_crops.is_empty() && !context {
            1
        } else {
            2
        }
    }
}

impl Versioned for Receipt {}
impl Versioned for Rejection {}
impl Versioned for StatusReport {}

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
    #[error(
        "unsupported schema_version {found} (this build reads {OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// A version this build reads, but fields that do not match it (missing, unknown, of the
    /// wrong type, or newer than the version the payload says).
    #[error("payload does not match schema v{version}: {error}")]
    Schema {
        /// The version the payload says.
        version: u64,
        /// What does not match.
        #[source]
        error: serde_json::Error,
    },
}

/// Encodes a message with the schema version it needs ([`Versioned::schema_version`]).
///
/// # Panics
/// If `T` does not serialise to a JSON object (a bug in this crate's types, not an input error).
pub fn encode<T: Serialize + Versioned>(message: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(message).expect("contract types serialise");
    let Value::Object(map) = &mut value else {
        panic!("contract types serialise to objects");
    };
    map.insert(SCHEMA_VERSION_KEY.into(), message.schema_version().into());
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// Decodes a message, checking size and schema version first, and that its content is within
/// the version it says.
pub fn decode<T: DeserializeOwned + Versioned>(payload: &[u8]) -> Result<T, CodecError> {
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
    let version = map
        .remove(SCHEMA_VERSION_KEY)
        .and_then(|v| v.as_u64())
        .ok_or(CodecError::MissingVersion)?;
    if !(OLDEST_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&version) {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    let message: T = serde_json::from_value(Value::Object(map))
        .map_err(|error| CodecError::Schema { version, error })?;
    let needs = message.schema_version();
    if needs > version {
        return Err(CodecError::Schema {
            version,
            error: serde::de::Error::custom(format!(
                "the content needs schema_version {needs} (it holds fields added in v{needs}), \
                 the payload says {version}"
            )),
        });
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, RecordId};
    use crate::record::{Field, FieldStatus, Receipt, ReceiptOutcome, Record, ReviewCrop};
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
            sample_crops: vec![],
            alignment: None,
            agent_version: "0.1.0".into(),
            model_version: "m1".into(),
            captured_at: at,
            recognized_at: at,
        }
    }

    fn sampled(r: Record) -> Record {
        Record {
            sample_crops: vec![ReviewCrop {
                field: "r_sph".into(),
                png_base64: "iVBORw0KGgo=".into(),
                context: None,
            }],
            ..r
        }
    }

    fn version_of(payload: &[u8]) -> u64 {
        let v: Value = serde_json::from_slice(payload).unwrap();
        v[SCHEMA_VERSION_KEY].as_u64().unwrap()
    }

    #[test]
    fn rejects_unknown_version_missing_fields_and_oversize() {
        let mut v: Value = serde_json::from_slice(&encode(&record(None, 0.5))).unwrap();
        for found in [0, SCHEMA_VERSION + 1] {
            v["schema_version"] = found.into();
            let err = decode::<Record>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(
                matches!(err, CodecError::UnsupportedVersion { found: f } if f == found),
                "{err}"
            );
        }

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

    #[test]
    fn messages_are_written_with_the_oldest_version_that_carries_them() {
        let plain = record(Some("+1.25".into()), 0.9);
        assert_eq!(version_of(&encode(&plain)), 1);
        assert!(!String::from_utf8(encode(&plain))
            .unwrap()
            .contains("sample_crops"));
        let with_sample = sampled(plain.clone());
        let payload = encode(&with_sample);
        assert_eq!(version_of(&payload), 2);
        assert_eq!(decode::<Record>(&payload).unwrap(), with_sample);
        let receipt = Receipt {
            record_id: plain.record_id.clone(),
            outcome: ReceiptOutcome::Stored,
            reason: None,
        };
        assert_eq!(version_of(&encode(&receipt)), 1);
    }

    #[test]
    fn both_versions_are_read_and_v2_content_in_a_v1_payload_is_a_schema_error() {
        let plain = record(Some("+1.25".into()), 0.9);
        // A v2 payload without v2 content (another writer's choice) reads as well.
        let mut v: Value = serde_json::from_slice(&encode(&plain)).unwrap();
        v["schema_version"] = 2.into();
        assert_eq!(
            decode::<Record>(&serde_json::to_vec(&v).unwrap()).unwrap(),
            plain
        );
        // sample_crops under schema_version 1: refused, naming both versions.
        let mut v: Value = serde_json::from_slice(&encode(&sampled(plain.clone()))).unwrap();
        v["schema_version"] = 1.into();
        let err = decode::<Record>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(err, CodecError::Schema { version: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("needs schema_version 2"), "{err}");
        // A review crop's context is v2 content too.
        let mut ctx = plain.clone();
        ctx.review_crops.push(ReviewCrop {
            field: "r_sph".into(),
            png_base64: "iVBORw0KGgo=".into(),
            context: Some(crate::record::ContextCrop {
                png_base64: "iVBORw0KGgo=".into(),
                bbox: [1, 2, 3, 4],
            }),
        });
        assert_eq!(ctx.schema_version(), 2);
        assert_eq!(decode::<Record>(&encode(&ctx)).unwrap(), ctx);
        let mut v: Value = serde_json::from_slice(&encode(&ctx)).unwrap();
        v["schema_version"] = 1.into();
        let err = decode::<Record>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(err, CodecError::Schema { version: 1, .. }),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn record_round_trips(value in proptest::option::of("[+-]?[0-9]{1,2}\\.[0-9]{2}"), c in 0.0f32..=1.0) {
            let r = record(value, c);
            prop_assert_eq!(decode::<Record>(&encode(&r)).unwrap(), r.clone());
            let s = sampled(r);
            prop_assert_eq!(decode::<Record>(&encode(&s)).unwrap(), s);
        }
    }
}
