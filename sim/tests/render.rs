//! Synthetic exports: deterministic by seed, labels valid for their template (every field passes
//! its grammar, range and step checks, the rules hold, absent fields use the device's markers),
//! labels shaped like the shared samples' labels, and files that decode to the rendered image.

mod util;

use rand::SeedableRng;
use record::{FieldStatus, TemplateSet};
use sim::render::export_rng;
use sim::values::{self, check, DEFAULT_ABSENT_RATE};
use sim::{encode, NaiveDate, ScanMode, Simulator};

/// The fixed today of these tests (the day issue #11 was filed).
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 1).expect("valid date")
}

fn simulator() -> (TemplateSet, Simulator) {
    let (set, fonts) = util::templates();
    let sim = Simulator::new(&set, &fonts)
        .expect("simulator")
        .with_today(today());
    (set, sim)
}

#[test]
fn render_is_deterministic_by_seed() {
    let (set, sim) = simulator();
    for t in set.iter() {
        let a = sim
            .render_export(&t.id, &mut export_rng(11, &t.id, 0))
            .expect("render");
        let b = sim
            .render_export(&t.id, &mut export_rng(11, &t.id, 0))
            .expect("render");
        assert_eq!(a.label, b.label, "{}", t.id);
        assert_eq!(a.image, b.image, "{}", t.id);
        assert_eq!(
            encode(&a).expect("encode"),
            encode(&b).expect("encode"),
            "{}",
            t.id
        );
        let c = sim
            .render_export(&t.id, &mut export_rng(12, &t.id, 0))
            .expect("render");
        assert_ne!(
            a.label, c.label,
            "{}: another seed gives other values",
            t.id
        );
    }
}

#[test]
fn every_label_passes_the_template_checks() {
    let (set, _) = simulator();
    for t in set.iter() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (mut absent, mut absentable) = (0usize, 0usize);
        for _ in 0..300 {
            let v = values::generate(t, today(), &mut rng, DEFAULT_ABSENT_RATE).expect("generate");
            // The label is what the printed texts normalise to, and the rules hold.
            assert_eq!(
                check(t, &v.printed, today()).expect("rules and fields hold"),
                v.label,
                "{}",
                t.id
            );
            for ((f, text), (name, value)) in t.fields.iter().zip(&v.printed).zip(&v.label.fields) {
                assert_eq!(&f.spec.name, name, "{}: catalog order", t.id);
                let c = f.spec.check_printed_at(text, today());
                match value {
                    Some(v) => {
                        assert_eq!(c.status, FieldStatus::Ok, "{} {name} {text:?}", t.id);
                        f.spec
                            .check_value_at(v, today())
                            .unwrap_or_else(|e| panic!("{} {name} {v}: {e}", t.id));
                    }
                    None => {
                        assert!(
                            f.spec.absent.contains(text),
                            "{} {name}: {text:?} is not an absent marker",
                            t.id
                        );
                        absent += 1;
                    }
                }
                absentable += usize::from(!f.spec.absent.is_empty());
            }
        }
        let share = absent as f64 / absentable.max(1) as f64;
        if absentable > 0 {
            assert!(
                (0.01..0.15).contains(&share),
                "{}: absent share {share:.3}",
                t.id
            );
        }
    }
}

#[test]
fn labels_have_the_shape_of_the_shared_samples() {
    let (set, sim) = simulator();
    let samples = util::samples("labels_have_the_shape_of_the_shared_samples");
    for t in set.iter() {
        let e = sim
            .render_export(&t.id, &mut export_rng(3, &t.id, 1))
            .expect("render");
        let v: serde_json::Value = serde_json::from_str(&e.label.to_json()).expect("json");
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["device_type", "fields", "firmware"], "{}", t.id);
        let fields: Vec<&str> = v["fields"]
            .as_object()
            .expect("fields")
            .keys()
            .map(String::as_str)
            .collect();
        let names: Vec<&str> = t.fields.iter().map(|f| f.spec.name.as_str()).collect();
        let text = e.label.to_json();
        let order: Vec<usize> = names
            .iter()
            .map(|n| text.find(&format!("\"{n}\"")).expect("field"))
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{}: fields in catalog order",
            t.id
        );
        assert_eq!(fields.len(), names.len());
        if let Some(s) = samples
            .as_ref()
            .and_then(|s| s.get(&t.id))
            .and_then(|l| l.first())
        {
            assert_eq!(s.label.device_type, e.label.device_type);
            assert_eq!(s.label.firmware, e.label.firmware);
            let mut a: Vec<&str> = s.label.fields.iter().map(|(n, _)| n.as_str()).collect();
            let mut b = names.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "{}: same fields as the samples", t.id);
        }
    }
}

#[test]
fn files_decode_to_the_rendered_image() {
    let (set, sim) = simulator();
    for t in set.iter() {
        for n in 0..1 {
            let e = sim
                .render_export(&t.id, &mut export_rng(21, &t.id, n))
                .expect("render");
            let bytes = encode(&e).expect("encode");
            let decoded = image::load_from_memory(&bytes).expect("decode");
            assert_eq!(
                (decoded.width(), decoded.height()),
                (e.image.width(), e.image.height())
            );
            assert_eq!(
                decoded.to_rgb8(),
                e.image.to_rgb8(),
                "{} {:?}",
                t.id,
                e.mode
            );
            let want = match e.mode {
                ScanMode::Rgb | ScanMode::Palette => 3,
                ScanMode::Gray | ScanMode::Bitonal => 1,
            };
            assert_eq!(e.image.color().channel_count(), want, "{}", t.id);
            if t.export_format == "png" && e.mode == ScanMode::Palette {
                assert!(matches!(
                    decoded.color(),
                    image::ColorType::Rgb8 | image::ColorType::Rgba8
                ));
            }
        }
    }
}

// See: #11. An export stamped with a chosen moment shows it (in the device's format), its label
// says it, and every other value is the unstamped export's.
#[test]
fn an_export_stamped_at_a_moment_shows_that_date_and_time() {
    let (set, sim) = simulator();
    let at = today().and_hms_opt(23, 59, 0).expect("valid time");
    for t in set.iter() {
        let plain = sim
            .render_export(&t.id, &mut export_rng(31, &t.id, 0))
            .expect("render");
        let e = sim
            .render_export_at(&t.id, &mut export_rng(31, &t.id, 0), at)
            .expect("render");
        assert_eq!(
            e.label.get("exam_date"),
            Some(Some("2026-12-01")),
            "{}",
            t.id
        );
        let has_time = t.field("exam_time").is_some();
        if has_time {
            assert_eq!(e.label.get("exam_time"), Some(Some("23:59")), "{}", t.id);
        }
        for ((f, text), (name, value)) in t.fields.iter().zip(&e.printed).zip(&e.label.fields) {
            let c = f.spec.check_printed_at(text, today());
            assert_eq!(&c.value, value, "{} {name}: printed {text:?}", t.id);
            if !matches!(name.as_str(), "exam_date" | "exam_time") {
                assert_eq!(plain.label.get(name), Some(value.as_deref()), "{}", t.id);
            }
        }
        if plain.label != e.label {
            assert!(plain.image != e.image, "{}: the stamp is drawn", t.id);
        }
    }
    // A clock far off is printed as given (the label is what the screen shows).
    let far = NaiveDate::from_ymd_opt(2031, 2, 3)
        .and_then(|d| d.and_hms_opt(0, 1, 0))
        .expect("valid moment");
    let e = sim
        .render_export_at("autoref_fw2", &mut export_rng(31, "autoref_fw2", 1), far)
        .expect("render");
    assert_eq!(e.label.get("exam_date"), Some(Some("2031-02-03")));
    assert_eq!(e.label.get("exam_time"), Some(Some("00:01")));
    let i = set
        .get("autoref_fw2")
        .and_then(|t| t.fields.iter().position(|f| f.spec.name == "exam_date"))
        .expect("exam_date");
    assert_eq!(e.printed[i], "03/02/2031");
}

#[test]
fn exam_dates_reach_the_simulators_today() {
    let (set, sim) = simulator();
    let t = set.get("autoref_fw3").expect("autoref_fw3");
    let dates: Vec<String> = (0..60)
        .map(|n| {
            let e = sim
                .render_export(&t.id, &mut export_rng(41, &t.id, n))
                .expect("render");
            e.label
                .get("exam_date")
                .flatten()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        dates.iter().all(|d| d.as_str() <= "2026-12-01"),
        "{dates:?}"
    );
    assert!(dates.iter().any(|d| d == "2026-12-01"), "{dates:?}");
    assert!(dates.iter().any(|d| d.as_str() > "2025-12-31"), "{dates:?}");
}
