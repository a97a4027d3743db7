//! Recognizer training crops. Each crop is one field of a random template with a random text:
//! mostly valid values, some absent markers, some out-of-range but well-formed values and some
//! random characters in the grammar's shape (so the model reads characters, not priors).
//!
//! Only the region around the field is rendered and degraded, aligned to the JPEG block grid and
//! the downscale ratio, with margins wider than every filter's reach, so the crop equals a crop
//! of a full export. The field box is then sampled through the export's map composed with a
//! small misalignment (the agent's alignment error) by `vision::normalise_crop`, exactly the
//! agent's normalisation, and written as an 8-bit PNG.
//!
//! Output: `crops/<n>.png` (n from 1, 6 digits) and `labels.jsonl` lines
//! `{"file":"crops/000001.png","template":"autoref_fw2","field":"r_sph","text":"+1.25"}`,
//! where `text` is the text as printed on screen.

use std::path::Path;

use chrono::NaiveDate;
use image::{DynamicImage, GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use vision::crop::to_u8;
use vision::{normalise_crop, Affine, GrayF32, CROP_H, CROP_W};

use crate::degrade::{self, invert, Degrade, Source};
use crate::printed;
use crate::render::{Prepared, SimError, Simulator};

/// Share of crops showing an absent marker (fields that have one).
pub const ABSENT_SHARE: f64 = 0.08;
/// Share of crops with an out-of-range (but well-formed) value.
pub const OUT_OF_RANGE_SHARE: f64 = 0.12;
/// Share of crops with random characters in the grammar's shape.
pub const RANDOM_SHAPE_SHARE: f64 = 0.18;

/// One training crop.
#[derive(Debug, Clone)]
pub struct Crop {
    /// Template id.
    pub template: String,
    /// Field name.
    pub field: String,
    /// Text as printed on screen.
    pub text: String,
    /// `CROP_H * CROP_W` grey pixels (`vision::crop::to_u8`).
    pub pixels: Vec<u8>,
    /// Background/ink contrast found by the normalisation.
    pub contrast: f32,
}

impl Crop {
    /// The crop as a grey image.
    pub fn image(&self) -> GrayImage {
        GrayImage::from_raw(CROP_W as u32, CROP_H as u32, self.pixels.clone()).unwrap_or_default()
    }
}

/// One `labels.jsonl` line.
#[derive(Debug, Clone, Serialize)]
pub struct CropLabel<'a> {
    /// Path relative to the output folder.
    pub file: &'a str,
    /// Template id.
    pub template: &'a str,
    /// Field name.
    pub field: &'a str,
    /// Text as printed.
    pub text: &'a str,
}

fn crop_text<R: Rng>(p: &Prepared, fi: usize, today: NaiveDate, rng: &mut R) -> String {
    let spec = &p.template.fields[fi].spec;
    let mut r: f64 = rng.gen();
    if !spec.absent.is_empty() {
        if r < ABSENT_SHARE {
            return spec.absent[rng.gen_range(0..spec.absent.len())].clone();
        }
        r = (r - ABSENT_SHARE) / (1.0 - ABSENT_SHARE);
    }
    if r < OUT_OF_RANGE_SHARE {
        printed::sample_out_of_range(spec, today, rng)
    } else if r < OUT_OF_RANGE_SHARE + RANDOM_SHAPE_SHARE {
        printed::sample_random_shape(spec, today, rng)
    } else {
        printed::sample_valid(spec, today, rng)
    }
}

fn bounds(m: &Affine, b: [f32; 4]) -> [f32; 4] {
    let pts = [
        (b[0], b[1]),
        (b[0] + b[2], b[1]),
        (b[0], b[1] + b[3]),
        (b[0] + b[2], b[1] + b[3]),
    ]
    .map(|(x, y)| m.apply(x, y));
    let xs = pts.map(|p| p.0);
    let ys = pts.map(|p| p.1);
    let min = |v: [f32; 4]| v.iter().copied().fold(f32::INFINITY, f32::min);
    let max = |v: [f32; 4]| v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    [min(xs), min(ys), max(xs), max(ys)]
}

impl Simulator {
    /// A training crop of a random field of a random template.
    pub fn crop<R: Rng>(&self, rng: &mut R, hard: bool) -> Result<Crop, SimError> {
        let ps = self.templates();
        let p = &ps[rng.gen_range(0..ps.len())];
        let fi = rng.gen_range(0..p.template.fields.len());
        let text = crop_text(p, fi, self.today(), rng);
        self.crop_field(p, fi, &text, rng, hard)
    }

    /// A training crop of field `fi` of `p` showing `text`.
    pub fn crop_field<R: Rng>(
        &self,
        p: &Prepared,
        fi: usize,
        text: &str,
        rng: &mut R,
        hard: bool,
    ) -> Result<Crop, SimError> {
        let t = &p.template;
        let d = Degrade::sample(&t.variation, t.width, t.height, p.base_mode, hard, rng);
        let field = &t.fields[fi];
        let bbox = field.bbox.map(|v| v as f32);
        let emap = d.export_map();
        let (ew, eh) = d.export_size();
        // Export-frame region around the box: margins beyond blur, noise correlation, the crop
        // misalignment and the resampling support; aligned to 16 px (JPEG blocks, 2/3 ratio).
        let e = bounds(&emap, bbox);
        let margin = 12.0 + 3.0 * d.blur + 0.05 * bbox[2] * emap.scale();
        let x0 = (((e[0] - margin) / 16.0).floor() as i32 * 16).max(0);
        let y0 = (((e[1] - margin) / 16.0).floor() as i32 * 16).max(0);
        let x1 = (((e[2] + margin) / 16.0).ceil() as i32 * 16).min(ew as i32);
        let y1 = (((e[3] + margin) / 16.0).ceil() as i32 * 16).min(eh as i32);
        let region = [x0, y0, (x1 - x0).max(16), (y1 - y0).max(16)];
        // Reference-frame source covering the region (plus resampling support).
        let inv = invert(&emap);
        let s = bounds(&inv, region.map(|v| v as f32));
        let sx0 = ((s[0] - 4.0).floor() as i32).clamp(0, t.width as i32 - 1);
        let sy0 = ((s[1] - 4.0).floor() as i32).clamp(0, t.height as i32 - 1);
        let sx1 = ((s[2] + 4.0).ceil() as i32).clamp(sx0 + 1, t.width as i32);
        let sy1 = ((s[3] + 4.0).ceil() as i32).clamp(sy0 + 1, t.height as i32);
        let mut canvas = image::imageops::crop_imm(
            &p.plate,
            sx0 as u32,
            sy0 as u32,
            (sx1 - sx0) as u32,
            (sy1 - sy0) as u32,
        )
        .to_image();
        // This field's text, and plausible values in the neighbouring fields the region shows.
        let mut owned: Vec<Option<String>> = vec![None; t.fields.len()];
        for (j, f) in t.fields.iter().enumerate() {
            let [bx, by, bw, bh] = f.bbox.map(|v| v as i32);
            let touches = bx < sx1 + 8 && by < sy1 + 8 && bx + bw > sx0 - 8 && by + bh > sy0 - 8;
            owned[j] = if j == fi {
                Some(text.to_owned())
            } else if touches {
                Some(if !f.spec.absent.is_empty() && rng.gen_bool(0.05) {
                    f.spec.absent[0].clone()
                } else {
                    printed::sample_valid(&f.spec, self.today(), rng)
                })
            } else {
                None
            };
        }
        let texts: Vec<Option<&str>> = owned.iter().map(|o| o.as_deref()).collect();
        p.draw(&mut canvas, sx0, sy0, &texts);
        let src = Source {
            img: &canvas,
            x0: sx0,
            y0: sy0,
            fill: p.fill,
        };
        let out = degrade::apply(&src, &d, region, rng).map_err(|e| SimError::Encode {
            template: t.id.clone(),
            problem: e.to_string(),
        })?;
        let (w, h) = (out.planes.w as u32, out.planes.h as u32);
        let bytes: Vec<u8> = out.planes.data.iter().map(|v| *v as u8).collect();
        let img = if out.planes.ch == 1 {
            DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, bytes).unwrap_or_default())
        } else {
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, bytes).unwrap_or_default())
        };
        let gray = GrayF32::from_image(&img);
        // The agent's alignment error: a small shift and scale about the box centre.
        let (dt, ds) = if hard { (3.0, 0.03) } else { (0.75, 0.01) };
        let s = 1.0 + rng.gen_range(-ds..=ds);
        let (cx, cy) = (bbox[0] + bbox[2] / 2.0, bbox[1] + bbox[3] / 2.0);
        let (tx, ty) = (rng.gen_range(-dt..=dt), rng.gen_range(-dt..=dt));
        let perturb = Affine::similarity(s, 0.0, cx - s * cx + tx, cy - s * cy + ty);
        let map = Affine::translation(-x0 as f32, -y0 as f32)
            .compose(&emap)
            .compose(&perturb);
        let (crop, contrast) = normalise_crop(&gray, &map, bbox);
        Ok(Crop {
            template: t.id.clone(),
            field: field.spec.name.clone(),
            text: text.to_owned(),
            pixels: to_u8(&crop),
            contrast,
        })
    }
}

/// A crops run that failed.
#[derive(Debug, thiserror::Error)]
pub enum CropsError {
    /// Rendering failed.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// Writing failed.
    #[error("writing {path}: {problem}")]
    Write {
        /// The file.
        path: String,
        /// What failed.
        problem: String,
    },
}

/// Writes `count` crops (`crops/<n>.png`, `labels.jsonl`) into `out` using `threads` workers.
/// Crop `n` depends only on `seed`, `n` and `hard`, never on the thread count.
pub fn write_crops(
    sim: &Simulator,
    out: &Path,
    count: usize,
    seed: u64,
    hard: bool,
    threads: usize,
) -> Result<usize, CropsError> {
    let dir = out.join("crops");
    let werr = |p: &Path, e: &dyn std::fmt::Display| CropsError::Write {
        path: p.display().to_string(),
        problem: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| werr(&dir, &e))?;
    let threads = threads.clamp(1, 64);
    let results: Vec<Result<Vec<String>, CropsError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let dir = &dir;
                s.spawn(move || {
                    let mut lines = Vec::new();
                    for n in (k..count).step_by(threads) {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed);
                        rng.set_stream(n as u64);
                        let c = sim.crop(&mut rng, hard)?;
                        let file = format!("crops/{:06}.png", n + 1);
                        let path = dir.join(format!("{:06}.png", n + 1));
                        c.image().save(&path).map_err(|e| werr(&path, &e))?;
                        let label = CropLabel {
                            file: &file,
                            template: &c.template,
                            field: &c.field,
                            text: &c.text,
                        };
                        lines.push(serde_json::to_string(&label).map_err(|e| werr(&path, &e))?);
                    }
                    Ok(lines)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(werr(out, &"worker panicked")))
            })
            .collect()
    });
    let mut per_thread = Vec::with_capacity(threads);
    for r in results {
        per_thread.push(r?);
    }
    // Interleave back into crop order: crop n came from thread n % threads.
    let mut text = String::new();
    for n in 0..count {
        text.push_str(&per_thread[n % threads][n / threads]);
        text.push('\n');
    }
    let labels = out.join("labels.jsonl");
    std::fs::write(&labels, text).map_err(|e| werr(&labels, &e))?;
    Ok(count)
}
