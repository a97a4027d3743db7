//! Layout identification and alignment on the real shared samples, and rejection of foreign
//! images: blank, noise, an export whose template is missing from the set, and exports whose
//! firmware string was edited (another firmware version of the same model).
//!
//! A missing samples folder fails these tests unless `EXAMLINK_ALLOW_SKIP=1` (then each prints
//! `SKIPPED`); see `sim::samples`. Timings are printed, not asserted.

mod recognize_common;

use std::collections::BTreeMap;
use std::time::Instant;

use recognize_common as common;
use record::TemplateSet;
use vision::pyramid::Pyramid;
use vision::{GrayF32, Layouts, Match};

#[derive(Default)]
struct Stats {
    n: usize,
    identified: usize,
    min_score: f32,
    max_fw_ratio: f32,
    max_resid: f32,
    loo: Vec<f32>,
    times_ms: Vec<f64>,
}

fn identify_timed(layouts: &Layouts, img: &GrayF32) -> (Result<Match, vision::Unknown>, f64) {
    let t0 = Instant::now();
    let pyr = Pyramid::new(img.clone());
    let r = layouts.identify_pyramid(&pyr);
    (r, t0.elapsed().as_secs_f64() * 1e3)
}

#[test]
fn every_sample_is_identified_and_aligned() {
    let Some(dir) = common::samples_dir("every_sample_is_identified_and_aligned") else {
        return;
    };
    let templates = common::templates();
    let layouts = Layouts::new(&templates).expect("plates load");
    let mut stats: BTreeMap<String, Stats> = BTreeMap::new();
    let mut failures = Vec::new();
    // EXAMLINK_DUMP_MAPS=FILE writes every fitted map as a JSON line (for offline comparison).
    let mut dump = std::env::var_os("EXAMLINK_DUMP_MAPS")
        .map(|p| std::fs::File::create(p).expect("dump file"));
    for (path, label) in common::samples(&dir) {
        let img = common::gray(&path);
        let (result, ms) = identify_timed(&layouts, &img);
        let want = label.layout();
        let known = templates.get(&want).is_some();
        let s = stats
            .entry(if known {
                want.clone()
            } else {
                format!("{want} (no template)")
            })
            .or_insert_with(|| Stats {
                min_score: 1.0,
                ..Stats::default()
            });
        s.n += 1;
        s.times_ms.push(ms);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match (&result, known) {
            (Ok(m), true) if m.template_id == want => {
                if let Some(f) = dump.as_mut() {
                    use std::io::Write;
                    let line = serde_json::json!({"file": name, "template": m.template_id, "score": m.score,
                        "firmware": [m.firmware.worst, m.firmware.typical], "ms": ms,
                        "map": [m.map.a, m.map.b, m.map.c, m.map.d, m.map.tx, m.map.ty],
                        "anchors": m.anchors.iter().map(|a| serde_json::json!([a.name, a.ncc, a.residual_px, a.loo_px])).collect::<Vec<_>>()});
                    writeln!(f, "{line}").unwrap();
                }
                s.identified += 1;
                s.min_score = s.min_score.min(m.score);
                s.max_fw_ratio = s.max_fw_ratio.max(m.firmware.ratio());
                for a in &m.anchors {
                    s.max_resid = s.max_resid.max(a.residual_px);
                    s.loo.extend(a.loo_px);
                }
            }
            (Ok(m), _) => failures.push(format!(
                "{name}: accepted as {} (score {:.2})",
                m.template_id, m.score
            )),
            (Err(u), true) => failures.push(format!("{name}: not identified: {}", u.reason)),
            (Err(_), false) => s.identified += 1,
        }
    }
    println!(
        "{:<28} {:>3} {:>5} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "layout",
        "n",
        "ok",
        "min_ncc",
        "fw_ratio",
        "max_res",
        "loo_mean",
        "loo_max",
        "ms_mean",
        "ms_max"
    );
    for (k, s) in &stats {
        let mean = |v: &[f32]| {
            if v.is_empty() {
                f32::NAN
            } else {
                v.iter().sum::<f32>() / v.len() as f32
            }
        };
        let max = |v: &[f32]| v.iter().copied().fold(f32::NAN, f32::max);
        let tmean = s.times_ms.iter().sum::<f64>() / s.times_ms.len() as f64;
        let tmax = s.times_ms.iter().copied().fold(0.0, f64::max);
        println!(
            "{k:<28} {:>3} {:>5} {:>6.3} {:>6.3} {:>7.3} {:>8.3} {:>8.3} {:>8.2} {:>8.2}",
            s.n,
            s.identified,
            s.min_score,
            s.max_fw_ratio,
            s.max_resid,
            mean(&s.loo),
            max(&s.loo),
            tmean,
            tmax
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A deterministic pseudo-random image.
fn noise(w: u32, h: u32, seed: u64) -> GrayF32 {
    let mut s = seed;
    let data = (0..w * h)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    GrayF32 {
        width: w,
        height: h,
        data,
    }
}

#[test]
fn blank_and_noise_images_are_rejected() {
    let templates = common::templates();
    let layouts = Layouts::new(&templates).expect("plates load");
    let mut sizes: Vec<(u32, u32)> = templates.iter().map(|t| (t.width, t.height)).collect();
    sizes.push((1280, 720));
    sizes.push((640, 400));
    for (w, h) in sizes {
        for (what, img) in [
            ("blank", GrayF32::filled(w, h, 0.5)),
            ("noise", noise(w, h, u64::from(w * h))),
        ] {
            match layouts.identify(&img) {
                Ok(m) => panic!(
                    "{what} {w}x{h} accepted as {} (score {:.2})",
                    m.template_id, m.score
                ),
                Err(u) => println!("{what} {w}x{h}: {}", u.reason),
            }
        }
    }
}

#[test]
fn an_export_whose_template_is_missing_is_rejected() {
    let Some(dir) = common::samples_dir("an_export_whose_template_is_missing_is_rejected") else {
        return;
    };
    let templates = common::templates();
    let samples = common::samples(&dir);
    for t in templates.iter() {
        let mut rest = TemplateSet::default();
        templates
            .iter()
            .filter(|o| o.id != t.id)
            .for_each(|o| rest.insert(o.clone()));
        if rest.is_empty() {
            continue;
        }
        let layouts = Layouts::new(&rest).expect("plates load");
        for (path, _) in samples.iter().filter(|(_, l)| l.layout() == t.id).take(5) {
            match layouts.identify(&common::gray(path)) {
                Ok(m) => panic!(
                    "{} without its template accepted as {} ({:.2})",
                    path.display(),
                    m.template_id,
                    m.score
                ),
                Err(u) => println!(
                    "{} without {}: {}",
                    path.file_name().unwrap().to_string_lossy(),
                    t.id,
                    u.reason
                ),
            }
        }
    }
}

/// Edits the last character of the firmware string into another character of the same string.
fn alter_firmware(img: &GrayF32, m: &Match, bbox: [u32; 4]) -> Option<GrayF32> {
    let (x0, y0) = m.map.apply(bbox[0] as f32, bbox[1] as f32);
    let (x1, y1) = m
        .map
        .apply((bbox[0] + bbox[2]) as f32, (bbox[1] + bbox[3]) as f32);
    let r = [
        x0.floor().max(0.0) as u32,
        (y0.floor() - 2.0).max(0.0) as u32,
        ((x1.ceil() as u32).min(img.width) - x0.floor().max(0.0) as u32),
        ((y1.ceil() + 2.0) as u32).min(img.height) - (y0.floor() - 2.0).max(0.0) as u32,
    ];
    let runs = common::glyph_runs(img, r);
    let last = *runs.last()?;
    let width = |r: (u32, u32)| r.1 - r.0;
    let differs = |a: (u32, u32), b: (u32, u32)| {
        (0..width(a).min(width(b))).any(|dx| {
            (r[1]..r[1] + r[3]).any(|y| {
                (img.at((a.0 + dx).into(), y.into()) - img.at((b.0 + dx).into(), y.into())).abs()
                    > 0.3
            })
        }) || width(a) != width(b)
    };
    let from = runs[..runs.len() - 1]
        .iter()
        .copied()
        .filter(|&c| width(c) + 2 >= width(last) && differs(c, last))
        .min_by_key(|&c| (width(c) as i64 - width(last) as i64).abs())?;
    let mut out = img.clone();
    common::copy_glyph(&mut out, r[1], r[3], from, last);
    Some(out)
}

#[test]
fn another_firmware_version_is_rejected() {
    let Some(dir) = common::samples_dir("another_firmware_version_is_rejected") else {
        return;
    };
    let templates = common::templates();
    let layouts = Layouts::new(&templates).expect("plates load");
    let samples = common::samples(&dir);
    let mut tried = 0;
    for t in templates.iter() {
        let fw = t
            .anchors
            .iter()
            .find(|a| a.firmware)
            .expect("a firmware anchor");
        for (path, _) in samples.iter().filter(|(_, l)| l.layout() == t.id).take(3) {
            let img = common::gray(path);
            if t.variation.downscale.is_some() && img.width != t.width {
                continue;
            }
            let m = layouts.identify(&img).expect("the original is identified");
            let Some(edited) = alter_firmware(&img, &m, fw.bbox) else {
                panic!("{}: no glyphs found in the firmware box", path.display());
            };
            tried += 1;
            match layouts.identify(&edited) {
                Ok(e) => panic!(
                    "{} with an edited firmware string accepted as {} (firmware ratio {:.2}, was {:.2})",
                    path.display(),
                    e.template_id,
                    e.firmware.ratio(),
                    m.firmware.ratio()
                ),
                Err(u) => println!("{} edited: {}", path.file_name().unwrap().to_string_lossy(), u.reason),
            }
        }
    }
    assert!(tried > 0);
}
