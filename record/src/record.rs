//! `Record` and the messages that travel beside it (schema versions: [`crate::codec`]).
//!
//! - [`Record`]: one exam export, read by an agent (device → hub).
//! - [`Rejection`]: an export the agent could not turn into a record (device → hub).
//! - [`Receipt`]: the hub's answer for one record id, sent after its database COMMIT (hub → device).
//! - [`StatusReport`]: an agent's retained health message (device → hub).
//!
//! All of them are encoded with [`crate::codec`], which adds and checks the schema version.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, RecordId};

/// What the system concluded about one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldStatus {
    /// Read and validated: trusted.
    Ok,
    /// The device shows the measurement as absent (`---`, `ERR`).
    Absent,
    /// The recognizer is not confident enough: flagged for review.
    Unreadable,
    /// Read, but fails the grammar, range, step or a cross-field rule: flagged for review.
    Invalid,
}

impl FieldStatus {
    /// The status as it is written in payloads and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldStatus::Ok => "ok",
            FieldStatus::Absent => "absent",
            FieldStatus::Unreadable => "unreadable",
            FieldStatus::Invalid => "invalid",
        }
    }

    /// Whether a person must look at the field.
    pub fn needs_review(self) -> bool {
        matches!(self, FieldStatus::Unreadable | FieldStatus::Invalid)
    }
}

/// One canonical field of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Canonical field name (`r_sph`, `exam_date`, ...).
    pub name: String,
    /// Normalised value as printed (`"+1.25"`, `"2021-05-13"`); `None` when absent or unreadable.
    pub value: Option<String>,
    /// The value as a number, for numeric fields.
    #[serde(default)]
    pub number: Option<f64>,
    /// Unit, when the field has one.
    #[serde(default)]
    pub unit: Option<String>,
    /// Status.
    pub status: FieldStatus,
    /// Calibrated confidence in `[0, 1]` that `value` is right.
    pub confidence: f32,
    /// Why the status is not `ok`.
    #[serde(default)]
    pub reason: Option<String>,
    /// What the recognizer read, when it differs from `value` or the field is not ok.
    #[serde(default)]
    pub raw: Option<String>,
}

/// A small PNG crop of one field, so a person can read it later: a field that needs review
/// ([`Record::review_crops`]), or a field read `ok` drawn for a blind check
/// ([`Record::sample_crops`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewCrop {
    /// The field.
    pub field: String,
    /// PNG bytes, base64 (standard alphabet, padded).
    pub png_base64: String,
    /// Schema v2: the export around the field, for the reviewer (review crops only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextCrop>,
}

/// The region of the export around a field, as the export shows it, with the field's box, so
/// a reviewer sees the labels and neighbours that say which eye and which measurement it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextCrop {
    /// 8-bit grey PNG, base64 (standard alphabet, padded).
    pub png_base64: String,
    /// The field's box in the PNG's pixels: `[x, y, width, height]`.
    pub bbox: [u32; 4],
}

/// How an export was aligned to its template when that took more than the template declares
/// (schema v3): the map from the template's reference frame to the export's pixels, as a
/// similarity, so an operator sees a site's display scaling or crooked scanner and a data
/// engineer can tell such records apart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alignment {
    /// Export pixels per reference pixel (1.25 at 125 % display scaling).
    pub scale: f64,
    /// Rotation, degrees, counter-clockwise as the export shows it.
    pub rotation_deg: f64,
    /// Where the reference frame's origin lands in the export, pixels: `[x, y]`.
    pub shift_px: [f64; 2],
}

/// One exam export, as read by an agent. Schema v1; v2 when it carries [`Record::sample_crops`]
/// or a review crop's [`ReviewCrop::context`]; v3 when it carries an [`Record::alignment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Derived from device id, image digest, template id and version.
    pub record_id: RecordId,
    /// The device that produced the export.
    pub device_id: DeviceId,
    /// `autoref`, `tonometer`, ...
    pub device_type: String,
    /// Template id (`autoref_fw2`).
    pub template_id: String,
    /// Template version.
    pub template_version: u32,
    /// Firmware key (`fw2`).
    pub firmware: String,
    /// Export file name (basename only).
    pub source_file: String,
    /// Hex SHA-256 of the export file.
    pub image_sha256: String,
    /// Chart number, when read ok.
    pub patient_id: Option<String>,
    /// ISO exam date, when read ok.
    pub exam_date: Option<String>,
    /// `HH:MM` exam time, where the device shows one and it was read ok.
    pub exam_time: Option<String>,
    /// Every canonical field of the device, in catalog order.
    pub fields: Vec<Field>,
    /// Crops of the fields that need review.
    #[serde(default)]
    pub review_crops: Vec<ReviewCrop>,
    /// Quality sampling (schema v2): crops of fields read `ok` that the agent drew for a blind
    /// check, where a reviewer types what the crop shows without seeing the read. Empty (and
    /// then not written, so the record stays v1) when none was drawn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_crops: Vec<ReviewCrop>,
    /// Schema v3: the fitted alignment, written only when the export lay past the template's
    /// declared variation (a display scaling, a rotation or shift beyond the declared ranges),
    /// so a record within it stays v1 or v2 and an older hub takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment: Option<Alignment>,
    /// Agent version.
    pub agent_version: String,
    /// Recognition model version (file digest prefix).
    pub model_version: String,
    /// When the export file was taken by the agent.
    pub captured_at: DateTime<Utc>,
    /// When recognition finished.
    pub recognized_at: DateTime<Utc>,
}

impl Record {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// How many fields need review.
    pub fn review_count(&self) -> usize {
        self.fields
            .iter()
            .filter(|f| f.status.needs_review())
            .count()
    }
}

/// An export the agent could not turn into a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// The reporting device.
    pub device_id: DeviceId,
    /// Export file name (basename).
    pub source_file: String,
    /// Hex SHA-256 of the file (empty when it could not be read).
    pub file_sha256: String,
    /// Stable reason code (`empty_file`, `not_an_image`, `too_large`, `unknown_layout`, ...).
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
    /// Where the agent put the file.
    pub quarantined_as: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Template id used to derive a [`Rejection`]'s receipt id; no template may use it.
pub const REJECTION_TEMPLATE_ID: &str = "rejection";

impl Rejection {
    /// The record id the hub's receipt for this rejection names: the record-id derivation over
    /// the file digest with template [`REJECTION_TEMPLATE_ID`], version 0, so it never equals
    /// a record's id and both sides compute it from the rejection alone.
    pub fn receipt_id(&self) -> RecordId {
        RecordId::derive(&self.device_id, &self.file_sha256, REJECTION_TEMPLATE_ID, 0)
    }
}

/// What the hub did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptOutcome {
    /// Stored now (committed).
    Stored,
    /// Already stored earlier (a resend); nothing changed.
    Duplicate,
    /// The hub cannot take it *yet* (a template or template version it does not know, a
    /// device not registered, a newer schema): it is noted in the hub's `deferrals` table,
    /// and the agent keeps it queued and sends it again later, with a backoff.
    Deferred,
    /// It can never be stored as it is (malformed, a forged id, a device publishing as
    /// another, a value the template refuses): the hub keeps the whole payload in its
    /// `rejects` table (`hub rejects list|show|replay`); the agent moves it to the rejected
    /// part of its outbox (`agent outbox list --rejected`), not deleted, and does not resend it.
    Rejected,
}

impl ReceiptOutcome {
    /// The outcome as written in payloads and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptOutcome::Stored => "stored",
            ReceiptOutcome::Duplicate => "duplicate",
            ReceiptOutcome::Deferred => "deferred",
            ReceiptOutcome::Rejected => "rejected",
        }
    }
}

/// The hub's receipt for one record, sent only after the database COMMIT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The record.
    pub record_id: RecordId,
    /// Outcome.
    pub outcome: ReceiptOutcome,
    /// Why it was deferred or rejected: `code: reason`, the code a stable word
    /// (`template_version`, `unknown_device`, `record_id`, ...).
    #[serde(default)]
    pub reason: Option<String>,
}

/// An agent's health, published retained; the last will sets `online: false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// The device.
    pub device_id: DeviceId,
    /// Whether the agent is connected.
    pub online: bool,
    /// Agent version.
    pub agent_version: String,
    /// Records waiting in the outbox.
    pub backlog: u64,
    /// Exports taken since start.
    pub exports: u64,
    /// Records retired by a receipt since start.
    pub delivered: u64,
    /// Exports rejected since start.
    pub rejected: u64,
    /// Last error, if any.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}
