//! Golden accuracy of the whole recognizer (committed templates and model) over every shared
//! sample export, with the scoring rules of the catalog's `score.py`:
//! - a field is correct when the reported value equals the label exactly (a null label is
//!   matched by status `absent` or a null value);
//! - silent error: status `ok` and not correct;
//! - review: status not `ok`; `review_hard` leaves out `absent`.
//!
//! Targets: accuracy ≥ 99.9 %, silent ≤ 0.05 %, review_hard ≤ 1 %, every sample routed to its
//! own template. Also prints how the confidence of wrong readings compares with the threshold.
//! `EXAMLINK_PREDS=FILE` writes the `agent recognize` JSON lines, for `score.py`.
//! Fails when the samples or the committed model are absent, unless `EXAMLINK_ALLOW_SKIP=1`
//! (then it prints `SKIPPED`); see `sim::samples`.

mod recognize_common;

use std::collections::BTreeMap;
use std::io::Write;

use agent::recognize::command::{json_line, load};
use agent::recognize::validate::DEFAULT_MIN_CONFIDENCE;
use recognize_common as common;
use record::FieldStatus;

#[derive(Default, Debug)]
struct Tally {
    images: usize,
    fields: usize,
    correct: usize,
    silent: usize,
    review: usize,
    review_hard: usize,
    misrouted: usize,
    rejected: usize,
}

#[test]
fn golden_accuracy_on_the_shared_samples() {
    const TEST: &str = "golden_accuracy_on_the_shared_samples";
    let Some(dir) = common::samples_dir(TEST) else {
        return;
    };
    let models = common::root().join("models");
    if !models.join("model.json").is_file() {
        sim::samples::skip_or_fail(TEST, &format!("no committed model in {}", models.display()));
        return;
    }
    let recognizer = load(&common::root().join("templates"), &models).expect("recognizer loads");
    let mut preds =
        std::env::var_os("EXAMLINK_PREDS").map(|p| std::fs::File::create(p).expect("preds file"));
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    // Confidence of every reading whose text was wrong, and of every right one (calibration view).
    let (mut wrong_conf, mut right_conf) = (Vec::new(), Vec::new());
    let mut problems = Vec::new();
    // Per layout: decode, identify, crops, read, total (ms), summed.
    let mut times: BTreeMap<String, (usize, [f64; 5])> = BTreeMap::new();
    for (path, label) in common::samples(&dir) {
        let layout = label.layout();
        if recognizer.templates().get(&layout).is_none() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let result = recognizer.recognize(&bytes, &name);
        if let Some(f) = preds.as_mut() {
            writeln!(f, "{}", json_line(&name, &result)).unwrap();
        }
        let t = tally.entry(layout.clone()).or_default();
        t.images += 1;
        let n = label.fields.len();
        t.fields += n;
        let r = match result {
            Ok(r) if r.recognition.template_id == layout => {
                let tm = &r.timings;
                let e = times.entry(layout.clone()).or_default();
                e.0 += 1;
                for (acc, d) in
                    e.1.iter_mut()
                        .zip([tm.decode, tm.identify, tm.crops, tm.read, tm.total])
                {
                    *acc += d.as_secs_f64() * 1e3;
                }
                r
            }
            Ok(r) => {
                t.misrouted += 1;
                t.silent += n;
                problems.push(format!("{name}: routed to {}", r.recognition.template_id));
                continue;
            }
            Err(u) => {
                t.rejected += 1;
                t.review += n;
                t.review_hard += n;
                problems.push(format!("{name}: rejected: {u}"));
                continue;
            }
        };
        for (fname, want) in &label.fields {
            let want = want.as_str();
            let Some(i) = r.fields().iter().position(|f| &f.name == fname) else {
                t.review += 1;
                t.review_hard += 1;
                continue;
            };
            let (f, guess) = (&r.fields()[i], &r.guesses[i]);
            let correct = match want {
                None => f.status == FieldStatus::Absent || guess.is_none(),
                Some(w) => guess.as_deref() == Some(w),
            };
            t.correct += usize::from(correct);
            if f.status != FieldStatus::Absent || want.is_some() {
                (if correct {
                    &mut right_conf
                } else {
                    &mut wrong_conf
                })
                .push(f.confidence);
            }
            if f.status == FieldStatus::Ok {
                if !correct {
                    t.silent += 1;
                    problems.push(format!(
                        "{name}: {fname} SILENT ok {guess:?} != {want:?} (conf {:.3})",
                        f.confidence
                    ));
                }
            } else {
                t.review += 1;
                if f.status != FieldStatus::Absent {
                    t.review_hard += 1;
                    problems.push(format!(
                        "{name}: {fname} {} {guess:?} (want {want:?}, raw {:?}, conf {:.3}): {}",
                        f.status.as_str(),
                        f.raw,
                        f.confidence,
                        f.reason.as_deref().unwrap_or("")
                    ));
                } else if want.is_some() {
                    problems.push(format!("{name}: {fname} FALSE ABSENT (want {want:?})"));
                }
            }
        }
    }
    let mut all = Tally::default();
    println!(
        "{:<16} {:>6} {:>6} {:>9} {:>8} {:>8} {:>9}",
        "layout", "images", "fields", "accuracy", "silent", "review", "rev_hard"
    );
    for (k, t) in &tally {
        let f = t.fields.max(1) as f64;
        println!(
            "{k:<16} {:>6} {:>6} {:>9.4} {:>8.4} {:>8.4} {:>9.4}",
            t.images,
            t.fields,
            t.correct as f64 / f,
            t.silent as f64 / f,
            t.review as f64 / f,
            t.review_hard as f64 / f
        );
        all.images += t.images;
        all.fields += t.fields;
        all.correct += t.correct;
        all.silent += t.silent;
        all.review += t.review;
        all.review_hard += t.review_hard;
        all.misrouted += t.misrouted;
        all.rejected += t.rejected;
    }
    let f = all.fields.max(1) as f64;
    let (acc, silent, hard) = (
        all.correct as f64 / f,
        all.silent as f64 / f,
        all.review_hard as f64 / f,
    );
    println!("OVERALL {} images {} fields: accuracy={acc:.4} silent={silent:.4} review={:.4} review_hard={hard:.4}", all.images, all.fields, all.review as f64 / f);
    wrong_conf.sort_by(f32::total_cmp);
    right_conf.sort_by(f32::total_cmp);
    println!(
        "threshold {DEFAULT_MIN_CONFIDENCE}: {} wrong readings, highest confidence {:?}; {} right readings below it",
        wrong_conf.len(),
        wrong_conf.last(),
        right_conf.iter().filter(|&&c| c < DEFAULT_MIN_CONFIDENCE).count()
    );
    println!(
        "mean ms per export (one thread; build profile as run): decode identify crops read total"
    );
    for (k, (n, t)) in &times {
        let m = |i: usize| t[i] / *n as f64;
        println!(
            "  {k:<16} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            m(0),
            m(1),
            m(2),
            m(3),
            m(4)
        );
    }
    for p in &problems {
        println!("  {p}");
    }
    assert_eq!(
        all.misrouted + all.rejected,
        0,
        "misrouted or rejected samples"
    );
    assert!(silent <= 0.0005, "silent errors {silent:.4} > 0.0005");
    assert!(acc >= 0.999, "accuracy {acc:.4} < 0.999");
    assert!(hard <= 0.01, "review (excluding absent) {hard:.4} > 0.01");
}
