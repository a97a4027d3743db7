//! Constrained greedy decoding: which character the reader may emit next for a field, and how
//! one step's logits become a character, an end, and a probability.
//!
//! A field's [`FieldConstraint`] comes from its `record::Grammar` plus the texts its device
//! prints when the measurement is absent (`---`, `ERR`, `Err`). At every step only characters
//! that keep the text a *viable prefix* are allowed: a prefix that some valid printed text (or
//! absent marker) of at most [`MAX_CHARS`] characters starts with. So a sphere cannot decode
//! to `4O.2S` or `+1.2.5`, a date cannot get a 13th month, and the end token is allowed only
//! when the text is complete (`Grammar::normalise` accepts it, or it is an absent marker).
//!
//! Probabilities are the model's softmax over the *whole* vocabulary, not renormalised over
//! the allowed set: a character the constraint forces although the model did not want it keeps
//! its low probability, so the field's confidence drops instead of looking certain.
//! [`Calibration`] maps the sequence probability to the confidence that the whole text is
//! right (fitted on held-out simulated crops by `training/study.py`; see models/README.md).

use record::grammar::{Grammar, Sign, MONTHS};
use serde::Deserialize;

/// Longest text the reader produces (models/README.md).
pub const MAX_CHARS: usize = 12;

/// What one field may read as.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldConstraint {
    grammar: Option<Grammar>,
    absent: Vec<String>,
    alphabet: Vec<char>,
}

impl FieldConstraint {
    /// The constraint of a field printed with `grammar` that shows one of `absent` when the
    /// measurement is missing.
    pub fn new(grammar: &Grammar, absent: &[String]) -> Self {
        let mut alphabet: Vec<char> = grammar.alphabet().chars().collect();
        alphabet.extend(absent.iter().flat_map(|a| a.chars()));
        alphabet.sort_unstable();
        alphabet.dedup();
        Self {
            grammar: Some(grammar.clone()),
            absent: absent.to_vec(),
            alphabet,
        }
    }

    /// No constraint: any character of the vocabulary, any length up to [`MAX_CHARS`].
    pub fn unconstrained() -> Self {
        Self {
            grammar: None,
            absent: Vec::new(),
            alphabet: Vec::new(),
        }
    }

    /// Every character the field can contain (grammar alphabet plus absent markers), sorted;
    /// empty when unconstrained.
    pub fn alphabet(&self) -> &[char] {
        &self.alphabet
    }

    /// Whether `prefix` followed by `next` is still the start of a valid text.
    pub fn prefix_ok(&self, prefix: &str, next: char) -> bool {
        let Some(grammar) = &self.grammar else {
            return prefix.chars().count() < MAX_CHARS;
        };
        if self.alphabet.binary_search(&next).is_err() {
            return false;
        }
        let mut s = String::with_capacity(prefix.len() + next.len_utf8());
        s.push_str(prefix);
        s.push(next);
        if s.chars().count() > MAX_CHARS {
            return false;
        }
        self.absent.iter().any(|a| a.starts_with(&s)) || viable(grammar, &s)
    }

    /// Whether the text may end here.
    pub fn can_end(&self, text: &str) -> bool {
        match &self.grammar {
            None => !text.is_empty(),
            Some(g) => self.absent.iter().any(|a| a == text) || g.normalise(text).is_ok(),
        }
    }
}

/// Whether some text of `grammar`, at most [`MAX_CHARS`] long, starts with `s`.
fn viable(grammar: &Grammar, s: &str) -> bool {
    match grammar {
        Grammar::Digits { count } => s.len() <= *count && s.bytes().all(|b| b.is_ascii_digit()),
        Grammar::Decimal { decimals, sign } => signed_viable(s, *sign, Some(*decimals)),
        Grammar::Integer { sign } => signed_viable(s, *sign, None),
        Grammar::Date { format } => date_viable(format, s),
        Grammar::Time => time_viable(s),
        Grammar::Choice { choices } => choices.iter().any(|c| c.starts_with(s)),
    }
}

/// Signed numbers: `[sign] int ['.' frac]`, no leading zeros, zero never signed, `Always`
/// signs every non-zero value.
fn signed_viable(s: &str, sign: Sign, decimals: Option<usize>) -> bool {
    let (signch, body) = match s.as_bytes()[0] {
        c @ (b'+' | b'-') => (Some(c), &s[1..]),
        _ => (None, s),
    };
    match (sign, signch) {
        (Sign::None, Some(_)) | (Sign::Negative, Some(b'+')) => return false,
        _ => {}
    }
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if !int.bytes().all(|b| b.is_ascii_digit()) || (int.len() > 1 && int.starts_with('0')) {
        return false;
    }
    let frac_len = frac.map_or(0, str::len);
    match (decimals, frac) {
        (None, Some(_)) => return false,
        (Some(_), Some(f)) if int.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return false
        }
        (Some(d), _) if frac_len > d => return false,
        _ => {}
    }
    // Shortest completion must fit.
    let need = match (decimals, frac) {
        (Some(d), None) => usize::from(int.is_empty()) + 1 + d,
        (Some(d), Some(f)) => d - f.len(),
        (None, _) => usize::from(int.is_empty()),
    };
    if s.len() + need > MAX_CHARS {
        return false;
    }
    // Zero-ness: signed values must be able to become non-zero, unsigned `Always` values must
    // stay zero.
    let int_zero = int == "0";
    let frac_zero = frac.is_none_or(|f| f.bytes().all(|b| b == b'0'));
    let complete = match decimals {
        Some(d) => frac_len == d,
        None => !int.is_empty(),
    };
    let can_be_nonzero = !(int_zero && (complete || decimals.is_none()) && frac_zero);
    let can_be_zero = int.is_empty() || (int_zero && frac_zero);
    match (sign, signch) {
        (_, Some(_)) => can_be_nonzero,
        (Sign::Always, None) => can_be_zero,
        _ => true,
    }
}

fn date_viable(format: &str, s: &str) -> bool {
    let mut fmt = format;
    let mut rest = s;
    while !rest.is_empty() {
        let (tok_len, ok) = if fmt.starts_with("YYYY") {
            (
                4,
                digits_viable(rest, 4, |v, n| match n {
                    1 => (1..=2).contains(&v),
                    2 => (19..=20).contains(&v),
                    3 => true,
                    _ => (1900..=2099).contains(&v),
                }),
            )
        } else if fmt.starts_with("MM") {
            (
                2,
                digits_viable(rest, 2, |v, n| {
                    if n == 1 {
                        v <= 1
                    } else {
                        (1..=12).contains(&v)
                    }
                }),
            )
        } else if fmt.starts_with("DD") {
            (
                2,
                digits_viable(rest, 2, |v, n| {
                    if n == 1 {
                        v <= 3
                    } else {
                        (1..=31).contains(&v)
                    }
                }),
            )
        } else if fmt.starts_with("Mon") {
            let head = rest.get(..rest.len().min(3)).unwrap_or(rest);
            (3, MONTHS.iter().any(|m| m.starts_with(head)))
        } else if let Some(c) = fmt.chars().next() {
            (c.len_utf8(), rest.starts_with(c))
        } else {
            return false; // longer than the format
        };
        if !ok {
            return false;
        }
        fmt = &fmt[tok_len..];
        rest = rest.get(tok_len..).unwrap_or("");
    }
    true
}

/// The first `min(len, rest.len())` characters of `rest` are digits and `ok(value, digits_seen)`.
fn digits_viable(rest: &str, len: usize, ok: impl Fn(u32, usize) -> bool) -> bool {
    let part = &rest.as_bytes()[..rest.len().min(len)];
    part.iter().all(u8::is_ascii_digit)
        && ok(
            part.iter().fold(0, |v, b| v * 10 + u32::from(b - b'0')),
            part.len(),
        )
}

fn time_viable(s: &str) -> bool {
    s.len() <= 5
        && s.bytes().enumerate().all(|(i, b)| match i {
            0 => (b'0'..=b'2').contains(&b),
            1 => b.is_ascii_digit() && (s.as_bytes()[0] < b'2' || b <= b'3'),
            2 => b == b':',
            3 => (b'0'..=b'5').contains(&b),
            _ => b.is_ascii_digit(),
        })
}

/// Maps a text's sequence probability to the calibrated probability that it is right:
/// `sigmoid(a * logit(p) + b)` (Platt scaling on the logit; `a = 1, b = 0` is the identity).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Slope on `logit(p)`.
    pub a: f32,
    /// Offset.
    pub b: f32,
}

impl Default for Calibration {
    fn default() -> Self {
        Self { a: 1.0, b: 0.0 }
    }
}

impl Calibration {
    /// The confidence for sequence probability `p` (product of the per-step probabilities,
    /// end token included).
    pub fn confidence(&self, p: f32) -> f32 {
        let p = p.clamp(1e-7, 1.0 - 1e-7);
        let z = self.a * (p / (1.0 - p)).ln() + self.b;
        1.0 / (1.0 + (-z).exp())
    }
}

/// One field's text as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The text, as printed on the screen.
    pub text: String,
    /// The model's probability (full-vocabulary softmax) of each character of `text`.
    pub char_probs: Vec<f32>,
    /// Calibrated probability that `text` is exactly right.
    pub confidence: f32,
}

/// What a step decided for one sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Append this character.
    Char(char, f32),
    /// The text ends here (probability of the end token).
    End(f32),
    /// Nothing allowed fits (the text cannot be completed): stop, unreadable.
    Stuck,
}

/// Picks the most likely allowed token from one row of logits. `chars[i]` is the character of
/// token id `i` (`None` for PAD, BOS, EOS); `eos` is the end token's id.
pub fn choose(
    logits: &[f32],
    chars: &[Option<char>],
    eos: usize,
    prefix: &str,
    constraint: &FieldConstraint,
) -> Step {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let denom: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let prob = |i: usize| (logits[i] - max).exp() / denom;
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if best.is_some_and(|(_, bl)| l <= bl) {
            continue;
        }
        let allowed = match chars.get(i).copied().flatten() {
            Some(c) => constraint.prefix_ok(prefix, c),
            None => i == eos && constraint.can_end(prefix),
        };
        if allowed {
            best = Some((i, l));
        }
    }
    match best {
        Some((i, _)) if i == eos => Step::End(prob(i)),
        Some((i, _)) => Step::Char(chars[i].unwrap_or('?'), prob(i)),
        None => Step::Stuck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(grammar: Grammar, absent: &[&str]) -> FieldConstraint {
        let absent: Vec<String> = absent.iter().map(|s| s.to_string()).collect();
        FieldConstraint::new(&grammar, &absent)
    }

    /// Every prefix of `text` is viable step by step and the text may end.
    fn accepts(fc: &FieldConstraint, text: &str) -> bool {
        let mut prefix = String::new();
        for ch in text.chars() {
            if !fc.prefix_ok(&prefix, ch) {
                return false;
            }
            prefix.push(ch);
        }
        fc.can_end(&prefix)
    }

    fn sphere() -> FieldConstraint {
        c(
            Grammar::Decimal {
                decimals: 2,
                sign: Sign::Always,
            },
            &["---", "ERR"],
        )
    }

    #[test]
    fn digits_field_cannot_emit_letters_or_overrun() {
        let fc = c(Grammar::Digits { count: 8 }, &[]);
        assert!(accepts(&fc, "00482913"));
        assert!(!fc.prefix_ok("0048", 'O'));
        assert!(!fc.prefix_ok("0048", '.'));
        assert!(!fc.prefix_ok("00482913", '1'), "9th digit");
        assert!(!fc.can_end("0048291"), "7 digits");
        assert!(fc.alphabet().iter().all(char::is_ascii_digit));
    }

    #[test]
    fn sphere_rejects_malformed_numbers() {
        let fc = sphere();
        for ok in ["+1.25", "-3.50", "0.00", "+12.00", "---", "ERR"] {
            assert!(accepts(&fc, ok), "{ok}");
        }
        for bad in [
            "4O.2S", "+1.2.5", "1.25", "+0.00", "-0.00", "+01.25", "+1.250", "+1.2", "Err", "--",
        ] {
            assert!(!accepts(&fc, bad), "{bad}");
        }
        assert!(!fc.prefix_ok("+1.2", '.'));
        assert!(!fc.prefix_ok("", '.'));
        assert!(!fc.prefix_ok("0", '1'), "leading zero");
        assert!(!fc.prefix_ok("0.", '5'), "unsigned non-zero");
        assert!(fc.prefix_ok("+0.0", '5'));
        assert!(!fc.prefix_ok("+0.0", '0'), "signed zero");
        assert!(fc.prefix_ok("-", '-'), "absent marker prefix");
    }

    #[test]
    fn cylinder_and_integers() {
        let cyl = c(
            Grammar::Decimal {
                decimals: 2,
                sign: Sign::Negative,
            },
            &["---"],
        );
        assert!(accepts(&cyl, "-0.75") && accepts(&cyl, "0.00") && accepts(&cyl, "1.50"));
        assert!(!fc_ok(&cyl, "", '+'));
        let axis = c(Grammar::Integer { sign: Sign::None }, &["---"]);
        assert!(accepts(&axis, "178") && accepts(&axis, "0"));
        assert!(!accepts(&axis, "007") && !accepts(&axis, "-1") && !accepts(&axis, "1.5"));
        let clr = c(
            Grammar::Integer {
                sign: Sign::Negative,
            },
            &["---"],
        );
        assert!(accepts(&clr, "-150") && accepts(&clr, "534"));
        assert!(!accepts(&clr, "-0") && !accepts(&clr, "+5"));
    }

    fn fc_ok(fc: &FieldConstraint, prefix: &str, ch: char) -> bool {
        fc.prefix_ok(prefix, ch)
    }

    #[test]
    fn date_prefix_automaton() {
        let fc = c(
            Grammar::Date {
                format: "DD/MM/YYYY".into(),
            },
            &[],
        );
        assert!(accepts(&fc, "13/05/2021"));
        assert!(!fc.prefix_ok("", '4'), "day 4x");
        assert!(!fc.prefix_ok("13/", '2'), "month 2x");
        assert!(!fc.prefix_ok("13/1", '3'), "month 13");
        assert!(!fc.prefix_ok("13", '.'), "wrong separator");
        assert!(!fc.prefix_ok("13/05/2021", '1'), "too long");
        assert!(!fc.can_end("13/05/202"));
        assert!(!accepts(&fc, "31/02/2021"), "no 31 February");
        let mon = c(
            Grammar::Date {
                format: "DD-Mon-YYYY".into(),
            },
            &[],
        );
        assert!(accepts(&mon, "08-Nov-2024"));
        assert!(mon.prefix_ok("08-N", 'o') && !mon.prefix_ok("08-N", 'a'));
        assert!(!mon.prefix_ok("08-", '1'));
        let iso = c(
            Grammar::Date {
                format: "YYYY-MM-DD".into(),
            },
            &[],
        );
        assert!(accepts(&iso, "2021-05-13") && !iso.prefix_ok("", '5'));
    }

    #[test]
    fn time_and_choice() {
        let t = c(Grammar::Time, &[]);
        assert!(accepts(&t, "09:41") && accepts(&t, "23:59"));
        assert!(!t.prefix_ok("2", '4') && !t.prefix_ok("09:", '6') && !t.prefix_ok("0941", '1'));
        let eye = c(
            Grammar::Choice {
                choices: vec!["OD".into(), "OS".into()],
            },
            &[],
        );
        assert!(accepts(&eye, "OD") && accepts(&eye, "OS"));
        assert!(!eye.prefix_ok("", 'D') && !eye.prefix_ok("O", 'O') && !eye.can_end("O"));
    }

    #[test]
    fn choose_takes_the_best_allowed_token_with_its_full_probability() {
        // Vocabulary: PAD, BOS, EOS, '1', 'O', '+'.
        let chars = [None, None, None, Some('1'), Some('O'), Some('+')];
        let digits = c(Grammar::Digits { count: 2 }, &[]);
        let logits = [0.0, 0.0, 5.0, 1.0, 4.0, 0.0];
        // EOS not allowed on "", 'O' not a digit: '1' wins, with its small unconstrained prob.
        match choose(&logits, &chars, 2, "", &digits) {
            Step::Char('1', p) => assert!(p < 0.05, "{p}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            choose(&logits, &chars, 2, "11", &digits),
            Step::End(_)
        ));
        let none = c(
            Grammar::Choice {
                choices: vec!["OD".into()],
            },
            &[],
        );
        assert_eq!(choose(&logits, &chars, 2, "O", &none), Step::Stuck);
    }

    #[test]
    fn calibration_identity_and_monotone() {
        let id = Calibration::default();
        assert!((id.confidence(0.9) - 0.9).abs() < 1e-5);
        let cal = Calibration { a: 0.5, b: -1.0 };
        assert!(cal.confidence(0.99) > cal.confidence(0.9));
    }
}
