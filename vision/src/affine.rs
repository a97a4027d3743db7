//! A similarity/affine map from a template's reference frame to an export's pixel frame:
//! `x' = a·x + b·y + tx`, `y' = c·x + d·y + ty`.

/// Reference frame → image frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// x' coefficient of x.
    pub a: f32,
    /// x' coefficient of y.
    pub b: f32,
    /// y' coefficient of x.
    pub c: f32,
    /// y' coefficient of y.
    pub d: f32,
    /// x' offset.
    pub tx: f32,
    /// y' offset.
    pub ty: f32,
}

impl Affine {
    /// The identity map.
    pub const IDENTITY: Affine = Affine {
        a: 1.0,
        b: 0.0,
        c: 0.0,
        d: 1.0,
        tx: 0.0,
        ty: 0.0,
    };

    /// A similarity: scale `s`, rotation `theta` (radians, counter-clockwise in image axes
    /// with y down means clockwise on screen), then translation.
    pub fn similarity(s: f32, theta: f32, tx: f32, ty: f32) -> Self {
        let (sin, cos) = theta.sin_cos();
        Affine {
            a: s * cos,
            b: -s * sin,
            c: s * sin,
            d: s * cos,
            tx,
            ty,
        }
    }

    /// A pure translation.
    pub fn translation(tx: f32, ty: f32) -> Self {
        Affine {
            tx,
            ty,
            ..Self::IDENTITY
        }
    }

    /// Maps a reference-frame point to the image.
    #[inline]
    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (
            self.a * x + self.b * y + self.tx,
            self.c * x + self.d * y + self.ty,
        )
    }

    /// The mean linear scale (√|det|).
    pub fn scale(&self) -> f32 {
        (self.a * self.d - self.b * self.c).abs().sqrt()
    }

    /// The map back from the image to the reference frame; `None` when `self` is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let det = self.a * self.d - self.b * self.c;
        if det.abs() < 1e-12 {
            return None;
        }
        Some(Affine {
            a: self.d / det,
            b: -self.b / det,
            c: -self.c / det,
            d: self.a / det,
            tx: (self.b * self.ty - self.d * self.tx) / det,
            ty: (self.c * self.tx - self.a * self.ty) / det,
        })
    }

    /// `self` after `first`: maps `p` to `self.apply(first.apply(p))`.
    pub fn compose(&self, first: &Affine) -> Affine {
        Affine {
            a: self.a * first.a + self.b * first.c,
            b: self.a * first.b + self.b * first.d,
            c: self.c * first.a + self.d * first.c,
            d: self.c * first.b + self.d * first.d,
            tx: self.a * first.tx + self.b * first.ty + self.tx,
            ty: self.c * first.tx + self.d * first.ty + self.ty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_applies_first_then_self() {
        let t = Affine::translation(3.0, -2.0);
        let s = Affine::similarity(2.0, 0.0, 0.0, 0.0);
        let (x, y) = s.compose(&t).apply(1.0, 1.0);
        assert!((x - 8.0).abs() < 1e-6 && (y + 2.0).abs() < 1e-6);
    }

    #[test]
    fn inverse_undoes_the_map() {
        let m = Affine::similarity(1.03, 0.02, 7.5, -3.25);
        let (x, y) = m
            .inverse()
            .unwrap()
            .apply(m.apply(120.0, 45.0).0, m.apply(120.0, 45.0).1);
        assert!(
            (x - 120.0).abs() < 1e-3 && (y - 45.0).abs() < 1e-3,
            "{x} {y}"
        );
        assert!(Affine::similarity(0.0, 0.0, 1.0, 1.0).inverse().is_none());
    }
}
