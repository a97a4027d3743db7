//! ingest: watch the export folders and take each complete, new export file.
//!
//! A file is *complete* when its size and mtime were the same at two polls at least
//! `ingest.settle_ms` apart and it can be opened and read; it is *new* when its SHA-256 is not
//! in the outbox's `taken` tree. Folders are watched with `notify` and rescanned every
//! `ingest.rescan_secs` (network shares drop events, and a folder may appear late).
//!
//! Ingest never writes to an export folder. Deleting an export after it was taken
//! (`ingest.after_take = "delete"`) is done by the outbox stage, only once the message is
//! durable. A file is *claimed* from the moment it is sent down the pipeline until the outbox
//! stage settles it, so it is not sent twice; a file whose message could not be queued (quota)
//! is released and taken again later. While the outbox is full no file is taken.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use notify::Watcher;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::outbox::Store;
use crate::telemetry::Health;

/// `[ingest]`: where exports appear and when a file counts as complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Folders the device exports into.
    pub export_dirs: Vec<PathBuf>,
    /// Also take files in subfolders.
    pub recursive: bool,
    /// A file must keep its size and mtime this long to count as complete.
    pub settle_ms: u64,
    /// Full rescan period (events from network shares get lost).
    pub rescan_secs: u64,
    /// Larger files are not read; they are quarantined as `too_large`.
    pub max_file_bytes: u64,
    /// What to do with an export once its message is durably queued: `keep` or `delete`.
    pub after_take: AfterTake,
    /// File names ending with one of these are ignored (partial downloads, temp files).
    /// Names starting with `.` are always ignored.
    pub ignore_suffixes: Vec<String>,
}

/// What happens to an export folder's file after it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterTake {
    /// Leave it (the export folder is the device's).
    Keep,
    /// Delete it once its message is on disk.
    Delete,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            export_dirs: vec![PathBuf::from("exports")],
            recursive: false,
            settle_ms: 2000,
            rescan_secs: 30,
            max_file_bytes: 64 * 1024 * 1024,
            after_take: AfterTake::Keep,
            ignore_suffixes: [".tmp", ".part", ".partial", ".crdownload", "~"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// A file taken from an export folder.
#[derive(Debug, Clone)]
pub struct Taken {
    /// Where it is.
    pub path: PathBuf,
    /// Its base name.
    pub file_name: String,
    /// Hex SHA-256 of its content.
    pub sha256: String,
    /// Its bytes; `None` when it is larger than `ingest.max_file_bytes` (not read into memory).
    pub bytes: Option<Vec<u8>>,
    /// Its size.
    pub size: u64,
    /// When it was taken.
    pub captured_at: DateTime<Utc>,
}

/// Files sent down the pipeline and not yet settled by the outbox stage. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Claims(Arc<Mutex<HashSet<PathBuf>>>);

impl Claims {
    /// Claims `path`; false when it was already claimed.
    pub fn claim(&self, path: &Path) -> bool {
        self.0.lock().is_ok_and(|mut s| s.insert(path.to_owned()))
    }

    /// Releases `path` (settled, or given up).
    pub fn release(&self, path: &Path) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(path);
        }
    }

    /// Whether `path` is claimed.
    pub fn contains(&self, path: &Path) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(path))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i64,
}

/// The ingest stage.
#[derive(Debug)]
pub struct Ingest {
    config: IngestConfig,
    store: Store,
    claims: Claims,
    health: Health,
}

impl Ingest {
    /// An ingest stage reading `config.export_dirs`, consulting `store` for taken digests.
    pub fn new(config: IngestConfig, store: Store, claims: Claims, health: Health) -> Self {
        Self {
            config,
            store,
            claims,
            health,
        }
    }

    /// Runs until `shutdown` (or until the next stage is gone), on a blocking thread.
    pub async fn run(self, tx: mpsc::Sender<Taken>, shutdown: impl Future<Output = ()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let mut task = tokio::task::spawn_blocking(move || Scanner::new(self).run(&tx, &stop2));
        tokio::select! {
            _ = shutdown => {
                stop.store(true, Ordering::Release);
                let _joined = task.await;
            }
            r = &mut task => {
                if let Err(e) = r {
                    error!(error = %e, "Ingest thread failed.");
                }
            }
        }
    }
}

struct Scanner {
    ingest: Ingest,
    /// Candidates and their last observation.
    pending: HashMap<PathBuf, Option<(Stat, Instant)>>,
    /// Files known taken, at this size and mtime.
    done: HashMap<PathBuf, Stat>,
    /// Complete-looking files that could not be opened or read, since when.
    unreadable: HashMap<PathBuf, Instant>,
    /// Those already warned about.
    warned: HashSet<PathBuf>,
    /// When the digest cache was last pruned.
    last_sweep: Option<Instant>,
    full_reported: bool,
}

/// How often the outbox's digest cache (`seen`) drops the files no longer in the folders.
const SEEN_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// An export that stays unreadable this long gets one WARN (it is retried all along).
const UNREADABLE_WARN_AFTER: Duration = Duration::from_secs(300);

/// Whether `e` means another program still holds the file: Windows' sharing and lock
/// violations (`ERROR_SHARING_VIOLATION` 32, `ERROR_LOCK_VIOLATION` 33), which the device
/// software causes while it writes an export without sharing it.
pub fn still_being_written(e: &std::io::Error) -> bool {
    cfg!(windows) && matches!(e.raw_os_error(), Some(32 | 33))
}

impl Scanner {
    fn new(ingest: Ingest) -> Self {
        Self {
            ingest,
            pending: HashMap::new(),
            done: HashMap::new(),
            unreadable: HashMap::new(),
            warned: HashSet::new(),
            last_sweep: None,
            full_reported: false,
        }
    }

    fn run(mut self, tx: &mpsc::Sender<Taken>, stop: &AtomicBool) {
        let (ev_tx, ev_rx) = std_mpsc::channel::<PathBuf>();
        // The watcher is set up and kept on a thread of its own: setting up a watch can block
        // (seen under Wine: an agent that never took a file, its scan loop waiting on
        // ReadDirectoryChangesW), and the rescans must never wait for it. The thread keeps the
        // watcher until this loop ends (dropping `keep`).
        let (keep, kept) = std_mpsc::channel::<()>();
        let dirs = self.ingest.config.export_dirs.clone();
        let recursive = self.ingest.config.recursive;
        let watching = std::thread::Builder::new()
            .name("ingest-watch".into())
            .spawn(move || {
                let _watcher = watch(&dirs, recursive, ev_tx);
                let _ended = kept.recv();
            });
        if let Err(e) = watching {
            warn!(error = %e, "File watching unavailable; relying on rescans.");
        }
        let _keep = keep;
        let settle = Duration::from_millis(self.ingest.config.settle_ms);
        let tick = (settle / 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
        let rescan = Duration::from_secs(self.ingest.config.rescan_secs.max(1));
        let mut last_scan: Option<Instant> = None;
        while !stop.load(Ordering::Acquire) {
            let rescan_due = match last_scan {
                None => true,
                Some(t) => t.elapsed() >= rescan,
            };
            if rescan_due {
                self.rescan();
                last_scan = Some(Instant::now());
            }
            match ev_rx.recv_timeout(tick) {
                Ok(p) => {
                    self.consider(p);
                    while let Ok(p) = ev_rx.try_recv() {
                        self.consider(p);
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(tick);
                }
            }
            if !self.poll(settle, tx, stop) {
                return;
            }
        }
    }

    fn ignored(&self, path: &Path) -> bool {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        name.starts_with('.')
            || self
                .ingest
                .config
                .ignore_suffixes
                .iter()
                .any(|s| name.ends_with(s.as_str()))
    }

    fn consider(&mut self, path: PathBuf) {
        if !self.ignored(&path) {
            self.pending.entry(path).or_insert(None);
        }
    }

    fn rescan(&mut self) {
        let dirs = self.ingest.config.export_dirs.clone();
        // Files listed this time: `done` keeps only those, so it is bounded by what is in the
        // export folders (a folder that cannot be listed costs its files one digest lookup).
        let mut listed: HashSet<PathBuf> = HashSet::new();
        for dir in dirs {
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                let entries = match std::fs::read_dir(&d) {
                    Ok(e) => e,
                    Err(e) => {
                        debug!(dir = %d.display(), error = %e, "Cannot list export folder.");
                        continue;
                    }
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(ft) = entry.file_type() else { continue };
                    if ft.is_file() {
                        listed.insert(path.clone());
                    }
                    if ft.is_dir() {
                        if self.ingest.config.recursive {
                            stack.push(path);
                        }
                    } else if ft.is_file() && !self.done.contains_key(&path) {
                        self.consider(path);
                    } else if ft.is_file() {
                        // Known: recheck only if it changed.
                        if let Ok(st) = stat(&path) {
                            if self.done.get(&path) != Some(&st) {
                                self.done.remove(&path);
                                self.consider(path);
                            }
                        }
                    }
                }
            }
        }
        self.done.retain(|p, _| listed.contains(p));
        let sweep_due = match self.last_sweep {
            None => true,
            Some(t) => t.elapsed() >= SEEN_SWEEP_EVERY,
        };
        if sweep_due {
            self.last_sweep = Some(Instant::now());
            // The outbox's digest cache: entries of files gone from the export folders.
            match self
                .ingest
                .store
                .prune_seen(|p| std::fs::metadata(p).is_ok())
            {
                Ok(0) => {}
                Ok(n) => debug!(entries = n, "Digest cache: forgot files no longer there."),
                Err(e) => warn!(error = %e, "Could not prune the digest cache."),
            }
        }
    }

    /// Checks every candidate; takes the complete ones. False when the pipeline is gone.
    fn poll(&mut self, settle: Duration, tx: &mpsc::Sender<Taken>, stop: &AtomicBool) -> bool {
        let mut ready = Vec::new();
        let now = Instant::now();
        let (unreadable, warned) = (&mut self.unreadable, &mut self.warned);
        self.pending.retain(|path, obs| match stat(path) {
            Err(_) => {
                unreadable.remove(path);
                warned.remove(path);
                false
            }
            Ok(st) => match obs {
                Some((prev, at)) if *prev == st => {
                    if now.duration_since(*at) >= settle {
                        ready.push((path.clone(), st));
                    }
                    true
                }
                _ => {
                    *obs = Some((st, now));
                    true
                }
            },
        });
        // Oldest first, so exports keep their order in the queue.
        ready.sort_by(|a, b| (a.1.mtime_ns, &a.0).cmp(&(b.1.mtime_ns, &b.0)));
        for (path, st) in ready {
            if stop.load(Ordering::Acquire) {
                return true;
            }
            if self.ingest.store.is_full() {
                if !self.full_reported {
                    let backlog = self.ingest.store.backlog();
                    let msg = format!(
                        "outbox full ({} bytes of outbox.max_bytes = {}): not taking new exports; they wait in the export folder",
                        backlog.bytes,
                        self.ingest.store.max_bytes()
                    );
                    error!(backlog = backlog.messages, "{msg}");
                    self.ingest.health.set_error(msg);
                    self.full_reported = true;
                }
                return true;
            }
            if self.full_reported {
                info!("Outbox has room again: taking exports.");
                self.full_reported = false;
            }
            if self.ingest.claims.contains(&path) {
                continue;
            }
            let taken = self.take(&path, st);
            if taken.is_ok() {
                self.unreadable.remove(&path);
                self.warned.remove(&path);
            }
            match taken {
                Ok(Some(taken)) => {
                    if !self.ingest.claims.claim(&path) {
                        continue;
                    }
                    self.pending.remove(&path);
                    self.ingest.health.export_taken();
                    debug!(file = %path.display(), sha256 = %taken.sha256, "Export taken.");
                    if tx.blocking_send(taken).is_err() {
                        self.ingest.claims.release(&path);
                        return false;
                    }
                }
                Ok(None) => {
                    self.pending.remove(&path);
                    self.done.insert(path, st);
                }
                Err(e) => {
                    // Not openable yet (still locked by the device software, permissions):
                    // not complete yet, try again later; never fatal.
                    let why = if still_being_written(&e) {
                        "locked by another program"
                    } else {
                        "not readable"
                    };
                    debug!(file = %path.display(), error = %e, "Export {why} yet; retrying.");
                    let since = *self.unreadable.entry(path.clone()).or_insert(now);
                    if now.duration_since(since) >= UNREADABLE_WARN_AFTER
                        && self.warned.insert(path.clone())
                    {
                        warn!(
                            file = %path.display(),
                            error = %e,
                            "Export {why} for {} min; still retrying.",
                            UNREADABLE_WARN_AFTER.as_secs() / 60
                        );
                    }
                    if let Some(obs) = self.pending.get_mut(&path) {
                        *obs = None;
                    }
                }
            }
        }
        true
    }

    /// Reads and digests `path`. `Ok(None)` when its digest is already taken.
    fn take(&mut self, path: &Path, st: Stat) -> std::io::Result<Option<Taken>> {
        let store = &self.ingest.store;
        let key = path.to_string_lossy();
        if let Ok(Some(d)) = store.seen_digest(&key, st.size, st.mtime_ns) {
            if store.is_taken(&d).unwrap_or(false) {
                return Ok(None);
            }
        }
        let mut file = std::fs::File::open(path)?;
        let max = self.ingest.config.max_file_bytes;
        let (sha256, bytes) = if st.size > max {
            let mut h = Sha256::new();
            std::io::copy(&mut file, &mut h)?;
            (hex::encode(h.finalize()), None)
        } else {
            let mut buf = Vec::with_capacity(st.size as usize);
            file.by_ref().take(max + 1).read_to_end(&mut buf)?;
            (hex::encode(Sha256::digest(&buf)), Some(buf))
        };
        drop(file);
        // Changed while we read: not complete after all.
        if stat(path)? != st {
            return Err(std::io::Error::other("changed while being read"));
        }
        if let Err(e) = store.remember_seen(&key, st.size, st.mtime_ns, &sha256) {
            warn!(error = %e, "Could not cache a file digest.");
        }
        if store.is_taken(&sha256).unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(Taken {
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.to_owned(),
            sha256,
            size: st.size,
            bytes,
            captured_at: Utc::now(),
        }))
    }
}

/// A watcher sending the paths of every event in `dirs` to `ev_tx`; `None` when the platform
/// cannot watch (a WARN: the rescans cover it).
fn watch(
    dirs: &[PathBuf],
    recursive: bool,
    ev_tx: std_mpsc::Sender<PathBuf>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            for p in event.paths {
                if ev_tx.send(p).is_err() {
                    return;
                }
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "File watching unavailable; relying on rescans.");
            return None;
        }
    };
    let mode = if recursive {
        notify::RecursiveMode::Recursive
    } else {
        notify::RecursiveMode::NonRecursive
    };
    for dir in dirs {
        if let Err(e) = watcher.watch(dir, mode) {
            warn!(dir = %dir.display(), error = %e, "Cannot watch export folder; relying on rescans.");
        }
    }
    Some(watcher)
}

fn stat(path: &Path) -> std::io::Result<Stat> {
    let m = std::fs::metadata(path)?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a file"));
    }
    let mtime_ns = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Ok(Stat {
        size: m.len(),
        mtime_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(settle_ms: u64) -> (tempfile::TempDir, Ingest, Store) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("exports")).unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 30).unwrap();
        let config = IngestConfig {
            export_dirs: vec![dir.path().join("exports")],
            settle_ms,
            ..IngestConfig::default()
        };
        let ingest = Ingest::new(config, store.clone(), Claims::default(), Health::default());
        (dir, ingest, store)
    }

    #[test]
    fn takes_a_file_once_it_is_stable_and_not_taken() {
        let (dir, ingest, _store) = setup(0);
        let exports = dir.path().join("exports");
        std::fs::write(exports.join("a.png"), b"abc").unwrap();
        std::fs::write(exports.join("b.png.part"), b"x").unwrap();
        std::fs::write(exports.join(".hidden"), b"x").unwrap();
        let (tx, mut rx) = mpsc::channel(10);
        let stop = AtomicBool::new(false);
        let mut s = Scanner::new(ingest);
        s.rescan();
        assert_eq!(s.pending.len(), 1);
        assert!(s.poll(Duration::ZERO, &tx, &stop)); // first observation
        assert!(rx.try_recv().is_err());
        assert!(s.poll(Duration::ZERO, &tx, &stop)); // stable
        let t = rx.try_recv().unwrap();
        assert_eq!(t.file_name, "a.png");
        assert_eq!(t.bytes.as_deref(), Some(&b"abc"[..]));
        assert_eq!(t.sha256, record::ids::sha256_hex(b"abc"));
        // Claimed: not taken again while in the pipeline.
        s.rescan();
        s.poll(Duration::ZERO, &tx, &stop);
        s.poll(Duration::ZERO, &tx, &stop);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn takes_nothing_while_the_outbox_is_full() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("exports")).unwrap();
        std::fs::write(dir.path().join("exports/a.png"), b"abc").unwrap();
        // A quota of one byte: the first refusal marks the outbox full.
        let store = Store::open(&dir.path().join("db"), 1).unwrap();
        let refused = store.enqueue(&crate::outbox::store::tests::message(1));
        assert!(refused.is_err() && store.is_full());
        let config = IngestConfig {
            export_dirs: vec![dir.path().join("exports")],
            settle_ms: 0,
            ..IngestConfig::default()
        };
        let health = Health::default();
        let ingest = Ingest::new(config, store, Claims::default(), health.clone());
        let (tx, mut rx) = mpsc::channel(10);
        let stop = AtomicBool::new(false);
        let mut s = Scanner::new(ingest);
        s.rescan();
        for _ in 0..3 {
            s.poll(Duration::ZERO, &tx, &stop);
        }
        assert!(rx.try_recv().is_err(), "nothing taken while full");
        assert!(
            s.pending.contains_key(&dir.path().join("exports/a.png")),
            "still a candidate"
        );
        let report = health.report(
            &record::DeviceId::new("d").unwrap(),
            false,
            Default::default(),
        );
        assert!(report.last_error.unwrap().contains("outbox full"));
    }

    #[test]
    fn files_gone_from_the_folder_leave_the_done_map_and_the_digest_cache() {
        let (dir, ingest, store) = setup(0);
        let file = dir.path().join("exports/a.png");
        std::fs::write(&file, b"abc").unwrap();
        let key = file.to_string_lossy().into_owned();
        let st = stat(&file).unwrap();
        let digest = record::ids::sha256_hex(b"abc");
        store
            .remember_seen(&key, st.size, st.mtime_ns, &digest)
            .unwrap();
        let mut s = Scanner::new(ingest);
        s.done.insert(file.clone(), st);
        // Still there and unchanged: stays known, its digest stays cached.
        s.rescan();
        assert!(s.done.contains_key(&file) && s.pending.is_empty());
        assert_eq!(
            store.seen_digest(&key, st.size, st.mtime_ns).unwrap(),
            Some(digest)
        );
        // Gone: forgotten by both at the next rescan (and sweep).
        std::fs::remove_file(&file).unwrap();
        s.last_sweep = None;
        s.rescan();
        assert!(s.done.is_empty());
        assert_eq!(store.seen_digest(&key, st.size, st.mtime_ns).unwrap(), None);
    }

    #[test]
    fn waits_for_the_settle_time() {
        let (dir, ingest, _store) = setup(60_000);
        std::fs::write(dir.path().join("exports/a.png"), b"abc").unwrap();
        let (tx, mut rx) = mpsc::channel(10);
        let stop = AtomicBool::new(false);
        let mut s = Scanner::new(ingest);
        s.rescan();
        for _ in 0..3 {
            s.poll(Duration::from_secs(60), &tx, &stop);
        }
        assert!(rx.try_recv().is_err());
    }
}
