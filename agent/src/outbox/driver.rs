//! The store and the delivery protocol together: what the publisher drives. Still no network:
//! time comes in as arguments (a monotonic [`Instant`] for the protocol, the wall clock for
//! what is written to disk).
//!
//! Receipts, by outcome:
//! - `stored`, `duplicate`: the message is retired (with its deferral, if any).
//! - `deferred`: it stays queued; its deferral is written ([`Store::defer`]) and the protocol
//!   holds it for [`DeliveryConfig::defer_delay`] of its attempt count.
//! - `rejected`: it moves to the rejected part ([`Store::reject`]) and is not sent again.

use chrono::{DateTime, Utc};
use record::{Receipt, ReceiptOutcome, RecordId};
use tokio::time::Instant;

use super::delivery::{Delivery, DeliveryConfig};
use super::store::{OutboxError, Pending, Store};

/// A message ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The stored message.
    pub pending: Pending,
    /// 0 for a first send, then the resend count (a deferred message's retry counts as one).
    pub attempt: u32,
}

/// The store and the protocol together.
#[derive(Debug)]
pub struct Outbox {
    store: Store,
    delivery: Delivery,
    config: DeliveryConfig,
}

/// How a batch of receipts was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retired {
    /// Messages removed from the store (stored or duplicate).
    pub removed: usize,
    /// Receipts for messages no longer queued (repeats, late duplicates).
    pub unknown: usize,
    /// Messages deferred, still queued.
    pub deferred: usize,
    /// Messages moved to the rejected part.
    pub rejected: usize,
    /// The reason of the last deferral in the batch.
    pub last_deferral: Option<String>,
    /// The id and reason of the last rejection in the batch.
    pub last_rejection: Option<(RecordId, String)>,
}

/// The reason a receipt gives, or a stand-in.
fn reason_of(receipt: &Receipt) -> &str {
    receipt.reason.as_deref().unwrap_or("(no reason given)")
}

impl Outbox {
    /// Pairs a store with a fresh protocol state; the deferrals on disk are held until the
    /// first connection (then all due at once).
    pub fn new(store: Store, config: DeliveryConfig) -> Result<Self, OutboxError> {
        let mut delivery = Delivery::new(config);
        for (id, d) in store.deferrals()? {
            delivery.hold(id, d.seq, None);
        }
        Ok(Self {
            store,
            delivery,
            config,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The protocol state.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// See [`Delivery::on_connected`].
    pub fn on_connected(&mut self, now: Instant) {
        let durable = self.store.durable_seq();
        self.delivery.on_connected(now, durable);
    }

    /// See [`Delivery::on_disconnected`].
    pub fn on_disconnected(&mut self) {
        self.delivery.on_disconnected();
    }

    /// Everything to publish now: due resends first, then held messages whose hold ended,
    /// then new messages up to the window.
    pub fn poll_transmit(&mut self, now: Instant) -> Result<Vec<Transmit>, OutboxError> {
        let mut out = Vec::new();
        let durable = self.store.durable_seq();
        let mut due = self.delivery.due(now);
        due.extend(self.delivery.due_held(now, durable));
        for send in due {
            match self.store.get(send.seq)? {
                Some(pending) if pending.id == send.id => out.push(Transmit {
                    pending,
                    attempt: send.attempt,
                }),
                _ => self.delivery.forget(&send.id),
            }
        }
        while let Some(fetch) = self.delivery.next_fetch(self.store.durable_seq()) {
            let batch = self.store.batch(fetch.range.clone(), fetch.max)?;
            let ids: Vec<(u64, RecordId)> = batch.iter().map(|p| (p.seq, p.id.clone())).collect();
            let sends = self.delivery.fetched(now, &fetch, &ids);
            let mut batch = batch.into_iter();
            for send in sends {
                // `sends` is a subsequence of `batch` in the same order.
                for pending in batch.by_ref() {
                    if pending.seq == send.seq {
                        out.push(Transmit {
                            pending,
                            attempt: 0,
                        });
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Applies receipts, in order, at `now` (monotonic) and `wall` (written to disk).
    pub fn on_receipts(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        receipts: &[Receipt],
    ) -> Result<Retired, OutboxError> {
        let mut retired = Retired::default();
        let mut settled: Vec<RecordId> = Vec::new();
        for receipt in receipts {
            let id = &receipt.record_id;
            match receipt.outcome {
                ReceiptOutcome::Stored | ReceiptOutcome::Duplicate => {
                    self.delivery.on_receipt(id);
                    settled.push(id.clone());
                    continue;
                }
                ReceiptOutcome::Deferred | ReceiptOutcome::Rejected => {}
            }
            // Keep the order of receipts for one id: retire what came before first.
            self.retire(&mut settled, &mut retired)?;
            let reason = reason_of(receipt);
            if receipt.outcome == ReceiptOutcome::Deferred {
                let config = self.config;
                match self
                    .store
                    .defer(id, reason, wall, |a| config.defer_delay(a))?
                {
                    Some((d, wait)) => {
                        self.delivery.hold(id.clone(), d.seq, Some(now + wait));
                        retired.deferred += 1;
                        retired.last_deferral = Some(reason.to_owned());
                    }
                    None => {
                        self.delivery.forget(id);
                        retired.unknown += 1;
                    }
                }
            } else {
                self.delivery.on_receipt(id);
                match self.store.reject(id, reason, wall)? {
                    Some(_) => {
                        retired.rejected += 1;
                        retired.last_rejection = Some((id.clone(), reason.to_owned()));
                    }
                    None => retired.unknown += 1,
                }
            }
        }
        self.retire(&mut settled, &mut retired)?;
        Ok(retired)
    }

    fn retire(
        &mut self,
        settled: &mut Vec<RecordId>,
        retired: &mut Retired,
    ) -> Result<(), OutboxError> {
        if settled.is_empty() {
            return Ok(());
        }
        for r in self.store.retire(settled)? {
            match r {
                Some(_) => retired.removed += 1,
                None => retired.unknown += 1,
            }
        }
        settled.clear();
        Ok(())
    }

    /// See [`Delivery::next_deadline`].
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let durable = self.store.durable_seq();
        self.delivery.next_deadline(durable)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbox::store::tests::message;

    fn receipt(n: u32, outcome: ReceiptOutcome, reason: &str) -> Receipt {
        Receipt {
            record_id: message(n).id(),
            outcome,
            reason: Some(reason.to_owned()),
        }
    }

    fn config() -> DeliveryConfig {
        DeliveryConfig {
            window: 8,
            resend_after: Duration::from_secs(10),
            defer_initial: Duration::from_secs(60),
            defer_max: Duration::from_secs(240),
        }
    }

    fn ids(t: &[Transmit]) -> Vec<RecordId> {
        t.iter().map(|t| t.pending.id.clone()).collect()
    }

    #[test]
    fn deferred_waits_its_backoff_rejected_moves_aside_stored_retires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        for n in 1..=3 {
            store.enqueue(&message(n)).unwrap();
        }
        let mut outbox = Outbox::new(store.clone(), config()).unwrap();
        let (t0, wall) = (Instant::now(), Utc::now());
        outbox.on_connected(t0);
        assert_eq!(outbox.poll_transmit(t0).unwrap().len(), 3);
        let r = outbox
            .on_receipts(
                t0,
                wall,
                &[
                    receipt(
                        1,
                        ReceiptOutcome::Deferred,
                        "template_version: autoref_fw2 v3",
                    ),
                    receipt(2, ReceiptOutcome::Rejected, "record_id: forged"),
                    receipt(3, ReceiptOutcome::Stored, ""),
                ],
            )
            .unwrap();
        assert_eq!((r.removed, r.deferred, r.rejected, r.unknown), (1, 1, 1, 0));
        assert_eq!(
            r.last_deferral.as_deref(),
            Some("template_version: autoref_fw2 v3")
        );
        let b = store.backlog();
        assert_eq!((b.messages, b.deferred, b.rejected), (1, 1, 1));
        // Not resent on the resend timeline, nor before its hold ends.
        assert!(outbox
            .poll_transmit(t0 + Duration::from_secs(59))
            .unwrap()
            .is_empty());
        assert_eq!(outbox.next_deadline(), Some(t0 + Duration::from_secs(60)));
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(
            ids(&outbox.poll_transmit(t1).unwrap()),
            vec![message(1).id()]
        );
        // Deferred again: twice as long.
        outbox
            .on_receipts(t1, wall, &[receipt(1, ReceiptOutcome::Deferred, "x: y")])
            .unwrap();
        assert_eq!(
            store.deferral(&message(1).id()).unwrap().unwrap().attempts,
            2
        );
        assert!(outbox
            .poll_transmit(t1 + Duration::from_secs(119))
            .unwrap()
            .is_empty());
        // A reconnect makes it due at once.
        outbox.on_disconnected();
        let t2 = t1 + Duration::from_secs(5);
        outbox.on_connected(t2);
        assert_eq!(
            ids(&outbox.poll_transmit(t2).unwrap()),
            vec![message(1).id()]
        );
        let r = outbox
            .on_receipts(t2, wall, &[receipt(1, ReceiptOutcome::Duplicate, "")])
            .unwrap();
        assert_eq!(r.removed, 1);
        let b = store.backlog();
        assert_eq!((b.messages, b.deferred, b.rejected), (0, 0, 1));
        assert!(store.deferrals().unwrap().is_empty());
        // A late receipt for the rejected one changes nothing.
        let r = outbox
            .on_receipts(t2, wall, &[receipt(2, ReceiptOutcome::Rejected, "again")])
            .unwrap();
        assert_eq!(r.unknown, 1);
    }

    #[test]
    fn deferrals_survive_a_restart_and_are_sent_once_at_connect() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        for n in 1..=2 {
            store.enqueue(&message(n)).unwrap();
        }
        let mut outbox = Outbox::new(store, config()).unwrap();
        let t0 = Instant::now();
        outbox.on_connected(t0);
        outbox.poll_transmit(t0).unwrap();
        outbox
            .on_receipts(
                t0,
                Utc::now(),
                &[receipt(1, ReceiptOutcome::Deferred, "a: b")],
            )
            .unwrap();
        drop(outbox);

        let store = Store::open(dir.path(), 1 << 30).unwrap();
        let mut outbox = Outbox::new(store, config()).unwrap();
        assert_eq!(outbox.delivery().held(), 1);
        let t1 = Instant::now();
        outbox.on_connected(t1);
        let sent = ids(&outbox.poll_transmit(t1).unwrap());
        assert_eq!(sent.len(), 2, "each sent once: {sent:?}");
        assert!(sent.contains(&message(1).id()) && sent.contains(&message(2).id()));
        assert_eq!(outbox.delivery().in_flight(), 2);
    }
}
