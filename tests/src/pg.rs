//! A private PostgreSQL instance for the scenarios that stop and start the database: its own
//! data directory (`initdb`) on a free port, run with `pg_ctl`, never the shared server.
//!
//! The server binaries come from `EXAMLINK_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
//! PostgreSQL refuses to run as root, so as root the instance runs as the `postgres` user
//! (through `runuser`), with its folder handed to that user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context};

/// A private PostgreSQL server (stopped on drop).
#[derive(Debug)]
pub struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
}

fn find_bin() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("EXAMLINK_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: set EXAMLINK_PG_BIN to the server's bin folder")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .context("no initdb under /usr/lib/postgresql/*/bin: set EXAMLINK_PG_BIN")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePg {
    /// Initialises a cluster under `dir` (created) for port `port`, trust auth on 127.0.0.1.
    pub fn init(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let bin = find_bin()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let as_postgres = is_root();
        if as_postgres {
            // The data folder and every folder above it inside the run must be reachable.
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()?;
            if !st.success() {
                bail!("chown {} to postgres failed", dir.display());
            }
            let mut p = dir.parent();
            while let Some(d) = p {
                Command::new("chmod").arg("o+x").arg(d).status().ok();
                p = d.parent();
            }
        }
        let pg = Self {
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            bin,
            port,
            as_postgres,
        };
        let data = pg.data.to_string_lossy().into_owned();
        pg.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )?;
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = on\n"
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data.join("postgresql.conf"))?;
        std::io::Write::write_all(&mut f, conf.as_bytes())?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<Output> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> anyhow::Result<()> {
        let (data, log) = (
            self.data.to_string_lossy().into_owned(),
            self.log.to_string_lossy().into_owned(),
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
        )?;
        Ok(())
    }

    /// Stops the server (`fast`: connections are cut, what was committed stays).
    pub fn stop(&self) -> anyhow::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])?;
        Ok(())
    }

    /// Connection string for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        // Best effort: the server may already be stopped.
        let _stopped = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
