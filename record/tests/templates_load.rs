//! The committed device templates (`templates/*.toml`) load and validate, and every layout of the
//! device catalog has one.

use std::path::Path;

use record::TemplateSet;

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
