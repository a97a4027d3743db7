//! Image pyramids and resampling for template matching.
//!
//! A [`Pyramid`] holds an image and its 2x box-downsampled levels. Coordinates are continuous
//! and edge-based on level 0 (pixel `i` covers `[i, i + 1)`, its centre is `i + 0.5`, as in
//! [`GrayF32::sample`]); level `l` pixel `i` covers `[i·2^l, (i + 1)·2^l)` of level 0, so a
//! level-0 point `x` is `x / 2^l` on level `l`.
//!
//! [`Pyramid::sample`] picks the level from the sampling *footprint* (level-0 pixels between two
//! samples), so a plate patch and an image window sampled at the same footprint went through the
//! same low-pass filter, and their correlation does not depend on how finely either was sampled.

use crate::gray::GrayF32;

/// Most levels kept (level 0 plus three halvings: 1/8 resolution).
pub const MAX_LEVELS: usize = 4;

/// An image and its box-downsampled halvings.
#[derive(Debug, Clone)]
pub struct Pyramid {
    levels: Vec<GrayF32>,
    /// Every pixel of level 0 is black or white: a 1-bit (bitonal) scan.
    bitonal: bool,
}

impl Pyramid {
    /// Builds up to `MAX_LEVELS` levels, stopping when a level would be smaller than 8 pixels.
    pub fn new(img: GrayF32) -> Self {
        // Stops at the first grey pixel, so a grey export costs next to nothing here.
        let bitonal = img.data.iter().all(|&v| v == 0.0 || v == 1.0);
        let mut levels = vec![img];
        while levels.len() < MAX_LEVELS {
            let last = &levels[levels.len() - 1];
            if last.width < 16 || last.height < 16 {
                break;
            }
            let next = halve(last);
            levels.push(next);
        }
        Self { levels, bitonal }
    }

    /// Whether the image is bitonal (every pixel black or white, as a 1-bit scan is).
    pub fn is_bitonal(&self) -> bool {
        self.bitonal
    }

    /// Level 0.
    pub fn base(&self) -> &GrayF32 {
        &self.levels[0]
    }

    /// Bilinear sample at level-0 point `(x, y)` from the level whose pixel best fits a sampling
    /// step of `footprint` level-0 pixels (the coarsest level with `2^l ≤ footprint`).
    #[inline]
    pub fn sample(&self, x: f32, y: f32, footprint: f32) -> f32 {
        let l = self.level_for(footprint);
        let f = 1.0 / (1u32 << l) as f32;
        self.levels[l].sample(x * f, y * f)
    }

    /// The level used for `footprint`.
    #[inline]
    pub fn level_for(&self, footprint: f32) -> usize {
        let mut l = 0;
        while l + 1 < self.levels.len() && (2u32 << l) as f32 <= footprint * 1.0001 {
            l += 1;
        }
        l
    }

    /// Level `l` (clamped to the coarsest).
    pub fn level(&self, l: usize) -> &GrayF32 {
        &self.levels[l.min(self.levels.len() - 1)]
    }
}

/// 2x2 box downsampling (an odd last row or column is dropped).
pub fn halve(img: &GrayF32) -> GrayF32 {
    let (w, h) = ((img.width / 2) as usize, (img.height / 2) as usize);
    let sw = img.width as usize;
    let mut data = Vec::with_capacity(w * h);
    for y in 0..h {
        let r0 = &img.data[2 * y * sw..2 * y * sw + sw];
        let r1 = &img.data[(2 * y + 1) * sw..(2 * y + 1) * sw + sw];
        for x in 0..w {
            data.push(0.25 * (r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1]));
        }
    }
    GrayF32 {
        width: w as u32,
        height: h as u32,
        data,
    }
}

/// Resizes with an area-weighted (box, exact coverage) filter: each output pixel is the mean of
/// the input area it covers, the usual model of a downscaled screenshot. For `width` and
/// `height` at most the input's; larger sizes fall back to bilinear sampling.
pub fn resize_area(img: &GrayF32, width: u32, height: u32) -> GrayF32 {
    let (width, height) = (width.max(1), height.max(1));
    if width > img.width || height > img.height {
        let (fx, fy) = (
            img.width as f32 / width as f32,
            img.height as f32 / height as f32,
        );
        let mut data = Vec::with_capacity((width * height) as usize);
        for y in 0..height {
            for x in 0..width {
                data.push(img.sample((x as f32 + 0.5) * fx, (y as f32 + 0.5) * fy));
            }
        }
        return GrayF32 {
            width,
            height,
            data,
        };
    }
    let cols = coverage(img.width as usize, width as usize);
    let rows = coverage(img.height as usize, height as usize);
    let sw = img.width as usize;
    // Horizontal pass, then vertical.
    let mut tmp = vec![0.0f32; width as usize * img.height as usize];
    for y in 0..img.height as usize {
        let row = &img.data[y * sw..(y + 1) * sw];
        for (x, taps) in cols.iter().enumerate() {
            tmp[y * width as usize + x] = taps.iter().map(|&(i, wt)| row[i] * wt).sum();
        }
    }
    let mut data = vec![0.0f32; (width * height) as usize];
    for (y, taps) in rows.iter().enumerate() {
        for x in 0..width as usize {
            data[y * width as usize + x] = taps
                .iter()
                .map(|&(i, wt)| tmp[i * width as usize + x] * wt)
                .sum();
        }
    }
    GrayF32 {
        width,
        height,
        data,
    }
}

/// For each of `n_out` output pixels, the input pixels it covers and their weights (sum 1).
fn coverage(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
            let mut taps = Vec::new();
            let mut i = a.floor() as usize;
            while (i as f64) < b && i < n_in {
                let lo = a.max(i as f64);
                let hi = b.min((i + 1) as f64);
                if hi > lo {
                    taps.push((i, ((hi - lo) / scale) as f32));
                }
                i += 1;
            }
            taps
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> GrayF32 {
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x + 2 * y) as f32 / (w + 2 * h) as f32))
            .collect();
        GrayF32 {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn levels_agree_on_smooth_images() {
        let p = Pyramid::new(ramp(64, 48));
        let direct = p.sample(20.0, 12.0, 1.0);
        for fp in [2.0, 4.0, 8.0] {
            assert!(
                (p.sample(20.0, 12.0, fp) - direct).abs() < 0.02,
                "footprint {fp}"
            );
        }
        assert_eq!(p.level_for(1.5), 0);
        assert_eq!(p.level_for(2.0), 1);
        assert_eq!(p.level_for(7.9), 2);
    }

    #[test]
    fn area_resize_keeps_the_mean() {
        let img = ramp(30, 21);
        let small = resize_area(&img, 20, 14);
        let mean = |g: &GrayF32| g.data.iter().sum::<f32>() / g.data.len() as f32;
        assert!((mean(&img) - mean(&small)).abs() < 1e-3);
        assert!((small.sample(10.0, 7.0) - img.sample(15.0, 10.5)).abs() < 0.02);
    }
}
