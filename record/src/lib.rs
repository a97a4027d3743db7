//! The examlink contract shared by the agent and the hub. No tokio, no I/O.
//!
//! - [`catalog`]: canonical field names per device type.
//! - [`ids`]: `DeviceId`, `RecordId` (derived from content, never random).
//! - [`grammar`]: how each field is printed, normalised and range-checked.
//! - [`template`]: device layouts as data (boxes, grammar, anchors, rules), parsed and validated.
//! - [`rules`]: cross-field checks where the physics gives one.
//! - [`record`]: `Record` and the messages beside it (receipt, rejection, status).
//! - [`codec`]: the versioned JSON payload codec used on MQTT and in storage.
//! - [`topic`]: the MQTT topic tree, in one place.
#![deny(missing_docs)]

pub mod catalog;
pub mod codec;
pub mod grammar;
pub mod ids;
pub mod record;
pub mod rules;
pub mod secret;
#[cfg(feature = "signal")]
pub mod signal;
pub mod template;
pub mod topic;

pub use codec::{
    decode, encode, CodecError, Versioned, MAX_PAYLOAD_BYTES, OLDEST_SCHEMA_VERSION, SCHEMA_VERSION,
};
pub use grammar::{Checked, FieldSpec, Grammar, GrammarError, Sign};
pub use ids::{DeviceId, IdError, RecordId};
pub use record::{
    Alignment, ContextCrop, Field, FieldStatus, Receipt, ReceiptOutcome, Record, Rejection,
    ReviewCrop, StatusReport, REJECTION_TEMPLATE_ID,
};
pub use rules::{Rule, RuleViolation};
pub use template::{
    Anchor, FieldTemplate, Render, Template, TemplateError, TemplateSet, Variation,
};
