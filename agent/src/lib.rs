//! examlink agent: runs on every exam-device PC and turns each new export into a record that
//! reaches the hub exactly once, through crashes and days offline.
//!
//! Stages, in data-flow order:
//! - [`ingest`]: watch export folders, take complete files, digest, skip what was taken.
//! - [`recognize`]: identify layout → align → crop → model → decode → validate.
//! - [`record`]: build the record-crate `Record` (with review crops for doubtful fields).
//! - [`outbox`]: durable queue; a record leaves only on the hub's receipt.
//! - [`publish`]: MQTT to the hub, resend until receipted, status and last will.
//!
//! Plus [`config`] and [`telemetry`].

pub mod config;
pub mod ingest;
pub mod outbox;
pub mod publish;
pub mod recognize;
pub mod record;
pub mod telemetry;
