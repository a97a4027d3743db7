//! Decoding an export's bytes into a grey image, with the pixel count capped *before* the pixels
//! are decoded (a decompression bomb is refused from its header) and every failure a
//! [`Refusal`] with a stable code.
//!
//! Codes: `empty_file`, `not_an_image`, `unsupported_format`, `corrupt_image` (bad header or
//! truncated data), `too_large` (dimensions or decoder allocation over the limits).

use std::io::Cursor;

use image::{ImageError, ImageFormat, ImageReader, Limits};
use vision::GrayF32;

use super::recognizer::Refusal;

/// Rejection code: zero-byte file.
pub const EMPTY_FILE: &str = "empty_file";
/// Rejection code: not an image at all.
pub const NOT_AN_IMAGE: &str = "not_an_image";
/// Rejection code: an image format the agent does not read.
pub const UNSUPPORTED_FORMAT: &str = "unsupported_format";
/// Rejection code: the header or the pixel data cannot be decoded (corrupt or truncated).
pub const CORRUPT_IMAGE: &str = "corrupt_image";
/// Rejection code: image dimensions or decoder memory over the limits.
pub const TOO_LARGE: &str = "too_large";

/// Largest width or height accepted, whatever the pixel budget.
pub const MAX_SIDE: u32 = 16_384;

/// Reads only the header of `bytes`: its format and dimensions, refused when the file is empty,
/// not an image, of a format the agent does not read, corrupt, or larger than `max_pixels`
/// pixels or [`MAX_SIDE`] a side. The pixels are not decoded (a decompression bomb is refused
/// here, cheaply).
pub fn header(bytes: &[u8], max_pixels: u64) -> Result<(ImageFormat, u32, u32), Refusal> {
    if bytes.is_empty() {
        return Err(Refusal::new(EMPTY_FILE, "file is empty (0 bytes)"));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        Refusal::new(
            NOT_AN_IMAGE,
            "not an image: no PNG, JPEG or BMP signature at the start of the file",
        )
    })?;
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| classify(e, format, "header"))?;
    let pixels = u64::from(w) * u64::from(h);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || pixels > max_pixels {
        return Err(Refusal::new(
            TOO_LARGE,
            format!("image is {w}x{h} ({pixels} pixels); at most {max_pixels} pixels and {MAX_SIDE} per side are read"),
        ));
    }
    Ok((format, w, h))
}

/// Decodes `bytes` into a grey image of at most `max_pixels` pixels ([`header`] first).
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<GrayF32, Refusal> {
    let (format, _, _) = header(bytes, max_pixels)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // RGBA16 is the widest layout a decoder allocates for these formats: 8 bytes a pixel, twice.
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 20));
    let mut r = ImageReader::with_format(Cursor::new(bytes), format);
    r.limits(limits);
    let img = r.decode().map_err(|e| classify(e, format, "pixels"))?;
    Ok(GrayF32::from_image(&img))
}

fn classify(e: ImageError, format: ImageFormat, what: &str) -> Refusal {
    match e {
        ImageError::Limits(_) => {
            Refusal::new(TOO_LARGE, format!("decoding the {format:?} {what}: {e}"))
        }
        ImageError::Unsupported(_) => Refusal::new(
            UNSUPPORTED_FORMAT,
            format!("{format:?} images of this kind are not read (PNG, JPEG and BMP are): {e}"),
        ),
        e => Refusal::new(
            CORRUPT_IMAGE,
            format!("cannot decode the {format:?} {what} (corrupt or truncated): {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::GrayImage::from_pixel(w, h, image::Luma([200]))
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn bad_input_gets_a_code() {
        let code = |b: &[u8], max| decode(b, max).unwrap_err().code;
        assert_eq!(code(b"", 1 << 20), EMPTY_FILE);
        assert_eq!(code(b"hello, not an image", 1 << 20), NOT_AN_IMAGE);
        let p = png(64, 48);
        assert_eq!(code(&p[..20], 1 << 20), CORRUPT_IMAGE);
        assert_eq!(code(&p[..p.len() - 20], 1 << 20), CORRUPT_IMAGE);
        assert_eq!(code(&p, 1000), TOO_LARGE);
        let g = decode(&p, 1 << 20).unwrap();
        assert_eq!((g.width, g.height), (64, 48));
        assert!((g.data[0] - 200.0 / 255.0).abs() < 1e-6);
    }
}
