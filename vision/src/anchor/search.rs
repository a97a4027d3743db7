//! An anchor's plate patches (steps 1, 2, 4, 8) and the NCC search for it in an export, coarse
//! to fine, through the map fitted so far.

use crate::affine::Affine;
use crate::ncc::{self, Patch};
use crate::pyramid::{Pyramid, MAX_LEVELS};

/// Coarse search: at most this many samples each way at the chosen level.
const COARSE_RADIUS: f32 = 8.0;
/// A patch must keep at least this many samples on its short side at a coarse level.
const MIN_PATCH_SAMPLES: usize = 6;
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

    pub(super) fn centre(&self) -> (f32, f32) {
        (
            self.rect[0] + self.rect[2] / 2.0,
            self.rect[1] + self.rect[3] / 2.0,
        )
    }

    /// Best displacement (variant pixels, relative to `map`) within `radius` of `base`, and its NCC.
    pub(super) fn locate(
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
    pub(super) fn search(
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
    pub(super) fn verify(&self, img: &Pyramid, map: &Affine) -> f32 {
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
