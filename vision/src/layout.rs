//! Layout identification and alignment: which template an export shows, and the map from that
//! template's reference frame to the export's pixels.
//!
//! [`Layouts::new`] loads every template's plate once (grey) and prepares its anchors as
//! normalised patches at sampling steps 1, 2, 4 and 8 (see [`crate::pyramid`]); a layout that
//! may be downscaled on export (`variation.downscale`) gets a second *variant* whose plate is
//! resampled to that size, so matching always happens at the export's own resolution.
//!
//! [`Layouts::identify`] tries every variant whose size fits the export (see [`crate::anchor`]
//! for the per-variant search), then accepts the best one only when every anchor correlates at
//! least [`Thresholds::anchor_min_ncc`], the firmware anchor matches character by character
//! ([`crate::firmware`]), the fitted scale and rotation stay within the layout's variation, and no
//! other template passes too. Anything else is an [`Unknown`] with a specific reason.

use std::path::PathBuf;

use record::{Template, TemplateSet};

use crate::affine::Affine;
use crate::anchor::{self, Attempt, VariantAnchor};
use crate::firmware::{FirmwareCheck, FirmwareRef};
use crate::fit::Motion;
use crate::gray::GrayF32;
use crate::pyramid::{resize_area, Pyramid};

/// A plate that could not be loaded or does not fit its template.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The plate image could not be read or decoded.
    #[error("template {template}: plate {}: {source}", path.display())]
    Plate {
        /// Template id.
        template: String,
        /// Plate path.
        path: PathBuf,
        /// Decoder or I/O error.
        source: image::ImageError,
    },
    /// The plate's size is not the template's reference frame.
    #[error("template {template}: plate is {got_w}x{got_h}, the template says {want_w}x{want_h}")]
    PlateSize {
        /// Template id.
        template: String,
        /// Plate width.
        got_w: u32,
        /// Plate height.
        got_h: u32,
        /// Template width.
        want_w: u32,
        /// Template height.
        want_h: u32,
    },
    /// The template's anchors cannot be matched (flat, or smaller than 4x4 pixels).
    #[error("template {template}: anchor {anchor:?}: {problem}")]
    Anchor {
        /// Template id.
        template: String,
        /// Anchor name.
        anchor: String,
        /// What is wrong.
        problem: String,
    },
}

/// Acceptance thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Every anchor's NCC after alignment must reach this.
    pub anchor_min_ncc: f32,
    /// The firmware anchor's worst character window may leave at most this residual (relative
    /// to the ink energy): an entirely different string exceeds it.
    pub firmware_max_residual: f32,
    /// ... and may stand out of the typical window by at most this factor: one changed
    /// character exceeds it (see [`crate::firmware`]) ...
    pub firmware_max_ratio: f32,
    /// ... and by at most this much (worst - typical): a changed character in a noisy export
    /// stands out by less than the factor but still by this much. Unbounded in the declared
    /// search (the samples' own degraded firmware lines reach 0.48); the drift pass bounds it
    /// ([`Drift::identity_max_excess`]).
    pub firmware_max_excess: f32,
    /// The typical window may leave at most this residual: past it the whole string is too
    /// degraded (JPEG, blur, a bitonal scan's broken strokes) for a changed character to show,
    /// and the export is refused as unverifiable. Unbounded in the declared search, bounded in
    /// the drift pass ([`Drift::identity_max_typical`]).
    pub firmware_max_typical: f32,
    /// A bitonal scan's identity string must keep at least this share of its ink
    /// ([`FirmwareCheck::ink`]) to be verified character by character: a light-grey line
    /// thresholded down to a few specks would hide a changed character (refused with "scan in
    /// grey"; the shared bitonal samples keep 83-100 % of it) ...
    pub identity_min_ink: f32,
    /// ... and its worst window may stand out of the typical one (floored at
    /// [`FirmwareCheck::BITONAL_FLOOR`]) by at most this factor, if `firmware_max_ratio` is
    /// not lower: a thresholded string's broken strokes leave residue in every window, so a
    /// changed character stands out by less than in a grey export. Chosen on all-bitonal
    /// tomographer sets (`examlink-sim render` with `scan_modes = { bitonal = 1.0 }`; genuine
    /// seeds 61, 63, 65, 68, firmware look-alikes 62, 64, 66, 69) and the shared samples: at
    /// 4.5x, 21 of the 300 look-alikes were accepted, at 3.5x 12 (compared with the grey plate,
    /// as before, 42), and 44 of the 300 genuine scans were read (45 before; fewer once
    /// `bitonal_max_blur` refuses the coarse ones). Lower limits cost
    /// genuine scans without closing the gap: the shared sample 018, whose line broke up in one
    /// word, stands out by 3.2x and some look-alikes by 2.0x. A bitonal scan hides a changed
    /// character this well; the honest remedy is a grey scan.
    pub bitonal_max_ratio: f32,
    /// A bitonal scan whose identity strings fit the plate only blurred by more than this
    /// (Gaussian sigma, px; [`FirmwareCheck::blur`]) is refused: its strokes ran together at
    /// the threshold, and the reader then takes a 5 for a 6 with full confidence. On the
    /// all-bitonal sets (seeds 61, 63, 65, 68, 70), 10 of the 21 scans read at blur 1.0 had a
    /// field ok but wrong (4 of them the patient id), none of the 33 read at 0.6 or less;
    /// the shared bitonal samples fit at 0.
    pub bitonal_max_blur: f32,
    /// A template whose first anchors fall below this is dropped early (speed).
    pub early_reject_ncc: f32,
    /// When two templates pass, the best must lead the second by this much.
    pub margin: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            anchor_min_ncc: 0.50,
            firmware_max_residual: 1.0,
            firmware_max_ratio: 4.5,
            firmware_max_excess: f32::INFINITY,
            firmware_max_typical: f32::INFINITY,
            identity_min_ink: 0.6,
            bitonal_max_ratio: 3.5,
            bitonal_max_blur: 0.8,
            early_reject_ncc: 0.35,
            margin: 0.10,
        }
    }
}

/// One anchor's outcome in a match.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorScore {
    /// Anchor name.
    pub name: String,
    /// NCC of the anchor at its fitted position (image resolution).
    pub ncc: f32,
    /// Distance between where the anchor was found and where the fitted map puts it,
    /// reference-frame pixels.
    pub residual_px: f32,
    /// The same distance with the map fitted on the other anchors only (leave-one-out: an
    /// estimate of the alignment error elsewhere on the screen). `None` when too few anchors.
    pub loo_px: Option<f32>,
}

/// An identified and aligned export.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Template id.
    pub template_id: String,
    /// Reference frame → export pixels.
    pub map: Affine,
    /// The weakest anchor NCC (the layout's score).
    pub score: f32,
    /// Window-by-window comparison of the firmware anchor with the plate.
    pub firmware: FirmwareCheck,
    /// The same for the anchor that names the model, where the template has one.
    pub model: Option<FirmwareCheck>,
    /// Per anchor, in template order.
    pub anchors: Vec<AnchorScore>,
    /// The match needed the drift envelope ([`Drift`]): the export's scale, rotation or shift
    /// (or its size, a display scaling) is past what the template declares.
    pub beyond_declared: bool,
}

/// An export no template accepts, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct Unknown {
    /// Specific reason (`no template of size 640x400`, `best template autoref_fw2: ...`).
    pub reason: String,
    /// The closest template and its score, when one was tried.
    pub closest: Option<(String, f32)>,
}

/// Per-template facts the search needs.
#[derive(Debug, Clone)]
pub(crate) struct LayoutInfo {
    pub id: String,
    pub firmware_string: String,
    pub motion: Motion,
    pub shift_px: f32,
    pub subpixel: bool,
    pub scale: [f32; 2],
    pub rotation_deg: f32,
    /// A scanned printout (paper, scan modes) rather than a screen export.
    pub scanned: bool,
}

/// The drift the matcher tolerates past a template's declared variation, when an export fails
/// the declared search: what a deployment brings that the samples do not show (display
/// scaling, crooked scans, sub-pixel shifts everywhere).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Translation up to this multiple of the declared shift ...
    pub shift_factor: f32,
    /// ... and at least this many reference pixels.
    pub shift_min_px: f32,
    /// Content scale at least this far either side of 1 (within the export's frame).
    pub scale: f32,
    /// Rotation up to this on screen layouts, degrees ...
    pub screen_rotation_deg: f32,
    /// ... and this on scanned printouts.
    pub scan_rotation_deg: f32,
    /// An export whose size is the template's scaled by a factor in this range (same aspect
    /// within 1 %) is matched at that scale: a display scaling of 80-125 %, resampled.
    pub display_scale: [f32; 2],
    /// The firmware and model character checks are stricter on a drifted match (and on a
    /// display-scaled one): the worst window may stand out of the typical one by at most this
    /// factor (a degraded, drifted export hides a changed character more easily). Chosen on
    /// the look-alike sets past the documented variation (`examlink-sim render --lookalike
    /// firmware --stress bounds`, seeds 17 and 31): a specular look-alike at display scale 0.8
    /// stood out by 2.65x, while genuine drifted exports reach about 3x (refused: safe).
    pub identity_max_ratio: f32,
    /// ... by at most this much (worst - typical residual) ...
    pub identity_max_excess: f32,
    /// ... and the typical window may leave at most this residual: a drifted export whose
    /// whole firmware line is this degraded cannot show a changed character, and is refused
    /// as unverifiable rather than accepted on the widened geometry.
    pub identity_max_typical: f32,
}

impl Default for Drift {
    fn default() -> Self {
        Self {
            shift_factor: 2.0,
            shift_min_px: 12.0,
            scale: 0.04,
            screen_rotation_deg: 1.2,
            scan_rotation_deg: 3.3,
            display_scale: [0.78, 1.27],
            identity_max_ratio: 2.5,
            identity_max_excess: 0.10,
            identity_max_typical: 0.10,
        }
    }
}

impl Drift {
    /// No drift: only the declared variation is searched (and whole-export scales inside the
    /// declared scale range).
    pub const NONE: Drift = Drift {
        shift_factor: 1.0,
        shift_min_px: 0.0,
        scale: 0.0,
        screen_rotation_deg: 0.0,
        scan_rotation_deg: 0.0,
        display_scale: [1.0, 1.0],
        identity_max_ratio: 0.0,
        identity_max_excess: f32::INFINITY,
        identity_max_typical: f32::INFINITY,
    };
}

impl LayoutInfo {
    /// The search envelope under `drift`: similarity motion, the widened ranges.
    fn tolerant(&self, drift: &Drift) -> LayoutInfo {
        let rot = if self.scanned {
            drift.scan_rotation_deg
        } else {
            drift.screen_rotation_deg
        };
        LayoutInfo {
            motion: Motion::Similarity,
            shift_px: (self.shift_px * drift.shift_factor).max(drift.shift_min_px),
            subpixel: true,
            scale: [
                self.scale[0].min(1.0 - drift.scale),
                self.scale[1].max(1.0 + drift.scale),
            ],
            rotation_deg: self.rotation_deg.max(rot),
            ..self.clone()
        }
    }
}

/// A template prepared at one export scale.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub layout: usize,
    /// Variant frame = reference frame × `s0`.
    pub s0: f32,
    /// The scale `variation.scale` is relative to.
    pub nominal: f32,
    pub width: u32,
    pub height: u32,
    pub anchors: Vec<VariantAnchor>,
    pub firmware: FirmwareRef,
    /// The same character check on the anchor that names the model (its text holds the
    /// template's model code, `RK-7`), when one does: a look-alike device of the same brand.
    pub model: Option<FirmwareRef>,
    /// The export size this variant is for lies within the template's declared variation
    /// (false for a display scaling past it).
    pub declared: bool,
}

/// Every template's plate and anchors, ready to match exports against.
#[derive(Debug, Clone)]
pub struct Layouts {
    layouts: Vec<LayoutInfo>,
    variants: Vec<Variant>,
    /// Each layout's template and full-size plate (8-bit), for exports at an unforeseen scale.
    sources: Vec<(Template, image::GrayImage)>,
    /// Each layout's search envelope under `drift` (same order as `layouts`).
    tolerant: Vec<LayoutInfo>,
    thresholds: Thresholds,
    drift: Drift,
}

impl Layouts {
    /// Loads each template's plate (grey) and prepares its anchors.
    pub fn new(templates: &TemplateSet) -> Result<Self, LayoutError> {
        let mut layouts = Vec::new();
        let mut variants = Vec::new();
        let mut sources = Vec::new();
        for t in templates.iter() {
            let plate = image::open(&t.plate).map_err(|source| LayoutError::Plate {
                template: t.id.clone(),
                path: t.plate.clone(),
                source,
            })?;
            // Kept as 8 bits (what the PNG holds) for the rare scaled export: a quarter of
            // the memory of the float copy.
            let luma = plate.to_luma8();
            let plate = GrayF32::from_image(&plate);
            if (plate.width, plate.height) != (t.width, t.height) {
                return Err(LayoutError::PlateSize {
                    template: t.id.clone(),
                    got_w: plate.width,
                    got_h: plate.height,
                    want_w: t.width,
                    want_h: t.height,
                });
            }
            let li = layouts.len();
            layouts.push(info(t));
            variants.push(prepare(t, li, plate.clone(), 1.0, 1.0)?);
            if let Some((_, f)) = t.variation.downscale.filter(|&(_, f)| f > 0.0 && f < 1.0) {
                let (w, h) = scaled_size(t, f);
                let mut v = prepare(t, li, resize_area(&plate, w, h), f, f)?;
                let ratio = t.width as f32 / w as f32;
                v.firmware = v.firmware.with_nearest(&plate, ratio);
                v.model = v.model.map(|m| m.with_nearest(&plate, ratio));
                variants.push(v);
            }
            sources.push((t.clone(), luma));
        }
        let drift = Drift::default();
        Ok(Self {
            tolerant: layouts.iter().map(|l| l.tolerant(&drift)).collect(),
            layouts,
            variants,
            sources,
            thresholds: Thresholds::default(),
            drift,
        })
    }

    /// Replaces the drift tolerated past the templates' declared variation.
    pub fn with_drift(mut self, drift: Drift) -> Self {
        self.tolerant = self.layouts.iter().map(|l| l.tolerant(&drift)).collect();
        self.drift = drift;
        self
    }

    /// Replaces the acceptance thresholds.
    pub fn with_thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// The thresholds in use.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Identifies the layout of `img` and fits its map, or says why no template fits.
    pub fn identify(&self, img: &GrayF32) -> Result<Match, Unknown> {
        self.identify_pyramid(&Pyramid::new(img.clone()))
    }

    /// As [`Layouts::identify`], for an image already in a pyramid (no copy).
    pub fn identify_pyramid(&self, img: &Pyramid) -> Result<Match, Unknown> {
        let (w, h) = (img.base().width, img.base().height);
        let mut candidates: Vec<&Variant> = self
            .variants
            .iter()
            .filter(|v| (v.width, v.height) == (w, h))
            .collect();
        let scaled;
        if candidates.is_empty() {
            scaled = self.scaled_variants(w, h);
            candidates = scaled.iter().collect();
        }
        if candidates.is_empty() {
            let mut sizes: Vec<String> = self
                .variants
                .iter()
                .map(|v| format!("{}x{}", v.width, v.height))
                .collect();
            sizes.sort();
            sizes.dedup();
            return Err(Unknown {
                reason: format!(
                    "no template of size {w}x{h} (known sizes: {})",
                    sizes.join(", ")
                ),
                closest: None,
            });
        }
        let declared = |v: &Variant| &self.layouts[v.layout];
        let outcome = self.choose(&candidates, declared, img, false);
        match outcome {
            Err(u) if self.drift != Drift::NONE => {
                // Past the declared variation: the same candidates in the drift envelope. The
                // identity checks (every anchor's NCC, the firmware string, the margin to the
                // second best) are the same; only the geometry searched is wider.
                let tolerant = |v: &Variant| &self.tolerant[v.layout];
                self.choose(&candidates, tolerant, img, true).map_err(|t| {
                    if t.closest.as_ref().map(|c| c.1) >= u.closest.as_ref().map(|c| c.1) {
                        t
                    } else {
                        u
                    }
                })
            }
            other => other,
        }
    }

    /// The thresholds of a match past the declared variation (the drift pass, a display-scaled
    /// variant): the firmware and model strings checked with the drift's stricter limits, since
    /// a degraded, drifted export hides a changed character more easily.
    fn strict_thresholds(&self) -> Thresholds {
        let t = self.thresholds;
        Thresholds {
            firmware_max_ratio: t.firmware_max_ratio.min(self.drift.identity_max_ratio),
            firmware_max_excess: t.firmware_max_excess.min(self.drift.identity_max_excess),
            firmware_max_typical: t.firmware_max_typical.min(self.drift.identity_max_typical),
            ..t
        }
    }

    /// Matches every candidate with the search envelope `info` gives and picks the one that
    /// passes, clear of the second (`drift`: `info` is the drift envelope). The drift pass, and
    /// a variant past the declared variation (a display scaling) in either pass, are held to
    /// [`Layouts::strict_thresholds`]; the rest to the declared ones.
    fn choose<'a>(
        &'a self,
        candidates: &[&Variant],
        info: impl Fn(&Variant) -> &'a LayoutInfo,
        img: &Pyramid,
        drift: bool,
    ) -> Result<Match, Unknown> {
        let strict = self.strict_thresholds();
        let mut attempts: Vec<Attempt> = candidates
            .iter()
            .map(|v| {
                let thr = if drift || !v.declared {
                    &strict
                } else {
                    &self.thresholds
                };
                anchor::match_variant(v, info(v), img, thr)
            })
            .collect();
        attempts.sort_by(|a, b| b.rank().total_cmp(&a.rank()));
        let name = |a: &Attempt| self.layouts[a.layout].id.clone();
        let best = &attempts[0];
        let closest = Some((name(best), best.score));
        if let Some(why) = &best.failure {
            return Err(Unknown {
                reason: format!("best template {}: {why}", name(best)),
                closest,
            });
        }
        // The runner-up among the other layouts: two variants of one layout (an export size
        // both the full and the downscaled plate admit) are not an ambiguity.
        if let Some(second) = attempts
            .iter()
            .skip(1)
            .find(|s| s.layout != best.layout)
            .filter(|s| s.failure.is_none())
        {
            if best.score - second.score < self.thresholds.margin {
                return Err(Unknown {
                    reason: format!(
                        "ambiguous: templates {} ({:.2}) and {} ({:.2}) both match",
                        name(best),
                        best.score,
                        name(second),
                        second.score
                    ),
                    closest,
                });
            }
        }
        let best = attempts.swap_remove(0);
        let v = candidates
            .iter()
            .find(|v| v.layout == best.layout && v.s0 == best.s0)
            .copied();
        let names = v
            .map(|v| v.anchors.iter().map(|a| a.name.clone()).collect())
            .unwrap_or_default();
        let id = name_of(&self.layouts, best.layout);
        let beyond_declared = drift || v.is_some_and(|v| !v.declared);
        Ok(best.into_match(id, names, beyond_declared))
    }

    /// Variants, prepared now, of the layouts whose `variation.scale` range or the drift's
    /// display scale admits an export of `w x h` (same aspect ratio within 1 %): the rare export
    /// scaled as a whole (a display scaling, a scan at another resolution).
    fn scaled_variants(&self, w: u32, h: u32) -> Vec<Variant> {
        let mut out = Vec::new();
        let [dlo, dhi] = self.drift.display_scale;
        for (li, (t, plate)) in self.sources.iter().enumerate() {
            // The export may be the template's frame, or its downscale on export, scaled.
            let downscale = t
                .variation
                .downscale
                .map(|(_, f)| f)
                .filter(|&f| f > 0.0 && f < 1.0);
            for base in std::iter::once(1.0).chain(downscale) {
                let (fx, fy) = (
                    w as f32 / (t.width as f32 * base),
                    h as f32 / (t.height as f32 * base),
                );
                let (lo, hi) = (t.variation.scale[0].min(dlo), t.variation.scale[1].max(dhi));
                if (fx - fy).abs() > 0.01 * fx || fx < lo - 0.005 || fx > hi + 0.005 {
                    continue;
                }
                let plate = GrayF32::from_image(&image::DynamicImage::ImageLuma8(plate.clone()));
                // Within the declared scale range the content scale is relative to the template;
                // past it (a display scaling), relative to the export's own scale.
                let [slo, shi] = t.variation.scale;
                let nominal = if fx >= slo - 0.005 && fx <= shi + 0.005 {
                    base
                } else {
                    base * fx
                };
                if let Ok(mut v) = prepare(t, li, resize_area(&plate, w, h), base * fx, nominal) {
                    v.declared = nominal == base;
                    out.push(v);
                }
            }
        }
        out
    }
}

fn name_of(layouts: &[LayoutInfo], i: usize) -> String {
    layouts[i].id.clone()
}

fn info(t: &Template) -> LayoutInfo {
    let v = &t.variation;
    let motion = if v.rotation_deg > 0.0 {
        Motion::Similarity
    } else if v.scale[0] < 1.0 || v.scale[1] > 1.0 {
        Motion::ScaleTranslation
    } else {
        Motion::Translation
    };
    LayoutInfo {
        id: t.id.clone(),
        firmware_string: t.firmware_string.clone(),
        motion,
        shift_px: v.shift_px.max(0.0),
        subpixel: v.subpixel,
        scale: v.scale,
        rotation_deg: v.rotation_deg.max(0.0),
        scanned: v.scanned(),
    }
}

fn scaled_size(t: &Template, f: f32) -> (u32, u32) {
    (
        (t.width as f32 * f).round() as u32,
        (t.height as f32 * f).round() as u32,
    )
}

/// Prepares template `t` matched on `plate` resampled to scale `s0`; `nominal` is the scale
/// `variation.scale` is relative to (the downscale factor for a downscale variant, else 1).
fn prepare(
    t: &Template,
    layout: usize,
    plate: GrayF32,
    s0: f32,
    nominal: f32,
) -> Result<Variant, LayoutError> {
    let (width, height) = (plate.width, plate.height);
    let pyr = Pyramid::new(plate);
    let scale_box = |b: [u32; 4]| {
        [
            b[0] as f32 * s0,
            b[1] as f32 * s0,
            b[2] as f32 * s0,
            b[3] as f32 * s0,
        ]
    };
    let mut anchors = Vec::with_capacity(t.anchors.len());
    for a in &t.anchors {
        let va = VariantAnchor::new(&a.name, scale_box(a.bbox), &pyr);
        if !va.is_usable() {
            return Err(LayoutError::Anchor {
                template: t.id.clone(),
                anchor: a.name.clone(),
                problem: "the plate is flat there or the box is under 4x4 pixels: nothing to match"
                    .into(),
            });
        }
        anchors.push(va);
    }
    let fw = t.anchors.iter().position(|a| a.firmware).unwrap_or(0);
    let fields: Vec<[f32; 4]> = t.fields.iter().map(|f| scale_box(f.bbox)).collect();
    let firmware = FirmwareRef::new(fw, anchors[fw].rect, &fields, &pyr);
    let model = model_anchor(t)
        .filter(|&i| i != fw)
        .map(|i| FirmwareRef::new(i, anchors[i].rect, &fields, &pyr));
    Ok(Variant {
        layout,
        s0,
        nominal,
        width,
        height,
        anchors,
        firmware,
        model,
        declared: true,
    })
}

/// The anchor whose text names the model: it holds the model code, the last word of
/// `model` (`Vellmar RK-7` → `RK-7`).
fn model_anchor(t: &Template) -> Option<usize> {
    let code = t.model.split_whitespace().last()?;
    t.anchors
        .iter()
        .position(|a| a.text.as_deref().is_some_and(|s| s.contains(code)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::{Anchor, Variation};

    /// A plate with text-like blobs: bars of varying lengths on rows, distinct per row.
    fn plate(w: u32, h: u32) -> GrayF32 {
        let mut img = GrayF32::filled(w, h, 0.9);
        let mut s: u64 = 7;
        for row in (10..h - 20).step_by(23) {
            let mut x = 8 + (row % 17);
            while x + 12 < w - 8 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (bw, bh) = (2 + (s >> 60) as u32, 6 + ((s >> 56) & 7) as u32);
                for yy in row..row + bh {
                    for xx in x..x + bw {
                        img.data[(yy * w + xx) as usize] = 0.15;
                    }
                }
                x += bw + 2 + ((s >> 50) & 7) as u32;
            }
        }
        img
    }

    /// `img` seen through `map` (reference → export), bilinear.
    fn warp(img: &GrayF32, map: &Affine) -> GrayF32 {
        warp_to(img, map, img.width, img.height)
    }

    /// As `warp`, onto a `w x h` canvas.
    fn warp_to(img: &GrayF32, map: &Affine, w: u32, h: u32) -> GrayF32 {
        let inv = map.inverse().expect("a regular map");
        let mut out = GrayF32::filled(w, h, 0.9);
        for y in 0..h {
            for x in 0..w {
                let (rx, ry) = inv.apply(x as f32 + 0.5, y as f32 + 0.5);
                out.data[(y * w + x) as usize] = img.sample(rx, ry);
            }
        }
        out
    }

    fn template(variation: Variation) -> Template {
        let anchor = |name: &str, bbox: [u32; 4], firmware: bool| Anchor {
            name: name.into(),
            bbox,
            text: None,
            firmware,
        };
        Template {
            id: "synthetic".into(),
            version: 1,
            device_type: "specular".into(),
            firmware: "fw1".into(),
            model: "m".into(),
            firmware_string: "v1".into(),
            width: 400,
            height: 300,
            plate: "unused.png".into(),
            export_format: "png".into(),
            variation,
            anchors: vec![
                anchor("a", [20, 10, 120, 30], true),
                anchor("b", [260, 30, 110, 25], false),
                anchor("c", [30, 230, 150, 28], false),
                anchor("d", [250, 220, 120, 40], false),
            ],
            fields: vec![],
            rules: vec![],
        }
    }

    fn to_luma(p: &GrayF32) -> image::GrayImage {
        let raw = p
            .data
            .iter()
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        image::GrayImage::from_raw(p.width, p.height, raw).unwrap()
    }

    fn layouts(t: &Template, plate: GrayF32) -> Layouts {
        let drift = Drift::default();
        Layouts {
            layouts: vec![info(t)],
            variants: vec![prepare(t, 0, plate.clone(), 1.0, 1.0).unwrap()],
            sources: vec![(t.clone(), to_luma(&plate))],
            tolerant: vec![info(t).tolerant(&drift)],
            thresholds: Thresholds::default(),
            drift,
        }
    }

    #[test]
    fn recovers_a_similarity_to_a_fraction_of_a_pixel() {
        let v = Variation {
            shift_px: 12.0,
            subpixel: true,
            scale: [0.97, 1.03],
            rotation_deg: 1.5,
            ..Variation::default()
        };
        let p = plate(400, 300);
        let l = layouts(&template(v), p.clone());
        for (s, deg, tx, ty) in [
            (1.0, 0.0, 0.0, 0.0),
            (1.02, 1.2, 7.3, -4.6),
            (0.975, -1.4, -9.5, 8.25),
        ] {
            let truth = Affine::similarity(s, f32::to_radians(deg), tx, ty);
            let m = l.identify(&warp(&p, &truth)).expect("identified");
            for (x, y) in [(50.0, 40.0), (350.0, 250.0), (200.0, 150.0)] {
                let (a, b) = (m.map.apply(x, y), truth.apply(x, y));
                let err = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
                assert!(
                    err < 0.25,
                    "s {s} rot {deg} t ({tx}, {ty}): error {err} at ({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn an_export_scaled_as_a_whole_within_the_scale_range_is_matched() {
        let v = Variation {
            shift_px: 12.0,
            subpixel: true,
            scale: [0.97, 1.03],
            rotation_deg: 1.5,
            ..Variation::default()
        };
        let p = plate(400, 300);
        let l = layouts(&template(v), p.clone());
        let truth = Affine::similarity(0.98, 0.0, 1.5, -2.0);
        let m = l
            .identify(&warp_to(&p, &truth, 392, 294))
            .expect("identified");
        let (a, b) = (m.map.apply(350.0, 250.0), truth.apply(350.0, 250.0));
        assert!(
            (a.0 - b.0).abs() < 0.3 && (a.1 - b.1).abs() < 0.3,
            "{a:?} vs {b:?}"
        );
        assert!(l
            .identify(&GrayF32::filled(300, 300, 0.5))
            .unwrap_err()
            .reason
            .starts_with("no template of size 300x300"));
    }

    #[test]
    fn an_anchor_pushed_off_the_edge_is_left_out_and_the_rest_still_fit() {
        let v = Variation {
            shift_px: 12.0,
            subpixel: true,
            scale: [0.97, 1.03],
            rotation_deg: 0.0,
            ..Variation::default()
        };
        let mut p = plate(400, 300);
        // Ink at the very bottom edge, where the fifth anchor sits.
        for (i, x0) in (300..380).step_by(9).enumerate() {
            for y in 284..290 + (i as u32 % 4) {
                for x in x0..x0 + 3 + (i as u32 % 3) {
                    p.data[(y * 400 + x) as usize] = 0.15;
                }
            }
        }
        let mut t = template(v);
        t.anchors.push(Anchor {
            name: "edge".into(),
            bbox: [298, 282, 84, 14],
            text: None,
            firmware: false,
        });
        let l = layouts(&t, p.clone());
        // Scaled up about the centre and shifted down: the edge anchor leaves the image.
        let truth = Affine::similarity(1.03, 0.0, 2.0 - 0.03 * 200.0, 12.0 - 0.03 * 150.0);
        let m = l
            .identify(&warp(&p, &truth))
            .expect("identified without the edge anchor");
        let edge = m.anchors.iter().find(|a| a.name == "edge").unwrap();
        assert!(edge.ncc.is_nan(), "edge anchor left out: {edge:?}");
        let (a, b) = (m.map.apply(200.0, 150.0), truth.apply(200.0, 150.0));
        assert!(
            (a.0 - b.0).abs() < 0.3 && (a.1 - b.1).abs() < 0.3,
            "{a:?} vs {b:?}"
        );
        // Unmoved, the same anchor is found and scored.
        let m = l.identify(&p).expect("identified");
        let edge = m.anchors.iter().find(|a| a.name == "edge").unwrap();
        assert!(edge.ncc > 0.9, "{edge:?}");
    }

    #[test]
    fn integer_shifts_are_exact_and_foreign_images_rejected() {
        let v = Variation {
            shift_px: 8.0,
            ..Variation::default()
        };
        let p = plate(400, 300);
        let l = layouts(&template(v), p.clone());
        let m = l
            .identify(&warp(&p, &Affine::translation(-5.0, 7.0)))
            .unwrap();
        assert_eq!((m.map.tx, m.map.ty), (-5.0, 7.0));
        let blank = l.identify(&GrayF32::filled(400, 300, 0.5)).unwrap_err();
        assert!(
            blank.reason.starts_with("best template synthetic: anchor"),
            "{}",
            blank.reason
        );
        let size = l.identify(&GrayF32::filled(640, 400, 0.5)).unwrap_err();
        assert_eq!(
            size.reason,
            "no template of size 640x400 (known sizes: 400x300)"
        );
        // A changed "character" inside the firmware anchor: one bar moved.
        let mut edited = p.clone();
        for yy in 12..40u32 {
            for xx in 60..72u32 {
                edited.data[(yy * 400 + xx) as usize] = if (64..68).contains(&xx) && yy < 30 {
                    0.15
                } else {
                    0.9
                };
            }
        }
        let e = l.identify(&edited).unwrap_err();
        assert!(e.reason.contains("firmware anchor"), "{}", e.reason);
    }

    // See: #14
    #[test]
    fn drift_past_the_declared_variation_is_matched_and_reported() {
        // A screen layout that declares integer shifts only.
        let v = Variation {
            shift_px: 8.0,
            ..Variation::default()
        };
        let p = plate(400, 300);
        let l = layouts(&template(v.clone()), p.clone());
        // Rotated 0.8°, scaled 1.5 %, shifted 13.4 px: past every declared range.
        let truth = Affine::similarity(1.015, f32::to_radians(0.8), 13.4, -6.2);
        let m = l
            .identify(&warp(&p, &truth))
            .expect("matched in the drift envelope");
        for (x, y) in [(50.0, 40.0), (350.0, 250.0)] {
            let (a, b) = (m.map.apply(x, y), truth.apply(x, y));
            let err = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
            assert!(err < 0.3, "error {err} at ({x}, {y})");
        }
        // Beyond the drift (3° on a screen): refused.
        let far = Affine::similarity(1.0, f32::to_radians(3.0), 0.0, 0.0);
        assert!(l.identify(&warp(&p, &far)).is_err());
        // With the drift off, the first export is refused too.
        let strict = layouts(&template(v), p.clone()).with_drift(Drift::NONE);
        assert!(strict.identify(&warp(&p, &truth)).is_err());
    }

    // See: #14
    #[test]
    fn a_display_scaled_export_is_matched_at_its_scale() {
        let v = Variation {
            shift_px: 8.0,
            ..Variation::default()
        };
        let p = plate(400, 300);
        let l = layouts(&template(v), p.clone());
        for s in [0.8f32, 1.25] {
            let (w, h) = ((400.0 * s).round() as u32, (300.0 * s).round() as u32);
            let truth = Affine::similarity(s, 0.0, 3.0, -2.0);
            let m = l
                .identify(&warp_to(&p, &truth, w, h))
                .unwrap_or_else(|u| panic!("display scale {s}: {}", u.reason));
            let (a, b) = (m.map.apply(350.0, 250.0), truth.apply(350.0, 250.0));
            assert!(
                (a.0 - b.0).abs() < 0.5 && (a.1 - b.1).abs() < 0.5,
                "scale {s}: {a:?} vs {b:?}"
            );
        }
        // 1.4x is past any display scaling: refused by size.
        let e = l.identify(&GrayF32::filled(560, 420, 0.5)).unwrap_err();
        assert!(
            e.reason.starts_with("no template of size 560x420"),
            "{}",
            e.reason
        );
    }
}
