//! Text rasterisation that places glyphs the way PIL's `ImageDraw.text` does (the devices'
//! exports were drawn with it): FreeType-style 26.6 pen positions from unhinted advances plus
//! kerning, each glyph rasterised at an integer pixel position (`PIXEL(x) = (x + 32) >> 6`),
//! overlapping coverage combined with `max`, the anchor (`ls`, `ms`, `rs`) taken on the
//! baseline at the rounded advance width, and the colour blended in 8 bits like PIL's `BLEND`.
//!
//! Glyph bitmaps are hinted like FreeType's (see [`crate::hint`]) and rasterised once per face at
//! construction (printable ASCII plus any extra characters), so a [`Face`] is immutable and shared
//! across threads; a font that cannot be hinted is drawn from its unhinted outlines.

use std::collections::HashMap;

use ab_glyph::{Font, FontArc, GlyphId, PxScale, ScaleFont};
use image::RgbImage;

use crate::hint::{hinted_bitmaps, Bitmap};

#[derive(Debug, Clone)]
struct CachedGlyph {
    id: GlyphId,
    adv64: i32,
    bitmap: Option<Bitmap>,
}

/// A font at one pixel size, with its glyphs rasterised.
#[derive(Debug, Clone)]
pub struct Face {
    font: FontArc,
    scale: PxScale,
    glyphs: HashMap<char, CachedGlyph>,
}

/// Coverage (0..255) of a text, placed in image pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Left column of the mask in the image.
    pub x0: i32,
    /// Top row of the mask in the image.
    pub y0: i32,
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// `w * h` coverage values, row-major.
    pub cov: Vec<u8>,
}

/// FreeType's rounding of 26.6 fixed point to whole pixels.
fn pixel(x64: i32) -> i32 {
    (x64 + 32) >> 6
}

impl Face {
    /// The font file `bytes` at `size_px` pixels per em (PIL's `ImageFont.truetype(font, size)`),
    /// with glyphs for printable ASCII and `extra` rasterised.
    pub fn new(bytes: Vec<u8>, size_px: f32, extra: &str) -> Result<Self, ab_glyph::InvalidFont> {
        let mut chars: Vec<char> = (' '..='~').chain(extra.chars()).collect();
        chars.sort_unstable();
        chars.dedup();
        let hinted = hinted_bitmaps(&bytes, size_px, &chars);
        let font = FontArc::try_from_vec(bytes)?;
        let upem = font.units_per_em().unwrap_or(1000.0);
        let scale = PxScale::from(size_px * font.height_unscaled() / upem);
        let mut face = Face {
            font,
            scale,
            glyphs: HashMap::new(),
        };
        for c in chars {
            let mut g = face.rasterise(c);
            if let Some(b) = hinted.as_ref().and_then(|h| h.get(&c)) {
                g.bitmap = b.clone();
            }
            face.glyphs.insert(c, g);
        }
        Ok(face)
    }

    fn rasterise(&self, c: char) -> CachedGlyph {
        let scaled = self.font.as_scaled(self.scale);
        let id = self.font.glyph_id(c);
        let adv64 = (scaled.h_advance(id) * 64.0).round() as i32;
        let glyph = id.with_scale_and_position(self.scale, ab_glyph::point(0.0, 0.0));
        let bitmap = self.font.outline_glyph(glyph).map(|og| {
            let b = og.px_bounds();
            let (w, h) = (b.width() as usize, b.height() as usize);
            let mut cov = vec![0u8; w * h];
            og.draw(|x, y, c| {
                let i = y as usize * w + x as usize;
                if i < cov.len() {
                    cov[i] = (c.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            });
            Bitmap {
                left: b.min.x as i32,
                top: b.min.y as i32,
                w,
                h,
                cov,
            }
        });
        CachedGlyph { id, adv64, bitmap }
    }

    fn glyph(&self, c: char) -> std::borrow::Cow<'_, CachedGlyph> {
        match self.glyphs.get(&c) {
            Some(g) => std::borrow::Cow::Borrowed(g),
            None => std::borrow::Cow::Owned(self.rasterise(c)),
        }
    }

    /// Pen positions (26.6) of each glyph and the total advance.
    fn layout(&self, text: &str) -> (Vec<(i32, std::borrow::Cow<'_, CachedGlyph>)>, i32) {
        let scaled = self.font.as_scaled(self.scale);
        let mut pen = 0i32;
        let mut prev: Option<GlyphId> = None;
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            let g = self.glyph(c);
            if let Some(p) = prev {
                pen += (scaled.kern(p, g.id) * 64.0).round() as i32;
            }
            prev = Some(g.id);
            let adv = g.adv64;
            out.push((pen, g));
            pen += adv;
        }
        (out, pen)
    }

    /// Advance width of `text` in pixels (PIL's `getlength`).
    pub fn advance(&self, text: &str) -> f32 {
        self.layout(text).1 as f32 / 64.0
    }

    /// The coverage of `text` drawn with PIL anchor `anchor` (`ls`, `ms`, `rs`) at `origin`.
    pub fn mask(&self, text: &str, origin: [f32; 2], anchor: &str) -> Mask {
        let (glyphs, total) = self.layout(text);
        let anchor_px = match anchor.as_bytes().first() {
            Some(b'm') => pixel(total / 2),
            Some(b'r') => pixel(total),
            _ => 0,
        };
        let (ix, iy) = (origin[0].trunc() as i32, origin[1].trunc() as i32);
        let fx = (origin[0].fract() * 64.0).round() as i32;
        let fy = (origin[1].fract() * 64.0).round() as i32;
        let base_y = iy - pixel(-fy);
        let placed: Vec<(i32, &Bitmap)> = glyphs
            .iter()
            .filter_map(|(pen, g)| {
                g.bitmap
                    .as_ref()
                    .map(|b| (ix + pixel(fx + pen) - anchor_px, b))
            })
            .collect();
        if placed.is_empty() {
            return Mask {
                x0: ix,
                y0: base_y,
                w: 0,
                h: 0,
                cov: Vec::new(),
            };
        }
        let x0 = placed.iter().map(|(x, b)| x + b.left).min().unwrap_or(0);
        let x1 = placed
            .iter()
            .map(|(x, b)| x + b.left + b.w as i32)
            .max()
            .unwrap_or(0);
        let y0 = base_y + placed.iter().map(|(_, b)| b.top).min().unwrap_or(0);
        let y1 = base_y
            + placed
                .iter()
                .map(|(_, b)| b.top + b.h as i32)
                .max()
                .unwrap_or(0);
        let (w, h) = ((x1 - x0) as usize, (y1 - y0) as usize);
        let mut cov = vec![0u8; w * h];
        for (x, b) in placed {
            let ox = (x + b.left - x0) as usize;
            let oy = (base_y + b.top - y0) as usize;
            for r in 0..b.h {
                let dst = &mut cov[(oy + r) * w + ox..(oy + r) * w + ox + b.w];
                for (d, s) in dst.iter_mut().zip(&b.cov[r * b.w..(r + 1) * b.w]) {
                    *d = (*d).max(*s);
                }
            }
        }
        Mask { x0, y0, w, h, cov }
    }
}

/// PIL's 8-bit blend: `in1 * (255 - m) + in2 * m`, rounded.
#[inline]
fn blend8(bg: u8, fg: u8, m: u8) -> u8 {
    let t = u32::from(bg) * (255 - u32::from(m)) + u32::from(fg) * u32::from(m) + 128;
    ((t + (t >> 8)) >> 8) as u8
}

/// Blends `mask` in `color` onto `img`, whose top-left pixel is at `(ox, oy)` of the frame the
/// mask was placed in. Pixels outside `img` are clipped.
pub fn blend(img: &mut RgbImage, ox: i32, oy: i32, mask: &Mask, color: [u8; 3]) {
    let (iw, ih) = (img.width() as i32, img.height() as i32);
    for r in 0..mask.h {
        let y = mask.y0 + r as i32 - oy;
        if y < 0 || y >= ih {
            continue;
        }
        for c in 0..mask.w {
            let x = mask.x0 + c as i32 - ox;
            let m = mask.cov[r * mask.w + c];
            if m == 0 || x < 0 || x >= iw {
                continue;
            }
            let p = img.get_pixel_mut(x as u32, y as u32);
            for k in 0..3 {
                p.0[k] = blend8(p.0[k], color[k], m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_rounds_half_up() {
        assert_eq!(pixel(31), 0);
        assert_eq!(pixel(32), 1);
        assert_eq!(pixel(-32), 0);
        assert_eq!(pixel(-33), -1);
    }

    #[test]
    fn blend_matches_pil_endpoints() {
        assert_eq!(blend8(10, 200, 0), 10);
        assert_eq!(blend8(10, 200, 255), 200);
        assert_eq!(blend8(0, 255, 128), 128);
    }
}
