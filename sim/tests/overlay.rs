//! Overlays over every shared sample: the anchors locate the layout (mean correlation ≥ 0.5),
//! every field box lands inside the image, and every field the label says is present has ink in its box (contrast
//! from `vision::normalise_crop` of at least `MIN_CONTRAST`). Also: the estimate recovers the
//! known map of synthetic exports.

mod util;

use sim::render::export_rng;
use sim::{overlay, Simulator};
use vision::crop::MIN_CONTRAST;
use vision::{normalise_crop, GrayF32};

#[test]
fn boxes_sit_on_the_values_of_every_shared_sample() {
    let Some(samples) = util::samples("boxes_sit_on_the_values_of_every_shared_sample") else {
        return;
    };
    let (set, fonts) = util::templates();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (layout, list) in &samples {
        let Some(t) = set.get(layout) else {
            eprintln!("skipped {layout}: no template yet");
            continue;
        };
        let plate = GrayF32::from_image(&image::open(&t.plate).expect("plate"));
        for (i, s) in list.iter().enumerate() {
            let img = GrayF32::from_image(&s.image);
            let a = overlay::estimate(t, &plate, &img);
            let (w, h) = (img.width as f32, img.height as f32);
            // Anchors at the frame's edge may leave the image when it shifts; field boxes never.
            for f in &t.fields {
                let inside = overlay::corners(&a.map, f.bbox)
                    .iter()
                    .all(|&(x, y)| x >= 0.0 && y >= 0.0 && x <= w && y <= h);
                if !inside {
                    failures.push(format!("{}: {} box outside the image", s.name, f.spec.name));
                }
            }
            if a.score < 0.5 {
                failures.push(format!(
                    "{}: anchors barely found (score {:.2})",
                    s.name, a.score
                ));
            }
            for f in &t.fields {
                if s.label.get(&f.spec.name) == Some(None) {
                    continue;
                }
                let (_, contrast) = normalise_crop(&img, &a.map, f.bbox.map(|v| v as f32));
                if contrast < MIN_CONTRAST {
                    failures.push(format!(
                        "{}: {} has no ink (contrast {contrast:.3})",
                        s.name, f.spec.name
                    ));
                }
            }
            if i == 0 {
                let o = overlay::overlay(t, &fonts, &s.image, Some(&s.label)).expect("overlay");
                assert_eq!(o.image.dimensions(), (s.image.width(), s.image.height()));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        checked > 0,
        "the samples folder holds no sample of a known layout"
    );
    println!("checked {checked} samples");
}

#[test]
fn estimate_recovers_the_map_of_synthetic_exports() {
    let (set, fonts) = util::templates();
    let sim = Simulator::new(&set, &fonts).expect("simulator");
    for p in sim.templates() {
        let t = &p.template;
        let plate = GrayF32::from_image(&image::DynamicImage::ImageRgb8(p.plate.clone()));
        let e = sim
            .render_export(&t.id, &mut export_rng(8, &t.id, 0))
            .expect("render");
        let a = overlay::estimate(t, &plate, &GrayF32::from_image(&e.image));
        for f in &t.fields {
            let [x, y, w, h] = f.bbox.map(|v| v as f32);
            let (ex, ey) = e.map.apply(x + w / 2.0, y + h / 2.0);
            let (gx, gy) = a.map.apply(x + w / 2.0, y + h / 2.0);
            let err = ((ex - gx).powi(2) + (ey - gy).powi(2)).sqrt();
            assert!(
                err < 1.5,
                "{} {}: box centre off by {err:.2} px",
                t.id,
                f.spec.name
            );
        }
    }
}
