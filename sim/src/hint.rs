//! Hinted glyph bitmaps, as FreeType draws them with `FT_LOAD_DEFAULT` (what PIL uses): the
//! font's own hinting (TrueType bytecode in the v40 "smooth" mode, or the PostScript hinter),
//! falling back to the auto-hinter for fonts without instructions, grid-fitting mostly the
//! vertical direction. Outlines come from `skrifa`, coverage from `ab_glyph_rasterizer` (exact
//! area coverage, like FreeType's smooth rasteriser) over the outline's pixel-rounded control box.

use std::collections::HashMap;

use ab_glyph_rasterizer::{point, Point, Rasterizer};
use skrifa::instance::{LocationRef, Size};
use skrifa::outline::{DrawSettings, HintingInstance, HintingOptions, OutlinePen};
use skrifa::{FontRef, GlyphId, MetadataProvider};

/// A glyph's coverage, relative to its pen position on the baseline (y down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// Column of the left edge relative to the pen.
    pub left: i32,
    /// Row of the top edge relative to the baseline (negative above it).
    pub top: i32,
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// `w * h` coverage values 0..255.
    pub cov: Vec<u8>,
}

enum Seg {
    Line(Point, Point),
    Quad(Point, Point, Point),
    Cubic(Point, Point, Point, Point),
}

#[derive(Default)]
struct Collect {
    segs: Vec<Seg>,
    start: Option<Point>,
    cur: Option<Point>,
}

impl Collect {
    fn to(&mut self, p: Point) {
        self.cur = Some(p);
    }
}

impl OutlinePen for Collect {
    fn move_to(&mut self, x: f32, y: f32) {
        self.close();
        self.start = Some(point(x, y));
        self.cur = self.start;
    }
    fn line_to(&mut self, x: f32, y: f32) {
        let p = point(x, y);
        if let Some(c) = self.cur {
            self.segs.push(Seg::Line(c, p));
        }
        self.to(p);
    }
    fn quad_to(&mut self, cx: f32, cy: f32, x: f32, y: f32) {
        let p = point(x, y);
        if let Some(c) = self.cur {
            self.segs.push(Seg::Quad(c, point(cx, cy), p));
        }
        self.to(p);
    }
    fn curve_to(&mut self, cx0: f32, cy0: f32, cx1: f32, cy1: f32, x: f32, y: f32) {
        let p = point(x, y);
        if let Some(c) = self.cur {
            self.segs
                .push(Seg::Cubic(c, point(cx0, cy0), point(cx1, cy1), p));
        }
        self.to(p);
    }
    fn close(&mut self) {
        if let (Some(c), Some(s)) = (self.cur, self.start) {
            if c != s {
                self.segs.push(Seg::Line(c, s));
            }
        }
        self.cur = self.start;
    }
}

impl Collect {
    fn rasterise(mut self) -> Option<Bitmap> {
        self.close();
        let pts = self.segs.iter().flat_map(|s| match s {
            Seg::Line(a, b) => vec![*a, *b],
            Seg::Quad(a, b, c) => vec![*a, *b, *c],
            Seg::Cubic(a, b, c, d) => vec![*a, *b, *c, *d],
        });
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in pts {
            (x0, y0, x1, y1) = (x0.min(p.x), y0.min(p.y), x1.max(p.x), y1.max(p.y));
        }
        if self.segs.is_empty() || x1 <= x0 || y1 <= y0 {
            return None;
        }
        let (left, right, bottom, top) = (x0.floor(), x1.ceil(), y0.floor(), y1.ceil());
        let (w, h) = ((right - left) as usize, (top - bottom) as usize);
        let mut r = Rasterizer::new(w, h);
        // Font space is y up; bitmaps are y down from the control box's top.
        let t = |p: &Point| point(p.x - left, top - p.y);
        for s in &self.segs {
            match s {
                Seg::Line(a, b) => r.draw_line(t(a), t(b)),
                Seg::Quad(a, b, c) => r.draw_quad(t(a), t(b), t(c)),
                Seg::Cubic(a, b, c, d) => r.draw_cubic(t(a), t(b), t(c), t(d)),
            }
        }
        let mut cov = vec![0u8; w * h];
        r.for_each_pixel(|i, a| cov[i] = (a.clamp(0.0, 1.0) * 255.0).round() as u8);
        Some(Bitmap {
            left: left as i32,
            top: -(top as i32),
            w,
            h,
            cov,
        })
    }
}

/// Hinted bitmaps of `chars` from font file `bytes` at `size_px` pixels per em; `None` when the
/// font cannot be hinted (the caller then rasterises unhinted outlines).
pub fn hinted_bitmaps(
    bytes: &[u8],
    size_px: f32,
    chars: &[char],
) -> Option<HashMap<char, Option<Bitmap>>> {
    let font = FontRef::new(bytes).ok()?;
    let outlines = font.outline_glyphs();
    let options = HintingOptions::default();
    let instance = HintingInstance::new(
        &outlines,
        Size::new(size_px),
        LocationRef::default(),
        options,
    )
    .ok()?;
    let charmap = font.charmap();
    let mut out = HashMap::with_capacity(chars.len());
    for &c in chars {
        let gid = charmap.map(c).unwrap_or(GlyphId::NOTDEF);
        let bitmap = outlines.get(gid).and_then(|g| {
            let mut pen = Collect::default();
            g.draw(DrawSettings::hinted(&instance, false), &mut pen)
                .ok()?;
            pen.rasterise()
        });
        out.insert(c, bitmap);
    }
    Some(out)
}
