//! `recognize-bench`: speed and accuracy of the whole recognizer (identify → align → crop →
//! model → decode → validate) over the shared labelled exports, on one thread, for the shipped
//! int8-weights model and (with `--float DIR`) its float form, next to Tesseract 5 reading the
//! same aligned field crops, all measured in the same run. Prints a Markdown table; asserts
//! nothing about time.
//!
//! ```text
//! recognize-bench [--samples DIR] [--templates templates] [--model models] [--float DIR]
//!                 [--reps 3] [--tesseract tesseract]
//! ```
//!
//! How each number is measured:
//! - ours: wall time of `Recognizer::recognize` per export (decoding the file included), every
//!   export `--reps` times; p50/p95 over all runs. Field accuracy: the reported value equals the
//!   label exactly (absent labels matched by status `absent`); silent = `ok` but wrong.
//! - Tesseract: the crops our aligner cuts (`agent::recognize::samples`), upscaled 3x with a
//!   white margin, `--psm 7`, a whitelist of the field's alphabet, `OMP_THREAD_LIMIT=1`. One
//!   process per whitelist over a list of crops; its start-up cost (a one-crop run, best of 3)
//!   is subtracted per process, so the per-field time is the engine's, not the process's.
//!   Correct when the text, spaces removed, equals the text as printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/scoring.rs"]
mod scoring;

use agent::recognize::command::load;
use agent::recognize::samples::dump_sample_crops;
use agent::recognize::Recognizer;
use anyhow::{bail, Context};
use clap::Parser;
use record::TemplateSet;
use sim::samples::labelled_exports;

#[derive(Debug, Parser)]
#[command(about = "Recognition speed and accuracy against Tesseract 5 on the same crops")]
struct Cli {
    /// Labelled exports (the device catalog folder).
    #[arg(long, default_value = "../shared/devices")]
    samples: PathBuf,
    /// Templates folder.
    #[arg(long, default_value = "templates")]
    templates: PathBuf,
    /// The shipped (int8-weights) model folder.
    #[arg(long, default_value = "models")]
    model: PathBuf,
    /// The float form of the model (`training/dequantize.py`), measured beside it.
    #[arg(long)]
    float: Option<PathBuf>,
    /// Runs of every export per model.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// The Tesseract executable ("" skips the peer).
    #[arg(long, default_value = "tesseract")]
    tesseract: String,
}

#[derive(Debug, Default)]
struct Outcome {
    name: String,
    /// Every run's time per export, ms.
    export_ms: Vec<f64>,
    /// Per run: model time per field, ms.
    model_field_ms: Vec<f64>,
    /// Autoref exports only, ms.
    autoref_ms: Vec<f64>,
    fields: usize,
    correct: usize,
    silent: usize,
    review: usize,
    exports: usize,
    rejected: usize,
}

struct Sample {
    name: String,
    layout: String,
    bytes: Vec<u8>,
    fields: Vec<(String, Option<String>)>,
}

fn samples(dir: &Path) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (img, label) in labelled_exports(dir).with_context(|| format!("{}", dir.display()))? {
        let l: serde_json::Value = serde_json::from_slice(&std::fs::read(&label)?)
            .with_context(|| format!("{}", label.display()))?;
        let layout = format!(
            "{}_{}",
            l["device_type"].as_str().unwrap_or("?"),
            l["firmware"].as_str().unwrap_or("?")
        );
        let fields = scoring::label_fields(&l);
        out.push(Sample {
            name: img.file_name().unwrap_or_default().to_string_lossy().into(),
            layout,
            bytes: std::fs::read(&img)?,
            fields,
        });
    }
    Ok(out)
}

fn measure(name: &str, r: &Recognizer, samples: &[Sample], reps: usize) -> Outcome {
    let mut o = Outcome {
        name: name.into(),
        ..Outcome::default()
    };
    for rep in 0..reps {
        for s in samples {
            let t = Instant::now();
            let result = r.recognize(&s.bytes, &s.name);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            o.export_ms.push(ms);
            if s.layout.starts_with("autoref") {
                o.autoref_ms.push(ms);
            }
            if rep > 0 {
                continue;
            }
            o.exports += 1;
            o.fields += s.fields.len();
            let Ok(rec) = result.as_ref().map_err(|_| ()).and_then(|rec| {
                if rec.recognition.template_id == s.layout {
                    Ok(rec)
                } else {
                    Err(())
                }
            }) else {
                o.rejected += 1;
                o.review += s.fields.len();
                continue;
            };
            o.model_field_ms
                .push(rec.timings.read.as_secs_f64() * 1e3 / rec.fields().len().max(1) as f64);
            let score = scoring::score_fields(rec, &s.fields);
            o.correct += score.correct;
            o.silent += score.silent.len();
            o.review += score.review;
        }
    }
    o
}

/// Tesseract over the aligned crops: (crops, correct, engine ms per field, start-up ms).
struct Peer {
    crops: usize,
    correct: usize,
    field_ms: f64,
    startup_ms: f64,
    per_layout: BTreeMap<String, (usize, usize)>,
    version: String,
}

fn run_tesseract(exe: &str, list: &Path, whitelist: &str) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let out = Command::new(exe)
        .arg(list)
        .arg("stdout")
        .args(["--psm", "7", "-c"])
        .arg(format!("tessedit_char_whitelist={whitelist}"))
        .env("OMP_THREAD_LIMIT", "1")
        .output()
        .with_context(|| format!("running {exe}"))?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!("{exe} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn tesseract(exe: &str, templates: &TemplateSet, cli: &Cli) -> anyhow::Result<Peer> {
    let version = Command::new(exe)
        .arg("--version")
        .output()
        .with_context(|| format!("{exe} not found: install tesseract-ocr (scripts/setup)"))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("?")
        .to_owned();
    let dir = TempDir(std::env::temp_dir().join(format!("recognize-bench-{}", std::process::id())));
    std::fs::create_dir_all(dir.path())?;
    let dump = dump_sample_crops(&cli.templates, &cli.samples, dir.path())?;
    let labels = std::fs::read_to_string(dir.path().join("labels.jsonl"))?;
    // Whitelist → [(upscaled crop path, text, layout)].
    let mut groups: BTreeMap<String, Vec<(PathBuf, String, String)>> = BTreeMap::new();
    for (i, line) in labels.lines().enumerate() {
        let l: serde_json::Value = serde_json::from_str(line)?;
        let (tid, fname) = (
            l["template"].as_str().unwrap_or(""),
            l["field"].as_str().unwrap_or(""),
        );
        let Some(f) = templates.get(tid).and_then(|t| t.field(fname)) else {
            continue;
        };
        let mut chars: Vec<char> = f.spec.grammar.alphabet().chars().collect();
        chars.extend(f.spec.absent.iter().flat_map(|a| a.chars()));
        chars.sort_unstable();
        chars.dedup();
        let whitelist: String = chars.into_iter().collect();
        let crop = image::open(dir.path().join(l["file"].as_str().unwrap_or("")))?.to_luma8();
        let (w, h) = (crop.width() * 3, crop.height() * 3);
        let big = image::imageops::resize(&crop, w, h, image::imageops::FilterType::Triangle);
        let mut canvas = image::GrayImage::from_pixel(w + 40, h + 40, image::Luma([255]));
        image::imageops::overlay(&mut canvas, &big, 20, 20);
        let path = dir.path().join(format!("t{i:06}.png"));
        canvas.save(&path)?;
        groups.entry(whitelist).or_default().push((
            path,
            l["text"].as_str().unwrap_or("").to_owned(),
            tid.to_owned(),
        ));
    }
    // Start-up cost: a one-crop run, best of 3.
    let first = groups
        .values()
        .next()
        .and_then(|g| g.first())
        .context("no crops")?
        .0
        .clone();
    let one = dir.path().join("one.txt");
    std::fs::write(&one, format!("{}\n", first.display()))?;
    let startup = (0..3)
        .map(|_| run_tesseract(exe, &one, "0123456789").map(|r| r.0))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .min()
        .unwrap_or_default();
    let mut peer = Peer {
        crops: 0,
        correct: 0,
        field_ms: 0.0,
        startup_ms: startup.as_secs_f64() * 1e3,
        per_layout: BTreeMap::new(),
        version,
    };
    let mut engine = 0.0;
    for (gi, (whitelist, items)) in groups.iter().enumerate() {
        let list = dir.path().join(format!("list{gi}.txt"));
        let text: String = items
            .iter()
            .map(|(p, _, _)| format!("{}\n", p.display()))
            .collect();
        std::fs::write(&list, text)?;
        let (took, out) = run_tesseract(exe, &list, whitelist)?;
        engine += (took.as_secs_f64() * 1e3 - peer.startup_ms).max(0.0);
        let pages: Vec<&str> = out.split('\x0c').collect();
        for (k, (_, want, tid)) in items.iter().enumerate() {
            let got: String = pages
                .get(k)
                .map(|p| p.chars().filter(|c| !c.is_whitespace()).collect())
                .unwrap_or_default();
            let ok = &got == want;
            peer.crops += 1;
            peer.correct += usize::from(ok);
            let e = peer.per_layout.entry(tid.clone()).or_default();
            e.0 += 1;
            e.1 += usize::from(ok);
        }
    }
    peer.field_ms = engine / peer.crops.max(1) as f64;
    eprintln!(
        "tesseract: {} crops from {} exports ({} absent fields without a known marker skipped)",
        dump.crops, dump.exports, dump.skipped_absent
    );
    Ok(peer)
}

/// A scratch folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover scratch folder in the temp dir harms nothing.
        let _removed = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let samples = samples(&cli.samples)?;
    if samples.is_empty() {
        bail!("no labelled exports under {}", cli.samples.display());
    }
    let mut outcomes = Vec::new();
    let shipped = load(&cli.templates, &cli.model)?;
    let templates = shipped.templates().clone();
    eprintln!("int8-weights model {}", shipped.model_version());
    let mut models = vec![("int8 weights (shipped)", shipped)];
    if let Some(f) = &cli.float {
        models.push(("float32", load(&cli.templates, f)?));
    }
    for (name, r) in &models {
        // Warm-up: plans, allocator, page cache.
        for s in samples.iter().take(7) {
            let _warm = r.recognize(&s.bytes, &s.name);
        }
        outcomes.push(measure(name, r, &samples, cli.reps));
    }
    let peer = if cli.tesseract.is_empty() {
        None
    } else {
        Some(tesseract(&cli.tesseract, &templates, &cli)?)
    };

    let autoref_fields = record::catalog::fields("autoref").map_or(18, |f| f.len());
    println!(
        "Recognition, {} labelled exports ({} fields), one thread, {} runs each:\n",
        outcomes[0].exports, outcomes[0].fields, cli.reps
    );
    println!("| reader | field accuracy | silent errors | flagged (not absent) | ms/export p50 | ms/export p95 | autoref export p50 | ms/field (model) |");
    println!("|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| examlink {} | {:.2}% ({}/{}) | {} | {:.2}% | {:.1} | {:.1} | {:.1} | {:.2} |",
            o.name,
            100.0 * o.correct as f64 / o.fields.max(1) as f64,
            o.correct,
            o.fields,
            o.silent,
            100.0 * o.review as f64 / o.fields.max(1) as f64,
            scoring::pct(&o.export_ms, 0.5),
            scoring::pct(&o.export_ms, 0.95),
            scoring::pct(&o.autoref_ms, 0.5),
            scoring::pct(&o.model_field_ms, 0.5),
        );
    }
    if let Some(p) = &peer {
        println!(
            "| {} (same crops, engine time) | {:.2}% ({}/{}) | n/a | n/a | | | {:.1} (= {autoref_fields} x field) | {:.2} |",
            p.version,
            100.0 * p.correct as f64 / p.crops.max(1) as f64,
            p.correct,
            p.crops,
            p.field_ms * autoref_fields as f64,
            p.field_ms,
        );
        let ours = scoring::pct(&outcomes[0].autoref_ms, 0.5);
        println!(
            "\nRatio, autoref export p50, examlink int8 / Tesseract: {:.2} (examlink includes decoding, \
             identification and alignment; Tesseract start-up {:.0} ms per process excluded).",
            ours / (p.field_ms * autoref_fields as f64),
            p.startup_ms
        );
        if outcomes.len() > 1 {
            println!(
                "Ratio, export p50, int8 weights / float32: {:.2}.",
                scoring::pct(&outcomes[0].export_ms, 0.5)
                    / scoring::pct(&outcomes[1].export_ms, 0.5)
            );
        }
        println!("\nTesseract field accuracy per layout:\n");
        println!("| layout | crops | correct |");
        println!("|---|---|---|");
        for (l, (n, c)) in &p.per_layout {
            println!(
                "| {l} | {n} | {:.1}% |",
                100.0 * *c as f64 / (*n).max(1) as f64
            );
        }
    }
    println!("\nPP-OCR: not measured here (no PaddleOCR runtime on this machine kind).");
    Ok(())
}
