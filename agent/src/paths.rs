//! paths: comparing folders as the device PC's file system does, and the platform's default
//! locations.
//!
//! On Windows, `C:\Exports`, `c:/exports\` and `\\?\C:\EXPORTS` are one folder, and
//! `\\?\UNC\device-pc\exports` is `\\device-pc\exports`; `Path::starts_with` compares
//! components case-sensitively and would call them apart, so a quarantine folder inside the
//! export share would slip past the configuration check. [`overlaps`] compares the way Win32
//! does there: case-insensitively, any separator, verbatim prefixes removed, `.` and `..`
//! resolved, trailing dots and spaces of a name ignored.

use std::path::{Path, PathBuf};

/// Whether one of `a` and `b` is inside the other (or they are the same folder).
pub fn overlaps(a: &Path, b: &Path) -> bool {
    if cfg!(windows) {
        windows_overlap(&a.to_string_lossy(), &b.to_string_lossy())
    } else {
        a.starts_with(b) || b.starts_with(a)
    }
}

/// [`overlaps`] for Windows path strings (on any platform, for tests and tools).
pub fn windows_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (windows_key(a), windows_key(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// A Windows path as comparable components: the root (`c:`, `\\server\share`) first, then the
/// names, lower-cased.
pub fn windows_key(path: &str) -> Vec<String> {
    let s = path.replace('/', "\\");
    let s = if let Some(rest) = s.strip_prefix(r"\\?\UNC\") {
        format!(r"\\{rest}")
    } else if let Some(rest) = s.strip_prefix(r"\\?\").or_else(|| s.strip_prefix(r"\\.\")) {
        rest.to_owned()
    } else {
        s
    };
    let mut out: Vec<String> = Vec::new();
    let rest = if let Some(unc) = s.strip_prefix(r"\\") {
        let mut parts = unc.splitn(3, '\\');
        let server = parts.next().unwrap_or_default();
        let share = parts.next().unwrap_or_default();
        out.push(format!(r"\\{server}\{share}").to_lowercase());
        parts.next().unwrap_or_default().to_owned()
    } else {
        match s.split_once('\\') {
            Some((drive, rest)) if drive.len() == 2 && drive.ends_with(':') => {
                out.push(drive.to_lowercase());
                rest.to_owned()
            }
            _ => s,
        }
    };
    let root = out.len();
    for name in rest.split('\\') {
        match name {
            "" | "." => {}
            ".." => {
                if out.len() > root {
                    out.pop();
                }
            }
            n => {
                let n = n.trim_end_matches(['.', ' ']);
                if !n.is_empty() {
                    out.push(n.to_lowercase());
                }
            }
        }
    }
    out
}

/// The agent's folder on Windows: `%ProgramData%\examlink` (configuration, outbox, logs,
/// secrets). The MSI's default configuration lives there, so does `agent -c`'s default.
pub fn program_data_dir() -> PathBuf {
    let base = std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
    base.join("examlink")
}

/// The configuration file `agent` reads without `-c`: `%ProgramData%\examlink\agent.toml` on
/// Windows, `agent.toml` in the working directory elsewhere.
pub fn default_config_file() -> PathBuf {
    if cfg!(windows) {
        program_data_dir().join("agent.toml")
    } else {
        PathBuf::from("agent.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_spellings_of_one_folder_overlap() {
        for (a, b) in [
            (r"C:\Exports", r"c:/exports/"),
            (r"C:\Exports", r"\\?\C:\EXPORTS\q"),
            (
                r"C:\ProgramData\examlink\exports",
                r"C:\PROGRAMDATA\Examlink\Exports\.\quarantine",
            ),
            (r"C:\a\b\..\exports", r"C:\A\EXPORTS"),
            (r"C:\Exports.", r"C:\exports\x"),
            (
                r"\\device-pc\exports",
                r"\\?\UNC\DEVICE-PC\Exports\quarantine",
            ),
            (r"\\device-pc\exports\sub", r"//Device-PC/exports"),
        ] {
            assert!(windows_overlap(a, b), "{a} and {b} should overlap");
            assert!(windows_overlap(b, a), "{b} and {a} should overlap");
        }
    }

    #[test]
    fn distinct_windows_folders_do_not_overlap() {
        for (a, b) in [
            (r"C:\Exports", r"C:\Exports2"),
            (r"C:\Exports", r"D:\Exports"),
            (r"\\device-pc\exports", r"\\device-pc\exports-old"),
            (r"\\device-pc\exports", r"\\other-pc\exports"),
            (
                r"C:\ProgramData\examlink\data",
                r"C:\ProgramData\examlink\exports",
            ),
        ] {
            assert!(!windows_overlap(a, b), "{a} and {b} should not overlap");
        }
    }

    #[test]
    fn dot_dot_does_not_climb_above_the_root() {
        assert_eq!(windows_key(r"C:\..\..\x"), ["c:", "x"]);
        assert_eq!(windows_key(r"\\srv\share\..\x"), [r"\\srv\share", "x"]);
    }

    #[test]
    fn unix_overlap_is_by_component() {
        assert!(overlaps(
            Path::new("/srv/exports"),
            Path::new("/srv/exports/q")
        ));
        if !cfg!(windows) {
            assert!(!overlaps(
                Path::new("/srv/exports"),
                Path::new("/srv/exports2")
            ));
            assert!(!overlaps(
                Path::new("/srv/Exports"),
                Path::new("/srv/exports")
            ));
        }
    }
}
