//! `layout-probe TEMPLATES_DIR FILE...`: identifies each export and prints the template, map,
//! scores and timing, one line per file (a development aid for template and threshold work).

use std::path::Path;
use std::time::Instant;

use vision::pyramid::Pyramid;
use vision::{GrayF32, Layouts};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, files)) = args.split_first() else {
        eprintln!("usage: layout-probe TEMPLATES_DIR FILE...");
        std::process::exit(2);
    };
    let set = match record::TemplateSet::load_dir(Path::new(dir)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let t0 = Instant::now();
    let layouts = match Layouts::new(&set) {
        // LAYOUT_PROBE_LAX=1: accept whatever scores best (to inspect rejected exports).
        Ok(l) if std::env::var_os("LAYOUT_PROBE_LAX").is_some() => {
            l.with_thresholds(vision::Thresholds {
                anchor_min_ncc: -1.0,
                firmware_max_residual: f32::INFINITY,
                firmware_max_ratio: f32::INFINITY,
                firmware_max_excess: f32::INFINITY,
                firmware_max_typical: f32::INFINITY,
                identity_min_ink: 0.0,
                bitonal_max_ratio: f32::INFINITY,
                bitonal_max_blur: f32::INFINITY,
                early_reject_ncc: -1.0,
                margin: 0.0,
            })
        }
        // LAYOUT_PROBE_FW=1: every check but the firmware and model strings' (to measure them).
        Ok(l) if std::env::var_os("LAYOUT_PROBE_FW").is_some() => l
            .with_thresholds(vision::Thresholds {
                firmware_max_residual: f32::INFINITY,
                firmware_max_ratio: f32::INFINITY,
                firmware_max_excess: f32::INFINITY,
                firmware_max_typical: f32::INFINITY,
                identity_min_ink: 0.0,
                bitonal_max_ratio: f32::INFINITY,
                bitonal_max_blur: f32::INFINITY,
                ..vision::Thresholds::default()
            })
            .with_drift(vision::Drift {
                identity_max_ratio: f32::INFINITY,
                identity_max_excess: f32::INFINITY,
                identity_max_typical: f32::INFINITY,
                ..vision::Drift::default()
            }),
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "prepared {} templates in {:.1} ms",
        set.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    for f in files {
        let name = Path::new(f)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let img = match image::open(f) {
            Ok(i) => GrayF32::from_image(&i),
            Err(e) => {
                println!("{name}\tERROR {e}");
                continue;
            }
        };
        // LAYOUT_PROBE_REPEAT=n: time the best of n runs (the machine may be busy).
        let repeat: usize = std::env::var("LAYOUT_PROBE_REPEAT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let (mut ms, mut pyr_ms) = (f64::INFINITY, f64::INFINITY);
        let mut r = None;
        for _ in 0..repeat.max(1) {
            let copy = img.clone();
            let t = Instant::now();
            let pyr = Pyramid::new(copy);
            pyr_ms = pyr_ms.min(t.elapsed().as_secs_f64() * 1e3);
            r = Some(layouts.identify_pyramid(&pyr));
            ms = ms.min(t.elapsed().as_secs_f64() * 1e3);
        }
        let r = r.expect("ran once");
        match r {
            Ok(m) => {
                let anchors: Vec<String> = m
                    .anchors
                    .iter()
                    .map(|a| {
                        format!(
                            "{}:{:.3}/{:.2}/{}",
                            a.name,
                            a.ncc,
                            a.residual_px,
                            a.loo_px.map_or("-".into(), |l| format!("{l:.2}"))
                        )
                    })
                    .collect();
                let check = |c: &vision::firmware::FirmwareCheck| {
                    format!(
                        "{:.3}/{:.3}/{:.2}/blur{:.1}/ink{:.2}",
                        c.worst,
                        c.typical,
                        c.ratio(),
                        c.blur,
                        c.ink
                    )
                };
                let model = m.model.as_ref().map_or("-".into(), check);
                let firmware = check(&m.firmware);
                println!(
                    "{name}\t{}\tdrift={}\tscore={:.3}\tfw={firmware}\tmodel={model}\tms={ms:.2}/{pyr_ms:.2}\tmap=[{:.5} {:.5} {:.5} {:.5} {:.3} {:.3}]\t{}",
                    m.template_id,
                    m.beyond_declared,
                    m.score,
                    m.map.a,
                    m.map.b,
                    m.map.c,
                    m.map.d,
                    m.map.tx,
                    m.map.ty,
                    anchors.join(" ")
                );
            }
            Err(u) => println!("{name}\tUNKNOWN\tms={ms:.2}\t{}", u.reason),
        }
    }
}
