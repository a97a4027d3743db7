//! The firmware anchor check: does the export show *exactly* the template's firmware string?
//!
//! A whole-anchor NCC barely moves when one character of `Ver 2.14` becomes `Ver 2.15`, so the
//! firmware anchor is compared window by window, each window about one character wide. Both the
//! plate and the aligned export are smoothed a little (3x3 binomial, so blur, JPEG ringing and
//! sub-pixel misalignment count for little), the export is fitted to the plate with one gain and
//! offset over the whole region, and each window's residual energy is divided by the plate's
//! mean ink energy ([`FirmwareCheck`]). A changed character makes one window stand out from the
//! others (`worst / typical`, the ratio), however degraded the export is; an entirely different
//! string makes every window bad (`worst` itself is large, and the anchor's NCC drops).
//!
//! The region is the anchor box widened by half its height on each side where that stays on the
//! plate and off every field box, so a longer version string is caught too.

use crate::affine::Affine;
use crate::anchor::sample_grid;
use crate::pyramid::Pyramid;

/// The plate side of the firmware check, for one variant.
#[derive(Debug, Clone)]
pub(crate) struct FirmwareRef {
    /// Index of the firmware anchor.
    pub anchor: usize,
    /// The ink of the anchor box (variant frame, its margins trimmed): all of it must lie
    /// inside the export.
    core: [f32; 4],
    x: f32,
    y: f32,
    w: usize,
    h: usize,
    /// The plate region smoothed, then blurred further by each of [`PLATE_BLURS`]: the check
    /// compares the export with the one it fits best, so an export's own blur is not counted
    /// as a difference and a changed character stands out of a blurred scan as well.
    plates: Vec<Vec<f32>>,
    window: usize,
}

/// The part of `rect` (variant frame) that holds ink: rows and columns whose largest difference
/// from the region's median is at least a quarter of the region's largest.
fn ink_extent(plate: &Pyramid, rect: [f32; 4]) -> [f32; 4] {
    let (w, h) = (rect[2].max(1.0) as usize, rect[3].max(1.0) as usize);
    let v = sample_grid(plate, &Affine::IDENTITY, rect[0], rect[1], 1.0, w, h);
    let mut sorted = v.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    let dev = |i: usize| (v[i] - median).abs();
    let top = (0..v.len()).map(dev).fold(0.0f32, f32::max);
    if top <= 0.0 {
        return rect;
    }
    let inked = |i: usize| dev(i) >= 0.25 * top;
    let cols: Vec<usize> = (0..w)
        .filter(|&x| (0..h).any(|y| inked(y * w + x)))
        .collect();
    let rows: Vec<usize> = (0..h)
        .filter(|&y| (0..w).any(|x| inked(y * w + x)))
        .collect();
    match (cols.first(), cols.last(), rows.first(), rows.last()) {
        (Some(&x0), Some(&x1), Some(&y0), Some(&y1)) => [
            rect[0] + x0 as f32,
            rect[1] + y0 as f32,
            (x1 - x0 + 1) as f32,
            (y1 - y0 + 1) as f32,
        ],
        _ => rect,
    }
}

/// Extra Gaussian blurs (sigma, px) the plate region is prepared at.
const PLATE_BLURS: [f32; 4] = [0.0, 0.6, 1.0, 1.5];

/// Separable Gaussian blur of a `w x h` region, border clamped.
fn gaussian(v: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return v.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|x| x / sum).collect();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0; src.len()];
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut acc = 0.0;
                for (j, kv) in k.iter().enumerate() {
                    let d = j as isize - r;
                    let (sx, sy) = if horizontal {
                        ((x + d).clamp(0, w as isize - 1), y)
                    } else {
                        (x, (y + d).clamp(0, h as isize - 1))
                    };
                    acc += kv * src[sy as usize * w + sx as usize];
                }
                out[y as usize * w + x as usize] = acc;
            }
        }
        out
    };
    pass(&pass(v, true), false)
}

impl FirmwareRef {
    /// Prepares the check for the anchor `anchor` with box `rect` (variant frame).
    pub fn new(anchor: usize, rect: [f32; 4], fields: &[[f32; 4]], plate: &Pyramid) -> Self {
        let core = ink_extent(plate, rect);
        let [mut x, y, mut w, h] = rect;
        let grow = (0.5 * h).round();
        let (pw, _) = (plate.base().width as f32, plate.base().height as f32);
        let overlaps = |r: [f32; 4]| {
            fields.iter().any(|f| {
                r[0] < f[0] + f[2] && f[0] < r[0] + r[2] && r[1] < f[1] + f[3] && f[1] < r[1] + r[3]
            })
        };
        let left = [x - grow, y, grow, h];
        if left[0] >= 0.0 && !overlaps(left) {
            x -= grow;
            w += grow;
        }
        let right = [x + w, y, grow, h];
        if right[0] + grow <= pw && !overlaps(right) {
            w += grow;
        }
        let (w, h) = (w.max(1.0) as usize, h.max(1.0) as usize);
        let base = smooth(
            &sample_grid(plate, &Affine::IDENTITY, x, y, 1.0, w, h),
            w,
            h,
        );
        let plates = PLATE_BLURS
            .iter()
            .map(|&s| gaussian(&base, w, h, s))
            .collect();
        let window = ((0.6 * h as f32).round() as usize).clamp(3, w.max(3));
        Self {
            anchor,
            core,
            x,
            y,
            w,
            h,
            plates,
            window,
        }
    }

    /// Compares the export under `map` (variant frame → image) with the plate, window by window.
    /// Samples of the widened margin that fall outside the export are ignored. A string whose
    /// ink runs past the export's edge scores [`FirmwareCheck::CUT_OFF`]; a region mostly
    /// outside, flat, or inverted scores [`FirmwareCheck::MISMATCH`].
    pub fn check(&self, img: &Pyramid, map: &Affine) -> FirmwareCheck {
        let (iw, ih) = (img.base().width as f32, img.base().height as f32);
        // A string cut off at the export's edge cannot be verified: its missing characters
        // may be the ones that differ.
        let [cx, cy, cw, ch] = self.core;
        let cut = [(cx, cy), (cx + cw, cy), (cx, cy + ch), (cx + cw, cy + ch)]
            .into_iter()
            .map(|(x, y)| map.apply(x, y))
            .any(|(x, y)| x < 0.0 || y < 0.0 || x > iw || y > ih);
        if cut {
            return FirmwareCheck::CUT_OFF;
        }
        let raw = sample_grid(img, map, self.x, self.y, 1.0, self.w, self.h);
        let img_s = smooth(&raw, self.w, self.h);
        let idx: Vec<usize> = (0..self.w * self.h)
            .filter(|&i| {
                let (x, y) = map.apply(
                    self.x + (i % self.w) as f32 + 0.5,
                    self.y + (i / self.w) as f32 + 0.5,
                );
                x >= 1.0 && y >= 1.0 && x <= iw - 1.0 && y <= ih - 1.0
            })
            .collect();
        if idx.len() < self.w * self.h / 2 {
            return FirmwareCheck::MISMATCH;
        }
        // The plate blur the export fits best (least residual over the whole region).
        let Some((sigma, plate, fit)) = PLATE_BLURS
            .iter()
            .zip(&self.plates)
            .filter_map(|(s, p)| Fit::new(p, &img_s, &idx).map(|f| (*s, p, f)))
            .min_by(|a, b| a.2.relative().total_cmp(&b.2.relative()))
        else {
            return FirmwareCheck::MISMATCH;
        };
        let Fit {
            mp, mi, g, energy, ..
        } = fit;
        // Per column: residual energy and the number of samples inside the export.
        let mut cols = vec![(0.0f64, 0usize); self.w];
        for &i in &idx {
            let r = f64::from(img_s[i]) - mi - g * (f64::from(plate[i]) - mp);
            let c = &mut cols[i % self.w];
            c.0 += r * r;
            c.1 += 1;
        }
        let stride = (self.window / 2).max(1);
        let mut windows = Vec::new();
        let mut x0 = 0;
        loop {
            let x1 = (x0 + self.window).min(self.w);
            let (e, k) = cols[x0..x1]
                .iter()
                .fold((0.0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
            if 2 * k >= (x1 - x0) * self.h {
                windows.push(e / k as f64 / energy);
            }
            if x1 == self.w {
                break;
            }
            x0 += stride;
        }
        if windows.is_empty() {
            return FirmwareCheck::MISMATCH;
        }
        windows.sort_by(f64::total_cmp);
        FirmwareCheck {
            worst: windows[windows.len() - 1] as f32,
            typical: windows[windows.len() / 2] as f32,
            cut_off: false,
            blur: sigma,
        }
    }
}

/// The export region fitted to one plate region by a gain and an offset.
#[derive(Debug, Clone, Copy)]
struct Fit {
    mp: f64,
    mi: f64,
    g: f64,
    /// The fitted plate's ink energy per sample.
    energy: f64,
    /// Residual energy per sample.
    residual: f64,
}

impl Fit {
    /// `None` when the plate is flat there or the export is inverted.
    fn new(plate: &[f32], img: &[f32], idx: &[usize]) -> Option<Self> {
        let n = idx.len() as f64;
        let mp = idx.iter().map(|&i| f64::from(plate[i])).sum::<f64>() / n;
        let mi = idx.iter().map(|&i| f64::from(img[i])).sum::<f64>() / n;
        let (mut vp, mut vi, mut cov) = (0.0f64, 0.0f64, 0.0f64);
        for &i in idx {
            let dp = f64::from(plate[i]) - mp;
            let di = f64::from(img[i]) - mi;
            vp += dp * dp;
            vi += di * di;
            cov += dp * di;
        }
        if vp <= 1e-9 || cov <= 0.0 {
            return None;
        }
        let g = cov / vp;
        Some(Self {
            mp,
            mi,
            g,
            energy: g * g * vp / n,
            residual: (vi - g * cov).max(0.0) / n,
        })
    }

    /// Residual relative to the fitted ink energy (what the choice of blur minimises).
    fn relative(&self) -> f64 {
        self.residual / self.energy.max(1e-12)
    }
}

/// The outcome of the firmware check: residual energy per window, relative to the plate's mean
/// ink energy, for the worst window and the median one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirmwareCheck {
    /// Worst window (about 1 where a character differs completely; ~0 for a clean match).
    pub worst: f32,
    /// Median window: how much the export's degradation (blur, JPEG, scan) costs everywhere.
    pub typical: f32,
    /// The string's ink runs past the export's edge: not comparable.
    pub cut_off: bool,
    /// The extra blur (Gaussian sigma, px) the plate needed to fit the export best: how much
    /// blurrier than the samples the export is.
    pub blur: f32,
}

impl FirmwareCheck {
    /// What a region that cannot be compared scores.
    pub const MISMATCH: FirmwareCheck = FirmwareCheck {
        worst: f32::INFINITY,
        typical: f32::INFINITY,
        cut_off: false,
        blur: f32::NAN,
    };

    /// What a string cut off at the export's edge scores.
    pub const CUT_OFF: FirmwareCheck = FirmwareCheck {
        worst: f32::INFINITY,
        typical: f32::INFINITY,
        cut_off: true,
        blur: f32::NAN,
    };

    /// Typical-window floor, so a clean export's ratio does not divide by ~0.
    pub const FLOOR: f32 = 0.02;

    /// Worst window relative to the typical one (floored): a changed character stands out of an
    /// otherwise matching string whatever the degradation.
    pub fn ratio(&self) -> f32 {
        if self.worst.is_finite() {
            self.worst / self.typical.max(Self::FLOOR)
        } else {
            f32::INFINITY
        }
    }
}

/// 3x3 binomial smoothing, border clamped.
fn smooth(v: &[f32], w: usize, h: usize) -> Vec<f32> {
    let at = |x: isize, y: isize| {
        v[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize]
    };
    let mut out = Vec::with_capacity(v.len());
    for y in 0..h as isize {
        for x in 0..w as isize {
            let row = |y| at(x - 1, y) + 2.0 * at(x, y) + at(x + 1, y);
            out.push((row(y - 1) + 2.0 * row(y) + row(y + 1)) / 16.0);
        }
    }
    out
}
