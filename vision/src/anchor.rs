//! The anchor search for one template variant: find every anchor in the export, fit the map, and
//! score the result.
//!
//! Coordinates: a variant's frame is the reference frame times `s0` (1, or the export downscale
//! factor); the map being fitted goes from the variant frame to the export. The search works in
//! the variant frame *through* the current map, so once scale and rotation are known the windows
//! are resampled upright and the patches compare like with like.
//!
//! Order: the anchor with the smallest expected displacement first (shift plus what scale and
//! rotation can do at its distance from the image centre), searched coarse to fine on the
//! pyramid; each later anchor is predicted from the map fitted so far, so its search range
//! shrinks to a few pixels. Then every anchor is refined at full resolution with sub-pixel peaks
//! and the map refitted (twice when scale or rotation vary), integer-shift layouts are snapped to
//! whole pixels, and every anchor is scored by its NCC at the fitted position.

use crate::affine::Affine;
use crate::firmware::FirmwareCheck;
use crate::fit::{fit, rotation_deg, Motion};
use crate::layout::{AnchorScore, LayoutInfo, Match, Thresholds, Variant};
use crate::ncc::{self, Patch};
use crate::pyramid::{Pyramid, MAX_LEVELS};

/// Search range after the map is known, in variant pixels.
const MARGIN_PX: f32 = 3.0;
/// Coarse search: at most this many samples each way at the chosen level.
const COARSE_RADIUS: f32 = 8.0;
/// A patch must keep at least this many samples on its short side at a coarse level.
const MIN_PATCH_SAMPLES: usize = 6;
/// An anchor this far (variant pixels) from where the fitted map puts it is searched again.
const RESEARCH_RESIDUAL_PX: f32 = 1.0;
/// Search range of that second search.
const RESEARCH_RADIUS_PX: f32 = 10.0;
/// Tolerance on the fitted scale beyond the layout's range.
const SCALE_SLACK: f32 = 0.01;
/// Tolerance on the fitted rotation beyond the layout's range, degrees.
const ROTATION_SLACK_DEG: f32 = 0.3;

/// Largest patch, in samples, at any level: bigger anchors are matched on their centre part,
/// which keeps the cost bounded and long thin anchors tolerant of rotation before it is known.
const MAX_PATCH_W: usize = 128;
/// See [`MAX_PATCH_W`].
const MAX_PATCH_H: usize = 40;

/// One level of an anchor: the plate patch sampled with step `2^l` from `origin`.
#[derive(Debug, Clone)]
pub(crate) struct Level {
    pub origin: (f32, f32),
    pub patch: Patch,
}

/// An anchor of a variant, with its plate patches at steps 1, 2, 4, 8 (fewer when small), each
/// centred on the anchor box and at most `MAX_PATCH_W x MAX_PATCH_H` samples.
#[derive(Debug, Clone)]
pub(crate) struct VariantAnchor {
    pub name: String,
    /// `[x, y, w, h]` in the variant frame.
    pub rect: [f32; 4],
    pub levels: Vec<Level>,
}

impl VariantAnchor {
    pub fn new(name: &str, rect: [f32; 4], plate: &Pyramid) -> Self {
        let focus = best_window(plate, rect);
        let mut levels = Vec::new();
        for l in 0..MAX_LEVELS {
            let k = (1u32 << l) as f32;
            let (pw, ph) = ((rect[2] / k) as usize, (rect[3] / k) as usize);
            if pw < 3 || ph < 3 {
                break;
            }
            let (cw, ch) = (pw.min(MAX_PATCH_W), ph.min(MAX_PATCH_H));
            // Centred on the focus, kept inside the anchor box.
            // `max` first: at a fractional scale `cw * k` can pass the box by a rounding error.
            let ox = (focus.0 - cw as f32 * k / 2.0)
                .min(rect[0] + rect[2] - cw as f32 * k)
                .max(rect[0]);
            let oy = (focus.1 - ch as f32 * k / 2.0)
                .min(rect[1] + rect[3] - ch as f32 * k)
                .max(rect[1]);
            let origin = (ox, oy);
            let raw = sample_grid(plate, &Affine::IDENTITY, origin.0, origin.1, k, cw, ch);
            levels.push(Level {
                origin,
                patch: Patch::new(cw, ch, &raw),
            });
        }
        Self {
            name: name.to_owned(),
            rect,
            levels,
        }
    }

    /// Whether the anchor has something to match at full resolution.
    pub fn is_usable(&self) -> bool {
        self.levels
            .first()
            .is_some_and(|l| !l.patch.is_flat() && l.patch.w >= 4 && l.patch.h >= 4)
    }

    fn centre(&self) -> (f32, f32) {
        (
            self.rect[0] + self.rect[2] / 2.0,
            self.rect[1] + self.rect[3] / 2.0,
        )
    }

    /// Best displacement (variant pixels, relative to `map`) within `radius` of `base`, and its NCC.
    fn locate(
        &self,
        img: &Pyramid,
        map: &Affine,
        base: (f32, f32),
        radius: f32,
    ) -> ((f32, f32), f32) {
        let mut l0 = 0;
        while l0 + 1 < self.levels.len()
            && radius / ((1u32 << l0) as f32) > COARSE_RADIUS
            && self.levels[l0 + 1].patch.w.min(self.levels[l0 + 1].patch.h) >= MIN_PATCH_SAMPLES
        {
            l0 += 1;
        }
        let r0 = (radius / (1u32 << l0) as f32).ceil() as usize + 1;
        let (mut d, mut v) = self.search(img, map, l0, base, r0);
        for l in (0..l0).rev() {
            (d, v) = self.search(img, map, l, d, 2);
        }
        (d, v)
    }

    /// Exhaustive NCC search at level `l` (step `2^l`), `r` samples each way around `base`.
    fn search(
        &self,
        img: &Pyramid,
        map: &Affine,
        l: usize,
        base: (f32, f32),
        r: usize,
    ) -> ((f32, f32), f32) {
        let k = (1u32 << l) as f32;
        let Level { origin, patch: p } = &self.levels[l];
        let (ww, wh) = (p.w + 2 * r, p.h + 2 * r);
        let (x0, y0) = (
            origin.0 + base.0 - r as f32 * k,
            origin.1 + base.1 - r as f32 * k,
        );
        let win = sample_grid(img, map, x0, y0, k, ww, wh);
        let s = ncc::surface(p, &win, ww, wh);
        let (ox, oy, v) = s.peak();
        let (dx, dy) = if l == 0 {
            s.subpixel(ox, oy)
        } else {
            (0.0, 0.0)
        };
        let d = (
            base.0 + (ox as f32 - r as f32 + dx) * k,
            base.1 + (oy as f32 - r as f32 + dy) * k,
        );
        (d, v)
    }

    /// NCC at exactly the position `map` gives, full resolution.
    fn verify(&self, img: &Pyramid, map: &Affine) -> f32 {
        let Level { origin, patch: p } = &self.levels[0];
        let win = sample_grid(img, map, origin.0, origin.1, 1.0, p.w, p.h);
        ncc::ncc(p, &win)
    }
}

/// The centre of the `MAX_PATCH_W x MAX_PATCH_H` window of the anchor box whose content is best
/// localisable in both directions (largest smaller eigenvalue of the gradient structure tensor),
/// so a box whose centre holds only a rule or blank space is matched on its text.
fn best_window(plate: &Pyramid, rect: [f32; 4]) -> (f32, f32) {
    let (w, h) = (rect[2] as usize, rect[3] as usize);
    let centre = (rect[0] + rect[2] / 2.0, rect[1] + rect[3] / 2.0);
    let (cw, ch) = (w.min(MAX_PATCH_W), h.min(MAX_PATCH_H));
    if cw == w && ch == h {
        return centre;
    }
    let px = sample_grid(plate, &Affine::IDENTITY, rect[0], rect[1], 1.0, w, h);
    // Per-pixel tensor terms, then integral images.
    let iw = w + 1;
    let mut sxx = vec![0.0f64; iw * (h + 1)];
    let mut syy = sxx.clone();
    let mut sxy = sxx.clone();
    for y in 0..h {
        let (mut rxx, mut ryy, mut rxy) = (0.0, 0.0, 0.0);
        for x in 0..w {
            let at = |x: usize, y: usize| f64::from(px[y * w + x]);
            let gx = if x + 1 < w && x > 0 {
                at(x + 1, y) - at(x - 1, y)
            } else {
                0.0
            };
            let gy = if y + 1 < h && y > 0 {
                at(x, y + 1) - at(x, y - 1)
            } else {
                0.0
            };
            rxx += gx * gx;
            ryy += gy * gy;
            rxy += gx * gy;
            let (i, up) = ((y + 1) * iw + x + 1, y * iw + x + 1);
            sxx[i] = sxx[up] + rxx;
            syy[i] = syy[up] + ryy;
            sxy[i] = sxy[up] + rxy;
        }
    }
    let boxsum = |s: &[f64], x: usize, y: usize| {
        s[(y + ch) * iw + x + cw] - s[y * iw + x + cw] - s[(y + ch) * iw + x] + s[y * iw + x]
    };
    let mut best = (f64::NEG_INFINITY, centre);
    for y in (0..=h - ch).step_by(4) {
        for x in (0..=w - cw).step_by(4) {
            let (a, b, c) = (boxsum(&sxx, x, y), boxsum(&syy, x, y), boxsum(&sxy, x, y));
            let lmin = 0.5 * (a + b - ((a - b).powi(2) + 4.0 * c * c).sqrt());
            if lmin > best.0 {
                best = (
                    lmin,
                    (
                        rect[0] + x as f32 + cw as f32 / 2.0,
                        rect[1] + y as f32 + ch as f32 / 2.0,
                    ),
                );
            }
        }
    }
    best.1
}

/// Samples `w x h` points of the variant frame, from `(x0, y0)` with step `k`, through `map`
/// (bilinear, on the pyramid level that fits the step).
pub(crate) fn sample_grid(
    img: &Pyramid,
    map: &Affine,
    x0: f32,
    y0: f32,
    k: f32,
    w: usize,
    h: usize,
) -> Vec<f32> {
    let l = img.level_for(k * map.scale());
    let lvl = img.level(l);
    let f = 1.0 / (1u32 << l) as f32;
    // Level-l coordinates of sample (i, j), minus the half-pixel of pixel centres:
    // p(i, j) = p00 + i·dx + j·dy.
    let (ax, ay) = map.apply(x0 + 0.5 * k, y0 + 0.5 * k);
    let p00 = (ax * f - 0.5, ay * f - 0.5);
    let dx = (map.a * k * f, map.c * k * f);
    let dy = (map.b * k * f, map.d * k * f);
    let (lw, lh) = (lvl.width as usize, lvl.height as usize);
    let mut out = Vec::with_capacity(w * h);
    for j in 0..h {
        let (rx, ry) = (p00.0 + j as f32 * dy.0, p00.1 + j as f32 * dy.1);
        for i in 0..w {
            let (fx, fy) = (rx + i as f32 * dx.0, ry + i as f32 * dx.1);
            let (x0, y0) = (fx.floor(), fy.floor());
            let (tx, ty) = (fx - x0, fy - y0);
            let (xi, yi) = (x0 as isize, y0 as isize);
            let v = if xi >= 0 && yi >= 0 && (xi as usize) + 1 < lw && (yi as usize) + 1 < lh {
                let o = yi as usize * lw + xi as usize;
                let d = &lvl.data;
                let top = d[o] + (d[o + 1] - d[o]) * tx;
                let bot = d[o + lw] + (d[o + lw + 1] - d[o + lw]) * tx;
                top + (bot - top) * ty
            } else {
                lvl.sample(fx + 0.5, fy + 0.5)
            };
            out.push(v);
        }
    }
    out
}

/// The outcome of matching one variant.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub layout: usize,
    pub s0: f32,
    /// Variant frame → image.
    pub map: Affine,
    pub ncc: Vec<f32>,
    pub residual: Vec<f32>,
    pub loo: Vec<Option<f32>>,
    pub firmware: FirmwareCheck,
    pub model: Option<FirmwareCheck>,
    /// Weakest anchor NCC (0 when an anchor was not found).
    pub score: f32,
    pub failure: Option<String>,
}

impl Attempt {
    /// Passing attempts first, then by score.
    pub fn rank(&self) -> f32 {
        self.score + if self.failure.is_none() { 2.0 } else { 0.0 }
    }

    pub fn into_match(self, template_id: String, names: Vec<String>) -> Match {
        let map = self
            .map
            .compose(&Affine::similarity(self.s0, 0.0, 0.0, 0.0));
        let anchors = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| AnchorScore {
                name,
                ncc: self.ncc[i],
                residual_px: self.residual[i],
                loo_px: self.loo[i],
            })
            .collect();
        Match {
            template_id,
            map,
            score: self.score,
            firmware: self.firmware,
            model: self.model,
            anchors,
        }
    }

    fn failed(layout: usize, s0: f32, score: f32, why: String) -> Self {
        Self {
            layout,
            s0,
            map: Affine::IDENTITY,
            ncc: Vec::new(),
            residual: Vec::new(),
            loo: Vec::new(),
            firmware: FirmwareCheck::MISMATCH,
            model: None,
            score,
            failure: Some(why),
        }
    }
}

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// Keeps a map fitted from few anchors within what the layout allows (search only), keeping
/// where it sends `pivot` (the centroid of the anchors it was fitted on).
fn clamp(map: Affine, info: &LayoutInfo, pivot: (f32, f32)) -> Affine {
    let s = map
        .scale()
        .clamp(info.scale[0] - SCALE_SLACK, info.scale[1] + SCALE_SLACK);
    let lim = info.rotation_deg + ROTATION_SLACK_DEG;
    let rot = if info.motion == Motion::Similarity {
        rotation_deg(&map).clamp(-lim, lim)
    } else {
        0.0
    };
    let (qx, qy) = map.apply(pivot.0, pivot.1);
    let m = Affine::similarity(s, rot.to_radians(), 0.0, 0.0);
    let (px, py) = m.apply(pivot.0, pivot.1);
    Affine::similarity(s, rot.to_radians(), qx - px, qy - py)
}

/// Finds every anchor of `v` in `img`, fits the map and scores it.
pub(crate) fn match_variant(
    v: &Variant,
    info: &LayoutInfo,
    img: &Pyramid,
    thr: &Thresholds,
) -> Attempt {
    let n = v.anchors.len();
    let centre = (v.width as f32 / 2.0, v.height as f32 / 2.0);
    let ds = (1.0 - info.scale[0]).abs().max((info.scale[1] - 1.0).abs());
    let dr = info.rotation_deg.to_radians();
    let shift = info.shift_px * v.s0;
    let centres: Vec<(f32, f32)> = v.anchors.iter().map(VariantAnchor::centre).collect();
    let mut found: Vec<Option<(f32, f32)>> = vec![None; n];
    let mut outside = vec![false; n];
    let mut map = Affine::IDENTITY;
    let fit_found = |found: &[Option<(f32, f32)>]| {
        let (src, dst): (Vec<_>, Vec<_>) = (0..n)
            .filter_map(|i| found[i].map(|q| (centres[i], q)))
            .unzip();
        fit(info.motion, &src, &dst).or_else(|| fit(Motion::Translation, &src, &dst))
    };
    for _ in 0..n {
        let matched: Vec<usize> = (0..n).filter(|&i| found[i].is_some()).collect();
        let spread = matched
            .iter()
            .flat_map(|&a| matched.iter().map(move |&b| (a, b)))
            .map(|(a, b)| dist(centres[a], centres[b]))
            .fold(0.0f32, f32::max);
        let uncertainty = |i: usize| -> f32 {
            let nearest = matched
                .iter()
                .map(|&m| dist(centres[i], centres[m]))
                .fold(f32::INFINITY, f32::min);
            match matched.len() {
                0 => shift + dist(centres[i], centre) * (ds + dr) + MARGIN_PX,
                _ if info.motion == Motion::Translation => MARGIN_PX,
                1 => nearest * (ds + dr) + MARGIN_PX,
                _ => MARGIN_PX + (nearest * (ds + dr)).min(0.5 * nearest / spread.max(1.0)),
            }
        };
        let Some(i) = (0..n)
            .filter(|&i| found[i].is_none() && !outside[i])
            .min_by(|&a, &b| uncertainty(a).total_cmp(&uncertainty(b)))
        else {
            break;
        };
        // Scale and shift together can push an anchor at the edge off the export. Once the map
        // is known from enough other anchors, such an anchor is left out instead of failing the
        // match; the rest (and the firmware check) still have to hold.
        if matched.len() >= MIN_ANCHORS_FOR_EDGE_SKIP && !inside(&map, v.anchors[i].rect, img, 0.0)
        {
            outside[i] = true;
            continue;
        }
        let (d, score) = v.anchors[i].locate(img, &map, (0.0, 0.0), uncertainty(i));
        if score < thr.early_reject_ncc {
            return Attempt::failed(
                v.layout,
                v.s0,
                score.max(0.0),
                format!(
                    "anchor {:?} not found (NCC {score:.2} < {:.2})",
                    v.anchors[i].name, thr.early_reject_ncc
                ),
            );
        }
        found[i] = Some(map.apply(centres[i].0 + d.0, centres[i].1 + d.1));
        if let Some(m) = fit_found(&found) {
            let pts: Vec<(f32, f32)> = (0..n)
                .filter(|&j| found[j].is_some())
                .map(|j| centres[j])
                .collect();
            let pivot = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
            let k = pts.len().max(1) as f32;
            map = clamp(m, info, (pivot.0 / k, pivot.1 / k));
        }
    }
    let rounds = if info.motion == Motion::Translation {
        1
    } else {
        2
    };
    let refine = |map: &mut Affine, found: &mut Vec<Option<(f32, f32)>>| {
        for i in (0..n).filter(|&i| !outside[i]) {
            let (d, _) = v.anchors[i].search(img, map, 0, (0.0, 0.0), 2);
            found[i] = Some(map.apply(centres[i].0 + d.0, centres[i].1 + d.1));
        }
        if let Some(m) = fit_found(found) {
            *map = m;
        }
    };
    for _ in 0..rounds {
        refine(&mut map, &mut found);
    }
    // An anchor the others disagree with was probably caught on a wrong peak while the map was
    // still rough: search it again, wider, through the map the other anchors fit.
    if n >= 3 {
        let mut again = false;
        for i in 0..n {
            let Some(q) = found[i] else { continue };
            if dist(map.apply(centres[i].0, centres[i].1), q) <= RESEARCH_RESIDUAL_PX {
                continue;
            }
            let mut others = found.clone();
            others[i] = None;
            if let Some(m) = fit_found(&others) {
                let (d, _) = v.anchors[i].locate(img, &m, (0.0, 0.0), RESEARCH_RADIUS_PX);
                found[i] = Some(m.apply(centres[i].0 + d.0, centres[i].1 + d.1));
                again = true;
            }
        }
        if again {
            if let Some(m) = fit_found(&found) {
                map = m;
            }
            refine(&mut map, &mut found);
        }
    }
    if !info.subpixel && info.motion == Motion::Translation {
        let snap = |t: f32| {
            let r = (t / v.s0).round();
            if (t / v.s0 - r).abs() < 0.35 {
                r * v.s0
            } else {
                t
            }
        };
        map.tx = snap(map.tx);
        map.ty = snap(map.ty);
    }
    let located = Located {
        at: &found,
        outside: &outside,
    };
    score(v, info, img, thr, map, &located, &centres)
}

/// Where each anchor was found, and which were left out at the edge of the export.
struct Located<'a> {
    at: &'a [Option<(f32, f32)>],
    outside: &'a [bool],
}

/// Anchors that must be found (fixing scale and rotation) before one at the edge may be left out.
const MIN_ANCHORS_FOR_EDGE_SKIP: usize = 2;
/// Anchors that must remain inside the export and verify for a match.
const MIN_ANCHORS_INSIDE: usize = 3;

/// Whether `rect` (variant frame), grown by `margin`, lies inside the export under `map`.
fn inside(map: &Affine, rect: [f32; 4], img: &Pyramid, margin: f32) -> bool {
    let (w, h) = (img.base().width as f32, img.base().height as f32);
    let [x, y, rw, rh] = rect;
    [(x, y), (x + rw, y), (x, y + rh), (x + rw, y + rh)]
        .into_iter()
        .map(|(px, py)| map.apply(px, py))
        .all(|(qx, qy)| {
            qx >= margin && qy >= margin && qx <= w - 1.0 - margin && qy <= h - 1.0 - margin
        })
}

fn score(
    v: &Variant,
    info: &LayoutInfo,
    img: &Pyramid,
    thr: &Thresholds,
    map: Affine,
    located: &Located,
    centres: &[(f32, f32)],
) -> Attempt {
    let n = v.anchors.len();
    let (found, outside) = (located.at, located.outside);
    let q: Vec<(f32, f32)> = found
        .iter()
        .map(|f| f.unwrap_or((f32::NAN, f32::NAN)))
        .collect();
    let to_ref = 1.0 / (v.s0 * map.scale().max(1e-6));
    // An anchor left out at the edge scores NaN and does not take part in the minimum.
    let ncc: Vec<f32> = v
        .anchors
        .iter()
        .zip(outside)
        .map(|(a, &out)| if out { f32::NAN } else { a.verify(img, &map) })
        .collect();
    let residual: Vec<f32> = (0..n)
        .map(|i| dist(map.apply(centres[i].0, centres[i].1), q[i]) * to_ref)
        .collect();
    let loo: Vec<Option<f32>> = (0..n)
        .map(|i| {
            if outside[i] {
                return None;
            }
            let (src, dst): (Vec<_>, Vec<_>) = (0..n)
                .filter(|&j| j != i && !outside[j])
                .map(|j| (centres[j], q[j]))
                .unzip();
            let enough = if info.motion == Motion::Translation {
                1
            } else {
                2
            };
            if src.len() < enough {
                return None;
            }
            let m = fit(info.motion, &src, &dst)?;
            Some(dist(m.apply(centres[i].0, centres[i].1), q[i]) * to_ref)
        })
        .collect();
    let firmware = v.firmware.check(img, &map);
    let model = v.model.as_ref().map(|m| m.check(img, &map));
    let differs = |c: &FirmwareCheck| {
        c.worst > thr.firmware_max_residual || c.ratio() > thr.firmware_max_ratio
    };
    let (weakest, score) = ncc
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, s)| !s.is_nan())
        .fold(
            (0, f32::INFINITY),
            |b, (i, s)| if s < b.1 { (i, s) } else { b },
        );
    let (s, rot) = (map.scale() * v.s0 / v.nominal, rotation_deg(&map));
    let inside_count = outside.iter().filter(|&&o| !o).count();
    let failure = if inside_count < MIN_ANCHORS_INSIDE.min(n) {
        Some(format!(
            "only {inside_count} of {n} anchors inside the export (at least {} needed)",
            MIN_ANCHORS_INSIDE.min(n)
        ))
    } else if score < thr.anchor_min_ncc {
        Some(format!(
            "anchor {:?} NCC {score:.2} < {:.2}",
            v.anchors[weakest].name, thr.anchor_min_ncc
        ))
    } else if let Some(name) = [
        Some((&v.firmware, &firmware)),
        v.model.as_ref().zip(model.as_ref()),
    ]
    .into_iter()
    .flatten()
    .find(|(_, c)| c.cut_off)
    .map(|(r, _)| &v.anchors[r.anchor].name)
    {
        Some(format!(
            "anchor {name:?} (the device's identity string) runs off the export's edge, so it \
             cannot be verified: an export cropped or shifted past the frame?"
        ))
    } else if differs(&firmware) {
        Some(format!(
            "firmware anchor {:?} differs from the template's {:?}: worst character window residual {:.2} \
             ({:.1}x the typical window; limits {:.2} and {:.1}x): another firmware version?",
            v.anchors[v.firmware.anchor].name,
            info.firmware_string,
            firmware.worst,
            firmware.ratio(),
            thr.firmware_max_residual,
            thr.firmware_max_ratio
        ))
    } else if let Some((m, c)) = v
        .model
        .as_ref()
        .zip(model.as_ref())
        .filter(|(_, c)| differs(c))
    {
        Some(format!(
            "model anchor {:?} differs from the template's: worst character window residual {:.2} \
             ({:.1}x the typical window; limits {:.2} and {:.1}x): a look-alike device?",
            v.anchors[m.anchor].name,
            c.worst,
            c.ratio(),
            thr.firmware_max_residual,
            thr.firmware_max_ratio
        ))
    } else if s < info.scale[0] - SCALE_SLACK || s > info.scale[1] + SCALE_SLACK {
        Some(format!(
            "fitted scale {s:.3} outside {:.3}..{:.3}",
            info.scale[0], info.scale[1]
        ))
    } else if rot.abs() > info.rotation_deg + ROTATION_SLACK_DEG {
        Some(format!(
            "fitted rotation {rot:.2}° beyond ±{:.2}°",
            info.rotation_deg
        ))
    } else {
        None
    };
    Attempt {
        layout: v.layout,
        s0: v.s0,
        map,
        ncc,
        residual,
        loo,
        firmware,
        model,
        score: score.max(0.0),
        failure,
    }
}
