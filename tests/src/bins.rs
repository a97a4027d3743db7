//! Locating the `hub` and `agent` binaries: `EXAMLINK_BIN_DIR`, else the cargo profile
//! directory this program runs from (`target/<profile>/` or its `deps/`).

use std::path::PathBuf;

use anyhow::{bail, Context};

/// The path of binary `name` (`hub`, `agent`), built by `cargo build -p <name>`.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("EXAMLINK_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    for dir in exe.ancestors().skip(1).take(2) {
        dirs.push(dir.to_path_buf());
    }
    for d in &dirs {
        let p = d.join(&file);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("binary {file} not found in {dirs:?}: build it first (cargo build -p {name})")
}
