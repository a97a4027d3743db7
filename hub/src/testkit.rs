//! Builders for tests and the bench: a complete `autoref` test template (18 fields, two
//! rules) and valid records for it. Not used by the hub itself.

use std::path::Path;

use chrono::{TimeZone, Utc};
use record::{DeviceId, Field, FieldStatus, Record, RecordId, Template, TemplateSet};

/// Id of the test template.
pub const TEMPLATE_ID: &str = "autoref_test";

/// `(name, grammar, unit, range, step)` of the test template's fields.
const FIELDS: &[(&str, &str, &str, [&str; 2], &str)] = &[
    (
        "patient_id",
        r#"{ kind = "digits", count = 8 }"#,
        "",
        ["", ""],
        "",
    ),
    (
        "exam_date",
        r#"{ kind = "date", format = "DD/MM/YYYY" }"#,
        "",
        ["2000-01-01", "today"],
        "",
    ),
    ("exam_time", r#"{ kind = "time" }"#, "", ["", ""], ""),
    ("r_sph", SPH, "D", ["-25.00", "+22.00"], "0.25"),
    ("r_cyl", SPH, "D", ["-10.00", "0.00"], "0.25"),
    ("r_axis", AXIS, "deg", ["1", "180"], "1"),
    ("l_sph", SPH, "D", ["-25.00", "+22.00"], "0.25"),
    ("l_cyl", SPH, "D", ["-10.00", "0.00"], "0.25"),
    ("l_axis", AXIS, "deg", ["1", "180"], "1"),
    ("r_k1", K, "D", ["35.00", "55.00"], "0.01"),
    ("r_k1_axis", AXIS, "deg", ["1", "180"], "1"),
    ("r_k2", K, "D", ["35.00", "55.00"], "0.01"),
    ("r_k2_axis", AXIS, "deg", ["1", "180"], "1"),
    ("l_k1", K, "D", ["35.00", "55.00"], "0.01"),
    ("l_k1_axis", AXIS, "deg", ["1", "180"], "1"),
    ("l_k2", K, "D", ["35.00", "55.00"], "0.01"),
    ("l_k2_axis", AXIS, "deg", ["1", "180"], "1"),
    (
        "pd",
        r#"{ kind = "integer", sign = "none" }"#,
        "mm",
        ["40", "80"],
        "1",
    ),
];
const SPH: &str = r#"{ kind = "decimal", decimals = 2, sign = "always" }"#;
const AXIS: &str = r#"{ kind = "integer", sign = "none" }"#;
const K: &str = r#"{ kind = "decimal", decimals = 2, sign = "none" }"#;

/// The test template's TOML text.
pub fn template_toml() -> String {
    let mut s = format!(
        "id = \"{TEMPLATE_ID}\"\nversion = 3\ndevice_type = \"autoref\"\nfirmware = \"fw2\"\n\
         model = \"Test RK\"\nfirmware_string = \"Ver 2.14\"\nwidth = 800\nheight = 600\n\
         plate = \"plates/{TEMPLATE_ID}.png\"\nexport_format = \"png\"\n\n\
         [[anchors]]\nname = \"firmware\"\nbox = [700, 2, 96, 24]\ntext = \"Ver 2.14\"\nfirmware = true\n"
    );
    for (i, (name, grammar, unit, range, step)) in FIELDS.iter().enumerate() {
        let y = 30 + 30 * i as u32;
        s += &format!(
            "\n[[fields]]\nname = \"{name}\"\nbox = [400, {y}, 120, 26]\ngrammar = {grammar}\n"
        );
        if !unit.is_empty() {
            s += &format!("unit = \"{unit}\"\n");
        }
        if !range[0].is_empty() {
            s += &format!("range = [\"{}\", \"{}\"]\n", range[0], range[1]);
        }
        if !step.is_empty() {
            s += &format!("step = {step}\n");
        }
        s += "absent = [\"---\"]\n";
        s += &format!(
            "render = {{ font = \"DejaVuSansMono.ttf\", size_px = 18.0, color = [255, 255, 255], \
             origin = [515.0, {}.0], anchor = \"rs\" }}\n",
            y + 20
        );
    }
    s += "\n[[rules]]\nkind = \"le\"\na = \"r_k1\"\nb = \"r_k2\"\n";
    s += "\n[[rules]]\nkind = \"perpendicular\"\na = \"r_k1_axis\"\nb = \"r_k2_axis\"\n";
    s
}

/// The test template, parsed.
///
/// # Panics
/// If the built-in template text is invalid (a bug here).
pub fn template() -> Template {
    Template::from_toml(Path::new("autoref_test.toml"), &template_toml())
        .expect("test template is valid")
}

/// A set holding only the test template.
pub fn template_set() -> TemplateSet {
    let mut s = TemplateSet::default();
    s.insert(template());
    s
}

/// Writes the test template into `dir` (for a hub's `templates_dir`).
pub fn write_templates(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join(format!("{TEMPLATE_ID}.toml")), template_toml())
}

/// A valid record of `device` for the test template; `n` picks the export (distinct `n`,
/// distinct record ids) and varies the values.
pub fn record(device: &DeviceId, n: u64) -> Record {
    let t = template();
    let image_sha256 = record::ids::sha256_hex(format!("{device}/{n}").as_bytes());
    let sph = format!("{:+.2}", -2.0 + (n % 8) as f64 * 0.25).replace("+0.00", "0.00");
    let values: Vec<String> = vec![
        format!("{:08}", n % 100_000_000),
        "2024-05-01".into(),
        "10:15".into(),
        sph.clone(),
        "-0.50".into(),
        "90".into(),
        sph,
        "-0.75".into(),
        "85".into(),
        "42.50".into(),
        format!("{}", 1 + n % 90),
        "43.25".into(),
        format!("{}", 91 + n % 90),
        "42.75".into(),
        "10".into(),
        "43.00".into(),
        "100".into(),
        "62".into(),
    ];
    let fields: Vec<Field> = t
        .fields
        .iter()
        .zip(values)
        .map(|(ft, v)| Field {
            name: ft.spec.name.clone(),
            number: ft.spec.grammar.number(&v),
            value: Some(v),
            unit: ft.spec.unit.clone(),
            status: FieldStatus::Ok,
            confidence: 0.99,
            reason: None,
            raw: None,
        })
        .collect();
    let at = Utc
        .with_ymd_and_hms(2024, 5, 1, 10, 16, 0)
        .single()
        .expect("valid date");
    Record {
        record_id: RecordId::derive(device, &image_sha256, &t.id, t.version),
        device_id: device.clone(),
        device_type: t.device_type.clone(),
        template_id: t.id.clone(),
        template_version: t.version,
        firmware: t.firmware.clone(),
        source_file: format!("exam_{n}.png"),
        image_sha256,
        patient_id: fields[0].value.clone(),
        exam_date: fields[1].value.clone(),
        exam_time: fields[2].value.clone(),
        fields,
        review_crops: vec![],
        sample_crops: vec![],
        alignment: None,
        agent_version: "0.1.0".into(),
        model_version: "m-test".into(),
        captured_at: at,
        recognized_at: at,
    }
}
