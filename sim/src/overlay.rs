//! Template overlays: the template's anchor boxes (blue) and field boxes (green; red where the
//! label beside the image says the value is absent), with their names, drawn over an export.
//!
//! The boxes are placed through a map estimated from the anchors: the image is brought to the
//! reference frame's scale (when its size differs, as with downscaled exports), each anchor is
//! searched within ±(`shift_px` + 4 px, plus what scale and rotation can move it) by normalised
//! cross-correlation against the plate (coarse-to-fine, sub-pixel peak), and the anchors'
//! displacements give a translation (their median) or, for layouts that scale or rotate, a
//! least-squares similarity.

use image::{DynamicImage, RgbImage};
use record::Template;
use vision::{Affine, GrayF32};

use crate::fonts::FontDirs;
use crate::text::{blend, Face};
use crate::values::Label;

/// Font of the box names.
pub const NAME_FONT: &str = "DejaVuSans.ttf";
/// Anchor colour.
pub const ANCHOR_COLOR: [u8; 3] = [40, 110, 255];
/// Colour of a field box with a value.
pub const FIELD_COLOR: [u8; 3] = [0, 200, 60];
/// Colour of a field box the label says is absent.
pub const ABSENT_COLOR: [u8; 3] = [235, 30, 30];

/// Where the template's reference frame lies in an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    /// Reference frame → image pixels.
    pub map: Affine,
    /// Displacement of the frame centre, in reference-frame pixels.
    pub shift: (f32, f32),
    /// Mean anchor correlation (0..1).
    pub score: f32,
}

/// An overlay and the alignment it used.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The image with boxes and names drawn.
    pub image: RgbImage,
    /// The estimated alignment.
    pub alignment: Alignment,
}

/// Why an overlay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The plate could not be read.
    #[error("template {template}: plate {path}: {source}")]
    Plate {
        /// Template id.
        template: String,
        /// Plate path.
        path: String,
        /// Decoder error.
        source: image::ImageError,
    },
}

fn downsample(img: &GrayF32, k: usize) -> GrayF32 {
    let (w, h) = (img.width as usize / k, img.height as usize / k);
    let mut out = GrayF32::filled(w as u32, h as u32, 0.0);
    let norm = 1.0 / (k * k) as f32;
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for j in 0..k {
                let row = (y * k + j) * img.width as usize;
                acc += img.data[row + x * k..row + x * k + k].iter().sum::<f32>();
            }
            out.data[y * w + x] = acc * norm;
        }
    }
    out
}

/// NCC of the plate patch `b` (`[x, y, w, h]`) against the image patch displaced by `(dx, dy)`.
fn ncc(plate: &GrayF32, img: &GrayF32, b: [i64; 4], dx: i64, dy: i64) -> f32 {
    let n = (b[2] * b[3]) as f32;
    let (mut sp, mut si, mut spp, mut sii, mut spi) = (0f32, 0f32, 0f32, 0f32, 0f32);
    let inside = |g: &GrayF32, x: i64, y: i64| {
        x >= 0 && y >= 0 && x + b[2] <= i64::from(g.width) && y + b[3] <= i64::from(g.height)
    };
    if inside(plate, b[0], b[1]) && inside(img, b[0] + dx, b[1] + dy) {
        let (pw, iw) = (plate.width as usize, img.width as usize);
        let w = b[2] as usize;
        for y in b[1]..b[1] + b[3] {
            let pr = y as usize * pw + b[0] as usize;
            let ir = (y + dy) as usize * iw + (b[0] + dx) as usize;
            for (&p, &i) in plate.data[pr..pr + w].iter().zip(&img.data[ir..ir + w]) {
                sp += p;
                si += i;
                spp += p * p;
                sii += i * i;
                spi += p * i;
            }
        }
    } else {
        for y in b[1]..b[1] + b[3] {
            for x in b[0]..b[0] + b[2] {
                let p = plate.at(x, y);
                let i = img.at(x + dx, y + dy);
                sp += p;
                si += i;
                spp += p * p;
                sii += i * i;
                spi += p * i;
            }
        }
    }
    let cov = spi - sp * si / n;
    let vp = spp - sp * sp / n;
    let vi = sii - si * si / n;
    if vp <= 1e-6 || vi <= 1e-6 {
        return 0.0;
    }
    cov / (vp * vi).sqrt()
}

/// Best displacement of anchor box `b` within ±`r` px, sub-pixel, and its score: exhaustive
/// search on the `k`-times reduced images, then ±(k + 1) px at full resolution.
fn search(
    plate: &GrayF32,
    img: &GrayF32,
    coarse: (&GrayF32, &GrayF32, i64),
    b: [u32; 4],
    r: i64,
) -> ((f32, f32), f32) {
    let b = b.map(i64::from);
    let (p_k, i_k, k) = coarse;
    let bc = [b[0] / k, b[1] / k, (b[2] / k).max(2), (b[3] / k).max(2)];
    let rc = r / k + 1;
    let (mut best, mut cx, mut cy) = (f32::NEG_INFINITY, 0, 0);
    for dy in -rc..=rc {
        for dx in -rc..=rc {
            let s = ncc(p_k, i_k, bc, dx, dy);
            if s > best {
                (best, cx, cy) = (s, dx * k, dy * k);
            }
        }
    }
    let fr = k + 1;
    let mut best = (f32::NEG_INFINITY, cx, cy);
    let mut scores = std::collections::HashMap::new();
    for dy in cy - fr..=cy + fr {
        for dx in cx - fr..=cx + fr {
            let s = ncc(plate, img, b, dx, dy);
            scores.insert((dx, dy), s);
            if s > best.0 {
                best = (s, dx, dy);
            }
        }
    }
    let (s0, bx, by) = best;
    let mut at = |dx, dy| {
        *scores
            .entry((dx, dy))
            .or_insert_with(|| ncc(plate, img, b, dx, dy))
    };
    let peak = |m: f32, z: f32, p: f32| {
        let den = m - 2.0 * z + p;
        if den < -1e-6 {
            (0.5 * (m - p) / den).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let ox = peak(at(bx - 1, by), s0, at(bx + 1, by));
    let oy = peak(at(bx, by - 1), s0, at(bx, by + 1));
    ((bx as f32 + ox, by as f32 + oy), s0)
}

/// Estimates where `t`'s reference frame lies in `img` (`plate` is the template's plate).
pub fn estimate(t: &Template, plate: &GrayF32, img: &GrayF32) -> Alignment {
    let s0 = 0.5 * (img.width as f32 / t.width as f32 + img.height as f32 / t.height as f32);
    let prior = Affine::similarity(s0, 0.0, 0.0, 0.0);
    let scaled;
    let r_img = if (s0 - 1.0).abs() < 1e-3 {
        img
    } else {
        let mut g = GrayF32::filled(t.width, t.height, 0.0);
        for y in 0..t.height as usize {
            for x in 0..t.width as usize {
                let (ix, iy) = prior.apply(x as f32 + 0.5, y as f32 + 0.5);
                g.data[y * t.width as usize + x] = img.sample(ix, iy);
            }
        }
        scaled = g;
        &scaled
    };
    let v = &t.variation;
    let half_diag = 0.5 * ((t.width * t.width + t.height * t.height) as f32).sqrt();
    let moves =
        (v.scale[0] - 1.0).abs().max((v.scale[1] - 1.0).abs()) + v.rotation_deg.to_radians();
    let r = (v.shift_px + 4.0 + half_diag * moves).ceil() as i64;
    let k = if r > 10 { 4 } else { 2 };
    let (p_k, i_k) = (downsample(plate, k as usize), downsample(r_img, k as usize));
    let coarse = (&p_k, &i_k, k);
    let found: Vec<((f32, f32), (f32, f32), f32)> = t
        .anchors
        .iter()
        .map(|a| {
            let (d, s) = search(plate, r_img, coarse, a.bbox, r);
            let c = (
                a.bbox[0] as f32 + a.bbox[2] as f32 / 2.0,
                a.bbox[1] as f32 + a.bbox[3] as f32 / 2.0,
            );
            (c, d, s)
        })
        .filter(|(_, _, s)| *s > 0.3)
        .collect();
    let score = found.iter().map(|f| f.2).sum::<f32>() / found.len().max(1) as f32;
    let similar = moves > 0.0 && found.len() >= 2;
    let s = if similar {
        fit_similarity(&found)
    } else {
        let median = |mut v: Vec<f32>| {
            v.sort_by(f32::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let mut dx = median(found.iter().map(|f| f.1 .0).collect());
        let mut dy = median(found.iter().map(|f| f.1 .1).collect());
        if !v.subpixel {
            (dx, dy) = (dx.round(), dy.round());
        }
        Affine::translation(dx, dy)
    };
    let (cx, cy) = (t.width as f32 / 2.0, t.height as f32 / 2.0);
    let (mx, my) = s.apply(cx, cy);
    Alignment {
        map: prior.compose(&s),
        shift: (mx - cx, my - cy),
        score,
    }
}

/// Weighted least-squares similarity taking anchor centres `c` to `c + d`.
fn fit_similarity(found: &[((f32, f32), (f32, f32), f32)]) -> Affine {
    let wsum: f32 = found.iter().map(|f| f.2).sum();
    let mean = |g: &dyn Fn(&((f32, f32), (f32, f32), f32)) -> f32| {
        found.iter().map(|f| f.2 * g(f)).sum::<f32>() / wsum
    };
    let (px, py) = (mean(&|f| f.0 .0), mean(&|f| f.0 .1));
    let (qx, qy) = (mean(&|f| f.0 .0 + f.1 .0), mean(&|f| f.0 .1 + f.1 .1));
    let (mut sa, mut sb, mut sn) = (0f32, 0f32, 0f32);
    for f in found {
        let (ux, uy) = (f.0 .0 - px, f.0 .1 - py);
        let (vx, vy) = (f.0 .0 + f.1 .0 - qx, f.0 .1 + f.1 .1 - qy);
        sa += f.2 * (ux * vx + uy * vy);
        sb += f.2 * (ux * vy - uy * vx);
        sn += f.2 * (ux * ux + uy * uy);
    }
    let (a, b) = if sn > 1e-6 {
        (sa / sn, sb / sn)
    } else {
        (1.0, 0.0)
    };
    Affine {
        a,
        b: -b,
        c: b,
        d: a,
        tx: qx - (a * px - b * py),
        ty: qy - (b * px + a * py),
    }
}

/// The image corners of box `b` (`[x, y, w, h]`) under `m`, clockwise from top-left.
pub fn corners(m: &Affine, b: [u32; 4]) -> [(f32, f32); 4] {
    let [x, y, w, h] = b.map(|v| v as f32);
    [(x, y), (x + w, y), (x + w, y + h), (x, y + h)].map(|(px, py)| m.apply(px, py))
}

fn line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), color: [u8; 3]) {
    let n = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
    for i in 0..=n {
        let t = i as f32 / n as f32;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        let (x, y) = (x.floor() as i64, y.floor() as i64);
        if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
            img.put_pixel(x as u32, y as u32, image::Rgb(color));
        }
    }
}

/// Draws `t`'s boxes over `img`; `label`, when given, marks absent fields red.
pub fn overlay(
    t: &Template,
    fonts: &FontDirs,
    img: &DynamicImage,
    label: Option<&Label>,
) -> Result<Overlay, OverlayError> {
    let plate = image::open(&t.plate).map_err(|source| OverlayError::Plate {
        template: t.id.clone(),
        path: t.plate.display().to_string(),
        source,
    })?;
    let alignment = estimate(t, &GrayF32::from_image(&plate), &GrayF32::from_image(img));
    let mut canvas = img.to_rgb8();
    let face = fonts
        .find(NAME_FONT)
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| Face::new(b, 11.0, "").ok());
    let mut draw = |b: [u32; 4], name: &str, color: [u8; 3]| {
        let c = corners(&alignment.map, b);
        for i in 0..4 {
            line(&mut canvas, c[i], c[(i + 1) % 4], color);
        }
        if let Some(face) = &face {
            let m = face.mask(name, [c[0].0, c[0].1 - 2.0], "ls");
            blend(&mut canvas, 0, 0, &m, color);
        }
    };
    for a in &t.anchors {
        draw(a.bbox, &a.name, ANCHOR_COLOR);
    }
    for f in &t.fields {
        let absent = label.and_then(|l| l.get(&f.spec.name)) == Some(None);
        draw(
            f.bbox,
            &f.spec.name,
            if absent { ABSENT_COLOR } else { FIELD_COLOR },
        );
    }
    Ok(Overlay {
        image: canvas,
        alignment,
    })
}
