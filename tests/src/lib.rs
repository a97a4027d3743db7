//! Runs a whole examlink fleet as real processes: the hub (embedded broker, PostgreSQL), one
//! agent per simulated device, and the simulator dropping exports into each agent's folder.
//! Used by the demo (`examlink-demo`) and the end-to-end suite (`e2e/`).
//!
//! - [`bins`]: find the built `hub` and `agent` binaries.
//! - [`db`]: PostgreSQL databases for a run, and what the hub stored.
//! - [`pg`]: a private PostgreSQL server, for the scenarios that stop and start it.
//! - [`procs`]: hub and agent processes with their generated configs.
//! - [`feed`]: simulated devices writing exports (atomically) and their ground truth.
//! - [`score`]: the database compared with the ground truth.
//! - [`wine`]: the cross-built Windows agent under Wine.

pub mod bins;
pub mod db;
pub mod feed;
pub mod pg;
pub mod procs;
pub mod score;
pub mod wine;

/// Templates of the simulated devices (all six device types, both autoref firmwares), cycled
/// over the devices of a run.
pub const LAYOUTS: &[&str] = &[
    "autoref_fw2",
    "autoref_fw3",
    "tonometer_fw1",
    "tomographer_fw1",
    "biometer_fw1",
    "specular_fw1",
    "asoct_fw1",
];

/// Waits until something listens on 127.0.0.1:`port`, at most `timeout`.
pub fn wait_for_port(port: u16, timeout: std::time::Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

/// A free TCP port on 127.0.0.1 (bound, then released; the caller binds it again soon after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The repository root (templates/, models/ live there).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}
