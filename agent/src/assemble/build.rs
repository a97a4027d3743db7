//! Building the record-crate messages from a recognition result.
//!
//! - A [`Record`]'s id is [`RecordId::derive`]`(device, image sha256, template id, version)`:
//!   the same export read again after a crash gets the same id.
//! - A [`Rejection`]'s receipt id is [`rejection_id`]: the same derivation with the template id
//!   [`REJECTION_TEMPLATE_ID`] and version 0, so it never equals a record's id and the hub can
//!   compute it from the rejection alone.
//! - Review crops (PNG, base64) are attached only for fields that need review, each at most
//!   [`MAX_CROP_BYTES`] and all together at most [`MAX_CROPS_BYTES`] of PNG, so a record stays
//!   far below the codec's payload limit; crops over the budget are left out (the field keeps
//!   its status and reason).

use base64::Engine;
use chrono::{DateTime, Utc};
use record::{DeviceId, Field, FieldStatus, Record, RecordId, Rejection, ReviewCrop};

use crate::ingest::Taken;
pub use crate::recognize::Refusal;

/// Template id used to derive rejection ids.
pub use record::REJECTION_TEMPLATE_ID;
/// Largest PNG of one review crop.
pub const MAX_CROP_BYTES: usize = 24 * 1024;
/// Largest total PNG of a record's review crops.
pub const MAX_CROPS_BYTES: usize = 192 * 1024;

/// What recognition made of one export (the part the record needs).
#[derive(Debug, Clone, PartialEq)]
pub struct Recognition {
    /// `autoref`, ...
    pub device_type: String,
    /// Template id.
    pub template_id: String,
    /// Template version.
    pub template_version: u32,
    /// Firmware key.
    pub firmware: String,
    /// Every canonical field of the device, in catalog order.
    pub fields: Vec<Field>,
    /// PNG crops of fields, by field name (only those needing review are used).
    pub crops: Vec<(String, Vec<u8>)>,
    /// Version of the model that read the fields.
    pub model_version: String,
}

/// The id the hub's receipt for `rejection` names.
pub fn rejection_id(rejection: &Rejection) -> RecordId {
    rejection.receipt_id()
}

fn ok_value(fields: &[Field], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|f| f.name == name && f.status == FieldStatus::Ok)
        .and_then(|f| f.value.clone())
}

/// The record for export `taken`, read as `recognition` by `device`.
pub fn build_record(
    device: &DeviceId,
    taken: &Taken,
    recognition: Recognition,
    recognized_at: DateTime<Utc>,
) -> Record {
    let Recognition {
        device_type,
        template_id,
        template_version,
        firmware,
        fields,
        crops,
        model_version,
    } = recognition;
    let mut budget = MAX_CROPS_BYTES;
    let mut review_crops = Vec::new();
    for f in fields.iter().filter(|f| f.status.needs_review()) {
        let Some((_, png)) = crops.iter().find(|(name, _)| *name == f.name) else {
            continue;
        };
        if png.len() > MAX_CROP_BYTES || png.len() > budget {
            continue;
        }
        budget -= png.len();
        review_crops.push(ReviewCrop {
            field: f.name.clone(),
            png_base64: base64::engine::general_purpose::STANDARD.encode(png),
        });
    }
    Record {
        record_id: RecordId::derive(device, &taken.sha256, &template_id, template_version),
        device_id: device.clone(),
        device_type,
        patient_id: ok_value(&fields, "patient_id"),
        exam_date: ok_value(&fields, "exam_date"),
        exam_time: ok_value(&fields, "exam_time"),
        template_id,
        template_version,
        firmware,
        source_file: taken.file_name.clone(),
        image_sha256: taken.sha256.clone(),
        fields,
        review_crops,
        sample_crops: Vec::new(),
        agent_version: crate::AGENT_VERSION.to_owned(),
        model_version,
        captured_at: taken.captured_at,
        recognized_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn field(name: &str, value: Option<&str>, status: FieldStatus) -> Field {
        Field {
            name: name.into(),
            value: value.map(String::from),
            number: None,
            unit: None,
            status,
            confidence: 0.9,
            reason: None,
            raw: None,
        }
    }

    fn taken() -> Taken {
        Taken {
            path: PathBuf::from("/e/a.png"),
            file_name: "a.png".into(),
            sha256: "ab".repeat(32),
            bytes: Some(vec![1]),
            size: 1,
            captured_at: Utc::now(),
        }
    }

    #[test]
    fn record_takes_ids_from_content_and_crops_only_for_review() {
        let device = DeviceId::new("dev-1").unwrap();
        let r = Recognition {
            device_type: "autoref".into(),
            template_id: "autoref_fw2".into(),
            template_version: 3,
            firmware: "fw2".into(),
            fields: vec![
                field("patient_id", Some("0042"), FieldStatus::Ok),
                field("exam_date", Some("2021-05-13"), FieldStatus::Invalid),
                field("r_sph", None, FieldStatus::Unreadable),
            ],
            crops: vec![
                ("patient_id".into(), vec![1; 10]),
                ("exam_date".into(), vec![2; 10]),
                ("r_sph".into(), vec![3; MAX_CROP_BYTES + 1]),
            ],
            model_version: "m1".into(),
        };
        let t = taken();
        let rec = build_record(&device, &t, r, Utc::now());
        assert_eq!(
            rec.record_id,
            RecordId::derive(&device, &t.sha256, "autoref_fw2", 3)
        );
        assert_eq!(rec.patient_id.as_deref(), Some("0042"));
        assert_eq!(rec.exam_date, None);
        assert_eq!(rec.review_crops.len(), 1);
        assert_eq!(rec.review_crops[0].field, "exam_date");
        assert!(record::encode(&rec).len() < record::MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn rejection_ids_differ_from_record_ids() {
        let device = DeviceId::new("dev-1").unwrap();
        let rej = Rejection {
            device_id: device.clone(),
            source_file: "a.png".into(),
            file_sha256: "ab".repeat(32),
            code: "not_an_image".into(),
            reason: "x".into(),
            quarantined_as: "q".into(),
            at: Utc::now(),
        };
        assert_eq!(rejection_id(&rej), rejection_id(&rej.clone()));
        assert_ne!(
            rejection_id(&rej),
            RecordId::derive(&device, &rej.file_sha256, "autoref_fw2", 0)
        );
    }
}
