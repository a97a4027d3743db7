//! Least-squares fit of the map from matched point pairs (reference → image), restricted to the
//! motions a layout's variation allows: translation only, scale + translation, or a similarity
//! (scale, rotation, translation). With a single pair every model degrades to a translation.

use crate::affine::Affine;

/// Which transforms a layout's exports may undergo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    /// Shift only.
    Translation,
    /// Uniform scale and shift.
    ScaleTranslation,
    /// Uniform scale, rotation and shift.
    Similarity,
}

/// Fits `dst ≈ map(src)`. Returns `None` without pairs, or when the points coincide and a scale
/// cannot be fitted (then the caller should fall back to [`Motion::Translation`]).
pub fn fit(motion: Motion, src: &[(f32, f32)], dst: &[(f32, f32)]) -> Option<Affine> {
    let n = src.len().min(dst.len());
    if n == 0 {
        return None;
    }
    let mean = |pts: &[(f32, f32)]| {
        let (sx, sy) = pts[..n].iter().fold((0.0f64, 0.0f64), |(a, b), p| {
            (a + f64::from(p.0), b + f64::from(p.1))
        });
        (sx / n as f64, sy / n as f64)
    };
    let (ps, qs) = (mean(src), mean(dst));
    let motion = if n == 1 { Motion::Translation } else { motion };
    let (mut sxx, mut dotp, mut cross) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let (px, py) = (f64::from(src[i].0) - ps.0, f64::from(src[i].1) - ps.1);
        let (qx, qy) = (f64::from(dst[i].0) - qs.0, f64::from(dst[i].1) - qs.1);
        sxx += px * px + py * py;
        dotp += px * qx + py * qy;
        cross += px * qy - py * qx;
    }
    let (a, c) = match motion {
        Motion::Translation => (1.0, 0.0),
        _ if sxx < 1e-9 => return None,
        Motion::ScaleTranslation => (dotp / sxx, 0.0),
        Motion::Similarity => (dotp / sxx, cross / sxx),
    };
    // x' = a·x − c·y + tx, y' = c·x + a·y + ty, with the centroids mapping onto each other.
    let tx = qs.0 - (a * ps.0 - c * ps.1);
    let ty = qs.1 - (c * ps.0 + a * ps.1);
    Some(Affine {
        a: a as f32,
        b: -c as f32,
        c: c as f32,
        d: a as f32,
        tx: tx as f32,
        ty: ty as f32,
    })
}

/// Rotation angle of a similarity map, degrees.
pub fn rotation_deg(map: &Affine) -> f32 {
    map.c.atan2(map.a).to_degrees()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_similarity_exactly() {
        let truth = Affine::similarity(1.02, 0.02, -7.5, 4.25);
        let src = [(10.0, 20.0), (400.0, 35.0), (120.0, 500.0), (700.0, 650.0)];
        let dst: Vec<(f32, f32)> = src.iter().map(|&(x, y)| truth.apply(x, y)).collect();
        let m = fit(Motion::Similarity, &src, &dst).unwrap();
        for (p, q) in src.iter().zip(&dst) {
            let (x, y) = m.apply(p.0, p.1);
            assert!((x - q.0).abs() < 1e-3 && (y - q.1).abs() < 1e-3);
        }
        assert!((rotation_deg(&m) - 0.02f32.to_degrees()).abs() < 1e-3);
        let t = fit(Motion::Translation, &src[..1], &dst[..1]).unwrap();
        assert_eq!((t.a, t.b), (1.0, 0.0));
    }
}
