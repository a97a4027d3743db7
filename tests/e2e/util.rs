//! The end-to-end harness: a fleet in a temp folder with its own PostgreSQL database (dropped
//! at the end), the real hub and agent binaries, simulated devices, and the final check that
//! every export is stored exactly once with every `ok` value equal to the truth.

use std::time::{Duration, Instant};

use fleet::feed::{Device, Feed};
use fleet::pg::PrivatePg;
use fleet::procs::{Agent, AgentOptions, Hub};
use fleet::{db, free_port, repo_root, score};

pub use fleet::LAYOUTS;

/// One fleet.
pub struct Run {
    pub db: String,
    /// Connection string of the run's database.
    pub url: String,
    /// The private PostgreSQL server of the run, when it has one (else the shared server).
    pub pg: Option<PrivatePg>,
    /// Keeps the run's folder alive until the run is dropped.
    _dir: tempfile::TempDir,
    pub hub: Hub,
    pub agents: Vec<Agent>,
    pub devices: Vec<Device>,
    pub feed: Feed,
    pub proxy: Option<crate::proxy::Proxy>,
}

impl Run {
    /// A hub and `n` agents (layouts cycled), nothing started; with `proxy`, agents reach the
    /// hub through a [`crate::proxy::Proxy`].
    pub fn new(name: &str, n: usize, opts: &AgentOptions, proxy: bool) -> Self {
        Self::build(name, n, opts, proxy, false, LAYOUTS)
    }

    /// As [`Run::new`] without a proxy, the devices cycling over `layouts` only.
    pub fn with_layouts(name: &str, n: usize, layouts: &[&str]) -> Self {
        Self::build(name, n, &AgentOptions::default(), false, false, layouts)
    }

    /// As [`Run::new`] without a proxy, with agent options, the devices cycling over `layouts`.
    pub fn with_options_and_layouts(
        name: &str,
        n: usize,
        opts: &AgentOptions,
        layouts: &[&str],
    ) -> Self {
        Self::build(name, n, opts, false, false, layouts)
    }

    /// As [`Run::new`], with the database on a private PostgreSQL server the run starts (and
    /// may stop and start again), never the shared one.
    pub fn with_private_pg(name: &str, n: usize) -> Self {
        Self::build(name, n, &AgentOptions::default(), false, true, LAYOUTS)
    }

    fn build(
        name: &str,
        n: usize,
        opts: &AgentOptions,
        proxy: bool,
        private: bool,
        layouts: &[&str],
    ) -> Self {
        let db = format!("examlink_e2e_{name}_{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = if private {
            let pg = PrivatePg::init(&dir.path().join("pg"), free_port().unwrap()).unwrap();
            pg.start().unwrap();
            let mut c = db::connect_url(&pg.url("postgres")).unwrap();
            c.batch_execute(&format!("CREATE DATABASE \"{db}\""))
                .unwrap();
            (pg.url(&db), Some(pg))
        } else {
            db::drop_database(&db).unwrap();
            db::ensure_database(&db).unwrap();
            (db::url(&db), None)
        };
        let hub = Hub::new(
            &dir.path().join("hub"),
            &url,
            "examlink",
            free_port().unwrap(),
            free_port().unwrap(),
        )
        .unwrap();
        let feed = Feed::new(&repo_root().join("templates")).unwrap();
        let proxy = proxy.then(|| crate::proxy::Proxy::start(hub.mqtt_port));
        let port = proxy.as_ref().map_or(hub.mqtt_port, |p| p.port);
        let mut agents = Vec::new();
        let mut devices = Vec::new();
        for i in 0..n {
            let template = layouts[i % layouts.len()];
            let id = format!("dev-{i:02}");
            let password = hub
                .add_device(&id, template.split('_').next().unwrap())
                .unwrap();
            let adir = dir.path().join(&id);
            let agent =
                Agent::with_options(&adir, &id, &password, port, &hub.ca_file(), opts).unwrap();
            devices.push(Device::new(&id, template, &agent.exports, &adir.join("truth")).unwrap());
            agents.push(agent);
        }
        Self {
            db,
            url,
            pg,
            _dir: dir,
            hub,
            agents,
            devices,
            feed,
            proxy,
        }
    }

    /// Starts the hub and waits for its broker.
    pub fn start_hub(&mut self) {
        self.hub.proc.start().unwrap();
        wait_until(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", self.hub.mqtt_port)).is_ok()
        })
        .unwrap_or_else(|| panic!("hub did not listen:\n{}", self.hub.proc.log()));
    }

    /// Starts every agent.
    pub fn start_agents(&mut self) {
        for a in &mut self.agents {
            a.proc.start().unwrap();
        }
    }

    /// Every device writes `k` more exports.
    pub fn emit(&mut self, k: usize) {
        for d in &mut self.devices {
            for _ in 0..k {
                self.feed.emit(d).unwrap();
            }
        }
    }

    /// Exports written so far.
    pub fn written(&self) -> u64 {
        self.devices.iter().map(|d| d.next).sum()
    }

    /// Distinct exports stored.
    pub fn stored(&self) -> u64 {
        let Ok(mut c) = self.client() else {
            return 0;
        };
        let q = "SELECT count(DISTINCT (device_id, source_file)) FROM examlink.records \
                 WHERE superseded_by IS NULL";
        c.query_one(q, &[])
            .map(|r| r.get::<_, i64>(0) as u64)
            .unwrap_or(0)
    }

    /// Exports an agent refused (quarantined and reported to the hub), with the reason.
    pub fn rejected(&self) -> Vec<(String, String, String)> {
        let Ok(mut c) = self.client() else {
            return Vec::new();
        };
        let q = "SELECT DISTINCT device_id, source_file, code || ': ' || reason \
                 FROM examlink.device_rejections ORDER BY 1, 2";
        c.query(q, &[])
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until every written export is accounted for at the hub (stored, or reported as
    /// rejected); panics with the logs after `timeout`, and when any export was rejected
    /// (a simulated export of a known layout must always be read).
    pub fn wait_all_stored(&mut self, timeout: Duration) {
        let want = self.written();
        let done = wait_until(timeout, || {
            self.stored() + self.rejected().len() as u64 >= want
        });
        let rejected = self.rejected();
        assert!(
            rejected.is_empty(),
            "{} exports rejected by the agents: {rejected:#?}",
            rejected.len()
        );
        if done.is_none() {
            panic!(
                "stored {} of {want} exports after {timeout:?}\n{}",
                self.stored(),
                self.logs()
            );
        }
    }

    /// The final check: exactly one record per export, none missing, every ok value right.
    pub fn check_exactly_once_and_truth(&self) -> score::Score {
        let mut c = self.client().unwrap();
        let dups = db::duplicates(&mut c, "examlink").unwrap();
        assert!(dups.is_empty(), "exports stored more than once: {dups:?}");
        let stored = db::measurements(&mut c, "examlink").unwrap();
        let mut total = score::Score::default();
        for d in &self.devices {
            let truth = fleet::feed::truth(&d.truth).unwrap();
            let mine: Vec<_> = stored
                .iter()
                .filter(|s| s.device_id == d.id)
                .cloned()
                .collect();
            let (sc, silent) = score::score(&truth, &mine);
            assert_eq!(
                sc.stored, sc.exports,
                "{}: stored {} of {} exports",
                d.id, sc.stored, sc.exports
            );
            assert!(
                silent.is_empty(),
                "{}: ok values differ from the truth: {silent:?}",
                d.id
            );
            total.add(&sc);
        }
        total
    }

    /// `hub --config <its config> args..`: exit success and output (stdout and stderr).
    pub fn hub_cli(&self, args: &[&str]) -> (bool, String) {
        let out = std::process::Command::new(fleet::bins::bin("hub").unwrap())
            .arg("--config")
            .arg(&self.hub.config)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// GET `path` on the hub's HTTPS listener (trusting its CA): status code and body.
    pub fn https_get(&self, path: &str) -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
            .arg(self.hub.ca_file())
            .arg(format!("https://127.0.0.1:{}{path}", self.hub.http_port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// A bearer token for `name` (`POST /api/token`).
    pub fn token(&self, name: &str, password: &str) -> String {
        let out = std::process::Command::new("curl")
            .args(["-s", "--fail", "--max-time", "10", "--cacert"])
            .arg(self.hub.ca_file())
            .args(["-d", &format!("name={name}"), "--data-urlencode"])
            .arg(format!("password={password}"))
            .arg(format!(
                "https://127.0.0.1:{}/api/token",
                self.hub.http_port
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "no token for {name}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// As [`Run::https_get`], with `Authorization: Bearer token`.
    pub fn https_get_as(&self, token: &str, path: &str) -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "30", "-w", "\n%{http_code}", "--cacert"])
            .arg(self.hub.ca_file())
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("https://127.0.0.1:{}{path}", self.hub.http_port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// One number from the run's database (`query` returns one bigint).
    pub fn count(&self, query: &str) -> i64 {
        let Ok(mut c) = self.client() else {
            return -1;
        };
        c.query_one(query, &[])
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    }

    /// A connection to the run's database.
    pub fn client(&self) -> anyhow::Result<postgres::Client> {
        db::connect_url(&self.url)
    }

    /// Every process's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut s = format!("--- hub ---\n{}", tail(&self.hub.proc.log()));
        for a in &self.agents {
            s += &format!("--- {} ---\n{}", a.device_id, tail(&a.proc.log()));
        }
        s
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.proc.kill9();
        }
        self.hub.proc.kill9();
        if self.pg.is_none() {
            db::drop_database(&self.db).ok();
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n") + "\n"
}

/// Replaces `from` (which must be there) by `to` in a config file.
pub fn rewrite(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Polls `cond` every 200 ms until it holds (Some) or `timeout` passes (None).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
