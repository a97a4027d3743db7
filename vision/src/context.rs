//! Context crops for reviewers: the region of an export around a field's box, as the export
//! shows it (no contrast normalisation), so a person sees the labels and neighbours that tell
//! which eye and which measurement the value is, and where the box sits.

use crate::affine::Affine;
use crate::gray::GrayF32;

/// Widest context crop, in pixels.
pub const CONTEXT_MAX_W: u32 = 480;

/// A context crop: 8-bit grey pixels (row-major) and the field's box inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// `width * height` grey pixels.
    pub pixels: Vec<u8>,
    /// The field's box `[x, y, w, h]` in the crop's pixels.
    pub bbox: [u32; 4],
}

/// The region around `bbox` (reference frame `[x, y, w, h]`) of a `frame_w x frame_h`
/// reference frame, sampled from `img` through `map`: the box plus 2.5 box heights above and
/// below and the larger of 0.75 box widths and 6 box heights to each side, clipped to the
/// frame, at one pixel per reference pixel, scaled down to at most [`CONTEXT_MAX_W`] wide.
pub fn context_crop(
    img: &GrayF32,
    map: &Affine,
    bbox: [f32; 4],
    frame_w: u32,
    frame_h: u32,
) -> Context {
    let [x, y, w, h] = bbox;
    let (mx, my) = ((0.75 * w).max(6.0 * h), 2.5 * h);
    let x0 = (x - mx).max(0.0).floor();
    let y0 = (y - my).max(0.0).floor();
    let x1 = (x + w + mx).min(frame_w as f32).ceil().max(x0 + 1.0);
    let y1 = (y + h + my).min(frame_h as f32).ceil().max(y0 + 1.0);
    let scale = (CONTEXT_MAX_W as f32 / (x1 - x0)).min(1.0);
    let width = (((x1 - x0) * scale).round() as u32).max(1);
    let height = (((y1 - y0) * scale).round() as u32).max(1);
    let mut pixels = Vec::with_capacity((width * height) as usize);
    for oy in 0..height {
        for ox in 0..width {
            let rx = x0 + (ox as f32 + 0.5) / scale;
            let ry = y0 + (oy as f32 + 0.5) / scale;
            let (ix, iy) = map.apply(rx, ry);
            pixels.push((img.sample(ix, iy).clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let at =
        |v: f32, origin: f32, max: u32| (((v - origin) * scale).round().max(0.0) as u32).min(max);
    let bx = at(x, x0, width - 1);
    let by = at(y, y0, height - 1);
    let bbox = [
        bx,
        by,
        at(x + w, x0, width).saturating_sub(bx).max(1),
        at(y + h, y0, height).saturating_sub(by).max(1),
    ];
    Context {
        width,
        height,
        pixels,
        bbox,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_sits_where_the_field_is_and_the_crop_stays_in_the_frame() {
        let mut img = GrayF32::filled(800, 600, 1.0);
        for yy in 300..320 {
            for xx in 400..480 {
                img.data[yy * 800 + xx] = 0.0;
            }
        }
        let c = context_crop(
            &img,
            &Affine::IDENTITY,
            [400.0, 300.0, 80.0, 20.0],
            800,
            600,
        );
        // 120 px each side (6 heights), 50 px above and below: 320 x 120 at full scale.
        assert_eq!((c.width, c.height), (320, 120));
        assert_eq!(c.bbox, [120, 50, 80, 20]);
        let px = |x: u32, y: u32| c.pixels[(y * c.width + x) as usize];
        assert_eq!(px(160, 60), 0, "the field's ink");
        assert_eq!(px(10, 10), 255, "around it");

        // At the frame's corner: clipped, the box still inside the crop.
        let c = context_crop(&img, &Affine::IDENTITY, [0.0, 0.0, 700.0, 30.0], 800, 600);
        assert!(c.width <= CONTEXT_MAX_W);
        let [bx, by, bw, bh] = c.bbox;
        assert!(bx + bw <= c.width && by + bh <= c.height, "{c:?}");
        assert_eq!((bx, by), (0, 0));
    }
}
