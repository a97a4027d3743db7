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
