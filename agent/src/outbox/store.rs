//! The on-disk outbox, in one `sled` database under the agent's data directory.
//!
//! Trees and their formats (all integers big-endian):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `messages` | seq `u64` | format `u8` (= 1), kind `u8`, id (64 ASCII hex), payload ([`record::encode`]d, so it carries the schema version) |
//! | `index` | id (64 ASCII hex) | seq `u64`, payload length `u32` |
//! | `taken` | file digest (64 ASCII hex) | seq `u64` of the message it produced, taken at (Unix ms, `i64`) |
//! | `seen` | export path (UTF-8, lossy) | size `u64`, mtime (Unix ns, `i64`), digest (64 ASCII hex): a cache that spares re-hashing; ingest drops the files gone from the export folders every hour ([`Store::prune_seen`]) |
//! | `deferred` | id (64 ASCII hex) | next attempt (Unix ms, `i64`), attempts `u32`, first deferred at (Unix ms, `i64`), seq `u64`, reason (UTF-8) |
//! | `rejected` | id (64 ASCII hex) | format `u8` (= 1), rejected at (Unix ms, `i64`), seq `u64` it had, reason length `u32`, reason (UTF-8), then the whole `messages` value it had |
//! | `meta` | `format` | the outbox format `u8` ([`OUTBOX_FORMAT`]) |
//!
//! Versions: the outbox carries its format ([`OUTBOX_FORMAT`], written at creation). An agent
//! opens an outbox of its own format or older; an outbox of a newer format (a rollback after an
//! upgrade that changed it) is refused whole and left untouched ([`OutboxError::NewerFormat`]),
//! never misread or rewritten. So a rollback keeps the outbox readable as long as no release
//! raised the format, and safe when one did: the newer agent reinstalled reads it again.
//! Format 1 has held since the first release.
//!
//! Invariants:
//! - `messages` and `index` describe the same set of messages (one transaction writes both).
//! - A digest is in `taken` iff the transaction that enqueued its message committed, and no
//!   operator has since forgotten it ([`Store::forget_digest`], for `agent requeue`).
//! - Every `deferred` key is also in `index`: a deferred message is still queued (it counts in
//!   the backlog and the quota). Retiring or rejecting a message removes its deferral in the
//!   same transaction (the `parts` submodule).
//! - A `rejected` id is in neither `messages` nor `index` (one transaction moves it), so it
//!   leaves the backlog and the quota; it is never deleted, only requeued by an operator.
//! - Sequence numbers come from [`sled::Db::generate_id`] with a single writer, so queue order
//!   is enqueue order; the publisher sees only messages up to the last flushed one
//!   ([`Store::durable_seq`]).
//! - `taken` grows by one small entry per export for ever: pruning it would let a file still in
//!   the export folder be taken again.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use record::topic::DeviceTopic;
use record::{Record, RecordId, Rejection};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::Notify;

mod parts;

pub use parts::{Deferral, Forgotten, RejectedMessage, Requeued};

/// Format byte of a stored message.
const FORMAT_V1: u8 = 1;

/// The outbox format this agent writes and reads (the `meta` tree's `format`).
pub const OUTBOX_FORMAT: u8 = 1;

const META_FORMAT: &[u8] = b"format";
/// Length of a hex SHA-256 (record ids and digests).
const HEX_LEN: usize = 64;
/// How many times (100 ms apart) to retry a database locked by a handle being closed.
const LOCK_RETRIES: u32 = 30;
/// sled page cache: the agent runs on weak PCs; the queue is read sequentially.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database is locked by another process: a running agent, or another command.
    #[error(
        "opening the outbox database in {dir}: it is locked by another process; is the agent \
         running? Stop it first (the outbox can be used by one process at a time)"
    )]
    Locked {
        /// The database directory.
        dir: PathBuf,
    },
    /// The database could not be opened (unreadable, corrupt).
    #[error("opening the outbox database in {dir}: {source}")]
    Open {
        /// The database directory.
        dir: PathBuf,
        /// Why.
        source: sled::Error,
    },
    /// The outbox was written by a newer agent with another format; nothing was changed.
    #[error(
        "the outbox in {dir} has format {found}, newer than this agent's {supported}: it was \
         written by a newer agent; reinstall that version (the outbox is untouched), or with it \
         `agent outbox export` the queue first"
    )]
    NewerFormat {
        /// The database directory.
        dir: PathBuf,
        /// Its format.
        found: u8,
        /// The newest this agent reads.
        supported: u8,
    },
    /// A read or write failed.
    #[error("outbox database error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value does not have the expected format.
    #[error("outbox database is corrupt: {0}")]
    Corrupt(String),
    /// The backlog reached `outbox.max_bytes`; nothing was written.
    #[error(
        "outbox quota reached: {backlog_bytes} bytes queued + {size} > outbox.max_bytes = {max_bytes}; \
         new exports wait in the export folder until the hub is reachable"
    )]
    QuotaReached {
        /// Bytes queued now.
        backlog_bytes: u64,
        /// Size of the refused message.
        size: u64,
        /// The quota.
        max_bytes: u64,
    },
    /// The encoded message is larger than the codec accepts.
    #[error("message {id} is {size} bytes, over the {max}-byte payload limit")]
    TooLarge {
        /// The message id.
        id: RecordId,
        /// Its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// What the outbox carries to the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A recognised export.
    Record(Box<Record>),
    /// An export that was quarantined.
    Rejection(Rejection),
}

impl Message {
    /// The id the hub's receipt names: the record id, or [`crate::assemble::rejection_id`].
    pub fn id(&self) -> RecordId {
        match self {
            Message::Record(r) => r.record_id.clone(),
            Message::Rejection(r) => crate::assemble::rejection_id(r),
        }
    }

    /// Hex SHA-256 of the export file this message was made from.
    pub fn digest(&self) -> &str {
        match self {
            Message::Record(r) => &r.image_sha256,
            Message::Rejection(r) => &r.file_sha256,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Record(_) => Kind::Record,
            Message::Rejection(_) => Kind::Rejection,
        }
    }

    /// The payload as published ([`record::encode`], with the schema version).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Record(r) => record::encode(r.as_ref()),
            Message::Rejection(r) => record::encode(r),
        }
    }
}

/// The kind of a stored message, which picks its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A [`Record`], on the `records` topic.
    Record,
    /// A [`Rejection`], on the `rejections` topic.
    Rejection,
}

impl Kind {
    fn to_byte(self) -> u8 {
        match self {
            Kind::Record => 0,
            Kind::Rejection => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Kind::Record),
            1 => Some(Kind::Rejection),
            _ => None,
        }
    }

    /// The device topic messages of this kind go to.
    pub fn topic(self) -> DeviceTopic {
        match self {
            Kind::Record => DeviceTopic::Records,
            Kind::Rejection => DeviceTopic::Rejections,
        }
    }
}

/// A queued message, as the publisher reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Queue position.
    pub seq: u64,
    /// Message id (what the receipt names).
    pub id: RecordId,
    /// Record or rejection.
    pub kind: Kind,
    /// Encoded payload.
    pub payload: Vec<u8>,
}

/// What [`Store::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Written and flushed at this queue position.
    Queued(u64),
    /// The file digest was already taken: nothing written.
    AlreadyTaken,
}

/// The size of the queue and of its side parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Messages waiting for a receipt (deferred ones included).
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Of `messages`, those the hub deferred (not taken *yet*).
    pub deferred: u64,
    /// Messages the hub rejected, kept aside (not in `messages`, not in the quota).
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Shared {
    /// Set when an enqueue was refused for the quota; cleared when a retirement frees room.
    refused: AtomicBool,
    messages: AtomicU64,
    bytes: AtomicU64,
    deferred: AtomicU64,
    rejected: AtomicU64,
    durable_seq: AtomicU64,
    enqueued: Notify,
}

/// The outbox database. Cheap to clone; clones share the database.
///
/// Enqueueing must go through one writer at a time (the outbox stage); retiring and reading may
/// happen from anywhere.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    messages: sled::Tree,
    index: sled::Tree,
    taken: sled::Tree,
    seen: sled::Tree,
    deferred: sled::Tree,
    rejected: sled::Tree,
    max_bytes: u64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backlog", &self.backlog())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the outbox in `dir` with a quota of `max_bytes` payload bytes.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        let open_err = |source| OutboxError::Open {
            dir: dir.to_owned(),
            source,
        };
        let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
        // sled releases its file lock from background threads after the last handle is
        // dropped; give a database closed a moment ago (an in-process restart) time to let go.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("acquire lock") => {
                    if attempts == LOCK_RETRIES {
                        return Err(OutboxError::Locked {
                            dir: dir.to_owned(),
                        });
                    }
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(open_err(e)),
            }
        };
        let messages = db.open_tree("messages").map_err(open_err)?;
        let index = db.open_tree("index").map_err(open_err)?;
        let taken = db.open_tree("taken").map_err(open_err)?;
        let seen = db.open_tree("seen").map_err(open_err)?;
        let deferred = db.open_tree("deferred").map_err(open_err)?;
        let rejected = db.open_tree("rejected").map_err(open_err)?;
        let meta = db.open_tree("meta").map_err(open_err)?;
        match meta.get(META_FORMAT)? {
            Some(v) if v.len() == 1 && v[0] > OUTBOX_FORMAT => {
                return Err(OutboxError::NewerFormat {
                    dir: dir.to_owned(),
                    found: v[0],
                    supported: OUTBOX_FORMAT,
                })
            }
            Some(v) if v.len() == 1 => {}
            Some(v) => {
                return Err(OutboxError::Corrupt(format!(
                    "format entry of {} bytes",
                    v.len()
                )))
            }
            None => {
                meta.insert(META_FORMAT, &[OUTBOX_FORMAT])?;
            }
        }
        let shared = Shared::default();
        for entry in index.iter() {
            let (_, v) = entry?;
            let (_, len) = decode_index(&v)?;
            shared.messages.fetch_add(1, Ordering::Relaxed);
            shared.bytes.fetch_add(u64::from(len), Ordering::Relaxed);
        }
        if let Some((k, _)) = messages.last()? {
            shared.durable_seq.store(decode_seq(&k)?, Ordering::Release);
        }
        let store = Self {
            db,
            messages,
            index,
            taken,
            seen,
            deferred,
            rejected,
            max_bytes,
            shared: Arc::new(shared),
        };
        store.count_parts()?;
        Ok(store)
    }

    /// Writes `message` and marks its file digest taken, in one transaction, then flushes.
    /// When this returns `Ok`, both are on disk.
    ///
    /// Refuses with [`OutboxError::QuotaReached`] when the backlog would exceed the quota.
    pub fn enqueue(&self, message: &Message) -> Result<Enqueued, OutboxError> {
        let out = self.write(message)?;
        self.flush()?;
        if let Enqueued::Queued(seq) = out {
            self.publish_durable(seq);
        }
        Ok(out)
    }

    /// Like [`Store::enqueue`] for several messages, with one flush at the end. Each message is
    /// its own transaction; results are in input order.
    pub fn enqueue_all(&self, messages: &[Message]) -> Vec<Result<Enqueued, OutboxError>> {
        let mut out: Vec<_> = messages.iter().map(|m| self.write(m)).collect();
        if let Err(e) = self.flush() {
            // Nothing was acknowledged yet: report the flush failure for every message.
            let msg = e.to_string();
            for r in out.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(OutboxError::Corrupt(format!("flush failed: {msg}")));
            }
            return out;
        }
        let last = out
            .iter()
            .filter_map(|r| match r {
                Ok(Enqueued::Queued(seq)) => Some(*seq),
                _ => None,
            })
            .max();
        if let Some(seq) = last {
            self.publish_durable(seq);
        }
        out
    }

    fn publish_durable(&self, seq: u64) {
        self.shared.durable_seq.fetch_max(seq, Ordering::AcqRel);
        self.shared.enqueued.notify_one();
    }

    fn write(&self, message: &Message) -> Result<Enqueued, OutboxError> {
        let id = message.id();
        let payload = message.encode();
        if payload.len() > record::MAX_PAYLOAD_BYTES {
            return Err(OutboxError::TooLarge {
                id,
                size: payload.len(),
                max: record::MAX_PAYLOAD_BYTES,
            });
        }
        let size = payload.len() as u64;
        let backlog_bytes = self.shared.bytes.load(Ordering::Acquire);
        if backlog_bytes + size > self.max_bytes {
            self.shared.refused.store(true, Ordering::Release);
            return Err(OutboxError::QuotaReached {
                backlog_bytes,
                size,
                max_bytes: self.max_bytes,
            });
        }
        let digest = message.digest().as_bytes();
        // Sequence numbers start at 1: 0 means "nothing written yet" (see `durable_seq`).
        let seq = self.db.generate_id()? + 1;
        let mut value = Vec::with_capacity(2 + HEX_LEN + payload.len());
        value.push(FORMAT_V1);
        value.push(message.kind().to_byte());
        value.extend_from_slice(id.as_str().as_bytes());
        value.extend_from_slice(&payload);
        let mut index_value = [0u8; 12];
        index_value[..8].copy_from_slice(&seq.to_be_bytes());
        index_value[8..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        let mut taken_value = [0u8; 16];
        taken_value[..8].copy_from_slice(&seq.to_be_bytes());
        taken_value[8..].copy_from_slice(&chrono::Utc::now().timestamp_millis().to_be_bytes());

        let result =
            (&self.messages, &self.index, &self.taken).transaction(|(messages, index, taken)| {
                if taken.get(digest)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                taken.insert(digest, &taken_value[..])?;
                if index.get(id.as_str())?.is_some() {
                    // Same id, so same digest: cannot happen while the invariants hold.
                    return Ok(false);
                }
                messages.insert(&seq.to_be_bytes(), value.as_slice())?;
                index.insert(id.as_str(), &index_value[..])?;
                Ok(true)
            });
        match result {
            Ok(false) => Ok(Enqueued::AlreadyTaken),
            Ok(true) => {
                self.shared.messages.fetch_add(1, Ordering::AcqRel);
                self.shared.bytes.fetch_add(size, Ordering::AcqRel);
                Ok(Enqueued::Queued(seq))
            }
            Err(TransactionError::Abort(())) => Ok(Enqueued::AlreadyTaken),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Up to `max` queued messages with a sequence number in `range`, oldest first; only
    /// messages already flushed to disk are returned.
    pub fn batch(&self, range: Range<u64>, max: usize) -> Result<Vec<Pending>, OutboxError> {
        let end = range.end.min(self.durable_seq().saturating_add(1));
        if range.start >= end || max == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(max.min(1024));
        for entry in self
            .messages
            .range(range.start.to_be_bytes()..end.to_be_bytes())
            .take(max)
        {
            let (k, v) = entry?;
            out.push(decode_message(decode_seq(&k)?, &v)?);
        }
        Ok(out)
    }

    /// The queued message at `seq`, if it is still queued.
    pub fn get(&self, seq: u64) -> Result<Option<Pending>, OutboxError> {
        match self.messages.get(seq.to_be_bytes())? {
            Some(v) => Ok(Some(decode_message(seq, &v)?)),
            None => Ok(None),
        }
    }

    /// Removes the messages with these ids (on the hub's `stored` or `duplicate` receipts), with
    /// their deferrals. Returns, per id, the queue
    /// position it had, or `None` when it was not queued (a late or repeated receipt).
    /// Not flushed: a retirement lost to a crash only causes a resend.
    pub fn retire(&self, ids: &[RecordId]) -> Result<Vec<Option<u64>>, OutboxError> {
        let trees = (&self.messages, &self.index, &self.deferred);
        let result = trees.transaction(|(messages, index, deferred)| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match index.remove(id.as_str())? {
                    Some(v) => {
                        let (seq, len) =
                            decode_index(&v).map_err(ConflictableTransactionError::Abort)?;
                        messages.remove(&seq.to_be_bytes())?;
                        let was_deferred = deferred.remove(id.as_str())?.is_some();
                        out.push(Some((seq, len, was_deferred)));
                    }
                    None => out.push(None),
                }
            }
            Ok(out)
        });
        let removed = match result {
            Ok(r) => r,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        };
        let mut out = Vec::with_capacity(removed.len());
        if removed.iter().any(Option::is_some) {
            self.shared.refused.store(false, Ordering::Release);
        }
        for r in removed {
            if let Some((seq, len, was_deferred)) = r {
                self.shared.messages.fetch_sub(1, Ordering::AcqRel);
                self.shared
                    .bytes
                    .fetch_sub(u64::from(len), Ordering::AcqRel);
                if was_deferred {
                    self.shared.deferred.fetch_sub(1, Ordering::AcqRel);
                }
                out.push(Some(seq));
            } else {
                out.push(None);
            }
        }
        Ok(out)
    }

    /// Whether an export with this digest was already taken (its message enqueued).
    pub fn is_taken(&self, digest: &str) -> Result<bool, OutboxError> {
        Ok(self.taken.contains_key(digest.as_bytes())?)
    }

    /// The digest remembered for `path` with this size and mtime, if any.
    pub fn seen_digest(
        &self,
        path: &str,
        size: u64,
        mtime_ns: i64,
    ) -> Result<Option<String>, OutboxError> {
        let Some(v) = self.seen.get(path.as_bytes())? else {
            return Ok(None);
        };
        if v.len() != 16 + HEX_LEN {
            return Err(OutboxError::Corrupt(format!("seen entry for {path}")));
        }
        let same = v[..8] == size.to_be_bytes() && v[8..16] == mtime_ns.to_be_bytes();
        Ok(same.then(|| String::from_utf8_lossy(&v[16..]).into_owned()))
    }

    /// Remembers the digest of `path` at this size and mtime (a cache; not flushed).
    pub fn remember_seen(
        &self,
        path: &str,
        size: u64,
        mtime_ns: i64,
        digest: &str,
    ) -> Result<(), OutboxError> {
        let mut v = Vec::with_capacity(16 + HEX_LEN);
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(&mtime_ns.to_be_bytes());
        v.extend_from_slice(digest.as_bytes());
        self.seen.insert(path.as_bytes(), v)?;
        Ok(())
    }

    /// Forgets every cached path for which `keep` is false (files no longer in the export
    /// folders); returns how many. Only a cache: a file forgotten and seen again is hashed
    /// again, and its digest in `taken` still keeps it from being taken twice.
    pub fn prune_seen(&self, keep: impl Fn(&str) -> bool) -> Result<usize, OutboxError> {
        let mut gone = 0;
        for entry in self.seen.iter() {
            let (k, _) = entry?;
            let path = String::from_utf8_lossy(&k);
            if !keep(&path) {
                self.seen.remove(&k)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// Messages and bytes waiting for a receipt, and the sizes of the deferred and rejected parts.
    pub fn backlog(&self) -> Backlog {
        Backlog {
            messages: self.shared.messages.load(Ordering::Acquire),
            bytes: self.shared.bytes.load(Ordering::Acquire),
            deferred: self.shared.deferred.load(Ordering::Acquire),
            rejected: self.shared.rejected.load(Ordering::Acquire),
        }
    }

    /// Whether the backlog has reached the quota, or a message was refused for it since the
    /// last retirement (ingest stops taking files).
    pub fn is_full(&self) -> bool {
        self.shared.refused.load(Ordering::Acquire)
            || self.shared.bytes.load(Ordering::Acquire) >= self.max_bytes
    }

    /// The quota in payload bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The highest sequence number known to be on disk (0 when none was ever written).
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// Resolves after the next successful enqueue (or at once if one happened since the last
    /// call; at most one such wake-up is stored).
    pub async fn enqueued(&self) {
        self.shared.enqueued.notified().await;
    }

    /// Writes everything to disk (fsync).
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.db.flush()?;
        Ok(())
    }
}

fn decode_seq(k: &[u8]) -> Result<u64, OutboxError> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| OutboxError::Corrupt(format!("message key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(b))
}

fn decode_index(v: &[u8]) -> Result<(u64, u32), OutboxError> {
    if v.len() != 12 {
        return Err(OutboxError::Corrupt(format!(
            "index value of {} bytes",
            v.len()
        )));
    }
    let seq = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(v[8..].try_into().expect("4 bytes"));
    Ok((seq, len))
}

fn decode_message(seq: u64, v: &[u8]) -> Result<Pending, OutboxError> {
    let corrupt = |what: &str| OutboxError::Corrupt(format!("message {seq}: {what}"));
    if v.len() < 2 + HEX_LEN || v[0] != FORMAT_V1 {
        return Err(corrupt("unknown format"));
    }
    let kind = Kind::from_byte(v[1]).ok_or_else(|| corrupt("unknown kind"))?;
    let id = std::str::from_utf8(&v[2..2 + HEX_LEN])
        .ok()
        .and_then(|s| RecordId::parse(s).ok())
        .ok_or_else(|| corrupt("bad id"))?;
    Ok(Pending {
        seq,
        id,
        kind,
        payload: v[2 + HEX_LEN..].to_vec(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use record::DeviceId;

    /// A small rejection message with a distinct digest per `n`.
    pub(crate) fn message(n: u32) -> Message {
        Message::Rejection(Rejection {
            device_id: DeviceId::new("dev-1").expect("valid"),
            source_file: format!("f{n}.png"),
            file_sha256: record::ids::sha256_hex(&n.to_le_bytes()),
            code: "not_an_image".into(),
            reason: "test".into(),
            quarantined_as: format!("q/f{n}.png"),
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
        })
    }

    #[test]
    fn enqueue_batch_retire_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        let a = store.enqueue(&message(1)).unwrap();
        let b = store.enqueue(&message(2)).unwrap();
        assert!(matches!(a, Enqueued::Queued(_)));
        assert_eq!(store.enqueue(&message(1)).unwrap(), Enqueued::AlreadyTaken);
        assert_eq!(store.backlog().messages, 2);
        let batch = store.batch(0..u64::MAX, 10).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].id, message(1).id());
        assert_eq!(batch[0].kind, Kind::Rejection);
        assert_eq!(batch[0].payload, message(1).encode());
        assert!(batch[0].seq < batch[1].seq);
        let Enqueued::Queued(seq_b) = b else { panic!() };
        assert_eq!(store.batch(seq_b..u64::MAX, 10).unwrap().len(), 1);

        let r = store.retire(&[message(1).id(), message(1).id()]).unwrap();
        assert_eq!(r, vec![Some(batch[0].seq), None]);
        drop(store);

        let store = Store::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(store.backlog().messages, 1);
        assert_eq!(store.backlog().bytes, message(2).encode().len() as u64);
        assert!(store.is_taken(message(1).digest()).unwrap());
        assert_eq!(store.enqueue(&message(1)).unwrap(), Enqueued::AlreadyTaken);
        assert_eq!(store.batch(0..u64::MAX, 10).unwrap()[0].id, message(2).id());
    }

    #[test]
    fn an_outbox_of_a_newer_format_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        store.enqueue(&message(1)).unwrap();
        store.flush().unwrap();
        drop(store);
        // sled lets go of its lock from background threads: retry as Store::open does.
        let raw = |dir: &Path| {
            for _ in 0..LOCK_RETRIES {
                if let Ok(db) = sled::open(dir) {
                    return db;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            panic!("outbox still locked");
        };
        // What a newer agent with format 2 would leave behind.
        {
            let db = raw(dir.path());
            let meta = db.open_tree("meta").unwrap();
            assert_eq!(
                meta.get(META_FORMAT).unwrap().as_deref(),
                Some(&[OUTBOX_FORMAT][..])
            );
            meta.insert(META_FORMAT, &[OUTBOX_FORMAT + 1]).unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path(), 1 << 30).unwrap_err();
        assert!(
            matches!(
                err,
                OutboxError::NewerFormat {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("reinstall"), "{err}");
        // Untouched: with the format back (the newer agent reinstalled reads it), the message is there.
        {
            let db = raw(dir.path());
            assert_eq!(db.open_tree("messages").unwrap().len(), 1);
            db.open_tree("meta")
                .unwrap()
                .insert(META_FORMAT, &[OUTBOX_FORMAT])
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(store.backlog().messages, 1);
    }

    #[test]
    fn quota_refuses_without_taking() {
        let dir = tempfile::tempdir().unwrap();
        let size = message(1).encode().len() as u64;
        let store = Store::open(dir.path(), size * 2).unwrap();
        store.enqueue(&message(1)).unwrap();
        store.enqueue(&message(2)).unwrap();
        assert!(store.is_full());
        let err = store.enqueue(&message(3)).unwrap_err();
        assert!(matches!(err, OutboxError::QuotaReached { .. }), "{err}");
        assert!(err.to_string().contains("outbox.max_bytes"));
        assert!(!store.is_taken(message(3).digest()).unwrap());
        // Room for a smaller message is not enough: full until something leaves.
        let dir2 = tempfile::tempdir().unwrap();
        let roomy = Store::open(dir2.path(), size * 2 + size / 2).unwrap();
        roomy.enqueue(&message(1)).unwrap();
        roomy.enqueue(&message(2)).unwrap();
        assert!(!roomy.is_full());
        assert!(roomy.enqueue(&message(3)).is_err());
        assert!(roomy.is_full());
        roomy.retire(&[message(1).id()]).unwrap();
        assert!(!roomy.is_full());
        store.retire(&[message(1).id()]).unwrap();
        assert!(!store.is_full());
        assert!(matches!(
            store.enqueue(&message(3)).unwrap(),
            Enqueued::Queued(_)
        ));
    }

    #[test]
    fn seen_cache_matches_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let d = "ab".repeat(32);
        store.remember_seen("/x/a.png", 10, 5, &d).unwrap();
        assert_eq!(
            store.seen_digest("/x/a.png", 10, 5).unwrap(),
            Some(d.clone())
        );
        assert_eq!(store.seen_digest("/x/a.png", 11, 5).unwrap(), None);
        store.remember_seen("/x/b.png", 10, 5, &d).unwrap();
        assert_eq!(store.prune_seen(|p| p == "/x/b.png").unwrap(), 1);
        assert_eq!(store.seen_digest("/x/a.png", 10, 5).unwrap(), None);
        assert_eq!(store.seen_digest("/x/b.png", 10, 5).unwrap(), Some(d));
    }

    #[test]
    fn second_open_of_a_locked_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path(), 1 << 20).unwrap();
        let err = Store::open(dir.path(), 1 << 20).unwrap_err();
        assert!(
            err.to_string().contains("opening the outbox database"),
            "{err}"
        );
    }
}
