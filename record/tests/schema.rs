//! The committed JSON Schemas (`record/schema/*.json`) describe exactly what the codec writes:
//! every encoded message validates, and payloads the codec rejects are rejected by the schema too.

use std::path::Path;

use chrono::TimeZone;
use record::{
    encode, DeviceId, Field, FieldStatus, Receipt, ReceiptOutcome, Record, RecordId, Rejection,
    ReviewCrop, StatusReport,
};
use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&value)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sample_record() -> Record {
    let device_id = DeviceId::new("autoref-01").unwrap();
    let at = chrono::Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
    Record {
        record_id: RecordId::derive(&device_id, "ab", "autoref_fw2", 1),
        device_id,
        device_type: "autoref".into(),
        template_id: "autoref_fw2".into(),
        template_version: 1,
        firmware: "fw2".into(),
        source_file: "autoref_fw2_001.png".into(),
        image_sha256: "ab".into(),
        patient_id: Some("73118929".into()),
        exam_date: Some("2021-05-13".into()),
        exam_time: Some("11:42".into()),
        fields: vec![
            Field {
                name: "r_sph".into(),
                value: Some("-1.25".into()),
                number: Some(-1.25),
                unit: Some("D".into()),
                status: FieldStatus::Ok,
                confidence: 0.99,
                reason: None,
                raw: None,
            },
            Field {
                name: "r_cyl".into(),
                value: None,
                number: None,
                unit: Some("D".into()),
                status: FieldStatus::Unreadable,
                confidence: 0.2,
                reason: Some("low confidence".into()),
                raw: Some("-O.75".into()),
            },
        ],
        review_crops: vec![ReviewCrop {
            field: "r_cyl".into(),
            png_base64: "iVBORw0KGgo=".into(),
            context: None,
        }],
        sample_crops: vec![],
        alignment: None,
        agent_version: "0.1.0".into(),
        model_version: "abcdef012345".into(),
        captured_at: at,
        recognized_at: at,
    }
}

#[test]
fn encoded_messages_validate_against_their_schemas() {
    let rec = sample_record();
    let at = rec.captured_at;
    let sampled = Record {
        sample_crops: vec![ReviewCrop {
            field: "r_sph".into(),
            png_base64: "iVBORw0KGgo=".into(),
            context: None,
        }],
        ..rec.clone()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("record.v1.json", encode(&rec)),
        ("record.v2.json", encode(&sampled)),
        (
            "receipt.v1.json",
            encode(&Receipt {
                record_id: rec.record_id.clone(),
                outcome: ReceiptOutcome::Stored,
                reason: None,
            }),
        ),
        (
            "rejection.v1.json",
            encode(&Rejection {
                device_id: rec.device_id.clone(),
                source_file: "x.png".into(),
                file_sha256: String::new(),
                code: "empty_file".into(),
                reason: "zero bytes".into(),
                quarantined_as: "quarantine/x.png".into(),
                at,
            }),
        ),
        (
            "status.v1.json",
            encode(&StatusReport {
                device_id: rec.device_id.clone(),
                online: true,
                agent_version: "0.1.0".into(),
                backlog: 3,
                exports: 10,
                delivered: 7,
                rejected: 0,
                last_error: None,
                at,
            }),
        ),
    ];
    for (name, payload) in cases {
        let v: Value = serde_json::from_slice(&payload).unwrap();
        let errors: Vec<String> = schema(name)
            .iter_errors(&v)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

#[test]
fn schema_rejects_what_the_codec_rejects() {
    let s = schema("record.v1.json");
    let good: Value = serde_json::from_slice(&encode(&sample_record())).unwrap();
    let mut wrong_version = good.clone();
    wrong_version["schema_version"] = (record::SCHEMA_VERSION + 1).into();
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("device_id");
    let mut extra = good.clone();
    extra["surprise"] = true.into();
    let mut bad_status = good.clone();
    bad_status["fields"][0]["status"] = "maybe".into();
    for (what, v) in [
        ("version", wrong_version),
        ("missing", missing),
        ("extra", extra),
        ("status", bad_status),
    ] {
        assert!(!s.is_valid(&v), "schema accepted {what}");
        assert!(
            record::decode::<Record>(&serde_json::to_vec(&v).unwrap()).is_err(),
            "codec accepted {what}"
        );
    }
}

#[test]
fn v2_schema_takes_sample_crops_and_v1_refuses_them() {
    let v1 = schema("record.v1.json");
    let v2 = schema("record.v2.json");
    let sampled = Record {
        sample_crops: vec![ReviewCrop {
            field: "r_sph".into(),
            png_base64: "iVBORw0KGgo=".into(),
            context: None,
        }],
        ..sample_record()
    };
    let good: Value = serde_json::from_slice(&encode(&sampled)).unwrap();
    assert_eq!(good["schema_version"], 2);
    assert!(v2.is_valid(&good) && !v1.is_valid(&good));
    // The same content claiming v1: both the v1 schema and the codec refuse it.
    let mut as_v1 = good.clone();
    as_v1["schema_version"] = 1.into();
    assert!(!v1.is_valid(&as_v1));
    assert!(record::decode::<Record>(&serde_json::to_vec(&as_v1).unwrap()).is_err());
    let mut bad_crop = good.clone();
    bad_crop["sample_crops"][0]["surprise"] = true.into();
    assert!(!v2.is_valid(&bad_crop));
    assert!(record::decode::<Record>(&serde_json::to_vec(&bad_crop).unwrap()).is_err());

    // A review crop with its context: v2 too, and the schema knows its shape.
    let mut with_context = sample_record();
    with_context.review_crops = vec![ReviewCrop {
        field: "r_sph".into(),
        png_base64: "iVBORw0KGgo=".into(),
        context: Some(record::ContextCrop {
            png_base64: "iVBORw0KGgo=".into(),
            bbox: [10, 20, 30, 12],
        }),
    }];
    let good: Value = serde_json::from_slice(&encode(&with_context)).unwrap();
    assert_eq!(good["schema_version"], 2);
    assert!(v2.is_valid(&good) && !v1.is_valid(&good));
    let mut short_box = good.clone();
    short_box["review_crops"][0]["context"]["bbox"] = serde_json::json!([1, 2, 3]);
    assert!(!v2.is_valid(&short_box));
    assert!(record::decode::<Record>(&serde_json::to_vec(&short_box).unwrap()).is_err());
}

// See: #14
#[test]
fn v3_schema_takes_an_alignment_and_older_schemas_refuse_it() {
    let (v1, v2, v3) = (
        schema("record.v1.json"),
        schema("record.v2.json"),
        schema("record.v3.json"),
    );
    let aligned = Record {
        alignment: Some(record::Alignment {
            scale: 1.25,
            rotation_deg: -0.8,
            shift_px: [12.35, -3.0],
        }),
        ..sample_record()
    };
    let good: Value = serde_json::from_slice(&encode(&aligned)).unwrap();
    assert_eq!(good["schema_version"], 3);
    assert!(v3.is_valid(&good) && !v2.is_valid(&good) && !v1.is_valid(&good));
    assert_eq!(
        record::decode::<Record>(&encode(&aligned)).unwrap(),
        aligned
    );
    // The same content claiming v2: the codec refuses it.
    let mut as_v2 = good.clone();
    as_v2["schema_version"] = 2.into();
    assert!(record::decode::<Record>(&serde_json::to_vec(&as_v2).unwrap()).is_err());
    let mut short = good.clone();
    short["alignment"]["shift_px"] = serde_json::json!([1.0]);
    assert!(!v3.is_valid(&short));
    assert!(record::decode::<Record>(&serde_json::to_vec(&short).unwrap()).is_err());
    // Without an alignment the record stays v1.
    let plain: Value = serde_json::from_slice(&encode(&sample_record())).unwrap();
    assert_eq!(plain["schema_version"], 1);
}
