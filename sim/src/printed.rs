//! Printed values: how one field's value looks on screen, drawn at random from its grammar,
//! range and step (valid values), or, for recognizer training, deliberately out of range or
//! made of random characters in the grammar's shape (so the model reads characters, not priors).
//!
//! Dates and times follow a device's own clock (issue #11): an exam date up to `today` (the
//! caller's, so output is reproducible; a [`TODAY`] bound resolves to it, never to the day of
//! slack after it), a good share of them today itself, and exam times over the whole day, mostly
//! in clinic hours, some at night, now and then in the minutes either side of midnight.

use chrono::{Duration, NaiveDate};
use rand::seq::SliceRandom;
use rand::Rng;
use record::grammar::{MONTHS, TODAY};
use record::{FieldSpec, Grammar, Sign};

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

/// `d` printed with a date format (`DD/MM/YYYY`, `DD-Mon-YYYY`, ...): [`record::grammar::format_date`].
pub use record::grammar::format_date;

/// Share of valid exam dates drawn as `today` itself.
pub const TODAY_SHARE: f64 = 0.2;
/// Share of valid exam dates drawn within the last [`RECENT_DAYS`] (the rest: anywhere in range).
pub const RECENT_SHARE: f64 = 0.6;
/// How far back "recent" exam dates go.
pub const RECENT_DAYS: i64 = 3 * 365;
/// Share of valid exam times drawn in clinic hours (07:00..19:59, within the field's range).
pub const CLINIC_SHARE: f64 = 0.55;
/// Share of valid exam times drawn within two minutes of either end of the range (00:00, 23:59).
pub const MIDNIGHT_SHARE: f64 = 0.05;

const FIRST_EXAM_DATE: (i32, u32, u32) = (2000, 1, 1);
const CLINIC: (i64, i64) = (7 * 60, 19 * 60 + 59);
const LAST_MINUTE: i64 = 23 * 60 + 59;

/// The dates a valid value of `spec` may take when generated on `today`: its range, a
/// [`TODAY`] bound (or no upper bound) read as `today`, no lower bound as 2000-01-01.
pub fn date_range(spec: &FieldSpec, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let parse = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let (y, m, d) = FIRST_EXAM_DATE;
    let floor = NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
    match &spec.range {
        Some([a, b]) => {
            let hi = if b == TODAY { Some(today) } else { parse(b) };
            (parse(a).unwrap_or(floor), hi.unwrap_or(today))
        }
        None => (floor, today),
    }
}

/// A date in `lo..=hi`: [`TODAY_SHARE`] of them `hi`, [`RECENT_SHARE`] within [`RECENT_DAYS`]
/// of it, the rest anywhere.
pub fn sample_date<R: Rng>(lo: NaiveDate, hi: NaiveDate, rng: &mut R) -> NaiveDate {
    let days = (hi - lo).num_days().max(0);
    let r: f64 = rng.gen();
    let back = if r < TODAY_SHARE {
        0
    } else if r < TODAY_SHARE + RECENT_SHARE {
        rng.gen_range(0..=days.min(RECENT_DAYS))
    } else {
        rng.gen_range(0..=days)
    };
    hi - Duration::days(back)
}

fn minutes(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    Some(h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
}

fn time_range(spec: &FieldSpec) -> (i64, i64) {
    match &spec.range {
        Some([a, b]) => (minutes(a).unwrap_or(0), minutes(b).unwrap_or(LAST_MINUTE)),
        None => (0, LAST_MINUTE),
    }
}

/// A minute of the day in `lo..=hi`: [`CLINIC_SHARE`] in clinic hours, [`MIDNIGHT_SHARE`]
/// within two minutes of either end, the rest anywhere.
pub fn sample_minute<R: Rng>(lo: i64, hi: i64, rng: &mut R) -> i64 {
    let hi = hi.max(lo);
    let r: f64 = rng.gen();
    let (clo, chi) = (CLINIC.0.clamp(lo, hi), CLINIC.1.clamp(lo, hi));
    if r < MIDNIGHT_SHARE {
        let k = rng.gen_range(0..=2);
        if rng.gen_bool(0.5) {
            (lo + k).min(hi)
        } else {
            (hi - k).max(lo)
        }
    } else if r < MIDNIGHT_SHARE + CLINIC_SHARE {
        rng.gen_range(clo..=chi)
    } else {
        rng.gen_range(lo..=hi)
    }
}

/// `m` minutes after midnight printed `HH:MM`.
pub fn format_time(m: i64) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn digits_range(spec: &FieldSpec, count: usize) -> (u64, u64) {
    let max = 10u64.saturating_pow(count.min(19) as u32) - 1;
    match &spec.range {
        Some([a, b]) => (a.parse().unwrap_or(0), b.parse().unwrap_or(max)),
        None => (0, max),
    }
}

/// A random valid value of `spec`, as printed, on `today` (dates up to `today`, see the module
/// doc for how dates and times spread).
pub fn sample_valid<R: Rng>(spec: &FieldSpec, today: NaiveDate, rng: &mut R) -> String {
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
            let (a, b) = date_range(spec, today);
            format_date(sample_date(a, b, rng), format)
        }
        Grammar::Time => {
            let (a, b) = time_range(spec);
            format_time(sample_minute(a, b, rng))
        }
        Grammar::Choice { choices } => choices.choose(rng).cloned().unwrap_or_default(),
    }
}

/// A well-formed value of `spec` that may lie outside its range or off its step (`today`: as
/// for [`sample_valid`]).
pub fn sample_out_of_range<R: Rng>(spec: &FieldSpec, today: NaiveDate, rng: &mut R) -> String {
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
        _ => sample_valid(spec, today, rng),
    }
}

fn int_digits(x: f64) -> usize {
    format!("{:.0}", x.abs().floor()).len()
}

/// A text in the shape of a valid value of `spec` with every digit drawn at random (and a random
/// sign and month name where the grammar has one), e.g. `+7.38` or `93/41/2706`.
pub fn sample_random_shape<R: Rng>(spec: &FieldSpec, today: NaiveDate, rng: &mut R) -> String {
    let base = sample_valid(spec, today, rng);
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
            spec(
                Grammar::Date {
                    format: "DD/MM/YYYY".into(),
                },
                Some(["2000-01-01", TODAY]),
                None,
            ),
            spec(Grammar::Time, Some(["07:00", "19:59"]), None),
            spec(Grammar::Time, None, None),
            spec(
                Grammar::Digits { count: 8 },
                Some(["00000001", "99999999"]),
                None,
            ),
        ];
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        for s in &specs {
            for _ in 0..200 {
                let v = sample_valid(s, today, &mut rng);
                assert_eq!(
                    s.check_printed_at(&v, today).status,
                    record::FieldStatus::Ok,
                    "{v}"
                );
                let r = sample_random_shape(s, today, &mut rng);
                if !matches!(s.grammar, Grammar::Date { .. } | Grammar::Time) {
                    assert!(s.grammar.normalise(&r).is_ok(), "{r}");
                }
                let o = sample_out_of_range(s, today, &mut rng);
                assert!(!o.is_empty());
            }
        }
    }

    // See: #11. Dates reach today (never the day of slack after it), times the whole day.
    #[test]
    fn dates_reach_today_and_times_the_whole_day() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let date = spec(
            Grammar::Date {
                format: "YYYY-MM-DD".into(),
            },
            Some(["2000-01-01", TODAY]),
            None,
        );
        let dates: Vec<String> = (0..2000)
            .map(|_| sample_valid(&date, today, &mut rng))
            .collect();
        let on_today = dates.iter().filter(|d| *d == "2026-12-01").count();
        assert!((300..=500).contains(&on_today), "{on_today} of 2000 today");
        assert!(dates.iter().all(|d| d.as_str() <= "2026-12-01"));
        assert!(dates.iter().any(|d| d.as_str() < "2019-01-01"));
        let time = spec(Grammar::Time, None, None);
        let times: Vec<String> = (0..4000)
            .map(|_| sample_valid(&time, today, &mut rng))
            .collect();
        for t in ["23:59", "00:00", "00:01"] {
            assert!(times.iter().any(|x| x == t), "{t} never drawn");
        }
        let night = times
            .iter()
            .filter(|t| t.as_str() < "07:00" || t.as_str() > "19:59")
            .count();
        assert!(night > 400, "{night} of 4000 at night");
        // Reproducible: the same seed and today give the same values.
        let again = |seed| {
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| sample_valid(&date, today, &mut r) + &sample_valid(&time, today, &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(again(3), again(3));
    }
}
