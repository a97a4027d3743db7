//! Matching one variant: anchors searched in order of expected displacement, the map fitted
//! after each, refined at full resolution, outliers searched again, then scored.

use crate::affine::Affine;
use crate::firmware::FirmwareCheck;
use crate::fit::{fit, rotation_deg, Motion};
use crate::layout::{AnchorScore, LayoutInfo, Match, Thresholds, Variant};
use crate::pyramid::Pyramid;

use super::score::score;
use super::search::VariantAnchor;

/// Search range after the map is known, in variant pixels.
pub(super) const MARGIN_PX: f32 = 3.0;
/// An anchor this far (variant pixels) from where the fitted map puts it is searched again.
pub(super) const RESEARCH_RESIDUAL_PX: f32 = 1.0;
/// Search range of that second search.
pub(super) const RESEARCH_RADIUS_PX: f32 = 10.0;
/// Tolerance on the fitted scale beyond the layout's range.
pub(super) const SCALE_SLACK: f32 = 0.01;
/// Tolerance on the fitted rotation beyond the layout's range, degrees.
pub(super) const ROTATION_SLACK_DEG: f32 = 0.3;

/// The outcome of matching one variant.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub layout: usize,
    pub s0: f32,
    /// Variant frame → image.
    pub map: Affine,
    pub ncc: Vec<f32>,
    pub residual: Vec<f32>,
    pub loo: Vec<Option<f32>>,
    pub firmware: FirmwareCheck,
    pub model: Option<FirmwareCheck>,
    /// Weakest anchor NCC (0 when an anchor was not found).
    pub score: f32,
    pub failure: Option<String>,
}

impl Attempt {
    /// Passing attempts first, then by score.
    pub fn rank(&self) -> f32 {
        self.score + if self.failure.is_none() { 2.0 } else { 0.0 }
    }

    pub fn into_match(
        self,
        template_id: String,
        names: Vec<String>,
        beyond_declared: bool,
    ) -> Match {
        let map = self
            .map
            .compose(&Affine::similarity(self.s0, 0.0, 0.0, 0.0));
        let anchors = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| AnchorScore {
                name,
                ncc: self.ncc[i],
                residual_px: self.residual[i],
                loo_px: self.loo[i],
            })
            .collect();
        Match {
            template_id,
            map,
            score: self.score,
            firmware: self.firmware,
            model: self.model,
            anchors,
            beyond_declared,
        }
    }

    pub(super) fn failed(layout: usize, s0: f32, score: f32, why: String) -> Self {
        Self {
            layout,
            s0,
            map: Affine::IDENTITY,
            ncc: Vec::new(),
            residual: Vec::new(),
            loo: Vec::new(),
            firmware: FirmwareCheck::MISMATCH,
            model: None,
            score,
            failure: Some(why),
        }
    }
}

pub(super) fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// Keeps a map fitted from few anchors within what the layout allows (search only), keeping
/// where it sends `pivot` (the centroid of the anchors it was fitted on).
fn clamp(map: Affine, info: &LayoutInfo, pivot: (f32, f32)) -> Affine {
    let s = map
        .scale()
        .clamp(info.scale[0] - SCALE_SLACK, info.scale[1] + SCALE_SLACK);
    let lim = info.rotation_deg + ROTATION_SLACK_DEG;
    let rot = if info.motion == Motion::Similarity {
        rotation_deg(&map).clamp(-lim, lim)
    } else {
        0.0
    };
    let (qx, qy) = map.apply(pivot.0, pivot.1);
    let m = Affine::similarity(s, rot.to_radians(), 0.0, 0.0);
    let (px, py) = m.apply(pivot.0, pivot.1);
    Affine::similarity(s, rot.to_radians(), qx - px, qy - py)
}

/// Finds every anchor of `v` in `img`, fits the map and scores it.
pub(crate) fn match_variant(
    v: &Variant,
    info: &LayoutInfo,
    img: &Pyramid,
    thr: &Thresholds,
) -> Attempt {
    let n = v.anchors.len();
    let centre = (v.width as f32 / 2.0, v.height as f32 / 2.0);
    let ds = (1.0 - info.scale[0]).abs().max((info.scale[1] - 1.0).abs());
    let dr = info.rotation_deg.to_radians();
    let shift = info.shift_px * v.s0;
    let centres: Vec<(f32, f32)> = v.anchors.iter().map(VariantAnchor::centre).collect();
    let mut found: Vec<Option<(f32, f32)>> = vec![None; n];
    let mut outside = vec![false; n];
    let mut faded = vec![false; n];
    let mut map = Affine::IDENTITY;
    let fit_found = |found: &[Option<(f32, f32)>]| {
        let (src, dst): (Vec<_>, Vec<_>) = (0..n)
            .filter_map(|i| found[i].map(|q| (centres[i], q)))
            .unzip();
        fit(info.motion, &src, &dst).or_else(|| fit(Motion::Translation, &src, &dst))
    };
    for _ in 0..n {
        let matched: Vec<usize> = (0..n).filter(|&i| found[i].is_some()).collect();
        let spread = matched
            .iter()
            .flat_map(|&a| matched.iter().map(move |&b| (a, b)))
            .map(|(a, b)| dist(centres[a], centres[b]))
            .fold(0.0f32, f32::max);
        let uncertainty = |i: usize| -> f32 {
            let nearest = matched
                .iter()
                .map(|&m| dist(centres[i], centres[m]))
                .fold(f32::INFINITY, f32::min);
            match matched.len() {
                0 => shift + dist(centres[i], centre) * (ds + dr) + MARGIN_PX,
                _ if info.motion == Motion::Translation => MARGIN_PX,
                1 => nearest * (ds + dr) + MARGIN_PX,
                _ => MARGIN_PX + (nearest * (ds + dr)).min(0.5 * nearest / spread.max(1.0)),
            }
        };
        let Some(i) = (0..n)
            .filter(|&i| found[i].is_none() && !outside[i])
            .min_by(|&a, &b| uncertainty(a).total_cmp(&uncertainty(b)))
        else {
            break;
        };
        // Scale and shift together can push an anchor at the edge off the export. Once the map
        // is known from enough other anchors, such an anchor is left out instead of failing the
        // match; the rest (and the firmware check) still have to hold.
        if matched.len() >= MIN_ANCHORS_FOR_EDGE_SKIP && !inside(&map, v.anchors[i].rect, img, 0.0)
        {
            outside[i] = true;
            continue;
        }
        let (d, score) = v.anchors[i].locate(img, &map, (0.0, 0.0), uncertainty(i));
        if score < thr.early_reject_ncc {
            // Where every other anchor placed so far matched, a missing identity string is
            // more likely a scan that lost it than another layout: say so.
            let identity =
                i == v.firmware.anchor || v.model.as_ref().is_some_and(|m| m.anchor == i);
            if identity && img.is_bitonal() && matched.len() >= MIN_ANCHORS_FOR_EDGE_SKIP {
                // A 1-bit scan breaks a light-grey string up, so its NCC says little: it is
                // left out of the fit, placed by the other anchors, and the character check
                // (against the plate thresholded the same way) decides.
                outside[i] = true;
                faded[i] = true;
                continue;
            }
            let why = if identity && matched.len() >= MIN_ANCHORS_FOR_EDGE_SKIP {
                format!(
                    "anchor {:?} (the device's identity string) is missing where {} matching \
                     anchors place it (NCC {score:.2} < {:.2}): a bitonal scan that dropped a \
                     light-grey line, or another firmware's screen? Scan in grey, or check the \
                     device's firmware",
                    v.anchors[i].name,
                    matched.len(),
                    thr.early_reject_ncc
                )
            } else {
                format!(
                    "anchor {:?} not found (NCC {score:.2} < {:.2})",
                    v.anchors[i].name, thr.early_reject_ncc
                )
            };
            return Attempt::failed(v.layout, v.s0, score.max(0.0), why);
        }
        found[i] = Some(map.apply(centres[i].0 + d.0, centres[i].1 + d.1));
        if let Some(m) = fit_found(&found) {
            let pts: Vec<(f32, f32)> = (0..n)
                .filter(|&j| found[j].is_some())
                .map(|j| centres[j])
                .collect();
            let pivot = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
            let k = pts.len().max(1) as f32;
            map = clamp(m, info, (pivot.0 / k, pivot.1 / k));
        }
    }
    let rounds = if info.motion == Motion::Translation {
        1
    } else {
        2
    };
    let refine = |map: &mut Affine, found: &mut Vec<Option<(f32, f32)>>| {
        for i in (0..n).filter(|&i| !outside[i]) {
            let (d, _) = v.anchors[i].search(img, map, 0, (0.0, 0.0), 2);
            found[i] = Some(map.apply(centres[i].0 + d.0, centres[i].1 + d.1));
        }
        if let Some(m) = fit_found(found) {
            *map = m;
        }
    };
    for _ in 0..rounds {
        refine(&mut map, &mut found);
    }
    // An anchor the others disagree with was probably caught on a wrong peak while the map was
    // still rough: search it again, wider, through the map the other anchors fit.
    if n >= 3 {
        let mut again = false;
        for i in 0..n {
            let Some(q) = found[i] else { continue };
            if dist(map.apply(centres[i].0, centres[i].1), q) <= RESEARCH_RESIDUAL_PX {
                continue;
            }
            let mut others = found.clone();
            others[i] = None;
            if let Some(m) = fit_found(&others) {
                let (d, _) = v.anchors[i].locate(img, &m, (0.0, 0.0), RESEARCH_RADIUS_PX);
                found[i] = Some(m.apply(centres[i].0 + d.0, centres[i].1 + d.1));
                again = true;
            }
        }
        if again {
            if let Some(m) = fit_found(&found) {
                map = m;
            }
            refine(&mut map, &mut found);
        }
    }
    if !info.subpixel && info.motion == Motion::Translation {
        let snap = |t: f32| {
            let r = (t / v.s0).round();
            if (t / v.s0 - r).abs() < 0.35 {
                r * v.s0
            } else {
                t
            }
        };
        map.tx = snap(map.tx);
        map.ty = snap(map.ty);
    }
    let located = Located {
        at: &found,
        outside: &outside,
        faded: &faded,
    };
    score(v, info, img, thr, map, &located, &centres)
}

/// Where each anchor was found, and which were left out: at the edge of the export, or an
/// identity string a bitonal scan broke up (`faded`, a subset of `outside`).
pub(super) struct Located<'a> {
    pub(super) at: &'a [Option<(f32, f32)>],
    pub(super) outside: &'a [bool],
    pub(super) faded: &'a [bool],
}

/// Anchors that must be found (fixing scale and rotation) before one at the edge may be left out.
const MIN_ANCHORS_FOR_EDGE_SKIP: usize = 2;
/// Anchors that must remain inside the export and verify for a match.
pub(super) const MIN_ANCHORS_INSIDE: usize = 3;

/// Whether `rect` (variant frame), grown by `margin`, lies inside the export under `map`.
pub(super) fn inside(map: &Affine, rect: [f32; 4], img: &Pyramid, margin: f32) -> bool {
    let (w, h) = (img.base().width as f32, img.base().height as f32);
    let [x, y, rw, rh] = rect;
    [(x, y), (x + rw, y), (x, y + rh), (x + rw, y + rh)]
        .into_iter()
        .map(|(px, py)| map.apply(px, py))
        .all(|(qx, qy)| {
            qx >= margin && qy >= margin && qx <= w - 1.0 - margin && qy <= h - 1.0 - margin
        })
}
