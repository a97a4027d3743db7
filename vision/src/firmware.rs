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
    x: f32,
    y: f32,
    w: usize,
    h: usize,
    plate: Vec<f32>,
    window: usize,
}

impl FirmwareRef {
    /// Prepares the check for the anchor `anchor` with box `rect` (variant frame).
    pub fn new(anchor: usize, rect: [f32; 4], fields: &[[f32; 4]], plate: &Pyramid) -> Self {
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
        let plate = smooth(
            &sample_grid(plate, &Affine::IDENTITY, x, y, 1.0, w, h),
            w,
            h,
        );
        let window = ((0.6 * h as f32).round() as usize).clamp(3, w.max(3));
        Self {
            anchor,
            x,
            y,
            w,
            h,
            plate,
            window,
        }
    }

    /// Compares the export under `map` (variant frame → image) with the plate, window by window.
    /// Samples that fall outside the export (a string shifted past the border) are ignored; a
    /// region mostly outside, flat, or inverted scores [`FirmwareCheck::MISMATCH`].
    pub fn check(&self, img: &Pyramid, map: &Affine) -> FirmwareCheck {
        let raw = sample_grid(img, map, self.x, self.y, 1.0, self.w, self.h);
        let img_s = smooth(&raw, self.w, self.h);
        let (iw, ih) = (img.base().width as f32, img.base().height as f32);
        let idx: Vec<usize> = (0..self.w * self.h)
            .filter(|&i| {
                let (x, y) = map.apply(
                    self.x + (i % self.w) as f32 + 0.5,
                    self.y + (i / self.w) as f32 + 0.5,
                );
                x >= 1.0 && y >= 1.0 && x <= iw - 1.0 && y <= ih - 1.0
            })
            .collect();
        if idx.len() < self.plate.len() / 2 {
            return FirmwareCheck::MISMATCH;
        }
        let n = idx.len() as f64;
        let mp = idx.iter().map(|&i| f64::from(self.plate[i])).sum::<f64>() / n;
        let mi = idx.iter().map(|&i| f64::from(img_s[i])).sum::<f64>() / n;
        let (mut vp, mut cov) = (0.0f64, 0.0f64);
        for &i in &idx {
            let dp = f64::from(self.plate[i]) - mp;
            vp += dp * dp;
            cov += dp * (f64::from(img_s[i]) - mi);
        }
        let g = if vp > 1e-9 { cov / vp } else { 0.0 };
        if g <= 0.0 {
            return FirmwareCheck::MISMATCH;
        }
        let energy = g * g * vp / n;
        // Per column: residual energy and the number of samples inside the export.
        let mut cols = vec![(0.0f64, 0usize); self.w];
        for &i in &idx {
            let r = f64::from(img_s[i]) - mi - g * (f64::from(self.plate[i]) - mp);
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
        }
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
}

impl FirmwareCheck {
    /// What a region that cannot be compared scores.
    pub const MISMATCH: FirmwareCheck = FirmwareCheck {
        worst: f32::INFINITY,
        typical: f32::INFINITY,
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
