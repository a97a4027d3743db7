//! The delivery protocol, sans-IO: which queued messages to send now, which to resend, and
//! which sends a receipt settles. No network and no disk here; [`Outbox`] pairs it with the
//! [`Store`] and [`crate::publish`] drives it from the MQTT event loop.
//!
//! Rules:
//! - At most `window` messages are in flight (sent, no receipt yet).
//! - Messages are taken from the store in two lanes, so a fresh export does not wait behind
//!   days of backlog: the *backlog lane* holds what was queued before the current connection
//!   came up, the *fresh lane* what was queued after. While both have messages, the fresh lane
//!   gets up to half the free window first. When the backlog lane is drained the lanes merge.
//! - A message without a receipt is resent `resend_after` after its last send, doubling per
//!   attempt up to 8×; and at once after a reconnect (the receipt or the publish may have been
//!   lost with the connection).
//! - A receipt retires the message whatever its state (even one sent by an earlier process).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::time::Duration;

use record::RecordId;
use tokio::time::Instant;

use super::store::{OutboxError, Pending, Store};

/// Tuning of the delivery protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Most messages in flight at once.
    pub window: usize,
    /// Time after a send before the first resend.
    pub resend_after: Duration,
}

/// Which part of the queue a fetch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Queued before the current connection came up (or everything, once merged).
    Backlog,
    /// Queued after.
    Fresh,
}

/// A read the protocol wants from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Lane.
    pub lane: Lane,
    /// Sequence numbers to read.
    pub range: Range<u64>,
    /// Most messages to read.
    pub max: usize,
}

#[derive(Debug)]
struct Flight {
    seq: u64,
    attempts: u32,
    generation: u64,
}

/// The protocol state: cursors into the queue and the messages in flight. Lost on a crash by
/// design: a restarted agent resends everything still queued.
#[derive(Debug)]
pub struct Delivery {
    config: DeliveryConfig,
    connected: bool,
    /// Backlog lane is `[backlog_cursor, split)`; fresh lane is `[fresh_cursor, ..)`.
    /// `split == u64::MAX` means merged: one lane `[backlog_cursor, ..)`.
    split: u64,
    backlog_cursor: u64,
    fresh_cursor: u64,
    in_flight: HashMap<RecordId, Flight>,
    /// Resend deadlines in send order; entries whose generation no longer matches are stale.
    timeline: VecDeque<(Instant, RecordId, u64)>,
    generation: u64,
}

/// A message to publish now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// Queue position.
    pub seq: u64,
    /// Id.
    pub id: RecordId,
    /// How many times it was sent before by this process.
    pub attempt: u32,
}

impl Delivery {
    /// A protocol with nothing in flight, disconnected.
    pub fn new(config: DeliveryConfig) -> Self {
        Self {
            config: DeliveryConfig {
                window: config.window.max(1),
                ..config
            },
            connected: false,
            split: u64::MAX,
            backlog_cursor: 0,
            fresh_cursor: 0,
            in_flight: HashMap::new(),
            timeline: VecDeque::new(),
            generation: 0,
        }
    }

    /// Whether the protocol considers the connection up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Messages sent and not yet receipted.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The connection (and the receipts subscription) is up; `durable_seq` is the store's
    /// newest message. Everything in flight becomes due at once.
    pub fn on_connected(&mut self, now: Instant, durable_seq: u64) {
        self.connected = true;
        if self.split == u64::MAX {
            self.split = durable_seq.saturating_add(1).max(self.backlog_cursor);
            self.fresh_cursor = self.split;
        }
        self.timeline.clear();
        let ids: Vec<RecordId> = self.in_flight.keys().cloned().collect();
        for id in ids {
            self.schedule(now, id, Duration::ZERO);
        }
    }

    /// The connection went down; nothing is sent until [`Delivery::on_connected`].
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.timeline.clear();
    }

    /// The next read to make from the store, if the window has room and a lane may have
    /// messages (`durable_seq` is the store's newest message).
    pub fn next_fetch(&self, durable_seq: u64) -> Option<Fetch> {
        if !self.connected {
            return None;
        }
        let free = self.config.window.saturating_sub(self.in_flight.len());
        if free == 0 {
            return None;
        }
        let end = durable_seq.saturating_add(1);
        let backlog_end = self.split.min(end);
        let backlog = self.backlog_cursor < backlog_end;
        let fresh = self.split != u64::MAX && self.fresh_cursor < end;
        match (backlog, fresh) {
            (_, true) => Some(Fetch {
                lane: Lane::Fresh,
                range: self.fresh_cursor..end,
                max: if backlog { free.div_ceil(2) } else { free },
            }),
            (true, false) => Some(Fetch {
                lane: Lane::Backlog,
                range: self.backlog_cursor..backlog_end,
                max: free,
            }),
            (false, false) => None,
        }
    }

    /// Records the result of `fetch`: every message in `got` (in queue order) is sent now by
    /// the caller. Returns the sends to make.
    pub fn fetched(&mut self, now: Instant, fetch: &Fetch, got: &[(u64, RecordId)]) -> Vec<Send> {
        let exhausted = got.len() < fetch.max;
        let next = match (exhausted, got.last()) {
            (true, _) | (false, None) => fetch.range.end,
            (false, Some((seq, _))) => seq + 1,
        };
        match fetch.lane {
            Lane::Fresh => self.fresh_cursor = self.fresh_cursor.max(next),
            Lane::Backlog => {
                self.backlog_cursor = self.backlog_cursor.max(next);
                if self.split != u64::MAX && self.backlog_cursor >= self.split {
                    // Backlog drained: merge the lanes.
                    self.backlog_cursor = self.fresh_cursor;
                    self.split = u64::MAX;
                }
            }
        }
        let mut sends = Vec::with_capacity(got.len());
        for (seq, id) in got {
            if self.in_flight.contains_key(id) {
                continue;
            }
            self.in_flight.insert(
                id.clone(),
                Flight {
                    seq: *seq,
                    attempts: 0,
                    generation: 0,
                },
            );
            self.schedule(now, id.clone(), self.config.resend_after);
            sends.push(Send {
                seq: *seq,
                id: id.clone(),
                attempt: 0,
            });
        }
        sends
    }

    /// Messages whose resend time has come; each is rescheduled as sent now.
    pub fn due(&mut self, now: Instant) -> Vec<Send> {
        let mut out = Vec::new();
        if !self.connected {
            return out;
        }
        while let Some((at, _, _)) = self.timeline.front() {
            if *at > now {
                break;
            }
            let (_, id, generation) = self.timeline.pop_front().expect("front exists");
            let Some(flight) = self.in_flight.get_mut(&id) else {
                continue;
            };
            if flight.generation != generation {
                continue;
            }
            flight.attempts += 1;
            let attempt = flight.attempts;
            let seq = flight.seq;
            let backoff = self.config.resend_after * 2u32.pow(attempt.min(3));
            self.schedule(now, id.clone(), backoff);
            out.push(Send { seq, id, attempt });
        }
        out
    }

    /// When [`Delivery::due`] next has something (None: nothing in flight or disconnected).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some((at, id, generation)) = self.timeline.front() {
            match self.in_flight.get(id) {
                Some(f) if f.generation == *generation => return Some(*at),
                _ => {
                    self.timeline.pop_front();
                }
            }
        }
        None
    }

    /// A receipt came for `id`: it is no longer in flight. Returns its queue position when
    /// this process had sent it.
    pub fn on_receipt(&mut self, id: &RecordId) -> Option<u64> {
        self.in_flight.remove(id).map(|f| f.seq)
    }

    /// The message was not found in the store when it was due (retired meanwhile).
    pub fn forget(&mut self, id: &RecordId) {
        self.in_flight.remove(id);
    }

    fn schedule(&mut self, now: Instant, id: RecordId, after: Duration) {
        self.generation += 1;
        if let Some(f) = self.in_flight.get_mut(&id) {
            f.generation = self.generation;
        }
        // Deadlines are pushed in time order except for zero delays, which go to the front.
        if after.is_zero() {
            self.timeline.push_front((now, id, self.generation));
        } else {
            let at = now + after;
            if self.timeline.back().is_some_and(|(b, _, _)| *b > at) {
                let pos = self.timeline.partition_point(|(t, _, _)| *t <= at);
                self.timeline.insert(pos, (at, id, self.generation));
            } else {
                self.timeline.push_back((at, id, self.generation));
            }
        }
    }
}

/// A message ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The stored message.
    pub pending: Pending,
    /// 0 for a first send, then the resend count.
    pub attempt: u32,
}

/// The store and the protocol together: what the publisher drives. Still no network.
#[derive(Debug)]
pub struct Outbox {
    store: Store,
    delivery: Delivery,
}

/// How a batch of receipts was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// Messages removed from the store.
    pub removed: usize,
    /// Receipts for messages no longer queued (repeats, late duplicates).
    pub unknown: usize,
}

impl Outbox {
    /// Pairs a store with a fresh protocol state.
    pub fn new(store: Store, config: DeliveryConfig) -> Self {
        Self {
            store,
            delivery: Delivery::new(config),
        }
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

    /// Everything to publish now: due resends first, then new messages up to the window.
    pub fn poll_transmit(&mut self, now: Instant) -> Result<Vec<Transmit>, OutboxError> {
        let mut out = Vec::new();
        for send in self.delivery.due(now) {
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

    /// Applies receipts: the messages leave the store and the window.
    pub fn on_receipts(&mut self, ids: &[RecordId]) -> Result<Retired, OutboxError> {
        for id in ids {
            self.delivery.on_receipt(id);
        }
        let mut retired = Retired::default();
        for r in self.store.retire(ids)? {
            match r {
                Some(_) => retired.removed += 1,
                None => retired.unknown += 1,
            }
        }
        Ok(retired)
    }

    /// See [`Delivery::next_deadline`].
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.delivery.next_deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> RecordId {
        RecordId::parse(&format!("{n:064x}")).unwrap()
    }

    fn config(window: usize) -> DeliveryConfig {
        DeliveryConfig {
            window,
            resend_after: Duration::from_secs(10),
        }
    }

    /// Runs fetches against a queue of seqs `queue`, returning what was sent.
    fn pump(d: &mut Delivery, now: Instant, queue: &[u64]) -> Vec<u64> {
        let durable = queue.iter().copied().max().unwrap_or(0);
        let mut sent = Vec::new();
        while let Some(f) = d.next_fetch(durable) {
            let got: Vec<_> = queue
                .iter()
                .filter(|s| f.range.contains(s))
                .take(f.max)
                .map(|s| (*s, id(*s)))
                .collect();
            sent.extend(d.fetched(now, &f, &got).into_iter().map(|s| s.seq));
        }
        sent
    }

    #[test]
    fn sends_nothing_while_disconnected_and_respects_the_window() {
        let now = Instant::now();
        let mut d = Delivery::new(config(3));
        assert_eq!(pump(&mut d, now, &[1, 2, 3, 4, 5]), Vec::<u64>::new());
        d.on_connected(now, 5);
        assert_eq!(pump(&mut d, now, &[1, 2, 3, 4, 5]), vec![1, 2, 3]);
        assert_eq!(d.in_flight(), 3);
        assert_eq!(d.on_receipt(&id(2)), Some(2));
        assert_eq!(pump(&mut d, now, &[1, 3, 4, 5]), vec![4]);
        assert_eq!(d.on_receipt(&id(99)), None);
    }

    #[test]
    fn resends_after_timeout_with_backoff_and_at_once_after_reconnect() {
        let t0 = Instant::now();
        let mut d = Delivery::new(config(10));
        d.on_connected(t0, 2);
        assert_eq!(pump(&mut d, t0, &[1, 2]), vec![1, 2]);
        assert!(d.due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(d.next_deadline(), Some(t0 + Duration::from_secs(10)));
        d.on_receipt(&id(1));
        let due = d.due(t0 + Duration::from_secs(10));
        assert_eq!(
            due.iter().map(|s| (s.seq, s.attempt)).collect::<Vec<_>>(),
            vec![(2, 1)]
        );
        // Second resend waits 20 s more.
        assert!(d.due(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(d.due(t0 + Duration::from_secs(30)).len(), 1);

        d.on_disconnected();
        assert!(d.due(t0 + Duration::from_secs(1000)).is_empty());
        d.on_connected(t0 + Duration::from_secs(31), 2);
        let due = d.due(t0 + Duration::from_secs(31));
        assert_eq!(due.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn fresh_exports_do_not_wait_behind_the_backlog() {
        let now = Instant::now();
        let mut d = Delivery::new(config(4));
        let backlog: Vec<u64> = (1..=100).collect();
        d.on_connected(now, 100);
        assert_eq!(pump(&mut d, now, &backlog), vec![1, 2, 3, 4]);
        for s in 1..=4 {
            d.on_receipt(&id(s));
        }
        // Two fresh exports arrive: they go out with the next free slots.
        let mut queue: Vec<u64> = (5..=100).collect();
        queue.extend([101, 102]);
        let sent = pump(&mut d, now, &queue);
        assert_eq!(sent, vec![101, 102, 5, 6]);
    }

    #[test]
    fn lanes_merge_when_the_backlog_is_drained() {
        let now = Instant::now();
        let mut d = Delivery::new(config(100));
        d.on_connected(now, 3);
        assert_eq!(pump(&mut d, now, &[1, 2, 3]), vec![1, 2, 3]);
        assert_eq!(pump(&mut d, now, &[1, 2, 3, 4, 5]), vec![4, 5]);
        for s in 1..=5 {
            d.on_receipt(&id(s));
        }
        d.on_disconnected();
        d.on_connected(now, 7);
        // 8 was queued after the reconnect: fresh lane first.
        assert_eq!(pump(&mut d, now, &[6, 7, 8]), vec![8, 6, 7]);
    }
}
