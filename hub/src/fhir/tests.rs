//! The mapping against the catalog, the templates and `docs/fhir-mapping.md`; every resource
//! of a fixture export per layout against the committed JSON and the typed R4 model
//! (`fhirbolt`, strict: an unknown or misplaced element is an error).
//!
//! `EXAMLINK_BLESS=1 cargo test --workspace --lib fhir` rewrites the fixtures.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use record::{Template, TemplateSet};
use serde_json::Value;

use super::mapping::{self, Eye, Laterality, IDENTITY_FIELDS, MEASURES};
use super::resources::{self, Exam, Measurement, RenderContext, Review};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn templates() -> Vec<Template> {
    let set = TemplateSet::load_dir(&repo().join("templates")).expect("the shipped templates load");
    let mut v: Vec<Template> = set.iter().cloned().collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(v.len(), 7, "one template per layout");
    v
}

#[test]
fn every_catalog_field_is_an_identity_field_or_mapped_once() {
    for (device, fields) in record::catalog::DEVICES {
        for f in *fields {
            let mapped: Vec<_> = mapping::measures(device)
                .filter(|m| {
                    [Eye::Right, Eye::Left, Eye::None]
                        .iter()
                        .filter(|e| (m.laterality == Laterality::Prefixed) != (**e == Eye::None))
                        .any(|e| m.field_name(*e) == *f)
                })
                .collect();
            if IDENTITY_FIELDS.contains(f) {
                assert!(mapped.is_empty(), "{device}.{f} is identity and mapped");
            } else {
                assert_eq!(
                    mapped.len(),
                    1,
                    "{device}.{f} mapped {} times",
                    mapped.len()
                );
            }
        }
    }
    for m in MEASURES {
        let fields = record::catalog::fields(m.device_type).expect("a known device type");
        let name = m.field_name(Eye::Right);
        assert!(
            fields.contains(&name.as_str()),
            "{}.{name} not in the catalog",
            m.device_type
        );
    }
}

#[test]
fn units_are_the_templates_units() {
    for t in templates() {
        for f in &t.fields {
            let Some(unit) = &f.spec.unit else { continue };
            let m = mapping::measures(&t.device_type)
                .find(|m| {
                    m.field_name(Eye::Right) == f.spec.name
                        || m.field_name(Eye::Left) == f.spec.name
                })
                .unwrap_or_else(|| panic!("{}: {} has a unit but no mapping", t.id, f.spec.name));
            assert_eq!(m.unit, unit, "{}: {}", t.id, f.spec.name);
        }
    }
    // The UCUM codes the issue names, and only LOINC or local codes for measures.
    for m in MEASURES {
        assert!(
            ["[diop]", "mm", "mm[Hg]", "um", "/mm2", "deg", "%", "mm3"].contains(&m.ucum),
            "{}",
            m.ucum
        );
        for c in [Some(m.code), m.code_left].into_iter().flatten() {
            assert!(
                c.system == mapping::LOINC || c.system == mapping::LOCAL,
                "{c:?}"
            );
        }
    }
    let iop = MEASURES.iter().find(|m| m.field == "iop").unwrap();
    assert_eq!(iop.code_for(Eye::Right).code, "79892-6");
    assert_eq!(iop.code_for(Eye::Left).code, "79893-4");
}

#[test]
fn the_mapping_table_in_docs_is_the_code_s() {
    let doc = std::fs::read_to_string(repo().join("docs/fhir-mapping.md")).unwrap();
    let table = mapping::markdown_table();
    assert!(
        doc.contains(&table),
        "docs/fhir-mapping.md does not hold the mapping table; paste this:\n{table}"
    );
}

/// A fixture export of template `t`: every field read ok, except (when the layout has that
/// many measures) the second absent, the third flagged unreadable and the fourth corrected by
/// a reviewer, so every status shows.
pub fn fixture_exam(t: &Template) -> Exam {
    let at = Utc
        .with_ymd_and_hms(2024, 5, 1, 10, 16, 0)
        .single()
        .unwrap();
    let reviewed = Utc.with_ymd_and_hms(2024, 5, 2, 8, 0, 0).single().unwrap();
    let device = format!("{}-01", t.device_type);
    let sha = record::ids::sha256_hex(t.id.as_bytes());
    let record_id = record::RecordId::derive(
        &record::DeviceId::new(&device).unwrap(),
        &sha,
        &t.id,
        t.version,
    )
    .to_string();
    let mut measurements = Vec::new();
    let mut reviews = Vec::new();
    let mut k = 0;
    for f in &t.fields {
        let name = f.spec.name.clone();
        let value = match name.as_str() {
            "patient_id" => "00482913".to_owned(),
            "exam_date" => "2024-05-01".to_owned(),
            "exam_time" => "10:15".to_owned(),
            "eye" => "OS".to_owned(),
            _ => f.spec.range.as_ref().expect("a measure has a range")[0].clone(),
        };
        // Identity fields as stored (normalised); measures through their grammar.
        let (value, number) = match IDENTITY_FIELDS.contains(&name.as_str()) {
            true => (Some(value), None),
            false => {
                let c = f.spec.check_printed(&value);
                (c.value, c.number)
            }
        };
        let mut m = Measurement {
            field: name.clone(),
            value,
            number,
            status: "ok".into(),
            reason: None,
            reviewed_by: None,
        };
        assert!(m.value.is_some(), "{}: {name} does not check", t.id);
        if !IDENTITY_FIELDS.contains(&name.as_str()) {
            k += 1;
            match k {
                2 => {
                    (m.value, m.number, m.status) = (None, None, "absent".into());
                }
                3 => {
                    (m.value, m.number, m.status) = (None, None, "unreadable".into());
                    m.reason = Some("confidence 0.41 below 0.90".into());
                }
                4 => {
                    reviews.push(Review {
                        field: name.clone(),
                        decision: "corrected".into(),
                        value: m.value.clone(),
                        before: Some("7".into()),
                        before_status: "invalid".into(),
                        by: "rita".into(),
                        also: vec![],
                        at: reviewed,
                    });
                    m.status = "corrected".into();
                    m.reviewed_by = Some("rita".into());
                }
                _ => {}
            }
        }
        measurements.push(m);
    }
    Exam {
        record_id,
        device_id: device,
        device_type: t.device_type.clone(),
        template: format!("{} v{}", t.id, t.version),
        firmware: t.firmware.clone(),
        model: Some(t.model.clone()),
        firmware_string: Some(t.firmware_string.clone()),
        patient_id: Some("00482913".into()),
        exam_date: Some("2024-05-01".into()),
        exam_time: t.field("exam_time").map(|_| "10:15".into()),
        source_file: format!("{}_000.{}", t.id, t.export_format),
        image_sha256: sha,
        captured_at: at,
        received_at: at,
        measurements,
        reviews,
    }
}

fn context() -> RenderContext {
    RenderContext {
        patient_system: "urn:oid:1.2.3.4.5.6".into(),
        exam_utc_offset: Some("+01:00".into()),
    }
}

fn typed(r: &Value) -> fhirbolt::model::r4::Resource {
    let text = r.to_string();
    fhirbolt::json::from_str(&text, None).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Deserializes into the typed model (strict) and back: nothing may be lost.
fn round_trip(r: &Value) {
    let typed = typed(r);
    let back: Value =
        serde_json::from_str(&fhirbolt::json::to_string(&typed, None).unwrap()).unwrap();
    assert_eq!(&back, r, "changed by the typed round trip");
}

#[test]
fn every_layout_renders_to_its_committed_fixture_and_the_typed_model() {
    let dir = repo().join("hub/tests/fixtures/fhir");
    let bless = std::env::var_os("EXAMLINK_BLESS").is_some();
    for t in templates() {
        let r = resources::render(&fixture_exam(&t), &context());
        for res in r.all() {
            round_trip(res);
        }
        let doc = Value::Array(r.all().into_iter().cloned().collect());
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        let file = dir.join(format!("{}.json", t.id));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (EXAMLINK_BLESS=1 writes it)", file.display()));
        assert_eq!(
            committed,
            text,
            "{} differs from the rendering",
            file.display()
        );

        // What the fixture must show.
        let obs: Vec<&Value> = r.observations.iter().map(|o| &o.resource).collect();
        let statuses: Vec<&str> = obs.iter().filter_map(|o| o["status"].as_str()).collect();
        assert!(statuses.contains(&"final"), "{}", t.id);
        assert!(statuses.contains(&"preliminary"), "{}: {statuses:?}", t.id);
        assert!(statuses.contains(&"amended"), "{}: {statuses:?}", t.id);
        assert_eq!(r.report["status"], "preliminary");
        assert_eq!(r.provenances.len(), 1);
        let target = r.provenances[0]["target"][0]["reference"].as_str().unwrap();
        let amended = obs.iter().find(|o| o["status"] == "amended").unwrap();
        assert_eq!(
            target,
            format!("Observation/{}", amended["id"].as_str().unwrap())
        );
        for o in &obs {
            assert_eq!(o["subject"]["identifier"]["value"], "00482913");
            assert!(o["effectiveDateTime"]
                .as_str()
                .unwrap()
                .starts_with("2024-05-01"));
            let d = o["derivedFrom"][0]["reference"].as_str().unwrap();
            assert_eq!(
                d,
                format!("DocumentReference/{}", r.document["id"].as_str().unwrap())
            );
            let site = o["bodySite"]["coding"][0]["code"].as_str();
            match o["code"]["coding"][0]["code"].as_str().unwrap() {
                "pupillary-distance" => assert!(site.is_none()),
                _ if t.field("eye").is_some() => assert_eq!(site, Some("362502000")),
                _ => assert!(site == Some("362503005") || site == Some("362502000")),
            }
        }
        assert_eq!(
            r.document["masterIdentifier"]["value"],
            r.document["description"]
                .as_str()
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .trim_end_matches(')')
        );
    }
}

#[test]
fn refraction_is_one_observation_per_eye_with_three_components() {
    let t = templates()
        .into_iter()
        .find(|t| t.id == "autoref_fw2")
        .unwrap();
    let mut exam = fixture_exam(&t);
    for m in &mut exam.measurements {
        (m.status, m.reviewed_by) = ("ok".into(), None);
        if let Some(f) = t.field(&m.field) {
            let v = match m.field.as_str() {
                "r_sph" => "-1.25",
                "r_cyl" => "-0.50",
                "r_axis" => "90",
                _ => continue,
            };
            let c = f.spec.check_printed(v);
            (m.value, m.number) = (c.value, c.number);
        }
    }
    exam.reviews.clear();
    let r = resources::render(&exam, &context());
    let refr: Vec<_> = r
        .observations
        .iter()
        .filter(|o| o.code == mapping::REFRACTION.code)
        .collect();
    assert_eq!(refr.len(), 2);
    let od = refr.iter().find(|o| o.eye == Eye::Right).unwrap();
    let c = od.resource["component"].as_array().unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(c[0]["code"]["coding"][0]["code"], "refraction-sphere");
    assert_eq!(c[0]["valueQuantity"]["value"], serde_json::json!(-1.25));
    assert_eq!(c[0]["valueQuantity"]["code"], "[diop]");
    assert_eq!(c[2]["valueQuantity"]["value"], serde_json::json!(90));
    assert_eq!(c[2]["valueQuantity"]["code"], "deg");
    assert_eq!(od.resource["status"], "final");
    assert_eq!(od.resource["bodySite"]["coding"][0]["code"], "362503005");
    assert_eq!(
        od.resource["effectiveDateTime"],
        "2024-05-01T10:15:00+01:00"
    );
    assert_eq!(r.report["status"], "final");
}

#[test]
fn the_capability_statement_and_bundles_are_typed_r4() {
    round_trip(&super::serve::capability_statement(true));
    let t = templates().into_iter().next().unwrap();
    let r = resources::render(&fixture_exam(&t), &context());
    let q = super::search::parse(
        super::search::Kind::Observation,
        "patient=00482913&_count=2",
        "urn:x",
    )
    .unwrap();
    let page: Vec<Value> = r
        .observations
        .iter()
        .take(2)
        .map(|o| o.resource.clone())
        .collect();
    let b = super::search::bundle(
        "https://hub.example/fhir",
        super::search::Kind::Observation,
        &q,
        5,
        page,
    );
    round_trip(&b);
}

#[test]
fn pushed_bodies_have_no_ids_and_only_logical_references() {
    let t = templates()
        .into_iter()
        .find(|t| t.id == "tonometer_fw1")
        .unwrap();
    let r = resources::render(&fixture_exam(&t), &context());
    let puts = super::push::requests("/fhir", &r);
    assert_eq!(puts.len(), r.all().len());
    for p in &puts {
        let text = p.body.to_string();
        assert!(!text.contains("\"reference\""), "{text}");
        typed(&p.body);
        if p.path.starts_with("/fhir/Provenance/") {
            assert!(p.body.get("id").is_some());
        } else {
            assert!(p.body.get("id").is_none(), "{}", p.path);
            assert!(p.path.contains("?identifier="), "{}", p.path);
        }
    }
    let iop = puts
        .iter()
        .find(|p| p.body["code"]["coding"][0]["code"] == "79892-6")
        .expect("the right IOP");
    let q = iop.path.split_once('?').unwrap().1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap();
    assert_eq!(pairs[0].0, "identifier");
    assert_eq!(
        pairs[0].1,
        format!(
            "{}|{}/od/79892-6",
            resources::ids::OBSERVATION,
            r.report["id"].as_str().unwrap()
        )
    );
}

#[test]
fn the_typed_model_refuses_what_r4_does_not_have() {
    // The check above can fail: an element R4 does not define, or a value of the wrong type.
    // (It does not check cardinality: fhirbolt 0.4 takes an array for a single element.)
    let t = templates()
        .into_iter()
        .find(|t| t.id == "biometer_fw1")
        .unwrap();
    let r = resources::render(&fixture_exam(&t), &context());
    let mut o = r.observations[0].resource.clone();
    o["laterality"] = serde_json::json!("OD");
    let text = o.to_string();
    assert!(fhirbolt::json::from_str::<fhirbolt::model::r4::Resource>(&text, None).is_err());
    let mut o = r.observations[0].resource.clone();
    o["status"] = serde_json::json!({"text": "final"});
    let text = o.to_string();
    assert!(fhirbolt::json::from_str::<fhirbolt::model::r4::Resource>(&text, None).is_err());
}
