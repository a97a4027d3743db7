//! Field-crop normalisation: the model's input contract.
//!
//! A field box `[x, y, w, h]` of the reference frame is sampled through the export's
//! [`Affine`] map into a `CROP_H` x `CROP_W` float image:
//! - the box height fills `CROP_H`; the width keeps the aspect ratio (squeezed only when wider
//!   than `CROP_W`), and the rest on the right is padding of value 1.0;
//! - bilinear sampling with up to 3x3 supersampling when the export is finer than the crop;
//! - polarity and contrast are normalised: background (the median) becomes 1.0, ink (the 1st
//!   or 99th percentile, whichever lies away from the background) becomes 0.0, so light-on-dark
//!   screens and dark-on-light printouts look alike; an inkless box becomes all 1.0.
//!
//! The simulator writes training crops with this same function; never change it without
//! retraining the model.

use crate::affine::Affine;
use crate::gray::GrayF32;

/// Model input height.
pub const CROP_H: usize = 32;
/// Model input width.
pub const CROP_W: usize = 192;
/// Smallest background/ink contrast (on 0..1) for a box to count as having ink.
pub const MIN_CONTRAST: f32 = 0.08;

/// Samples `bbox` (reference frame `[x, y, w, h]`) of `img` through `map` into a normalised
/// `CROP_H * CROP_W` row-major buffer. Also returns the background/ink contrast found.
pub fn normalise_crop(img: &GrayF32, map: &Affine, bbox: [f32; 4]) -> (Vec<f32>, f32) {
    let [x, y, w, h] = bbox;
    let sy = CROP_H as f32 / h.max(1.0);
    let sx = sy.min(CROP_W as f32 / w.max(1.0));
    let out_w = ((w * sx).round() as usize).clamp(1, CROP_W);
    // Image pixels per output pixel, per axis: supersample so no ink falls between samples.
    let ratio = map.scale();
    let nx = ((ratio / sx).ceil() as usize).clamp(1, 3);
    let ny = ((ratio / sy).ceil() as usize).clamp(1, 3);
    let norm = 1.0 / (nx * ny) as f32;

    let mut out = vec![1.0f32; CROP_H * CROP_W];
    let mut values = Vec::with_capacity(CROP_H * out_w);
    for oy in 0..CROP_H {
        for ox in 0..out_w {
            let mut acc = 0.0;
            for j in 0..ny {
                let ry = y + (oy as f32 + (j as f32 + 0.5) / ny as f32) / sy;
                for i in 0..nx {
                    let rx = x + (ox as f32 + (i as f32 + 0.5) / nx as f32) / sx;
                    let (ix, iy) = map.apply(rx, ry);
                    acc += img.sample(ix, iy);
                }
            }
            let v = acc * norm;
            out[oy * CROP_W + ox] = v;
            values.push(v);
        }
    }

    let n = values.len();
    let pick = |values: &mut Vec<f32>, q: f32| {
        let k = ((n - 1) as f32 * q) as usize;
        *values.select_nth_unstable_by(k, f32::total_cmp).1
    };
    let bg = pick(&mut values, 0.5);
    let ink = if bg >= 0.5 {
        pick(&mut values, 0.01)
    } else {
        pick(&mut values, 0.99)
    };
    let contrast = (bg - ink).abs();
    for oy in 0..CROP_H {
        for v in &mut out[oy * CROP_W..oy * CROP_W + out_w] {
            *v = if contrast < MIN_CONTRAST {
                1.0
            } else {
                ((*v - ink) / (bg - ink)).clamp(0.0, 1.0)
            };
        }
    }
    (out, contrast)
}

/// Converts a normalised crop to 8-bit grey pixels (for PNG training data and review crops).
pub fn to_u8(crop: &[f32]) -> Vec<u8> {
    crop.iter().map(|v| (v * 255.0).round() as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with_bar(light_text: bool) -> GrayF32 {
        let (bg, ink) = if light_text { (0.1, 0.9) } else { (0.9, 0.2) };
        let mut img = GrayF32::filled(100, 40, bg);
        for yy in 15..25 {
            for xx in 20..30 {
                img.data[yy * 100 + xx] = ink;
            }
        }
        img
    }

    #[test]
    fn polarity_is_normalised() {
        for light in [true, false] {
            let (c, contrast) = normalise_crop(
                &image_with_bar(light),
                &Affine::IDENTITY,
                [10.0, 10.0, 40.0, 20.0],
            );
            assert!(contrast > 0.5);
            // Box is 40x20 -> 64x32; the bar maps to columns 16..32, rows 8..24.
            assert!(c[16 * CROP_W + 24] < 0.05, "ink should be dark");
            assert!(c[2 * CROP_W + 2] > 0.95, "background should be light");
            assert_eq!(c[16 * CROP_W + 100], 1.0, "padding");
        }
    }

    #[test]
    fn blank_box_is_white() {
        let img = GrayF32::filled(50, 50, 0.3);
        let (c, contrast) = normalise_crop(&img, &Affine::IDENTITY, [0.0, 0.0, 30.0, 10.0]);
        assert!(contrast < MIN_CONTRAST);
        assert!(c.iter().all(|v| *v == 1.0));
    }

    #[test]
    fn translation_moves_the_sampling_window() {
        let img = image_with_bar(false);
        let (a, _) = normalise_crop(&img, &Affine::IDENTITY, [10.0, 10.0, 40.0, 20.0]);
        let (b, _) = normalise_crop(&img, &Affine::translation(5.0, 3.0), [5.0, 7.0, 40.0, 20.0]);
        let diff: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
        assert!(diff < 1e-3, "mean diff {diff}");
    }
}
