//! Writing exports the way the devices do: PNG (RGB, 8-bit gray, 1-bit bitonal or 8-bit
//! indexed for the tomographer's scan modes), JPEG (the bytes of the pipeline's own compression,
//! so the file decodes to exactly the rendered image) and uncompressed BMP.

use image::codecs::bmp::BmpEncoder;
use image::{DynamicImage, ImageEncoder};

use crate::degrade::ScanMode;
use crate::render::{Export, SimError};

/// JPEG quality used when a JPEG template's variation names none.
pub const DEFAULT_JPEG_QUALITY: u8 = 90;

/// The export as the bytes of its file (`export.format`).
pub fn encode(export: &Export) -> Result<Vec<u8>, SimError> {
    let err = |e: &dyn std::fmt::Display| SimError::Encode {
        template: export.template.clone(),
        problem: e.to_string(),
    };
    let img = &export.image;
    let mut buf = Vec::new();
    match export.format.as_str() {
        "jpg" => {
            if let Some(bytes) = &export.jpeg {
                return Ok(bytes.clone());
            }
            return crate::filters::jpeg_bytes(img, DEFAULT_JPEG_QUALITY).map_err(|e| err(&e));
        }
        "bmp" => {
            let enc = BmpEncoder::new(&mut buf);
            match img {
                DynamicImage::ImageLuma8(g) => enc.write_image(
                    g.as_raw(),
                    g.width(),
                    g.height(),
                    image::ExtendedColorType::L8,
                ),
                _ => {
                    let rgb = img.to_rgb8();
                    enc.write_image(
                        rgb.as_raw(),
                        rgb.width(),
                        rgb.height(),
                        image::ExtendedColorType::Rgb8,
                    )
                }
            }
            .map_err(|e| err(&e))?;
        }
        _ => png_bytes(img, export.mode, &mut buf).map_err(|e| err(&e))?,
    }
    Ok(buf)
}

fn png_bytes(
    img: &DynamicImage,
    mode: ScanMode,
    buf: &mut Vec<u8>,
) -> Result<(), png::EncodingError> {
    let (w, h) = (img.width(), img.height());
    let mut enc = png::Encoder::new(&mut *buf, w, h);
    match (mode, img) {
        (ScanMode::Bitonal, DynamicImage::ImageLuma8(g)) => {
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::One);
            let stride = (w as usize).div_ceil(8);
            let mut data = vec![0u8; stride * h as usize];
            for (x, y, p) in g.enumerate_pixels() {
                if p.0[0] >= 128 {
                    data[y as usize * stride + x as usize / 8] |= 0x80 >> (x % 8);
                }
            }
            enc.write_header()?.write_image_data(&data)
        }
        (ScanMode::Palette, _) => {
            let rgb = img.to_rgb8();
            let mut palette: Vec<[u8; 3]> = Vec::new();
            let mut index = std::collections::HashMap::new();
            let mut data = Vec::with_capacity((w * h) as usize);
            for p in rgb.pixels() {
                let next = palette.len();
                let i = *index.entry(p.0).or_insert_with(|| {
                    palette.push(p.0);
                    next
                });
                data.push(i.min(255) as u8);
            }
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_palette(palette.concat());
            enc.write_header()?.write_image_data(&data)
        }
        (_, DynamicImage::ImageLuma8(g)) => {
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header()?.write_image_data(g.as_raw())
        }
        _ => {
            let rgb = img.to_rgb8();
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header()?.write_image_data(rgb.as_raw())
        }
    }
}
