//! What `agent requeue` does: makes a stopped agent read export files again at its next start
//! (after a template or model update), by forgetting their digests ([`Store::forget_digest`]).
//! What the hub then does with a re-read is in [`super`]'s "Re-reading exports".
//!
//! - [`quarantined`]: every file in the quarantine folder (not the `*.reason.txt` beside it) is
//!   moved back into the first export folder under its original name (from its reason file),
//!   through a temporary file that is fsynced and renamed; then its digest is forgotten and the
//!   quarantine copy and reason file are removed. When the export folder still holds the same
//!   content under that name (quarantine `copy` mode), nothing is copied. When it holds other
//!   content under that name, the file goes back as `<first 12 hex of its digest>_<name>`.
//! - [`files`]: forgets the digests of export files still in an export folder.
//!
//! Order for a crash: the file is in the export folder before its digest is forgotten, and the
//! quarantine copy is removed only after both; running the command again finishes the job.

use std::path::{Path, PathBuf};

use super::admin::AdminError;
use super::store::{Forgotten, Store};
use crate::assemble::quarantine::{sync_dir, write_atomic, REASON_SUFFIX};

/// One file made to be read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reread {
    /// The file named (or found in the quarantine folder).
    pub file: PathBuf,
    /// Where the agent will read it.
    pub into: PathBuf,
    /// Its digest.
    pub digest: String,
    /// What was forgotten.
    pub forgotten: Forgotten,
    /// A warning for the operator (the agent will not see the file).
    pub warning: Option<String>,
}

fn digest_of(path: &Path) -> Result<(Vec<u8>, String), AdminError> {
    let bytes = std::fs::read(path).map_err(AdminError::io(path))?;
    let digest = record::ids::sha256_hex(&bytes);
    Ok((bytes, digest))
}

/// The original file name a quarantined file's reason file gives (`file: NAME`), if it is a
/// plain file name.
fn original_name(reason_file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(reason_file).ok()?;
    let name = text.lines().find_map(|l| l.strip_prefix("file: "))?.trim();
    let plain = Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name);
    (plain && !name.starts_with('.')).then(|| name.to_owned())
}

/// Moves every quarantined export back into `export_dir` and forgets its digest; see the
/// module docs. Returns one entry per file, in name order.
pub fn quarantined(
    store: &Store,
    quarantine_dir: &Path,
    export_dir: &Path,
) -> Result<Vec<Reread>, AdminError> {
    let mut names: Vec<String> = Vec::new();
    let entries = match std::fs::read_dir(quarantine_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AdminError::io(quarantine_dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(AdminError::io(quarantine_dir))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // Temporary files of an interrupted quarantine end in `.tmp`.
        if is_file
            && !name.ends_with(REASON_SUFFIX)
            && !name.starts_with('.')
            && !name.ends_with(".tmp")
        {
            names.push(name);
        }
    }
    names.sort();
    std::fs::create_dir_all(export_dir).map_err(AdminError::io(export_dir))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let file = quarantine_dir.join(&name);
        let reason = quarantine_dir.join(format!("{name}{REASON_SUFFIX}"));
        let original = original_name(&reason).unwrap_or_else(|| name.clone());
        let (bytes, digest) = digest_of(&file)?;
        let mut into = export_dir.join(&original);
        let same = |p: &Path| digest_of(p).is_ok_and(|(_, d)| d == digest);
        if into.exists() && !same(&into) {
            into = export_dir.join(format!("{}_{original}", &digest[..12]));
        }
        if !(into.exists() && same(&into)) {
            write_atomic(&into, &bytes).map_err(AdminError::io(&into))?;
            sync_dir(export_dir);
        }
        let forgotten = store.forget_digest(&digest)?;
        std::fs::remove_file(&file).map_err(AdminError::io(&file))?;
        if let Err(e) = std::fs::remove_file(&reason) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(AdminError::io(&reason)(e));
            }
        }
        out.push(Reread {
            file,
            into,
            digest,
            forgotten,
            warning: None,
        });
    }
    sync_dir(quarantine_dir);
    Ok(out)
}

/// Forgets the digests of these export files so the agent reads them again. A file outside
/// every export folder is still forgotten, with a warning (the agent will not see it there).
pub fn files(
    store: &Store,
    files: &[PathBuf],
    export_dirs: &[PathBuf],
) -> Result<Vec<Reread>, AdminError> {
    let dirs: Vec<PathBuf> = export_dirs
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect();
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let (_, digest) = digest_of(file)?;
        let real = std::fs::canonicalize(file).map_err(AdminError::io(file))?;
        let warning = (!dirs.iter().any(|d| real.starts_with(d))).then(|| {
            format!(
                "{} is not in an export folder (ingest.export_dirs): the agent will not read it there",
                file.display()
            )
        });
        let forgotten = store.forget_digest(&digest)?;
        out.push(Reread {
            file: file.clone(),
            into: real,
            digest,
            forgotten,
            warning,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::store::{Message, Store};
    use record::{DeviceId, Rejection};

    /// A rejection for `bytes` read from `name`, as assemble queues it.
    fn rejection(name: &str, bytes: &[u8]) -> Message {
        Message::Rejection(Rejection {
            device_id: DeviceId::new("dev-1").unwrap(),
            source_file: name.into(),
            file_sha256: record::ids::sha256_hex(bytes),
            code: "no_template".into(),
            reason: "no layout fits".into(),
            quarantined_as: name.into(),
            at: chrono::Utc::now(),
        })
    }

    #[test]
    fn quarantined_files_go_back_under_their_original_names() {
        let dir = tempfile::tempdir().unwrap();
        let (q, exports) = (dir.path().join("q"), dir.path().join("exports"));
        std::fs::create_dir_all(&q).unwrap();
        std::fs::create_dir_all(&exports).unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 30).unwrap();
        // a.png: moved out of the export folder; b.png: still there (copy mode);
        // c.png: quarantined under a prefixed name, another c.png is in the export folder.
        for (qname, orig, bytes) in [
            ("a.png", "a.png", &b"aaa"[..]),
            ("b.png", "b.png", b"bbb"),
            ("0123456789ab_c.png", "c.png", b"ccc"),
        ] {
            std::fs::write(q.join(qname), bytes).unwrap();
            std::fs::write(
                q.join(format!("{qname}{REASON_SUFFIX}")),
                format!("file: {orig}\ncode: no_template\n"),
            )
            .unwrap();
            store.enqueue(&rejection(orig, bytes)).unwrap();
        }
        std::fs::write(exports.join("b.png"), b"bbb").unwrap();
        std::fs::write(exports.join("c.png"), b"other").unwrap();
        std::fs::write(q.join("d.png.tmp"), b"partial").unwrap();

        let done = quarantined(&store, &q, &exports).unwrap();
        assert_eq!(done.len(), 3);
        for r in &done {
            assert!(r.forgotten.taken, "{r:?}");
            assert!(!store.is_taken(&r.digest).unwrap());
            assert!(!r.file.exists(), "quarantine copy removed");
        }
        assert_eq!(std::fs::read(exports.join("a.png")).unwrap(), b"aaa");
        assert_eq!(std::fs::read(exports.join("b.png")).unwrap(), b"bbb");
        assert_eq!(std::fs::read(exports.join("c.png")).unwrap(), b"other");
        let c = &done[0];
        assert_eq!(std::fs::read(&c.into).unwrap(), b"ccc");
        assert!(c
            .into
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("_c.png"));
        let left: Vec<_> = std::fs::read_dir(&q)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("d.png.tmp")]);
        // The queued rejections are untouched.
        assert_eq!(store.backlog().messages, 3);
    }

    #[test]
    fn chosen_exports_are_forgotten_and_outsiders_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let exports = dir.path().join("exports");
        std::fs::create_dir_all(&exports).unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 30).unwrap();
        let inside = exports.join("e1.png");
        let outside = dir.path().join("elsewhere.png");
        std::fs::write(&inside, b"one").unwrap();
        std::fs::write(&outside, b"two").unwrap();
        store.enqueue(&rejection("e1.png", b"one")).unwrap();
        let key = inside.to_string_lossy();
        store
            .remember_seen(&key, 3, 1, &record::ids::sha256_hex(b"one"))
            .unwrap();

        let done = files(&store, &[inside.clone(), outside], &[exports]).unwrap();
        assert_eq!(
            done[0].forgotten,
            Forgotten {
                taken: true,
                seen: 1
            }
        );
        assert!(done[0].warning.is_none());
        assert!(!done[1].forgotten.taken);
        assert!(done[1]
            .warning
            .as_deref()
            .unwrap()
            .contains("not in an export folder"));
        assert!(store.seen_digest(&key, 3, 1).unwrap().is_none());
        assert!(files(&store, &[dir.path().join("missing.png")], &[]).is_err());
    }
}
