//! outbox: the durable queue between recognition and the hub. A message (record or rejection)
//! leaves the queue only when the hub's [`record::Receipt`] for its id arrives, and leaves the
//! agent's disk only on a `stored` or `duplicate` one.
//!
//! - [`store`]: the on-disk queue in `sled` (enqueue, batches to send, retire, backlog, taken
//!   digests, and the `deferred` and `rejected` parts). The only module that touches the
//!   database.
//! - [`delivery`]: the sans-IO protocol deciding what to send, what to resend and when, and
//!   which deferred messages are held; [`driver`] pairs it with the store, and the
//!   [`crate::publish`] stage owns the event loop that drives it.
//! - [`stage`]: the outbox stage: receives messages from the assemble stage and enqueues them.
//! - [`admin`]: what the `agent outbox` commands do to a stopped agent's outbox; [`reread`]:
//!   what `agent requeue` does (see "Re-reading exports" below).
//!
//! # Receipt outcomes
//!
//! | outcome | the hub | the agent |
//! |---|---|---|
//! | `stored` | committed it now | retires it (deleted from the queue) |
//! | `duplicate` | had it already | retires it |
//! | `deferred` | cannot take it *yet* (template version or device it does not know) | keeps it queued (backlog and quota), holds it out of the window, sends it again after `outbox.defer_initial_secs` doubling to `outbox.defer_max_secs`, and at every reconnect |
//! | `rejected` | can never store it as it is; keeps the payload in `rejects` | moves it whole to the `rejected` part: out of the backlog and quota, never deleted; `agent outbox list --rejected`, `requeue`, `export` |
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
//! 4. *A message is deleted only on the hub's `stored` or `duplicate` receipt,* which the hub
//!    sends after its database COMMIT. MQTT PubAck is not used for this (rumqttc cannot map a
//!    PubAck to its publish, and the broker keeps nothing on disk). Retirements are not flushed
//!    one by one: a retirement lost to a crash only causes a resend, and the hub answers a
//!    resend with `duplicate`.
//! 5. *A `deferred` receipt deletes nothing.* The message stays in `messages`; only a
//!    `deferred` entry (when to try again, why) is added, and the protocol holds the message
//!    out of the window until then, or until the next reconnect. So a hub that is upgraded
//!    later (or a device registered later) still gets it: held messages are always due again
//!    at a finite time (at most `outbox.defer_max_secs`, and at once at every reconnect), and
//!    after a restart every deferral is read back and due at the first connection. A deferral
//!    lost to a crash only causes a resend, which the hub defers again.
//! 6. *A `rejected` receipt deletes nothing either.* One transaction moves the whole stored
//!    value from `messages`/`index` to `rejected`, with the reason and time; the file stays
//!    taken. Before the move commits the message is still queued (a crash resends it and the
//!    hub rejects it again); after, it is on disk in `rejected` until an operator requeues it
//!    (back into the queue with a new seq, same payload, one transaction). It no longer counts
//!    in the quota, so a rejected message never stops new exports from being taken.
//! 7. *Resends are harmless.* Record ids are derived from content
//!    ([`record::RecordId::derive`]), so a resend, or a re-read of the same file after a crash
//!    between steps 1 and 3, yields the same id and the hub's idempotent insert turns it into a
//!    no-op: the database holds one row per export.
//! 8. *Unreceipted messages are resent* after a timeout and after every reconnect, until the
//!    receipt comes ([`delivery`]). Because the outbox survives restarts, so does this promise.
//!    Held (deferred) messages are out of the window, so they cannot fill it; and while the
//!    queue has unsent messages they get at most half of the free window, so they cannot keep
//!    fresh exports waiting either.
//!
//! # Re-reading exports (`agent requeue`)
//!
//! An operator may make the agent read files again: quarantined exports (`agent requeue
//! --quarantined`: each is moved back into the first export folder under its original name)
//! or chosen exports still in an export folder (`agent requeue FILE...`), for instance after a
//! template or model update. Both only forget the files' digests in `taken` (and their `seen`
//! cache entries; [`Store::forget_digest`]), so the next ingest reads them as new; nothing
//! queued or rejected is touched, and the promise above holds for the new messages as for any.
//! What the hub does with a re-read follows from the record id, derived from device, image
//! digest, template id and template version ([`record::RecordId::derive`]):
//! - the same template version gives the same record id: the hub answers `duplicate` and
//!   nothing changes (if the earlier message is still queued, the re-read is not even queued);
//! - a new template version gives a new record id, which the hub stores as a new revision that
//!   `supersedes` the earlier record of the same device and image digest (linked to it, not a
//!   second unrelated row);
//! - a quarantined export that a template now fits becomes a record (its earlier rejection
//!   stays as it was at the hub).
//!
//! What is not covered: a disk that loses fsynced data, and a hub that sends a receipt without
//! having committed.
//!
//! The quota (`outbox.max_bytes`) bounds the payload bytes held; when reached, [`Store::enqueue`]
//! refuses and ingest stops taking files, which stay in the export folder until there is room.
//! Old messages are never dropped to make room.

pub mod admin;
pub mod delivery;
pub mod driver;
pub mod reread;
pub mod stage;
pub mod store;

pub use delivery::{Delivery, DeliveryConfig};
pub use driver::{Outbox, Retired, Transmit};
pub use stage::{OutboxConfig, OutboxStage};
pub use store::{
    Backlog, Deferral, Enqueued, Forgotten, Kind, Message, OutboxError, Pending, RejectedMessage,
    Requeued, Store,
};

#[cfg(test)]
mod model_test;
