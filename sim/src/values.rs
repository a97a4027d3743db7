//! Ground-truth generation: random valid values for every field of a template, in the printed
//! form the device shows, respecting the template's rules (`k1 ≤ k2`, perpendicular axes, mean,
//! difference, absent groups, derived values absent with their inputs), plus the label in the
//! exact shape of the shared samples' labels:
//!
//! ```json
//! {"device_type": "autoref", "firmware": "fw2", "fields": {"patient_id": "00482913", "r_cyl": null, ...}}
//! ```
//!
//! Fields are listed in catalog order; label values are the normalised values (`exam_date` ISO),
//! `null` where the device shows an absent marker.
//!
//! Values are generated on an explicit `today` (exam dates reach it, a `"today"` range bound is
//! checked against it), so a seed gives the same export on any day; [`stamp`] sets the exam date
//! and time of one export to a chosen moment.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use rand::Rng;
use record::rules::Seen;
use record::{FieldStatus, Grammar, Rule, Template};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use crate::printed::{self, format_number, Numeric};

/// Default share of absent groups (catalog: ~5 % per group).
pub const DEFAULT_ABSENT_RATE: f64 = 0.05;

/// Why a template's values could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Ranges and rules could not be satisfied together.
    #[error("template {template}: no valid values after {tries} tries ({last})")]
    Unsatisfiable {
        /// Template id.
        template: String,
        /// Attempts made.
        tries: usize,
        /// The last failed check.
        last: String,
    },
}

/// Ground truth of one export: `{"device_type", "firmware", "fields": {name: string|null}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Label {
    /// Device type (`autoref`).
    pub device_type: String,
    /// Firmware key (`fw2`).
    pub firmware: String,
    /// Normalised values by field name (`None` = absent).
    #[serde(deserialize_with = "fields_from_map")]
    pub fields: Vec<(String, Option<String>)>,
}

fn fields_from_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Option<String>)>, D::Error> {
    let m: BTreeMap<String, Option<String>> = BTreeMap::deserialize(d)?;
    Ok(m.into_iter().collect())
}

struct OrderedFields<'a>(&'a [(String, Option<String>)]);

impl Serialize for OrderedFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Label", 3)?;
        st.serialize_field("device_type", &self.device_type)?;
        st.serialize_field("firmware", &self.firmware)?;
        st.serialize_field("fields", &OrderedFields(&self.fields))?;
        st.end()
    }
}

impl Label {
    /// The label as JSON, fields in catalog order, indented like the shared samples.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser)
            .expect("serialising strings into memory cannot fail");
        let mut s = String::from_utf8(out).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses a label file.
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The value of `name`: `None` if the label has no such field, `Some(None)` if absent.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }
}

/// What one synthetic export shows: per field (template order) the printed text, and the label.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    /// Text drawn in each field's slot (an absent marker when absent).
    pub printed: Vec<String>,
    /// The ground truth.
    pub label: Label,
}

/// Generates values for `t` on `today` (UTC); each absent group goes absent with probability
/// `absent_rate`.
pub fn generate<R: Rng>(
    t: &Template,
    today: NaiveDate,
    rng: &mut R,
    absent_rate: f64,
) -> Result<Values, GenerateError> {
    const TRIES: usize = 200;
    let mut last = String::new();
    for _ in 0..TRIES {
        let absent = draw_absent(t, rng, absent_rate);
        let mut printed: Vec<String> = t
            .fields
            .iter()
            .zip(&absent)
            .map(|(f, a)| match a {
                Some(k) => f.spec.absent[k % f.spec.absent.len()].clone(),
                None => printed::sample_valid(&f.spec, today, rng),
            })
            .collect();
        apply_rules(t, &absent, &mut printed, rng);
        match check(t, &printed, today) {
            Ok(label) => return Ok(Values { printed, label }),
            Err(e) => last = e,
        }
    }
    Err(GenerateError::Unsatisfiable {
        template: t.id.clone(),
        tries: TRIES,
        last,
    })
}

/// Per field: `Some(marker index)` when absent.
fn draw_absent<R: Rng>(t: &Template, rng: &mut R, rate: f64) -> Vec<Option<usize>> {
    let idx = |n: &str| t.fields.iter().position(|f| f.spec.name == n);
    let n = t.fields.len();
    // Union-find over absent_together groups.
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut derived = vec![false; n];
    for r in &t.rules {
        match r {
            Rule::AbsentTogether { fields } => {
                let ids: Vec<usize> = fields.iter().filter_map(|f| idx(f)).collect();
                for w in ids.windows(2) {
                    let (a, b) = (root(&mut parent, w[0]), root(&mut parent, w[1]));
                    parent[a] = b;
                }
            }
            Rule::AbsentIfAnyAbsent { target, .. } => {
                if let Some(i) = idx(target) {
                    derived[i] = true;
                }
            }
            _ => {}
        }
    }
    let mut group_draw: BTreeMap<usize, Option<usize>> = BTreeMap::new();
    let mut out = vec![None; n];
    for i in 0..n {
        if t.fields[i].spec.absent.is_empty() || derived[i] {
            continue;
        }
        let g = root(&mut parent, i);
        let d = *group_draw.entry(g).or_insert_with(|| {
            rng.gen_bool(rate.clamp(0.0, 1.0))
                .then(|| rng.gen_range(0..8))
        });
        out[i] = d;
    }
    for r in &t.rules {
        if let Rule::AbsentIfAnyAbsent { target, of } = r {
            if let Some(i) = idx(target) {
                let any = of.iter().filter_map(|f| idx(f)).find_map(|j| out[j]);
                if !t.fields[i].spec.absent.is_empty() {
                    out[i] = any.map(|_| 0);
                }
            }
        }
    }
    out
}

fn apply_rules<R: Rng>(
    t: &Template,
    absent: &[Option<usize>],
    printed: &mut [String],
    rng: &mut R,
) {
    let idx = |n: &str| {
        t.fields
            .iter()
            .position(|f| f.spec.name == n)
            .filter(|&i| absent[i].is_none())
    };
    let num = |i: usize| Numeric::of(&t.fields[i].spec);
    let value = |p: &[String], i: usize| -> Option<f64> { p[i].parse().ok() };
    // Order: relations between measured values first, derived values last.
    for r in &t.rules {
        match r {
            Rule::Le { a, b } => {
                let (Some(ia), Some(ib)) = (idx(a), idx(b)) else {
                    continue;
                };
                let (Some(na), Some(nb)) = (num(ia), num(ib)) else {
                    continue;
                };
                let Some(x) = value(printed, ia) else {
                    continue;
                };
                // Corneal astigmatism: mostly under 2 D, sometimes up to ~6 D.
                let d = if rng.gen_bool(0.85) {
                    rng.gen_range(0.0..2.0f64)
                } else {
                    rng.gen_range(0.0..6.0f64)
                };
                let mut y = nb.snap(x + d);
                if y < x {
                    y = nb.snap_up(x);
                }
                if y > nb.hi {
                    // `a` too close to the top of `b`'s range: pull it down.
                    y = nb.hi;
                    printed[ia] = format_number(na.snap(y - d).min(y), &na);
                }
                printed[ib] = format_number(y, &nb);
            }
            Rule::Perpendicular { a, b, .. } => {
                let (Some(ia), Some(ib)) = (idx(a), idx(b)) else {
                    continue;
                };
                let Some(x) = value(printed, ia) else {
                    continue;
                };
                let y = if x + 90.0 <= 180.0 {
                    x + 90.0
                } else {
                    x - 90.0
                };
                if let Some(nb) = num(ib) {
                    printed[ib] = format_number(y, &nb);
                }
            }
            _ => {}
        }
    }
    for r in &t.rules {
        let (target, xs, diff) = match r {
            Rule::Mean { target, of, .. } => (target, of.as_slice(), false),
            Rule::Difference { target, of, .. } => (target, of.as_slice(), true),
            _ => continue,
        };
        let Some(it) = idx(target) else { continue };
        let vals: Option<Vec<f64>> = xs
            .iter()
            .map(|n| idx(n).and_then(|i| value(printed, i)))
            .collect();
        let (Some(vals), Some(nt)) = (vals, num(it)) else {
            continue;
        };
        let v = if diff {
            vals[0] - vals[1]
        } else {
            vals.iter().sum::<f64>() / vals.len() as f64
        };
        printed[it] = format_number(v, &nt.without_step());
    }
}

/// The texts a device prints for `label` (template field order): dates in the template's
/// format, absent fields as their first absent marker.
pub fn printed_from_label(t: &Template, label: &Label) -> Vec<String> {
    t.fields
        .iter()
        .map(|f| match label.get(&f.spec.name).flatten() {
            None => f.spec.absent.first().cloned().unwrap_or_default(),
            Some(v) => match &f.spec.grammar {
                Grammar::Date { format } => chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map(|d| printed::format_date(d, format))
                    .unwrap_or_else(|_| v.to_owned()),
                _ => v.to_owned(),
            },
        })
        .collect()
}

/// The exam date and time fields a stamp sets.
const EXAM_DATE: &str = "exam_date";
const EXAM_TIME: &str = "exam_time";

/// Sets `values`' exam date to `at`'s date and its exam time (where the layout shows one) to
/// `at`'s `HH:MM`, printed in the template's formats, label updated to match. The moment is the
/// device's own clock and is printed as given, even outside the template's range (a device
/// clock far off), so the label stays what the screen shows.
pub fn stamp(t: &Template, values: &mut Values, at: NaiveDateTime) {
    for (i, f) in t.fields.iter().enumerate() {
        let (text, value) = match (f.spec.name.as_str(), &f.spec.grammar) {
            (EXAM_DATE, Grammar::Date { format }) => (
                printed::format_date(at.date(), format),
                at.format("%Y-%m-%d").to_string(),
            ),
            (EXAM_TIME, Grammar::Time) => {
                let hm = at.format("%H:%M").to_string();
                (hm.clone(), hm)
            }
            _ => continue,
        };
        if let Some(slot) = values.printed.get_mut(i) {
            *slot = text;
        }
        if let Some((_, v)) = values
            .label
            .fields
            .iter_mut()
            .find(|(n, _)| *n == f.spec.name)
        {
            *v = Some(value);
        }
    }
}

/// Checks every printed text against its field (a `"today"` bound on `today`, UTC) and the
/// rules; returns the label.
pub fn check(t: &Template, printed: &[String], today: NaiveDate) -> Result<Label, String> {
    let mut seen = BTreeMap::new();
    let mut fields = Vec::with_capacity(t.fields.len());
    for (f, text) in t.fields.iter().zip(printed) {
        let c = f.spec.check_printed_at(text, today);
        let s = match c.status {
            FieldStatus::Ok => Seen::Present(c.number),
            FieldStatus::Absent => Seen::Absent,
            _ => {
                return Err(format!(
                    "{} {text:?}: {}",
                    f.spec.name,
                    c.reason.unwrap_or_default()
                ))
            }
        };
        seen.insert(f.spec.name.clone(), s);
        fields.push((f.spec.name.clone(), c.value));
    }
    if let Some(v) = t.rules.iter().find_map(|r| r.check(&seen)) {
        return Err(v.reason);
    }
    Ok(Label {
        device_type: t.device_type.clone(),
        firmware: t.firmware.clone(),
        fields,
    })
}
