//! Test helpers: the workspace's templates, the shared samples (found by `sim::samples`), and
//! box comparisons.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use image::DynamicImage;
use record::TemplateSet;
use sim::{FontDirs, Label};
use vision::{Affine, GrayF32};

/// The workspace's templates folder.
pub fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

/// Every template in `templates/`, and the font directories.
pub fn templates() -> (TemplateSet, FontDirs) {
    let set = TemplateSet::load_dir(&templates_dir()).expect("templates load");
    (set, FontDirs::new(&[]))
}

/// One shared sample.
pub struct Sample {
    /// File stem.
    pub name: String,
    /// The image.
    pub image: DynamicImage,
    /// Its label.
    pub label: Label,
}

/// Samples by layout folder name, for `test`; `None` only when they are missing and
/// `EXAMLINK_ALLOW_SKIP=1` (the skip is printed), otherwise a missing folder fails the test
/// ([`sim::samples::required`]).
pub fn samples(test: &str) -> Option<BTreeMap<String, Vec<Sample>>> {
    let dir = sim::samples::required(test)?;
    let rd = std::fs::read_dir(&dir).expect("samples folder readable");
    let mut out = BTreeMap::new();
    let mut layouts: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    layouts.sort();
    for l in layouts {
        let name = l
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&l)
            .expect("layout folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut list = Vec::new();
        for js in files {
            let stem = js
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let img = ["png", "jpg", "bmp"]
                .iter()
                .map(|x| js.with_extension(x))
                .find(|p| p.exists());
            let Some(img) = img else { continue };
            let label = Label::from_json(&std::fs::read_to_string(&js).expect("label"))
                .expect("label json");
            let image = image::open(&img).expect("sample image");
            list.push(Sample {
                name: stem,
                image,
                label,
            });
        }
        out.insert(name, list);
    }
    Some(out)
}

/// Mean absolute grey difference (0..255) between `real` and `syn`, and between `real` and
/// `bare`, over the image pixels of reference box `b` under `map`.
pub fn box_diff(
    real: &GrayF32,
    syn: &GrayF32,
    bare: &GrayF32,
    map: &Affine,
    b: [u32; 4],
) -> (f64, f64) {
    let (mut dw, mut db, mut n) = (0f64, 0f64, 0usize);
    for y in b[1]..b[1] + b[3] {
        for x in b[0]..b[0] + b[2] {
            let (ix, iy) = map.apply(x as f32 + 0.5, y as f32 + 0.5);
            let (ix, iy) = (ix.floor() as i64, iy.floor() as i64);
            let r = real.at(ix, iy);
            dw += f64::from((r - syn.at(ix, iy)).abs());
            db += f64::from((r - bare.at(ix, iy)).abs());
            n += 1;
        }
    }
    let n = n.max(1) as f64 / 255.0;
    (dw / n, db / n)
}

/// Writes `<dir>/<name>.png`: for every field, the real box (left) beside the synthetic one
/// (right), 3x enlarged, for looking at render fidelity.
pub fn dump_boxes(
    dir: &std::path::Path,
    name: &str,
    real: &GrayF32,
    syn: &GrayF32,
    map: &Affine,
    t: &record::Template,
) {
    const K: u32 = 3;
    let w = t.fields.iter().map(|f| f.bbox[2]).max().unwrap_or(1) * 2 + 4;
    let h: u32 = t.fields.iter().map(|f| f.bbox[3] + 2).sum();
    let mut out = image::GrayImage::from_pixel(w * K, h * K, image::Luma([128]));
    let mut y0 = 0;
    for f in &t.fields {
        let b = f.bbox;
        for (side, img) in [real, syn].into_iter().enumerate() {
            for y in 0..b[3] {
                for x in 0..b[2] {
                    let (ix, iy) = map.apply((b[0] + x) as f32 + 0.5, (b[1] + y) as f32 + 0.5);
                    let v = (img.at(ix.floor() as i64, iy.floor() as i64) * 255.0) as u8;
                    let ox = side as u32 * (b[2] + 4) + x;
                    for j in 0..K {
                        for i in 0..K {
                            out.put_pixel(ox * K + i, (y0 + y) * K + j, image::Luma([v]));
                        }
                    }
                }
            }
        }
        y0 += b[3] + 2;
    }
    std::fs::create_dir_all(dir).expect("dump dir");
    out.save(dir.join(format!("{name}.png"))).expect("dump");
}
