//! The verdict on a fitted map: every anchor verified at its fitted position, scale and
//! rotation within the layout's range, the firmware and model checks.

use crate::affine::Affine;
use crate::firmware::FirmwareCheck;
use crate::fit::{fit, rotation_deg, Motion};
use crate::layout::{LayoutInfo, Thresholds, Variant};
use crate::pyramid::Pyramid;

use super::matching::{
    dist, Attempt, Located, MIN_ANCHORS_INSIDE, ROTATION_SLACK_DEG, SCALE_SLACK,
};

pub(super) fn score(
    v: &Variant,
    info: &LayoutInfo,
    img: &Pyramid,
    thr: &Thresholds,
    map: Affine,
    located: &Located,
    centres: &[(f32, f32)],
) -> Attempt {
    let n = v.anchors.len();
    let (found, outside, faded) = (located.at, located.outside, located.faded);
    let q: Vec<(f32, f32)> = found
        .iter()
        .map(|f| f.unwrap_or((f32::NAN, f32::NAN)))
        .collect();
    let to_ref = 1.0 / (v.s0 * map.scale().max(1e-6));
    // An anchor left out at the edge scores NaN and does not take part in the minimum.
    let ncc: Vec<f32> = v
        .anchors
        .iter()
        .zip(outside)
        .map(|(a, &out)| if out { f32::NAN } else { a.verify(img, &map) })
        .collect();
    let residual: Vec<f32> = (0..n)
        .map(|i| dist(map.apply(centres[i].0, centres[i].1), q[i]) * to_ref)
        .collect();
    let loo: Vec<Option<f32>> = (0..n)
        .map(|i| {
            if outside[i] {
                return None;
            }
            let (src, dst): (Vec<_>, Vec<_>) = (0..n)
                .filter(|&j| j != i && !outside[j])
                .map(|j| (centres[j], q[j]))
                .unzip();
            let enough = if info.motion == Motion::Translation {
                1
            } else {
                2
            };
            if src.len() < enough {
                return None;
            }
            let m = fit(info.motion, &src, &dst)?;
            Some(dist(m.apply(centres[i].0, centres[i].1), q[i]) * to_ref)
        })
        .collect();
    let firmware = v.firmware.check(img, &map);
    let model = v.model.as_ref().map(|m| m.check(img, &map));
    // The identity strings checked character by character: the firmware's, and the model's.
    let identity: Vec<_> = [
        Some((&v.firmware, &firmware)),
        v.model.as_ref().zip(model.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    // A bitonal scan's identity strings are held to the bitonal ratio as well, its typical
    // window floored higher.
    let (floor, max_ratio) = if img.is_bitonal() {
        (
            FirmwareCheck::BITONAL_FLOOR,
            thr.firmware_max_ratio.min(thr.bitonal_max_ratio),
        )
    } else {
        (FirmwareCheck::FLOOR, thr.firmware_max_ratio)
    };
    let ratio = |c: &FirmwareCheck| c.ratio_over(floor);
    let differs = |c: &FirmwareCheck| {
        c.worst > thr.firmware_max_residual
            || ratio(c) > max_ratio
            || c.worst - c.typical > thr.firmware_max_excess
    };
    let unverifiable =
        |c: &FirmwareCheck| c.worst.is_finite() && c.typical > thr.firmware_max_typical;
    // In a bitonal scan an identity string's NCC with the grey plate says little (its strokes
    // break up at the threshold): the character check, made against the plate thresholded
    // the same way, decides for it.
    let by_characters = |i: usize| img.is_bitonal() && identity.iter().any(|(r, _)| r.anchor == i);
    let (weakest, score) = ncc
        .iter()
        .copied()
        .enumerate()
        .filter(|&(i, s)| !s.is_nan() && !by_characters(i))
        .fold(
            (0, f32::INFINITY),
            |b, (i, s)| if s < b.1 { (i, s) } else { b },
        );
    let (s, rot) = (map.scale() * v.s0 / v.nominal, rotation_deg(&map));
    let inside_count = outside.iter().filter(|&&o| !o).count();
    let faded_count = faded.iter().filter(|&&f| f).count();
    let failure = if inside_count < MIN_ANCHORS_INSIDE.min(n) {
        Some(format!(
            "only {inside_count} of {n} anchors inside the export{} (at least {} needed)",
            if faded_count > 0 { " and legible" } else { "" },
            MIN_ANCHORS_INSIDE.min(n)
        ))
    } else if score < thr.anchor_min_ncc {
        Some(format!(
            "anchor {:?} NCC {score:.2} < {:.2}",
            v.anchors[weakest].name, thr.anchor_min_ncc
        ))
    } else if let Some(name) = identity
        .iter()
        .find(|(_, c)| c.cut_off)
        .map(|(r, _)| &v.anchors[r.anchor].name)
    {
        Some(format!(
            "anchor {name:?} (the device's identity string) runs off the export's edge, so it \
             cannot be verified: an export cropped or shifted past the frame?"
        ))
    } else if let Some((r, c)) = identity.iter().find(|(_, c)| c.ink < thr.identity_min_ink) {
        Some(format!(
            "anchor {:?} (the device's identity string) has faded in a bitonal scan: {:.0}% of \
             its ink is left ({:.0}% needed to verify it character by character): scan in grey",
            v.anchors[r.anchor].name,
            100.0 * c.ink,
            100.0 * thr.identity_min_ink
        ))
    } else if let Some((r, c)) = identity
        .iter()
        .find(|(_, c)| img.is_bitonal() && c.blur > thr.bitonal_max_blur)
    {
        Some(format!(
            "a bitonal scan whose strokes ran together: anchor {:?} fits the plate only blurred \
             by {:.1} px (at most {:.1}), where a 5 can read as a 6: scan in grey",
            v.anchors[r.anchor].name, c.blur, thr.bitonal_max_blur
        ))
    } else if let Some((r, c)) = identity
        .iter()
        .find(|(_, c)| unverifiable(c) && c.worst <= thr.firmware_max_residual)
    {
        Some(format!(
            "anchor {:?} (the device's identity string) is too degraded to verify character by \
             character (typical window residual {:.2} > {:.2}; JPEG, blur or a bitonal scan): \
             export losslessly or scan in grey",
            v.anchors[r.anchor].name, c.typical, thr.firmware_max_typical
        ))
    } else if differs(&firmware) {
        Some(format!(
            "firmware anchor {:?} differs from the template's {:?}: worst character window residual {:.2} \
             ({:.1}x and {:+.2} the typical window; limits {:.2}, {:.1}x and {:+.2}): another firmware version?",
            v.anchors[v.firmware.anchor].name,
            info.firmware_string,
            firmware.worst,
            ratio(&firmware),
            firmware.worst - firmware.typical,
            thr.firmware_max_residual,
            max_ratio,
            thr.firmware_max_excess
        ))
    } else if let Some((m, c)) = v
        .model
        .as_ref()
        .zip(model.as_ref())
        .filter(|(_, c)| differs(c))
    {
        Some(format!(
            "model anchor {:?} differs from the template's: worst character window residual {:.2} \
             ({:.1}x and {:+.2} the typical window; limits {:.2}, {:.1}x and {:+.2}): a look-alike device?",
            v.anchors[m.anchor].name,
            c.worst,
            ratio(c),
            c.worst - c.typical,
            thr.firmware_max_residual,
            max_ratio,
            thr.firmware_max_excess
        ))
    } else if s < info.scale[0] - SCALE_SLACK || s > info.scale[1] + SCALE_SLACK {
        Some(format!(
            "fitted scale {s:.3} outside {:.3}..{:.3}",
            info.scale[0], info.scale[1]
        ))
    } else if rot.abs() > info.rotation_deg + ROTATION_SLACK_DEG {
        Some(format!(
            "fitted rotation {rot:.2}° beyond ±{:.2}°",
            info.rotation_deg
        ))
    } else {
        None
    };
    Attempt {
        layout: v.layout,
        s0: v.s0,
        map,
        ncc,
        residual,
        loo,
        firmware,
        model,
        score: score.max(0.0),
        failure,
    }
}
