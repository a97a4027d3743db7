//! The delivery protocol, sans-IO: which queued messages to send now, which to resend, and
//! which sends a receipt settles. No network and no disk here; [`super::Outbox`] pairs it with
//! the [`super::Store`] and [`crate::publish`] drives it from the MQTT event loop.
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
//! - A message the hub *deferred* is *held*: out of the window, skipped by the lanes, and sent
//!   again only when its hold ends ([`Delivery::hold`]; the backoff is
//!   [`DeliveryConfig::defer_delay`]) or at the next reconnect, when every held message is due
//!   at once (the hub may just have been upgraded). While the lanes have unsent messages, due
//!   held messages get at most half the free window, so they never hold up fresh exports.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::time::Duration;

use record::RecordId;
use tokio::time::Instant;

/// Tuning of the delivery protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Most messages in flight at once.
    pub window: usize,
    /// Time after a send before the first resend.
    pub resend_after: Duration,
    /// Hold after the first deferred receipt; doubles per deferral.
    pub defer_initial: Duration,
    /// Longest hold.
    pub defer_max: Duration,
}

impl Default for DeliveryConfig {
    /// The `[outbox]` defaults.
    fn default() -> Self {
        Self {
            window: 256,
            resend_after: Duration::from_secs(60),
            defer_initial: Duration::from_secs(60),
            defer_max: Duration::from_secs(3 * 3600),
        }
    }
}

impl DeliveryConfig {
    /// How long a message is held after its `attempts`-th deferred receipt (1 for the first):
    /// `defer_initial` doubling per attempt, at most `defer_max`.
    pub fn defer_delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.defer_initial
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.defer_max)
    }
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

/// A deferred message: its queue position and when it is due (`None`: at the next connection).
#[derive(Debug)]
struct Held {
    seq: u64,
    due: Option<Instant>,
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
    /// Deferred messages, not in flight and skipped by the lanes.
    held: HashMap<RecordId, Held>,
    /// The held messages with a due time, in due order.
    held_due: BTreeSet<(Instant, u64, RecordId)>,
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
            held: HashMap::new(),
            held_due: BTreeSet::new(),
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

    /// Messages held after a deferred receipt.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether `id` is held.
    pub fn is_held(&self, id: &RecordId) -> bool {
        self.held.contains_key(id)
    }

    /// The connection (and the receipts subscription) is up; `durable_seq` is the store's
    /// newest message. Everything in flight and everything held becomes due at once.
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
        self.held_due.clear();
        for (id, h) in &mut self.held {
            h.due = Some(now);
            self.held_due.insert((now, h.seq, id.clone()));
        }
    }

    /// The hub deferred `id` (queue position `seq`): it leaves the window and is held until
    /// `due` (`None`: until the next connection; for deferrals read back after a restart).
    pub fn hold(&mut self, id: RecordId, seq: u64, due: Option<Instant>) {
        self.in_flight.remove(&id);
        self.unhold(&id);
        if let Some(at) = due {
            self.held_due.insert((at, seq, id.clone()));
        }
        self.held.insert(id, Held { seq, due });
    }

    fn unhold(&mut self, id: &RecordId) {
        if let Some(h) = self.held.remove(id) {
            if let Some(at) = h.due {
                self.held_due.remove(&(at, h.seq, id.clone()));
            }
        }
    }

    /// How many due held messages may be sent now: half the free window while a lane has
    /// unsent messages, all of it otherwise.
    fn held_share(&self, durable_seq: u64) -> usize {
        if !self.connected {
            return 0;
        }
        let free = self.config.window.saturating_sub(self.in_flight.len());
        let end = durable_seq.saturating_add(1);
        let backlog = self.backlog_cursor < self.split.min(end);
        let fresh = self.split != u64::MAX && self.fresh_cursor < end;
        if backlog || fresh {
            free / 2
        } else {
            free
        }
    }

    /// Held messages whose hold has ended, within their share of the window (half the free
    /// window while a lane has unsent messages, all of it otherwise); each goes back in flight
    /// as sent now (`attempt` 1: a retry).
    pub fn due_held(&mut self, now: Instant, durable_seq: u64) -> Vec<Send> {
        let share = self.held_share(durable_seq);
        let mut out = Vec::new();
        while out.len() < share {
            let Some((at, seq, id)) = self.held_due.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            self.held_due.pop_first();
            self.held.remove(&id);
            self.in_flight.insert(
                id.clone(),
                Flight {
                    seq,
                    attempts: 0,
                    generation: 0,
                },
            );
            self.schedule(now, id.clone(), self.config.resend_after);
            out.push(Send {
                seq,
                id,
                attempt: 1,
            });
        }
        out
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
            if self.in_flight.contains_key(id) || self.held.contains_key(id) {
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

    /// When [`Delivery::due`] or [`Delivery::due_held`] next has something (None: nothing in
    /// flight or held with room to send it, or disconnected). `durable_seq` as for
    /// [`Delivery::next_fetch`].
    pub fn next_deadline(&mut self, durable_seq: u64) -> Option<Instant> {
        let mut resend = None;
        while let Some((at, id, generation)) = self.timeline.front() {
            match self.in_flight.get(id) {
                Some(f) if f.generation == *generation => {
                    resend = Some(*at);
                    break;
                }
                _ => {
                    self.timeline.pop_front();
                }
            }
        }
        let held = match self.held_share(durable_seq) {
            0 => None,
            _ => self.held_due.first().map(|(at, _, _)| *at),
        };
        match (resend, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A final receipt (stored, duplicate, rejected) came for `id`: it is no longer in flight
    /// or held. Returns its queue position when this process had it in flight.
    pub fn on_receipt(&mut self, id: &RecordId) -> Option<u64> {
        self.unhold(id);
        self.in_flight.remove(id).map(|f| f.seq)
    }

    /// The message was not found in the store when it was due (retired meanwhile).
    pub fn forget(&mut self, id: &RecordId) {
        self.unhold(id);
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
            defer_initial: Duration::from_secs(60),
            defer_max: Duration::from_secs(600),
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
        assert_eq!(d.next_deadline(2), Some(t0 + Duration::from_secs(10)));
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

    #[test]
    fn defer_delay_doubles_up_to_the_cap() {
        let c = config(1);
        let secs: Vec<u64> = (1..=6).map(|a| c.defer_delay(a).as_secs()).collect();
        assert_eq!(secs, vec![60, 120, 240, 480, 600, 600]);
        assert_eq!(c.defer_delay(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn held_messages_leave_the_window_and_do_not_block_fresh_ones() {
        let t0 = Instant::now();
        let mut d = Delivery::new(config(2));
        d.on_connected(t0, 2);
        assert_eq!(pump(&mut d, t0, &[1, 2]), vec![1, 2]);
        // Both deferred: the window is free again and they are not resent on the timeline.
        d.hold(id(1), 1, Some(t0 + Duration::from_secs(60)));
        d.hold(id(2), 2, Some(t0 + Duration::from_secs(120)));
        assert_eq!((d.in_flight(), d.held()), (0, 2));
        assert!(d.due(t0 + Duration::from_secs(50)).is_empty());
        // Fresh messages go out at once, the whole window.
        assert_eq!(pump(&mut d, t0, &[1, 2, 3, 4, 5]), vec![3, 4]);
        // A restart-like refetch of the held ones skips them.
        assert!(d.due_held(t0 + Duration::from_secs(59), 5).is_empty());
        for s in [3, 4] {
            d.on_receipt(&id(s));
        }
        // 5 is still unsent: the held message gets half the free window, 5 the rest.
        let held = d.due_held(t0 + Duration::from_secs(60), 5);
        assert_eq!(
            held.iter().map(|s| (s.seq, s.attempt)).collect::<Vec<_>>(),
            vec![(1, 1)]
        );
        assert_eq!(
            pump(&mut d, t0 + Duration::from_secs(60), &[1, 2, 5]),
            vec![5]
        );
        assert_eq!((d.in_flight(), d.held()), (2, 1));
        // Window full: no deadline for the held one (no busy loop), only the resends.
        assert_eq!(d.next_deadline(5), Some(t0 + Duration::from_secs(70)));
        d.on_receipt(&id(1));
        d.on_receipt(&id(5));
        // Lanes empty: the whole window is the held messages' share.
        assert_eq!(d.next_deadline(5), Some(t0 + Duration::from_secs(120)));
        let due = d.due_held(t0 + Duration::from_secs(120), 5);
        assert_eq!(due.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![2]);
        // Now in flight: resent on the normal timeline if no receipt comes.
        assert_eq!(d.due(t0 + Duration::from_secs(130)).len(), 1);
        assert_eq!(d.on_receipt(&id(2)), Some(2));
        assert_eq!((d.in_flight(), d.held()), (0, 0));
        assert_eq!(d.next_deadline(5), None);
    }

    #[test]
    fn every_held_message_is_due_at_a_reconnect() {
        let t0 = Instant::now();
        let mut d = Delivery::new(config(10));
        // Read back after a restart: held until the first connection.
        d.hold(id(1), 1, None);
        d.on_connected(t0, 3);
        assert_eq!(pump(&mut d, t0, &[1, 2, 3]), vec![2, 3]);
        let due = d.due_held(t0, 3);
        assert_eq!(due.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1]);
        d.hold(id(1), 1, Some(t0 + Duration::from_secs(3600)));
        d.hold(id(2), 2, Some(t0 + Duration::from_secs(7200)));
        d.on_receipt(&id(3));
        assert!(d.due_held(t0 + Duration::from_secs(10), 3).is_empty());
        d.on_disconnected();
        assert!(d.due_held(t0 + Duration::from_secs(9000), 3).is_empty());
        assert_eq!(d.next_deadline(3), None, "nothing while disconnected");
        let t1 = t0 + Duration::from_secs(20);
        d.on_connected(t1, 3);
        assert_eq!(d.next_deadline(3), Some(t1));
        let due = d.due_held(t1, 3);
        assert_eq!(due.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn a_final_receipt_releases_a_held_message() {
        let t0 = Instant::now();
        let mut d = Delivery::new(config(4));
        d.on_connected(t0, 1);
        assert_eq!(pump(&mut d, t0, &[1]), vec![1]);
        d.hold(id(1), 1, Some(t0 + Duration::from_secs(60)));
        assert!(d.is_held(&id(1)));
        assert_eq!(d.on_receipt(&id(1)), None, "not in flight");
        assert!(!d.is_held(&id(1)));
        assert!(d.due_held(t0 + Duration::from_secs(60), 1).is_empty());
    }
}
