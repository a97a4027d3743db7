//! Render fidelity against the shared samples: each sample's own label values are drawn on the
//! plate at the sample's estimated position, and the field boxes are compared pixel by pixel.
//! For lossless layouts the synthetic boxes must match the real ones within 1.5 grey levels on
//! average (render specs, hinting, glyph placement and blending are right: unhinted glyphs give
//! about 3); for the others, whose samples are degraded, the numbers are printed.

mod util;

use sim::degrade::{Degrade, ScanMode};
use sim::values::printed_from_label;
use sim::{overlay, Simulator};
use vision::GrayF32;

#[test]
fn synthetic_field_boxes_match_the_samples() {
    let Some(samples) = util::samples("synthetic_field_boxes_match_the_samples") else {
        return;
    };
    let (set, fonts) = util::templates();
    let sim = Simulator::new(&set, &fonts).expect("simulator");
    let mut rng = rand::rngs::mock::StepRng::new(0, 1);
    // Templates no sample was compared against: a folder without them must not pass.
    let mut uncompared = Vec::new();
    for p in sim.templates() {
        let t = &p.template;
        let Some(list) = samples.get(&t.id) else {
            uncompared.push(t.id.clone());
            continue;
        };
        let plate = GrayF32::from_image(&image::DynamicImage::ImageRgb8(p.plate.clone()));
        let v = &t.variation;
        let lossless = v.jpeg_quality.is_none()
            && v.noise_std[1] == 0.0
            && v.blur_px[1] == 0.0
            && v.contrast == [1.0, 1.0]
            && v.brightness == [0.0, 0.0]
            && !v.subpixel;
        let (mut with, mut without, mut n) = (0f64, 0f64, 0usize);
        let mut worst = (0f64, String::new());
        let limit = std::env::var("EXAMLINK_SIM_SAMPLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        // The first `limit` samples at the template's own size (asoct also exports downscaled).
        for s in list
            .iter()
            .filter(|s| s.image.width() == t.width)
            .take(limit)
        {
            let img = GrayF32::from_image(&s.image);
            let a = overlay::estimate(t, &plate, &img);
            let d = Degrade::none(t.width, t.height, ScanMode::Rgb).with_map(a.map);
            let printed = printed_from_label(t, &s.label);
            let (syn, _) = sim.compose(p, &printed, &d, &mut rng).expect("compose");
            let empty: Vec<String> = vec![String::new(); t.fields.len()];
            let (bare, _) = sim.compose(p, &empty, &d, &mut rng).expect("compose");
            let (syn, bare) = (GrayF32::from_image(&syn), GrayF32::from_image(&bare));
            if let Some(dir) = std::env::var_os("EXAMLINK_SIM_DUMP") {
                util::dump_boxes(std::path::Path::new(&dir), &s.name, &img, &syn, &a.map, t);
            }
            for f in &t.fields {
                let (dw, db) = util::box_diff(&img, &syn, &bare, &a.map, f.bbox);
                with += dw;
                without += db;
                n += 1;
                if dw > worst.0 {
                    worst = (dw, format!("{} {}", s.name, f.spec.name));
                }
            }
        }
        if n == 0 {
            uncompared.push(t.id.clone());
            continue;
        }
        let (with, without) = (with / n as f64, without / n as f64);
        println!(
            "{}: mean |synthetic - sample| in field boxes {with:.2} grey levels (plate alone {without:.2}); worst {:.2} at {}",
            t.id, worst.0, worst.1
        );
        if lossless {
            assert!(
                with < 0.25 * without + 1.0,
                "{}: synthetic values do not match the samples",
                t.id
            );
        }
    }
    assert!(
        uncompared.is_empty(),
        "no sample of the template's size to compare with: {uncompared:?}"
    );
}
