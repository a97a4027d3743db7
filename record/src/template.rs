//! Device templates: one TOML file per device model and firmware layout (see
//! `templates/README.md` for the format). Parsing validates everything and fails with an error
//! naming the file, the field and the problem.
//!
//! Coordinates are pixels of the template's reference frame (its `plate` image, `width` x
//! `height`); boxes are `[x, y, w, h]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::grammar::{FieldSpec, Grammar};
use crate::rules::Rule;

/// A template that failed to load: which file, which field (if any), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{problem}", field.as_ref().map(|f| format!("field {f}: ")).unwrap_or_default())]
pub struct TemplateError {
    /// The template file.
    pub file: String,
    /// The field concerned, if any.
    pub field: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// How exports of this layout vary (used by alignment bounds and by the simulator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Variation {
    /// Largest translation in x and y, in pixels of the reference frame.
    pub shift_px: f32,
    /// Whether translation is sub-pixel.
    pub subpixel: bool,
    /// Scale range `[min, max]`.
    pub scale: [f32; 2],
    /// Largest rotation, degrees.
    pub rotation_deg: f32,
    /// Gaussian blur radius range.
    pub blur_px: [f32; 2],
    /// Noise standard deviation range, grey levels.
    pub noise_std: [f32; 2],
    /// Whether noise is spatially correlated (scanner).
    pub noise_correlated: bool,
    /// Contrast factor range.
    pub contrast: [f32; 2],
    /// Brightness offset range, grey levels.
    pub brightness: [f32; 2],
    /// JPEG quality range, when the export (or scan) is JPEG-compressed.
    pub jpeg_quality: Option<[u8; 2]>,
    /// Share of exports downscaled, and the factor (asoct: 0.35, 2/3).
    pub downscale: Option<(f32, f32)>,
    /// Scan modes and their shares (`gray`, `bitonal`, `palette`, `rgb`), for scanned printouts.
    pub scan_modes: BTreeMap<String, f32>,
    /// Bitonal threshold range on 0..255.
    pub bitonal_threshold: Option<[u8; 2]>,
    /// Paper tint and uneven illumination (scans).
    pub paper: bool,
}

impl Variation {
    /// A scanned printout (paper effects or scan modes) rather than a screen export.
    pub fn scanned(&self) -> bool {
        self.paper || !self.scan_modes.is_empty()
    }
}

impl Default for Variation {
    fn default() -> Self {
        Self {
            shift_px: 0.0,
            subpixel: false,
            scale: [1.0, 1.0],
            rotation_deg: 0.0,
            blur_px: [0.0, 0.0],
            noise_std: [0.0, 0.0],
            noise_correlated: false,
            contrast: [1.0, 1.0],
            brightness: [0.0, 0.0],
            jpeg_quality: None,
            downscale: None,
            scan_modes: BTreeMap::new(),
            bitonal_threshold: None,
            paper: false,
        }
    }
}

/// A fixed region used to recognise the layout and align an export to the reference frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// Name, unique in the template.
    pub name: String,
    /// Region of the plate `[x, y, w, h]`.
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
    /// The text it shows (documentation, and what a reader checks on an overlay).
    #[serde(default)]
    pub text: Option<String>,
    /// Whether this anchor holds the firmware version string (it must match for the layout).
    #[serde(default)]
    pub firmware: bool,
}

/// How the simulator draws a field's value (and what the font looks like to a reader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Render {
    /// Font file name, looked up in the font directories.
    pub font: String,
    /// Font size in pixels (em height).
    pub size_px: f32,
    /// Text colour.
    pub color: [u8; 3],
    /// Text anchor point, reference frame pixels.
    pub origin: [f32; 2],
    /// PIL-style anchor: `ls` (left, baseline), `rs` (right, baseline), `ms` (middle, baseline).
    #[serde(default = "default_anchor")]
    pub anchor: String,
    /// Colour of unlit seven-segment "ghost" digits drawn behind the value, if any.
    #[serde(default)]
    pub ghost: Option<[u8; 3]>,
    /// Text of the ghost digits (`8.8.8`).
    #[serde(default)]
    pub ghost_text: Option<String>,
}

fn default_anchor() -> String {
    "ls".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(rename = "box")]
    bbox: [u32; 4],
    grammar: Grammar,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    range: Option<[String; 2]>,
    #[serde(default)]
    step: Option<f64>,
    #[serde(default)]
    absent: Vec<String>,
    render: Render,
}

/// A field's place on the screen plus its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldTemplate {
    /// Grammar, unit, range, step, absent markers.
    pub spec: FieldSpec,
    /// Crop region `[x, y, w, h]` in the reference frame.
    pub bbox: [u32; 4],
    /// How the value is drawn.
    pub render: Render,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    id: String,
    version: u32,
    device_type: String,
    firmware: String,
    model: String,
    firmware_string: String,
    width: u32,
    height: u32,
    plate: String,
    export_format: String,
    #[serde(default)]
    variation: Variation,
    anchors: Vec<Anchor>,
    fields: Vec<RawField>,
    #[serde(default)]
    rules: Vec<Rule>,
}

/// One device layout, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Unique id, equal to the file stem (`autoref_fw2`).
    pub id: String,
    /// Bumped whenever boxes or grammar change; part of every record id.
    pub version: u32,
    /// Device type (`autoref`).
    pub device_type: String,
    /// Firmware key (`fw2`).
    pub firmware: String,
    /// Device model name, as on the title bar.
    pub model: String,
    /// Firmware string on screen (`Ver 2.14`).
    pub firmware_string: String,
    /// Reference frame width.
    pub width: u32,
    /// Reference frame height.
    pub height: u32,
    /// Reference image (a real export with the field values erased), relative to the template file.
    pub plate: PathBuf,
    /// `png`, `jpg` or `bmp`.
    pub export_format: String,
    /// How exports vary.
    pub variation: Variation,
    /// Anchors.
    pub anchors: Vec<Anchor>,
    /// Fields, in catalog order.
    pub fields: Vec<FieldTemplate>,
    /// Cross-field rules.
    pub rules: Vec<Rule>,
}

impl Template {
    /// Parses and validates a template. `file` names it in errors; `plate` is resolved against its folder.
    pub fn from_toml(file: &Path, text: &str) -> Result<Self, TemplateError> {
        let fname = file.display().to_string();
        let err = |field: Option<&str>, problem: String| TemplateError {
            file: fname.clone(),
            field: field.map(String::from),
            problem,
        };
        let raw: RawTemplate = toml::from_str(text).map_err(|e| err(None, e.to_string()))?;
        if file.file_stem().and_then(|s| s.to_str()) != Some(raw.id.as_str()) {
            return Err(err(
                None,
                format!("id {:?} must equal the file stem", raw.id),
            ));
        }
        let (w, h) = (raw.width, raw.height);
        let inside = |b: &[u32; 4]| b[2] > 0 && b[3] > 0 && b[0] + b[2] <= w && b[1] + b[3] <= h;
        let canonical = catalog::fields(&raw.device_type)
            .ok_or_else(|| err(None, format!("unknown device_type {:?}", raw.device_type)))?;
        let names: Vec<String> = raw.fields.iter().map(|f| f.name.clone()).collect();
        let mut seen = BTreeSet::new();
        for n in &names {
            if !seen.insert(n.clone()) {
                return Err(err(Some(n), "duplicate field".into()));
            }
        }
        if names
            .iter()
            .map(String::as_str)
            .ne(canonical.iter().copied())
        {
            return Err(err(
                None,
                format!(
                    "fields must be the catalog's {canonical:?} in that order, found {names:?}"
                ),
            ));
        }
        if !raw.anchors.iter().any(|a| a.firmware) {
            return Err(err(None, "no anchor has firmware = true".into()));
        }
        let mut anchor_names = BTreeSet::new();
        for a in &raw.anchors {
            if !anchor_names.insert(a.name.as_str()) {
                return Err(err(None, format!("duplicate anchor {:?}", a.name)));
            }
            if !inside(&a.bbox) {
                return Err(err(
                    None,
                    format!(
                        "anchor {:?} box {:?} outside the {w}x{h} image",
                        a.name, a.bbox
                    ),
                ));
            }
        }
        let v = &raw.variation;
        for (what, r) in [
            ("scale", v.scale),
            ("blur_px", v.blur_px),
            ("noise_std", v.noise_std),
            ("contrast", v.contrast),
            ("brightness", v.brightness),
        ] {
            if r[0] > r[1] {
                return Err(err(None, format!("variation.{what} range inverted: {r:?}")));
            }
        }
        if !["png", "jpg", "bmp"].contains(&raw.export_format.as_str()) {
            return Err(err(
                None,
                format!("export_format {:?}: use png, jpg or bmp", raw.export_format),
            ));
        }
        let mut fields = Vec::with_capacity(raw.fields.len());
        for f in raw.fields {
            let name = f.name.clone();
            if !inside(&f.bbox) {
                return Err(err(
                    Some(&name),
                    format!("box {:?} outside the {w}x{h} image", f.bbox),
                ));
            }
            if f.render.size_px.is_nan()
                || f.render.size_px <= 0.0
                || !["ls", "rs", "ms"].contains(&f.render.anchor.as_str())
            {
                return Err(err(
                    Some(&name),
                    "render needs size_px > 0 and anchor ls, rs or ms".into(),
                ));
            }
            let spec = FieldSpec {
                name: f.name,
                grammar: f.grammar,
                unit: f.unit,
                range: f.range,
                step: f.step,
                absent: f.absent,
            };
            spec.validate().map_err(|p| err(Some(&name), p))?;
            fields.push(FieldTemplate {
                spec,
                bbox: f.bbox,
                render: f.render,
            });
        }
        for r in &raw.rules {
            for n in r.fields() {
                if !seen.contains(n) {
                    return Err(err(Some(n), format!("rule {r:?} names an unknown field")));
                }
            }
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        Ok(Template {
            plate: dir.join(&raw.plate),
            id: raw.id,
            version: raw.version,
            device_type: raw.device_type,
            firmware: raw.firmware,
            model: raw.model,
            firmware_string: raw.firmware_string,
            width: w,
            height: h,
            export_format: raw.export_format,
            variation: raw.variation,
            anchors: raw.anchors,
            fields,
            rules: raw.rules,
        })
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldTemplate> {
        self.fields.iter().find(|f| f.spec.name == name)
    }
}

/// Every template of a templates folder, by id.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    templates: BTreeMap<String, Template>,
}

impl TemplateSet {
    /// Loads every `*.toml` in `dir` (the one place this crate touches the filesystem).
    pub fn load_dir(dir: &Path) -> Result<Self, TemplateError> {
        let io = |e: std::io::Error| TemplateError {
            file: dir.display().to_string(),
            field: None,
            problem: e.to_string(),
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut set = Self::default();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| TemplateError {
                file: p.display().to_string(),
                field: None,
                problem: e.to_string(),
            })?;
            set.insert(Template::from_toml(&p, &text)?);
        }
        if set.templates.is_empty() {
            return Err(TemplateError {
                file: dir.display().to_string(),
                field: None,
                problem: "no *.toml templates found".into(),
            });
        }
        Ok(set)
    }

    /// Adds a template (replacing one with the same id).
    pub fn insert(&mut self, t: Template) {
        self.templates.insert(t.id.clone(), t);
    }

    /// The template with this id.
    pub fn get(&self, id: &str) -> Option<&Template> {
        self.templates.get(id)
    }

    /// All templates, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}
