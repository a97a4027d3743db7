//! The outbox stage: receives messages from the assemble stage, enqueues them durably (batched,
//! one fsync per batch), then does what must wait for durability: removing the source file when
//! configured, and releasing the ingest claim on the file.

use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::store::{Enqueued, Message, OutboxError, Store};
use crate::ingest::Claims;
use crate::telemetry::{self, Health};

/// Most messages enqueued under one fsync.
const BATCH: usize = 64;

/// `[outbox]`: the durable queue and its delivery window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Quota on queued payload bytes (the disk the backlog may use, before sled's overhead).
    pub max_bytes: u64,
    /// Most messages sent and waiting for a receipt at once.
    pub window: usize,
    /// Seconds without a receipt before a message is sent again (then 2×, 4×, 8×).
    pub resend_after_secs: u64,
    /// Seconds a message the hub deferred waits before it is sent again; doubles per deferral.
    pub defer_initial_secs: u64,
    /// Longest wait of a deferred message (a reconnect makes every deferred message due).
    pub defer_max_secs: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: 2 * 1024 * 1024 * 1024,
            window: 256,
            resend_after_secs: 60,
            defer_initial_secs: 60,
            defer_max_secs: 3 * 3600,
        }
    }
}

/// A message on its way into the outbox, with what to do once it is durable.
#[derive(Debug)]
pub struct Outgoing {
    /// The record or rejection.
    pub message: Message,
    /// The export file it came from.
    pub source: PathBuf,
    /// Delete `source` once the message is on disk (configured deletion, or a quarantine move).
    pub remove_source: bool,
}

/// The outbox stage.
#[derive(Debug)]
pub struct OutboxStage {
    store: Store,
    claims: Claims,
    health: Health,
}

impl OutboxStage {
    /// A stage writing into `store`; `claims` are released as files are settled.
    pub fn new(store: Store, claims: Claims, health: Health) -> Self {
        Self {
            store,
            claims,
            health,
        }
    }

    /// Runs until `rx` closes or `shutdown` resolves. Messages still in the channel then are
    /// dropped: their files were not taken and are read again at the next start.
    pub async fn run(self, mut rx: mpsc::Receiver<Outgoing>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut quota_reported = false;
        loop {
            let first = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                m = rx.recv() => match m { Some(m) => m, None => break },
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let store = self.store.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let messages: Vec<Message> = batch.iter().map(|o| o.message.clone()).collect();
                let results = store.enqueue_all(&messages);
                for (o, r) in batch.iter().zip(&results) {
                    if o.remove_source && r.is_ok() {
                        remove_source(o);
                    }
                }
                (batch, results)
            })
            .await;
            let (batch, results) = match joined {
                Ok(x) => x,
                Err(e) => {
                    error!(error = %e, "Outbox writer task failed.");
                    continue;
                }
            };
            for (o, r) in batch.iter().zip(results) {
                self.claims.release(&o.source);
                self.settle(o, r, &mut quota_reported);
            }
            telemetry::set_backlog(self.store.backlog());
        }
    }

    fn settle(&self, o: &Outgoing, r: Result<Enqueued, OutboxError>, quota_reported: &mut bool) {
        let file = o.source.display();
        match r {
            Ok(Enqueued::Queued(seq)) => {
                *quota_reported = false;
                info!(file = %file, id = %o.message.id(), seq, "Export queued for the hub.");
                telemetry::count(telemetry::MESSAGES_QUEUED, o.message.kind());
            }
            Ok(Enqueued::AlreadyTaken) => {
                debug!(file = %file, "Export already taken; skipped.");
            }
            Err(e @ OutboxError::QuotaReached { .. }) => {
                if !*quota_reported {
                    error!(file = %file, error = %e, "Outbox full: not taking new exports.");
                    *quota_reported = true;
                }
                self.health.set_error(e.to_string());
            }
            Err(e) => {
                error!(file = %file, error = %e, "Could not queue the export; it will be read again.");
                self.health.set_error(e.to_string());
            }
        }
    }
}

fn remove_source(o: &Outgoing) {
    if let Err(e) = std::fs::remove_file(&o.source) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(file = %o.source.display(), error = %e, "Could not remove the export after queueing it.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::store::tests::message;

    #[tokio::test]
    async fn removes_the_source_only_once_the_message_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let size = message(1).encode().len() as u64;
        let store = Store::open(&dir.path().join("db"), size).unwrap();
        let claims = Claims::default();
        let stage = OutboxStage::new(store.clone(), claims.clone(), Health::default());
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(stage.run(rx, std::future::pending()));
        let file = |n: u32| {
            let p = dir.path().join(format!("e{n}.png"));
            std::fs::write(&p, b"x").unwrap();
            claims.claim(&p);
            p
        };
        let (a, b, c) = (file(1), file(2), file(3));
        for (n, p, remove) in [(1, &a, true), (2, &b, true), (3, &c, false)] {
            tx.send(Outgoing {
                message: message(n),
                source: p.clone(),
                remove_source: remove,
            })
            .await
            .unwrap();
        }
        drop(tx);
        task.await.unwrap();
        assert!(!a.exists(), "queued: removed as configured");
        assert!(b.exists(), "refused by the quota: left in place");
        assert!(c.exists(), "keep: left in place");
        assert!(store.is_taken(message(1).digest()).unwrap());
        assert!(!store.is_taken(message(2).digest()).unwrap());
        for p in [&a, &b, &c] {
            assert!(!claims.contains(p), "claims released");
        }
    }
}
