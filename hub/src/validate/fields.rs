//! Per-field and per-text checks of a decoded record against its template. Each returns the
//! first problem as a sentence naming the field and the value.

use base64::Engine;
use record::{FieldStatus, Record, ReviewCrop, Template};

/// Longest free-text value (file names, versions, reasons, raw readings).
const MAX_TEXT: usize = 256;
/// Largest decoded review or sample crop.
const MAX_CROP_BYTES: usize = 256 * 1024;
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn text_ok(s: &str) -> bool {
    s.len() <= MAX_TEXT && !s.contains('\0')
}

/// Strings are bounded, free of NUL (PostgreSQL text cannot hold it), ids well formed.
pub fn check_text(r: &Record) -> Result<(), String> {
    let named = [
        ("device_type", &r.device_type),
        ("template_id", &r.template_id),
        ("firmware", &r.firmware),
        ("source_file", &r.source_file),
        ("agent_version", &r.agent_version),
        ("model_version", &r.model_version),
    ];
    for (name, v) in named {
        if !text_ok(v) || v.is_empty() {
            return Err(format!(
                "{name} is empty, longer than {MAX_TEXT} bytes or holds NUL"
            ));
        }
    }
    if r.source_file.contains(['/', '\\']) {
        return Err(format!(
            "source_file {:?} is not a base name",
            r.source_file
        ));
    }
    if !record::ids::is_sha256_hex(&r.image_sha256) {
        return Err(format!(
            "image_sha256 {:?} is not 64 lowercase hex digits",
            r.image_sha256
        ));
    }
    for f in &r.fields {
        let texts = [
            Some(&f.name),
            f.value.as_ref(),
            f.unit.as_ref(),
            f.reason.as_ref(),
            f.raw.as_ref(),
        ];
        if texts.into_iter().flatten().any(|t| !text_ok(t)) {
            return Err(format!(
                "field {}: a text is longer than {MAX_TEXT} bytes or holds NUL",
                f.name
            ));
        }
    }
    for o in [&r.patient_id, &r.exam_date, &r.exam_time]
        .into_iter()
        .flatten()
    {
        if !text_ok(o) {
            return Err("a header value is too long or holds NUL".into());
        }
    }
    Ok(())
}

/// Every template field, in order; statuses consistent; `ok` values pass the field's spec, a
/// date bounded by `today` (UTC) resolved against `today`.
pub fn check_fields(r: &Record, t: &Template, today: chrono::NaiveDate) -> Result<(), String> {
    let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
    let expected: Vec<&str> = t.fields.iter().map(|f| f.spec.name.as_str()).collect();
    if names != expected {
        return Err(format!(
            "fields must be {expected:?} in that order, found {names:?}"
        ));
    }
    for (f, ft) in r.fields.iter().zip(&t.fields) {
        let spec = &ft.spec;
        let name = &f.name;
        if !(f.confidence.is_finite() && (0.0..=1.0).contains(&f.confidence)) {
            return Err(format!(
                "field {name}: confidence {} outside [0, 1]",
                f.confidence
            ));
        }
        match f.status {
            FieldStatus::Ok => {
                let Some(v) = f.value.as_deref() else {
                    return Err(format!("field {name}: status ok without a value"));
                };
                spec.check_value_at(v, today)
                    .map_err(|e| format!("field {name}: {e}"))?;
                let want = spec.grammar.number(v);
                let same = match (want, f.number) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    return Err(format!(
                        "field {name}: number {:?} does not match value {v:?}",
                        f.number
                    ));
                }
                if f.unit != spec.unit {
                    return Err(format!(
                        "field {name}: unit {:?}, template says {:?}",
                        f.unit, spec.unit
                    ));
                }
            }
            FieldStatus::Absent | FieldStatus::Unreadable => {
                if f.value.is_some() || f.number.is_some() {
                    return Err(format!(
                        "field {name}: status {} with a value",
                        f.status.as_str()
                    ));
                }
            }
            FieldStatus::Invalid => {}
        }
    }
    Ok(())
}

/// `patient_id`, `exam_date` and `exam_time` repeat their fields' values when those are ok.
pub fn check_header(r: &Record) -> Result<(), String> {
    for (name, header) in [
        ("patient_id", &r.patient_id),
        ("exam_date", &r.exam_date),
        ("exam_time", &r.exam_time),
    ] {
        let from_field = r
            .field(name)
            .filter(|f| f.status == FieldStatus::Ok)
            .and_then(|f| f.value.as_ref());
        if header.as_ref() != from_field {
            return Err(format!(
                "{name} {header:?} differs from its field's ok value {from_field:?}"
            ));
        }
    }
    Ok(())
}

/// Review crops: only for fields that need review, once each, PNG, bounded.
pub fn decode_crops(r: &Record) -> Result<super::Crops, String> {
    decode_list(
        r,
        &r.review_crops,
        "review crop",
        "a field needing review",
        |s| s.needs_review(),
    )
}

/// Sample crops (quality sampling, schema v2): only for fields whose status is `ok`, once
/// each, PNG, bounded like review crops.
pub fn decode_sample_crops(r: &Record) -> Result<super::Crops, String> {
    decode_list(r, &r.sample_crops, "sample crop", "a field read ok", |s| {
        s == FieldStatus::Ok
    })
}

/// Largest decoded context crop.
const MAX_CONTEXT_BYTES: usize = 128 * 1024;

/// Context crops (schema v2): the export around each flagged field, PNG, bounded, with the
/// field's box inside the image.
pub fn decode_contexts(r: &Record) -> Result<super::Contexts, String> {
    let mut out: super::Contexts = Vec::new();
    for c in &r.review_crops {
        let Some(ctx) = &c.context else { continue };
        if ctx.png_base64.len() > MAX_CONTEXT_BYTES * 4 / 3 + 4 {
            return Err(format!(
                "context crop for {} larger than {MAX_CONTEXT_BYTES} bytes",
                c.field
            ));
        }
        let png = base64::engine::general_purpose::STANDARD
            .decode(&ctx.png_base64)
            .map_err(|e| format!("context crop for {}: not base64: {e}", c.field))?;
        let Some((width, height)) = png_size(&png) else {
            return Err(format!("context crop for {} is not a PNG", c.field));
        };
        let [x, y, w, h] = ctx.bbox;
        let inside = w > 0
            && h > 0
            && x.checked_add(w).is_some_and(|e| e <= width)
            && y.checked_add(h).is_some_and(|e| e <= height);
        if !inside {
            return Err(format!(
                "context crop for {}: box {:?} is not inside its {width}x{height} image",
                c.field, ctx.bbox
            ));
        }
        let bbox = ctx.bbox.map(|v| v as i32);
        out.push((c.field.clone(), png, bbox));
    }
    Ok(out)
}

/// Width and height from a PNG's header (signature, then the IHDR chunk).
pub(crate) fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if !png.starts_with(PNG_MAGIC) || png.len() < 24 || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]);
    Some((be(16), be(20)))
}

fn decode_list(
    r: &Record,
    crops: &[ReviewCrop],
    what: &str,
    must_be: &str,
    wanted: fn(FieldStatus) -> bool,
) -> Result<super::Crops, String> {
    let mut out: super::Crops = Vec::with_capacity(crops.len());
    for c in crops {
        let fits = r.field(&c.field).is_some_and(|f| wanted(f.status));
        if !fits || out.iter().any(|(n, _)| *n == c.field) {
            return Err(format!(
                "{what} for {:?}, which is not {must_be} (or repeated)",
                c.field
            ));
        }
        if c.png_base64.len() > MAX_CROP_BYTES * 4 / 3 + 4 {
            return Err(format!(
                "{what} for {} larger than {MAX_CROP_BYTES} bytes",
                c.field
            ));
        }
        let png = base64::engine::general_purpose::STANDARD
            .decode(&c.png_base64)
            .map_err(|e| format!("{what} for {}: not base64: {e}", c.field))?;
        if !png.starts_with(PNG_MAGIC) {
            return Err(format!("{what} for {} is not a PNG", c.field));
        }
        out.push((c.field.clone(), png));
    }
    Ok(out)
}
