//! review: people resolve the fields the reader flagged.
//!
//! Every field stored `unreadable` or `invalid`, and every record whose clocks look wrong, has a
//! row in `review_queue`. A reviewer ([`crate::users::Permission::ResolveReviews`]) takes the
//! pending items in clinical order ([`PRIORITY`]: identity first, then the values that drive
//! surgery and lens choice, then the rest) and decides each one ([`Decision`]):
//!
//! - a value, typed as the export prints it: it goes through the same grammar, range and
//!   cross-field rules as the agent's reading ([`record::FieldSpec::check_printed`], the
//!   template's rules, the exact template version the record was read with); a value that fails
//!   is refused with the reason, and nothing changes;
//! - *absent on the export*;
//! - *escalate*: the item stays pending, marked, for someone who can tell;
//! - *wrong patient / not this exam*: the export does not belong to the patient it names. The
//!   record loses its patient (a new revision; the exam leaves that patient's history) and gets
//!   a pending `patient_id` item (`wrong_exam`), where someone who knows the right chart number
//!   types it. The item in hand stays pending when it is another field.
//!
//! Exams without a patient ([`unmatched`]: the chart number unreadable, absent, or disputed)
//! are listed for matching, so none stays invisible to a patient query; [`open_for_matching`]
//! gives one a pending `patient_id` item when it has none, resolved like any other.
//!
//! A decision is one SQL statement, so it is atomic on the shared connection: the review row
//! is resolved (once: a second decision on the same item is a conflict), the measurement's old
//! value goes to `measurement_history`, the measurement takes the reviewed value with status
//! `verified` (same as the reader's) or `corrected`, the record becomes a new revision (its
//! header columns follow a reviewed `patient_id` / `exam_date` / `exam_time`), and the audit
//! trail gets who, when, before → after.

mod patients;
mod queue;
mod resolve;

pub use patients::{open_for_matching, unmatched, Unmatched};
pub use queue::{context, item, pending, Context, Item};
pub use resolve::{resolve, Resolved};

/// Field order of the queue: lower first. Identity, then surgical and lens values.
pub const PRIORITY: &str = "CASE \
    WHEN q.field IN ('patient_id', 'eye', 'exam_date') THEN 0 \
    WHEN q.field ~ '(^|_)(k1|k2|km|kmax|al|acd|cct|iop|iopc|apex_pachy|thinnest_pachy|lt)$' THEN 1 \
    ELSE 2 END";

/// `[review]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Fields keyed blind by two reviewers (exact names, or `*_suffix`).
    pub double_key: Vec<String>,
}

impl ReviewConfig {
    /// Whether `field` is keyed blind by two reviewers.
    pub fn double_keyed(&self, field: &str) -> bool {
        self.double_key.iter().any(|p| match p.strip_prefix('*') {
            Some(suffix) => field.ends_with(suffix),
            None => p == field,
        })
    }
}

/// What a reviewer decided for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The value as the export prints it.
    Value(String),
    /// The export shows no value for this field.
    Absent,
    /// Cannot tell: leave it pending for someone else.
    Escalate,
    /// Wrong patient / not this exam: the record's patient is cleared and goes to matching.
    WrongExam,
}

/// Why a decision was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// This reviewer already keyed this double-keyed item.
    #[error("you already keyed {field} of record {record}: another reviewer keys it too")]
    AlreadyKeyed {
        /// Record.
        record: String,
        /// Field.
        field: String,
    },
    /// No pending item for that record and field.
    #[error("no pending review item for record {record} field {field}")]
    NotPending {
        /// Record.
        record: String,
        /// Field.
        field: String,
    },
    /// The value fails the field's checks.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The record's template version is not known to this hub.
    #[error("template {0} is not known to this hub")]
    Template(String),
    /// Database.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_keyed_fields_match_by_name_or_suffix() {
        let c = ReviewConfig {
            double_key: vec!["patient_id".into(), "*_k1".into()],
        };
        assert!(c.double_keyed("patient_id"));
        assert!(c.double_keyed("r_k1") && c.double_keyed("l_k1"));
        assert!(!c.double_keyed("k1") && !c.double_keyed("r_k1_axis") && !c.double_keyed("pd"));
        let default = crate::config::HubConfig::default().review;
        for f in ["patient_id", "al", "r_al", "k1", "k2", "l_k2"] {
            assert!(default.double_keyed(f), "{f}");
        }
        assert!(!default.double_keyed("exam_date"));
    }
}
