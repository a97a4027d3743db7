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
//! plate, off every field box and blank on the plate, so a longer version string is caught too.
//!
//! The map fitted on all anchors may be off by a fraction of a pixel at this one (more so on a
//! drifted export), so the region is fitted again locally (shifts up to 0.75 px). A variant
//! downscaled on export is also compared with a nearest-neighbour downscale of the full plate
//! at the export's own shift: that resampling leaves jagged strokes no blur explains. A string
//! whose ink runs past the export's edge by more than a sliver cannot be verified.
//!
//! A bitonal export (a 1-bit scan) is compared with the plate blurred and thresholded at the
//! level that fits it best, not with the grey plate: the scanner's global threshold breaks a
//! light-grey string up, which the grey comparison cannot tell from a changed character. Each
//! window may take a threshold a little off the string's (uneven illumination). The check also
//! says how much of the string's ink the threshold left ([`FirmwareCheck::ink`]).
//!
//! The layout's verdict ([`crate::Thresholds`]) uses three numbers: the worst window (a wholly
//! different string), how far it stands above the typical one as a factor and as a difference
//! (one changed character, in a clean or a noisy export), and the typical window itself (past
//! a limit, the string is too degraded for a changed character to show: unverifiable).

use std::sync::OnceLock;

use crate::affine::Affine;
use crate::anchor::sample_grid;
use crate::gray::GrayF32;
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
    plates: Vec<Reference>,
    /// The plate region as sampled (`w x h`, unsmoothed), which `bitonal` is made from.
    raw: Vec<f32>,
    /// For a bitonal export (a 1-bit scan): the plate region blurred by each of
    /// [`PLATE_BLURS`] and thresholded at each of [`BITONAL_LEVELS`] levels, then smoothed
    /// as the export is: what the scanner's global threshold makes of the string. A light-grey
    /// line that breaks up in such a scan is compared with the plate broken up the same way.
    /// Made on the first bitonal export, so screen layouts never pay for them.
    bitonal: OnceLock<Vec<Reference>>,
    window: usize,
    /// For a variant downscaled on export: the full-resolution plate around the region, so
    /// an export downscaled by nearest neighbour (jagged, no blur) is compared with what that
    /// resampling makes of the plate.
    nearest: Option<NearestSource>,
}

/// Each sample of the plate within `rect` (variant frame): its difference from the region's
/// median, row by row (`w x h`).
fn deviations(plate: &Pyramid, rect: [f32; 4]) -> (Vec<f32>, usize, usize) {
    let (w, h) = (rect[2].max(1.0) as usize, rect[3].max(1.0) as usize);
    let v = sample_grid(plate, &Affine::IDENTITY, rect[0], rect[1], 1.0, w, h);
    let m = median(&v);
    (v.iter().map(|x| (x - m).abs()).collect(), w, h)
}

/// The largest of [`deviations`].
fn deviation(plate: &Pyramid, rect: [f32; 4]) -> f32 {
    deviations(plate, rect).0.into_iter().fold(0.0, f32::max)
}

/// The median of `v` (upper one of an even count); `v` must not be empty.
fn median(v: &[f32]) -> f32 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f32::total_cmp);
    sorted[sorted.len() / 2]
}

/// The part of `rect` (variant frame) that holds ink: rows and columns whose largest difference
/// from the region's median is at least a quarter of the region's largest.
fn ink_extent(plate: &Pyramid, rect: [f32; 4]) -> [f32; 4] {
    let (dev, w, h) = deviations(plate, rect);
    let top = dev.iter().copied().fold(0.0f32, f32::max);
    if top <= 0.0 {
        return rect;
    }
    let inked = |i: usize| dev[i] >= 0.25 * top;
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

/// How much of the string's ink may lie past the export's edge, as a share of its height
/// (a glyph is about 0.6 of it wide, so this is a quarter of a glyph at most).
const CUT_TOLERANCE: f32 = 0.15;

/// Extra Gaussian blurs (sigma, px) the plate region is prepared at.
const PLATE_BLURS: [f32; 4] = [0.0, 0.6, 1.0, 1.5];

/// How many levels a window's threshold may differ from the whole string's in a bitonal scan.
const LOCAL_LEVELS: usize = 2;

/// Thresholds a bitonal export is compared at: this many levels, evenly spaced between the
/// region's darkest ink and its paper (exclusive).
const BITONAL_LEVELS: usize = 16;

/// One plate region an export is compared with.
#[derive(Debug, Clone)]
struct Reference {
    /// The extra blur it was prepared with (Gaussian sigma, px).
    blur: f32,
    /// The share of the string's ink it keeps: 1 for a grey reference; for a thresholded one,
    /// its black samples over the string's ink samples (those darker than halfway between
    /// the darkest ink and the paper).
    ink: f32,
    /// For a thresholded one, its level (1.. of [`BITONAL_LEVELS`]); 0 for a grey one.
    level: usize,
    /// `w x h` samples, smoothed.
    pixels: Vec<f32>,
}

/// The bitonal references of a plate region (`raw`, `w x h`, unsmoothed): for each blur and
/// each threshold, black (0) where the blurred plate is darker than the threshold, else white
/// (1), then smoothed. All-white or all-black ones are left out.
fn bitonal_references(raw: &[f32], w: usize, h: usize) -> Vec<Reference> {
    let lo = raw.iter().copied().fold(f32::INFINITY, f32::min);
    let paper = median(raw);
    let string_ink = raw.iter().filter(|&&v| v < 0.5 * (lo + paper)).count();
    if string_ink == 0 || paper - lo < 1e-3 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for &sigma in &PLATE_BLURS {
        let blurred = gaussian(raw, w, h, sigma);
        for k in 1..BITONAL_LEVELS {
            let t = lo + (paper - lo) * k as f32 / BITONAL_LEVELS as f32;
            let binary: Vec<f32> = blurred
                .iter()
                .map(|&v| if v < t { 0.0 } else { 1.0 })
                .collect();
            let black = binary.iter().filter(|&&v| v == 0.0).count();
            if black == 0 || black == binary.len() {
                continue;
            }
            out.push(Reference {
                blur: sigma,
                ink: black as f32 / string_ink as f32,
                level: k,
                pixels: smooth(&binary, w, h),
            });
        }
    }
    out
}

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
        // A margin must be blank on the plate: an edge there (a panel's border beside the
        // string) would light up its window at the slightest misfit of a drifted export.
        let contrast = deviation(plate, rect);
        let blank = |r: [f32; 4]| deviation(plate, r) < 0.25 * contrast;
        let left = [x - grow, y, grow, h];
        if left[0] >= 0.0 && !overlaps(left) && blank(left) {
            x -= grow;
            w += grow;
        }
        let right = [x + w, y, grow, h];
        if right[0] + grow <= pw && !overlaps(right) && blank(right) {
            w += grow;
        }
        let (w, h) = (w.max(1.0) as usize, h.max(1.0) as usize);
        let raw = sample_grid(plate, &Affine::IDENTITY, x, y, 1.0, w, h);
        let base = smooth(&raw, w, h);
        let plates = PLATE_BLURS
            .iter()
            .map(|&blur| Reference {
                blur,
                ink: 1.0,
                level: 0,
                pixels: gaussian(&base, w, h, blur),
            })
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
            raw,
            bitonal: OnceLock::new(),
            window,
            nearest: None,
        }
    }

    /// Compares the export under `map` (variant frame → image) with the plate, window by window.
    /// Samples of the widened margin that fall outside the export are ignored. A string whose
    /// ink runs past the export's edge by more than [`CUT_TOLERANCE`] of its height scores
    /// [`FirmwareCheck::CUT_OFF`]; a region mostly
    /// outside, flat, or inverted scores [`FirmwareCheck::MISMATCH`].
    pub fn check(&self, img: &Pyramid, map: &Affine) -> FirmwareCheck {
        let (iw, ih) = (img.base().width as f32, img.base().height as f32);
        // A string cut off at the export's edge cannot be verified: its missing characters
        // may be the ones that differ. How far its ink runs past the edge, variant pixels:
        let [cx, cy, cw, ch] = self.core;
        let over = [(cx, cy), (cx + cw, cy), (cx, cy + ch), (cx + cw, cy + ch)]
            .into_iter()
            .map(|(x, y)| map.apply(x, y))
            .map(|(x, y)| (-x).max(x - iw).max(-y).max(y - ih).max(0.0))
            .fold(0.0f32, f32::max)
            / map.scale().max(1e-6);
        // A sliver of the string's edge outside the export (its anti-aliased fringe, a tenth
        // of a glyph) leaves every glyph comparable; more may hide the one that differs.
        if over > (CUT_TOLERANCE * ch).max(1.0) {
            return FirmwareCheck::CUT_OFF;
        }
        // A bitonal export is compared with the plate thresholded as a scanner would.
        let refs = if img.is_bitonal() {
            self.bitonal
                .get_or_init(|| bitonal_references(&self.raw, self.w, self.h))
        } else {
            &self.plates
        };
        // The map is fitted on every anchor; at this one it may be off by a fraction of a
        // pixel (more so on a drifted, rotated or rescaled export), which leaves residue on
        // every glyph edge. The region is fitted again locally: shifts of up to half a pixel,
        // coarse then fine. No shift turns one glyph into another.
        let mut best: Option<Local> = None;
        let mut blank = false;
        let mut centre = (0.0f32, 0.0f32);
        for step in [0.5f32, 0.25] {
            let around = centre;
            for (dx, dy) in OFFSETS.map(|(i, j)| (around.0 + i * step, around.1 + j * step)) {
                if step < 0.5 && (dx, dy) == around {
                    continue;
                }
                let shifted = Affine {
                    tx: map.tx + dx,
                    ty: map.ty + dy,
                    ..*map
                };
                let l = match self.local(img, &shifted, refs) {
                    Ok(l) => l,
                    Err(flat) => {
                        blank |= flat;
                        continue;
                    }
                };
                if best
                    .as_ref()
                    .is_none_or(|b| l.fit.relative() < b.fit.relative())
                {
                    centre = (dx, dy);
                    best = Some(l);
                }
            }
        }
        let Some(Local {
            img_s,
            idx,
            reference,
            nearest,
            fit,
        }) = best
        else {
            // Nothing of the string left where it belongs: in a bitonal scan, a light line
            // the threshold dropped.
            return if blank && img.is_bitonal() {
                FirmwareCheck::VANISHED
            } else {
                FirmwareCheck::MISMATCH
            };
        };
        let r = &refs[reference];
        let plate = nearest.as_ref().unwrap_or(&r.pixels);
        let energy = fit.energy;
        // Per column: residual energy and the number of samples inside the export.
        let columns = |plate: &[f32], Fit { mp, mi, g, .. }: Fit| {
            let mut cols = vec![(0.0f64, 0usize); self.w];
            for &i in &idx {
                let r = f64::from(img_s[i]) - mi - g * (f64::from(plate[i]) - mp);
                let c = &mut cols[i % self.w];
                c.0 += r * r;
                c.1 += 1;
            }
            window_energies(&cols, self.window, self.h)
        };
        let mut windows: Vec<f64> = columns(plate, fit)
            .into_iter()
            .map(|e| e / energy)
            .collect();
        if r.level > 0 {
            // A bitonal scan's threshold is not the same all along the string (uneven
            // illumination, spatially correlated noise): each window may take a threshold up to
            // LOCAL_LEVELS from the string's. A lower one fades strokes, a higher one thickens
            // them; neither draws a stroke where the plate has none.
            for alt in refs.iter().filter(|q| {
                q.blur == r.blur && q.level != r.level && q.level.abs_diff(r.level) <= LOCAL_LEVELS
            }) {
                let Some(f) = Fit::new(&alt.pixels, &img_s, &idx) else {
                    continue;
                };
                for (w, e) in windows.iter_mut().zip(columns(&alt.pixels, f)) {
                    *w = w.min(e / energy);
                }
            }
        }
        if windows.is_empty() {
            return FirmwareCheck::MISMATCH;
        }
        windows.sort_by(f64::total_cmp);
        FirmwareCheck {
            worst: windows[windows.len() - 1] as f32,
            typical: windows[windows.len() / 2] as f32,
            cut_off: false,
            blur: r.blur,
            ink: r.ink,
        }
    }
}

/// Mean squared residual per window of `window` columns (stride half a window) from per-column
/// sums `(energy, samples)` of a region `h` rows high; a window with under half its samples is
/// left out.
fn window_energies(cols: &[(f64, usize)], window: usize, h: usize) -> Vec<f64> {
    let w = cols.len();
    let stride = (window / 2).max(1);
    let mut out = Vec::new();
    let mut x0 = 0;
    loop {
        let x1 = (x0 + window).min(w);
        let (e, k) = cols[x0..x1]
            .iter()
            .fold((0.0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
        if k > 0 && 2 * k >= (x1 - x0) * h {
            out.push(e / k as f64);
        }
        if x1 == w {
            break;
        }
        x0 += stride;
    }
    out
}

impl FirmwareRef {
    /// The export sampled under `map`, smoothed, and fitted to the reference of `refs` it
    /// matches best; `Err` when under half the region lies inside the export or none fits
    /// (`Err(true)`: the export is blank there).
    fn local(&self, img: &Pyramid, map: &Affine, refs: &[Reference]) -> Result<Local, bool> {
        let (iw, ih) = (img.base().width as f32, img.base().height as f32);
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
            return Err(false);
        }
        let Some((reference, fit)) = refs
            .iter()
            .enumerate()
            .filter_map(|(b, p)| Fit::new(&p.pixels, &img_s, &idx).map(|f| (b, f)))
            .min_by(|a, b| a.1.relative().total_cmp(&b.1.relative()))
        else {
            let (lo, hi) = idx
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |a, &i| {
                    (a.0.min(img_s[i]), a.1.max(img_s[i]))
                });
            return Err(hi - lo < BLANK_RANGE);
        };
        let nearest = self
            .nearest
            .as_ref()
            .filter(|_| !img.is_bitonal())
            .and_then(|n| {
                let plate = n.predict(map, self.x, self.y, self.w, self.h);
                Fit::new(&plate, &img_s, &idx).map(|f| (plate, f))
            });
        Ok(match nearest {
            Some((plate, nf)) if nf.relative() < fit.relative() => Local {
                img_s,
                idx,
                reference: 0,
                nearest: Some(plate),
                fit: nf,
            },
            _ => Local {
                img_s,
                idx,
                reference,
                nearest: None,
                fit,
            },
        })
    }

    /// Also compares a downscaled variant's exports with a nearest-neighbour downscale of
    /// `full` (the template's full-resolution plate; `ratio` full pixels per variant pixel).
    pub fn with_nearest(mut self, full: &GrayF32, ratio: f32) -> Self {
        self.nearest = Some(NearestSource::new(
            full,
            ratio,
            [self.x, self.y, self.w as f32, self.h as f32],
        ));
        self
    }
}

/// The full-resolution plate around a downscaled variant's firmware region.
#[derive(Debug, Clone)]
struct NearestSource {
    /// Full-resolution pixels per export pixel (1.5 for 1920 → 1280).
    ratio: f32,
    /// The crop's origin in the full plate.
    x0: i64,
    y0: i64,
    w: usize,
    h: usize,
    pixels: Vec<f32>,
    /// The crop's median, for samples past it.
    fill: f32,
}

/// Full-resolution pixels kept around the region: the largest shift searched and more.
const NEAREST_MARGIN: i64 = 48;

impl NearestSource {
    fn new(full: &GrayF32, ratio: f32, region: [f32; 4]) -> Self {
        let [x, y, w, h] = region;
        let x0 = (x * ratio).floor() as i64 - NEAREST_MARGIN;
        let y0 = (y * ratio).floor() as i64 - NEAREST_MARGIN;
        let cw = ((w * ratio).ceil() as i64 + 2 * NEAREST_MARGIN) as usize;
        let ch = ((h * ratio).ceil() as i64 + 2 * NEAREST_MARGIN) as usize;
        let (fw, fh) = (i64::from(full.width), i64::from(full.height));
        let mut pixels = Vec::with_capacity(cw * ch);
        for yy in 0..ch as i64 {
            for xx in 0..cw as i64 {
                let (sx, sy) = ((x0 + xx).clamp(0, fw - 1), (y0 + yy).clamp(0, fh - 1));
                pixels.push(full.data[(sy * fw + sx) as usize]);
            }
        }
        let fill = median(&pixels);
        Self {
            ratio,
            x0,
            y0,
            w: cw,
            h: ch,
            pixels,
            fill,
        }
    }

    /// The plate region (variant frame, `w x h` from `(x, y)`) as an export downscaled by
    /// nearest neighbour after an integer shift on the full frame shows it under `map`
    /// (variant frame → export), sampled and smoothed as the export is.
    fn predict(&self, map: &Affine, x: f32, y: f32, w: usize, h: usize) -> Vec<f32> {
        // The full-frame shift: the map's translation in full pixels, whole (the layouts
        // downscaled on export shift by whole pixels first).
        let (sx, sy) = (
            (map.tx * self.ratio).round() as i64,
            (map.ty * self.ratio).round() as i64,
        );
        // Export pixel (ex, ey) shows full pixel floor((e + 0.5) * ratio) of the shifted frame.
        let pixel = |ex: i64, ey: i64| -> f32 {
            let fx = ((ex as f32 + 0.5) * self.ratio).floor() as i64 - sx - self.x0;
            let fy = ((ey as f32 + 0.5) * self.ratio).floor() as i64 - sy - self.y0;
            if fx < 0 || fy < 0 || fx >= self.w as i64 || fy >= self.h as i64 {
                self.fill
            } else {
                self.pixels[fy as usize * self.w + fx as usize]
            }
        };
        let mut out = Vec::with_capacity(w * h);
        for v in 0..h {
            for u in 0..w {
                let (ex, ey) = map.apply(x + u as f32 + 0.5, y + v as f32 + 0.5);
                let (px, py) = (ex - 0.5, ey - 0.5);
                let (ix, iy) = (px.floor() as i64, py.floor() as i64);
                let (ax, ay) = (px - ix as f32, py - iy as f32);
                let top = pixel(ix, iy) * (1.0 - ax) + pixel(ix + 1, iy) * ax;
                let bottom = pixel(ix, iy + 1) * (1.0 - ax) + pixel(ix + 1, iy + 1) * ax;
                out.push(top * (1.0 - ay) + bottom * ay);
            }
        }
        smooth(&out, w, h)
    }
}

/// Offsets of the local refinement, in steps.
const OFFSETS: [(f32, f32); 9] = [
    (0.0, 0.0),
    (-1.0, 0.0),
    (1.0, 0.0),
    (0.0, -1.0),
    (0.0, 1.0),
    (-1.0, -1.0),
    (1.0, -1.0),
    (-1.0, 1.0),
    (1.0, 1.0),
];

/// A region whose samples span less than this (0..1 grey) is blank.
const BLANK_RANGE: f32 = 0.05;

/// The export's firmware region at one local offset, fitted to its best plate reference.
struct Local {
    img_s: Vec<f32>,
    idx: Vec<usize>,
    /// Index into the references compared with (grey or bitonal).
    reference: usize,
    /// The nearest-neighbour prediction, when it fits better than every blur.
    nearest: Option<Vec<f32>>,
    fit: Fit,
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
    /// The share of the string's ink the export keeps: 1 for a grey export; for a bitonal
    /// scan, what the threshold that fits it best leaves of the string (a line thresholded
    /// away keeps too little for a changed character to show; 0 when nothing is left).
    pub ink: f32,
}

impl FirmwareCheck {
    /// What a region that cannot be compared scores.
    pub const MISMATCH: FirmwareCheck = FirmwareCheck {
        worst: f32::INFINITY,
        typical: f32::INFINITY,
        cut_off: false,
        blur: f32::NAN,
        ink: 1.0,
    };

    /// What a string cut off at the export's edge scores.
    pub const CUT_OFF: FirmwareCheck = FirmwareCheck {
        worst: f32::INFINITY,
        typical: f32::INFINITY,
        cut_off: true,
        blur: f32::NAN,
        ink: 1.0,
    };

    /// What a string scores that a bitonal scan's threshold dropped entirely (the region
    /// blank where the other anchors place it).
    pub const VANISHED: FirmwareCheck = FirmwareCheck {
        worst: f32::INFINITY,
        typical: f32::INFINITY,
        cut_off: false,
        blur: f32::NAN,
        ink: 0.0,
    };

    /// Typical-window floor, so a clean export's ratio does not divide by ~0.
    pub const FLOOR: f32 = 0.02;

    /// The floor in a bitonal scan: a dark string thresholded cleanly leaves a typical window
    /// near 0.02 and, from its jagged edges alone, windows up to 0.06.
    pub const BITONAL_FLOOR: f32 = 0.05;

    /// Worst window relative to the typical one (floored): a changed character stands out of an
    /// otherwise matching string whatever the degradation.
    pub fn ratio(&self) -> f32 {
        self.ratio_over(Self::FLOOR)
    }

    /// [`FirmwareCheck::ratio`] with the typical window floored at `floor` instead
    /// ([`FirmwareCheck::BITONAL_FLOOR`] in a bitonal scan).
    pub fn ratio_over(&self, floor: f32) -> f32 {
        if self.worst.is_finite() {
            self.worst / self.typical.max(floor)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pyramid::resize_area;

    /// The next value of a 64-bit linear congruential generator.
    fn next(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s
    }

    /// Text-like bars (dark on light) inside `rect`, elsewhere flat.
    fn plate(w: u32, h: u32, rect: [u32; 4]) -> GrayF32 {
        let mut img = GrayF32::filled(w, h, 0.9);
        let mut s: u64 = 11;
        let mut x = rect[0] + 1;
        while x + 4 < rect[0] + rect[2] {
            next(&mut s);
            let (bw, top) = (2 + (s >> 61) as u32, (s >> 58 & 3) as u32);
            for y in rect[1] + 1 + top..rect[1] + rect[3] - 1 {
                for xx in x..x + bw {
                    img.data[(y * w + xx) as usize] = 0.15;
                }
            }
            x += bw + 2 + (s >> 55 & 1) as u32;
        }
        img
    }

    /// `img` with its content moved by whole pixels, the border filled with the background.
    fn shifted(img: &GrayF32, dx: i64, dy: i64) -> GrayF32 {
        let (w, h) = (i64::from(img.width), i64::from(img.height));
        let mut out = GrayF32::filled(img.width, img.height, 0.9);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = (x - dx, y - dy);
                if sx >= 0 && sy >= 0 && sx < w && sy < h {
                    out.data[(y * w + x) as usize] = img.data[(sy * w + sx) as usize];
                }
            }
        }
        out
    }

    // See: #14
    #[test]
    fn a_sliver_past_the_edge_is_still_verified_more_is_cut_off() {
        let rect = [150u32, 20, 46, 16];
        let p = plate(200, 60, rect);
        let fw = FirmwareRef::new(0, rect.map(|v| v as f32), &[], &Pyramid::new(p.clone()));
        let right = fw.core[0] + fw.core[2];
        // The ink's right edge just inside, a pixel past, and half a glyph past the frame.
        let inside = (200.0 - right).floor() as i64;
        for (dx, cut) in [(inside, false), (inside + 1, false), (inside + 6, true)] {
            let c = fw.check(
                &Pyramid::new(shifted(&p, dx, 0)),
                &Affine::translation(dx as f32, 0.0),
            );
            assert_eq!(c.cut_off, cut, "shift {dx}: {c:?}");
            if !cut {
                assert!(c.worst < 0.05, "shift {dx}: {c:?}");
            }
        }
    }

    // See: #14
    #[test]
    fn a_margin_with_an_edge_is_left_out() {
        // A string with a panel's border 5 px past its right end (inside the half-height
        // margin): the region keeps the blank left margin, not the right one.
        let rect = [60u32, 20, 46, 16];
        let mut plain = plate(200, 60, rect);
        let mut edged = plain.clone();
        for y in 0..60 {
            for x in 106..200 {
                plain.data[y * 200 + x] = 0.9;
                edged.data[y * 200 + x] = if x >= 111 { 0.2 } else { 0.9 };
            }
        }
        let fw = FirmwareRef::new(0, rect.map(|v| v as f32), &[], &Pyramid::new(edged));
        assert_eq!((fw.x, fw.w), (52.0, 46 + 8));
        // With the border plain, both margins are part of the region.
        let fw = FirmwareRef::new(0, rect.map(|v| v as f32), &[], &Pyramid::new(plain));
        assert_eq!((fw.x, fw.w), (52.0, 46 + 16));
    }

    /// `img` blurred a little, with a little noise, thresholded at `t`: a 1-bit scan.
    fn bitonal(img: &GrayF32, t: f32) -> GrayF32 {
        let (w, h) = (img.width as usize, img.height as usize);
        let mut s: u64 = 5;
        let data = gaussian(&img.data, w, h, PLATE_BLURS[1])
            .into_iter()
            .map(|v| {
                let noise = ((next(&mut s) >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.03;
                if v + noise < t {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        GrayF32 {
            data,
            ..img.clone()
        }
    }

    // See: #14
    #[test]
    fn a_bitonal_scan_is_compared_with_the_plate_thresholded_alike() {
        // A light-grey string (0.55 on 0.9 paper), anti-aliased like a scanned plate.
        let rect = [40u32, 20, 120, 20];
        let mut light = plate(200, 60, rect);
        for v in &mut light.data {
            *v = 0.9 - (0.9 - *v) * (0.35 / 0.75);
        }
        let p = GrayF32 {
            data: gaussian(&light.data, 200, 60, 0.6),
            ..light.clone()
        };
        let fw = FirmwareRef::new(0, rect.map(|v| v as f32), &[], &Pyramid::new(p.clone()));
        let map = Affine::IDENTITY;
        // Thresholded near the ink, where the thin strokes break up.
        let raw = sample_grid(
            &Pyramid::new(p.clone()),
            &Affine::IDENTITY,
            fw.x,
            fw.y,
            1.0,
            fw.w,
            fw.h,
        );
        let (lo, paper) = (raw.iter().copied().fold(1.0, f32::min), median(&raw));
        let t = lo + (paper - lo) * 4.0 / BITONAL_LEVELS as f32;
        let scan = Pyramid::new(bitonal(&p, t));
        assert!(scan.is_bitonal());
        let ok = fw.check(&scan, &map);
        assert!(ok.ink > 0.5 && ok.ratio() < 3.0 && ok.worst < 0.5, "{ok:?}");
        // Compared with the grey plate, the broken strokes leave residue in every window.
        let grey = FirmwareRef {
            bitonal: OnceLock::from(fw.plates.clone()),
            ..fw.clone()
        };
        let was = grey.check(&scan, &map);
        assert!(
            was.typical > 0.1 && ok.typical < 0.25 * was.typical,
            "{ok:?} vs {was:?}"
        );
        // The same scan with one character changed (a bar moved) stands out.
        let mut edited = p.clone();
        for y in 21..39 {
            for x in 90..100 {
                edited.data[y * 200 + x] = if (94..97).contains(&x) { 0.55 } else { 0.9 };
            }
        }
        let bad = fw.check(&Pyramid::new(bitonal(&edited, t)), &map);
        assert!(
            bad.ratio_over(FirmwareCheck::BITONAL_FLOOR) > 2.5 && bad.worst - bad.typical > 0.1,
            "{bad:?} vs {ok:?}"
        );
        // Thresholded below the ink: nothing left to verify.
        let gone = fw.check(&Pyramid::new(bitonal(&p, lo - 0.05)), &map);
        assert_eq!(gone.ink, 0.0, "{gone:?}");
        // Grey exports keep the grey comparison.
        assert_eq!(fw.check(&Pyramid::new(p), &map).ink, 1.0);
    }

    // See: #14
    #[test]
    fn a_nearest_neighbour_downscale_is_compared_with_its_own_resampling() {
        let rect = [30u32, 30, 120, 24];
        let full = plate(300, 90, rect);
        // Shifted by whole pixels on the full frame, then downscaled to 2/3 by nearest
        // neighbour (pixel x shows full pixel floor((x + 0.5) * 1.5)).
        let moved = shifted(&full, 2, 1);
        let mut export = GrayF32::filled(200, 60, 0.9);
        for y in 0..60u32 {
            for x in 0..200u32 {
                let (fx, fy) = (
                    ((x as f32 + 0.5) * 1.5).floor() as u32,
                    ((y as f32 + 0.5) * 1.5).floor() as u32,
                );
                export.data[(y * 200 + x) as usize] = moved.data[(fy * 300 + fx) as usize];
            }
        }
        let variant = Pyramid::new(resize_area(&full, 200, 60));
        let r = rect.map(|v| v as f32 / 1.5);
        let plain = FirmwareRef::new(0, r, &[], &variant);
        let nearest = plain.clone().with_nearest(&full, 1.5);
        let map = Affine::translation(2.0 / 1.5, 1.0 / 1.5);
        let img = Pyramid::new(export);
        let (a, b) = (plain.check(&img, &map), nearest.check(&img, &map));
        assert!(b.typical < 0.01 && b.worst < 0.05, "{b:?}");
        assert!(a.typical > 3.0 * b.typical.max(0.002), "{a:?} vs {b:?}");
    }
}
