//! The whole examlink pipeline on simulated devices, in one command (`scripts/demo`):
//! the hub with its embedded broker and a local PostgreSQL database, one agent per simulated
//! device (all six device types, both autoref firmwares), and the simulator dropping exports
//! into each agent's folder. Progress is printed per device; Ctrl-C stops everything cleanly,
//! and running it again continues where it stopped (nothing is stored twice).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fleet::feed::{Device, Feed};
use fleet::procs::{Agent, Hub};
use fleet::{db, free_port, repo_root, score, wait_for_port};

/// The read-only account the printed `mosquitto_sub` line uses.
const VIEWER: &str = "viewer";
/// The person's account (role reader) the printed API lines and the status page use.
const READER: &str = "demo";
/// The person's account (role reviewer) for the review station.
const REVIEWER: &str = "reviewer";

/// One device per layout: (device id, template).
const DEVICES: &[(&str, &str)] = &[
    ("autoref-01", "autoref_fw2"),
    ("autoref-02", "autoref_fw3"),
    ("tonometer-01", "tonometer_fw1"),
    ("tomographer-01", "tomographer_fw1"),
    ("biometer-01", "biometer_fw1"),
    ("specular-01", "specular_fw1"),
    ("asoct-01", "asoct_fw1"),
];

#[derive(Debug, Parser)]
#[command(about = "Run the whole examlink pipeline on simulated devices")]
struct Args {
    /// Exports per minute per device.
    #[arg(long, default_value_t = 20.0)]
    rate_per_min: f64,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Working folder (configs, export folders, outboxes, logs, ground truth).
    #[arg(long, default_value = "var/demo")]
    workdir: PathBuf,
    /// PostgreSQL database (created if missing; connection base from EXAMLINK_PG).
    #[arg(long, default_value = "examlink_demo")]
    database: String,
    /// Embedded broker port (0: a free port, so it never collides with a broker on 1883).
    #[arg(long, default_value_t = 0)]
    mqtt_port: u16,
    /// HTTP status page port (0: a free port).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
    /// Share of exports drawn harder than the documented variation (more blur and noise, a
    /// JPEG re-encode: `examlink-sim render --stress ink`), so that flagged fields reach the
    /// review station. 0 reads only documented exports.
    #[arg(long, default_value_t = 0.3)]
    review_rate: f64,
}

/// The password kept in `file` from an earlier run, or a new account's (`make`), then kept.
fn account(
    file: &std::path::Path,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(p) if !p.trim().is_empty() => Ok(p.trim().to_owned()),
        _ => {
            let p = make()?;
            std::fs::write(file, &p)?;
            Ok(p)
        }
    }
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("examlink-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let workdir = std::path::absolute(&args.workdir)?;
    std::fs::create_dir_all(&workdir)?;
    db::ensure_database(&args.database).with_context(|| {
        format!(
            "PostgreSQL is needed at {} (set EXAMLINK_PG=\"host=... user=...\" to point at another server)",
            db::base_url()
        )
    })?;
    let mqtt_port = if args.mqtt_port == 0 {
        free_port()?
    } else {
        args.mqtt_port
    };
    let http_port = if args.http_port == 0 {
        free_port()?
    } else {
        args.http_port
    };
    let mut hub = Hub::new(
        &workdir.join("hub"),
        &db::url(&args.database),
        "examlink",
        mqtt_port,
        http_port,
    )?;

    let templates = repo_root().join("templates");
    let feed = Feed::new(&templates)?.with_hard_share(&templates, args.review_rate)?;
    let mut agents = Vec::new();
    let mut devices = Vec::new();
    for (id, template) in DEVICES {
        let dir = workdir.join(id);
        let pw_file = dir.join("password");
        let password = match std::fs::read_to_string(&pw_file) {
            Ok(p) if !p.trim().is_empty() => p.trim().to_owned(),
            _ => hub.add_device(id, template.split('_').next().unwrap_or(template))?,
        };
        std::fs::create_dir_all(&dir)?;
        let agent = Agent::new(&dir, id, &password, mqtt_port, &hub.ca_file())?;
        devices.push(Device::new(
            id,
            template,
            &agent.exports,
            &dir.join("truth"),
        )?);
        agents.push(agent);
    }

    // A read-only account for watching the live results (it may publish nothing), a person's
    // account for the API and the status page, and one for the review station.
    let viewer = account(&workdir.join("viewer-password"), || {
        hub.add_device(VIEWER, "reader")
    })?;
    let reader = account(&workdir.join("reader-password"), || {
        hub.add_user(READER, "reader")
    })?;
    let reviewer = account(&workdir.join("reviewer-password"), || {
        hub.add_user(REVIEWER, "reviewer")
    })?;

    hub.proc.start()?;
    wait_for_port(mqtt_port, Duration::from_secs(30))
        .context("waiting for the hub's broker (see var/demo/hub/hub.log)")?;
    for a in &mut agents {
        a.proc.start()?;
    }
    let ca = hub.ca_file();
    let ca = ca.display();
    println!("examlink demo: hub broker on mqtts://127.0.0.1:{mqtt_port}, status page https://127.0.0.1:{http_port}/ (TLS with the hub's own CA {ca})");
    println!("  log in as {READER} / {reader}");
    println!(
        "  review station: https://127.0.0.1:{http_port}/review, log in as {REVIEWER} / {reviewer} \
         ({:.0}% of exports are drawn harder, so flagged fields arrive there)",
        args.review_rate * 100.0
    );
    println!(
        "                  also there: patients to match (/review/patients), blind checks of 0.5% of the ok fields (/review/blind), the ok-but-wrong estimate (/review/quality)"
    );
    println!(
        "  records API:   TOKEN=$(curl -s --cacert {ca} -d name={READER} --data-urlencode 'password={reader}' https://127.0.0.1:{http_port}/api/token)"
    );
    println!(
        "                 curl --cacert {ca} -H \"Authorization: Bearer $TOKEN\" 'https://127.0.0.1:{http_port}/api/records?limit=5'"
    );
    println!(
        "  live results:  mosquitto_sub --cafile {ca} -h localhost -p {mqtt_port} -V mqttv311 -i {VIEWER} -u {VIEWER} -P '{viewer}' -t 'examlink/v1/results/#' -v"
    );
    println!(
        "  logs and data: {}   (Ctrl-C stops everything)\n",
        workdir.display()
    );

    let period = Duration::from_secs_f64(60.0 / args.rate_per_min.max(0.01));
    let started = Instant::now();
    let mut next_emit = Instant::now();
    let mut next_report = Instant::now();
    let mut client = db::connect(&args.database)?;
    while !stop.load(Ordering::SeqCst) {
        if args.duration_secs > 0 && started.elapsed() >= Duration::from_secs(args.duration_secs) {
            break;
        }
        if Instant::now() >= next_emit {
            for d in &mut devices {
                feed.emit(d)?;
            }
            next_emit += period;
        }
        if Instant::now() >= next_report {
            report(&mut client, &devices)?;
            next_report += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("\nstopping agents and hub...");
    for a in &mut agents {
        a.proc.stop(Duration::from_secs(10));
    }
    hub.proc.stop(Duration::from_secs(10));
    report(&mut client, &devices)?;
    Ok(())
}

fn report(client: &mut postgres::Client, devices: &[Device]) -> anyhow::Result<()> {
    let stored = db::measurements(client, "examlink").unwrap_or_default();
    let backlog: BTreeMap<String, i64> = client
        .query(
            "SELECT device_id, coalesce(backlog, 0) FROM examlink.devices",
            &[],
        )
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default();
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
        "device", "exports", "stored", "review", "backlog", "accuracy", "silent"
    );
    let mut total = score::Score::default();
    for d in devices {
        let truth = fleet::feed::truth(&d.truth)?;
        let mine: Vec<_> = stored
            .iter()
            .filter(|s| s.device_id == d.id)
            .cloned()
            .collect();
        let (sc, _) = score::score(&truth, &mine);
        println!(
            "{:<16} {:>8} {:>8} {:>8} {:>8} {:>8.2}% {:>7}",
            d.id,
            sc.exports,
            sc.stored,
            sc.review,
            backlog.get(&d.id).copied().unwrap_or(0),
            100.0 * sc.accuracy(),
            sc.silent
        );
        total.add(&sc);
    }
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>8.2}% {:>7}\n",
        "all",
        total.exports,
        total.stored,
        total.review,
        "",
        100.0 * total.accuracy(),
        total.silent
    );
    Ok(())
}
