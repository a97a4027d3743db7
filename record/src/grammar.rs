//! Field grammar: how a device prints a value, how it is normalised for the record, and the
//! range and step checks both the agent and the hub apply (the hub never trusts an agent).
//!
//! Two entry points: [`FieldSpec::check_printed`] takes the text as read off the screen
//! (the agent), [`FieldSpec::check_value`] takes a normalised record value (the hub).
//!
//! A date range's upper bound may be [`TODAY`]: the checking machine's UTC date plus
//! [`DATE_SLACK_DAYS`], so an export made today is in range on every machine, whatever its time
//! zone. Both entry points read the clock once per call ([`today_utc`]); their `_at` forms take
//! `today` explicitly, for tests and for checking a batch against one date.

use std::borrow::Cow;
use std::cmp::Ordering;

use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::record::FieldStatus;

/// How a field's number may be signed on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// Explicit `+` on positive values, `-` on negative ones, zero unsigned (`+1.25`, `0.00`).
    Always,
    /// Optional leading `-`, never `+` (`-0.75`, `0.00`, `-150`).
    Negative,
    /// Digits only.
    None,
}

/// The printed form of a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Grammar {
    /// A fixed number of digits, leading zeros kept (chart numbers).
    Digits {
        /// How many digits.
        count: usize,
    },
    /// A decimal number with a fixed number of decimals.
    Decimal {
        /// Digits after the point (at least 1).
        decimals: usize,
        /// Sign convention.
        sign: Sign,
    },
    /// An integer without leading zeros.
    Integer {
        /// Sign convention.
        sign: Sign,
    },
    /// A calendar date printed with `format` (tokens `YYYY`, `MM`, `DD`, `Mon`); normalised to ISO.
    Date {
        /// The on-screen pattern, e.g. `DD/MM/YYYY`.
        format: String,
    },
    /// A 24-hour `HH:MM` time.
    Time,
    /// One of a fixed set of words (`OD`, `OS`).
    Choice {
        /// The allowed words.
        choices: Vec<String>,
    },
}

/// Why a printed or normalised value does not fit its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrammarError {
    /// The text does not have the shape the grammar prescribes.
    #[error("{text:?} does not match {expected}")]
    Shape {
        /// The offending text.
        text: String,
        /// What was expected, in words.
        expected: String,
    },
    /// The value is outside the field's range.
    #[error("{value} is outside the range {min}..{max}")]
    Range {
        /// The value.
        value: String,
        /// Range minimum.
        min: String,
        /// Range maximum.
        max: String,
    },
    /// The value is not a multiple of the field's step.
    #[error("{value} is not a multiple of the step {step}")]
    Step {
        /// The value.
        value: String,
        /// The step.
        step: f64,
    },
    /// The grammar itself is unusable (bad date format, zero decimals).
    #[error("bad grammar: {0}")]
    Definition(String),
}

/// The upper range bound of a date field that follows the clock: "today's UTC date plus
/// [`DATE_SLACK_DAYS`]" (`range = ["2000-01-01", "today"]`).
pub const TODAY: &str = "today";

/// Days past today's UTC date that an exam date may carry: a device shows its local date, and
/// local time runs up to 14 hours ahead of UTC.
pub const DATE_SLACK_DAYS: u64 = 1;

/// Today's date on this machine's clock, in UTC: the `today` of [`FieldSpec::check_printed`]
/// and [`FieldSpec::check_value`].
pub fn today_utc() -> NaiveDate {
    Utc::now().date_naive()
}

/// The latest exam date plausible on `today` (UTC): `today` plus [`DATE_SLACK_DAYS`].
pub fn latest_date(today: NaiveDate) -> NaiveDate {
    today
        .checked_add_days(Days::new(DATE_SLACK_DAYS))
        .unwrap_or(today)
}

/// The month names devices print in `Mon` date formats (`DD-Mon-YYYY`).
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `d` printed with a device date format (`DD/MM/YYYY`, `DD-Mon-YYYY`, `YYYY-MM-DD`, ...): the
/// text a device shows for a date, the inverse of a date grammar's normalisation.
pub fn format_date(d: NaiveDate, format: &str) -> String {
    use chrono::Datelike;
    format
        .replace("YYYY", &format!("{:04}", d.year()))
        .replace("Mon", MONTHS[d.month0() as usize])
        .replace("MM", &format!("{:02}", d.month()))
        .replace("DD", &format!("{:02}", d.day()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateToken {
    Year,
    Month,
    MonthName,
    Day,
    Lit(char),
}

fn date_tokens(format: &str) -> Result<Vec<DateToken>, GrammarError> {
    let mut out = Vec::new();
    let mut rest = format;
    while !rest.is_empty() {
        let (tok, len) = if rest.starts_with("YYYY") {
            (DateToken::Year, 4)
        } else if rest.starts_with("Mon") {
            (DateToken::MonthName, 3)
        } else if rest.starts_with("MM") {
            (DateToken::Month, 2)
        } else if rest.starts_with("DD") {
            (DateToken::Day, 2)
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            if c.is_ascii_alphanumeric() {
                return Err(GrammarError::Definition(format!(
                    "date format {format:?}: unknown token at {rest:?}"
                )));
            }
            (DateToken::Lit(c), c.len_utf8())
        };
        out.push(tok);
        rest = &rest[len..];
    }
    let count = |t| out.iter().filter(|x| **x == t).count();
    let months = count(DateToken::Month) + count(DateToken::MonthName);
    if count(DateToken::Year) != 1 || months != 1 || count(DateToken::Day) != 1 {
        return Err(GrammarError::Definition(format!(
            "date format {format:?} needs exactly one YYYY, one MM or Mon and one DD"
        )));
    }
    Ok(out)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Grammar {
    /// Checks the grammar definition itself.
    pub fn validate(&self) -> Result<(), GrammarError> {
        match self {
            Grammar::Digits { count: 0 } => Err(GrammarError::Definition("digits count 0".into())),
            Grammar::Decimal { decimals: 0, .. } => Err(GrammarError::Definition(
                "decimal with 0 decimals: use kind = \"integer\"".into(),
            )),
            Grammar::Date { format } => date_tokens(format).map(|_| ()),
            Grammar::Choice { choices } if choices.is_empty() => {
                Err(GrammarError::Definition("choice without choices".into()))
            }
            _ => Ok(()),
        }
    }

    /// Every character the printed form can contain (for constrained decoding).
    pub fn alphabet(&self) -> String {
        let mut s: String = match self {
            Grammar::Digits { .. } => "0123456789".into(),
            Grammar::Decimal { sign, .. } | Grammar::Integer { sign } => {
                let mut s = String::from("0123456789");
                if matches!(self, Grammar::Decimal { .. }) {
                    s.push('.');
                }
                match sign {
                    Sign::Always => s.push_str("+-"),
                    Sign::Negative => s.push('-'),
                    Sign::None => {}
                }
                s
            }
            Grammar::Date { format } => {
                let mut s = String::from("0123456789");
                for t in date_tokens(format).unwrap_or_default() {
                    match t {
                        DateToken::Lit(c) => s.push(c),
                        DateToken::MonthName => MONTHS.iter().for_each(|m| s.push_str(m)),
                        _ => {}
                    }
                }
                s
            }
            Grammar::Time => "0123456789:".into(),
            Grammar::Choice { choices } => choices.concat(),
        };
        let mut chars: Vec<char> = s.drain(..).collect();
        chars.sort_unstable();
        chars.dedup();
        chars.into_iter().collect()
    }

    fn shape(&self, text: &str, expected: &str) -> GrammarError {
        let _ = self;
        GrammarError::Shape {
            text: text.to_owned(),
            expected: expected.to_owned(),
        }
    }

    /// Checks the printed text's shape and returns the normalised value (dates become ISO).
    pub fn normalise(&self, text: &str) -> Result<String, GrammarError> {
        match self {
            Grammar::Digits { count } => {
                if text.len() == *count && all_digits(text) {
                    Ok(text.to_owned())
                } else {
                    Err(self.shape(text, &format!("{count} digits")))
                }
            }
            Grammar::Decimal { decimals, sign } => {
                check_signed(text, *sign, Some(*decimals)).map_err(|e| self.shape(text, &e))?;
                Ok(text.to_owned())
            }
            Grammar::Integer { sign } => {
                check_signed(text, *sign, None).map_err(|e| self.shape(text, &e))?;
                Ok(text.to_owned())
            }
            Grammar::Date { format } => parse_date(text, format)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .ok_or_else(|| self.shape(text, &format!("a valid date as {format}"))),
            Grammar::Time => {
                let ok = text.len() == 5
                    && text.as_bytes()[2] == b':'
                    && all_digits(&text[..2])
                    && all_digits(&text[3..])
                    && text[..2].parse::<u32>().is_ok_and(|h| h < 24)
                    && text[3..].parse::<u32>().is_ok_and(|m| m < 60);
                if ok {
                    Ok(text.to_owned())
                } else {
                    Err(self.shape(text, "a 24-hour time HH:MM"))
                }
            }
            Grammar::Choice { choices } => {
                if choices.iter().any(|c| c == text) {
                    Ok(text.to_owned())
                } else {
                    Err(self.shape(text, &format!("one of {choices:?}")))
                }
            }
        }
    }

    /// Checks that an already normalised value (as carried in a record) has this grammar's shape.
    pub fn check_normalised(&self, value: &str) -> Result<(), GrammarError> {
        match self {
            Grammar::Date { .. } => NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .filter(|d| d.format("%Y-%m-%d").to_string() == value)
                .map(|_| ())
                .ok_or_else(|| self.shape(value, "an ISO date YYYY-MM-DD")),
            _ => self.normalise(value).map(|_| ()),
        }
    }

    /// The numeric value of a normalised value, for numeric grammars.
    pub fn number(&self, value: &str) -> Option<f64> {
        match self {
            Grammar::Decimal { .. } | Grammar::Integer { .. } => value.parse().ok(),
            _ => None,
        }
    }

    /// Orders two normalised values of this grammar (numbers numerically, the rest as text,
    /// which is correct for fixed-width digits, ISO dates and HH:MM).
    fn compare(&self, a: &str, b: &str) -> Option<Ordering> {
        match (self.number(a), self.number(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ if matches!(self, Grammar::Choice { .. }) => None,
            _ => Some(a.cmp(b)),
        }
    }
}

fn check_signed(text: &str, sign: Sign, decimals: Option<usize>) -> Result<(), String> {
    let what = match decimals {
        Some(d) => format!("a number with {d} decimals"),
        None => "an integer".to_owned(),
    };
    let (signch, body) = match text.as_bytes().first() {
        Some(b'+') | Some(b'-') => (Some(text.as_bytes()[0]), &text[1..]),
        _ => (None, text),
    };
    let (int, frac) = match (decimals, body.split_once('.')) {
        (Some(d), Some((i, f))) if f.len() == d => (i, Some(f)),
        (None, None) => (body, None),
        _ => return Err(what),
    };
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(what);
    }
    if int.len() > 1 && int.starts_with('0') {
        return Err(format!("{what} without leading zeros"));
    }
    let zero = int.bytes().all(|b| b == b'0') && frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
    match (sign, signch) {
        (_, Some(_)) if zero => Err(format!("{what}, zero unsigned")),
        (Sign::Always, None) if !zero => Err(format!("{what} with an explicit sign")),
        (Sign::Negative, Some(b'+')) => Err(format!("{what} without '+'")),
        (Sign::None, Some(_)) => Err(format!("{what} without a sign")),
        _ => Ok(()),
    }
}

fn parse_date(text: &str, format: &str) -> Option<NaiveDate> {
    let tokens = date_tokens(format).ok()?;
    let (mut y, mut m, mut d) = (None, None, None);
    let mut rest = text;
    for t in tokens {
        let take = |rest: &mut &str, n: usize| -> Option<String> {
            let s = rest.get(..n)?.to_owned();
            *rest = &rest[n..];
            Some(s)
        };
        match t {
            DateToken::Year => y = Some(take(&mut rest, 4).filter(|s| all_digits(s))?),
            DateToken::Month => m = Some(take(&mut rest, 2).filter(|s| all_digits(s))?),
            DateToken::Day => d = Some(take(&mut rest, 2).filter(|s| all_digits(s))?),
            DateToken::MonthName => {
                let name = take(&mut rest, 3)?;
                let idx = MONTHS.iter().position(|x| *x == name)?;
                m = Some(format!("{:02}", idx + 1));
            }
            DateToken::Lit(c) => {
                let s = take(&mut rest, c.len_utf8())?;
                if !s.starts_with(c) {
                    return None;
                }
            }
        }
    }
    if !rest.is_empty() {
        return None;
    }
    NaiveDate::from_ymd_opt(y?.parse().ok()?, m?.parse().ok()?, d?.parse().ok()?)
}

/// Everything about one canonical field except where it sits on a screen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Canonical field name, exactly as in the device catalog.
    pub name: String,
    /// The printed form.
    pub grammar: Grammar,
    /// Unit (`D`, `mm`, `deg`, ...), if the value has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Inclusive valid range, as normalised values: `["-25.00", "+22.00"]`,
    /// `["2000-01-01", "2019-12-31"]`; a date's upper bound may be [`TODAY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[String; 2]>,
    /// The value must be a multiple of this step (numeric grammars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// Texts the device prints when the measurement is absent (`---`, `ERR`, `Err`).
    #[serde(default)]
    pub absent: Vec<String>,
}

/// The outcome of checking one field's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Normalised value, when the text had the right shape.
    pub value: Option<String>,
    /// Numeric value, for numeric grammars.
    pub number: Option<f64>,
    /// Ok, absent or invalid (unreadable is decided by the recognizer, not here).
    pub status: FieldStatus,
    /// Why the status is not ok.
    pub reason: Option<String>,
}

impl FieldSpec {
    /// Checks the spec itself (grammar definition, range order and shape, step sign). A range
    /// ending at [`TODAY`] must not start after today's UTC date.
    pub fn validate(&self) -> Result<(), String> {
        self.grammar.validate().map_err(|e| e.to_string())?;
        if let Some([lo, hi]) = &self.range {
            let is_date = matches!(self.grammar, Grammar::Date { .. });
            if lo == TODAY {
                return Err(format!(
                    "range bound {TODAY:?} is only allowed as the upper bound (use a date such as \"2000-01-01\" as the lower)"
                ));
            }
            if hi == TODAY && !is_date {
                return Err(format!(
                    "range bound {TODAY:?} is only allowed on a date field"
                ));
            }
            for v in [lo, hi].into_iter().filter(|v| *v != TODAY) {
                self.grammar.check_normalised(v).map_err(|e| {
                    if is_date {
                        format!("range bound: {e}, or {TODAY:?} as the upper bound")
                    } else {
                        format!("range bound: {e}")
                    }
                })?;
            }
            let today = today_utc();
            let hi = self.bound(hi, today);
            if self.grammar.compare(lo, &hi) == Some(Ordering::Greater) {
                return Err(format!("range inverted: {lo} > {hi}"));
            }
        }
        if let Some(step) = self.step {
            if !(step > 0.0 && step.is_finite()) || self.grammar.number("0").is_none() {
                return Err(format!(
                    "step {step} needs a positive step on a numeric grammar"
                ));
            }
        }
        Ok(())
    }

    /// Checks text as printed on the screen: absent marker, shape, range, step; a [`TODAY`]
    /// bound is today's UTC date on this machine's clock.
    pub fn check_printed(&self, text: &str) -> Checked {
        self.check_printed_at(text, today_utc())
    }

    /// [`FieldSpec::check_printed`] with a [`TODAY`] bound resolved against `today` (UTC).
    pub fn check_printed_at(&self, text: &str, today: NaiveDate) -> Checked {
        if self.absent.iter().any(|a| a == text) {
            return Checked {
                value: None,
                number: None,
                status: FieldStatus::Absent,
                reason: Some(format!("device shows {text:?}")),
            };
        }
        match self.grammar.normalise(text) {
            Ok(v) => self.check_range(v, today),
            Err(e) => Checked {
                value: None,
                number: None,
                status: FieldStatus::Invalid,
                reason: Some(e.to_string()),
            },
        }
    }

    /// Checks a normalised value as carried in a record (the hub's defence in depth); a
    /// [`TODAY`] bound is today's UTC date on this machine's clock.
    pub fn check_value(&self, value: &str) -> Result<(), GrammarError> {
        self.check_value_at(value, today_utc())
    }

    /// [`FieldSpec::check_value`] with a [`TODAY`] bound resolved against `today` (UTC).
    pub fn check_value_at(&self, value: &str, today: NaiveDate) -> Result<(), GrammarError> {
        self.grammar.check_normalised(value)?;
        self.range_error(value, today).map_or(Ok(()), Err)
    }

    /// The inclusive range on `today` (UTC), as normalised values: a [`TODAY`] bound becomes
    /// [`latest_date`]`(today)`.
    pub fn range_at(&self, today: NaiveDate) -> Option<[String; 2]> {
        self.range
            .as_ref()
            .map(|r| r.each_ref().map(|b| self.bound(b, today).into_owned()))
    }

    fn bound<'a>(&self, bound: &'a str, today: NaiveDate) -> Cow<'a, str> {
        if bound == TODAY {
            Cow::Owned(latest_date(today).format("%Y-%m-%d").to_string())
        } else {
            Cow::Borrowed(bound)
        }
    }

    fn check_range(&self, value: String, today: NaiveDate) -> Checked {
        let number = self.grammar.number(&value);
        let error = self.range_error(&value, today);
        Checked {
            status: if error.is_none() {
                FieldStatus::Ok
            } else {
                FieldStatus::Invalid
            },
            reason: error.map(|e| e.to_string()),
            number,
            value: Some(value),
        }
    }

    fn range_error(&self, value: &str, today: NaiveDate) -> Option<GrammarError> {
        if let Some([lo, hi]) = &self.range {
            let (lo, hi) = (self.bound(lo, today), self.bound(hi, today));
            let below = self.grammar.compare(value, &lo) == Some(Ordering::Less);
            let above = self.grammar.compare(value, &hi) == Some(Ordering::Greater);
            if below || above {
                return Some(GrammarError::Range {
                    value: value.to_owned(),
                    min: lo.into_owned(),
                    max: hi.into_owned(),
                });
            }
        }
        if let (Some(step), Some(x)) = (self.step, self.grammar.number(value)) {
            let k = (x / step).round();
            if (k * step - x).abs() > 1e-6 {
                return Some(GrammarError::Step {
                    value: value.to_owned(),
                    step,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_date_prints_what_the_date_grammar_reads_back() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 5).unwrap();
        for (format, text) in [
            ("DD-Mon-YYYY", "05-Mar-2024"),
            ("DD/MM/YYYY", "05/03/2024"),
            ("YYYY-MM-DD", "2024-03-05"),
        ] {
            assert_eq!(format_date(d, format), text);
            let g = Grammar::Date {
                format: format.into(),
            };
            assert_eq!(g.normalise(text).unwrap(), "2024-03-05", "{format}");
        }
    }

    fn dec(decimals: usize, sign: Sign) -> Grammar {
        Grammar::Decimal { decimals, sign }
    }

    #[test]
    fn sphere_sign_rules() {
        let g = dec(2, Sign::Always);
        for ok in ["+1.25", "-3.50", "0.00", "+12.00"] {
            assert!(g.normalise(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1.25", "+0.00", "-0.00", "+1.2", "+01.25", "4O.2S", "+1.250", "",
        ] {
            assert!(g.normalise(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cylinder_and_integer_rules() {
        let g = dec(2, Sign::Negative);
        assert!(g.normalise("-0.75").is_ok());
        assert!(g.normalise("+0.75").is_err());
        let i = Grammar::Integer {
            sign: Sign::Negative,
        };
        assert!(i.normalise("-150").is_ok());
        assert!(i.normalise("007").is_err());
        assert!(Grammar::Integer { sign: Sign::None }
            .normalise("-1")
            .is_err());
    }

    #[test]
    fn dates_normalise_to_iso() {
        let cases = [
            ("DD/MM/YYYY", "13/05/2021"),
            ("MM/DD/YYYY", "05/13/2021"),
            ("DD.MM.YYYY", "13.05.2021"),
            ("YYYY/MM/DD", "2021/05/13"),
            ("DD-Mon-YYYY", "13-May-2021"),
            ("YYYY-MM-DD", "2021-05-13"),
        ];
        for (format, text) in cases {
            let g = Grammar::Date {
                format: format.into(),
            };
            assert_eq!(g.normalise(text).unwrap(), "2021-05-13", "{format}");
        }
        let g = Grammar::Date {
            format: "DD/MM/YYYY".into(),
        };
        assert!(g.normalise("31/02/2021").is_err());
        assert!(g.normalise("13/05/21").is_err());
        assert!(Grammar::Date {
            format: "DD/QQ".into()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn range_and_step() {
        let spec = FieldSpec {
            name: "r_sph".into(),
            grammar: dec(2, Sign::Always),
            unit: Some("D".into()),
            range: Some(["-25.00".into(), "+22.00".into()]),
            step: Some(0.25),
            absent: vec!["---".into()],
        };
        assert!(spec.validate().is_ok());
        assert_eq!(spec.check_printed("+1.25").status, FieldStatus::Ok);
        assert_eq!(spec.check_printed("+1.30").status, FieldStatus::Invalid);
        assert_eq!(spec.check_printed("-26.00").status, FieldStatus::Invalid);
        assert_eq!(spec.check_printed("---").status, FieldStatus::Absent);
        assert!(spec.check_value("+22.25").is_err());
        let mut inverted = spec.clone();
        inverted.range = Some(["+22.00".into(), "-25.00".into()]);
        assert!(inverted.validate().unwrap_err().contains("inverted"));
    }

    #[test]
    fn alphabet_is_what_the_grammar_prints() {
        assert_eq!(dec(2, Sign::Always).alphabet(), "+-.0123456789");
        let a = Grammar::Date {
            format: "DD-Mon-YYYY".into(),
        }
        .alphabet();
        assert!(a.contains('N') && a.contains('-') && !a.contains('/'));
    }

    fn exam_date(range: [&str; 2]) -> FieldSpec {
        FieldSpec {
            name: "exam_date".into(),
            grammar: Grammar::Date {
                format: "DD/MM/YYYY".into(),
            },
            unit: None,
            range: Some(range.map(String::from)),
            step: None,
            absent: vec![],
        }
    }

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    // See: #11 (every export made today was flagged).
    #[test]
    fn a_date_range_up_to_today_follows_the_clock_with_one_day_of_slack() {
        let spec = exam_date(["2000-01-01", TODAY]);
        assert!(spec.validate().is_ok());
        let today = ymd(2026, 12, 1);
        let printed = |s: &str| spec.check_printed_at(s, today).status;
        assert_eq!(printed("01/12/2026"), FieldStatus::Ok, "today");
        assert_eq!(
            printed("02/12/2026"),
            FieldStatus::Ok,
            "tomorrow: UTC+14 slack"
        );
        assert_eq!(printed("03/12/2026"), FieldStatus::Invalid, "today + 2");
        assert_eq!(printed("01/01/2000"), FieldStatus::Ok);
        assert_eq!(printed("31/12/1999"), FieldStatus::Invalid);
        assert!(spec.check_value_at("2026-12-02", today).is_ok());
        let err = spec.check_value_at("2026-12-03", today).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2026-12-03 is outside the range 2000-01-01..2026-12-02"
        );
        assert!(spec.check_value_at("1999-12-31", today).is_err());
        // A year later the same spec takes that year's exports.
        assert!(spec.check_value_at("2027-12-01", ymd(2027, 12, 1)).is_ok());
        assert_eq!(
            spec.range_at(today),
            Some(["2000-01-01".to_owned(), "2026-12-02".to_owned()])
        );
        // The clock-reading forms agree with the explicit ones on today's date.
        let now = today_utc();
        let iso = now.format("%Y-%m-%d").to_string();
        assert!(spec.check_value(&iso).is_ok());
        assert_eq!(
            spec.check_printed(&now.format("%d/%m/%Y").to_string())
                .status,
            FieldStatus::Ok
        );
        let past = latest_date(latest_date(now)).format("%Y-%m-%d").to_string();
        assert!(spec.check_value(&past).is_err());
    }

    #[test]
    fn today_is_only_an_upper_bound_of_a_date() {
        let lower = exam_date([TODAY, "2030-01-01"]).validate().unwrap_err();
        assert!(lower.contains("upper bound"), "{lower}");
        let typo = exam_date(["2000-01-01", "tomorrow"])
            .validate()
            .unwrap_err();
        assert!(
            typo.contains("\"tomorrow\"") && typo.contains("today"),
            "{typo}"
        );
        let future = exam_date(["2999-01-01", TODAY]).validate().unwrap_err();
        assert!(future.contains("inverted"), "{future}");
        let number = FieldSpec {
            name: "pd".into(),
            grammar: dec(1, Sign::None),
            unit: Some("mm".into()),
            range: Some(["50.0".into(), TODAY.into()]),
            step: None,
            absent: vec![],
        };
        assert!(number.validate().unwrap_err().contains("date field"));
    }

    #[test]
    fn any_time_of_day_has_the_time_shape() {
        let spec = FieldSpec {
            name: "exam_time".into(),
            grammar: Grammar::Time,
            unit: None,
            range: None,
            step: None,
            absent: vec![],
        };
        for ok in ["00:00", "00:01", "06:59", "20:00", "23:59"] {
            assert_eq!(spec.check_printed(ok).status, FieldStatus::Ok, "{ok}");
        }
        for bad in ["24:00", "12:60", "7:00", "23:5"] {
            assert_eq!(
                spec.check_printed(bad).status,
                FieldStatus::Invalid,
                "{bad}"
            );
        }
    }
}
