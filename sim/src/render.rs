//! The simulator: templates prepared once (plate decoded, fonts rasterised), then any number of
//! synthetic exports: values drawn on the plate with each field's `render` spec, then the
//! template's degradations. Immutable after construction, so one `Simulator` serves many threads.
//!
//! The simulator's clock is a fixed `today` (default: the UTC date when it was built): exam dates
//! are drawn up to it, so a seed renders the same export all day, and [`Simulator::with_today`]
//! fixes it for tests. [`Simulator::render_export_at`] stamps one export with a chosen moment.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime};
use image::{DynamicImage, GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use record::{Template, TemplateSet};
use vision::Affine;

use crate::degrade::{self, Degrade, ScanMode, Source};
use crate::filters;
use crate::fonts::{FontDirs, FontError};
use crate::stress::{Lookalike, Stress};
use crate::text::{self, Face};
use crate::values::{self, GenerateError, Label, Values, DEFAULT_ABSENT_RATE};

/// Why the simulator could not start or render.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A font is missing or unreadable.
    #[error(transparent)]
    Font(#[from] FontError),
    /// The plate image could not be read.
    #[error("template {template}: plate {path}: {source}")]
    Plate {
        /// Template id.
        template: String,
        /// Plate path.
        path: String,
        /// Decoder error.
        source: image::ImageError,
    },
    /// The plate's size differs from the template's frame.
    #[error("template {template}: plate is {got:?}, template frame is {want:?}")]
    PlateSize {
        /// Template id.
        template: String,
        /// Plate size.
        got: (u32, u32),
        /// Template width and height.
        want: (u32, u32),
    },
    /// No template with this id.
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    /// Values could not be generated.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// Encoding or JPEG round trip failed.
    #[error("template {template}: encoding: {problem}")]
    Encode {
        /// Template id.
        template: String,
        /// What failed.
        problem: String,
    },
}

/// A template ready to render.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The template.
    pub template: Template,
    /// The plate, as RGB.
    pub plate: RgbImage,
    /// Colour type of plain exports (gray when the plate is grayscale).
    pub base_mode: ScanMode,
    /// Screen or paper background (median of the plate's border).
    pub fill: [u8; 3],
    /// Face of each field, template order.
    pub faces: Vec<Arc<Face>>,
}

impl Prepared {
    /// Draws `texts` (template field order; `None` skips a field) onto `canvas`, whose top-left
    /// pixel is at `(ox, oy)` of the reference frame.
    pub fn draw(&self, canvas: &mut RgbImage, ox: i32, oy: i32, texts: &[Option<&str>]) {
        for ((f, face), t) in self.template.fields.iter().zip(&self.faces).zip(texts) {
            let Some(t) = t else { continue };
            let r = &f.render;
            if let (Some(color), Some(ghost)) = (r.ghost, r.ghost_text.as_deref()) {
                text::blend(
                    canvas,
                    ox,
                    oy,
                    &face.mask(ghost, r.origin, &r.anchor),
                    color,
                );
            }
            text::blend(canvas, ox, oy, &face.mask(t, r.origin, &r.anchor), r.color);
        }
    }
}

/// One synthetic export.
#[derive(Debug, Clone)]
pub struct Export {
    /// Template id.
    pub template: String,
    /// The exported image (RGB, or grayscale for gray and bitonal modes).
    pub image: DynamicImage,
    /// Colour type to write.
    pub mode: ScanMode,
    /// Ground truth.
    pub label: Label,
    /// Text printed in each field's slot, template order.
    pub printed: Vec<String>,
    /// Reference frame → export pixels.
    pub map: Affine,
    /// File extension (`png`, `jpg`, `bmp`).
    pub format: String,
    /// The JPEG file, for JPEG templates (written as is).
    pub jpeg: Option<Vec<u8>>,
}

/// The generator of export `n` of template `id` for `seed`: independent of the other templates
/// and exports, so `--template` filters and counts do not change what an export looks like.
pub fn export_rng(seed: u64, id: &str, n: usize) -> ChaCha8Rng {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ h);
    rng.set_stream(n as u64);
    rng
}

/// The device simulator.
#[derive(Debug, Clone)]
pub struct Simulator {
    prepared: Vec<Prepared>,
    absent_rate: f64,
    today: NaiveDate,
    stress: Stress,
}

fn border_median(img: &RgbImage) -> [u8; 3] {
    let (w, h) = img.dimensions();
    let mut ch: [Vec<u8>; 3] = Default::default();
    for (x, y, p) in img.enumerate_pixels() {
        if x < 2 || y < 2 || x + 2 >= w || y + 2 >= h {
            for k in 0..3 {
                ch[k].push(p.0[k]);
            }
        }
    }
    ch.map(|mut v| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    })
}

impl Simulator {
    /// Prepares every template of `set`: decodes plates, loads and rasterises fonts.
    pub fn new(set: &TemplateSet, fonts: &FontDirs) -> Result<Self, SimError> {
        let mut faces: HashMap<(String, u32), Arc<Face>> = HashMap::new();
        let mut prepared = Vec::with_capacity(set.len());
        for t in set.iter() {
            let plate_err = |source| SimError::Plate {
                template: t.id.clone(),
                path: t.plate.display().to_string(),
                source,
            };
            let decoded = image::open(&t.plate).map_err(plate_err)?;
            let base_mode = match decoded.color() {
                image::ColorType::L8 | image::ColorType::L16 | image::ColorType::La8 => {
                    ScanMode::Gray
                }
                _ => ScanMode::Rgb,
            };
            let plate = decoded.to_rgb8();
            if plate.dimensions() != (t.width, t.height) {
                return Err(SimError::PlateSize {
                    template: t.id.clone(),
                    got: plate.dimensions(),
                    want: (t.width, t.height),
                });
            }
            let mut fface = Vec::with_capacity(t.fields.len());
            for f in &t.fields {
                let r = &f.render;
                let key = (r.font.clone(), r.size_px.to_bits());
                let face = match faces.get(&key) {
                    Some(face) => face.clone(),
                    None => {
                        let bytes = fonts.read(&r.font, &t.id, &f.spec.name)?;
                        let extra: String =
                            f.spec.absent.concat() + r.ghost_text.as_deref().unwrap_or("");
                        let face = Face::new(bytes, r.size_px, &extra).map_err(|e| {
                            FontError::Unreadable {
                                path: r.font.clone().into(),
                                problem: e.to_string(),
                            }
                        })?;
                        let face = Arc::new(face);
                        faces.insert(key, face.clone());
                        face
                    }
                };
                fface.push(face);
            }
            prepared.push(Prepared {
                fill: border_median(&plate),
                template: t.clone(),
                plate,
                base_mode,
                faces: fface,
            });
        }
        Ok(Simulator {
            prepared,
            absent_rate: DEFAULT_ABSENT_RATE,
            today: record::grammar::today_utc(),
            stress: Stress::Documented,
        })
    }

    /// Sets the simulator's today (UTC): exam dates are drawn up to it and checked against it
    /// (default: the UTC date when the simulator was built).
    pub fn with_today(mut self, today: NaiveDate) -> Self {
        self.today = today;
        self
    }

    /// The simulator's today (UTC).
    pub fn today(&self) -> NaiveDate {
        self.today
    }

    /// Draws exports past the documented variation (default [`Stress::Documented`]; see
    /// [`crate::stress`]).
    pub fn with_stress(mut self, stress: Stress) -> Self {
        self.stress = stress;
        self
    }

    /// Replaces every template's plate by a look-alike's (see [`crate::stress::lookalike_plate`]):
    /// one glyph of its firmware string or model name changed. Templates where no glyph can be
    /// swapped are dropped; their ids are returned.
    pub fn into_lookalikes(mut self, which: Lookalike) -> (Self, Vec<String>) {
        let mut dropped = Vec::new();
        self.prepared.retain_mut(|p| {
            match crate::stress::lookalike_plate(&p.template, &p.plate, p.fill, which) {
                Some(plate) => {
                    p.plate = plate;
                    true
                }
                None => {
                    dropped.push(p.template.id.clone());
                    false
                }
            }
        });
        (self, dropped)
    }

    /// Sets the share of absent groups (default 5 %).
    pub fn with_absent_rate(mut self, rate: f64) -> Self {
        self.absent_rate = rate;
        self
    }

    /// The prepared templates, by id.
    pub fn templates(&self) -> &[Prepared] {
        &self.prepared
    }

    /// The prepared template `id`.
    pub fn get(&self, id: &str) -> Result<&Prepared, SimError> {
        self.prepared
            .iter()
            .find(|p| p.template.id == id)
            .ok_or_else(|| SimError::UnknownTemplate(id.into()))
    }

    /// A synthetic export of template `id`: image and label.
    pub fn render<R: Rng>(&self, id: &str, rng: &mut R) -> Result<(DynamicImage, Label), SimError> {
        let e = self.render_export(id, rng)?;
        Ok((e.image, e.label))
    }

    /// A synthetic export of template `id`, with its colour type, map and printed texts.
    pub fn render_export<R: Rng>(&self, id: &str, rng: &mut R) -> Result<Export, SimError> {
        let p = self.get(id)?;
        let values = values::generate(&p.template, self.today, rng, self.absent_rate)?;
        self.export(p, values, rng)
    }

    /// [`Simulator::render_export`] with the exam date and time (where the layout shows one)
    /// stamped `at`, the device's own clock, printed as given even outside the template's range
    /// (see [`values::stamp`]). The same `rng` state gives the same export as `render_export`
    /// but for those two fields.
    pub fn render_export_at<R: Rng>(
        &self,
        id: &str,
        rng: &mut R,
        at: NaiveDateTime,
    ) -> Result<Export, SimError> {
        let p = self.get(id)?;
        let mut values = values::generate(&p.template, self.today, rng, self.absent_rate)?;
        values::stamp(&p.template, &mut values, at);
        self.export(p, values, rng)
    }

    fn export<R: Rng>(
        &self,
        p: &Prepared,
        values: Values,
        rng: &mut R,
    ) -> Result<Export, SimError> {
        let t = &p.template;
        let v = self.stress.variation(t);
        let mut d = Degrade::sample(&v, t.width, t.height, p.base_mode, false, rng);
        let reencode = self.stress.extras(t, &mut d, rng);
        let (mut image, mut jpeg) = self.compose(p, &values.printed, &d, rng)?;
        let mut mode = d.mode;
        if let Some(q) = reencode {
            let bytes = filters::jpeg_bytes(&image, q).map_err(|e| SimError::Encode {
                template: t.id.clone(),
                problem: e.to_string(),
            })?;
            image = image::load_from_memory(&bytes).map_err(|e| SimError::Encode {
                template: t.id.clone(),
                problem: e.to_string(),
            })?;
            mode = crate::stress::reencoded_mode(mode);
            jpeg = Some(bytes);
        }
        Ok(Export {
            template: t.id.clone(),
            image,
            mode,
            label: values.label,
            printed: values.printed,
            map: d.export_map(),
            format: t.export_format.clone(),
            jpeg: if t.export_format == "jpg" { jpeg } else { None },
        })
    }

    /// Draws `printed` (template field order) on `p`'s plate and applies `d`. Returns the image
    /// and, when `d` compressed it, the JPEG file.
    pub fn compose<R: Rng>(
        &self,
        p: &Prepared,
        printed: &[String],
        d: &Degrade,
        rng: &mut R,
    ) -> Result<(DynamicImage, Option<Vec<u8>>), SimError> {
        let mut canvas = p.plate.clone();
        let texts: Vec<Option<&str>> = printed.iter().map(|s| Some(s.as_str())).collect();
        p.draw(&mut canvas, 0, 0, &texts);
        let src = Source {
            img: &canvas,
            x0: 0,
            y0: 0,
            fill: p.fill,
        };
        let (w, h) = d.export_size();
        let out = degrade::apply(&src, d, [0, 0, w as i32, h as i32], rng).map_err(|e| {
            SimError::Encode {
                template: p.template.id.clone(),
                problem: e.to_string(),
            }
        })?;
        let image = if out.planes.ch == 1 {
            let data = out.planes.data.iter().map(|v| *v as u8).collect();
            DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, data).unwrap_or_default())
        } else {
            DynamicImage::ImageRgb8(out.planes.to_rgb8())
        };
        Ok((image, out.jpeg))
    }
}
