//! The mapping table: which FHIR code, system and UCUM unit each stored field becomes.
//!
//! One row of [`MEASURES`] per (device type, field) that is a measurement. Rows that share a
//! [`Group`] become one Observation per eye with one component each (refraction: sphere,
//! cylinder, axis; keratometry: K1/K2 power and axis); the others are one Observation each.
//! The identity fields (`patient_id`, `exam_date`, `exam_time`, `eye`) are not Observations:
//! they fill the subject, `effectiveDateTime` and `bodySite`.
//!
//! Codes: LOINC only where this project is sure of the code (intra-ocular pressure per eye,
//! given by issue #16); everything else uses the project's own code system [`LOCAL`], documented
//! in `docs/fhir-mapping.md` (kept in sync with this table by a unit test). No SNOMED CT code
//! is used for a measure; SNOMED CT codes the laterality ([`RIGHT_EYE`], [`LEFT_EYE`]).

/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// SNOMED CT.
pub const SNOMED: &str = "http://snomed.info/sct";
/// UCUM.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// The project's own code system for measures LOINC and SNOMED CT do not code (or that this
/// project cannot vouch for). Defined in `docs/fhir-mapping.md`.
pub const LOCAL: &str = "https://examlink.invalid/fhir/CodeSystem/examlink-measure";

/// A coding: system, code, display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// Code system URI.
    pub system: &'static str,
    /// The code.
    pub code: &'static str,
    /// Its display text.
    pub display: &'static str,
}

const fn local(code: &'static str, display: &'static str) -> Code {
    Code {
        system: LOCAL,
        code,
        display,
    }
}

const fn loinc(code: &'static str, display: &'static str) -> Code {
    Code {
        system: LOINC,
        code,
        display,
    }
}

/// SNOMED CT 362503005 |Entire right eye|.
pub const RIGHT_EYE: Code = Code {
    system: SNOMED,
    code: "362503005",
    display: "Entire right eye",
};
/// SNOMED CT 362502000 |Entire left eye|.
pub const LEFT_EYE: Code = Code {
    system: SNOMED,
    code: "362502000",
    display: "Entire left eye",
};

/// Which eye a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Eye {
    /// OD.
    Right,
    /// OS.
    Left,
    /// Neither (pupillary distance), or not known (the eye field not read).
    None,
}

impl Eye {
    /// `od`, `os`, or `na` (no eye), as used in identifiers and ids.
    pub fn key(self) -> &'static str {
        match self {
            Eye::Right => "od",
            Eye::Left => "os",
            Eye::None => "na",
        }
    }

    /// The SNOMED CT body site, if one eye.
    pub fn body_site(self) -> Option<Code> {
        match self {
            Eye::Right => Some(RIGHT_EYE),
            Eye::Left => Some(LEFT_EYE),
            Eye::None => None,
        }
    }
}

/// How a measure's field names carry the eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Laterality {
    /// `r_<field>` and `l_<field>`.
    Prefixed,
    /// One eye per exam, named by the record's `eye` field (`OD`/`OS`).
    EyeField,
    /// Not an eye's value (pupillary distance).
    NoEye,
}

/// An Observation with components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// The Observation's code.
    pub code: Code,
}

/// Objective refraction: sphere, cylinder and axis as components.
pub const REFRACTION: Group = Group {
    code: local("refraction", "Objective refraction (autorefraction)"),
};
/// Keratometry of the corneal front: K1/K2 power (and axis), Km, astigmatism as components.
pub const KERATOMETRY: Group = Group {
    code: local("keratometry", "Keratometry, corneal front"),
};

/// One measurement field of one device type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// Device type (`autoref`, ...).
    pub device_type: &'static str,
    /// Field name without the eye prefix (`sph`, `iop`, `k1_axis`, `pd`).
    pub field: &'static str,
    /// How the eye is known.
    pub laterality: Laterality,
    /// The Observation it is a component of, if any.
    pub group: Option<Group>,
    /// The code (right eye, or both when the code has no laterality).
    pub code: Code,
    /// The left eye's code where LOINC codes each eye apart.
    pub code_left: Option<Code>,
    /// The unit the device prints (as in the templates).
    pub unit: &'static str,
    /// Its UCUM code.
    pub ucum: &'static str,
}

impl Measure {
    /// The stored field name for `eye`.
    pub fn field_name(&self, eye: Eye) -> String {
        match (self.laterality, eye) {
            (Laterality::Prefixed, Eye::Right) => format!("r_{}", self.field),
            (Laterality::Prefixed, Eye::Left) => format!("l_{}", self.field),
            _ => self.field.to_owned(),
        }
    }

    /// The code for `eye`.
    pub fn code_for(&self, eye: Eye) -> Code {
        match (eye, self.code_left) {
            (Eye::Left, Some(c)) => c,
            _ => self.code,
        }
    }
}

use Laterality::{EyeField, NoEye, Prefixed};

const fn m(
    device_type: &'static str,
    field: &'static str,
    laterality: Laterality,
    group: Option<Group>,
    code: Code,
    unit: &'static str,
    ucum: &'static str,
) -> Measure {
    Measure {
        device_type,
        field,
        laterality,
        group,
        code,
        code_left: None,
        unit,
        ucum,
    }
}

const SPH: Code = local("refraction-sphere", "Refraction sphere");
const CYL: Code = local(
    "refraction-cylinder",
    "Refraction cylinder (minus cylinder)",
);
const AXIS: Code = local("refraction-axis", "Refraction cylinder axis");
const K1: Code = local("k1-power", "K1, flat meridian power");
const K1_AXIS: Code = local("k1-axis", "K1, flat meridian axis");
const K2: Code = local("k2-power", "K2, steep meridian power");
const K2_AXIS: Code = local("k2-axis", "K2, steep meridian axis");
const CCT: Code = local("central-corneal-thickness", "Central corneal thickness");
const ACD_ENDO: Code = local(
    "acd-endothelium",
    "Anterior chamber depth, from the corneal endothelium",
);
const R: Option<Group> = Some(REFRACTION);
const K: Option<Group> = Some(KERATOMETRY);
const D: (&str, &str) = ("D", "[diop]");

/// Every measurement field of every device type, in catalog order.
pub const MEASURES: &[Measure] = &[
    m("autoref", "sph", Prefixed, R, SPH, D.0, D.1),
    m("autoref", "cyl", Prefixed, R, CYL, D.0, D.1),
    m("autoref", "axis", Prefixed, R, AXIS, "deg", "deg"),
    m("autoref", "k1", Prefixed, K, K1, D.0, D.1),
    m("autoref", "k1_axis", Prefixed, K, K1_AXIS, "deg", "deg"),
    m("autoref", "k2", Prefixed, K, K2, D.0, D.1),
    m("autoref", "k2_axis", Prefixed, K, K2_AXIS, "deg", "deg"),
    m(
        "autoref",
        "pd",
        NoEye,
        None,
        local("pupillary-distance", "Interpupillary distance"),
        "mm",
        "mm",
    ),
    Measure {
        code_left: Some(loinc("79893-4", "Left eye Intraocular pressure")),
        ..m(
            "tonometer",
            "iop",
            Prefixed,
            None,
            loinc("79892-6", "Right eye Intraocular pressure"),
            "mmHg",
            "mm[Hg]",
        )
    },
    m("tonometer", "cct", Prefixed, None, CCT, "µm", "um"),
    m(
        "tonometer",
        "iopc",
        Prefixed,
        None,
        local(
            "iop-cct-corrected",
            "Intraocular pressure corrected for central corneal thickness",
        ),
        "mmHg",
        "mm[Hg]",
    ),
    m("tomographer", "k1", EyeField, K, K1, D.0, D.1),
    m("tomographer", "k2", EyeField, K, K2, D.0, D.1),
    m(
        "tomographer",
        "km",
        EyeField,
        K,
        local("km-power", "Km, mean corneal front power"),
        D.0,
        D.1,
    ),
    m(
        "tomographer",
        "kmax",
        EyeField,
        None,
        local("kmax", "Kmax, maximum corneal front power"),
        D.0,
        D.1,
    ),
    m(
        "tomographer",
        "astig",
        EyeField,
        K,
        local("corneal-astigmatism", "Corneal front astigmatism"),
        D.0,
        D.1,
    ),
    m(
        "tomographer",
        "thinnest_pachy",
        EyeField,
        None,
        local(
            "thinnest-pachymetry",
            "Corneal thickness at the thinnest point",
        ),
        "µm",
        "um",
    ),
    m(
        "tomographer",
        "apex_pachy",
        EyeField,
        None,
        local("apex-pachymetry", "Corneal thickness at the apex"),
        "µm",
        "um",
    ),
    m("tomographer", "acd", EyeField, None, ACD_ENDO, "mm", "mm"),
    m(
        "tomographer",
        "acv",
        EyeField,
        None,
        local("anterior-chamber-volume", "Anterior chamber volume"),
        "mm³",
        "mm3",
    ),
    m(
        "tomographer",
        "angle",
        EyeField,
        None,
        local("anterior-chamber-angle", "Anterior chamber angle"),
        "deg",
        "deg",
    ),
    m(
        "biometer",
        "al",
        Prefixed,
        None,
        local("axial-length", "Axial length of the eye"),
        "mm",
        "mm",
    ),
    m(
        "biometer",
        "acd",
        Prefixed,
        None,
        local(
            "acd-epithelium",
            "Anterior chamber depth, from the corneal epithelium",
        ),
        "mm",
        "mm",
    ),
    m(
        "biometer",
        "lt",
        Prefixed,
        None,
        local("lens-thickness", "Crystalline lens thickness"),
        "mm",
        "mm",
    ),
    m(
        "biometer",
        "wtw",
        Prefixed,
        None,
        local(
            "white-to-white",
            "Horizontal corneal diameter (white to white)",
        ),
        "mm",
        "mm",
    ),
    m("biometer", "k1", Prefixed, K, K1, D.0, D.1),
    m("biometer", "k2", Prefixed, K, K2, D.0, D.1),
    m(
        "specular",
        "ecd",
        Prefixed,
        None,
        local(
            "endothelial-cell-density",
            "Corneal endothelial cell density",
        ),
        "cells/mm²",
        "/mm2",
    ),
    m(
        "specular",
        "cv",
        Prefixed,
        None,
        local(
            "endothelial-cell-cv",
            "Coefficient of variation of endothelial cell area",
        ),
        "%",
        "%",
    ),
    m(
        "specular",
        "hex",
        Prefixed,
        None,
        local(
            "endothelial-hexagonality",
            "Share of hexagonal endothelial cells",
        ),
        "%",
        "%",
    ),
    m("specular", "cct", Prefixed, None, CCT, "µm", "um"),
    m(
        "asoct",
        "ata",
        EyeField,
        None,
        local("angle-to-angle", "Angle-to-angle distance"),
        "mm",
        "mm",
    ),
    m(
        "asoct",
        "acw",
        EyeField,
        None,
        local("anterior-chamber-width", "Anterior chamber width"),
        "mm",
        "mm",
    ),
    m(
        "asoct",
        "sts",
        EyeField,
        None,
        local("sulcus-to-sulcus", "Sulcus-to-sulcus distance"),
        "mm",
        "mm",
    ),
    m("asoct", "acd", EyeField, None, ACD_ENDO, "mm", "mm"),
    m(
        "asoct",
        "clr",
        EyeField,
        None,
        local("crystalline-lens-rise", "Crystalline lens rise"),
        "µm",
        "um",
    ),
    m(
        "asoct",
        "lens_vault",
        EyeField,
        None,
        local("lens-vault", "Lens vault"),
        "µm",
        "um",
    ),
];

/// The fields of a record that are not measurements.
pub const IDENTITY_FIELDS: &[&str] = &["patient_id", "exam_date", "exam_time", "eye"];

/// The measures of `device_type`, in catalog order.
pub fn measures(device_type: &str) -> impl Iterator<Item = &'static Measure> + '_ {
    MEASURES
        .iter()
        .filter(move |m| m.device_type == device_type)
}

/// The local code of the DiagnosticReport of one export of `device_type`.
pub fn report_code(device_type: &str) -> Code {
    match device_type {
        "autoref" => local("autoref-exam", "Autorefraction and keratometry exam"),
        "tonometer" => local("tonometer-exam", "Non-contact tonometry exam"),
        "tomographer" => local("tomographer-exam", "Scheimpflug corneal tomography exam"),
        "biometer" => local("biometer-exam", "Optical biometry exam"),
        "specular" => local("specular-exam", "Specular microscopy exam"),
        "asoct" => local("asoct-exam", "Anterior segment OCT exam"),
        _ => local("exam", "Eye exam"),
    }
}

/// Code of the source export's DocumentReference type.
pub const EXPORT_DOCUMENT: Code = local("exam-export", "Exam machine result export (image)");

/// The mapping as the Markdown table of `docs/fhir-mapping.md`.
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| device | field | Observation code | component code | system | display | UCUM | source |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let short = |sys: &str| match sys {
        LOINC => "LOINC",
        SNOMED => "SNOMED CT",
        _ => "local",
    };
    for m in MEASURES {
        let eyes: &[Eye] = match m.laterality {
            Prefixed => &[Eye::Right, Eye::Left],
            EyeField | NoEye => &[Eye::None],
        };
        for &eye in eyes {
            let code = m.code_for(eye);
            let (obs, comp) = match m.group {
                Some(g) => (g.code.code, code.code),
                None => (code.code, "-"),
            };
            let source = match code.system {
                LOINC => "LOINC (issue #16)",
                _ => "examlink (no code this project can vouch for)",
            };
            s += &format!(
                "| {} | `{}` | `{obs}` | `{comp}` | {} | {} | `{}` | {source} |\n",
                m.device_type,
                m.field_name(eye),
                short(code.system),
                code.display,
                m.ucum,
            );
        }
    }
    s
}
