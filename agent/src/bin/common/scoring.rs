//! Scoring shared by the benchmark binaries (`recognize-bench`, `robust-bench`), included with
//! `#[path]`: a recognized export's fields against its label, and percentiles.

use agent::recognize::Recognized;
use record::FieldStatus;

/// One export's fields against its label.
#[derive(Debug, Default)]
pub struct FieldScore {
    /// Fields whose reported value equals the label (absent labels: status `absent`).
    pub correct: usize,
    /// Fields that are `ok` but wrong: name, value read, label, confidence.
    pub silent: Vec<(String, Option<String>, Option<String>, f32)>,
    /// Fields not `ok` whose label has a value (review, truly absent fields left out).
    pub review: usize,
}

/// Scores `rec` against `fields` (label order; `None` = absent). A labelled field the record
/// lacks counts as review.
pub fn score_fields(rec: &Recognized, fields: &[(String, Option<String>)]) -> FieldScore {
    let mut s = FieldScore::default();
    for (name, want) in fields {
        let Some(i) = rec.fields().iter().position(|f| &f.name == name) else {
            s.review += 1;
            continue;
        };
        let (f, guess) = (&rec.fields()[i], &rec.guesses[i]);
        let correct = is_correct(f, guess, want);
        s.correct += usize::from(correct);
        if f.status == FieldStatus::Ok && !correct {
            s.silent
                .push((name.clone(), guess.clone(), want.clone(), f.confidence));
        }
        if f.status != FieldStatus::Ok && want.is_some() {
            s.review += 1;
        }
    }
    s
}

/// Whether field `f`, read as `guess`, matches its label `want` (`None`: absent, which the
/// field is when marked absent or read as nothing).
pub fn is_correct(f: &record::Field, guess: &Option<String>, want: &Option<String>) -> bool {
    match want {
        None => f.status == FieldStatus::Absent || guess.is_none(),
        Some(w) => guess.as_deref() == Some(w.as_str()),
    }
}

/// A label JSON's `fields`, in its order (`null` = absent).
pub fn label_fields(label: &serde_json::Value) -> Vec<(String, Option<String>)> {
    label["fields"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                .collect()
        })
        .unwrap_or_default()
}

/// The `p` quantile of `v` (nearest rank); NaN when empty.
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}
