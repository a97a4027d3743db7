//! Helpers shared by the recognition tests: where the shared samples are, their labels, and
//! image edits that make foreign exports.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use record::TemplateSet;
use vision::GrayF32;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_owned()
}

/// The shared sample exports for `test` ([`sim::samples::required`]): `None` only when the
/// samples are missing and `EXAMLINK_ALLOW_SKIP=1` (the skip is printed); otherwise a missing
/// folder fails the test.
pub fn samples_dir(test: &str) -> Option<PathBuf> {
    sim::samples::required(test)
}

/// The committed templates.
pub fn templates() -> TemplateSet {
    TemplateSet::load_dir(&root().join("templates")).expect("committed templates load")
}

/// A sample's label.
#[derive(Debug, serde::Deserialize)]
pub struct Label {
    pub device_type: Option<String>,
    pub firmware: Option<String>,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Label {
    /// `<device>_<firmware>`, the template id it should match.
    pub fn layout(&self) -> String {
        format!(
            "{}_{}",
            self.device_type.as_deref().unwrap_or("?"),
            self.firmware.as_deref().unwrap_or("?")
        )
    }
}

/// Every labelled sample: image path, label.
pub fn samples(dir: &Path) -> Vec<(PathBuf, Label)> {
    sim::samples::labelled_exports(dir)
        .expect("samples readable")
        .into_iter()
        .map(|(img, label)| {
            let l: Label = serde_json::from_slice(&std::fs::read(&label).unwrap()).unwrap();
            (img, l)
        })
        .collect()
}

/// Decodes a sample.
pub fn gray(path: &Path) -> GrayF32 {
    agent::recognize::input::decode(&std::fs::read(path).unwrap(), 1 << 26).expect("sample decodes")
}

/// Encodes a grey image as PNG bytes.
pub fn png(img: &GrayF32) -> Vec<u8> {
    let buf =
        image::GrayImage::from_raw(img.width, img.height, vision::crop::to_u8(&img.data)).unwrap();
    let mut out = Vec::new();
    buf.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// Ink column runs (characters) inside the image rectangle `r = [x, y, w, h]`: `(x0, x1)`.
pub fn glyph_runs(img: &GrayF32, r: [u32; 4]) -> Vec<(u32, u32)> {
    let [x, y, w, h] = r;
    let mut vals: Vec<f32> = (y..y + h)
        .flat_map(|yy| (x..x + w).map(move |xx| (xx, yy)))
        .map(|(xx, yy)| img.at(xx.into(), yy.into()))
        .collect();
    vals.sort_by(f32::total_cmp);
    let bg = vals[vals.len() / 2];
    let ink_col = |xx: u32| (y..y + h).any(|yy| (img.at(xx.into(), yy.into()) - bg).abs() > 0.25);
    let mut runs = Vec::new();
    let mut start = None;
    for xx in x..x + w {
        match (ink_col(xx), start) {
            (true, None) => start = Some(xx),
            (false, Some(s)) => {
                runs.push((s, xx));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, x + w));
    }
    runs
}

/// Replaces the glyph run `to` by a copy of the run `from` (rows `y..y+h`), clearing `to` first.
pub fn copy_glyph(img: &mut GrayF32, y: u32, h: u32, from: (u32, u32), to: (u32, u32)) {
    let bg = img.at(to.0 as i64 - 1, (y + h / 2) as i64);
    let w = img.width as usize;
    for yy in y..y + h {
        for xx in to.0..to.1 {
            img.data[yy as usize * w + xx as usize] = bg;
        }
        for dx in 0..(from.1 - from.0) {
            let v = img.at((from.0 + dx) as i64, yy as i64);
            let tx = (to.0 + dx) as usize;
            if tx < w {
                img.data[yy as usize * w + tx] = v;
            }
        }
    }
}
