//! assemble: turn what recognition made of an export into the message for the hub — a
//! [`record::Record`] (with review crops of doubtful fields and the quality-sampling crops of a
//! few fields read `ok`), or a [`record::Rejection`] after the file was put in quarantine.
//!
//! - [`build`]: the `Record` from a recognition result; ids; bounded review and sample crops.
//! - [`sample`]: quality sampling: which `ok` fields are drawn for a blind check (by a hash of
//!   record id and field, never at random).
//! - [`screen`]: cheap checks before decoding (empty, size, not an image, pixel cap).
//! - [`quarantine`]: copy or move a bad export aside with a `<name>.reason.txt`.
//! - [`stage`]: the worker pool calling the recognizer off the async runtime.

pub mod build;
pub mod quarantine;
pub mod sample;
pub mod screen;
pub mod stage;

pub use build::{build_record, rejection_id, Recognition, Refusal, REJECTION_TEMPLATE_ID};
pub use quarantine::{QuarantineConfig, QuarantineMode};
pub use stage::{AssembleSettings, AssembleStage};
