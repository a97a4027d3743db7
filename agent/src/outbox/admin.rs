//! What the `agent outbox ...` commands do, as library functions on an open [`Store`]: list the
//! queue or its deferred or rejected part, summarise it, requeue rejected (or deferred)
//! messages, export payloads. The re-reading of export files (`agent requeue`) is in
//! [`super::reread`].
//!
//! They work on a stopped agent's outbox: the database is locked while the agent runs, and
//! [`open`] then fails with [`OutboxError::Locked`], which says so.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use record::RecordId;
use serde::Serialize;

use super::store::{Kind, OutboxError, Pending, Requeued, Store};
use crate::config::AdminPaths;

/// An offline command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The outbox database failed (or is locked by a running agent).
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An argument is not a message id.
    #[error("{0:?} is not a message id (64 hex digits, as `agent outbox list` prints)")]
    NotAnId(String),
}

impl AdminError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Opens the outbox named by the configuration, as `agent run` does.
pub fn open(paths: &AdminPaths) -> Result<Store, OutboxError> {
    Store::open(&paths.data_dir.join(crate::OUTBOX_DIR), paths.max_bytes)
}

/// Which messages a command acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything queued (deferred messages included).
    Queued,
    /// Queued messages the hub deferred.
    Deferred,
    /// Messages the hub rejected.
    Rejected,
}

/// One message as `agent outbox list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// Message id (what receipts and `requeue` name).
    pub id: String,
    /// `queued`, `deferred` or `rejected`.
    pub state: &'static str,
    /// `record` or `rejection`.
    pub kind: &'static str,
    /// Queue position (for a rejected message, the one it had).
    pub seq: u64,
    /// Payload bytes.
    pub size: u64,
    /// The export file it was made from, as the payload names it.
    pub source_file: Option<String>,
    /// The hub's reason (`code: text`), when deferred or rejected.
    pub reason: Option<String>,
    /// When its export file was taken.
    pub taken_at: Option<DateTime<Utc>>,
    /// Deferred: the first deferred receipt.
    pub first_deferred_at: Option<DateTime<Utc>>,
    /// Deferred: when it is sent again (earlier at a reconnect).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Deferred: how many deferred receipts it got.
    pub attempts: Option<u32>,
    /// Rejected: when.
    pub rejected_at: Option<DateTime<Utc>>,
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Record => "record",
        Kind::Rejection => "rejection",
    }
}

/// The source file and digest a payload names (read loosely, whatever its schema version).
fn payload_facts(payload: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return (None, None);
    };
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    (
        text("source_file"),
        text("image_sha256").or_else(|| text("file_sha256")),
    )
}

fn listed(store: &Store, p: &Pending, state: &'static str) -> Result<Listed, OutboxError> {
    let (source_file, digest) = payload_facts(&p.payload);
    let taken_at = match &digest {
        Some(d) => store.taken_at(d)?,
        None => None,
    };
    Ok(Listed {
        id: p.id.to_string(),
        state,
        kind: kind_name(p.kind),
        seq: p.seq,
        size: p.payload.len() as u64,
        source_file,
        reason: None,
        taken_at,
        first_deferred_at: None,
        next_attempt_at: None,
        attempts: None,
        rejected_at: None,
    })
}

/// The messages of `part`: queued ones in queue order, rejected ones in id order.
pub fn list(store: &Store, part: Part) -> Result<Vec<Listed>, OutboxError> {
    let mut out = Vec::new();
    if part == Part::Rejected {
        for r in store.rejected_messages()? {
            let mut l = listed(store, &r.pending, "rejected")?;
            l.reason = Some(r.reason);
            l.rejected_at = Some(r.rejected_at);
            out.push(l);
        }
        return Ok(out);
    }
    for p in store.batch(0..u64::MAX, usize::MAX)? {
        let deferral = store.deferral(&p.id)?;
        if part == Part::Deferred && deferral.is_none() {
            continue;
        }
        let mut l = listed(store, &p, "queued")?;
        if let Some(d) = deferral {
            l.state = "deferred";
            l.reason = Some(d.reason);
            l.first_deferred_at = Some(d.first_deferred_at);
            l.next_attempt_at = Some(d.next_attempt_at);
            l.attempts = Some(d.attempts);
        }
        out.push(l);
    }
    Ok(out)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Writes `items` one per line: JSON objects with `json`, else text.
pub fn write_list(out: &mut impl Write, items: &[Listed], json: bool) -> std::io::Result<()> {
    for l in items {
        if json {
            serde_json::to_writer(&mut *out, l)?;
            writeln!(out)?;
            continue;
        }
        write!(
            out,
            "{} {:<8} {:<9} seq {} {} B {}",
            l.id,
            l.state,
            l.kind,
            l.seq,
            l.size,
            l.source_file.as_deref().unwrap_or("?")
        )?;
        if let Some(t) = l.taken_at {
            write!(out, " taken {}", time(t))?;
        }
        if let (Some(first), Some(next), Some(n)) =
            (l.first_deferred_at, l.next_attempt_at, l.attempts)
        {
            write!(
                out,
                " deferred {n}x since {}, next {}",
                time(first),
                time(next)
            )?;
        }
        if let Some(t) = l.rejected_at {
            write!(out, " rejected {}", time(t))?;
        }
        if let Some(r) = &l.reason {
            write!(out, ": {r}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The outbox in a few numbers (`agent outbox status`, `agent check`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Messages queued (deferred ones included).
    pub queued: u64,
    /// Their payload bytes.
    pub queued_bytes: u64,
    /// Of those, deferred by the hub.
    pub deferred: u64,
    /// Rejected by the hub, kept aside.
    pub rejected: u64,
    /// The longest-deferred message's first deferral and the hub's last reason for it.
    pub oldest_deferred: Option<(DateTime<Utc>, String)>,
}

/// Summarises the outbox.
pub fn summary(store: &Store) -> Result<Summary, OutboxError> {
    let b = store.backlog();
    let oldest_deferred = store
        .deferrals()?
        .into_iter()
        .map(|(_, d)| (d.first_deferred_at, d.reason))
        .min();
    Ok(Summary {
        queued: b.messages,
        queued_bytes: b.bytes,
        deferred: b.deferred,
        rejected: b.rejected,
        oldest_deferred,
    })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "outbox: {} queued ({} bytes), {} deferred by the hub, {} rejected by the hub",
            self.queued, self.queued_bytes, self.deferred, self.rejected
        )?;
        if let Some((at, reason)) = &self.oldest_deferred {
            write!(f, "; oldest deferral since {}: {reason}", time(*at))?;
        }
        if self.rejected > 0 {
            write!(f, " (see `agent outbox list --rejected`)")?;
        }
        Ok(())
    }
}

/// What `agent outbox requeue` acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// These ids.
    Ids(Vec<String>),
    /// Every rejected and every deferred message.
    All,
}

/// Requeues: a rejected message goes back into the queue (new seq, same payload, one
/// transaction each), so the agent sends it again at its next start; a deferred one loses its
/// deferral (sent at the next start like any other). Returns what happened to each id.
pub fn requeue(store: &Store, target: &Target) -> Result<Vec<(RecordId, Requeued)>, AdminError> {
    let ids: Vec<RecordId> = match target {
        Target::Ids(ids) => ids
            .iter()
            .map(|s| RecordId::parse(s.trim()).map_err(|_| AdminError::NotAnId(s.clone())))
            .collect::<Result<_, _>>()?,
        Target::All => {
            let mut ids: Vec<RecordId> = store
                .rejected_messages()?
                .into_iter()
                .map(|r| r.pending.id)
                .collect();
            ids.extend(store.deferrals()?.into_iter().map(|(id, _)| id));
            ids
        }
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let r = store.requeue(&id)?;
        out.push((id, r));
    }
    Ok(out)
}

/// Writes each message's payload of `part` (as published: JSON with its schema version) to
/// `<dir>/<id>.json`, each through a temporary file that is fsynced and renamed. Returns how
/// many were written.
pub fn export(store: &Store, dir: &Path, part: Part) -> Result<usize, AdminError> {
    std::fs::create_dir_all(dir).map_err(AdminError::io(dir))?;
    let pending: Vec<Pending> = match part {
        Part::Rejected => store
            .rejected_messages()?
            .into_iter()
            .map(|r| r.pending)
            .collect(),
        Part::Queued => store.batch(0..u64::MAX, usize::MAX)?,
        Part::Deferred => store
            .batch(0..u64::MAX, usize::MAX)?
            .into_iter()
            .filter(|p| matches!(store.deferral(&p.id), Ok(Some(_))))
            .collect(),
    };
    for p in &pending {
        let target = dir.join(format!("{}.json", p.id));
        crate::assemble::quarantine::write_atomic(&target, &p.payload)
            .map_err(AdminError::io(&target))?;
    }
    crate::assemble::quarantine::sync_dir(dir);
    Ok(pending.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::store::tests::message;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid")
    }

    /// An outbox with messages 1..=4: 2 deferred, 3 rejected.
    fn outbox(dir: &Path) -> Store {
        let store = Store::open(dir, 1 << 30).unwrap();
        for n in 1..=4 {
            store.enqueue(&message(n)).unwrap();
        }
        let delay = |_| std::time::Duration::from_secs(60);
        store
            .defer(&message(2).id(), "unknown_device: dev-1", at(0), delay)
            .unwrap();
        store
            .reject(&message(3).id(), "record_id: forged", at(1))
            .unwrap();
        store
    }

    #[test]
    fn lists_each_part_with_reasons_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let store = outbox(dir.path());
        let queued = list(&store, Part::Queued).unwrap();
        assert_eq!(queued.len(), 3);
        assert_eq!(queued[0].source_file.as_deref(), Some("f1.png"));
        assert!(queued[0].taken_at.is_some());
        assert_eq!(queued[1].state, "deferred");
        let deferred = list(&store, Part::Deferred).unwrap();
        assert_eq!(deferred.len(), 1);
        assert_eq!(deferred[0].id, message(2).id().to_string());
        assert_eq!(deferred[0].attempts, Some(1));
        assert_eq!(deferred[0].next_attempt_at, Some(at(60)));
        let rejected = list(&store, Part::Rejected).unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].reason.as_deref(), Some("record_id: forged"));
        assert_eq!(rejected[0].kind, "rejection");

        let mut text = Vec::new();
        write_list(&mut text, &rejected, false).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("rejected 2023-11-14T22:13:21Z: record_id: forged"),
            "{text}"
        );
        let mut json = Vec::new();
        write_list(&mut json, &deferred, true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["reason"], "unknown_device: dev-1");
        assert_eq!(v["state"], "deferred");

        let s = summary(&store).unwrap();
        assert_eq!((s.queued, s.deferred, s.rejected), (3, 1, 1));
        let line = s.to_string();
        assert!(line.contains("1 deferred by the hub"), "{line}");
        assert!(line.contains("unknown_device: dev-1"), "{line}");
    }

    #[test]
    fn requeue_moves_rejected_back_and_clears_deferrals() {
        let dir = tempfile::tempdir().unwrap();
        let store = outbox(dir.path());
        let err = requeue(&store, &Target::Ids(vec!["nope".into()])).unwrap_err();
        assert!(err.to_string().contains("not a message id"), "{err}");
        let r = requeue(&store, &Target::Ids(vec![message(1).id().to_string()])).unwrap();
        assert_eq!(
            r[0].1,
            Requeued::NotFound,
            "queued, neither rejected nor deferred"
        );
        let r = requeue(&store, &Target::All).unwrap();
        assert_eq!(r.len(), 2);
        assert!(matches!(r[0].1, Requeued::Queued(_)));
        assert_eq!(r[1].1, Requeued::Undeferred);
        let s = summary(&store).unwrap();
        assert_eq!((s.queued, s.deferred, s.rejected), (4, 0, 0));
    }

    #[test]
    fn exports_payloads_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = outbox(&dir.path().join("db"));
        let out = dir.path().join("out");
        assert_eq!(export(&store, &out, Part::Rejected).unwrap(), 1);
        let file = out.join(format!("{}.json", message(3).id()));
        assert_eq!(std::fs::read(&file).unwrap(), message(3).encode());
        assert_eq!(export(&store, &out, Part::Queued).unwrap(), 3);
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            4,
            "no temporary files left"
        );
    }

    #[test]
    fn open_names_the_running_agent_when_locked() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AdminPaths {
            data_dir: dir.path().to_owned(),
            quarantine_dir: dir.path().join("q"),
            export_dirs: vec![],
            max_bytes: 1 << 20,
        };
        let _running = open(&paths).unwrap();
        let err = open(&paths).unwrap_err();
        assert!(matches!(err, OutboxError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("is the agent running"), "{err}");
    }
}
