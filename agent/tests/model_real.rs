//! The committed reader on real sample exports: one labelled export of every layout is aligned
//! and cropped by the recognizer's own code (`dump_sample_crops`), then read with each field's
//! grammar constraint. Every field must read exactly, with a high confidence.
//! A missing samples folder fails the test unless `EXAMLINK_ALLOW_SKIP=1` (see `sim::samples`).

use std::path::{Path, PathBuf};

use agent::recognize::decode::FieldConstraint;
use agent::recognize::model::Model;
use record::TemplateSet;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn reads_one_real_export_of_every_layout() {
    let Some(samples) = sim::samples::required("reads_one_real_export_of_every_layout") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let picked = tmp.path().join("samples");
    std::fs::create_dir_all(&picked).unwrap();
    let mut layouts = 0;
    for entry in std::fs::read_dir(&samples).unwrap() {
        let dir = entry.unwrap().path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !dir.is_dir() {
            continue;
        }
        for ext in ["png", "jpg", "bmp"] {
            let img = dir.join(format!("{name}_001.{ext}"));
            if img.exists() {
                std::fs::copy(&img, picked.join(img.file_name().unwrap())).unwrap();
                let json = dir.join(format!("{name}_001.json"));
                std::fs::copy(&json, picked.join(json.file_name().unwrap())).unwrap();
                layouts += 1;
            }
        }
    }
    assert!(layouts >= 7, "found {layouts} layouts");
    let out = tmp.path().join("crops");
    let templates_dir = repo().join("templates");
    agent::recognize::dump_sample_crops(&templates_dir, &picked, &out).expect("crops");
    let templates = TemplateSet::load_dir(&templates_dir).unwrap();
    let model = Model::load(repo().join("models").as_path(), 1).expect("model");

    let (mut crops, mut constraints, mut texts) = (Vec::new(), Vec::new(), Vec::new());
    for line in std::fs::read_to_string(out.join("labels.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        let img = image::open(out.join(s("file"))).unwrap().into_luma8();
        crops.push(
            img.as_raw()
                .iter()
                .map(|&p| f32::from(p) / 255.0)
                .collect::<Vec<f32>>(),
        );
        let field = templates
            .get(&s("template"))
            .and_then(|t| t.field(&s("field")))
            .expect("field");
        constraints.push(FieldConstraint::new(
            &field.spec.grammar,
            &field.spec.absent,
        ));
        texts.push(s("text"));
    }
    assert!(texts.len() > 50, "only {} crops", texts.len());
    let readings = model.read(&crops, &constraints).expect("read");
    let wrong: Vec<_> = readings
        .iter()
        .zip(&texts)
        .filter(|(r, t)| r.text != **t)
        .map(|(r, t)| format!("{t:?} read as {:?} ({:.3})", r.text, r.confidence))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} wrong: {wrong:?}",
        wrong.len(),
        texts.len()
    );
    let low = readings.iter().filter(|r| r.confidence < 0.5).count();
    assert!(
        low * 20 <= readings.len(),
        "{low} of {} readings below 0.5 confidence",
        readings.len()
    );
}
