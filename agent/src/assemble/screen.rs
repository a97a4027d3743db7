//! Cheap checks before an export reaches the recognizer, so bad input is refused with a clear
//! code before anything is decoded: empty files, files over the size limit, files that are not
//! an image, and images whose header promises more pixels than `recognize.max_pixels`
//! (decompression bombs: the header is read, the pixels are not).
//!
//! Codes: `empty_file`, `too_large`, `not_an_image`, `unsupported_format`, `corrupt_image`.

use super::build::Refusal;
use crate::ingest::Taken;

pub use crate::recognize::input::{
    CORRUPT_IMAGE, EMPTY_FILE, NOT_AN_IMAGE, TOO_LARGE, UNSUPPORTED_FORMAT,
};

/// Checks `taken` against the limits; `Ok` with the image dimensions when it may be decoded.
pub fn screen(taken: &Taken, max_file_bytes: u64, max_pixels: u64) -> Result<(u32, u32), Refusal> {
    let Some(bytes) = &taken.bytes else {
        return Err(Refusal::new(
            TOO_LARGE,
            format!(
                "file is {} bytes, over ingest.max_file_bytes = {max_file_bytes}",
                taken.size
            ),
        ));
    };
    let (_, w, h) = crate::recognize::input::header(bytes, max_pixels)?;
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::PathBuf;

    fn taken(bytes: Option<Vec<u8>>) -> Taken {
        Taken {
            path: PathBuf::from("x"),
            file_name: "x".into(),
            sha256: String::new(),
            size: bytes.as_ref().map_or(1 << 30, |b| b.len() as u64),
            bytes,
            captured_at: chrono::Utc::now(),
        }
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::GrayImage::new(w, h);
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    fn code(t: &Taken) -> String {
        screen(t, 1 << 20, 10_000).unwrap_err().code
    }

    #[test]
    fn refuses_bad_input_with_codes() {
        assert_eq!(code(&taken(None)), TOO_LARGE);
        assert_eq!(code(&taken(Some(vec![]))), EMPTY_FILE);
        assert_eq!(
            code(&taken(Some(b"hello, not an image".to_vec()))),
            NOT_AN_IMAGE
        );
        assert_eq!(
            code(&taken(Some(b"GIF89a\x01\x00\x01\x00".to_vec()))),
            UNSUPPORTED_FORMAT
        );
        let p = png(200, 100);
        assert_eq!(code(&taken(Some(p[..12].to_vec()))), CORRUPT_IMAGE);
        assert_eq!(code(&taken(Some(p))), TOO_LARGE);
        assert_eq!(
            screen(&taken(Some(png(100, 100))), 1 << 20, 10_000),
            Ok((100, 100))
        );
    }

    #[test]
    fn a_bomb_header_is_refused_without_decoding() {
        // A valid PNG header claiming 100000 x 100000 pixels, and no pixel data at all.
        let mut p = png(1, 1);
        p[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        p[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32fast::hash(&p[12..29]);
        p[29..33].copy_from_slice(&crc.to_be_bytes());
        let r = screen(&taken(Some(p)), 1 << 20, 10_000);
        assert_eq!(r.unwrap_err().code, TOO_LARGE);
    }
}
