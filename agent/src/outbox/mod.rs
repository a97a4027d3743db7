//! outbox: the durable queue between recognition and the hub. A message (record or rejection)
//! leaves the outbox only when the hub's [`record::Receipt`] for its id arrives.
//!
//! - [`store`]: the on-disk queue in `sled` (enqueue, batches to send, retire, backlog, taken
//!   digests). The only module that touches the database.
//! - [`delivery`]: the sans-IO protocol deciding what to send, what to resend and when; the
//!   [`crate::publish`] stage owns the event loop that drives it.
//! - [`stage`]: the outbox stage: receives messages from the assemble stage and enqueues them.
//!
//! # Delivery argument
//!
//! Claim: every export taken from an export folder reaches the hub's database, and reaches it
//! once, whatever crashes (kill -9, power loss) and disconnections happen in between.
//!
//! 1. *A file is "taken" only by the transaction that enqueues its message.* Its digest is
//!    written to the `taken` tree in the same sled transaction that writes the message, and the
//!    transaction is flushed (fsync) before [`Store::enqueue`] returns. Until that returns
//!    nothing irreversible has happened: the export folder is untouched, nothing was published
//!    and no quarantine copy was deleted. A crash anywhere before leaves the digest untaken, so
//!    the next start reads the file again; a crash after finds the message on disk. Either way
//!    the export is not lost.
//! 2. *Nothing is published before it is durable.* The publisher reads messages only from the
//!    store, after step 1 returned. So the hub never holds a message that a restarted agent
//!    could produce again with a different id or content.
//! 3. *Nothing irreversible follows before it is durable.* Deleting or moving the source file
//!    (when configured) happens only after step 1 returned.
//! 4. *A message is deleted only on the hub's receipt,* which the hub sends after its database
//!    COMMIT. MQTT PubAck is not used for this (rumqttc cannot map a PubAck to its publish, and
//!    the broker keeps nothing on disk). Retirements are not flushed one by one: a retirement
//!    lost to a crash only causes a resend, and the hub answers a resend with `duplicate`.
//! 5. *Resends are harmless.* Record ids are derived from content
//!    ([`record::RecordId::derive`]), so a resend, or a re-read of the same file after a crash
//!    between steps 1 and 3, yields the same id and the hub's idempotent insert turns it into a
//!    no-op: the database holds one row per export.
//! 6. *Unreceipted messages are resent* after a timeout and after every reconnect, until the
//!    receipt comes ([`delivery`]). Because the outbox survives restarts, so does this promise.
//!
//! What is not covered: a disk that loses fsynced data, and a hub that sends a receipt without
//! having committed.
//!
//! The quota (`outbox.max_bytes`) bounds the payload bytes held; when reached, [`Store::enqueue`]
//! refuses and ingest stops taking files, which stay in the export folder until there is room.
//! Old messages are never dropped to make room.

pub mod delivery;
pub mod stage;
pub mod store;

pub use delivery::{Delivery, DeliveryConfig, Outbox, Retired, Transmit};
pub use stage::{OutboxConfig, OutboxStage};
pub use store::{Backlog, Enqueued, Kind, Message, OutboxError, Pending, Store};

#[cfg(test)]
mod model_test;
