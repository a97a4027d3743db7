//! validate: decide whether a record payload is trustworthy. The hub never trusts an agent:
//! every check the agent made is made again, against the hub's own copy of the templates.
//!
//! In order: the gate's verdict, topic, size, schema version and shape ([`record::decode`]),
//! payload device = topic device, text sanity, known template and version, record id derived
//! from content, every field (names and order, status consistency, and for `ok` fields
//! [`record::FieldSpec::check_value_at`], number and unit), header = fields, the template's rules,
//! dates, review crops, sample crops (quality sampling, schema v2: only for fields read `ok`).
//! The first failure becomes a [`Reject`] with a stable code (a bounded metrics label) and a
//! reason naming the field and value.
//!
//! Two kinds of failure ([`Reject::defer`]):
//! - *not yet* ([`is_deferred`]): a template id or version the hub has not seen, a newer schema
//!   version; (in the load stage) a device not registered yet or registered with another type.
//!   Answered `deferred`: the agent keeps the record and sends it again later.
//! - *never as it is*: everything else (malformed JSON, a forged id, a device publishing as
//!   another, a value its own template refuses). Answered `rejected`, and the whole payload is
//!   kept in `rejects` for `hub rejects replay`.
//!
//! A device clock far off is never a failure: the record is stored with `clock_suspect` and a
//! review item ([`Valid::clock`]).
//!
//! Pure: no I/O; [`run`] only moves messages between the stage's channels.
//!
//! - [`check`]: the checks of one message ([`Validator::check`]), pure.
//! - [`fields`]: per-field and per-text checks against the template.
//! - [`stage`]: the loop between the subscribe and load stages.

mod check;
pub(crate) mod fields;
mod stage;

pub use check::{is_deferred, Checked, Contexts, Crops, Reject, Valid, Validator, DEFERRED_CODES};
pub use stage::run;
