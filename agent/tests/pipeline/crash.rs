//! Crash test: the agent binary over a folder of a few hundred exports, killed with SIGKILL at
//! random moments at least 50 times and restarted each time. At the end the hub side must hold
//! exactly one distinct record id per export, none missing, and the outbox must be empty.
//!
//! `EXAMLINK_CRASH_KILLS` (default 50) and `EXAMLINK_CRASH_SEED` tune a run; the seed is
//! printed so a failure can be replayed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use record::DeviceId;

use crate::util::{self, Hub, Mosquitto};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Copies every sample export twice (the copy with a trailing comment byte sequence, which
/// image decoders ignore, so it is a different file with the same content): a few hundred
/// distinct exports. Returns their digests.
fn fill_exports(exports: &Path) -> BTreeSet<String> {
    let mut digests = BTreeSet::new();
    for s in util::sample_exports() {
        let bytes = std::fs::read(&s).unwrap();
        let name = s.file_name().unwrap().to_str().unwrap().to_owned();
        let mut copy = bytes.clone();
        copy.extend_from_slice(b"\n-- second export --\n");
        for (n, b) in [(name.clone(), bytes), (format!("copy_{name}"), copy)] {
            digests.insert(record::ids::sha256_hex(&b));
            std::fs::write(exports.join(n), b).unwrap();
        }
    }
    digests
}

fn spawn_agent(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("RUST_LOG", "info,agent::outbox=debug,agent::ingest=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the agent")
}

/// Asks the agent to stop (SIGTERM where there is one) and waits; true when it exited on its
/// own with success.
fn stop_agent(mut child: Child) -> bool {
    #[cfg(unix)]
    {
        let _sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..600 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _killed = child.kill();
    let _reaped = child.wait();
    false
}

/// How many times the agent logged that it finished starting.
fn starts(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|l| l.matches("Connected to the broker").count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_duplicates_nothing() {
    util::recognizer_assets();
    let kills = env_or("EXAMLINK_CRASH_KILLS", 50);
    let seed = env_or("EXAMLINK_CRASH_SEED", rand::random::<u32>().into());
    eprintln!("crash test: {kills} kills, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new(util::device_id("crash")).unwrap();
    let broker = Mosquitto::start(util::free_port());
    let hub = Hub::start(broker.port, &device).await;
    let mut config = util::config(dir.path(), device.as_str(), broker.port);
    config.recognize.workers = 2;
    let expected = fill_exports(&dir.path().join("exports"));
    assert!(
        expected.len() >= 200,
        "need a few hundred exports, have {}",
        expected.len()
    );
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let log = dir.path().join("agent.log");
    let dir_data = dir.path().join("data");

    for k in 0..kills {
        let before = starts(&log);
        let mut child = spawn_agent(&config_path, &log);
        // One kill in five lands anywhere in start-up; the others while the pipeline runs.
        if k % 5 != 0 {
            let up = tokio::time::Instant::now();
            while starts(&log) == before && up.elapsed() < Duration::from_secs(120) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let ms = rng.gen_range(0..3000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        child.kill().expect("SIGKILL");
        let _reaped = child.wait();
        if k % 10 == 9 {
            let seen = hub.seen.lock().unwrap().ids_by_digest.len();
            eprintln!(
                "after {} kills: {seen} of {} exports at the hub",
                k + 1,
                expected.len()
            );
        }
    }

    let child = spawn_agent(&config_path, &log);
    // Done: every export at the hub, then a later status report with an empty backlog (so the
    // receipts of the last records were applied too).
    let mut all_seen_at: Option<u64> = None;
    let start = tokio::time::Instant::now();
    loop {
        {
            let seen = hub.seen.lock().unwrap();
            if all_seen_at.is_none() && seen.ids_by_digest.len() == expected.len() {
                all_seen_at = Some(seen.statuses);
            }
            if let (Some(at), Some(status)) = (all_seen_at, &seen.status) {
                if seen.statuses > at && status.online && status.backlog == 0 {
                    break;
                }
            }
        }
        if start.elapsed() > Duration::from_secs(900) {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(40).collect();
            panic!(
                "not drained: {} of {} exports at the hub\nagent log (last lines, newest first):\n{}",
                hub.seen.lock().unwrap().ids_by_digest.len(),
                expected.len(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let graceful = stop_agent(child);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if std::env::var_os("EXAMLINK_KEEP_TMP").is_some() {
        eprintln!("keeping {}", dir.keep().display());
    }
    assert!(graceful, "the agent did not stop cleanly on SIGTERM");

    let seen = hub.seen.lock().unwrap();
    let got: BTreeSet<String> = seen.ids_by_digest.keys().cloned().collect();
    assert_eq!(
        got, expected,
        "every export, and nothing else, reached the hub"
    );
    for (digest, ids) in &seen.ids_by_digest {
        assert_eq!(
            ids.len(),
            1,
            "export {digest} arrived under {} ids: {ids:?}",
            ids.len()
        );
    }
    let data = dir_data.join(agent::OUTBOX_DIR);
    let store =
        agent::outbox::Store::open(&data, 1 << 30).expect("outbox reopens after the crashes");
    let left = store.batch(0..u64::MAX, usize::MAX).unwrap();
    let known: Vec<bool> = left
        .iter()
        .map(|p| seen.records.contains_key(&p.id))
        .collect();
    assert!(
        left.is_empty(),
        "outbox not drained: {} left (already at the hub: {known:?})",
        left.len()
    );
    assert!(
        !log_text.contains("panicked"),
        "the agent panicked:\n{log_text}"
    );
}
