//! Building the record-crate messages from a recognition result.
//!
//! - A [`Record`]'s id is [`RecordId::derive`]`(device, image sha256, template id, version)`:
//!   the same export read again after a crash gets the same id.
//! - A [`Rejection`]'s receipt id is [`rejection_id`]: the same derivation with the template id
//!   [`REJECTION_TEMPLATE_ID`] and version 0, so it never equals a record's id and the hub can
//!   compute it from the rejection alone.
//! - Review crops (PNG, base64) are attached for fields that need review, and sample crops for
//!   the fields read `ok` that quality sampling draws ([`super::sample`]; a record with sample
//!   crops is written as schema v2). Each crop is at most [`MAX_CROP_BYTES`] and all together
//!   at most [`MAX_CROPS_BYTES`] of PNG, review crops first, so a record stays far below the
//!   codec's payload limit; crops over the budget are left out (a field needing review keeps
//!   its status and reason; an `ok` field is then simply not sampled).
//! - Each review crop also carries the export around its field ([`ContextCrop`], at most
//!   [`MAX_CONTEXT_BYTES`]; schema v2) while the budget lasts, after every field and sample
//!   crop, in catalog order (identity first).

use base64::Engine;
use chrono::{DateTime, Utc};
use record::{ContextCrop, DeviceId, Field, FieldStatus, Record, RecordId, Rejection, ReviewCrop};

use crate::ingest::Taken;
pub use crate::recognize::Refusal;

/// Template id used to derive rejection ids.
pub use record::REJECTION_TEMPLATE_ID;
/// Largest PNG of one review crop.
pub const MAX_CROP_BYTES: usize = 24 * 1024;
/// Largest total PNG of a record's crops (field crops, sample crops and context crops).
pub const MAX_CROPS_BYTES: usize = 192 * 1024;
/// Largest PNG of one context crop.
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;

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
    /// PNG crops of fields, by field name (those of fields needing review, and of `ok` fields
    /// drawn for a blind check, are used).
    pub crops: Vec<(String, Vec<u8>)>,
    /// The export around each field that needs review, for the reviewer.
    pub contexts: Vec<ContextPng>,
    /// Version of the model that read the fields.
    pub model_version: String,
    /// The fitted alignment, when the export lay past the template's declared variation.
    pub alignment: Option<record::Alignment>,
}

/// The export around one field (grey PNG) and the field's box in it (`[x, y, w, h]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextPng {
    /// The field.
    pub field: String,
    /// PNG bytes.
    pub png: Vec<u8>,
    /// The field's box in the PNG's pixels.
    pub bbox: [u32; 4],
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

/// The record for export `taken`, read as `recognition` by `device`, with the crops of the `ok`
/// fields drawn at `quality_sample` (a share in `[0, 1]`) for a blind check.
pub fn build_record(
    device: &DeviceId,
    taken: &Taken,
    recognition: Recognition,
    recognized_at: DateTime<Utc>,
    quality_sample: f64,
) -> Record {
    let Recognition {
        device_type,
        template_id,
        template_version,
        firmware,
        fields,
        crops,
        contexts,
        model_version,
        alignment,
    } = recognition;
    let record_id = RecordId::derive(device, &taken.sha256, &template_id, template_version);
    let mut budget = MAX_CROPS_BYTES;
    let mut attach = |wanted: &dyn Fn(&Field) -> bool| {
        let mut out = Vec::new();
        for f in fields.iter().filter(|f| wanted(f)) {
            let Some((_, png)) = crops.iter().find(|(name, _)| *name == f.name) else {
                continue;
            };
            if png.len() > MAX_CROP_BYTES || png.len() > budget {
                continue;
            }
            budget -= png.len();
            out.push(ReviewCrop {
                field: f.name.clone(),
                png_base64: base64::engine::general_purpose::STANDARD.encode(png),
                context: None,
            });
        }
        out
    };
    let mut review_crops = attach(&|f| f.status.needs_review());
    let sample_crops = attach(&|f| {
        f.status == FieldStatus::Ok && super::sample::drawn(&record_id, &f.name, quality_sample)
    });
    // Context crops after every field and sample crop, within what the budget leaves.
    for c in &mut review_crops {
        let Some(ctx) = contexts.iter().find(|x| x.field == c.field) else {
            continue;
        };
        if ctx.png.len() > MAX_CONTEXT_BYTES || ctx.png.len() > budget {
            continue;
        }
        budget -= ctx.png.len();
        c.context = Some(ContextCrop {
            png_base64: base64::engine::general_purpose::STANDARD.encode(&ctx.png),
            bbox: ctx.bbox,
        });
    }
    Record {
        record_id,
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
        sample_crops,
        alignment,
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
            contexts: vec![],
            model_version: "m1".into(),
            alignment: None,
        };
        let t = taken();
        let rec = build_record(&device, &t, r, Utc::now(), 0.0);
        assert_eq!(
            rec.record_id,
            RecordId::derive(&device, &t.sha256, "autoref_fw2", 3)
        );
        assert_eq!(rec.patient_id.as_deref(), Some("0042"));
        assert_eq!(rec.exam_date, None);
        assert_eq!(rec.review_crops.len(), 1);
        assert_eq!(rec.review_crops[0].field, "exam_date");
        assert!(rec.sample_crops.is_empty());
        assert!(record::encode(&rec).len() < record::MAX_PAYLOAD_BYTES);
    }

    fn version_of(payload: &[u8]) -> u64 {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        v["schema_version"].as_u64().unwrap()
    }

    /// Four fields, two read ok, each with a crop.
    fn mixed() -> Recognition {
        let fields = vec![
            field("patient_id", Some("00420042"), FieldStatus::Ok),
            field("exam_date", Some("2021-05-13"), FieldStatus::Invalid),
            field("r_sph", None, FieldStatus::Unreadable),
            field("r_cyl", Some("-0.50"), FieldStatus::Ok),
            field("pd", None, FieldStatus::Absent),
        ];
        let crops = fields
            .iter()
            .map(|f| (f.name.clone(), vec![7; 100]))
            .collect();
        Recognition {
            device_type: "autoref".into(),
            template_id: "autoref_fw2".into(),
            template_version: 3,
            firmware: "fw2".into(),
            fields,
            crops,
            contexts: vec![],
            model_version: "m1".into(),
            alignment: None,
        }
    }

    #[test]
    fn a_field_needing_review_carries_its_context_as_v2_within_the_budget() {
        let device = DeviceId::new("dev-1").unwrap();
        let mut r = mixed();
        r.contexts = ["exam_date", "r_sph", "r_cyl"]
            .iter()
            .map(|f| ContextPng {
                field: (*f).into(),
                png: vec![9; 200],
                bbox: [10, 20, 30, 12],
            })
            .collect();
        let rec = build_record(&device, &taken(), r.clone(), Utc::now(), 0.0);
        let with: Vec<(&str, [u32; 4])> = rec
            .review_crops
            .iter()
            .filter_map(|c| c.context.as_ref().map(|x| (c.field.as_str(), x.bbox)))
            .collect();
        assert_eq!(
            with,
            [("exam_date", [10, 20, 30, 12]), ("r_sph", [10, 20, 30, 12])],
            "only fields needing review, with their box"
        );
        assert_eq!(version_of(&record::encode(&rec)), 2);
        assert_eq!(
            record::decode::<Record>(&record::encode(&rec)).unwrap(),
            rec
        );

        // Over the budget: the field crops stay, the contexts go.
        r.crops = r
            .fields
            .iter()
            .map(|f| (f.name.clone(), vec![7; MAX_CROP_BYTES]))
            .collect();
        for c in &mut r.contexts {
            c.png = vec![9; MAX_CROPS_BYTES - MAX_CROP_BYTES];
        }
        let rec = build_record(&device, &taken(), r, Utc::now(), 0.0);
        assert_eq!(rec.review_crops.len(), 2);
        assert!(rec.review_crops.iter().all(|c| c.context.is_none()));
        assert_eq!(version_of(&record::encode(&rec)), 1);
    }

    #[test]
    fn share_one_samples_every_ok_field_as_v2_and_share_zero_none_as_v1() {
        let device = DeviceId::new("dev-1").unwrap();
        let t = taken();
        let all = build_record(&device, &t, mixed(), Utc::now(), 1.0);
        let sampled: Vec<&str> = all.sample_crops.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            sampled,
            ["patient_id", "r_cyl"],
            "every ok field, never another"
        );
        let review: Vec<&str> = all.review_crops.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(review, ["exam_date", "r_sph"]);
        assert_eq!(version_of(&record::encode(&all)), 2);
        let decoded: Record = record::decode(&record::encode(&all)).unwrap();
        assert_eq!(decoded, all);

        let none = build_record(&device, &t, mixed(), Utc::now(), 0.0);
        assert!(none.sample_crops.is_empty());
        assert_eq!(none.review_crops, all.review_crops);
        assert_eq!(version_of(&record::encode(&none)), 1);
        // The same export read again draws the same fields.
        let again = build_record(&device, &t, mixed(), Utc::now(), 0.5);
        assert_eq!(
            again.sample_crops,
            build_record(&device, &t, mixed(), Utc::now(), 0.5).sample_crops
        );
    }

    #[test]
    fn sample_crops_come_after_review_crops_in_the_budget() {
        let device = DeviceId::new("dev-1").unwrap();
        let mut r = mixed();
        for n in 0..10 {
            r.fields
                .push(field(&format!("ok_{n}"), Some("1"), FieldStatus::Ok));
        }
        r.crops = r
            .fields
            .iter()
            .map(|f| (f.name.clone(), vec![7; MAX_CROP_BYTES]))
            .collect();
        let rec = build_record(&device, &taken(), r, Utc::now(), 1.0);
        let fit = MAX_CROPS_BYTES / MAX_CROP_BYTES;
        assert_eq!(rec.review_crops.len(), 2, "review crops first");
        assert_eq!(
            rec.sample_crops.len(),
            fit - 2,
            "then samples, up to the budget"
        );
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
