//! Printed values: how one field's value looks on screen, drawn at random from its grammar,
//! range and step (valid values), or, for recognizer training, deliberately out of range or
//! made of random characters in the grammar's shape (so the model reads characters, not priors).

use chrono::{Datelike, Duration, NaiveDate};
use rand::seq::SliceRandom;
use rand::Rng;
use record::{FieldSpec, Grammar, Sign};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The numeric side of a decimal or integer field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Numeric {
    /// Range minimum.
    pub lo: f64,
    /// Range maximum.
    pub hi: f64,
    /// Step (the field's, or one unit of the last decimal).
    pub step: f64,
    /// Decimals printed (0 for integers).
    pub decimals: usize,
    /// Sign convention.
    pub sign: Sign,
}

impl Numeric {
    /// The numeric description of `spec`, or `None` for non-numeric grammars.
    pub fn of(spec: &FieldSpec) -> Option<Self> {
        let (decimals, sign) = match spec.grammar {
            Grammar::Decimal { decimals, sign } => (decimals, sign),
            Grammar::Integer { sign } => (0, sign),
            _ => return None,
        };
        let unit = 10f64.powi(-(decimals as i32));
        let (lo, hi) = match &spec.range {
            Some([a, b]) => (a.parse().unwrap_or(0.0), b.parse().unwrap_or(999.0)),
            None => (0.0, 999.0),
        };
        Some(Numeric {
            lo,
            hi,
            step: spec.step.unwrap_or(unit),
            decimals,
            sign,
        })
    }

    /// The same field with the step relaxed to one unit of the last decimal.
    pub fn without_step(self) -> Self {
        Numeric {
            step: 10f64.powi(-(self.decimals as i32)),
            ..self
        }
    }

    /// Nearest multiple of the step.
    pub fn snap(&self, x: f64) -> f64 {
        (x / self.step).round() * self.step
    }

    /// Smallest multiple of the step not below `x`.
    pub fn snap_up(&self, x: f64) -> f64 {
        (x / self.step - 1e-9).ceil() * self.step
    }

    /// A uniformly drawn multiple of the step within the range.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> f64 {
        let k0 = (self.lo / self.step - 1e-9).ceil() as i64;
        let k1 = (self.hi / self.step + 1e-9).floor() as i64;
        if k1 < k0 {
            return self.lo;
        }
        rng.gen_range(k0..=k1) as f64 * self.step
    }
}

/// `x` printed with the field's decimals and sign convention (`+1.25`, `0.00`, `-150`, `43.12`).
pub fn format_number(x: f64, n: &Numeric) -> String {
    let body = format!("{:.*}", n.decimals, x.abs());
    let zero = body.bytes().all(|b| b == b'0' || b == b'.');
    match n.sign {
        _ if zero => body,
        Sign::Always if x > 0.0 => format!("+{body}"),
        Sign::Always | Sign::Negative if x < 0.0 => format!("-{body}"),
        _ => body,
    }
}

/// `d` printed with a date format (`DD/MM/YYYY`, `DD-Mon-YYYY`, ...).
pub fn format_date(d: NaiveDate, format: &str) -> String {
    format
        .replace("YYYY", &format!("{:04}", d.year()))
        .replace("Mon", MONTHS[d.month0() as usize])
        .replace("MM", &format!("{:02}", d.month()))
        .replace("DD", &format!("{:02}", d.day()))
}

fn date_range(spec: &FieldSpec) -> (NaiveDate, NaiveDate) {
    let parse = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let default = (
        NaiveDate::from_ymd_opt(2019, 1, 1).unwrap_or_default(),
        NaiveDate::from_ymd_opt(2025, 12, 31).unwrap_or_default(),
    );
    match &spec.range {
        Some([a, b]) => (parse(a).unwrap_or(default.0), parse(b).unwrap_or(default.1)),
        None => default,
    }
}

fn minutes(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    Some(h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
}

fn time_range(spec: &FieldSpec) -> (i64, i64) {
    match &spec.range {
        Some([a, b]) => (
            minutes(a).unwrap_or(7 * 60),
            minutes(b).unwrap_or(19 * 60 + 59),
        ),
        None => (7 * 60, 19 * 60 + 59),
    }
}

fn digits_range(spec: &FieldSpec, count: usize) -> (u64, u64) {
    let max = 10u64.saturating_pow(count.min(19) as u32) - 1;
    match &spec.range {
        Some([a, b]) => (a.parse().unwrap_or(0), b.parse().unwrap_or(max)),
        None => (0, max),
    }
}

/// A random valid value of `spec`, as printed.
pub fn sample_valid<R: Rng>(spec: &FieldSpec, rng: &mut R) -> String {
    match &spec.grammar {
        Grammar::Digits { count } => {
            let (lo, hi) = digits_range(spec, *count);
            format!("{:0width$}", rng.gen_range(lo..=hi.max(lo)), width = count)
        }
        Grammar::Decimal { .. } | Grammar::Integer { .. } => match Numeric::of(spec) {
            Some(n) => format_number(n.sample(rng), &n),
            None => String::new(),
        },
        Grammar::Date { format } => {
            let (a, b) = date_range(spec);
            let days = (b - a).num_days().max(0);
            format_date(a + Duration::days(rng.gen_range(0..=days)), format)
        }
        Grammar::Time => {
            let (a, b) = time_range(spec);
            let m = rng.gen_range(a..=b.max(a));
            format!("{:02}:{:02}", m / 60, m % 60)
        }
        Grammar::Choice { choices } => choices.choose(rng).cloned().unwrap_or_default(),
    }
}

/// A well-formed value of `spec` that may lie outside its range or off its step.
pub fn sample_out_of_range<R: Rng>(spec: &FieldSpec, rng: &mut R) -> String {
    match &spec.grammar {
        Grammar::Decimal { .. } | Grammar::Integer { .. } => {
            let Some(n) = Numeric::of(spec) else {
                return String::new();
            };
            let span = (n.hi - n.lo).abs().max(1.0);
            // Keep the number of integer digits of the widest bound, so the text fits the box.
            let limit = 10f64.powi(int_digits(n.lo.abs().max(n.hi.abs())) as i32) - n.step.min(1.0);
            let mut x = rng.gen_range(n.lo - span * 0.5..=n.hi + span * 0.5);
            x = x.clamp(-limit, limit);
            if n.sign == Sign::None {
                x = x.abs();
            }
            format_number(x, &n.without_step())
        }
        Grammar::Date { format } => {
            let d = NaiveDate::from_ymd_opt(
                rng.gen_range(1990..2040),
                rng.gen_range(1..=12),
                rng.gen_range(1..=28),
            );
            format_date(d.unwrap_or_default(), format)
        }
        Grammar::Time => format!("{:02}:{:02}", rng.gen_range(0..24), rng.gen_range(0..60)),
        _ => sample_valid(spec, rng),
    }
}

fn int_digits(x: f64) -> usize {
    format!("{:.0}", x.abs().floor()).len()
}

/// A text in the shape of a valid value of `spec` with every digit drawn at random (and a random
/// sign and month name where the grammar has one), e.g. `+7.38` or `93/41/2706`.
pub fn sample_random_shape<R: Rng>(spec: &FieldSpec, rng: &mut R) -> String {
    let base = sample_valid(spec, rng);
    let numeric = matches!(
        spec.grammar,
        Grammar::Decimal { .. } | Grammar::Integer { .. }
    );
    let mut out = String::with_capacity(base.len());
    let mut run_start = true;
    let chars: Vec<char> = base.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_digit() {
            let run_len = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let lead =
                numeric && run_start && run_len > 1 && (i == 0 || !chars[i - 1].is_ascii_digit());
            let first_int = lead && !chars[..i].contains(&'.');
            let d = if first_int {
                rng.gen_range(1..10)
            } else {
                rng.gen_range(0..10)
            };
            out.push(char::from(b'0' + d as u8));
            run_start = false;
        } else {
            out.push(c);
            run_start = true;
        }
    }
    if let Grammar::Date { format } = &spec.grammar {
        if format.contains("Mon") {
            for m in MONTHS {
                if out.contains(m) {
                    out = out.replacen(m, MONTHS.choose(rng).unwrap_or(&m), 1);
                    break;
                }
            }
        }
    }
    if let Grammar::Decimal {
        sign: Sign::Always, ..
    }
    | Grammar::Integer { sign: Sign::Always } = spec.grammar
    {
        let body = out.trim_start_matches(['+', '-']).to_owned();
        if !body.bytes().all(|b| b == b'0' || b == b'.') {
            out = format!("{}{body}", if rng.gen_bool(0.5) { '+' } else { '-' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn spec(grammar: Grammar, range: Option<[&str; 2]>, step: Option<f64>) -> FieldSpec {
        FieldSpec {
            name: "x".into(),
            grammar,
            unit: None,
            range: range.map(|[a, b]| [a.into(), b.into()]),
            step,
            absent: vec!["---".into()],
        }
    }

    #[test]
    fn numbers_follow_the_sign_rules() {
        let n = |sign| Numeric {
            lo: -1.0,
            hi: 1.0,
            step: 0.25,
            decimals: 2,
            sign,
        };
        assert_eq!(format_number(1.25, &n(Sign::Always)), "+1.25");
        assert_eq!(format_number(-0.0, &n(Sign::Always)), "0.00");
        assert_eq!(format_number(-0.75, &n(Sign::Negative)), "-0.75");
        assert_eq!(
            format_number(
                -150.0,
                &Numeric {
                    decimals: 0,
                    ..n(Sign::Negative)
                }
            ),
            "-150"
        );
    }

    #[test]
    fn dates_print_in_the_device_format() {
        let d = NaiveDate::from_ymd_opt(2024, 11, 8).unwrap();
        assert_eq!(format_date(d, "DD-Mon-YYYY"), "08-Nov-2024");
        assert_eq!(format_date(d, "MM/DD/YYYY"), "11/08/2024");
    }

    #[test]
    fn samples_pass_the_field_checks() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let specs = [
            spec(
                Grammar::Decimal {
                    decimals: 2,
                    sign: Sign::Always,
                },
                Some(["-25.00", "+22.00"]),
                Some(0.25),
            ),
            spec(
                Grammar::Integer {
                    sign: Sign::Negative,
                },
                Some(["-300", "1200"]),
                None,
            ),
            spec(
                Grammar::Date {
                    format: "DD-Mon-YYYY".into(),
                },
                Some(["2019-01-01", "2025-12-31"]),
                None,
            ),
            spec(Grammar::Time, Some(["07:00", "19:59"]), None),
            spec(
                Grammar::Digits { count: 8 },
                Some(["00000001", "99999999"]),
                None,
            ),
        ];
        for s in &specs {
            for _ in 0..200 {
                let v = sample_valid(s, &mut rng);
                assert_eq!(s.check_printed(&v).status, record::FieldStatus::Ok, "{v}");
                let r = sample_random_shape(s, &mut rng);
                if !matches!(s.grammar, Grammar::Date { .. } | Grammar::Time) {
                    assert!(s.grammar.normalise(&r).is_ok(), "{r}");
                }
                let o = sample_out_of_range(s, &mut rng);
                assert!(!o.is_empty());
            }
        }
    }
}
