//! The two side parts of the outbox, in the same database as the queue (formats in
//! [`super`]'s table):
//!
//! - `deferred`: queued messages the hub cannot take *yet* (a template version it does not know,
//!   a device not registered yet). The message stays in `messages`; the entry only says when to
//!   try again and why. Written without a flush: a deferral lost to a crash only causes one
//!   more send, which the hub defers again.
//! - `rejected`: messages the hub can never store as they are. One transaction moves the whole
//!   `messages` value here, with the reason and the time, so it leaves the backlog and the quota
//!   but stays on disk until an operator requeues it (`agent outbox requeue`).
//!
//! Also here: the operator's re-read ([`Store::forget_digest`]), which forgets a file's digest in
//! `taken` and `seen` so ingest reads the file again.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;

/// Format byte of a `rejected` value.
const REJECTED_V1: u8 = 1;
/// Fixed part of a `deferred` value: next attempt, attempts, first deferred at, seq.
const DEFERRAL_FIXED: usize = 8 + 4 + 8 + 8;
/// Fixed part of a `rejected` value before the reason: format, at, seq, reason length.
const REJECTED_FIXED: usize = 1 + 8 + 8 + 4;

/// A queued message the hub deferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    /// Its queue position.
    pub seq: u64,
    /// How many deferred receipts it got.
    pub attempts: u32,
    /// When to send it again (earlier at a reconnect).
    pub next_attempt_at: DateTime<Utc>,
    /// The first deferred receipt.
    pub first_deferred_at: DateTime<Utc>,
    /// The last receipt's reason (`code: text`).
    pub reason: String,
}

/// A message the hub rejected, kept whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedMessage {
    /// The message as it was queued (`seq` is the position it had).
    pub pending: Pending,
    /// The receipt's reason (`code: text`).
    pub reason: String,
    /// When the receipt came.
    pub rejected_at: DateTime<Utc>,
}

/// What [`Store::requeue`] did with one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// A rejected message was moved back into the queue at this position.
    Queued(u64),
    /// A deferred message's deferral was cleared: it is sent at the next start like any other.
    Undeferred,
    /// The id is neither rejected nor deferred.
    NotFound,
}

/// What [`Store::forget_digest`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// The digest was in `taken`.
    pub taken: bool,
    /// `seen` cache entries carrying the digest.
    pub seen: usize,
}

fn millis(at: DateTime<Utc>) -> [u8; 8] {
    at.timestamp_millis().to_be_bytes()
}

fn from_millis(b: &[u8]) -> DateTime<Utc> {
    let ms = i64::from_be_bytes(b.try_into().expect("8 bytes"));
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn encode_deferral(d: &Deferral) -> Vec<u8> {
    let mut v = Vec::with_capacity(DEFERRAL_FIXED + d.reason.len());
    v.extend_from_slice(&millis(d.next_attempt_at));
    v.extend_from_slice(&d.attempts.to_be_bytes());
    v.extend_from_slice(&millis(d.first_deferred_at));
    v.extend_from_slice(&d.seq.to_be_bytes());
    v.extend_from_slice(d.reason.as_bytes());
    v
}

fn decode_deferral(v: &[u8]) -> Result<Deferral, OutboxError> {
    if v.len() < DEFERRAL_FIXED {
        return Err(OutboxError::Corrupt(format!(
            "deferred value of {} bytes",
            v.len()
        )));
    }
    Ok(Deferral {
        next_attempt_at: from_millis(&v[..8]),
        attempts: u32::from_be_bytes(v[8..12].try_into().expect("4 bytes")),
        first_deferred_at: from_millis(&v[12..20]),
        seq: u64::from_be_bytes(v[20..28].try_into().expect("8 bytes")),
        reason: String::from_utf8_lossy(&v[DEFERRAL_FIXED..]).into_owned(),
    })
}

fn encode_rejected(at: DateTime<Utc>, seq: u64, reason: &str, message: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(REJECTED_FIXED + reason.len() + message.len());
    v.push(REJECTED_V1);
    v.extend_from_slice(&millis(at));
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    v.extend_from_slice(reason.as_bytes());
    v.extend_from_slice(message);
    v
}

/// A `rejected` value, split.
struct RejectedValue<'a> {
    at: DateTime<Utc>,
    seq: u64,
    reason: String,
    /// The `messages` value it had.
    message: &'a [u8],
}

/// Splits a `rejected` value.
fn split_rejected(v: &[u8]) -> Result<RejectedValue<'_>, OutboxError> {
    let corrupt = || OutboxError::Corrupt(format!("rejected value of {} bytes", v.len()));
    if v.len() < REJECTED_FIXED || v[0] != REJECTED_V1 {
        return Err(corrupt());
    }
    let at = from_millis(&v[1..9]);
    let seq = u64::from_be_bytes(v[9..17].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(v[17..21].try_into().expect("4 bytes")) as usize;
    let rest = &v[REJECTED_FIXED..];
    if rest.len() < len {
        return Err(corrupt());
    }
    let reason = String::from_utf8_lossy(&rest[..len]).into_owned();
    Ok(RejectedValue {
        at,
        seq,
        reason,
        message: &rest[len..],
    })
}

fn abort(e: OutboxError) -> ConflictableTransactionError<OutboxError> {
    ConflictableTransactionError::Abort(e)
}

fn settle<T>(r: Result<T, TransactionError<OutboxError>>) -> Result<T, OutboxError> {
    match r {
        Ok(x) => Ok(x),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

impl Store {
    /// Counts the side parts at open; drops deferrals of messages no longer queued (cannot
    /// happen while the invariants hold, but a deferral must never outlive its message).
    pub(super) fn count_parts(&self) -> Result<(), OutboxError> {
        let mut deferred = 0;
        for entry in self.deferred.iter() {
            let (k, _) = entry?;
            if self.index.contains_key(&k)? {
                deferred += 1;
            } else {
                self.deferred.remove(&k)?;
            }
        }
        self.shared.deferred.store(deferred, Ordering::Release);
        self.shared
            .rejected
            .store(self.rejected.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Notes the hub's `deferred` receipt for `id` at `at`: the message stays queued, its
    /// attempt count grows by one and its next attempt is `delay(attempts)` after `at`.
    /// Returns the deferral and that delay, or `None` when `id` is not queued (a late receipt).
    pub fn defer(
        &self,
        id: &RecordId,
        reason: &str,
        at: DateTime<Utc>,
        delay: impl Fn(u32) -> Duration,
    ) -> Result<Option<(Deferral, Duration)>, OutboxError> {
        let result = (&self.index, &self.deferred).transaction(|(index, deferred)| {
            let Some(iv) = index.get(id.as_str())? else {
                return Ok(None);
            };
            let (seq, _) = decode_index(&iv).map_err(abort)?;
            let prev = match deferred.get(id.as_str())? {
                Some(v) => Some(decode_deferral(&v).map_err(abort)?),
                None => None,
            };
            let attempts = prev.as_ref().map_or(0, |p| p.attempts).saturating_add(1);
            let wait = delay(attempts);
            let d = Deferral {
                seq,
                attempts,
                next_attempt_at: at + chrono::Duration::from_std(wait).unwrap_or_default(),
                first_deferred_at: prev.as_ref().map_or(at, |p| p.first_deferred_at),
                reason: reason.to_owned(),
            };
            deferred.insert(id.as_str(), encode_deferral(&d))?;
            Ok(Some((d, wait, prev.is_none())))
        });
        Ok(settle(result)?.map(|(d, wait, new)| {
            if new {
                self.shared.deferred.fetch_add(1, Ordering::AcqRel);
            }
            (d, wait)
        }))
    }

    /// The deferral of `id`, if it is deferred.
    pub fn deferral(&self, id: &RecordId) -> Result<Option<Deferral>, OutboxError> {
        self.deferred
            .get(id.as_str())?
            .map(|v| decode_deferral(&v))
            .transpose()
    }

    /// Every deferral, by id.
    pub fn deferrals(&self) -> Result<Vec<(RecordId, Deferral)>, OutboxError> {
        let mut out = Vec::new();
        for entry in self.deferred.iter() {
            let (k, v) = entry?;
            let id = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| RecordId::parse(s).ok())
                .ok_or_else(|| OutboxError::Corrupt("deferred key is not an id".into()))?;
            out.push((id, decode_deferral(&v)?));
        }
        Ok(out)
    }

    /// Moves the queued message `id` to the rejected part, in one transaction: it leaves
    /// `messages`, `index` and `deferred`, and its whole stored value is kept with `reason` and
    /// `at`. Its file digest stays taken. Returns the seq it had, or `None` when it was not
    /// queued (a late or repeated receipt). Not flushed: lost to a crash, the message is sent
    /// again and rejected again.
    pub fn reject(
        &self,
        id: &RecordId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<u64>, OutboxError> {
        let trees = (&self.messages, &self.index, &self.deferred, &self.rejected);
        let result = trees.transaction(|(messages, index, deferred, rejected)| {
            let Some(iv) = index.remove(id.as_str())? else {
                return Ok(None);
            };
            let (seq, len) = decode_index(&iv).map_err(abort)?;
            let Some(value) = messages.remove(&seq.to_be_bytes())? else {
                return Err(abort(OutboxError::Corrupt(format!(
                    "index names message {seq}, which is missing"
                ))));
            };
            let was_deferred = deferred.remove(id.as_str())?.is_some();
            let replaced = rejected
                .insert(id.as_str(), encode_rejected(at, seq, reason, &value))?
                .is_some();
            Ok(Some((seq, len, was_deferred, replaced)))
        });
        let Some((seq, len, was_deferred, replaced)) = settle(result)? else {
            return Ok(None);
        };
        self.shared.messages.fetch_sub(1, Ordering::AcqRel);
        self.shared
            .bytes
            .fetch_sub(u64::from(len), Ordering::AcqRel);
        if was_deferred {
            self.shared.deferred.fetch_sub(1, Ordering::AcqRel);
        }
        if !replaced {
            self.shared.rejected.fetch_add(1, Ordering::AcqRel);
        }
        self.shared.refused.store(false, Ordering::Release);
        Ok(Some(seq))
    }

    /// Every rejected message, in id order.
    pub fn rejected_messages(&self) -> Result<Vec<RejectedMessage>, OutboxError> {
        let mut out = Vec::new();
        for entry in self.rejected.iter() {
            let (_, v) = entry?;
            let r = split_rejected(&v)?;
            out.push(RejectedMessage {
                pending: decode_message(r.seq, r.message)?,
                reason: r.reason,
                rejected_at: r.at,
            });
        }
        Ok(out)
    }

    /// An operator's retry of `id`: a rejected message moves back into the queue (a new seq,
    /// the same stored value) in one transaction, then the database is flushed; a deferred one
    /// loses its deferral (it is sent at the next start, or the next reconnect). The quota is
    /// not checked: the operator asked for it.
    pub fn requeue(&self, id: &RecordId) -> Result<Requeued, OutboxError> {
        if self.deferred.remove(id.as_str())?.is_some() {
            self.shared.deferred.fetch_sub(1, Ordering::AcqRel);
            return Ok(Requeued::Undeferred);
        }
        if !self.rejected.contains_key(id.as_str())? {
            return Ok(Requeued::NotFound);
        }
        let seq = self.db.generate_id()? + 1;
        let trees = (&self.messages, &self.index, &self.rejected);
        let result = trees.transaction(|(messages, index, rejected)| {
            let Some(v) = rejected.remove(id.as_str())? else {
                return Ok(None);
            };
            let value = split_rejected(&v).map_err(abort)?.message;
            let payload_len = value.len().saturating_sub(2 + HEX_LEN) as u32;
            if let Some(old) = index.get(id.as_str())? {
                // Queued again meanwhile (a re-read of the same file): that copy is the one.
                let (seq, len) = decode_index(&old).map_err(abort)?;
                return Ok(Some((seq, len, false)));
            }
            let mut iv = [0u8; 12];
            iv[..8].copy_from_slice(&seq.to_be_bytes());
            iv[8..].copy_from_slice(&payload_len.to_be_bytes());
            messages.insert(&seq.to_be_bytes(), value)?;
            index.insert(id.as_str(), &iv[..])?;
            Ok(Some((seq, payload_len, true)))
        });
        let Some((seq, len, added)) = settle(result)? else {
            return Ok(Requeued::NotFound);
        };
        self.shared.rejected.fetch_sub(1, Ordering::AcqRel);
        if added {
            self.shared.messages.fetch_add(1, Ordering::AcqRel);
            self.shared
                .bytes
                .fetch_add(u64::from(len), Ordering::AcqRel);
        }
        self.flush()?;
        self.publish_durable(seq);
        Ok(Requeued::Queued(seq))
    }

    /// When the file with this digest was taken, if it is taken.
    pub fn taken_at(&self, digest: &str) -> Result<Option<DateTime<Utc>>, OutboxError> {
        Ok(self
            .taken
            .get(digest.as_bytes())?
            .filter(|v| v.len() == 16)
            .map(|v| from_millis(&v[8..16])))
    }

    /// Forgets the file with this digest: its `taken` entry and every `seen` entry carrying it,
    /// so ingest reads it again (`agent requeue`). Flushed before it returns. Its messages,
    /// queued or rejected, are left alone.
    pub fn forget_digest(&self, digest: &str) -> Result<Forgotten, OutboxError> {
        let taken = self.taken.remove(digest.as_bytes())?.is_some();
        let mut seen = 0;
        for entry in self.seen.iter() {
            let (k, v) = entry?;
            if v.len() == 16 + HEX_LEN && &v[16..] == digest.as_bytes() {
                self.seen.remove(k)?;
                seen += 1;
            }
        }
        self.flush()?;
        Ok(Forgotten { taken, seen })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::message;
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid")
    }

    fn backoff(attempts: u32) -> Duration {
        Duration::from_secs(60 * 2u64.pow(attempts - 1))
    }

    #[test]
    fn a_deferral_keeps_the_message_queued_and_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        store.enqueue(&message(1)).unwrap();
        let id = message(1).id();
        let (d, wait) = store
            .defer(&id, "template_version: 3", at(0), backoff)
            .unwrap()
            .unwrap();
        assert_eq!((d.attempts, wait), (1, Duration::from_secs(60)));
        assert_eq!(d.next_attempt_at, at(60));
        let (d, wait) = store
            .defer(&id, "template_version: 3", at(70), backoff)
            .unwrap()
            .unwrap();
        assert_eq!((d.attempts, wait), (2, Duration::from_secs(120)));
        assert_eq!((d.first_deferred_at, d.next_attempt_at), (at(0), at(190)));
        let b = store.backlog();
        assert_eq!((b.messages, b.deferred, b.rejected), (1, 1, 0));
        assert_eq!(store.batch(0..u64::MAX, 10).unwrap().len(), 1);
        // Not queued: a late receipt changes nothing.
        assert!(store
            .defer(&message(2).id(), "x", at(0), backoff)
            .unwrap()
            .is_none());

        // Reopened: the deferral is read back (its loss to a crash would only cost a resend).
        drop(store);
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(store.backlog().deferred, 1);
        let all = store.deferrals().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, id);
        assert_eq!(all[0].1.reason, "template_version: 3");

        // Stored at last: retired with its deferral.
        assert_eq!(store.retire(std::slice::from_ref(&id)).unwrap().len(), 1);
        assert_eq!(store.backlog(), Backlog::default());
        assert!(store.deferral(&id).unwrap().is_none());
    }

    #[test]
    fn a_rejection_moves_the_whole_message_aside_and_frees_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let size = message(1).encode().len() as u64;
        let store = Store::open(dir.path(), size * 2).unwrap();
        store.enqueue(&message(1)).unwrap();
        store.enqueue(&message(2)).unwrap();
        assert!(store.is_full());
        let id = message(1).id();
        store
            .defer(&id, "unknown_device: d", at(0), backoff)
            .unwrap();
        let seq = store.reject(&id, "record_id: forged", at(5)).unwrap();
        assert!(seq.is_some());
        assert_eq!(
            store.reject(&id, "again", at(6)).unwrap(),
            None,
            "late receipt"
        );
        let b = store.backlog();
        assert_eq!((b.messages, b.deferred, b.rejected), (1, 0, 1));
        assert_eq!(b.bytes, size);
        assert!(!store.is_full(), "a rejected message leaves the quota");
        assert!(store.is_taken(message(1).digest()).unwrap(), "still taken");
        assert!(matches!(
            store.enqueue(&message(3)).unwrap(),
            Enqueued::Queued(_)
        ));

        // Reopened without a flush of its own (the enqueue above flushed the move).
        drop(store);
        let store = Store::open(dir.path(), size * 2).unwrap();
        let rejected = store.rejected_messages().unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].pending.id, id);
        assert_eq!(rejected[0].pending.payload, message(1).encode());
        assert_eq!(rejected[0].pending.seq, seq.unwrap());
        assert_eq!(rejected[0].reason, "record_id: forged");
        assert_eq!(rejected[0].rejected_at, at(5));
        assert_eq!(store.backlog().rejected, 1);
        assert!(store.deferral(&id).unwrap().is_none());
    }

    #[test]
    fn requeue_puts_a_rejected_message_back_with_a_new_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        store.enqueue(&message(1)).unwrap();
        store.enqueue(&message(2)).unwrap();
        let (a, b) = (message(1).id(), message(2).id());
        let old = store.reject(&a, "schema: x", at(0)).unwrap().unwrap();
        store
            .defer(&b, "unknown_device: d", at(0), backoff)
            .unwrap();
        assert_eq!(store.requeue(&message(3).id()).unwrap(), Requeued::NotFound);
        assert_eq!(store.requeue(&b).unwrap(), Requeued::Undeferred);
        let Requeued::Queued(seq) = store.requeue(&a).unwrap() else {
            panic!("not requeued")
        };
        assert!(seq > old);
        assert_eq!(store.requeue(&a).unwrap(), Requeued::NotFound);
        drop(store);
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        let b = store.backlog();
        assert_eq!((b.messages, b.deferred, b.rejected), (2, 0, 0));
        let queued = store.batch(0..u64::MAX, 10).unwrap();
        assert_eq!(queued.last().unwrap().id, a);
        assert_eq!(queued.last().unwrap().payload, message(1).encode());
        assert_eq!(store.durable_seq(), seq);
    }

    #[test]
    fn forgetting_a_digest_lets_the_file_be_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        let m = message(1);
        store.enqueue(&m).unwrap();
        store.remember_seen("/e/f1.png", 3, 4, m.digest()).unwrap();
        store
            .remember_seen("/e/other.png", 3, 4, message(2).digest())
            .unwrap();
        assert!(store.taken_at(m.digest()).unwrap().is_some());
        let f = store.forget_digest(m.digest()).unwrap();
        assert_eq!(
            f,
            Forgotten {
                taken: true,
                seen: 1
            }
        );
        assert!(!store.is_taken(m.digest()).unwrap());
        assert!(store.seen_digest("/e/other.png", 3, 4).unwrap().is_some());
        // Same content, same id, still queued: nothing new is queued.
        assert_eq!(store.enqueue(&m).unwrap(), Enqueued::AlreadyTaken);
        assert!(store.is_taken(m.digest()).unwrap());
        assert_eq!(store.backlog().messages, 1);
    }
}
