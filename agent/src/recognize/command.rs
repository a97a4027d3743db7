//! `agent recognize [--templates DIR] [--model PATH] FILE...`: one JSON object per file, one
//! per line, in the order given (other tools read this; keep it stable):
//!
//! ```json
//! {"file": "<basename>", "device_type": "autoref"|...|null, "template": "<id>"|null,
//!  "fields": {"<canonical name>": {"value": "<normalised>"|null,
//!             "status": "ok"|"absent"|"unreadable"|"invalid", "confidence": 0.0-1.0}},
//!  "error": null|"<code>: <reason>"}
//! ```
//!
//! Fields are in catalog order. `value` is the normalised value (dates ISO) for `ok` fields and
//! the reader's best guess for `unreadable`/`invalid` ones (null when it has no valid shape),
//! null for `absent`. A file that cannot be read or recognised gets its line with
//! `device_type` null, empty `fields` and the error, and the command goes on.
//!
//! Relative `--templates`/`--model` paths that do not exist under the current directory are
//! looked up under the executable's parent directories (so `target/release/agent` finds the
//! repository's `templates/` and `models/`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Serialize as DeriveSerialize;

use super::recognizer::{Recognized, Recognizer, Refusal};

/// Loads templates and model, then prints one JSON line per file to `out`.
pub fn recognize_files(
    templates_dir: &Path,
    model_path: &Path,
    files: &[PathBuf],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let recognizer = load(templates_dir, model_path)?;
    for file in files {
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let result = std::fs::read(file)
            .map_err(|e| Refusal::new("io_error", format!("reading {}: {e}", file.display())))
            .and_then(|bytes| recognizer.recognize(&bytes, &name));
        let line = json_line(&name, &result);
        writeln!(out, "{line}").context("writing the output")?;
    }
    out.flush().context("writing the output")?;
    Ok(())
}

/// Loads the templates folder and the model (folder, or any file inside it) into a recognizer
/// (one model thread), after [`locate`]-ing both paths.
pub fn load(templates_dir: &Path, model_path: &Path) -> anyhow::Result<Recognizer> {
    Ok(super::load::load(
        &locate(templates_dir),
        &locate(model_path),
        None,
        1,
    )?)
}

/// `p` if it exists; else, for a relative path, the first `<ancestor of the executable>/p` that
/// exists; else `p` (the load then fails naming it).
pub fn locate(p: &Path) -> PathBuf {
    if p.exists() || p.is_absolute() {
        return p.to_owned();
    }
    let exe = std::env::current_exe().ok();
    exe.as_deref()
        .and_then(Path::parent)
        .into_iter()
        .flat_map(Path::ancestors)
        .map(|a| a.join(p))
        .find(|c| c.exists())
        .unwrap_or_else(|| p.to_owned())
}

/// The JSON line for one file.
pub fn json_line(file: &str, result: &Result<Recognized, Refusal>) -> String {
    let line = match result {
        Ok(r) => Line {
            file,
            device_type: Some(&r.recognition.device_type),
            template: Some(&r.recognition.template_id),
            fields: Fields(
                r.fields()
                    .iter()
                    .zip(&r.guesses)
                    .map(|(f, g)| {
                        (
                            f.name.as_str(),
                            FieldOut {
                                value: g.clone(),
                                status: f.status.as_str(),
                                confidence: round4(f.confidence),
                            },
                        )
                    })
                    .collect(),
            ),
            error: None,
        },
        Err(u) => Line {
            file,
            device_type: None,
            template: None,
            fields: Fields(Vec::new()),
            error: Some(u.to_string()),
        },
    };
    serde_json::to_string(&line).unwrap_or_else(|e| {
        format!("{{\"file\":{file:?},\"device_type\":null,\"error\":\"encoding: {e}\"}}")
    })
}

fn round4(x: f32) -> f64 {
    (f64::from(x) * 1e4).round() / 1e4
}

#[derive(DeriveSerialize)]
struct Line<'a> {
    file: &'a str,
    device_type: Option<&'a str>,
    template: Option<&'a str>,
    fields: Fields<'a>,
    error: Option<String>,
}

#[derive(DeriveSerialize)]
struct FieldOut {
    value: Option<String>,
    status: &'static str,
    confidence: f64,
}

/// Fields as a JSON object in catalog order.
struct Fields<'a>(Vec<(&'a str, FieldOut)>);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}
