//! A float grey image (0.0 black … 1.0 white), row-major. Every export is converted once.

use image::DynamicImage;

/// A grey image with `f32` pixels in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayF32 {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` pixels, row-major.
    pub data: Vec<f32>,
}

impl GrayF32 {
    /// Converts any decoded image (RGB, grey, palette already expanded) with ITU-R 601 luma.
    pub fn from_image(img: &DynamicImage) -> Self {
        let luma = img.to_luma8();
        let (width, height) = luma.dimensions();
        let data = luma
            .as_raw()
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect();
        Self {
            width,
            height,
            data,
        }
    }

    /// A constant image.
    pub fn filled(width: u32, height: u32, value: f32) -> Self {
        Self {
            width,
            height,
            data: vec![value; (width * height) as usize],
        }
    }

    /// Pixel at integer coordinates, clamped to the border.
    #[inline]
    pub fn at(&self, x: i64, y: i64) -> f32 {
        let x = x.clamp(0, i64::from(self.width) - 1) as usize;
        let y = y.clamp(0, i64::from(self.height) - 1) as usize;
        self.data[y * self.width as usize + x]
    }

    /// Bilinear sample at real coordinates (pixel centres at integer + 0.5), border clamped.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x - 0.5, y - 0.5);
        let (x0, y0) = (fx.floor(), fy.floor());
        let (ax, ay) = (fx - x0, fy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let top = self.at(x0, y0) * (1.0 - ax) + self.at(x0 + 1, y0) * ax;
        let bottom = self.at(x0, y0 + 1) * (1.0 - ax) + self.at(x0 + 1, y0 + 1) * ax;
        top * (1.0 - ay) + bottom * ay
    }
}
