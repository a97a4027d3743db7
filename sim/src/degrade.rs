//! The degradations of a template's `variation` (catalog "Variation" table), drawn per export and
//! applied to a region of the export frame, so a crop region degrades exactly like the same
//! region of a full export:
//!
//! 1. geometry: reference frame → export frame by a similarity about the frame centre (integer or
//!    sub-pixel translation, scale, rotation), border filled with the screen/paper background;
//! 2. paper: tint and uneven illumination of the ink, flat blank paper (scans);
//! 3. downscale on export (factor, Lanczos / bilinear / nearest);
//! 4. Gaussian blur, contrast/brightness, Gaussian noise (spatially correlated for scans);
//! 5. JPEG at the drawn quality (the export itself, or the scanner's before saving as PNG);
//! 6. scan mode: RGB, 8-bit gray, bitonal (global threshold) or 256-colour adaptive palette.

use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rand::Rng;
use record::Variation;
use vision::Affine;

use crate::filters::{self, Planes};

/// Colour type of the written export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// 8-bit RGB.
    Rgb,
    /// 8-bit grayscale.
    Gray,
    /// 1-bit black and white.
    Bitonal,
    /// 8-bit indexed colour, adaptive palette of up to 256 colours.
    Palette,
}

impl ScanMode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "rgb" => Some(Self::Rgb),
            "gray" | "grey" => Some(Self::Gray),
            "bitonal" => Some(Self::Bitonal),
            "palette" => Some(Self::Palette),
            _ => None,
        }
    }
}

/// Paper tint and uneven illumination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paper {
    /// Per-channel tint of the blank paper (multiplies the plate's background).
    pub tint: [f32; 3],
    /// Ink strength field `1 + gx·u + gy·v + q·(u² + v²)`, `u, v` in -0.5..0.5 across the frame.
    pub field: [f32; 3],
}

/// One export's degradations.
#[derive(Debug, Clone, PartialEq)]
pub struct Degrade {
    /// Reference frame → export frame before any downscale.
    pub map: Affine,
    /// `Some` when `map` is an integer translation (copied, not resampled).
    pub integer_shift: Option<(i32, i32)>,
    /// Downscale factor and filter.
    pub downscale: Option<(f32, FilterType)>,
    /// Gaussian blur sigma, px.
    pub blur: f32,
    /// Noise standard deviation, grey levels.
    pub noise: f32,
    /// Spatially correlated noise.
    pub correlated: bool,
    /// Contrast factor.
    pub contrast: f32,
    /// Brightness offset.
    pub brightness: f32,
    /// JPEG quality.
    pub jpeg: Option<u8>,
    /// Paper effects.
    pub paper: Option<Paper>,
    /// Colour type.
    pub mode: ScanMode,
    /// Bitonal threshold on 0..255.
    pub threshold: u8,
    /// Export frame size before any downscale: the reference frame's, unless the frame was
    /// rescaled as a whole (a display scaling, [`crate::stress`]).
    pub frame: (u32, u32),
    /// Reference frame size: where the rendered screen has content (outside it, the fill).
    pub reference: (u32, u32),
}

fn uniform<R: Rng>(rng: &mut R, r: [f32; 2]) -> f32 {
    if r[1] > r[0] {
        rng.gen_range(r[0]..=r[1])
    } else {
        r[0]
    }
}

impl Degrade {
    /// Draws the degradations of `v` for a `w` x `h` frame; `base` is the colour type when the
    /// variation has no scan modes. `hard` adds stronger blur, noise, JPEG and contrast loss.
    pub fn sample<R: Rng>(
        v: &Variation,
        w: u32,
        h: u32,
        base: ScanMode,
        hard: bool,
        rng: &mut R,
    ) -> Self {
        let (tx, ty) = if v.subpixel {
            (
                rng.gen_range(-1.0..=1.0) * v.shift_px,
                rng.gen_range(-1.0..=1.0) * v.shift_px,
            )
        } else {
            let s = v.shift_px.round() as i32;
            (rng.gen_range(-s..=s) as f32, rng.gen_range(-s..=s) as f32)
        };
        let scale = uniform(rng, v.scale);
        let theta = uniform(rng, [-v.rotation_deg, v.rotation_deg]).to_radians();
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
        let rot = Affine::similarity(scale, theta, 0.0, 0.0);
        let (rx, ry) = rot.apply(cx, cy);
        let map = Affine::similarity(scale, theta, cx - rx + tx, cy - ry + ty);
        let integer_shift =
            (scale == 1.0 && theta == 0.0 && tx.fract() == 0.0 && ty.fract() == 0.0)
                .then_some((tx as i32, ty as i32));
        let downscale = v.downscale.and_then(|(share, f)| {
            rng.gen_bool(f64::from(share.clamp(0.0, 1.0))).then(|| {
                let filter = *[
                    FilterType::Lanczos3,
                    FilterType::Triangle,
                    FilterType::Nearest,
                ]
                .choose(rng)
                .unwrap_or(&FilterType::Lanczos3);
                (f, filter)
            })
        });
        let mut blur = uniform(rng, v.blur_px);
        let mut noise = uniform(rng, v.noise_std);
        let mut contrast = uniform(rng, v.contrast);
        let brightness = uniform(rng, v.brightness);
        let mut jpeg = v
            .jpeg_quality
            .map(|[a, b]| rng.gen_range(a.min(b)..=b.max(a)));
        let modes: Vec<(ScanMode, f32)> = v
            .scan_modes
            .iter()
            .filter_map(|(k, s)| ScanMode::parse(k).map(|m| (m, *s)))
            .collect();
        let mode = modes
            .choose_weighted(rng, |(_, s)| f64::from(s.max(0.0)))
            .map(|(m, _)| *m)
            .unwrap_or(base);
        let threshold = v
            .bitonal_threshold
            .map_or(150, |[a, b]| rng.gen_range(a.min(b)..=b.max(a)));
        let paper = v.paper.then(|| Paper {
            tint: [0; 3].map(|_| rng.gen_range(0.97..=1.02)),
            field: [
                rng.gen_range(-0.15..=0.15),
                rng.gen_range(-0.15..=0.15),
                rng.gen_range(-0.4..=0.0),
            ],
        });
        if hard {
            blur = blur.max(rng.gen_range(0.0..1.4));
            noise += rng.gen_range(0.0..7.0);
            contrast *= rng.gen_range(0.6..1.1);
            jpeg = match jpeg {
                Some(q) => Some(q.min(rng.gen_range(30..=q.max(31)))),
                None => rng.gen_bool(0.5).then(|| rng.gen_range(30..=92)),
            };
        }
        Degrade {
            map,
            integer_shift,
            downscale,
            blur,
            noise,
            correlated: v.noise_correlated,
            contrast,
            brightness,
            jpeg,
            paper,
            mode,
            threshold,
            frame: (w, h),
            reference: (w, h),
        }
    }

    /// No degradation at all (identity map, lossless, `mode`).
    pub fn none(w: u32, h: u32, mode: ScanMode) -> Self {
        Degrade {
            map: Affine::IDENTITY,
            integer_shift: Some((0, 0)),
            downscale: None,
            blur: 0.0,
            noise: 0.0,
            correlated: false,
            contrast: 1.0,
            brightness: 0.0,
            jpeg: None,
            paper: None,
            mode,
            threshold: 150,
            frame: (w, h),
            reference: (w, h),
        }
    }

    /// The same degradations with another geometry (`map`: reference frame → export frame
    /// before any downscale); an integer translation is copied rather than resampled.
    pub fn with_map(mut self, map: Affine) -> Self {
        let int = map.a == 1.0 && map.d == 1.0 && map.b == 0.0 && map.c == 0.0;
        let int = int && map.tx.fract() == 0.0 && map.ty.fract() == 0.0;
        self.integer_shift = int.then_some((map.tx as i32, map.ty as i32));
        self.map = map;
        self
    }

    /// Downscale factor (1 when none).
    pub fn factor(&self) -> f32 {
        self.downscale.map_or(1.0, |(f, _)| f)
    }

    /// Reference frame → final export pixels.
    pub fn export_map(&self) -> Affine {
        Affine::similarity(self.factor(), 0.0, 0.0, 0.0).compose(&self.map)
    }

    /// Size of the final export.
    pub fn export_size(&self) -> (u32, u32) {
        let f = self.factor();
        (
            (self.frame.0 as f32 * f).round() as u32,
            (self.frame.1 as f32 * f).round() as u32,
        )
    }
}

/// The rendered reference frame, or a part of it, that exports are made from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Pixels (plate plus drawn values).
    pub img: &'a image::RgbImage,
    /// Reference-frame column of `img`'s left edge.
    pub x0: i32,
    /// Reference-frame row of `img`'s top edge.
    pub y0: i32,
    /// Screen / paper background, used outside the frame.
    pub fill: [u8; 3],
}

/// A rectangle `[x, y, w, h]` of the final export frame.
pub type Rect = [i32; 4];

/// A degraded region.
#[derive(Debug, Clone)]
pub struct Degraded {
    /// Pixels on 0..255 after every step (1 channel for gray and bitonal modes).
    pub planes: Planes,
    /// The JPEG file of the region, when the pipeline compressed it (for a JPEG template's
    /// full frame this is the export file itself).
    pub jpeg: Option<Vec<u8>>,
}

/// Applies `d` to the region `r` of the export frame.
pub fn apply<R: Rng>(
    src: &Source<'_>,
    d: &Degrade,
    r: Rect,
    rng: &mut R,
) -> Result<Degraded, image::ImageError> {
    let f = d.factor();
    let pre = [
        (r[0] as f32 / f).round() as i32,
        (r[1] as f32 / f).round() as i32,
        (r[2] as f32 / f).round() as i32,
        (r[3] as f32 / f).round() as i32,
    ];
    let mut p = warp(src, d, pre);
    if let Some(paper) = &d.paper {
        apply_paper(&mut p, pre, d.frame, src.fill, paper);
    }
    if let Some((_, filter)) = d.downscale {
        p = filters::resize(&p, r[2] as usize, r[3] as usize, filter);
    }
    filters::blur(&mut p, d.blur);
    filters::contrast_brightness(&mut p, d.contrast, d.brightness);
    filters::add_noise(&mut p, d.noise, d.correlated, rng);
    let grey = matches!(d.mode, ScanMode::Gray | ScanMode::Bitonal);
    if grey {
        p = to_grey(&p);
    }
    let mut jpeg = None;
    if let Some(q) = d.jpeg {
        let (decoded, bytes) = filters::jpeg_roundtrip(&p, q)?;
        p = decoded;
        jpeg = Some(bytes);
    }
    for v in &mut p.data {
        *v = v.round().clamp(0.0, 255.0);
    }
    match d.mode {
        ScanMode::Bitonal => {
            let t = f32::from(d.threshold);
            p.data
                .iter_mut()
                .for_each(|v| *v = if *v >= t { 255.0 } else { 0.0 });
        }
        ScanMode::Palette => {
            let rgb = p.to_rgb8();
            let (pal, idx) = filters::quantise(&rgb, 256);
            p.data = idx
                .iter()
                .flat_map(|&i| pal[usize::from(i)].map(f32::from))
                .collect();
        }
        _ => {}
    }
    Ok(Degraded { planes: p, jpeg })
}

fn to_grey(p: &Planes) -> Planes {
    if p.ch == 1 {
        return p.clone();
    }
    let rgb = p.to_rgb8();
    let g = filters::luma(&rgb);
    Planes {
        w: p.w,
        h: p.h,
        ch: 1,
        data: g.as_raw().iter().map(|&v| f32::from(v)).collect(),
    }
}

/// Inverse of a similarity/affine map.
pub fn invert(m: &Affine) -> Affine {
    let det = m.a * m.d - m.b * m.c;
    let (a, b, c, d) = (m.d / det, -m.b / det, -m.c / det, m.a / det);
    Affine {
        a,
        b,
        c,
        d,
        tx: -(a * m.tx + b * m.ty),
        ty: -(c * m.tx + d * m.ty),
    }
}

fn warp(src: &Source<'_>, d: &Degrade, pre: Rect) -> Planes {
    // Bounds of the rendered screen, in reference coordinates (not the export frame's: a
    // display-scaled frame is larger or smaller than the screen it shows).
    let (fw, fh) = (d.reference.0 as i32, d.reference.1 as i32);
    let (sw, sh) = (src.img.width() as i32, src.img.height() as i32);
    let raw = src.img.as_raw();
    let px = |x: i32, y: i32| -> [f32; 3] {
        let (lx, ly) = ((x - src.x0).clamp(0, sw - 1), (y - src.y0).clamp(0, sh - 1));
        let i = ((ly * sw + lx) * 3) as usize;
        [
            f32::from(raw[i]),
            f32::from(raw[i + 1]),
            f32::from(raw[i + 2]),
        ]
    };
    let fill = src.fill.map(f32::from);
    let (w, h) = (pre[2].max(1) as usize, pre[3].max(1) as usize);
    let mut out = Planes::filled(w, h, 3, 0.0);
    let inv = invert(&d.map);
    for j in 0..h {
        for i in 0..w {
            let (ex, ey) = (pre[0] + i as i32, pre[1] + j as i32);
            let v = match d.integer_shift {
                Some((tx, ty)) => {
                    let (x, y) = (ex - tx, ey - ty);
                    if x < 0 || y < 0 || x >= fw || y >= fh {
                        fill
                    } else {
                        px(x, y)
                    }
                }
                None => {
                    let (rx, ry) = inv.apply(ex as f32 + 0.5, ey as f32 + 0.5);
                    if rx < 0.0 || ry < 0.0 || rx >= fw as f32 || ry >= fh as f32 {
                        fill
                    } else {
                        let (fx, fy) = (rx - 0.5, ry - 0.5);
                        let (x0, y0) = (fx.floor(), fy.floor());
                        let (ax, ay) = (fx - x0, fy - y0);
                        let (x0, y0) = (x0 as i32, y0 as i32);
                        let clampx = |x: i32| x.clamp(0, fw - 1);
                        let clampy = |y: i32| y.clamp(0, fh - 1);
                        let (p00, p10) =
                            (px(clampx(x0), clampy(y0)), px(clampx(x0 + 1), clampy(y0)));
                        let (p01, p11) = (
                            px(clampx(x0), clampy(y0 + 1)),
                            px(clampx(x0 + 1), clampy(y0 + 1)),
                        );
                        [0, 1, 2].map(|k| {
                            let top = p00[k] * (1.0 - ax) + p10[k] * ax;
                            let bot = p01[k] * (1.0 - ax) + p11[k] * ax;
                            top * (1.0 - ay) + bot * ay
                        })
                    }
                }
            };
            out.data[(j * w + i) * 3..(j * w + i) * 3 + 3].copy_from_slice(&v);
        }
    }
    out
}

fn apply_paper(p: &mut Planes, pre: Rect, frame: (u32, u32), bg: [u8; 3], paper: &Paper) {
    let bg = bg.map(f32::from);
    let (fw, fh) = (frame.0 as f32, frame.1 as f32);
    for j in 0..p.h {
        let v = (pre[1] as f32 + j as f32 + 0.5) / fh - 0.5;
        for i in 0..p.w {
            let u = (pre[0] as f32 + i as f32 + 0.5) / fw - 0.5;
            let k =
                1.0 + paper.field[0] * u + paper.field[1] * v + paper.field[2] * (u * u + v * v);
            for c in 0..3 {
                let x = &mut p.data[(j * p.w + i) * 3 + c];
                *x = bg[c] * paper.tint[c] - (bg[c] - *x) * k;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invert_undoes_the_map() {
        let m = Affine::similarity(1.03, 0.02, 5.5, -3.0);
        let (x, y) = invert(&m).compose(&m).apply(100.0, 40.0);
        assert!((x - 100.0).abs() < 1e-3 && (y - 40.0).abs() < 1e-3);
    }

    #[test]
    fn integer_shift_copies_pixels() {
        let mut img = image::RgbImage::from_pixel(20, 10, image::Rgb([10, 20, 30]));
        img.put_pixel(5, 5, image::Rgb([200, 200, 200]));
        let src = Source {
            img: &img,
            x0: 0,
            y0: 0,
            fill: [1, 2, 3],
        };
        let mut d = Degrade::none(20, 10, ScanMode::Rgb);
        d.integer_shift = Some((2, -1));
        d.map = Affine::translation(2.0, -1.0);
        let mut rng = rand::rngs::mock::StepRng::new(0, 1);
        let p = apply(&src, &d, [0, 0, 20, 10], &mut rng).unwrap().planes;
        assert_eq!(p.data[(4 * 20 + 7) * 3], 200.0);
        assert_eq!(p.data[(9 * 20) * 3], 1.0, "border filled");
    }

    #[test]
    fn a_frame_scaled_down_shows_the_whole_screen() {
        // A display scaling of 0.8: the 20x10 screen fills the 16x8 frame, right edge included
        // (the screen's bounds are the reference frame's, not the smaller export frame's).
        let img = image::RgbImage::from_fn(20, 10, |x, _| {
            image::Rgb(if x >= 18 { [250; 3] } else { [10; 3] })
        });
        let src = Source {
            img: &img,
            x0: 0,
            y0: 0,
            fill: [100, 100, 100],
        };
        let mut d =
            Degrade::none(20, 10, ScanMode::Rgb).with_map(Affine::similarity(0.8, 0.0, 0.0, 0.0));
        d.frame = (16, 8);
        let mut rng = rand::rngs::mock::StepRng::new(0, 1);
        let p = apply(&src, &d, [0, 0, 16, 8], &mut rng).unwrap().planes;
        let right = p.data[(4 * 16 + 15) * 3];
        assert!(
            right > 200.0,
            "the screen's right edge is drawn, not the fill: {right}"
        );
    }
}
