//! latency-bench: how long from an export landing in a device PC's folder to its validated
//! result on the hub's live MQTT topic (`examlink/v1/results/#`), with real agents, the real hub
//! (embedded broker) and PostgreSQL on this machine. The seed's promise was "a result in under a
//! second per image, even with many images at once".
//!
//! Phases (each export is rendered first, then renamed into the agent's folder: the rename is
//! the moment it lands, `t0`):
//! - **idle**: one export in flight in the whole fleet, cycling over the seven layouts;
//! - **burst**: every device drops `--per-device` exports at once;
//! - **drain**: one agent takes `--drain` exports while the hub is down, then the hub starts and
//!   the backlog drains through it into PostgreSQL (rate from the records' `received_at`).
//!
//! Per export it splits the time with the record's own clocks (same machine, same clock):
//! pick-up (`captured_at - t0`: the settle time, the file must keep its size and time for
//! `ingest.settle_ms`), recognition (`recognized_at - captured_at`), delivery (result on the
//! topic - `recognized_at`: outbox, MQTT, hub validate, load, COMMIT, republish).
//!
//! Ratios against the physical ceiling measured in the same run: idle pick-up against the
//! configured settle time; the burst's makespan against the CPU bound (exports × the idle
//! median recognition time / cores).
//!
//! `latency-bench [--devices 50] [--per-device 20] [--idle 21] [--drain 300] [--settle-ms 2000]`

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use fleet::feed::{Device, Feed};
use fleet::procs::{Agent, Hub};
use fleet::{db, free_port, repo_root, wait_for_port, LAYOUTS};

/// The read-only account that watches the live results.
const VIEWER: &str = "bench-viewer";

#[derive(Debug, Parser)]
#[command(about = "Export landing → validated result on the live MQTT topic, idle and in a burst")]
struct Args {
    /// Devices (one agent each) for the burst.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Exports each device drops at once in the burst (0: no burst).
    #[arg(long, default_value_t = 20)]
    per_device: usize,
    /// Exports of the idle phase, one at a time (0: no idle phase).
    #[arg(long, default_value_t = 21)]
    idle: usize,
    /// Exports one agent takes while the hub is down, for the drain phase (0: no drain).
    #[arg(long, default_value_t = 300)]
    drain: usize,
    /// The agents' `ingest.settle_ms` (the agent's default is 2000).
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Working folder (removed at the end).
    #[arg(long, default_value = "var/latency-bench")]
    workdir: PathBuf,
}

/// A result seen on the live topic.
struct Seen {
    arrived: SystemTime,
    captured_at: DateTime<Utc>,
    recognized_at: DateTime<Utc>,
}

/// The live results, keyed by source file, read by a `mosquitto_sub` child.
struct Results {
    child: Child,
    rx: mpsc::Receiver<(String, Seen)>,
    seen: HashMap<String, Seen>,
}

impl Results {
    fn subscribe(hub: &Hub, password: &str) -> anyhow::Result<Self> {
        let mut child = Command::new("mosquitto_sub")
            .arg("--cafile")
            .arg(hub.ca_file())
            .args(["-h", "localhost", "-V", "mqttv311", "-q", "1"])
            .args(["-p", &hub.mqtt_port.to_string()])
            .args(["-i", VIEWER, "-u", VIEWER, "-P", password])
            .args(["-t", "examlink/v1/results/#"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto_sub (scripts/setup installs mosquitto-clients)")?;
        let out = child.stdout.take().context("mosquitto_sub stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let arrived = SystemTime::now();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let time = |k: &str| {
                    v[k].as_str()
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map(|t| t.with_timezone(&Utc))
                };
                let (Some(file), Some(captured_at), Some(recognized_at)) = (
                    v["source_file"].as_str(),
                    time("captured_at"),
                    time("recognized_at"),
                ) else {
                    continue;
                };
                let seen = Seen {
                    arrived,
                    captured_at,
                    recognized_at,
                };
                if tx.send((file.to_owned(), seen)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            rx,
            seen: HashMap::new(),
        })
    }

    /// Waits until every file of `files` has a result or was refused (its `<name>.reason.txt`
    /// in one of the `quarantines`), or `timeout`; returns the refused ones.
    fn wait_all(
        &mut self,
        files: &[String],
        quarantines: &[PathBuf],
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let refused = |f: &str| {
            quarantines
                .iter()
                .any(|q| q.join(format!("{f}.reason.txt")).is_file())
        };
        let mut last_look = Instant::now();
        loop {
            while let Ok((file, seen)) = self.rx.try_recv() {
                self.seen.insert(file, seen);
            }
            let open: Vec<&String> = files
                .iter()
                .filter(|f| !self.seen.contains_key(*f))
                .collect();
            if open.is_empty() {
                return Ok(vec![]);
            }
            // Refusals are looked for once a second (a listing per agent), results at once.
            if last_look.elapsed() >= Duration::from_secs(1) {
                last_look = Instant::now();
                if open.iter().all(|f| refused(f)) {
                    return Ok(open.into_iter().cloned().collect());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{} of {} exports have neither a result nor a quarantine entry after {timeout:?}",
                    open.len(),
                    files.len()
                );
            }
            if let Ok((file, seen)) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                self.seen.insert(file, seen);
            }
        }
    }
}

impl Drop for Results {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// An export rendered outside the agent's folder, and where it lands.
struct Staged {
    file: String,
    from: PathBuf,
    to: PathBuf,
}

/// Renders the next `n` exports of `dev` into its folder under `staging` (numbering goes on in
/// `dev`); they land in `dev.exports` when [`land`]ed.
fn stage(feed: &Feed, dev: &mut Device, staging: &Path, n: usize) -> anyhow::Result<Vec<Staged>> {
    let dir = staging.join(&dev.id);
    std::fs::create_dir_all(&dir)?;
    let mut rendering = Device {
        exports: dir.clone(),
        ..dev.clone()
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let file = feed.emit(&mut rendering)?;
        out.push(Staged {
            from: dir.join(&file),
            to: dev.exports.join(&file),
            file,
        });
    }
    dev.next = rendering.next;
    Ok(out)
}

/// Renames `s` into the export folder; returns when it landed.
fn land(s: &Staged) -> anyhow::Result<SystemTime> {
    let t0 = SystemTime::now();
    std::fs::rename(&s.from, &s.to).with_context(|| format!("landing {}", s.file))?;
    Ok(t0)
}

/// Seconds from `a` to `b` (negative when `b` is earlier).
fn secs(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn to_system(t: DateTime<Utc>) -> SystemTime {
    SystemTime::from(t)
}

/// The `p` quantile (nearest rank) of sorted `v`.
fn quantile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The four latencies of each landed export, in milliseconds, sorted per column.
struct Split {
    total: Vec<f64>,
    pickup: Vec<f64>,
    recognize: Vec<f64>,
    deliver: Vec<f64>,
}

fn split(landed: &[(String, SystemTime)], results: &Results) -> Split {
    let mut s = Split {
        total: vec![],
        pickup: vec![],
        recognize: vec![],
        deliver: vec![],
    };
    for (file, t0) in landed {
        let Some(r) = results.seen.get(file) else {
            continue;
        };
        let (cap, rec) = (to_system(r.captured_at), to_system(r.recognized_at));
        s.total.push(1e3 * secs(*t0, r.arrived));
        s.pickup.push(1e3 * secs(*t0, cap));
        s.recognize.push(1e3 * secs(cap, rec));
        s.deliver.push(1e3 * secs(rec, r.arrived));
    }
    for v in [
        &mut s.total,
        &mut s.pickup,
        &mut s.recognize,
        &mut s.deliver,
    ] {
        v.sort_by(f64::total_cmp);
    }
    s
}

fn print_split(name: &str, s: &Split) {
    println!(
        "{name}: {} exports                 p50_ms    p95_ms    p99_ms    max_ms",
        s.total.len()
    );
    for (what, v) in [
        ("landed -> live result", &s.total),
        ("  pick-up (settle)", &s.pickup),
        ("  recognition", &s.recognize),
        ("  delivery (outbox..republish)", &s.deliver),
    ] {
        println!(
            "  {what:<30} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            quantile(v, 0.5),
            quantile(v, 0.95),
            quantile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
}

/// The agent's Prometheus gauge `name` at `port`, if it answers.
fn agent_gauge(port: u16, name: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let database = format!("examlink_latency_{}", std::process::id());
    let workdir = args.workdir.clone();
    let result = run(&args, &database);
    let _dropped = db::drop_database(&database);
    let _removed = std::fs::remove_dir_all(&workdir);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latency-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, database: &str) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let devices = args.devices.max(LAYOUTS.len().min(args.idle.max(1)));
    let workdir = std::path::absolute(&args.workdir)?;
    let _removed = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir)?;
    db::drop_database(database)?;
    db::ensure_database(database).context("PostgreSQL is needed (scripts/setup)")?;
    let mut hub = Hub::new(
        &workdir.join("hub"),
        &db::url(database),
        "examlink",
        free_port()?,
        free_port()?,
    )?;
    let feed = Feed::new(&repo_root().join("templates"))?;
    let mut agents = Vec::new();
    let mut devs = Vec::new();
    let metrics_port = free_port()?;
    for i in 0..devices {
        let template = LAYOUTS[i % LAYOUTS.len()];
        let id = format!("lat-{i:02}");
        let password = hub.add_device(&id, template.split('_').next().unwrap_or(template))?;
        let dir = workdir.join(&id);
        let agent = Agent::new(&dir, &id, &password, hub.mqtt_port, &hub.ca_file())?;
        let config = std::fs::read_to_string(&agent.config)?.replace(
            "settle_ms = 300",
            &format!("settle_ms = {}", args.settle_ms),
        );
        // The drain phase's agent answers /metrics, so the bench knows when its backlog is full.
        let config = if i == 0 {
            format!("{config}\n[telemetry]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n")
        } else {
            config
        };
        std::fs::write(&agent.config, config)?;
        devs.push(Device::new(
            &id,
            template,
            &agent.exports,
            &dir.join("truth"),
        )?);
        agents.push(agent);
    }
    let viewer = hub.add_device(VIEWER, "reader")?;
    hub.proc.start()?;
    wait_for_port(hub.mqtt_port, Duration::from_secs(60)).context("the hub's broker")?;
    let mut results = Results::subscribe(&hub, &viewer)?;
    for a in &mut agents {
        a.proc.start()?;
    }
    println!(
        "latency-bench: {devices} agents, settle_ms {}, {cores} cores, hub with its embedded broker, PostgreSQL on this machine",
        args.settle_ms
    );

    // Warm-up: one export per device, not measured (model loading, first connections).
    let staging = workdir.join("staging");
    let mut warm = Vec::new();
    for d in &mut devs {
        for s in &stage(&feed, d, &staging, 1)? {
            land(s)?;
            warm.push(s.file.clone());
        }
    }
    let quarantines: Vec<PathBuf> = agents.iter().map(|a| a.quarantine.clone()).collect();
    results
        .wait_all(&warm, &quarantines, Duration::from_secs(600))
        .context("warm-up")?;

    let mut idle_recognize_ms = f64::NAN;
    if args.idle > 0 {
        let mut landed = Vec::new();
        for k in 0..args.idle {
            let i = k % LAYOUTS.len().min(devices);
            let staged = stage(&feed, &mut devs[i], &staging, 1)?;
            let t0 = land(&staged[0])?;
            let refused = results.wait_all(
                &[staged[0].file.clone()],
                &quarantines,
                Duration::from_secs(120),
            )?;
            if !refused.is_empty() {
                println!("  refused (quarantined, no result): {}", staged[0].file);
            }
            landed.push((staged[0].file.clone(), t0));
            std::thread::sleep(Duration::from_millis(500));
        }
        let s = split(&landed, &results);
        print_split("idle (one export in flight)", &s);
        idle_recognize_ms = quantile(&s.recognize, 0.5);
        println!(
            "  pick-up p50 / settle_ms = {:.2} (the file is taken once it kept its size and time for settle_ms)",
            quantile(&s.pickup, 0.5) / args.settle_ms as f64
        );
    }

    if args.per_device > 0 {
        let t = Instant::now();
        let mut staged = Vec::new();
        for d in &mut devs {
            staged.extend(stage(&feed, d, &staging, args.per_device)?);
        }
        println!(
            "burst: {} exports rendered in {:.1} s (before the clock starts)",
            staged.len(),
            t.elapsed().as_secs_f64()
        );
        let mut landed = Vec::with_capacity(staged.len());
        for s in &staged {
            landed.push((s.file.clone(), land(s)?));
        }
        let files: Vec<String> = landed.iter().map(|(f, _)| f.clone()).collect();
        let refused = results.wait_all(&files, &quarantines, Duration::from_secs(1800))?;
        let s = split(&landed, &results);
        print_split(
            &format!(
                "burst ({devices} devices x {} exports at once)",
                args.per_device
            ),
            &s,
        );
        if !refused.is_empty() {
            println!(
                "  refused (quarantined, no result): {} ({})",
                refused.len(),
                refused.join(", ")
            );
        }
        let first = landed
            .iter()
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(SystemTime::now());
        let last = files
            .iter()
            .filter_map(|f| results.seen.get(f))
            .map(|r| r.arrived)
            .max()
            .unwrap_or(first);
        let makespan = secs(first, last);
        let ceiling = files.len() as f64 * idle_recognize_ms / 1e3 / cores as f64;
        println!(
            "  makespan {makespan:.1} s; CPU bound {ceiling:.1} s ({} exports x {idle_recognize_ms:.0} ms idle recognition / {cores} cores); ratio bound/makespan {:.2}",
            files.len(),
            ceiling / makespan
        );
    }

    if args.drain > 0 {
        hub.proc.stop(Duration::from_secs(30));
        let staged = stage(&feed, &mut devs[0], &staging, args.drain)?;
        let since = Utc::now();
        for s in &staged {
            land(s)?;
        }
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let backlog = agent_gauge(metrics_port, "examlink_agent_backlog_messages");
            if backlog.is_some_and(|b| b >= args.drain as f64) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the drain agent's backlog reached only {backlog:?} of {}",
                    args.drain
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        hub.proc.start()?;
        let up = Instant::now();
        let up_at = Utc::now().timestamp_micros() as f64 / 1e6;
        wait_for_port(hub.mqtt_port, Duration::from_secs(60))?;
        let mut c = db::connect(database)?;
        // Epoch seconds (the driver here has no chrono support; float8 keeps microseconds).
        let since_epoch = since.timestamp_micros() as f64 / 1e6;
        let count = |c: &mut postgres::Client| -> anyhow::Result<(i64, Option<f64>, Option<f64>)> {
            let r = c.query_one(
                "SELECT count(*), extract(epoch FROM min(received_at))::float8, \
                 extract(epoch FROM max(received_at))::float8 FROM examlink.records \
                 WHERE device_id = $1 AND captured_at >= to_timestamp($2)",
                &[&devs[0].id, &since_epoch],
            )?;
            Ok((r.get(0), r.get(1), r.get(2)))
        };
        // Every queued message (records, and rejections of refused exports) receipted.
        loop {
            if agent_gauge(metrics_port, "examlink_agent_backlog_messages") == Some(0.0) {
                break;
            }
            if up.elapsed() > Duration::from_secs(600) {
                bail!("the drain agent's backlog did not empty in 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (n, first, last) = count(&mut c)?;
        let between = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let span = between(first, last);
        println!(
            "drain: {n} records queued while the hub was down, stored through the real hub and PostgreSQL: first to last stored {span:.2} s = {:.0} records/s (agent window 256, the default); hub start to all stored {:.1} s",
            (n - 1).max(0) as f64 / span.max(1e-3),
            between(Some(up_at), last)
        );
    }

    for a in &mut agents {
        a.proc.stop(Duration::from_secs(10));
    }
    hub.proc.stop(Duration::from_secs(10));
    Ok(())
}
