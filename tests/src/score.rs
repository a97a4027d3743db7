//! The database compared with the simulator's ground truth, with the catalog's scoring rules:
//! a field is correct when its value equals the truth (an absent truth is matched by status
//! `absent` or no value); a *silent error* is a field marked `ok` whose value is wrong.

use std::collections::{BTreeMap, BTreeSet};

use sim::Label;

use crate::db::Stored;

/// Totals for one device or the whole fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Score {
    /// Exports written by the simulator.
    pub exports: usize,
    /// Exports stored (distinct source files).
    pub stored: usize,
    /// Exports stored more than once (must be 0).
    pub duplicated: usize,
    /// Fields of stored exports.
    pub fields: usize,
    /// Fields equal to the truth.
    pub correct: usize,
    /// Fields marked ok but wrong (must be 0).
    pub silent: usize,
    /// Fields flagged for review (unreadable or invalid).
    pub review: usize,
}

impl Score {
    /// Share of fields equal to the truth.
    pub fn accuracy(&self) -> f64 {
        if self.fields == 0 {
            0.0
        } else {
            self.correct as f64 / self.fields as f64
        }
    }

    /// Adds another score.
    pub fn add(&mut self, o: &Score) {
        self.exports += o.exports;
        self.stored += o.stored;
        self.duplicated += o.duplicated;
        self.fields += o.fields;
        self.correct += o.correct;
        self.silent += o.silent;
        self.review += o.review;
    }
}

/// Scores one device: `truth` from [`crate::feed::truth`], `stored` its measurements.
/// Also returns the silent errors as `(file, field, stored value, truth)`.
pub fn score(truth: &[(String, Label)], stored: &[Stored]) -> (Score, Vec<String>) {
    let mut by_file: BTreeMap<&str, BTreeMap<&str, &Stored>> = BTreeMap::new();
    let mut records: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in stored {
        by_file
            .entry(&s.source_file)
            .or_default()
            .insert(&s.field, s);
        records
            .entry(&s.source_file)
            .or_default()
            .insert(&s.record_id);
    }
    let mut sc = Score {
        exports: truth.len(),
        ..Score::default()
    };
    let mut silent = Vec::new();
    for (file, label) in truth {
        let Some(fields) = by_file.get(file.as_str()) else {
            continue;
        };
        sc.stored += 1;
        if records[file.as_str()].len() > 1 {
            sc.duplicated += 1;
        }
        for (name, want) in &label.fields {
            sc.fields += 1;
            let Some(got) = fields.get(name.as_str()) else {
                continue;
            };
            let correct = match want {
                None => got.status == "absent" || got.value.is_none(),
                Some(w) => got.value.as_deref() == Some(w.as_str()),
            };
            if correct {
                sc.correct += 1;
            } else if got.status == "ok" {
                sc.silent += 1;
                silent.push(format!(
                    "{file} {name}: stored {:?}, truth {want:?}",
                    got.value
                ));
            }
            if got.status == "unreadable" || got.status == "invalid" {
                sc.review += 1;
            }
        }
    }
    (sc, silent)
}
