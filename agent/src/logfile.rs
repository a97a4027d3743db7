//! logfile: the agent's log in a size-capped, rotated file (`[log]`), for a Windows service
//! (which has no console) and any install that wants its log on disk.
//!
//! `agent.log` grows to `log.max_bytes`; then it becomes `agent.1.log`, the previous `.1`
//! becomes `.2`, and so on up to `log.keep` old files; the oldest is deleted. So the log never
//! takes more than `(keep + 1) × max_bytes` (plus one line). A line is never split across files.
//! Write errors (a full disk) never stop the agent: the line is dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// `[log]`: where the agent logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log file; empty: standard error (a Windows service then logs to `logs\agent.log`
    /// beside its configuration file).
    pub file: PathBuf,
    /// A log file is rotated when it would grow past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`agent.1.log` … `agent.<keep>.log`).
    pub keep: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::new(),
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber: to `file` when given, else standard error. Without
/// `RUST_LOG`, the agent's own events at INFO and its dependencies' at WARN.
pub fn install(format: LogFormat, file: Option<RotatingFile>) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,agent=info,record=info,vision=info")
    });
    // Colours only for a terminal, never in a file.
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = match file {
        Some(f) => BoxMakeWriter::new(f),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    // A second install (tests) keeps the first subscriber.
    let _installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The lowest `log.max_bytes` accepted.
pub const MIN_LOG_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

/// A rotating log file; cheap to clone (one file shared by every writer).
#[derive(Debug, Clone)]
pub struct RotatingFile {
    inner: Arc<Mutex<Inner>>,
    dropped: Arc<AtomicU64>,
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating its folder.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                path: path.to_owned(),
                max_bytes: max_bytes.max(1),
                keep,
                file: Some(file),
                size,
            })),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Lines dropped because the file could not be written.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The name of rotated file `n` (`agent.log` → `agent.<n>.log`).
    pub fn rotated_name(path: &Path, n: u32) -> PathBuf {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "agent".into());
        let name = match path.extension() {
            Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
            None => format!("{stem}.{n}"),
        };
        path.with_file_name(name)
    }

    fn write_line(&self, buf: &[u8]) -> io::Result<()> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("log file lock poisoned"))?;
        if g.size > 0 && g.size + buf.len() as u64 > g.max_bytes {
            g.rotate()?;
        }
        if g.file.is_none() {
            g.file = Some(OpenOptions::new().create(true).append(true).open(&g.path)?);
            g.size = 0;
        }
        if let Some(f) = g.file.as_mut() {
            f.write_all(buf)?;
        }
        g.size += buf.len() as u64;
        Ok(())
    }
}

impl Inner {
    fn rotate(&mut self) -> io::Result<()> {
        // Windows cannot rename an open file: close it first.
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(not_found_ok)?;
        } else {
            let oldest = RotatingFile::rotated_name(&self.path, self.keep);
            std::fs::remove_file(&oldest).or_else(not_found_ok)?;
            for n in (1..self.keep).rev() {
                let from = RotatingFile::rotated_name(&self.path, n);
                let to = RotatingFile::rotated_name(&self.path, n + 1);
                std::fs::rename(&from, &to).or_else(not_found_ok)?;
            }
            std::fs::rename(&self.path, RotatingFile::rotated_name(&self.path, 1))
                .or_else(not_found_ok)?;
        }
        self.size = 0;
        Ok(())
    }
}

fn not_found_ok(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.write_line(buf).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingFile {
    type Writer = RotatingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rotates_at_the_cap_and_keeps_only_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/agent.log");
        let mut log = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..20 {
            // 30-byte lines: three fit in 100 bytes, the fourth rotates. One write per line,
            // as tracing's formatter does.
            let line = format!("line {i:02} {}\n", "x".repeat(21));
            log.write_all(line.as_bytes()).unwrap();
        }
        let logs = files(&dir.path().join("logs"));
        let names: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["agent.1.log", "agent.2.log", "agent.log"]);
        assert!(logs.iter().all(|(_, len)| *len <= 100), "{logs:?}");
        // The newest lines are in agent.log, the ones before in .1, then .2; older are gone.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with(&format!("line 19 {}\n", "x".repeat(21))));
        let one = std::fs::read_to_string(RotatingFile::rotated_name(&path, 1)).unwrap();
        let two = std::fs::read_to_string(RotatingFile::rotated_name(&path, 2)).unwrap();
        assert!(
            one.starts_with("line 15") && two.starts_with("line 12"),
            "{one} / {two}"
        );
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn appends_to_an_existing_log_and_counts_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        std::fs::write(&path, "x".repeat(90)).unwrap();
        let mut log = RotatingFile::open(&path, 100, 1).unwrap();
        log.write_all(b"0123456789ab\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0123456789ab\n");
        assert_eq!(
            std::fs::read_to_string(RotatingFile::rotated_name(&path, 1)).unwrap(),
            "x".repeat(90)
        );
    }

    #[test]
    fn a_line_longer_than_the_cap_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let mut log = RotatingFile::open(&path, 10, 0).unwrap();
        log.write_all(b"short\n").unwrap();
        log.write_all(b"a line of twenty-six bytes\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "a line of twenty-six bytes\n"
        );
        assert_eq!(files(dir.path()).len(), 1, "keep = 0: no rotated files");
    }

    #[test]
    fn rotated_names_keep_the_extension() {
        assert_eq!(
            RotatingFile::rotated_name(Path::new("/l/agent.log"), 3),
            PathBuf::from("/l/agent.3.log")
        );
        assert_eq!(
            RotatingFile::rotated_name(Path::new("/l/agent"), 1),
            PathBuf::from("/l/agent.1")
        );
    }
}
