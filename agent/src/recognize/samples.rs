//! Aligned crops of *real* labelled exports, for the reader's validation set.
//!
//! [`dump_sample_crops`] walks a samples folder (`<stem>.<png|jpg|bmp>` beside `<stem>.json`
//! labels, as in the shared device catalog), identifies and aligns every export exactly as the
//! recognizer does, and writes the simulator's crops format:
//!
//! ```text
//! OUT/crops/<n>.png   normalised crop (vision::crop), 8-bit grey, CROP_W x CROP_H (n from 1, 6 digits)
//! OUT/labels.jsonl    {"file": "crops/<n>.png", "template": id, "field": name,
//!                      "text": text as printed, "source": export basename}
//! ```
//!
//! `text` is derived from the label and the field's grammar: ISO dates go back to the screen's
//! format, other values are printed as labelled. A null label (absent) is written as the
//! field's absent marker when it has exactly one, and skipped when the device prints several
//! (`---` or `Err`: which one is not in the label).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono::NaiveDate;
use record::{FieldSpec, Grammar, TemplateSet};
use sim::samples::labelled_exports;
use vision::pyramid::Pyramid;
use vision::{normalise_crop, Layouts};

use super::input;
use super::recognizer::{crop_png, DEFAULT_MAX_PIXELS};

/// What a dump wrote and skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CropDump {
    /// Crops written.
    pub crops: usize,
    /// Exports aligned.
    pub exports: usize,
    /// Absent fields skipped (marker unknown).
    pub skipped_absent: usize,
    /// Exports not used, with the reason (unknown layout, wrong template, unreadable label).
    pub failures: Vec<(String, String)>,
}

/// The text a device prints for a normalised `value` of `spec` (inverse of
/// `Grammar::normalise`); `None` when the value does not fit the grammar.
pub fn printed_text(spec: &FieldSpec, value: &str) -> Option<String> {
    match &spec.grammar {
        Grammar::Date { format } => {
            let d = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
            let text = record::grammar::format_date(d, format);
            (spec.grammar.normalise(&text).ok()? == value).then_some(text)
        }
        g => g.normalise(value).ok().filter(|v| v == value),
    }
}

#[derive(serde::Deserialize)]
struct Label {
    device_type: Option<String>,
    firmware: Option<String>,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Serialize)]
struct CropLine<'a> {
    file: String,
    template: &'a str,
    field: &'a str,
    text: &'a str,
    source: &'a str,
}

/// Writes aligned crops of every labelled export under `samples_dir` into `out_dir`.
pub fn dump_sample_crops(
    templates_dir: &Path,
    samples_dir: &Path,
    out_dir: &Path,
) -> anyhow::Result<CropDump> {
    let templates = TemplateSet::load_dir(templates_dir)
        .with_context(|| format!("loading templates from {}", templates_dir.display()))?;
    let layouts = Layouts::new(&templates).context("preparing the plates")?;
    let exports = labelled_exports(samples_dir)
        .with_context(|| format!("listing {}", samples_dir.display()))?;
    let crops_dir = out_dir.join("crops");
    std::fs::create_dir_all(&crops_dir)
        .with_context(|| format!("creating {}", crops_dir.display()))?;
    let labels_path = out_dir.join("labels.jsonl");
    let mut labels = std::io::BufWriter::new(
        std::fs::File::create(&labels_path)
            .with_context(|| format!("creating {}", labels_path.display()))?,
    );
    let mut dump = CropDump::default();
    for (img_path, label_path) in exports {
        let source = img_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fail = |dump: &mut CropDump, why: String| dump.failures.push((source.clone(), why));
        let label: Label = match std::fs::read(&label_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(l) => l,
            Err(e) => {
                fail(&mut dump, format!("label {}: {e}", label_path.display()));
                continue;
            }
        };
        let bytes =
            std::fs::read(&img_path).with_context(|| format!("reading {}", img_path.display()))?;
        let pyramid = match input::decode(&bytes, DEFAULT_MAX_PIXELS) {
            Ok(g) => Pyramid::new(g),
            Err(u) => {
                fail(&mut dump, u.to_string());
                continue;
            }
        };
        let m = match layouts.identify_pyramid(&pyramid) {
            Ok(m) => m,
            Err(u) => {
                fail(&mut dump, format!("unknown layout: {}", u.reason));
                continue;
            }
        };
        let Some(t) = templates.get(&m.template_id) else {
            continue;
        };
        if label.device_type.as_deref() != Some(t.device_type.as_str())
            || label.firmware.as_deref() != Some(t.firmware.as_str())
        {
            fail(
                &mut dump,
                format!(
                    "identified as {} but labelled {:?}/{:?}",
                    t.id, label.device_type, label.firmware
                ),
            );
            continue;
        }
        dump.exports += 1;
        for f in &t.fields {
            let text = match label.fields.get(&f.spec.name) {
                Some(serde_json::Value::String(v)) => printed_text(&f.spec, v),
                Some(serde_json::Value::Null) if f.spec.absent.len() == 1 => {
                    Some(f.spec.absent[0].clone())
                }
                Some(serde_json::Value::Null) => {
                    dump.skipped_absent += 1;
                    continue;
                }
                _ => None,
            };
            let Some(text) = text else {
                fail(
                    &mut dump,
                    format!("field {}: label does not fit the grammar", f.spec.name),
                );
                continue;
            };
            let (crop, _) = normalise_crop(pyramid.base(), &m.map, f.bbox.map(|v| v as f32));
            let png = crop_png(&crop).context("encoding a crop")?;
            let rel = format!("crops/{:06}.png", dump.crops + 1);
            std::fs::write(out_dir.join(&rel), png).with_context(|| format!("writing {rel}"))?;
            let line = CropLine {
                file: rel,
                template: &t.id,
                field: &f.spec.name,
                text: &text,
                source: &source,
            };
            serde_json::to_writer(&mut labels, &line)?;
            labels.write_all(b"\n")?;
            dump.crops += 1;
        }
    }
    labels.flush()?;
    Ok(dump)
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::Sign;

    fn spec(grammar: Grammar) -> FieldSpec {
        FieldSpec {
            name: "x".into(),
            grammar,
            unit: None,
            range: None,
            step: None,
            absent: vec![],
        }
    }

    #[test]
    fn printed_text_inverts_normalise() {
        let date = |f: &str| spec(Grammar::Date { format: f.into() });
        assert_eq!(
            printed_text(&date("DD/MM/YYYY"), "2021-05-13").as_deref(),
            Some("13/05/2021")
        );
        assert_eq!(
            printed_text(&date("MM/DD/YYYY"), "2021-05-13").as_deref(),
            Some("05/13/2021")
        );
        assert_eq!(
            printed_text(&date("DD-Mon-YYYY"), "2024-11-08").as_deref(),
            Some("08-Nov-2024")
        );
        assert_eq!(
            printed_text(&date("YYYY/MM/DD"), "2024-11-08").as_deref(),
            Some("2024/11/08")
        );
        let sph = spec(Grammar::Decimal {
            decimals: 2,
            sign: Sign::Always,
        });
        assert_eq!(printed_text(&sph, "+1.25").as_deref(), Some("+1.25"));
        assert_eq!(printed_text(&sph, "1.25"), None);
    }
}
