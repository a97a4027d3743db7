//! Accuracy and speed of the committed reader on a folder of crops, through the agent's own
//! path (tract + constrained decoding). Ignored by default; `training/` drives it:
//!
//! ```text
//! EXAMLINK_CROPS=training/data/val EXAMLINK_EVAL_OUT=/tmp/pred.jsonl \
//!   cargo test --release -p agent --test model_eval -- --ignored --nocapture
//! ```
//!
//! `EXAMLINK_CROPS` holds `labels.jsonl` (`{"file","template","field","text"}`) and the PNG
//! crops it names (32x192, normalised). `EXAMLINK_MODEL_DIR` (default `models/`) and
//! `EXAMLINK_TEMPLATES` (default `templates/`) pick the model and the field grammars.
//! Crops are read in batches of `EXAMLINK_BATCH` (default 18, one export's worth).
//! Prints exact-match accuracy, ms per batch and per crop; writes one JSON line per crop to
//! `EXAMLINK_EVAL_OUT` when set (the calibration data).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use agent::recognize::decode::FieldConstraint;
use agent::recognize::model::Model;
use record::TemplateSet;

fn env_path(key: &str, default: &str) -> PathBuf {
    std::env::var_os(key).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(default)
    })
}

#[test]
#[ignore = "needs EXAMLINK_CROPS; run by training/"]
fn eval_crops() {
    let Some(crops_dir) = std::env::var_os("EXAMLINK_CROPS").map(PathBuf::from) else {
        eprintln!("EXAMLINK_CROPS not set");
        return;
    };
    let model_dir = env_path("EXAMLINK_MODEL_DIR", "models");
    let templates =
        TemplateSet::load_dir(&env_path("EXAMLINK_TEMPLATES", "templates")).expect("templates");
    let batch: usize = std::env::var("EXAMLINK_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(18);
    let limit: usize = std::env::var("EXAMLINK_LIMIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let constrained = std::env::var("EXAMLINK_UNCONSTRAINED").is_err();

    let t = Instant::now();
    let model = Model::load(model_dir.as_path(), 1).expect("load");
    eprintln!(
        "loaded {} ({}) in {:?}",
        model.model_version(),
        model.spec().variant,
        t.elapsed()
    );

    let labels = std::fs::read_to_string(crops_dir.join("labels.jsonl")).expect("labels.jsonl");
    let mut items = Vec::new();
    let mut skipped = 0usize;
    for line in labels.lines().filter(|l| !l.trim().is_empty()).take(limit) {
        let v: serde_json::Value = serde_json::from_str(line).expect("label line");
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let img = image::open(crops_dir.join(s("file")))
            .expect("crop png")
            .into_luma8();
        assert_eq!((img.width(), img.height()), (192, 32), "{}", s("file"));
        // Inkless crops (all background) never reach the model: the recognizer marks such a
        // box unreadable from its contrast. The simulator's labels still name a text for them.
        if img.as_raw().iter().all(|&p| p >= 128) {
            skipped += 1;
            continue;
        }
        let crop: Vec<f32> = img.as_raw().iter().map(|&p| f32::from(p) / 255.0).collect();
        let constraint = match templates
            .get(&s("template"))
            .and_then(|t| t.field(&s("field")))
        {
            Some(f) if constrained => FieldConstraint::new(&f.spec.grammar, &f.spec.absent),
            _ => FieldConstraint::unconstrained(),
        };
        items.push((s("file"), s("text"), crop, constraint));
    }
    assert!(!items.is_empty(), "no crops");

    let mut out =
        std::env::var_os("EXAMLINK_EVAL_OUT").map(|p| std::fs::File::create(p).expect("out"));
    let (mut correct, mut batches) = (0usize, 0usize);
    let mut elapsed = std::time::Duration::ZERO;
    for chunk in items.chunks(batch) {
        let crops: Vec<Vec<f32>> = chunk.iter().map(|i| i.2.clone()).collect();
        let cons: Vec<FieldConstraint> = chunk.iter().map(|i| i.3.clone()).collect();
        let t = Instant::now();
        let readings = model.read(&crops, &cons).expect("read");
        elapsed += t.elapsed();
        batches += 1;
        for (item, r) in chunk.iter().zip(&readings) {
            let ok = r.text == item.1;
            // The simulator also prints shape-breaking texts (day 38, hour 64) that constrained
            // decoding can never produce: `valid` tells them apart.
            let valid = accepts(&item.3, &item.1);
            correct += usize::from(ok);
            if let Some(f) = out.as_mut() {
                let p: f32 = r.char_probs.iter().product();
                let line = serde_json::json!({"file": item.0, "text": item.1, "pred": r.text,
                    "ok": ok, "valid": valid, "confidence": r.confidence, "char_prob_product": p,
                    "min_char_prob": r.char_probs.iter().copied().fold(1.0f32, f32::min)});
                writeln!(f, "{line}").expect("write");
            }
        }
    }
    let n = items.len();
    let ms_batch = elapsed.as_secs_f64() * 1000.0 / batches as f64;
    println!(
        "EVAL n={n} acc={:.4} ms_per_batch={ms_batch:.2} ms_per_crop={:.3} batch={batch} constrained={constrained} skipped_inkless={skipped}",
        correct as f64 / n as f64,
        elapsed.as_secs_f64() * 1000.0 / n as f64
    );
}

fn accepts(c: &FieldConstraint, text: &str) -> bool {
    let mut prefix = String::new();
    for ch in text.chars() {
        if !c.prefix_ok(&prefix, ch) {
            return false;
        }
        prefix.push(ch);
    }
    c.can_end(&prefix)
}
