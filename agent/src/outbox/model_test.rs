//! Model test of the outbox: random sequences of enqueues, connections, sends over a lossy
//! link, receipts, time passing and crash-reopens, against a model of what the hub holds.
//!
//! Safety, checked after every step: the store holds every message enqueued and not yet
//! receipted (and nothing else, except receipted ones whose retirement was not yet on disk);
//! no more than `window` messages are in flight; only enqueued messages are sent.
//! Liveness, checked at the end: once the link is good, every message ever enqueued reaches
//! the hub and the outbox drains.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use proptest::prelude::*;
use record::RecordId;
use tokio::time::Instant;

use super::delivery::{DeliveryConfig, Outbox};
use super::store::tests::message;
use super::store::{Enqueued, Store};

const WINDOW: usize = 4;
const RESEND: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Op {
    Enqueue(u32),
    Connect,
    Disconnect,
    /// Send what the outbox wants; bit i of the mask loses the i-th message on the way.
    Pump(u32),
    /// Deliver up to n receipts from the hub.
    Receipts(usize),
    Advance(u64),
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..24).prop_map(Op::Enqueue),
        2 => Just(Op::Connect),
        1 => Just(Op::Disconnect),
        4 => any::<u32>().prop_map(Op::Pump),
        3 => (0usize..6).prop_map(Op::Receipts),
        2 => (0u64..40).prop_map(Op::Advance),
        1 => Just(Op::Crash),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    outbox: Option<Outbox>,
    now: Instant,
    connected: bool,
    /// Enqueued and not receipted.
    queued: BTreeSet<RecordId>,
    /// Receipted since the last flush: may come back after a crash.
    maybe_back: BTreeSet<RecordId>,
    ever: BTreeSet<RecordId>,
    /// What the hub stored (idempotent by id).
    hub: BTreeSet<RecordId>,
    /// Receipts on their way to the agent.
    receipts: VecDeque<RecordId>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Some(open(&dir));
        Self {
            dir,
            outbox,
            now: Instant::now(),
            connected: false,
            queued: BTreeSet::new(),
            maybe_back: BTreeSet::new(),
            ever: BTreeSet::new(),
            hub: BTreeSet::new(),
            receipts: VecDeque::new(),
        }
    }

    fn outbox(&mut self) -> &mut Outbox {
        self.outbox.as_mut().expect("open")
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Enqueue(n) => {
                let m = message(n);
                let id = m.id();
                match self.outbox().store().enqueue(&m).unwrap() {
                    Enqueued::Queued(_) => {
                        assert!(!self.ever.contains(&id), "digest taken twice");
                        self.queued.insert(id.clone());
                        self.ever.insert(id);
                    }
                    Enqueued::AlreadyTaken => assert!(self.ever.contains(&id)),
                }
                // enqueue flushes the whole database, retirements included.
                self.maybe_back.clear();
            }
            Op::Connect => {
                if !self.connected {
                    self.connected = true;
                    let now = self.now;
                    self.outbox().on_connected(now);
                }
            }
            Op::Disconnect => {
                self.connected = false;
                self.receipts.clear();
                self.outbox().on_disconnected();
            }
            Op::Pump(mask) => {
                let now = self.now;
                let sent = self.outbox().poll_transmit(now).unwrap();
                if !self.connected {
                    assert!(sent.is_empty(), "sent while disconnected");
                }
                for (i, t) in sent.into_iter().enumerate() {
                    assert!(self.ever.contains(&t.pending.id), "sent an unknown message");
                    if mask & (1 << (i % 32)) == 0 {
                        self.hub.insert(t.pending.id.clone());
                        self.receipts.push_back(t.pending.id);
                    }
                }
            }
            Op::Receipts(n) => {
                let ids: Vec<RecordId> = (0..n).filter_map(|_| self.receipts.pop_front()).collect();
                if !self.connected || ids.is_empty() {
                    return;
                }
                self.outbox().on_receipts(&ids).unwrap();
                for id in ids {
                    if self.queued.remove(&id) {
                        self.maybe_back.insert(id);
                    }
                }
            }
            Op::Advance(s) => self.now += Duration::from_secs(s),
            Op::Crash => {
                drop(self.outbox.take());
                self.outbox = Some(open(&self.dir));
                self.connected = false;
                self.receipts.clear();
                // Whatever came back from the dead is queued again, as far as the model goes.
                let ids = stored_ids(self.outbox().store());
                for id in ids {
                    if self.maybe_back.remove(&id) {
                        self.queued.insert(id);
                    }
                }
                self.maybe_back.clear();
            }
        }
        self.check();
    }

    fn check(&mut self) {
        let stored = stored_ids(self.outbox().store());
        for id in &self.queued {
            assert!(
                stored.contains(id),
                "queued message {id} missing from the store"
            );
        }
        for id in &stored {
            assert!(
                self.queued.contains(id) || self.maybe_back.contains(id),
                "store holds {id}, which was receipted"
            );
        }
        assert_eq!(
            self.outbox().store().backlog().messages,
            stored.len() as u64
        );
        assert!(self.outbox().delivery().in_flight() <= WINDOW);
    }

    /// A good link until everything is delivered.
    fn drain(&mut self) {
        self.apply(&Op::Connect);
        for _ in 0..200 {
            self.apply(&Op::Pump(0));
            let n = self.receipts.len();
            self.apply(&Op::Receipts(n));
            if self.outbox().store().backlog().messages == 0 {
                break;
            }
            self.apply(&Op::Advance(RESEND.as_secs() * 8));
        }
        assert_eq!(
            self.outbox().store().backlog().messages,
            0,
            "outbox did not drain"
        );
        assert_eq!(self.hub, self.ever, "hub is missing messages");
    }
}

fn open(dir: &tempfile::TempDir) -> Outbox {
    let store = Store::open(dir.path(), 1 << 30).unwrap();
    Outbox::new(
        store,
        DeliveryConfig {
            window: WINDOW,
            resend_after: RESEND,
        },
    )
}

fn stored_ids(store: &Store) -> BTreeSet<RecordId> {
    store
        .batch(0..u64::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn outbox_never_loses_and_always_drains(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        h.drain();
    }
}
