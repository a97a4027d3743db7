//! The Windows agent under Wine: where the cross-built `agent.exe` is, a Wine prefix ready to
//! run it, and Linux paths as Windows sees them (`/tmp/x` is `Z:\tmp\x`).
//!
//! The prefix (`$EXAMLINK_WINEPREFIX`, else `<target dir>/wine-prefix`) is made once. Wine 8
//! lacks `bcryptprimitives.dll`, whose `ProcessPrng` Rust's standard library calls at start;
//! the prefix gets the test-only shim (`packaging/windows/wine-shim`, built by
//! `scripts/windows-build`) as a native DLL in `system32`, where a real Windows has its own, so
//! `agent.exe` runs from anywhere in the prefix, the MSI's install folder included. Nothing
//! Wine-specific is in the shipped binary or packages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context};

/// The cargo target directory the test binary runs from (`<target>/debug/deps/…`), or
/// `$CARGO_TARGET_DIR`.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("locating the test binary")?;
    exe.ancestors()
        .find(|a| a.join("x86_64-pc-windows-gnu").is_dir() || a.join("CACHEDIR.TAG").is_file())
        .map(Path::to_owned)
        .context("no cargo target directory above the test binary")
}

/// The cross-built `agent.exe` (`$EXAMLINK_WINDOWS_AGENT`, else the release build of
/// `scripts/windows-build`).
pub fn agent_exe() -> anyhow::Result<PathBuf> {
    let p = match std::env::var_os("EXAMLINK_WINDOWS_AGENT") {
        Some(p) => PathBuf::from(p),
        None => target_dir()?.join("x86_64-pc-windows-gnu/release/agent.exe"),
    };
    if !p.is_file() {
        bail!(
            "{} missing: run scripts/windows-build (the Wine tests need the Windows agent)",
            p.display()
        );
    }
    Ok(p)
}

/// The packages of `scripts/windows-package` (`$EXAMLINK_DIST`, else `<target>/dist`).
pub fn dist_dir() -> anyhow::Result<PathBuf> {
    Ok(match std::env::var_os("EXAMLINK_DIST") {
        Some(p) => PathBuf::from(p),
        None => target_dir()?.join("dist"),
    })
}

/// The test-only `locker.exe` (holds a file open unshared; `scripts/windows-build`).
pub fn locker_exe() -> anyhow::Result<PathBuf> {
    let p = target_dir()?.join("wine-shim/locker.exe");
    if !p.is_file() {
        bail!("{} missing: run scripts/windows-build", p.display());
    }
    Ok(p)
}

/// `path` as Windows programs under Wine see it: `Z:` and backslashes.
pub fn win_path(path: &Path) -> String {
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    format!("Z:{}", abs.display()).replace('/', "\\")
}

/// A Wine prefix with the ProcessPrng shim.
#[derive(Debug, Clone)]
pub struct Prefix {
    /// `WINEPREFIX`.
    pub dir: PathBuf,
}

/// Prefixes this process has set up (each once: an earlier, killed run may have left a
/// wineserver behind, which is stopped first).
static INIT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl Prefix {
    /// The shared test prefix, made (and given the shim) at first use.
    pub fn shared() -> anyhow::Result<Self> {
        let dir = match std::env::var_os("EXAMLINK_WINEPREFIX") {
            Some(p) => PathBuf::from(p),
            None => target_dir()?.join("wine-prefix"),
        };
        Self::at(&dir)
    }

    /// A prefix at `dir`, made if missing (about 15 s), with the shim installed.
    pub fn at(dir: &Path) -> anyhow::Result<Self> {
        let mut done = INIT.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = Self {
            dir: dir.to_owned(),
        };
        if done.contains(&prefix.dir) {
            return Ok(prefix);
        }
        let _stale = prefix.command("wineserver").arg("-k").status();
        let system32 = dir.join("drive_c/windows/system32");
        if !system32.join("kernel32.dll").exists() {
            std::fs::create_dir_all(dir)?;
            let out = prefix
                .command("wineboot")
                .arg("-i")
                .output()
                .context("running wineboot (install wine64: scripts/setup)")?;
            if !system32.is_dir() {
                bail!(
                    "wineboot did not make {}: {}",
                    system32.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            prefix.wait_server();
        }
        let shim = target_dir()?.join("wine-shim/bcryptprimitives.dll");
        if !shim.is_file() {
            bail!(
                "{} missing: run scripts/windows-build (it builds the Wine-only shim)",
                shim.display()
            );
        }
        std::fs::copy(&shim, system32.join("bcryptprimitives.dll"))
            .context("installing the ProcessPrng shim into the prefix")?;
        done.push(prefix.dir.clone());
        Ok(prefix)
    }

    /// `program` (`wine`, `wineboot`, `wineserver`) with this prefix's environment: no debug
    /// channels, no Mono/Gecko prompts, the native shim preferred.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("WINEPREFIX", &self.dir)
            .env("WINEARCH", "win64")
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree=;mshtml=;bcryptprimitives=n,b")
            .env_remove("DISPLAY");
        c
    }

    /// `wine <args>` in this prefix.
    pub fn wine(&self) -> Command {
        self.command("wine")
    }

    /// `agent.exe recognize --templates <repo>/templates --model <repo>/models`, in this prefix,
    /// with the paths as Wine sees them; the files to read are added by the caller.
    pub fn recognize(&self, repo: &Path) -> anyhow::Result<Command> {
        let mut c = self.wine();
        c.arg(agent_exe()?)
            .arg("recognize")
            .arg("--templates")
            .arg(win_path(&repo.join("templates")))
            .arg("--model")
            .arg(win_path(&repo.join("models")));
        Ok(c)
    }

    /// Waits until the prefix's wineserver is idle and gone (after installs, before reading
    /// the registry files).
    pub fn wait_server(&self) {
        let _done = self.command("wineserver").arg("-w").status();
    }

    /// The environment [`Prefix::command`] sets, for processes started elsewhere.
    pub fn env(&self) -> Vec<(String, String)> {
        let c = self.command("wine");
        c.get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    }

    /// `C:\` of the prefix, as a Linux folder.
    pub fn drive_c(&self) -> PathBuf {
        self.dir.join("drive_c")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_paths_map_to_drive_z() {
        assert_eq!(win_path(Path::new("/tmp/a b/c.png")), r"Z:\tmp\a b\c.png");
    }
}
