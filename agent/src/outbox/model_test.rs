//! Model test of the outbox: random sequences of enqueues, connections, sends over a lossy
//! link, receipts, time passing, crash-reopens and a hub upgrade, against a model of what the
//! hub holds. The hub defers messages `n.is_multiple_of(3)` until it is upgraded and rejects messages
//! `n % 5 == 0`; it stores the rest.
//!
//! Safety, checked after every step: the store holds every message enqueued and not yet
//! receipted stored or rejected (and nothing else, except ones whose retirement or rejection
//! was not yet on disk); every message ever enqueued is queued, in the rejected part or at the
//! hub; no more than `window` messages are in flight; only enqueued messages are sent.
//! Liveness, checked at the end: once the hub is upgraded and the link is good, every message
//! ever enqueued reaches the hub or the rejected part (each as the hub decided) and the queue
//! drains.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use proptest::prelude::*;
use record::{Receipt, ReceiptOutcome, RecordId};
use tokio::time::Instant;

use super::delivery::DeliveryConfig;
use super::driver::Outbox;
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
    /// The hub learns what it deferred until now.
    Upgrade,
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
        1 => Just(Op::Upgrade),
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
    receipts: VecDeque<Receipt>,
    /// Message number of each id.
    numbers: HashMap<RecordId, u32>,
    upgraded: bool,
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
            numbers: HashMap::new(),
            upgraded: false,
        }
    }

    /// What the hub answers for message `n`.
    fn outcome(&self, n: u32) -> ReceiptOutcome {
        if !self.upgraded && n.is_multiple_of(3) {
            ReceiptOutcome::Deferred
        } else if n.is_multiple_of(5) {
            ReceiptOutcome::Rejected
        } else {
            ReceiptOutcome::Stored
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
                        self.numbers.insert(id.clone(), n);
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
                        let outcome = self.outcome(self.numbers[&t.pending.id]);
                        if outcome == ReceiptOutcome::Stored {
                            self.hub.insert(t.pending.id.clone());
                        }
                        self.receipts.push_back(Receipt {
                            record_id: t.pending.id,
                            outcome,
                            reason: Some(format!("{}: model", outcome.as_str())),
                        });
                    }
                }
            }
            Op::Receipts(n) => {
                let receipts: Vec<Receipt> =
                    (0..n).filter_map(|_| self.receipts.pop_front()).collect();
                if !self.connected || receipts.is_empty() {
                    return;
                }
                let now = self.now;
                self.outbox()
                    .on_receipts(now, chrono::Utc::now(), &receipts)
                    .unwrap();
                for r in receipts {
                    if r.outcome != ReceiptOutcome::Deferred && self.queued.remove(&r.record_id) {
                        self.maybe_back.insert(r.record_id);
                    }
                }
            }
            Op::Upgrade => self.upgraded = true,
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
        let rejected: BTreeSet<RecordId> = self
            .outbox()
            .store()
            .rejected_messages()
            .unwrap()
            .into_iter()
            .map(|r| r.pending.id)
            .collect();
        let stored = stored_ids(self.outbox().store());
        for id in &self.ever {
            assert!(
                stored.contains(id) || rejected.contains(id) || self.hub.contains(id),
                "message {id} lost: neither queued, rejected nor at the hub"
            );
        }
        for id in &rejected {
            assert_eq!(self.numbers[id] % 5, 0, "{id} rejected, the hub never did");
            assert!(!stored.contains(id), "{id} both queued and rejected");
        }
        let backlog = self.outbox().store().backlog();
        assert_eq!(backlog.rejected, rejected.len() as u64);
        assert!(backlog.deferred <= backlog.messages);
        assert_eq!(
            self.outbox().store().deferrals().unwrap().len() as u64,
            backlog.deferred
        );
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
        self.apply(&Op::Upgrade);
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
        let rejected: BTreeSet<RecordId> = self
            .outbox()
            .store()
            .rejected_messages()
            .unwrap()
            .into_iter()
            .map(|r| r.pending.id)
            .collect();
        let expected_rejected: BTreeSet<RecordId> = self
            .ever
            .iter()
            .filter(|id| self.numbers[*id].is_multiple_of(5))
            .cloned()
            .collect();
        assert_eq!(rejected, expected_rejected, "rejected part");
        let expected_hub: BTreeSet<RecordId> =
            self.ever.difference(&expected_rejected).cloned().collect();
        assert_eq!(self.hub, expected_hub, "hub is missing messages");
        assert_eq!(self.outbox().store().backlog().deferred, 0);
    }
}

fn open(dir: &tempfile::TempDir) -> Outbox {
    let store = Store::open(dir.path(), 1 << 30).unwrap();
    Outbox::new(
        store,
        DeliveryConfig {
            window: WINDOW,
            resend_after: RESEND,
            defer_initial: Duration::from_secs(5),
            defer_max: Duration::from_secs(40),
        },
    )
    .unwrap()
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
