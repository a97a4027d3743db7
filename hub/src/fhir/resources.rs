//! Pure rendering: one stored export ([`Exam`], read by [`super::store`]) becomes its FHIR R4
//! resources ([`Rendered`]), as `serde_json` values. No I/O.
//!
//! Ids are stable and derived from the record: the DiagnosticReport's id is the record id; an
//! Observation's is the record id's first 32 hex digits, the eye and the code; the source
//! export's DocumentReference is `img-` and the image digest's first 60 hex digits; a Device's
//! is its device id (`_` written `.`); a Provenance's is `rev-`, the record id's first 32
//! digits and the field. Each resource also carries a business identifier in an examlink
//! system ([`ids`]), which the push stage uses for conditional updates.
//!
//! Status: `preliminary` while any value of the Observation is flagged for review; `amended`
//! once a reviewer changed a value (status `corrected`, or `absent` by review); `final`
//! otherwise (read `ok`, or `verified` by a reviewer). A value the device shows as absent has
//! no value and `dataAbsentReason` `error`; a flagged one `temp-unknown`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::mapping::{self, Code, Eye, Group, Laterality, Measure};
use super::provenance;

/// Business identifier systems of the resources the hub makes.
pub mod ids {
    /// Observation: `<record id>/<eye>/<code>`.
    pub const OBSERVATION: &str = "https://examlink.invalid/fhir/sid/observation";
    /// DiagnosticReport: the record id.
    pub const REPORT: &str = "https://examlink.invalid/fhir/sid/record";
    /// Device: the device id.
    pub const DEVICE: &str = "https://examlink.invalid/fhir/sid/device";
    /// DocumentReference: the export's SHA-256 (hex).
    pub const IMAGE_SHA256: &str = "https://examlink.invalid/fhir/sid/image-sha256";
    /// Provenance: `<record id>/<field>`.
    pub const REVIEW: &str = "https://examlink.invalid/fhir/sid/review";
    /// A person's hub user name.
    pub const USER: &str = "https://examlink.invalid/fhir/sid/user";
}

const DAR: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";
const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// One stored measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Field name.
    pub field: String,
    /// Normalised value as printed.
    pub value: Option<String>,
    /// As a number.
    pub number: Option<f64>,
    /// `ok`, `absent`, `unreadable`, `invalid`, `verified`, `corrected`.
    pub status: String,
    /// Why it is not ok.
    pub reason: Option<String>,
    /// The reviewer, when reviewed.
    pub reviewed_by: Option<String>,
}

/// One review decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// Field.
    pub field: String,
    /// The measurement status it left (`verified`, `corrected`, `absent`).
    pub decision: String,
    /// The value decided.
    pub value: Option<String>,
    /// What was there before: value (or the reader's raw text) and status.
    pub before: Option<String>,
    /// The status before.
    pub before_status: String,
    /// Who decided.
    pub by: String,
    /// Other reviewers whose blind entries agreed or were outvoted.
    pub also: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One stored export with everything its resources need.
#[derive(Debug, Clone, PartialEq)]
pub struct Exam {
    /// Record id (64 hex digits).
    pub record_id: String,
    /// Device id.
    pub device_id: String,
    /// Device type.
    pub device_type: String,
    /// Template id.
    pub template: String,
    /// Firmware key.
    pub firmware: String,
    /// The device model (from the template), when the hub knows the template version.
    pub model: Option<String>,
    /// The firmware string shown on the export.
    pub firmware_string: Option<String>,
    /// Chart number.
    pub patient_id: Option<String>,
    /// `YYYY-MM-DD`.
    pub exam_date: Option<String>,
    /// `HH:MM`.
    pub exam_time: Option<String>,
    /// Export file name.
    pub source_file: String,
    /// SHA-256 of the export.
    pub image_sha256: String,
    /// When the agent took the file.
    pub captured_at: DateTime<Utc>,
    /// When the hub received it.
    pub received_at: DateTime<Utc>,
    /// Every measurement.
    pub measurements: Vec<Measurement>,
    /// Every review decision.
    pub reviews: Vec<Review>,
}

/// How to render: the deployment's choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext {
    /// The identifier system of chart numbers.
    pub patient_system: String,
    /// The devices' UTC offset (`+01:00`), when configured: then `effectiveDateTime` carries
    /// the exam time; without it only the date (FHIR needs a zone with a time).
    pub exam_utc_offset: Option<String>,
}

/// An Observation and what it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObservation {
    /// The code (group or measure).
    pub code: Code,
    /// The eye.
    pub eye: Eye,
    /// The fields it holds.
    pub fields: Vec<String>,
    /// The resource.
    pub resource: Value,
}

/// Every resource of one export.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The exam machine.
    pub device: Value,
    /// The source export.
    pub document: Value,
    /// One per measure (or group) and eye.
    pub observations: Vec<RenderedObservation>,
    /// The export's report.
    pub report: Value,
    /// One per review decision.
    pub provenances: Vec<Value>,
}

impl Rendered {
    /// All resources: device, document, observations, report, provenances.
    pub fn all(&self) -> Vec<&Value> {
        let mut v = vec![&self.device, &self.document];
        v.extend(self.observations.iter().map(|o| &o.resource));
        v.push(&self.report);
        v.extend(self.provenances.iter());
        v
    }
}

/// The FHIR id of device `device_id`.
pub fn device_id(device_id: &str) -> String {
    device_id.replace('_', ".")
}

/// The FHIR id of the Observation of `record` for `eye` and `code`.
pub fn observation_id(record: &str, eye: Eye, code: &str) -> String {
    format!("{}-{}-{code}", &record[..32.min(record.len())], eye.key())
}

/// The FHIR id of the DocumentReference of the export with digest `sha`.
pub fn document_id(sha: &str) -> String {
    format!("img-{}", &sha[..60.min(sha.len())])
}

/// The FHIR id of the Provenance of the review of `field` in `record`.
pub fn provenance_id(record: &str, field: &str) -> String {
    format!(
        "rev-{}-{}",
        &record[..32.min(record.len())],
        field.replace('_', "-")
    )
}

fn coding(c: Code) -> Value {
    json!({"system": c.system, "code": c.code, "display": c.display})
}

pub(super) fn concept(c: Code) -> Value {
    json!({"coding": [coding(c)], "text": c.display})
}

pub(super) fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn reference(kind: &str, id: &str, system: &str, value: &str) -> Value {
    json!({"reference": format!("{kind}/{id}"), "type": kind,
           "identifier": {"system": system, "value": value}})
}

/// Where a value stands, for the Observation's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    Final,
    Amended,
    Preliminary,
}

impl Standing {
    fn of(m: &Measurement) -> Self {
        match m.status.as_str() {
            "unreadable" | "invalid" => Standing::Preliminary,
            "corrected" => Standing::Amended,
            "absent" if m.reviewed_by.is_some() => Standing::Amended,
            _ => Standing::Final,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Standing::Final => "final",
            Standing::Amended => "amended",
            Standing::Preliminary => "preliminary",
        }
    }
}

/// The number of a measurement: an integer when printed without decimals (`90`, not `90.0`).
fn quantity(m: &Measurement) -> Option<serde_json::Number> {
    let n = m.number?;
    let printed = m.value.as_deref().unwrap_or_default();
    if !printed.contains('.') {
        if let Ok(i) = printed.trim_start_matches('+').parse::<i64>() {
            return Some(i.into());
        }
    }
    serde_json::Number::from_f64(n)
}

/// The value (or why there is none) of one measurement, as the keys of an Observation or a
/// component: `valueQuantity` or `dataAbsentReason`.
fn value_keys(
    measure: &Measure,
    m: Option<&Measurement>,
    into: &mut serde_json::Map<String, Value>,
) {
    let flagged = m.is_some_and(|m| Standing::of(m) == Standing::Preliminary);
    match m.filter(|_| !flagged).and_then(quantity) {
        Some(n) => {
            into.insert(
                "valueQuantity".into(),
                json!({"value": n, "unit": measure.unit, "system": mapping::UCUM, "code": measure.ucum}),
            );
        }
        None => {
            let (code, display, text) = if flagged {
                let reason = m.and_then(|m| m.reason.clone()).unwrap_or_default();
                (
                    "temp-unknown",
                    "Temporarily Unknown",
                    format!("flagged for review: {reason}"),
                )
            } else {
                (
                    "error",
                    "Error",
                    "the export shows no value (---, ERR)".to_owned(),
                )
            };
            into.insert(
                "dataAbsentReason".into(),
                json!({"coding": [{"system": DAR, "code": code, "display": display}], "text": text}),
            );
        }
    }
}

/// The eye of an exam whose device names one eye per exam (`eye` field).
fn exam_eye(exam: &Exam) -> Eye {
    let eye = exam.measurements.iter().find(|m| m.field == "eye");
    match eye.filter(|m| Standing::of(m) != Standing::Preliminary) {
        Some(m) => match m.value.as_deref() {
            Some("OD") => Eye::Right,
            Some("OS") => Eye::Left,
            _ => Eye::None,
        },
        None => Eye::None,
    }
}

impl Exam {
    fn measurement(&self, field: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.field == field)
    }

    pub(super) fn subject(&self, ctx: &RenderContext) -> Option<Value> {
        self.patient_id.as_ref().map(|p| {
            json!({"type": "Patient", "identifier": {"system": ctx.patient_system, "value": p}})
        })
    }

    fn effective(&self, ctx: &RenderContext) -> Option<String> {
        let date = self.exam_date.clone()?;
        Some(match (&self.exam_time, &ctx.exam_utc_offset) {
            (Some(t), Some(off)) => format!("{date}T{t}:00{off}"),
            _ => date,
        })
    }

    pub(super) fn device_ref(&self) -> Value {
        reference(
            "Device",
            &device_id(&self.device_id),
            ids::DEVICE,
            &self.device_id,
        )
    }

    pub(super) fn document_ref(&self) -> Value {
        reference(
            "DocumentReference",
            &document_id(&self.image_sha256),
            ids::IMAGE_SHA256,
            &self.image_sha256,
        )
    }
}

/// Renders every resource of `exam`.
pub fn render(exam: &Exam, ctx: &RenderContext) -> Rendered {
    let observations = observations(exam, ctx);
    let worst = observations
        .iter()
        .map(|o| match o.resource["status"].as_str() {
            Some("preliminary") => Standing::Preliminary,
            Some("amended") => Standing::Amended,
            _ => Standing::Final,
        })
        .max()
        .unwrap_or(Standing::Final);
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "id": exam.record_id,
        "identifier": [{"system": ids::REPORT, "value": exam.record_id}],
        "status": worst.as_str(),
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                   "code": "OPH", "display": "Ophthalmology"}]}],
        "code": concept(mapping::report_code(&exam.device_type)),
        "issued": instant(exam.received_at),
        "result": observations.iter().map(|o| {
            let id = o.resource["id"].as_str().unwrap_or_default();
            reference("Observation", id, ids::OBSERVATION,
                      o.resource["identifier"][0]["value"].as_str().unwrap_or_default())
        }).collect::<Vec<_>>(),
    });
    if let Some(s) = exam.subject(ctx) {
        report["subject"] = s;
    }
    if let Some(e) = exam.effective(ctx) {
        report["effectiveDateTime"] = json!(e);
    }
    let provenances = exam
        .reviews
        .iter()
        .map(|r| provenance::provenance(exam, &observations, r))
        .collect();
    Rendered {
        device: provenance::device(exam),
        document: provenance::document(exam, ctx),
        observations,
        report,
        provenances,
    }
}

fn observations(exam: &Exam, ctx: &RenderContext) -> Vec<RenderedObservation> {
    let single = exam_eye(exam);
    // (eye, group code or measure code) in catalog order, with its measures.
    let mut slots: Vec<(Eye, Option<Group>, Code, Vec<&Measure>)> = Vec::new();
    for eye_pass in [Eye::Right, Eye::Left, Eye::None] {
        for m in mapping::measures(&exam.device_type) {
            let eye = match m.laterality {
                Laterality::Prefixed => eye_pass,
                Laterality::EyeField if eye_pass == Eye::Right => single,
                Laterality::NoEye if eye_pass == Eye::Right => Eye::None,
                _ => continue,
            };
            if m.laterality == Laterality::Prefixed && eye == Eye::None {
                continue;
            }
            let code = m.group.map_or(m.code_for(eye), |g| g.code);
            match slots
                .iter_mut()
                .find(|(e, g, c, _)| *e == eye && g.is_some() && *g == m.group && *c == code)
            {
                Some(slot) => slot.3.push(m),
                None => slots.push((eye, m.group, code, vec![m])),
            }
        }
    }
    slots
        .into_iter()
        .filter(|(eye, _, _, ms)| {
            ms.iter()
                .any(|m| exam.measurement(&m.field_name(*eye)).is_some())
        })
        .map(|(eye, group, code, ms)| observation(exam, ctx, eye, group, code, &ms))
        .collect()
}

fn observation(
    exam: &Exam,
    ctx: &RenderContext,
    eye: Eye,
    group: Option<Group>,
    code: Code,
    ms: &[&Measure],
) -> RenderedObservation {
    let fields: Vec<String> = ms.iter().map(|m| m.field_name(eye)).collect();
    let stored: Vec<Option<&Measurement>> = fields.iter().map(|f| exam.measurement(f)).collect();
    let standing = stored
        .iter()
        .flatten()
        .map(|m| Standing::of(m))
        .max()
        .unwrap_or(Standing::Final);
    let id = observation_id(&exam.record_id, eye, code.code);
    let mut o = json!({
        "resourceType": "Observation",
        "id": id,
        "identifier": [{"system": ids::OBSERVATION,
                        "value": format!("{}/{}/{}", exam.record_id, eye.key(), code.code)}],
        "status": standing.as_str(),
        "category": [{"coding": [{"system": CATEGORY, "code": "exam", "display": "Exam"}]}],
        "code": concept(code),
        "issued": instant(exam.received_at),
        "device": exam.device_ref(),
        "derivedFrom": [exam.document_ref()],
    });
    if let Some(s) = exam.subject(ctx) {
        o["subject"] = s;
    }
    if let Some(e) = exam.effective(ctx) {
        o["effectiveDateTime"] = json!(e);
    }
    if let Some(site) = eye.body_site() {
        o["bodySite"] = concept(site);
    }
    let map = o.as_object_mut().expect("an object");
    match group {
        None => value_keys(ms[0], stored[0], map),
        Some(_) => {
            let components: Vec<Value> = ms
                .iter()
                .zip(&stored)
                .map(|(m, s)| {
                    let mut c = serde_json::Map::new();
                    c.insert("code".into(), concept(m.code_for(eye)));
                    value_keys(m, *s, &mut c);
                    Value::Object(c)
                })
                .collect();
            map.insert("component".into(), Value::Array(components));
        }
    }
    let notes: Vec<Value> = stored
        .iter()
        .flatten()
        .filter_map(|m| match (Standing::of(m), &m.reviewed_by) {
            (Standing::Preliminary, _) => Some(format!(
                "{}: flagged ({}), awaiting review",
                m.field, m.status
            )),
            (_, Some(by)) => Some(format!("{}: {} by {by}", m.field, m.status)),
            _ => None,
        })
        .map(|text| json!({"text": text}))
        .collect();
    if !notes.is_empty() {
        map.insert("note".into(), Value::Array(notes));
    }
    RenderedObservation {
        code,
        eye,
        fields,
        resource: o,
    }
}
