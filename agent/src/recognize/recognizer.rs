//! The recognizer: one export's bytes in, the record crate's fields out (or a rejection).
//!
//! decode (pixel cap first) → grey → identify the layout and fit its map (`vision::layout`) →
//! one normalised crop per field box through that map → ONE batched `Model::read` with each
//! field's grammar constraint → per-field status ([`super::validate`]) → template rules →
//! PNG crops of the fields that need review, and of the `ok` fields quality sampling draws
//! ([`crate::assemble::sample`]); for each field that needs review, a context crop of the
//! export around it with its box ([`vision::context`]).
//!
//! Expected outcomes are values: an export that cannot be read is a [`Refusal`] with a
//! stable code (`empty_file`, `not_an_image`, `unsupported_format`, `corrupt_image`,
//! `too_large`, `unknown_layout`, `model_error`) and a reason; nothing here panics on input.

use std::io::Cursor;
use std::time::{Duration, Instant};

use record::{Field, TemplateSet};
use vision::context::context_crop;
use vision::pyramid::Pyramid;
use vision::{normalise_crop, Layouts, Match, CROP_H, CROP_W};

use super::decode::FieldConstraint;
use super::input;
use super::model::Model;
use super::validate::{self, FieldPolicy};
use crate::assemble::build::{ContextPng, Recognition};
use crate::assemble::sample::Draw;

/// Rejection code: no template accepts the export.
pub const UNKNOWN_LAYOUT: &str = "unknown_layout";
/// Rejection code: the model failed to run (a bug or a broken model file, not the export's fault).
pub const MODEL_ERROR: &str = "model_error";

/// Default pixel cap (a 1920x1080 screen is 2 Mpx, an A4 scan at 300 dpi 8.7 Mpx).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Why an export cannot become a record, refused by the assemble stage's screen or by the
/// recognizer: a stable code and a specific reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Refusal {
    /// Stable reason code.
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
}

impl Refusal {
    /// A rejection with `code` and `reason`.
    pub fn new(code: &str, reason: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A recognized export: what the record is built from, and what only diagnostics and the
/// benchmarks read.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognized {
    /// Template, fields, crops and model: the part the record needs.
    pub recognition: Recognition,
    /// Per field, the best guess of its normalised value (see [`validate::best_guess`]).
    pub guesses: Vec<Option<String>>,
    /// The layout match (map, anchor scores).
    pub layout: Match,
    /// Where the time went.
    pub timings: Timings,
}

/// Time spent per stage of one export (for metrics and the speed report).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Decoding the file into a grey image.
    pub decode: Duration,
    /// Pyramid, layout identification and alignment.
    pub identify: Duration,
    /// Field crops.
    pub crops: Duration,
    /// The model (one batch for all fields).
    pub read: Duration,
    /// Everything, validation and review PNGs included.
    pub total: Duration,
}

impl Recognized {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.recognition.fields.iter().find(|f| f.name == name)
    }

    /// Every canonical field, in catalog order.
    pub fn fields(&self) -> &[Field] {
        &self.recognition.fields
    }
}

/// Templates, their prepared plates and the model, loaded once.
#[derive(Debug)]
pub struct Recognizer {
    templates: TemplateSet,
    layouts: Layouts,
    model: Model,
    policy: FieldPolicy,
    max_pixels: u64,
}

/// The recognizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RecognizerError {
    /// A plate failed to load or an anchor is unusable.
    #[error(transparent)]
    Layout(#[from] vision::LayoutError),
}

impl Recognizer {
    /// Prepares every template's plate and anchors; the model is used as loaded.
    pub fn new(templates: TemplateSet, model: Model) -> Result<Self, RecognizerError> {
        let layouts = Layouts::new(&templates)?;
        Ok(Self {
            templates,
            layouts,
            model,
            policy: FieldPolicy::default(),
            max_pixels: DEFAULT_MAX_PIXELS,
        })
    }

    /// Replaces the drift the layout search tolerates past the templates' declared variation
    /// (`vision::Drift`; the benchmark compares it with none).
    pub fn with_drift(mut self, drift: vision::Drift) -> Self {
        self.layouts = self.layouts.with_drift(drift);
        self
    }

    /// Replaces the field decision thresholds.
    pub fn with_policy(mut self, policy: FieldPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the decoded-pixel cap.
    pub fn with_max_pixels(mut self, max_pixels: u64) -> Self {
        self.max_pixels = max_pixels;
        self
    }

    /// The templates.
    pub fn templates(&self) -> &TemplateSet {
        &self.templates
    }

    /// The prepared layouts.
    pub fn layouts(&self) -> &Layouts {
        &self.layouts
    }

    /// The model's version string.
    pub fn model_version(&self) -> &str {
        self.model.model_version()
    }

    /// Reads one export. `file_name` only labels log lines. No `ok` field keeps its crop.
    pub fn recognize(&self, bytes: &[u8], file_name: &str) -> Result<Recognized, Refusal> {
        self.recognize_drawn(bytes, file_name, None)
    }

    /// Reads one export, keeping the crops of the `ok` fields that `draw` picks for a blind
    /// check (quality sampling) beside those of the fields that need review.
    #[tracing::instrument(level = "debug", skip(self, bytes, draw), fields(template))]
    pub fn recognize_drawn(
        &self,
        bytes: &[u8],
        file_name: &str,
        draw: Option<&Draw<'_>>,
    ) -> Result<Recognized, Refusal> {
        let t0 = Instant::now();
        let mut timings = Timings::default();
        let decoded = input::decode(bytes, self.max_pixels)?;
        timings.decode = t0.elapsed();
        let pyramid = Pyramid::new(decoded);
        let img = pyramid.base();
        let m = self
            .layouts
            .identify_pyramid(&pyramid)
            .map_err(|u| Refusal::new(UNKNOWN_LAYOUT, u.reason))?;
        tracing::Span::current().record("template", m.template_id.as_str());
        let Some(t) = self.templates.get(&m.template_id) else {
            return Err(Refusal::new(
                UNKNOWN_LAYOUT,
                format!("template {} vanished", m.template_id),
            ));
        };
        timings.identify = t0.elapsed() - timings.decode;
        let (crops, contrasts): (Vec<Vec<f32>>, Vec<f32>) = t
            .fields
            .iter()
            .map(|f| normalise_crop(img, &m.map, f.bbox.map(|v| v as f32)))
            .unzip();
        let constraints: Vec<FieldConstraint> = t
            .fields
            .iter()
            .map(|f| FieldConstraint::new(&f.spec.grammar, &f.spec.absent))
            .collect();
        timings.crops = t0.elapsed() - timings.decode - timings.identify;
        let t_read = Instant::now();
        let readings = self.model.read(&crops, &constraints).map_err(|e| {
            Refusal::new(
                MODEL_ERROR,
                format!("reading the fields of {file_name}: {e}"),
            )
        })?;
        timings.read = t_read.elapsed();
        if readings.len() != t.fields.len() {
            return Err(Refusal::new(
                MODEL_ERROR,
                format!(
                    "the model returned {} readings for {} fields",
                    readings.len(),
                    t.fields.len()
                ),
            ));
        }
        let mut fields: Vec<Field> = t
            .fields
            .iter()
            .zip(&readings)
            .zip(&contrasts)
            .map(|((f, r), &c)| validate::decide(&f.spec, r, c, &self.policy))
            .collect();
        validate::apply_rules(t, &mut fields);
        validate::guard_identity(&mut fields, m.firmware.blur, &self.policy);
        let guesses = t
            .fields
            .iter()
            .zip(&fields)
            .map(|(ft, f)| validate::best_guess(&ft.spec, f))
            .collect();
        let crops = fields
            .iter()
            .zip(&crops)
            .filter(|(f, _)| f.status.needs_review() || draw.is_some_and(|d| d.keeps(t, f)))
            .filter_map(|(f, c)| crop_png(c).map(|png| (f.name.clone(), png)))
            .collect();
        // The export around each field that needs review, for the reviewer.
        let contexts = t
            .fields
            .iter()
            .zip(&fields)
            .filter(|(_, f)| f.status.needs_review())
            .filter_map(|(ft, f)| {
                let c = context_crop(img, &m.map, ft.bbox.map(|v| v as f32), t.width, t.height);
                let png = gray_png(c.width, c.height, c.pixels)?;
                Some(ContextPng {
                    field: f.name.clone(),
                    png,
                    bbox: c.bbox,
                })
            })
            .collect();
        let recognition = Recognition {
            device_type: t.device_type.clone(),
            template_id: t.id.clone(),
            template_version: t.version,
            firmware: t.firmware.clone(),
            fields,
            crops,
            contexts,
            model_version: self.model.model_version().to_owned(),
            alignment: m.beyond_declared.then(|| alignment(&m.map)),
        };
        timings.total = t0.elapsed();
        Ok(Recognized {
            recognition,
            guesses,
            layout: m,
            timings,
        })
    }
}

/// The fitted map as the record reports it (scale to 4 decimals, rotation to 0.001°, shift to
/// 0.01 px: finer is noise).
pub fn alignment(map: &vision::Affine) -> record::Alignment {
    let round = |v: f32, places: i32| {
        let k = 10f64.powi(places);
        (f64::from(v) * k).round() / k
    };
    record::Alignment {
        scale: round(map.scale(), 4),
        rotation_deg: round(vision::fit::rotation_deg(map), 3),
        shift_px: [round(map.tx, 2), round(map.ty, 2)],
    }
}

/// A normalised crop as an 8-bit grey PNG (`CROP_W x CROP_H`).
pub fn crop_png(crop: &[f32]) -> Option<Vec<u8>> {
    gray_png(CROP_W as u32, CROP_H as u32, vision::crop::to_u8(crop))
}

/// `width x height` grey pixels as a PNG.
fn gray_png(width: u32, height: u32, pixels: Vec<u8>) -> Option<Vec<u8>> {
    let img = image::GrayImage::from_raw(width, height, pixels)?;
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .ok()?;
    Some(out)
}

impl From<Recognized> for Recognition {
    fn from(r: Recognized) -> Self {
        r.recognition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recognizer_can_be_shared_by_worker_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Recognizer>();
    }

    // See: #14
    #[test]
    fn the_alignment_reports_the_fitted_similarity() {
        let a = alignment(&vision::Affine::similarity(
            1.25,
            f32::to_radians(-0.8),
            12.345,
            -3.0,
        ));
        assert_eq!(a.scale, 1.25);
        assert_eq!(a.rotation_deg, -0.8);
        assert_eq!(a.shift_px, [12.35, -3.0]);
    }

    #[test]
    fn review_crops_are_small_pngs() {
        let png = crop_png(&vec![1.0; CROP_W * CROP_H]).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() < 2048);
    }
}
