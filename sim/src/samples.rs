//! The shared sample exports (the *development set*: real exports with hand-checked labels,
//! `<layout>/<stem>.<png|jpg|bmp>` beside `<stem>.json`): where they are, and what a test does
//! when they are not there. The one place every test, tool and script follows.
//!
//! Where: `$EXAMLINK_SAMPLES` when set, else `../shared/devices` beside the checkout (relative
//! to the workspace root this crate was built from). Nothing else: no machine paths.
//!
//! Missing input fails: a test that needs the samples (or another input that is not committed)
//! panics with what is missing and how to provide it, unless `EXAMLINK_ALLOW_SKIP=1` is set;
//! then it prints `SKIPPED: <test>: <why>` to stderr and returns without testing.

use std::path::{Path, PathBuf};

/// Environment variable naming the samples folder.
pub const SAMPLES_ENV: &str = "EXAMLINK_SAMPLES";
/// Environment variable that lets tests skip (print `SKIPPED`) instead of failing when an input
/// is missing. Only `1` counts.
pub const ALLOW_SKIP_ENV: &str = "EXAMLINK_ALLOW_SKIP";

/// The workspace root (the checkout).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sim/ has a parent")
        .to_owned()
}

/// The samples folder: `$EXAMLINK_SAMPLES`, else `<checkout>/../shared/devices`; `Err` says
/// where it looked when that folder does not exist.
pub fn locate() -> Result<PathBuf, String> {
    let (dir, from) = match std::env::var_os(SAMPLES_ENV) {
        Some(d) => (PathBuf::from(d), SAMPLES_ENV.to_owned()),
        None => (
            workspace_root().join("../shared/devices"),
            "../shared/devices beside the checkout".to_owned(),
        ),
    };
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "no shared device samples at {} ({from}); set {SAMPLES_ENV} to the device catalog folder",
            dir.display()
        ))
    }
}

/// Whether `EXAMLINK_ALLOW_SKIP=1` is set.
pub fn skipping_allowed() -> bool {
    std::env::var_os(ALLOW_SKIP_ENV).is_some_and(|v| v == "1")
}

/// For a test that cannot run because `why`: prints `SKIPPED: test: why` when skipping is
/// allowed, and panics with `why` otherwise.
///
/// # Panics
/// Unless `EXAMLINK_ALLOW_SKIP=1`: a missing input is a failure.
pub fn skip_or_fail(test: &str, why: &str) {
    if skipping_allowed() {
        eprintln!("SKIPPED: {test}: {why}");
    } else {
        panic!("{test}: {why} (set {ALLOW_SKIP_ENV}=1 to skip tests whose inputs are missing)");
    }
}

/// The samples folder for `test`, or `None` after [`skip_or_fail`] allowed a skip.
///
/// # Panics
/// When the samples are missing and skipping is not allowed.
pub fn required(test: &str) -> Option<PathBuf> {
    match locate() {
        Ok(d) => Some(d),
        Err(why) => {
            skip_or_fail(test, &why);
            None
        }
    }
}

/// Every labelled export under `dir` (recursively), sorted: image path and label path.
pub fn labelled_exports(dir: &Path) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let ext = p
                .extension()
                .and_then(|x| x.to_str())
                .map(str::to_ascii_lowercase);
            if matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "bmp")) {
                let label = p.with_extension("json");
                if label.is_file() {
                    out.push((p, label));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_exports_pair_images_with_labels_only() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("autoref_fw2");
        std::fs::create_dir_all(&sub).unwrap();
        for f in ["a.png", "a.json", "b.jpg", "c.txt", "c.json"] {
            std::fs::write(sub.join(f), b"x").unwrap();
        }
        let got = labelled_exports(d.path()).unwrap();
        assert_eq!(got, vec![(sub.join("a.png"), sub.join("a.json"))]);
    }
}
