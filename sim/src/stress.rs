//! Sets past the catalog's documented variation (#14), and look-alike layouts that must be refused.
//!
//! The catalog's "Variation" table is what the samples show; a deployment brings more ("What the
//! samples do not show": display scaling, JPEG hops, crooked scans, sub-pixel shifts everywhere).
//! A [`Stress`] widens a template's variation and adds steps after the documented pipeline:
//!
//! | stress | geometry | ink | extra steps |
//! |---|---|---|---|
//! | `documented` | as documented | as documented | none |
//! | `ink` | as documented | blur ×1.5 + 0.3 px, noise ×1.5 + 2, contrast floor ×0.85 | one JPEG re-encode, q 45–90 |
//! | `geometry` | sub-pixel shift ×1.5 (at least 6 px), scale ±3 %, rotation ±1° | blur ×1.2 + 0.2, noise ×1.2 + 1 | none |
//! | `bounds` | display scale 0.8–1.25 (resampled, the export's size changes), sub-pixel shift ×2 (at least 8 px), scale ±3 %, rotation ±3° on scanned layouts and ±1° on screens | blur and noise ×1.5 (+0.2 px, +1) | one JPEG re-encode, q 45–90 |
//!
//! `bounds` is the envelope #14 asks the reader to hold: read at least 95 % of those exports with
//! every field right, ok-but-wrong at most 0.05 %, refuse the rest with a reason.
//!
//! A [`Lookalike`] edits the template's plate before anything is drawn: one glyph of the firmware
//! string (another firmware version) or of the model name (a look-alike device of the same
//! brand) becomes another glyph of the same string. Every export of a look-alike must be refused.

use image::imageops::FilterType;
use image::RgbImage;
use rand::Rng;
use record::{Template, Variation};
use vision::Affine;

use crate::degrade::{Degrade, ScanMode};

/// How far past the documented variation a set goes (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stress {
    /// The catalog's variation, nothing more.
    #[default]
    Documented,
    /// More blur, noise and contrast loss, one JPEG re-encode; documented geometry.
    Ink,
    /// Geometry a little beyond the documented ranges on every layout.
    Geometry,
    /// The whole envelope #14 sets: display scaling, shift, rotation, JPEG, blur and noise.
    Bounds,
}

impl std::str::FromStr for Stress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "documented" => Ok(Self::Documented),
            "ink" => Ok(Self::Ink),
            "geometry" => Ok(Self::Geometry),
            "bounds" => Ok(Self::Bounds),
            _ => Err(format!(
                "unknown stress {s:?}: use documented, ink, geometry or bounds"
            )),
        }
    }
}

fn widen(r: [f32; 2], factor: f32, extra: f32) -> [f32; 2] {
    [r[0], r[1] * factor + extra]
}

impl Stress {
    /// The variation exports of this set are drawn from.
    pub fn variation(self, t: &Template) -> Variation {
        let mut v = t.variation.clone();
        let screen_rot = 1.0;
        match self {
            Self::Documented => {}
            Self::Ink => {
                v.blur_px = widen(v.blur_px, 1.5, 0.3);
                v.noise_std = widen(v.noise_std, 1.5, 2.0);
                v.contrast[0] *= 0.85;
            }
            Self::Geometry => {
                v.shift_px = (v.shift_px * 1.5).max(6.0);
                v.subpixel = true;
                v.scale = [v.scale[0].min(0.97), v.scale[1].max(1.03)];
                v.rotation_deg = v.rotation_deg.max(screen_rot);
                v.blur_px = widen(v.blur_px, 1.2, 0.2);
                v.noise_std = widen(v.noise_std, 1.2, 1.0);
            }
            Self::Bounds => {
                v.shift_px = (v.shift_px * 2.0).max(8.0);
                v.subpixel = true;
                v.scale = [v.scale[0].min(0.97), v.scale[1].max(1.03)];
                v.rotation_deg = if t.variation.scanned() {
                    3.0
                } else {
                    screen_rot
                };
                v.blur_px = widen(v.blur_px, 1.5, 0.2);
                v.noise_std = widen(v.noise_std, 1.5, 1.0);
            }
        }
        v
    }

    /// Draws the steps this set adds to one export's degradations `d` (template `t`): the
    /// display scale (the frame is resampled, so the export's size changes) and the quality of
    /// one JPEG re-encode of the finished export.
    pub fn extras<R: Rng>(self, t: &Template, d: &mut Degrade, rng: &mut R) -> Option<u8> {
        match self {
            Self::Documented | Self::Geometry => None,
            Self::Ink => Some(rng.gen_range(45..=90)),
            Self::Bounds => {
                let f: f32 = rng.gen_range(0.8..=1.25);
                display_scale(t, d, f);
                Some(rng.gen_range(45..=90))
            }
        }
    }
}

/// Renders the frame `f` times larger (a display scaling): the export frame becomes `f` × the
/// reference size and the map is scaled with it.
fn display_scale(t: &Template, d: &mut Degrade, f: f32) {
    let (w, h) = (
        (t.width as f32 * f).round() as u32,
        (t.height as f32 * f).round() as u32,
    );
    let map = Affine::similarity(w as f32 / t.width as f32, 0.0, 0.0, 0.0).compose(&d.map);
    *d = d.clone().with_map(map);
    d.frame = (w, h);
    // A downscale on export stays a factor of the (scaled) frame.
    if let Some((factor, _)) = d.downscale {
        d.downscale = Some((factor, FilterType::Triangle));
    }
}

/// The colour type an export has after a JPEG re-encode (JPEG holds gray or RGB only).
pub fn reencoded_mode(mode: ScanMode) -> ScanMode {
    match mode {
        ScanMode::Bitonal | ScanMode::Gray => ScanMode::Gray,
        ScanMode::Rgb | ScanMode::Palette => ScanMode::Rgb,
    }
}

/// Which identity string of the layout a look-alike changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookalike {
    /// One glyph of the firmware string: another firmware version of the same device.
    Firmware,
    /// One glyph of the model name: a look-alike device of the same brand.
    Model,
}

impl std::str::FromStr for Lookalike {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "firmware" => Ok(Self::Firmware),
            "model" => Ok(Self::Model),
            _ => Err(format!("unknown look-alike {s:?}: use firmware or model")),
        }
    }
}

/// Column runs of ink (glyphs, or touching glyph groups) in `r = [x, y, w, h]` of `plate`:
/// columns where some pixel differs from `fill` by more than half the box's largest difference.
fn glyph_runs(plate: &RgbImage, r: [u32; 4], fill: [u8; 3]) -> Vec<(u32, u32)> {
    let bg = fill.iter().map(|&c| i32::from(c)).sum::<i32>() / 3;
    let (x1, y1) = (
        (r[0] + r[2]).min(plate.width()),
        (r[1] + r[3]).min(plate.height()),
    );
    let ink = |x: u32| {
        (r[1]..y1)
            .map(|y| {
                let p = plate.get_pixel(x, y).0;
                (p.iter().map(|&c| i32::from(c)).sum::<i32>() / 3 - bg).abs()
            })
            .max()
            .unwrap_or(0)
    };
    let cols: Vec<i32> = (r[0]..x1).map(ink).collect();
    let limit = (cols.iter().copied().max().unwrap_or(0) / 2).max(20);
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &c) in cols.iter().chain(std::iter::once(&0)).enumerate() {
        let x = r[0] + i as u32;
        match (c > limit, start) {
            (true, None) => start = Some(x),
            (false, Some(s)) => {
                runs.push((s, x));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// `plate` with one glyph of the anchor `which` names replaced by another glyph of the same
/// string (the last glyph that has a different one of about its width), or `None` when the
/// anchor has no two distinct glyphs to swap.
pub fn lookalike_plate(
    t: &Template,
    plate: &RgbImage,
    fill: [u8; 3],
    which: Lookalike,
) -> Option<RgbImage> {
    let anchor = match which {
        Lookalike::Firmware => t.anchors.iter().find(|a| a.firmware)?,
        Lookalike::Model => t.anchors.iter().find(|a| {
            a.name.contains("model") || a.text.as_deref().is_some_and(|s| s.contains(&t.model))
        })?,
    };
    let b = anchor.bbox;
    let runs = glyph_runs(plate, b, fill);
    let width = |r: (u32, u32)| r.1 - r.0;
    let column = |x: u32| -> Vec<[u8; 3]> {
        (b[1]..b[1] + b[3])
            .map(|y| plate.get_pixel(x, y).0)
            .collect()
    };
    let differs = |a: (u32, u32), c: (u32, u32)| {
        width(a) != width(c) || (0..width(a)).any(|dx| column(a.0 + dx) != column(c.0 + dx))
    };
    // Glyph-sized runs only (not punctuation, not touching groups): a digit or letter of the
    // string becomes another one, as a version number or model code would change.
    let mut widths: Vec<u32> = runs.iter().map(|&r| width(r)).filter(|&w| w >= 2).collect();
    widths.sort_unstable();
    let median = *widths.get(widths.len() / 2)?;
    let glyph = |r: (u32, u32)| 10 * width(r) >= 7 * median && 10 * width(r) <= 14 * median;
    let glyphs: Vec<(u32, u32)> = runs.iter().copied().filter(|&r| glyph(r)).collect();
    // The last glyph of the string that another glyph of similar width can replace.
    for &to in glyphs.iter().rev() {
        let Some(from) = glyphs
            .iter()
            .copied()
            .filter(|&c| c != to && width(c).abs_diff(width(to)) <= 2)
            .filter(|&c| differs(c, to))
            .min_by_key(|&c| width(c).abs_diff(width(to)))
        else {
            continue;
        };
        let mut out = plate.clone();
        // Centred where the old glyph was; the old one cleared first.
        let x0 = ((to.0 + to.1) / 2).saturating_sub(width(from) / 2);
        for x in to.0.min(x0)..to.1.max(x0 + width(from)).min(out.width()) {
            for y in b[1]..b[1] + b[3] {
                out.put_pixel(x, y, image::Rgb(fill));
            }
        }
        for dx in 0..width(from) {
            for y in b[1]..b[1] + b[3] {
                if x0 + dx < out.width() {
                    out.put_pixel(x0 + dx, y, *plate.get_pixel(from.0 + dx, y));
                }
            }
        }
        return Some(out);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stresses_parse_and_widen_the_variation() {
        assert_eq!("bounds".parse::<Stress>(), Ok(Stress::Bounds));
        assert!("wild".parse::<Stress>().is_err());
        let t = Template {
            id: "t".into(),
            version: 1,
            device_type: "specular".into(),
            firmware: "fw1".into(),
            model: "m".into(),
            firmware_string: "v1".into(),
            width: 400,
            height: 300,
            plate: "unused.png".into(),
            export_format: "png".into(),
            variation: Variation {
                shift_px: 8.0,
                blur_px: [0.0, 0.5],
                ..Variation::default()
            },
            anchors: vec![],
            fields: vec![],
            rules: vec![],
        };
        assert_eq!(Stress::Documented.variation(&t), t.variation);
        let b = Stress::Bounds.variation(&t);
        assert_eq!((b.shift_px, b.subpixel, b.rotation_deg), (16.0, true, 1.0));
        assert_eq!(b.scale, [0.97, 1.03]);
        assert!((b.blur_px[1] - 0.95).abs() < 1e-6);
    }
}
