//! End-to-end fault suite: real agent and hub binaries, real PostgreSQL, real MQTT. Each
//! scenario ends by comparing the database with the simulator's ground truth: every export
//! stored exactly once, every ok value equal to the truth.
//!
//! Needs the binaries built (`cargo build -p hub -p agent`; `scripts/test` does it),
//! PostgreSQL on 127.0.0.1:5432 (or `EXAMLINK_PG`). Longer soak variants:
//! `EXAMLINK_SOAK=1 cargo test -p fleet --test e2e -- --ignored`.

mod fhir;
mod lossless;
mod proxy;
mod security;
mod util;
mod wine;

use std::time::Duration;

use fleet::procs::AgentOptions;
use rand::{Rng, SeedableRng};
use util::{wait_until, Run};

const STORE_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn every_device_type_end_to_end() {
    let mut run = Run::new(
        "pipeline",
        util::LAYOUTS.len(),
        &AgentOptions::default(),
        false,
    );
    run.start_hub();
    run.start_agents();
    run.emit(3);
    run.wait_all_stored(STORE_TIMEOUT);
    let s = run.check_exactly_once_and_truth();
    eprintln!("pipeline: {s:?}, accuracy {:.4}", s.accuracy());
}

fn kill_loop(rounds: usize, devices: usize) {
    let mut run = Run::new(
        &format!("kill{rounds}"),
        devices,
        &AgentOptions::default(),
        false,
    );
    run.start_hub();
    run.start_agents();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for round in 0..rounds {
        run.emit(2);
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..1500)));
        let who = round % 3;
        if who != 1 {
            run.hub.proc.kill9();
        }
        if who != 0 {
            let i = rng.gen_range(0..run.agents.len());
            run.agents[i].proc.kill9();
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
        if !run.hub.proc.running() {
            run.start_hub();
        }
        for a in &mut run.agents {
            if !a.proc.running() {
                a.proc.start().unwrap();
            }
        }
    }
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
}

#[test]
fn kill9_of_hub_agents_and_both_repeatedly() {
    kill_loop(9, 3);
}

#[test]
#[ignore = "soak: EXAMLINK_SOAK=1 cargo test -p fleet --test e2e -- --ignored"]
fn kill9_soak() {
    kill_loop(60, 7);
}

#[test]
fn broker_unreachable_then_back_drains_backlog() {
    let mut run = Run::new("offline", 2, &AgentOptions::default(), false);
    run.start_agents();
    run.emit(6);
    // Agents take and recognise while the hub is down: the backlog sits in their outboxes.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(run.stored(), 0);
    run.start_hub();
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
}

#[test]
fn postgres_stopped_for_a_while_then_back() {
    let mut run = Run::with_private_pg("pgdown", 2);
    run.start_hub();
    run.start_agents();
    run.emit(2);
    run.wait_all_stored(STORE_TIMEOUT);
    // The database goes away in the middle of a stream: the hub stops taking work and retries,
    // the agents keep everything in their outboxes.
    run.pg.as_ref().unwrap().stop().unwrap();
    run.emit(3);
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        run.hub.proc.running(),
        "the hub must ride out a database outage\n{}",
        run.logs()
    );
    run.pg.as_ref().unwrap().start().unwrap();
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
}

#[test]
fn network_cut_after_store_before_receipt() {
    let mut run = Run::new("netcut", 2, &AgentOptions::default(), true);
    let proxy = run.proxy.take().unwrap();
    run.start_hub();
    run.start_agents();
    run.emit(1);
    run.wait_all_stored(STORE_TIMEOUT);
    // Records reach the hub and are committed, but their receipts never reach the agents.
    proxy.hold_down();
    run.emit(3);
    run.wait_all_stored(STORE_TIMEOUT);
    proxy.cut();
    std::thread::sleep(Duration::from_secs(2));
    proxy.open();
    // The agents resend what was never receipted; the hub answers Duplicate and stores nothing.
    let mut c = run.client().unwrap();
    let drained = wait_until(Duration::from_secs(120), || {
        c.query_one("SELECT coalesce(sum(backlog), -1)::bigint FROM examlink.devices WHERE status_at > now() - interval '4 seconds'", &[])
            .map(|r| r.get::<_, i64>(0) == 0)
            .unwrap_or(false)
    });
    assert!(
        drained.is_some(),
        "outboxes did not drain after the cut\n{}",
        run.logs()
    );
    run.check_exactly_once_and_truth();
}

#[test]
fn disk_quota_reached_then_recovers() {
    // The smallest quota the agent accepts (it must hold the largest record, 512 KiB).
    let opts = AgentOptions {
        outbox_max_bytes: 1 << 20,
        ..AgentOptions::default()
    };
    let mut run = Run::new("quota", 1, &opts, false);
    run.start_agents();
    // The hub is down: exports pile up in the outbox until the quota stops the agent taking more.
    let full = |run: &Run| {
        let log = run.agents[0].proc.log();
        log.contains("ERROR") && log.to_lowercase().contains("quota")
    };
    let mut emitted = 0;
    while !full(&run) && emitted < 1500 {
        run.emit(20);
        emitted += 20;
        std::thread::sleep(Duration::from_millis(500));
    }
    let quota_logged = wait_until(Duration::from_secs(120), || full(&run));
    assert!(
        quota_logged.is_some(),
        "no quota error logged after {emitted} exports\n{}",
        run.logs()
    );
    run.emit(5);
    std::thread::sleep(Duration::from_secs(3));
    let quarantined = std::fs::read_dir(&run.agents[0].quarantine)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(quarantined, 0, "quota must not quarantine or drop exports");
    run.start_hub();
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
}

#[test]
fn burst_of_fifty_devices_backlog() {
    // Every layout but the tomographer: this test is about the backlog, not reading, and the
    // simulator's tomographer scans are refused as unknown_layout at 5-10 in 40 with a fresh
    // seed (#14: the "firmware", "page" and "disclaimer" anchors in scan variants).
    let layouts: Vec<&str> = util::LAYOUTS
        .iter()
        .copied()
        .filter(|l| *l != "tomographer_fw1")
        .collect();
    let mut run = Run::with_layouts("burst", 50, &layouts);
    run.emit(2);
    run.start_agents();
    std::thread::sleep(Duration::from_secs(3));
    run.start_hub();
    run.wait_all_stored(STORE_TIMEOUT);
    run.check_exactly_once_and_truth();
}
