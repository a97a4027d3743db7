//! The committed device templates (`templates/*.toml`) load and validate, and every layout of the
//! device catalog has one.

use std::path::Path;

use record::grammar::TODAY;
use record::{Template, TemplateSet};

const LAYOUTS: [&str; 7] = [
    "asoct_fw1",
    "autoref_fw2",
    "autoref_fw3",
    "biometer_fw1",
    "specular_fw1",
    "tomographer_fw1",
    "tonometer_fw1",
];

#[test]
fn every_layout_has_a_valid_template() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let set = TemplateSet::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        set.len(),
        7,
        "templates: {:?}",
        set.iter().map(|t| &t.id).collect::<Vec<_>>()
    );
    for id in LAYOUTS {
        let t = set.get(id).unwrap_or_else(|| panic!("no template {id}"));
        assert_eq!(format!("{}_{}", t.device_type, t.firmware), id);
        assert!(
            t.plate.is_file(),
            "{id}: plate {} missing",
            t.plate.display()
        );
        assert!(t.anchors.len() >= 3, "{id}: needs at least 3 anchors");
        for f in &t.fields {
            // The render origin (PIL anchor point: pen start or advance end on the baseline) lies
            // on or near the value's ink, so within half an em of the crop box.
            let [x, y, w, h] = f.bbox.map(|v| v as f32);
            let [ox, oy] = f.render.origin;
            let slack = f.render.size_px / 2.0;
            assert!(
                ox >= x - slack && ox <= x + w + slack && oy >= y - slack && oy <= y + h + slack,
                "{id}: field {} render origin {:?} far from its box {:?}",
                f.spec.name,
                f.render.origin,
                f.bbox
            );
        }
    }
}

// See: #11. Exam dates run up to the checking machine's "today", exam times over the whole day;
// the content changed, so every template is at version 2 or later.
#[test]
fn exam_dates_run_to_today_and_exam_times_over_the_whole_day() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let set = TemplateSet::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    for t in set.iter() {
        assert!(t.version >= 2, "{}: version {}", t.id, t.version);
        let date = t.field("exam_date").expect("every layout has an exam date");
        assert_eq!(
            date.spec.range,
            Some(["2000-01-01".to_owned(), TODAY.to_owned()]),
            "{}",
            t.id
        );
        if let Some(time) = t.field("exam_time") {
            assert_eq!(time.spec.range, None, "{}: exam_time has a range", t.id);
        }
    }
}

#[test]
fn a_bad_date_bound_names_the_file_and_the_field() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/autoref_fw2.toml");
    let text = std::fs::read_to_string(&path).expect("committed template");
    let needle = r#"range = ["2000-01-01", "today"]"#;
    assert!(text.contains(needle));
    for (bound, problem) in [
        (r#"range = ["2000-01-01", "tomorrow"]"#, "\"tomorrow\""),
        (r#"range = ["today", "2030-01-01"]"#, "upper bound"),
        (r#"range = ["2000-13-01", "today"]"#, "\"2000-13-01\""),
    ] {
        let e = Template::from_toml(&path, &text.replace(needle, bound)).unwrap_err();
        assert_eq!(e.file, path.display().to_string());
        assert_eq!(e.field.as_deref(), Some("exam_date"), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("field exam_date: range bound") && msg.contains(problem),
            "{msg}"
        );
    }
}
