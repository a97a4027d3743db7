//! Pixel filters of the degradation pipeline, on interleaved `f32` images (0..255):
//! separable Gaussian blur, (spatially correlated) Gaussian noise, a JPEG round trip, resizing,
//! and median-cut palette quantisation. Every filter works on a region of a larger frame and
//! depends only on pixels within a few sigma, so a region with margins filters like the frame.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{GrayImage, ImageBuffer, Rgb, RgbImage};
use rand::Rng;

/// An interleaved float image region, values on 0..255.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// Channels (1 or 3).
    pub ch: usize,
    /// `w * h * ch` values.
    pub data: Vec<f32>,
}

impl Planes {
    /// A region filled with `v`.
    pub fn filled(w: usize, h: usize, ch: usize, v: f32) -> Self {
        Planes {
            w,
            h,
            ch,
            data: vec![v; w * h * ch],
        }
    }

    /// Rounds and clamps to 8-bit RGB (grey planes are replicated).
    pub fn to_rgb8(&self) -> RgbImage {
        let mut out = RgbImage::new(self.w as u32, self.h as u32);
        for (i, p) in out.pixels_mut().enumerate() {
            for k in 0..3 {
                let v = self.data[i * self.ch + k.min(self.ch - 1)];
                p.0[k] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    }

    /// From 8-bit RGB.
    pub fn from_rgb8(img: &RgbImage) -> Self {
        Planes {
            w: img.width() as usize,
            h: img.height() as usize,
            ch: 3,
            data: img.as_raw().iter().map(|&v| f32::from(v)).collect(),
        }
    }
}

/// A normalised 1-D Gaussian kernel for `sigma` (radius `ceil(3 sigma)`).
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i32;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// Separable Gaussian blur with border clamping; `sigma <= 0.05` is a no-op.
pub fn blur(p: &mut Planes, sigma: f32) {
    if sigma <= 0.05 {
        return;
    }
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as isize;
    let (w, h, ch) = (p.w as isize, p.h as isize, p.ch);
    let mut tmp = vec![0f32; p.data.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..ch {
                let mut acc = 0.0;
                for (i, kv) in k.iter().enumerate() {
                    let xx = (x + i as isize - r).clamp(0, w - 1);
                    acc += kv * p.data[((y * w + xx) as usize) * ch + c];
                }
                tmp[((y * w + x) as usize) * ch + c] = acc;
            }
        }
    }
    for y in 0..h {
        for x in 0..w {
            for c in 0..ch {
                let mut acc = 0.0;
                for (i, kv) in k.iter().enumerate() {
                    let yy = (y + i as isize - r).clamp(0, h - 1);
                    acc += kv * tmp[((yy * w + x) as usize) * ch + c];
                }
                p.data[((y * w + x) as usize) * ch + c] = acc;
            }
        }
    }
}

/// A standard normal draw (Box-Muller).
pub fn normal<R: Rng>(rng: &mut R) -> f32 {
    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Adds grey (luma) Gaussian noise of standard deviation `std`; `correlated` noise is white
/// noise blurred with sigma 1.2 and rescaled to `std`, like scanner grain.
pub fn add_noise<R: Rng>(p: &mut Planes, std: f32, correlated: bool, rng: &mut R) {
    if std <= 0.01 {
        return;
    }
    let mut n = Planes {
        w: p.w,
        h: p.h,
        ch: 1,
        data: (0..p.w * p.h).map(|_| normal(rng)).collect(),
    };
    let mut gain = std;
    if correlated {
        let sigma = 1.2;
        blur(&mut n, sigma);
        let k = gaussian_kernel(sigma);
        let energy: f32 = k.iter().map(|v| v * v).sum();
        gain = std / energy;
    }
    for (i, nv) in n.data.iter().enumerate() {
        for c in 0..p.ch {
            p.data[i * p.ch + c] += nv * gain;
        }
    }
}

/// Contrast about mid-grey, then brightness: `(v - 128) * contrast + 128 + brightness`.
pub fn contrast_brightness(p: &mut Planes, contrast: f32, brightness: f32) {
    if (contrast - 1.0).abs() < 1e-6 && brightness.abs() < 1e-6 {
        return;
    }
    for v in &mut p.data {
        *v = (*v - 128.0) * contrast + 128.0 + brightness;
    }
}

/// The JPEG file of `img` at `quality` (grey images as one-channel JPEG).
pub fn jpeg_bytes(img: &image::DynamicImage, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let mut buf = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(Cursor::new(&mut buf), quality.clamp(1, 100));
    match img {
        image::DynamicImage::ImageLuma8(g) => enc.encode_image(g)?,
        _ => enc.encode_image(&img.to_rgb8())?,
    }
    Ok(buf)
}

/// JPEG-compresses and decodes the region at `quality` (grey regions as one-channel JPEG);
/// returns the decoded pixels and the JPEG file.
pub fn jpeg_roundtrip(p: &Planes, quality: u8) -> Result<(Planes, Vec<u8>), image::ImageError> {
    let mut buf = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(Cursor::new(&mut buf), quality.clamp(1, 100));
    if p.ch == 1 {
        let g = GrayImage::from_raw(
            p.w as u32,
            p.h as u32,
            p.data
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        )
        .unwrap_or_default();
        enc.encode_image(&g)?;
    } else {
        enc.encode_image(&p.to_rgb8())?;
    }
    let img = image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)?;
    let planes = if p.ch == 1 {
        let g = img.to_luma8();
        Planes {
            w: p.w,
            h: p.h,
            ch: 1,
            data: g.as_raw().iter().map(|&v| f32::from(v)).collect(),
        }
    } else {
        Planes::from_rgb8(&img.to_rgb8())
    };
    Ok((planes, buf))
}

/// Resizes to `w` x `h` with `filter` (three-channel regions). `image` clamps float pixels to
/// 0..1, so the values are scaled down and back.
pub fn resize(p: &Planes, w: usize, h: usize, filter: FilterType) -> Planes {
    let unit: Vec<f32> = to_channels(p, 3).iter().map(|v| v / 255.0).collect();
    let src: ImageBuffer<Rgb<f32>, Vec<f32>> =
        ImageBuffer::from_raw(p.w as u32, p.h as u32, unit).unwrap_or_default();
    let out = image::imageops::resize(&src, w as u32, h as u32, filter);
    Planes {
        w,
        h,
        ch: 3,
        data: out.into_raw().iter().map(|v| v * 255.0).collect(),
    }
}

fn to_channels(p: &Planes, ch: usize) -> Vec<f32> {
    if p.ch == ch {
        return p.data.clone();
    }
    (0..p.w * p.h)
        .flat_map(|i| (0..ch).map(move |k| (i, k)))
        .map(|(i, k)| p.data[i * p.ch + k.min(p.ch - 1)])
        .collect()
}

/// ITU-R 601 luma of an 8-bit RGB image.
pub fn luma(img: &RgbImage) -> GrayImage {
    image::DynamicImage::ImageRgb8(img.clone()).to_luma8()
}

/// Median-cut quantisation of `img` to at most `n` colours (no dithering, like PIL's adaptive
/// palette). Returns the palette and one index per pixel.
pub fn quantise(img: &RgbImage, n: usize) -> (Vec<[u8; 3]>, Vec<u8>) {
    // 5-bit-per-channel histogram cells.
    let cell = |p: &[u8; 3]| {
        (usize::from(p[0] >> 3) << 10) | (usize::from(p[1] >> 3) << 5) | usize::from(p[2] >> 3)
    };
    let mut hist = vec![0u32; 1 << 15];
    for p in img.pixels() {
        hist[cell(&p.0)] += 1;
    }
    let cells: Vec<usize> = (0..hist.len()).filter(|&i| hist[i] > 0).collect();
    let comp = |c: usize, k: usize| ((c >> (10 - 5 * k)) & 31) as u8;
    let mut boxes: Vec<Vec<usize>> = vec![cells];
    while boxes.len() < n.clamp(1, 256) {
        // Split the box with the widest channel range (ties: most pixels).
        let best = boxes
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() > 1)
            .map(|(i, b)| {
                let (k, range) = (0..3)
                    .map(|k| {
                        let lo = b.iter().map(|&c| comp(c, k)).min().unwrap_or(0);
                        let hi = b.iter().map(|&c| comp(c, k)).max().unwrap_or(0);
                        (k, hi - lo)
                    })
                    .max_by_key(|(_, r)| *r)
                    .unwrap_or((0, 0));
                (i, k, range)
            })
            .max_by_key(|(_, _, r)| *r);
        let Some((i, k, _)) = best else { break };
        let mut b = boxes.swap_remove(i);
        b.sort_unstable_by_key(|&c| comp(c, k));
        let total: u64 = b.iter().map(|&c| u64::from(hist[c])).sum();
        let (mut acc, mut cut) = (0u64, 1);
        for (j, &c) in b.iter().enumerate() {
            acc += u64::from(hist[c]);
            if acc * 2 >= total {
                cut = (j + 1).clamp(1, b.len() - 1);
                break;
            }
        }
        let rest = b.split_off(cut);
        boxes.push(b);
        boxes.push(rest);
    }
    let mut palette = Vec::with_capacity(boxes.len());
    let mut index_of = vec![0u8; 1 << 15];
    let mut sums = vec![[0u64; 4]; boxes.len()];
    for (bi, b) in boxes.iter().enumerate() {
        for &c in b {
            index_of[c] = bi as u8;
        }
    }
    for p in img.pixels() {
        let s = &mut sums[usize::from(index_of[cell(&p.0)])];
        for k in 0..3 {
            s[k] += u64::from(p.0[k]);
        }
        s[3] += 1;
    }
    for s in &sums {
        let n = s[3].max(1);
        palette.push([(s[0] / n) as u8, (s[1] / n) as u8, (s[2] / n) as u8]);
    }
    let idx = img.pixels().map(|p| index_of[cell(&p.0)]).collect();
    (palette, idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn blur_preserves_flat_regions_and_mean() {
        let mut p = Planes::filled(20, 10, 3, 100.0);
        blur(&mut p, 1.0);
        assert!(p.data.iter().all(|v| (v - 100.0).abs() < 1e-3));
    }

    #[test]
    fn correlated_noise_has_the_requested_std() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for correlated in [false, true] {
            let mut p = Planes::filled(200, 200, 1, 128.0);
            add_noise(&mut p, 3.0, correlated, &mut rng);
            let var = p.data.iter().map(|v| (v - 128.0).powi(2)).sum::<f32>() / p.data.len() as f32;
            assert!(
                (var.sqrt() - 3.0).abs() < 0.4,
                "{correlated}: {}",
                var.sqrt()
            );
        }
    }

    #[test]
    fn resize_keeps_the_grey_scale() {
        let p = Planes::filled(30, 12, 3, 200.0);
        let r = resize(&p, 20, 8, FilterType::Lanczos3);
        assert!(
            r.data.iter().all(|v| (v - 200.0).abs() < 0.5),
            "{:?}",
            &r.data[..3]
        );
    }

    #[test]
    fn quantise_keeps_few_colours_exactly() {
        let mut img = RgbImage::new(8, 8);
        for (i, p) in img.pixels_mut().enumerate() {
            p.0 = if i % 2 == 0 {
                [240, 238, 241]
            } else {
                [20, 20, 20]
            };
        }
        let (pal, idx) = quantise(&img, 256);
        assert_eq!(pal.len(), 2);
        assert_eq!(pal[usize::from(idx[0])], [240, 238, 241]);
    }
}
