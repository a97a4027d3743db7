//! Cross-field rules, where the physics or the device gives one. A violated rule flags every
//! field it names as `invalid` (at least one of them was misread; a person decides which).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{Field, FieldStatus};

/// One cross-field rule, as written in a template's `[[rules]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// `a ≤ b` (K1 is the flat meridian: `k1 ≤ k2`).
    Le {
        /// Smaller field.
        a: String,
        /// Larger field.
        b: String,
    },
    /// `target = (of[0] + of[1] + ...) / n` within `tolerance`.
    Mean {
        /// The mean field.
        target: String,
        /// Its inputs.
        of: Vec<String>,
        /// Allowed absolute difference (rounding of the printed values).
        tolerance: f64,
    },
    /// `target = of[0] - of[1]` within `tolerance`.
    Difference {
        /// The difference field.
        target: String,
        /// Minuend and subtrahend.
        of: [String; 2],
        /// Allowed absolute difference.
        tolerance: f64,
    },
    /// Two axes in degrees (1..180) 90° apart, within `tolerance` degrees.
    Perpendicular {
        /// First axis.
        a: String,
        /// Second axis.
        b: String,
        /// Allowed deviation from 90°.
        #[serde(default)]
        tolerance: f64,
    },
    /// The fields are absent together or present together.
    AbsentTogether {
        /// The group.
        fields: Vec<String>,
    },
    /// `target` is absent exactly when any of `of` is absent (a derived value).
    AbsentIfAnyAbsent {
        /// The derived field.
        target: String,
        /// Its inputs.
        of: Vec<String>,
    },
}

/// A violated rule: the fields it names and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleViolation {
    /// Fields to flag.
    pub fields: Vec<String>,
    /// Reason, naming the rule and the values.
    pub reason: String,
}

/// What the rules see of a field: absent, or present with an optional number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// The device shows it absent.
    Absent,
    /// Present (number for numeric fields).
    Present(Option<f64>),
    /// Not known (unreadable or invalid): rules involving it are skipped.
    Unknown,
}

impl Seen {
    /// What the rules see of a field with `status`: ok fields are present (with their number),
    /// absent ones absent, unreadable or invalid ones unknown.
    pub fn of(status: FieldStatus, number: Option<f64>) -> Self {
        match status {
            FieldStatus::Ok => Seen::Present(number),
            FieldStatus::Absent => Seen::Absent,
            _ => Seen::Unknown,
        }
    }

    /// The rules' view of a record's fields, by name (what [`Rule::check`] takes).
    pub fn of_fields(fields: &[Field]) -> BTreeMap<String, Seen> {
        fields
            .iter()
            .map(|f| (f.name.clone(), Seen::of(f.status, f.number)))
            .collect()
    }
}

impl Rule {
    /// Every field the rule names.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Rule::Le { a, b } | Rule::Perpendicular { a, b, .. } => vec![a, b],
            Rule::Mean { target, of, .. } | Rule::AbsentIfAnyAbsent { target, of } => {
                std::iter::once(target)
                    .chain(of)
                    .map(String::as_str)
                    .collect()
            }
            Rule::Difference { target, of, .. } => std::iter::once(target)
                .chain(of)
                .map(String::as_str)
                .collect(),
            Rule::AbsentTogether { fields } => fields.iter().map(String::as_str).collect(),
        }
    }

    /// Checks the rule; `None` when it holds or cannot be decided.
    pub fn check(&self, seen: &BTreeMap<String, Seen>) -> Option<RuleViolation> {
        let get = |n: &str| seen.get(n).copied().unwrap_or(Seen::Unknown);
        let num = |n: &str| match get(n) {
            Seen::Present(x) => x,
            _ => None,
        };
        let names = || self.fields().into_iter().map(String::from).collect();
        let violation = |reason: String| {
            Some(RuleViolation {
                fields: names(),
                reason,
            })
        };
        match self {
            Rule::Le { a, b } => {
                let (x, y) = (num(a)?, num(b)?);
                (x > y)
                    .then(|| format!("{a} {x} > {b} {y}"))
                    .and_then(violation)
            }
            Rule::Mean {
                target,
                of,
                tolerance,
            } => {
                let t = num(target)?;
                let xs: Option<Vec<f64>> = of.iter().map(|n| num(n)).collect();
                let xs = xs?;
                let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                ((t - mean).abs() > tolerance + 1e-9)
                    .then(|| format!("{target} {t} is not the mean {mean:.3} of {of:?}"))
                    .and_then(violation)
            }
            Rule::Difference {
                target,
                of,
                tolerance,
            } => {
                let (t, x, y) = (num(target)?, num(&of[0])?, num(&of[1])?);
                ((t - (x - y)).abs() > tolerance + 1e-9)
                    .then(|| format!("{target} {t} is not {} - {} = {:.3}", of[0], of[1], x - y))
                    .and_then(violation)
            }
            Rule::Perpendicular { a, b, tolerance } => {
                let (x, y) = (num(a)?, num(b)?);
                let d = (x - y).abs() % 180.0;
                ((d - 90.0).abs() > tolerance + 1e-9)
                    .then(|| format!("axes {a} {x} and {b} {y} are not 90° apart"))
                    .and_then(violation)
            }
            Rule::AbsentTogether { fields } => {
                let states: Vec<Seen> = fields.iter().map(|n| get(n)).collect();
                if states.contains(&Seen::Unknown) {
                    return None;
                }
                let absent = states.iter().filter(|s| **s == Seen::Absent).count();
                (absent != 0 && absent != fields.len())
                    .then(|| format!("{fields:?} must be absent together"))
                    .and_then(violation)
            }
            Rule::AbsentIfAnyAbsent { target, of } => {
                let t = get(target);
                let ins: Vec<Seen> = of.iter().map(|n| get(n)).collect();
                if t == Seen::Unknown || ins.contains(&Seen::Unknown) {
                    return None;
                }
                let any = ins.contains(&Seen::Absent);
                (any != (t == Seen::Absent))
                    .then(|| format!("{target} must be absent exactly when any of {of:?} is"))
                    .and_then(violation)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pairs: &[(&str, Seen)]) -> BTreeMap<String, Seen> {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn mean_and_order() {
        let km = Rule::Mean {
            target: "km".into(),
            of: vec!["k1".into(), "k2".into()],
            tolerance: 0.011,
        };
        let p = |x| Seen::Present(Some(x));
        assert!(km
            .check(&seen(&[
                ("km", p(42.35)),
                ("k1", p(42.23)),
                ("k2", p(42.48))
            ]))
            .is_none());
        assert!(km
            .check(&seen(&[
                ("km", p(42.95)),
                ("k1", p(42.23)),
                ("k2", p(42.48))
            ]))
            .is_some());
        assert!(km
            .check(&seen(&[
                ("km", Seen::Unknown),
                ("k1", p(1.0)),
                ("k2", p(2.0))
            ]))
            .is_none());
        let le = Rule::Le {
            a: "k1".into(),
            b: "k2".into(),
        };
        assert!(le
            .check(&seen(&[("k1", p(45.0)), ("k2", p(44.0))]))
            .is_some());
        let perp = Rule::Perpendicular {
            a: "a".into(),
            b: "b".into(),
            tolerance: 0.0,
        };
        assert!(perp
            .check(&seen(&[("a", p(141.0)), ("b", p(51.0))]))
            .is_none());
        assert!(perp
            .check(&seen(&[("a", p(6.0)), ("b", p(96.0))]))
            .is_none());
        assert!(perp
            .check(&seen(&[("a", p(6.0)), ("b", p(97.0))]))
            .is_some());
    }

    #[test]
    fn absence_rules() {
        let p = Seen::Present(Some(1.0));
        let r = Rule::AbsentIfAnyAbsent {
            target: "iopc".into(),
            of: vec!["iop".into(), "cct".into()],
        };
        assert!(r
            .check(&seen(&[
                ("iopc", Seen::Absent),
                ("iop", Seen::Absent),
                ("cct", p)
            ]))
            .is_none());
        assert!(r
            .check(&seen(&[("iopc", p), ("iop", Seen::Absent), ("cct", p)]))
            .is_some());
        let g = Rule::AbsentTogether {
            fields: vec!["a".into(), "b".into()],
        };
        assert!(g.check(&seen(&[("a", Seen::Absent), ("b", p)])).is_some());
    }
}
