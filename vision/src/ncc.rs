//! Normalised cross-correlation (NCC) of a small patch over a search window, with a parabolic
//! sub-sample peak. Buffers are row-major `f32`; a window is the patch size plus the search
//! range on every side.
//!
//! NCC is invariant to gain and offset, so a dark-theme screen, a lighter JPEG or a scanned
//! printout with another contrast still correlate with their plate; a flat patch or window (no
//! variance) scores 0, never NaN.

/// Variance (per pixel, on 0..1 grey) under which a patch or window counts as flat.
const FLAT_VARIANCE: f64 = 1e-6;

/// A patch with its mean removed and scaled to unit norm.
#[derive(Debug, Clone)]
pub struct Patch {
    /// Width in samples.
    pub w: usize,
    /// Height in samples.
    pub h: usize,
    /// `w * h` zero-mean, unit-norm values (all zero when the patch is flat).
    pub data: Vec<f32>,
    /// Per-pixel standard deviation of the raw patch (0 when flat).
    pub std: f32,
}

impl Patch {
    /// Normalises raw samples.
    ///
    /// # Panics
    /// When `raw.len() != w * h` (a broken invariant of the caller).
    pub fn new(w: usize, h: usize, raw: &[f32]) -> Self {
        assert_eq!(raw.len(), w * h, "patch buffer size");
        let n = raw.len().max(1) as f64;
        let mean = raw.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = raw
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let (data, std) = if var < FLAT_VARIANCE {
            (vec![0.0; raw.len()], 0.0)
        } else {
            let k = 1.0 / (var * n).sqrt();
            (
                raw.iter()
                    .map(|&v| ((f64::from(v) - mean) * k) as f32)
                    .collect(),
                var.sqrt() as f32,
            )
        };
        Self { w, h, data, std }
    }

    /// Whether the patch has no texture to match.
    pub fn is_flat(&self) -> bool {
        self.std == 0.0
    }
}

/// NCC at every offset of a patch inside a window: `(ww - pw + 1) x (wh - ph + 1)` values.
#[derive(Debug, Clone)]
pub struct Surface {
    /// Offsets along x.
    pub w: usize,
    /// Offsets along y.
    pub h: usize,
    /// Scores, row-major.
    pub data: Vec<f32>,
}

impl Surface {
    /// The best offset and its score.
    pub fn peak(&self) -> (usize, usize, f32) {
        let (mut bi, mut bv) = (0, f32::NEG_INFINITY);
        for (i, &v) in self.data.iter().enumerate() {
            if v > bv {
                (bi, bv) = (i, v);
            }
        }
        (bi % self.w.max(1), bi / self.w.max(1), bv)
    }

    /// Sub-sample refinement of the peak at `(x, y)` by a parabola through its neighbours along
    /// each axis (0 at the border). Each component is within `[-0.5, 0.5]`.
    pub fn subpixel(&self, x: usize, y: usize) -> (f32, f32) {
        let at = |x: usize, y: usize| self.data[y * self.w + x];
        let para = |l: f32, c: f32, r: f32| {
            let d = l - 2.0 * c + r;
            if d < -1e-9 {
                (0.5 * (l - r) / d).clamp(-0.5, 0.5)
            } else {
                0.0
            }
        };
        let dx = if x > 0 && x + 1 < self.w {
            para(at(x - 1, y), at(x, y), at(x + 1, y))
        } else {
            0.0
        };
        let dy = if y > 0 && y + 1 < self.h {
            para(at(x, y - 1), at(x, y), at(x, y + 1))
        } else {
            0.0
        };
        (dx, dy)
    }
}

/// NCC of `patch` at every offset inside the `ww x wh` window `win`.
///
/// # Panics
/// When the window is smaller than the patch or `win.len() != ww * wh` (caller invariants).
pub fn surface(patch: &Patch, win: &[f32], ww: usize, wh: usize) -> Surface {
    assert!(
        ww >= patch.w && wh >= patch.h && win.len() == ww * wh,
        "window smaller than patch"
    );
    let (sw, sh) = (ww - patch.w + 1, wh - patch.h + 1);
    // Integral images of the window and its square, (ww + 1) x (wh + 1), in f64.
    let iw = ww + 1;
    let mut s1 = vec![0.0f64; iw * (wh + 1)];
    let mut s2 = vec![0.0f64; iw * (wh + 1)];
    for y in 0..wh {
        let (mut r1, mut r2) = (0.0f64, 0.0f64);
        for x in 0..ww {
            let v = f64::from(win[y * ww + x]);
            r1 += v;
            r2 += v * v;
            s1[(y + 1) * iw + x + 1] = s1[y * iw + x + 1] + r1;
            s2[(y + 1) * iw + x + 1] = s2[y * iw + x + 1] + r2;
        }
    }
    let n = (patch.w * patch.h) as f64;
    let boxsum = |s: &[f64], x: usize, y: usize| {
        s[(y + patch.h) * iw + x + patch.w] - s[y * iw + x + patch.w] - s[(y + patch.h) * iw + x]
            + s[y * iw + x]
    };
    let mut data = vec![0.0f32; sw * sh];
    if patch.is_flat() {
        return Surface { w: sw, h: sh, data };
    }
    let mut num = vec![0.0f32; sw];
    for oy in 0..sh {
        num.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..patch.h {
            let prow = &patch.data[j * patch.w..(j + 1) * patch.w];
            let wrow = &win[(oy + j) * ww..(oy + j + 1) * ww];
            for (ox, acc) in num.iter_mut().enumerate() {
                let seg = &wrow[ox..ox + patch.w];
                *acc += dot(prow, seg);
            }
        }
        for ox in 0..sw {
            let sum = boxsum(&s1, ox, oy);
            let var = boxsum(&s2, ox, oy) - sum * sum / n;
            data[oy * sw + ox] = if var < FLAT_VARIANCE * n {
                0.0
            } else {
                (f64::from(num[ox]) / var.sqrt()) as f32
            };
        }
    }
    Surface { w: sw, h: sh, data }
}

/// NCC of `patch` with a window of exactly its size.
pub fn ncc(patch: &Patch, win: &[f32]) -> f32 {
    surface(patch, win, patch.w, patch.h).data[0]
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators let the compiler vectorise without reassociation flags.
    let mut acc = [0.0f32; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for k in 0..4 {
            acc[k] += a[4 * i + k] * b[4 * i + k];
        }
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    for i in 4 * chunks..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(w: usize, h: usize, cx: f32, cy: f32) -> Vec<f32> {
        (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                    0.2 + (-d2 / 8.0).exp()
                })
            })
            .collect()
    }

    #[test]
    fn finds_the_offset_with_subpixel_precision() {
        let patch = Patch::new(12, 12, &blob(12, 12, 6.0, 6.0));
        let win = blob(24, 24, 13.3, 8.6);
        let s = surface(&patch, &win, 24, 24);
        let (x, y, v) = s.peak();
        assert!(v > 0.95, "peak {v}");
        let (dx, dy) = s.subpixel(x, y);
        assert!(
            (x as f32 + dx - 7.3).abs() < 0.15 && (y as f32 + dy - 2.6).abs() < 0.15,
            "{x}+{dx} {y}+{dy}"
        );
    }

    #[test]
    fn gain_and_offset_do_not_matter_and_flat_scores_zero() {
        let raw = blob(10, 10, 4.0, 5.0);
        let p = Patch::new(10, 10, &raw);
        let dark: Vec<f32> = raw.iter().map(|v| 0.9 - 0.5 * v).collect();
        assert!((ncc(&p, &dark) + 1.0).abs() < 1e-4);
        assert_eq!(ncc(&p, &[0.5; 100]), 0.0);
        assert!(Patch::new(10, 10, &[0.3; 100]).is_flat());
    }
}
