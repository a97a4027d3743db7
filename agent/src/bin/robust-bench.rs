//! `robust-bench`: how the whole recognizer fares on labelled sets made by `examlink-sim render`
//! (`--stress`, `--lookalike`), one thread: per set, field accuracy, ok-but-wrong fields, fields
//! sent to review, exports refused and why, look-alikes accepted, and per-export time p50/p95.
//! Prints a Markdown table; asserts nothing.
//!
//! ```text
//! robust-bench [--templates templates] [--model models] NAME=DIR...
//! ```
//!
//! A label whose `device_type` is null is a look-alike: the only right outcome is a refusal.
//! An export read as another template counts all its fields wrong (and as accepted foreign).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[path = "common/scoring.rs"]
mod scoring;

use agent::recognize::command::load;
use agent::recognize::Recognizer;
use anyhow::{bail, Context};
use clap::Parser;
use sim::samples::labelled_exports;

#[derive(Debug, Parser)]
#[command(about = "Recognition on simulated stress and look-alike sets")]
struct Cli {
    /// Templates folder.
    #[arg(long, default_value = "templates")]
    templates: PathBuf,
    /// The model folder.
    #[arg(long, default_value = "models")]
    model: PathBuf,
    /// Also measure every set with the layout search held to the templates' declared
    /// variation (no drift), in the same run.
    #[arg(long)]
    compare_no_drift: bool,
    /// Also read every set with no confidence gate and print, per field class, how many `ok`
    /// fields would be wrong at each threshold (the silent-error curves of the model card).
    #[arg(long)]
    curves: bool,
    /// Sets to measure, `NAME=DIR` (labelled exports, searched recursively).
    #[arg(required = true)]
    sets: Vec<String>,
}

#[derive(Debug, Default)]
struct Outcome {
    exports: usize,
    /// Exports with every field right.
    all_right: usize,
    fields: usize,
    correct: usize,
    silent: usize,
    review: usize,
    refused: usize,
    /// Exports read as another template.
    wrong_layout: usize,
    lookalikes: usize,
    lookalikes_accepted: usize,
    ms: Vec<f64>,
    /// Refusals by reason, digits dropped (`best template X: anchor "page" NCC < `), with the
    /// first few files.
    reasons: BTreeMap<String, (usize, Vec<String>)>,
    /// Ok-but-wrong fields: `file field: read X, label Y`.
    silent_cases: Vec<String>,
}

/// A refusal reason with its numbers taken out, so equal causes count together.
fn reason_class(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if c.is_ascii_digit() || c == '.' && out.ends_with('#') {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out.chars().take(110).collect()
}

/// One field read with no confidence gate: its name, confidence, and whether it came out `ok`
/// and whether it is right.
#[derive(Debug, Clone)]
struct Gateless {
    field: String,
    confidence: f32,
    ok: bool,
    correct: bool,
}

/// Every field of the accepted exports under `dir`, read by `r` (built with no confidence
/// gate).
fn gateless(r: &Recognizer, dir: &std::path::Path) -> anyhow::Result<Vec<Gateless>> {
    let mut out = Vec::new();
    for (img, label) in labelled_exports(dir)? {
        let l: serde_json::Value = serde_json::from_slice(&std::fs::read(&label)?)?;
        let (Some(dt), Some(fw)) = (l["device_type"].as_str(), l["firmware"].as_str()) else {
            continue;
        };
        let name: String = img.file_name().unwrap_or_default().to_string_lossy().into();
        let Ok(rec) = r.recognize(&std::fs::read(&img)?, &name) else {
            continue;
        };
        if rec.recognition.template_id != format!("{dt}_{fw}") {
            continue;
        }
        for (field, want) in scoring::label_fields(&l) {
            let Some(i) = rec.fields().iter().position(|f| f.name == field) else {
                continue;
            };
            let f = &rec.fields()[i];
            out.push(Gateless {
                correct: scoring::is_correct(f, &rec.guesses[i], &want),
                field,
                confidence: f.confidence,
                ok: f.status == record::FieldStatus::Ok,
            });
        }
    }
    Ok(out)
}

/// Thresholds the curves are printed at.
const CURVE_POINTS: [f32; 12] = [
    0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995,
];

/// Per field class, at each threshold: `ok` fields that are wrong (silent errors), and right
/// readings sent to review by the threshold alone.
fn print_curves(rows: &[Gateless]) {
    let identity = |f: &str| agent::recognize::validate::IDENTITY_FIELDS.contains(&f);
    let mut classes: Vec<(String, Vec<&Gateless>)> = vec![
        (
            "measurements (every other field)".into(),
            rows.iter().filter(|r| !identity(&r.field)).collect(),
        ),
        (
            "identity (patient_id, eye, exam_date)".into(),
            rows.iter().filter(|r| identity(&r.field)).collect(),
        ),
    ];
    for f in agent::recognize::validate::IDENTITY_FIELDS {
        classes.push((f.into(), rows.iter().filter(|r| r.field == f).collect()));
    }
    println!("\nSilent-error curves (no confidence gate; grammar, rules and blur guard applied):");
    for (name, rows) in classes {
        let ok: Vec<&&Gateless> = rows.iter().filter(|r| r.ok).collect();
        println!(
            "\n{name}: {} fields, {} ok without a gate, {} of them wrong\n",
            rows.len(),
            ok.len(),
            ok.iter().filter(|r| !r.correct).count()
        );
        println!("| threshold | ok-but-wrong | ok-but-wrong % of fields | right readings sent to review |");
        println!("|---|---|---|---|");
        for t in CURVE_POINTS {
            let kept = ok.iter().filter(|r| r.confidence >= t);
            let wrong = kept.clone().filter(|r| !r.correct).count();
            let lost = ok.iter().filter(|r| r.correct && r.confidence < t).count();
            println!(
                "| {t:.3} | {wrong} | {:.3}% | {lost} ({:.2}%) |",
                100.0 * wrong as f64 / rows.len().max(1) as f64,
                100.0 * lost as f64 / rows.len().max(1) as f64
            );
        }
    }
}

fn measure(r: &Recognizer, dir: &std::path::Path) -> anyhow::Result<Outcome> {
    let mut o = Outcome::default();
    let exports = labelled_exports(dir).with_context(|| format!("{}", dir.display()))?;
    if exports.is_empty() {
        bail!("no labelled exports under {}", dir.display());
    }
    for (img, label) in exports {
        let l: serde_json::Value = serde_json::from_slice(&std::fs::read(&label)?)
            .with_context(|| format!("{}", label.display()))?;
        let name: String = img.file_name().unwrap_or_default().to_string_lossy().into();
        let bytes = std::fs::read(&img)?;
        let t = Instant::now();
        let result = r.recognize(&bytes, &name);
        o.ms.push(t.elapsed().as_secs_f64() * 1e3);
        let (Some(dt), Some(fw)) = (l["device_type"].as_str(), l["firmware"].as_str()) else {
            o.lookalikes += 1;
            if let Ok(rec) = &result {
                o.lookalikes_accepted += 1;
                eprintln!(
                    "look-alike {name} accepted as {}",
                    rec.recognition.template_id
                );
            }
            continue;
        };
        let layout = format!("{dt}_{fw}");
        let fields = scoring::label_fields(&l);
        o.exports += 1;
        o.fields += fields.len();
        let rec = match result {
            Err(e) => {
                o.refused += 1;
                o.review += fields.len();
                let r = o.reasons.entry(reason_class(&e.reason)).or_default();
                r.0 += 1;
                if r.1.len() < 3 {
                    r.1.push(format!("{name}: {}", e.reason));
                }
                continue;
            }
            Ok(rec) if rec.recognition.template_id != layout => {
                o.wrong_layout += 1;
                o.silent += fields.len();
                eprintln!("{name} ({layout}) read as {}", rec.recognition.template_id);
                continue;
            }
            Ok(rec) => rec,
        };
        let score = scoring::score_fields(&rec, &fields);
        o.correct += score.correct;
        o.review += score.review;
        o.silent += score.silent.len();
        for (field, read, label, confidence) in score.silent {
            o.silent_cases.push(format!(
                "{name} {field}: read {read:?}, label {label:?} (confidence {confidence:.3})"
            ));
        }
        o.all_right += usize::from(score.correct == fields.len());
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let r = load(&cli.templates, &cli.model)?;
    let strict = cli
        .compare_no_drift
        .then(|| load(&cli.templates, &cli.model).map(|r| r.with_drift(vision::Drift::NONE)))
        .transpose()?;
    println!(
        "| set | exports | every field right | field accuracy | ok-but-wrong | review (not absent) | refused | read as another layout | look-alikes accepted | ms/export p50 | p95 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut details = Vec::new();
    let gateless_reader = cli
        .curves
        .then(|| {
            load(&cli.templates, &cli.model)
                .map(|r| r.with_policy(agent::recognize::validate::FieldPolicy::NO_CONFIDENCE_GATE))
        })
        .transpose()?;
    let mut curve_rows = Vec::new();
    for set in &cli.sets {
        let Some((name, dir)) = set.split_once('=') else {
            bail!("{set:?}: give a set as NAME=DIR");
        };
        let share = |n: usize, d: usize| 100.0 * n as f64 / d.max(1) as f64;
        let row = |label: &str, o: &Outcome| {
            println!(
                "| {label} | {} | {:.1}% ({}) | {:.2}% ({}/{}) | {:.3}% ({}) | {:.2}% | {:.1}% ({}) | {} | {} of {} | {:.1} | {:.1} |",
                o.exports,
                share(o.all_right, o.exports),
                o.all_right,
                share(o.correct, o.fields),
                o.correct,
                o.fields,
                share(o.silent, o.fields),
                o.silent,
                share(o.review, o.fields),
                share(o.refused, o.exports),
                o.refused,
                o.wrong_layout,
                o.lookalikes_accepted,
                o.lookalikes,
                scoring::pct(&o.ms, 0.5),
                scoring::pct(&o.ms, 0.95),
            );
        };
        let o = measure(&r, std::path::Path::new(dir))?;
        row(name, &o);
        if let Some(strict) = &strict {
            row(
                &format!("{name}, no drift"),
                &measure(strict, std::path::Path::new(dir))?,
            );
        }
        details.push((name.to_owned(), o));
        if let Some(g) = &gateless_reader {
            curve_rows.extend(gateless(g, std::path::Path::new(dir))?);
        }
    }
    for (name, o) in &details {
        if o.reasons.is_empty() && o.silent_cases.is_empty() {
            continue;
        }
        println!("\n{name}:");
        for (reason, (n, files)) in &o.reasons {
            println!("- refused {n}: {reason}");
            for f in files {
                println!("  - {f}");
            }
        }
        for case in &o.silent_cases {
            println!("- ok but wrong: {case}");
        }
    }
    if cli.curves {
        print_curves(&curve_rows);
    }
    Ok(())
}
