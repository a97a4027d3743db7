use super::*;
use crate::config::HubConfig;
use crate::testkit;
use record::FieldStatus;

fn validator() -> Validator {
    Validator::new(
        Arc::new(testkit::template_set()),
        HubConfig::default().validate,
    )
}

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn inbound_on(topic_device: &str, payload: Vec<u8>) -> Inbound {
    Inbound::from_broker(
        format!("examlink/v1/devices/{topic_device}/records"),
        Bytes::from(payload),
    )
}

fn code_of(c: Checked) -> (&'static str, String) {
    match c {
        Checked::Rejected(r) => (r.code, r.reason),
        Checked::Valid(v) => panic!("accepted {:?}", v.record.record_id),
    }
}

fn check_record(r: &Record) -> Checked {
    validator().check(
        inbound_on(r.device_id.as_str(), record::encode(r)),
        Utc::now(),
    )
}

#[test]
fn accepts_a_valid_record_and_reencodes_it() {
    let r = testkit::record(&dev("autoref-01"), 7);
    let Checked::Valid(v) = check_record(&r) else {
        panic!("rejected")
    };
    assert_eq!(record::decode::<Record>(&v.encoded).unwrap(), r);
    assert!(v.stored_json.contains("\"schema_version\":1"));
}

#[test]
fn rejects_bad_payloads_with_codes() {
    let v = validator();
    let now = Utc::now();
    assert_eq!(
        code_of(v.check(inbound_on("a", b"{not json".to_vec()), now)).0,
        "invalid_json"
    );
    let mut j: serde_json::Value =
        serde_json::from_slice(&record::encode(&testkit::record(&dev("a"), 1))).unwrap();
    j["schema_version"] = 9.into();
    let c = v.check(inbound_on("a", serde_json::to_vec(&j).unwrap()), now);
    let Checked::Rejected(r) = c else { panic!() };
    assert_eq!((r.code, r.defer), ("schema_version_newer", true));
    assert!(r.record_id.is_some(), "record id recovered for the receipt");
    j["schema_version"] = 1.into();
    j.as_object_mut().unwrap().remove("image_sha256");
    assert_eq!(
        code_of(v.check(inbound_on("a", serde_json::to_vec(&j).unwrap()), now)).0,
        "schema"
    );
    let big = vec![b' '; 600_000];
    assert_eq!(code_of(v.check(inbound_on("a", big), now)).0, "too_large");
}

#[test]
fn rejects_device_mismatch_and_forbidden() {
    let r = testkit::record(&dev("autoref-01"), 1);
    let c = validator().check(inbound_on("autoref-02", record::encode(&r)), Utc::now());
    assert_eq!(code_of(c).0, "device_mismatch");
    let refused = Inbound::refused(
        dev("x"),
        "examlink/v1/devices/y/records".into(),
        Bytes::new(),
        "nope".into(),
    );
    assert_eq!(
        code_of(validator().check(refused, Utc::now())),
        ("forbidden", "nope".into())
    );
}

#[test]
fn rejects_out_of_range_step_and_number_mismatch() {
    let mut r = testkit::record(&dev("a"), 1);
    r.fields[3].value = Some("+30.00".into());
    r.fields[3].number = Some(30.0);
    let (code, reason) = code_of(check_record(&r));
    assert_eq!(code, "value");
    assert!(
        reason.contains("r_sph") && reason.contains("range"),
        "{reason}"
    );
    let mut r = testkit::record(&dev("a"), 1);
    r.fields[3].value = Some("+1.10".into());
    r.fields[3].number = Some(1.1);
    assert!(code_of(check_record(&r)).1.contains("step"));
    let mut r = testkit::record(&dev("a"), 1);
    r.fields[3].number = Some(5.0);
    assert!(code_of(check_record(&r)).1.contains("number"));
}

#[test]
fn rejects_rule_header_template_and_id_problems() {
    let mut r = testkit::record(&dev("a"), 1);
    r.fields[9].value = Some("45.00".into());
    r.fields[9].number = Some(45.0);
    assert_eq!(code_of(check_record(&r)).0, "rule");
    let mut r = testkit::record(&dev("a"), 1);
    r.patient_id = Some("99999999".into());
    assert_eq!(code_of(check_record(&r)).0, "header");
    let mut r = testkit::record(&dev("a"), 1);
    r.template_version = 1;
    assert_eq!(code_of(check_record(&r)).0, "template_version");
    let mut r = testkit::record(&dev("a"), 1);
    r.template_id = "nope".into();
    assert_eq!(code_of(check_record(&r)).0, "unknown_template");
    let mut r = testkit::record(&dev("a"), 1);
    r.image_sha256 = "ab".repeat(32);
    assert_eq!(code_of(check_record(&r)).0, "record_id");
}

/// A test record whose `r_cyl` is unreadable, with its crop and `context`.
fn flagged_r_cyl(context: Option<record::ContextCrop>) -> Record {
    let mut r = testkit::record(&dev("a"), 1);
    r.fields[4].status = FieldStatus::Unreadable;
    r.fields[4].value = None;
    r.fields[4].number = None;
    r.review_crops.push(record::ReviewCrop {
        field: "r_cyl".into(),
        png_base64: png_base64(),
        context,
    });
    r
}

#[test]
fn flagged_fields_are_accepted_and_dates_checked() {
    let r = flagged_r_cyl(None);
    let Checked::Valid(v) = check_record(&r) else {
        panic!("rejected")
    };
    assert_eq!(v.crops.len(), 1);
    assert!(!v.stored_json.contains("png_base64\":\"iVBOR"));
}

/// A PNG header (signature and IHDR) of a `w x h` image.
fn png_of(w: u32, h: u32) -> String {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&w.to_be_bytes());
    png.extend_from_slice(&h.to_be_bytes());
    png.extend_from_slice(&[8, 0, 0, 0, 0]);
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[test]
fn context_crops_are_kept_apart_with_their_box_inside_the_image() {
    let mut r = flagged_r_cyl(Some(record::ContextCrop {
        png_base64: png_of(320, 120),
        bbox: [120, 50, 80, 20],
    }));
    let Checked::Valid(v) = check_record(&r) else {
        panic!("a v2 record with a context crop is refused")
    };
    assert_eq!(v.contexts.len(), 1);
    assert_eq!(v.contexts[0].2, [120, 50, 80, 20]);
    // Published and stored as v1: the field crop stays, its context does not.
    let published = String::from_utf8_lossy(&v.encoded).into_owned();
    assert!(published.contains("\"schema_version\":1") && published.contains("review_crops"));
    assert!(!published.contains("context") && !v.stored_json.contains("context"));

    // A box outside its image is refused, naming the field.
    if let Some(c) = r.review_crops[0].context.as_mut() {
        c.bbox = [300, 50, 80, 20];
    }
    let (code, reason) = code_of(check_record(&r));
    assert_eq!(code, "crop");
    assert!(
        reason.contains("r_cyl") && reason.contains("320x120"),
        "{reason}"
    );
}

fn png_base64() -> String {
    base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nxxxx")
}

#[test]
fn sample_crops_of_ok_fields_are_kept_apart_and_checked_like_review_crops() {
    let mut r = testkit::record(&dev("a"), 1);
    r.sample_crops.push(record::ReviewCrop {
        field: "r_sph".into(),
        png_base64: png_base64(),
        context: None,
    });
    let payload = record::encode(&r);
    assert!(String::from_utf8_lossy(&payload).contains("\"schema_version\":2"));
    let Checked::Valid(v) = check_record(&r) else {
        panic!("a v2 record with a sample crop is refused")
    };
    assert_eq!(v.samples.len(), 1);
    assert_eq!(v.samples[0].0, "r_sph");
    assert!(v.crops.is_empty());
    // Neither the stored payload nor the republished record carries them: both stay v1.
    assert!(
        !v.stored_json.contains("sample_crops") && v.stored_json.contains("\"schema_version\":1")
    );
    let republished = record::decode::<Record>(&v.encoded).unwrap();
    assert!(republished.sample_crops.is_empty());
    assert!(String::from_utf8_lossy(&v.encoded).contains("\"schema_version\":1"));

    // A sample crop must name a field read ok, once, and be a PNG.
    let mut flagged = r.clone();
    flagged.fields[3].status = FieldStatus::Unreadable;
    flagged.fields[3].value = None;
    flagged.fields[3].number = None;
    let (code, reason) = code_of(check_record(&flagged));
    assert_eq!(code, "crop");
    assert!(reason.contains("sample crop for \"r_sph\""), "{reason}");
    let mut twice = r.clone();
    twice.sample_crops.push(twice.sample_crops[0].clone());
    assert_eq!(code_of(check_record(&twice)).0, "crop");
    let mut unknown = r.clone();
    unknown.sample_crops[0].field = "nope".into();
    assert_eq!(code_of(check_record(&unknown)).0, "crop");
    let mut not_png = r.clone();
    not_png.sample_crops[0].png_base64 =
        base64::engine::general_purpose::STANDARD.encode(b"GIF89a");
    let (code, reason) = code_of(check_record(&not_png));
    assert_eq!(code, "crop");
    assert!(reason.contains("not a PNG"), "{reason}");
}

#[test]
fn a_v1_payload_with_sample_crops_is_a_schema_reject() {
    let mut r = testkit::record(&dev("a"), 1);
    r.sample_crops.push(record::ReviewCrop {
        field: "r_sph".into(),
        png_base64: png_base64(),
        context: None,
    });
    let mut j: serde_json::Value = serde_json::from_slice(&record::encode(&r)).unwrap();
    j["schema_version"] = 1.into();
    let c = validator().check(inbound_on("a", serde_json::to_vec(&j).unwrap()), Utc::now());
    let Checked::Rejected(x) = c else { panic!() };
    assert_eq!((x.code, x.defer), ("schema", false));
}

#[test]
fn a_clock_far_off_is_recorded_never_refused() {
    let r = testkit::record(&dev("a"), 1);
    let Checked::Valid(v) = check_record(&r) else {
        panic!("rejected")
    };
    assert_eq!(v.clock, None);
    // The device PC's clock three hours fast.
    let mut r = testkit::record(&dev("a"), 1);
    r.captured_at = Utc::now() + Duration::hours(3);
    r.recognized_at = r.captured_at;
    let Checked::Valid(v) = check_record(&r) else {
        panic!("a fast clock was refused")
    };
    let why = v.clock.expect("clock suspect");
    assert!(
        why.contains("captured_at") && why.contains("ahead"),
        "{why}"
    );
    // A clock in the last century.
    let mut r = testkit::record(&dev("a"), 1);
    r.captured_at = DateTime::parse_from_rfc3339("1999-05-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    r.recognized_at = r.captured_at;
    let Checked::Valid(v) = check_record(&r) else {
        panic!("an old clock was refused")
    };
    assert!(v.clock.unwrap().contains("before 2000"));
}

#[test]
fn what_the_hub_cannot_take_yet_is_deferred_and_the_rest_rejected() {
    let v = validator();
    let now = Utc::now();
    let defer = |r: &Record| match check_record(r) {
        Checked::Rejected(x) => (x.code, x.defer),
        Checked::Valid(_) => panic!("accepted"),
    };
    let mut r = testkit::record(&dev("a"), 1);
    r.template_version += 1;
    r.record_id = RecordId::derive(
        &r.device_id,
        &r.image_sha256,
        &r.template_id,
        r.template_version,
    );
    assert_eq!(defer(&r), ("template_version", true));
    let mut r = testkit::record(&dev("a"), 1);
    r.template_id = "autoref_fw9".into();
    assert_eq!(defer(&r), ("unknown_template", true));
    let mut r = testkit::record(&dev("a"), 1);
    r.image_sha256 = "ab".repeat(32);
    assert_eq!(defer(&r), ("record_id", false));
    let mut j: serde_json::Value =
        serde_json::from_slice(&record::encode(&testkit::record(&dev("a"), 1))).unwrap();
    j["schema_version"] = (record::SCHEMA_VERSION + 1).into();
    let Checked::Rejected(x) = v.check(inbound_on("a", serde_json::to_vec(&j).unwrap()), now)
    else {
        panic!()
    };
    assert_eq!((x.code, x.defer), ("schema_version_newer", true));
    j["schema_version"] = 0.into();
    let Checked::Rejected(x) = v.check(inbound_on("a", serde_json::to_vec(&j).unwrap()), now)
    else {
        panic!()
    };
    assert_eq!((x.code, x.defer), ("schema_version", false));
    let Checked::Rejected(x) = v.check(
        inbound_on("b", record::encode(&testkit::record(&dev("a"), 1))),
        now,
    ) else {
        panic!()
    };
    assert_eq!((x.code, x.defer), ("device_mismatch", false));
}

#[test]
fn every_known_version_of_a_template_stays_valid() {
    let set = testkit::template_set();
    let current = set.iter().next().unwrap().clone();
    let mut older = current.clone();
    older.version = current.version - 1;
    let mut versions = Versions::of_set(&set);
    versions.insert(older);
    let v = Validator::with_catalog(
        Arc::new(Catalog::new(versions)),
        HubConfig::default().validate,
    );
    let mut r = testkit::record(&dev("a"), 1);
    r.template_version = current.version - 1;
    r.record_id = RecordId::derive(
        &r.device_id,
        &r.image_sha256,
        &r.template_id,
        r.template_version,
    );
    assert!(matches!(
        v.check(inbound_on("a", record::encode(&r)), Utc::now()),
        Checked::Valid(_)
    ));
}

use base64::Engine as _;
