//! From what the reader read to each field's status, never silently wrong:
//!
//! 1. the text is one of the field's absent markers → `absent` (if the reader is sure of it);
//! 2. otherwise [`record::FieldSpec::check_printed`] checks shape, range and step → `invalid`
//!    with the grammar's reason when it fails;
//! 3. a reading below the confidence threshold → `unreadable`, whatever it says;
//! 4. then the template's cross-field rules ([`record::Rule`]) flag every field of a violated
//!    rule `invalid` (one of them was misread; a person decides which);
//! 5. and on an export much blurrier than the samples ([`guard_identity`]) the identity fields
//!    (`patient_id`, `eye`, `exam_date`) are `unreadable`: a misread one files the exam under
//!    another patient, eye or date, and the reader's confidence is not to be trusted that far
//!    past what it was checked on.
//!
//! Value conventions follow the record contract: `ok` carries the normalised value (dates ISO)
//! and its number; `absent` and `unreadable` carry no value; `invalid` carries the normalised
//! value when the text had the right shape. `raw` keeps the text as read whenever it differs
//! from the value or the field is not ok, so a reviewer sees the reader's best guess.

use record::rules::Seen;
use record::{Field, FieldStatus, Template};

use super::decode::Reading;

/// Thresholds of the field decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldPolicy {
    /// A reading (value or absent marker) below this calibrated confidence is `unreadable`.
    pub min_confidence: f32,
    /// The same for the identity fields ([`IDENTITY_FIELDS`]): stricter, since a misread one
    /// files the exam under another patient, eye or date, where no range or rule catches it.
    /// Chosen from the silent-error curves in `models/MODEL_CARD.md` (`robust-bench --curves`).
    pub identity_min_confidence: f32,
    /// An export whose firmware line fits the plate best only blurred by more than this
    /// (Gaussian sigma, px; `vision::FirmwareCheck::blur`) has its identity fields sent to a
    /// person. The shared samples fit at 0-1.0, the simulator's documented variation at 0-1.0
    /// but 1 tomographer scan in 26; the one ok-but-wrong `patient_id` of the #14 ink set was
    /// at 1.5.
    pub identity_max_blur: f32,
}

impl Default for FieldPolicy {
    fn default() -> Self {
        Self {
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            identity_min_confidence: IDENTITY_MIN_CONFIDENCE,
            identity_max_blur: 1.2,
        }
    }
}

/// The fields whose misreading files an exam under the wrong patient, eye or date.
pub const IDENTITY_FIELDS: [&str; 3] = ["patient_id", "eye", "exam_date"];

impl FieldPolicy {
    /// The confidence a reading of the field `name` needs.
    pub fn threshold(&self, name: &str) -> f32 {
        if IDENTITY_FIELDS.contains(&name) {
            self.identity_min_confidence
        } else {
            self.min_confidence
        }
    }

    /// Every reading passes the confidence gate (the grammar, rules and blur guard still
    /// apply): what `robust-bench --curves` measures thresholds on.
    pub const NO_CONFIDENCE_GATE: FieldPolicy = FieldPolicy {
        min_confidence: 0.0,
        identity_min_confidence: 0.0,
        identity_max_blur: 1.2,
    };
}

/// Makes the `ok` identity fields `unreadable` (value kept as `raw`) when the export's `blur`
/// is past `policy.identity_max_blur`.
pub fn guard_identity(fields: &mut [Field], blur: f32, policy: &FieldPolicy) {
    if blur.is_nan() || blur <= policy.identity_max_blur {
        return;
    }
    for f in fields
        .iter_mut()
        .filter(|f| IDENTITY_FIELDS.contains(&f.name.as_str()) && f.status == FieldStatus::Ok)
    {
        f.status = FieldStatus::Unreadable;
        f.raw = f.raw.take().or_else(|| f.value.take());
        f.value = None;
        f.number = None;
        f.reason = Some(format!(
            "the export is blurrier than the reader was checked on (plate blur {blur:.1} px): \
             an identity field needs a person"
        ));
    }
}

/// Default [`FieldPolicy::min_confidence`]: calibrated on the shared samples so that no `ok`
/// field was wrong (see the golden test `recognize_golden`), and kept by the silent-error curves
/// of the simulated stress sets (`models/MODEL_CARD.md`).
pub const DEFAULT_MIN_CONFIDENCE: f32 = 0.90;

/// Default [`FieldPolicy::identity_min_confidence`], from the silent-error curves of the
/// simulated stress sets (`models/MODEL_CARD.md`, "Per-field thresholds").
pub const IDENTITY_MIN_CONFIDENCE: f32 = 0.95;

/// Decides one field from its reading (`contrast`: the crop's ink contrast; a blank box cannot
/// be read).
pub fn decide(
    spec: &record::FieldSpec,
    reading: &Reading,
    contrast: f32,
    policy: &FieldPolicy,
) -> Field {
    let text = reading.text.as_str();
    let confidence = if reading.confidence.is_finite() {
        reading.confidence.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut field = Field {
        name: spec.name.clone(),
        value: None,
        number: None,
        unit: spec.unit.clone(),
        status: FieldStatus::Unreadable,
        confidence,
        reason: None,
        raw: Some(text.to_owned()),
    };
    if contrast < vision::crop::MIN_CONTRAST {
        field.confidence = 0.0;
        field.reason = Some(format!("no ink in the field box (contrast {contrast:.3})"));
        return field;
    }
    if text.is_empty() {
        field.confidence = 0.0;
        field.reason = Some("the reader could not form a text the field's grammar allows".into());
        return field;
    }
    let checked = spec.check_printed(text);
    let threshold = policy.threshold(&spec.name);
    let sure = confidence >= threshold;
    match checked.status {
        FieldStatus::Absent if sure => {
            field.status = FieldStatus::Absent;
            field.reason = checked.reason;
        }
        FieldStatus::Ok if sure => {
            field.status = FieldStatus::Ok;
            field.raw = (checked.value.as_deref() != Some(text)).then(|| text.to_owned());
            field.value = checked.value;
            field.number = checked.number;
        }
        FieldStatus::Invalid if sure => {
            field.status = FieldStatus::Invalid;
            field.value = checked.value;
            field.number = checked.number;
            field.reason = checked.reason;
        }
        _ => {
            field.reason = Some(format!(
                "confidence {confidence:.3} < {threshold:.2} (read {text:?})"
            ));
        }
    }
    field
}

/// Applies the template's cross-field rules: every field of a violated rule that is `ok` or
/// `absent` becomes `invalid` with the rule's reason.
pub fn apply_rules(template: &Template, fields: &mut [Field]) {
    let seen = Seen::of_fields(fields);
    for rule in &template.rules {
        let Some(v) = rule.check(&seen) else { continue };
        for f in fields.iter_mut().filter(|f| v.fields.contains(&f.name)) {
            if matches!(f.status, FieldStatus::Ok | FieldStatus::Absent) {
                f.status = FieldStatus::Invalid;
                f.reason = Some(format!("rule violated: {}", v.reason));
                if f.raw.is_none() {
                    f.raw = f.value.clone();
                }
            }
        }
    }
}

/// The best guess for a field's normalised value, for outputs that show one for every field
/// (the `agent recognize` JSON): the value, or for an `unreadable`/`invalid` field the
/// normalised raw text when it has the field's shape. `None` for `absent`.
pub fn best_guess(spec: &record::FieldSpec, field: &Field) -> Option<String> {
    if field.value.is_some() || field.status == FieldStatus::Absent {
        return field.value.clone();
    }
    let raw = field.raw.as_deref()?;
    if spec.absent.iter().any(|a| a == raw) {
        return None;
    }
    spec.grammar.normalise(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::{FieldSpec, Grammar, Rule, Sign};

    fn spec() -> FieldSpec {
        FieldSpec {
            name: "r_sph".into(),
            grammar: Grammar::Decimal {
                decimals: 2,
                sign: Sign::Always,
            },
            unit: Some("D".into()),
            range: Some(["-25.00".into(), "+22.00".into()]),
            step: Some(0.25),
            absent: vec!["---".into()],
        }
    }

    fn reading(text: &str, confidence: f32) -> Reading {
        Reading {
            text: text.into(),
            char_probs: vec![],
            confidence,
        }
    }

    #[test]
    fn statuses() {
        let p = FieldPolicy::default();
        let d = |t, c| decide(&spec(), &reading(t, c), 0.5, &p);
        let ok = d("-1.25", 0.99);
        assert_eq!(
            (ok.status, ok.value.as_deref(), ok.number, ok.raw.as_deref()),
            (FieldStatus::Ok, Some("-1.25"), Some(-1.25), None)
        );
        assert_eq!(d("---", 0.99).status, FieldStatus::Absent);
        assert_eq!(d("---", 0.30).status, FieldStatus::Unreadable);
        let low = d("-1.25", 0.5);
        assert_eq!(
            (low.status, low.value.as_deref(), low.raw.as_deref()),
            (FieldStatus::Unreadable, None, Some("-1.25"))
        );
        assert_eq!(best_guess(&spec(), &low).as_deref(), Some("-1.25"));
        let step = d("-1.30", 0.99);
        assert_eq!(step.status, FieldStatus::Invalid);
        assert!(step.reason.unwrap().contains("step"));
        assert_eq!(d("+30.00", 0.99).status, FieldStatus::Invalid);
        assert_eq!(
            decide(&spec(), &reading("-1.25", 0.99), 0.01, &p).status,
            FieldStatus::Unreadable
        );
    }

    // See: #14
    #[test]
    fn identity_fields_need_the_stricter_threshold() {
        let p = FieldPolicy::default();
        assert!(p.identity_min_confidence > p.min_confidence);
        let id = FieldSpec {
            name: "patient_id".into(),
            grammar: Grammar::Digits { count: 8 },
            unit: None,
            range: None,
            step: None,
            absent: vec![],
        };
        let between = (p.min_confidence + p.identity_min_confidence) / 2.0;
        let r = decide(&id, &reading("35072008", between), 0.5, &p);
        assert_eq!(r.status, FieldStatus::Unreadable);
        assert!(r
            .reason
            .unwrap()
            .contains(&format!("{:.2}", p.identity_min_confidence)));
        assert_eq!(
            decide(&spec(), &reading("-1.25", between), 0.5, &p).status,
            FieldStatus::Ok
        );
        let sure = decide(&id, &reading("35072008", 0.999), 0.5, &p);
        assert_eq!(sure.status, FieldStatus::Ok);
    }

    // See: #14
    #[test]
    fn identity_fields_of_a_very_blurred_export_go_to_a_person() {
        let field = |name: &str, value: &str| Field {
            name: name.into(),
            value: Some(value.into()),
            number: None,
            unit: None,
            status: FieldStatus::Ok,
            confidence: 0.99,
            reason: None,
            raw: None,
        };
        let mut fields = vec![field("patient_id", "35072008"), field("k1", "43.12")];
        let p = FieldPolicy::default();
        guard_identity(&mut fields, 1.0, &p);
        assert!(fields.iter().all(|f| f.status == FieldStatus::Ok));
        guard_identity(&mut fields, f32::NAN, &p);
        assert!(fields.iter().all(|f| f.status == FieldStatus::Ok));
        guard_identity(&mut fields, 1.5, &p);
        assert_eq!(fields[0].status, FieldStatus::Unreadable);
        assert_eq!(
            (fields[0].value.as_deref(), fields[0].raw.as_deref()),
            (None, Some("35072008"))
        );
        assert!(fields[0].reason.as_deref().unwrap().contains("blurrier"));
        assert_eq!(fields[1].status, FieldStatus::Ok, "only identity fields");
    }

    #[test]
    fn rules_flag_every_field_they_name() {
        let t = record::Template {
            id: "t".into(),
            version: 1,
            device_type: "autoref".into(),
            firmware: "fw".into(),
            model: "m".into(),
            firmware_string: "v".into(),
            width: 10,
            height: 10,
            plate: "p.png".into(),
            export_format: "png".into(),
            variation: Default::default(),
            anchors: vec![],
            fields: vec![],
            rules: vec![Rule::Le {
                a: "k1".into(),
                b: "k2".into(),
            }],
        };
        let f = |name: &str, x: f64| Field {
            name: name.into(),
            value: Some(format!("{x:.2}")),
            number: Some(x),
            unit: None,
            status: FieldStatus::Ok,
            confidence: 0.99,
            reason: None,
            raw: None,
        };
        let mut fields = vec![f("k1", 45.0), f("k2", 44.0)];
        apply_rules(&t, &mut fields);
        assert!(fields
            .iter()
            .all(|f| f.status == FieldStatus::Invalid && f.reason.is_some()));
    }
}
