//! The hub and agent as real processes, each with a generated config in its own folder and
//! its output in `<dir>/<name>.log`.
//!
//! They run as they do out of the box: the hub makes its own TLS certificate at first start
//! (`<hub dir>/tls/ca.pem`, [`Hub::ca_file`]) and every agent connects with `mqtts://`,
//! trusting that CA. Tests that need another setup rewrite the generated config.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

use crate::bins::bin;

/// A running (or stopped) child process with its log file.
#[derive(Debug)]
pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Proc {
    fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        Self {
            name: name.into(),
            program,
            args,
            log,
            env: Vec::new(),
            child: None,
        }
    }

    /// Sets environment variables for the next starts.
    pub fn set_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        self.env.extend(vars);
    }

    /// Runs the program under `wrapper` from now on: `wrapper args.. program program-args..`
    /// (for example `faketime -m -f +3h`, an agent whose clock is hours fast).
    pub fn wrap(&mut self, wrapper: &str, args: &[&str]) {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.push(self.program.display().to_string());
        all.append(&mut self.args);
        self.args = all;
        self.program = PathBuf::from(wrapper);
    }

    /// Starts the process (appending to its log).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} already running", self.name);
        }
        let log = File::options().create(true).append(true).open(&self.log)?;
        // The binaries' own default filter (their events at INFO, dependencies at WARN) unless
        // the test run sets RUST_LOG.
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The child may have exited already; either way it is gone afterwards.
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Asks the process to stop (SIGTERM) and waits for it; kills it after `grace`.
    pub fn stop(&mut self, grace: std::time::Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .ok();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        c.kill().ok();
        c.wait().ok();
    }

    /// Whether it is running (false once it exited on its own).
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Resident memory of the running process in KiB (Linux `/proc`), if it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The hub with its embedded broker.
#[derive(Debug)]
pub struct Hub {
    /// The process.
    pub proc: Proc,
    /// Its config file.
    pub config: PathBuf,
    /// Embedded broker port.
    pub mqtt_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Schema holding its tables.
    pub schema: String,
}

impl Hub {
    /// Writes the hub's config into `dir` (PostgreSQL `db_url`, tables in `schema`).
    pub fn new(
        dir: &Path,
        db_url: &str,
        schema: &str,
        mqtt_port: u16,
        http_port: u16,
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let config = dir.join("hub.toml");
        let templates = crate::repo_root().join("templates");
        fs::write(
            &config,
            format!(
                "templates_dir = {templates:?}\n\n[subscribe]\nmode = \"embedded\"\n\n\
                 [subscribe.embedded]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\n\
                 [load]\nurl = {db_url:?}\nschema = {schema:?}\n\n\
                 [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
                 [tls]\ngenerate_dir = {:?}\n",
                dir.join("tls"),
            ),
        )?;
        // The hub would make its CA at its first start; make it now, as an installer does,
        // so agents that start while the hub is down (or before it) already trust it.
        if !dir.join("tls").join("ca.pem").exists() {
            hub::tls::generate(&dir.join("tls"), &[])?;
        }
        let args = vec![
            "--config".into(),
            config.display().to_string(),
            "run".into(),
        ];
        Ok(Self {
            proc: Proc::new("hub", bin("hub")?, args, dir.join("hub.log")),
            config,
            mqtt_port,
            http_port,
            schema: schema.into(),
        })
    }

    /// The CA file the hub generates at its first start (agents and HTTP clients trust it).
    pub fn ca_file(&self) -> PathBuf {
        self.config.with_file_name("tls").join("ca.pem")
    }

    /// Registers a device and returns its password (rotating it if the device exists).
    pub fn add_device(&self, id: &str, device_type: &str) -> anyhow::Result<String> {
        self.add_or_rotate(
            &["device", "add", id, "--type", device_type],
            &["device", "rotate", id],
        )
    }

    /// Creates a person's account with `role` and returns its password (rotating it if the
    /// user exists).
    pub fn add_user(&self, name: &str, role: &str) -> anyhow::Result<String> {
        self.add_or_rotate(
            &["user", "add", name, "--role", role],
            &["user", "rotate", name],
        )
    }

    fn add_or_rotate(&self, add: &[&str], rotate: &[&str]) -> anyhow::Result<String> {
        let run = |args: &[&str]| -> anyhow::Result<(bool, String)> {
            let out = Command::new(bin("hub")?)
                .arg("--config")
                .arg(&self.config)
                .args(args)
                .output()
                .with_context(|| format!("running hub {}", args.join(" ")))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok((out.status.success(), text))
        };
        let (ok, text) = run(add)?;
        let (ok, text) = if ok { (ok, text) } else { run(rotate)? };
        if !ok {
            bail!("hub {} failed: {text}", add.join(" "));
        }
        text.lines()
            .find_map(|l| {
                l.rsplit_once(": ")
                    .filter(|_| l.contains("password"))
                    .map(|(_, p)| p.trim().to_owned())
            })
            .with_context(|| format!("no password in hub output: {text}"))
    }
}

/// Test knobs for an agent's config.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `outbox.max_bytes` (disk quota of the backlog).
    pub outbox_max_bytes: u64,
    /// Run the cross-built `agent.exe` under Wine in this prefix ([`crate::wine`]), its
    /// configuration in Windows paths (`Z:\…`), instead of the Linux agent.
    pub windows: Option<crate::wine::Prefix>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            outbox_max_bytes: 2 << 30,
            windows: None,
        }
    }
}

/// One agent watching its own export folder.
#[derive(Debug)]
pub struct Agent {
    /// The process.
    pub proc: Proc,
    /// Device id.
    pub device_id: String,
    /// The folder the simulated device exports into.
    pub exports: PathBuf,
    /// Quarantine folder.
    pub quarantine: PathBuf,
    /// Its config file (tests may rewrite it before a start).
    pub config: PathBuf,
}

impl Agent {
    /// Writes the agent's config and password file into `dir`; it reaches the hub at
    /// `mqtts://127.0.0.1:mqtt_port`, trusting the CA in `ca_file` ([`Hub::ca_file`]).
    pub fn new(
        dir: &Path,
        device_id: &str,
        password: &str,
        mqtt_port: u16,
        ca_file: &Path,
    ) -> anyhow::Result<Self> {
        Self::with_options(
            dir,
            device_id,
            password,
            mqtt_port,
            ca_file,
            &AgentOptions::default(),
        )
    }

    /// As [`Agent::new`], with test knobs.
    pub fn with_options(
        dir: &Path,
        device_id: &str,
        password: &str,
        mqtt_port: u16,
        ca_file: &Path,
        opts: &AgentOptions,
    ) -> anyhow::Result<Self> {
        let exports = dir.join("exports");
        let quarantine = dir.join("quarantine");
        fs::create_dir_all(&exports)?;
        let password_file = dir.join("password");
        fs::write(&password_file, password)?;
        let root = crate::repo_root();
        let config = dir.join("agent.toml");
        // Paths as the agent's platform spells them.
        let p = |path: &Path| match &opts.windows {
            Some(_) => crate::wine::win_path(path),
            None => path.display().to_string(),
        };
        fs::write(
            &config,
            format!(
                "device_id = {device_id:?}\ndata_dir = {:?}\n\n\
                 [ingest]\nexport_dirs = [{:?}]\nsettle_ms = 300\nrescan_secs = 2\n\n\
                 [recognize]\ntemplates_dir = {:?}\nmodel_path = {:?}\n\n\
                 [quarantine]\ndir = {:?}\n\n\
                 [outbox]\nresend_after_secs = 5\nmax_bytes = {max_bytes}\n\n\
                 [publish]\nbroker_url = \"mqtts://127.0.0.1:{mqtt_port}\"\npassword_file = {:?}\n\
                 tls_ca_file = {:?}\n\
                 reconnect_min_ms = 100\nreconnect_max_ms = 2000\nstatus_every_secs = 5\n",
                p(&dir.join("data")),
                p(&exports),
                p(&root.join("templates")),
                p(&root.join("models")),
                p(&quarantine),
                p(&password_file),
                p(ca_file),
                max_bytes = opts.outbox_max_bytes,
            ),
        )?;
        let (program, mut args, env) = match &opts.windows {
            Some(prefix) => (
                PathBuf::from("wine"),
                vec![crate::wine::agent_exe()?.display().to_string()],
                prefix.env(),
            ),
            None => (bin("agent")?, Vec::new(), Vec::new()),
        };
        args.extend(["--config".into(), p(&config), "run".into()]);
        let mut proc = Proc::new(device_id, program, args, dir.join("agent.log"));
        proc.set_env(env);
        Ok(Self {
            proc,
            device_id: device_id.into(),
            exports,
            quarantine,
            config,
        })
    }
}
