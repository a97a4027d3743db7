//! Quarantine: a bad export is copied into `quarantine.dir` with a `<name>.reason.txt` beside it
//! (file, digest, code, reason, time), both written to a temporary name, fsynced and renamed,
//! so a crash leaves either nothing or complete files. In `move` mode the original is deleted
//! later, by the outbox stage, once the rejection is durably queued; in `copy` mode (default)
//! the export folder is left alone.
//!
//! Names: `<name>`; when a different file of that name is already there,
//! `<first 12 hex digits of its sha256>_<name>`.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::build::Refusal;
use crate::ingest::Taken;

/// `[quarantine]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Where bad exports go. Must not be inside an export folder.
    pub dir: PathBuf,
    /// `copy` (leave the export folder alone) or `move`.
    pub mode: QuarantineMode,
}

/// Whether a quarantined export leaves the export folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineMode {
    /// Copy it; the original stays.
    Copy,
    /// Copy it, then delete the original once the rejection is queued.
    Move,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("quarantine"),
            mode: QuarantineMode::Copy,
        }
    }
}

/// Suffix of the reason file written beside each quarantined export.
pub const REASON_SUFFIX: &str = ".reason.txt";

/// Puts `taken` in quarantine with the reason file. Returns the quarantined file's path.
pub fn quarantine(
    dir: &Path,
    taken: &Taken,
    refusal: &Refusal,
    at: DateTime<Utc>,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = sanitize(&taken.file_name);
    let mut target = dir.join(&name);
    if target.exists() && !same_content(&target, taken)? {
        let prefix = taken.sha256.get(..12).unwrap_or("unknown");
        target = dir.join(format!("{prefix}_{name}"));
    }
    match &taken.bytes {
        Some(bytes) => write_atomic(&target, bytes)?,
        None => {
            // Too large to hold in memory: copy from the source.
            let tmp = tmp_name(&target);
            std::fs::copy(&taken.path, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &target)?;
        }
    }
    let reason = format!(
        "file: {}\nsource: {}\nsha256: {}\nsize: {}\ncode: {}\nreason: {}\nat: {}\n",
        taken.file_name,
        taken.path.display(),
        taken.sha256,
        taken.size,
        refusal.code,
        refusal.reason,
        at.to_rfc3339(),
    );
    let mut reason_path = target.clone().into_os_string();
    reason_path.push(REASON_SUFFIX);
    write_atomic(Path::new(&reason_path), reason.as_bytes())?;
    sync_dir(dir);
    Ok(target)
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_control() || "/\\:".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "unnamed".into()
    } else {
        s
    }
}

fn same_content(path: &Path, taken: &Taken) -> std::io::Result<bool> {
    let bytes = std::fs::read(path)?;
    Ok(record::ids::sha256_hex(&bytes) == taken.sha256)
}

fn tmp_name(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `bytes` to `target` through a `<target>.tmp` that is fsynced and renamed, so a crash
/// leaves either nothing or the whole file.
pub(crate) fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_name(target);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, target)
}

/// Makes the renames durable where the platform allows opening a directory.
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _synced = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(dir: &Path, name: &str, bytes: &[u8]) -> Taken {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        Taken {
            path,
            file_name: name.into(),
            sha256: record::ids::sha256_hex(bytes),
            bytes: Some(bytes.to_vec()),
            size: bytes.len() as u64,
            captured_at: Utc::now(),
        }
    }

    #[test]
    fn writes_copy_and_reason_and_keeps_different_files_apart() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("q");
        let r = Refusal::new("not_an_image", "not an image");
        let a = taken(d.path(), "a.png", b"one");
        let p = quarantine(&q, &a, &r, Utc::now()).unwrap();
        assert_eq!(p, q.join("a.png"));
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let reason = std::fs::read_to_string(q.join("a.png.reason.txt")).unwrap();
        assert!(reason.contains("code: not_an_image"), "{reason}");
        assert!(a.path.exists(), "copy mode leaves the original");
        // Same content again: same place. Different content, same name: prefixed.
        assert_eq!(quarantine(&q, &a, &r, Utc::now()).unwrap(), p);
        let b = taken(&d.path().join("q").join(".."), "a.png", b"two");
        let pb = quarantine(&q, &b, &r, Utc::now()).unwrap();
        assert_ne!(pb, p);
        assert_eq!(std::fs::read(&pb).unwrap(), b"two");
    }
}
