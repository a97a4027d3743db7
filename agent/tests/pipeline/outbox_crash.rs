//! Durability of the outbox store under kill -9, without the rest of the agent: a child process
//! (this test binary, re-run in child mode) enqueues and retires messages and prints each one
//! *after* the call returned; the parent kills it at random moments, reopens the database and
//! checks that everything the child acknowledged as queued is still there (message and taken
//! digest), unless it was retired.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent::outbox::{Enqueued, Store};
use rand::{Rng, SeedableRng};
use record::DeviceId;

use crate::delivery::synthetic;

const CHILD_ENV: &str = "EXAMLINK_OUTBOX_CHILD";

/// Child mode: enqueue messages `start..` for ever, retiring every third one two steps later.
/// Not a test of its own: [`outbox_survives_kill_9`] runs it (with `--ignored`) in a child
/// process that it kills.
#[test]
#[ignore = "child process of outbox_survives_kill_9, which runs it with --ignored; tests nothing alone"]
fn outbox_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        eprintln!("outbox_crash_child: not started by outbox_survives_kill_9 ({CHILD_ENV} unset): nothing to do");
        return;
    };
    let start: u32 = std::env::var("EXAMLINK_OUTBOX_START")
        .unwrap()
        .parse()
        .unwrap();
    let device = DeviceId::new("crash-child").unwrap();
    let store = Store::open(std::path::Path::new(&dir), 1 << 34).unwrap();
    for n in start.. {
        let m = synthetic(&device, n);
        if let Enqueued::Queued(_) = store.enqueue(&m).unwrap() {
            println!("queued {n}");
        }
        if n >= start + 2 && n % 3 == 0 {
            let old = synthetic(&device, n - 2).id();
            store.retire(&[old]).unwrap();
            println!("retired {}", n - 2);
        }
    }
}

#[test]
fn outbox_survives_kill_9() {
    let seed: u64 = rand::random();
    eprintln!("outbox crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox");
    let device = DeviceId::new("crash-child").unwrap();
    let mut queued = BTreeSet::new();
    let mut retired = BTreeSet::new();
    let mut next = 0u32;
    for _ in 0..60 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "--ignored",
                "outbox_crash::outbox_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db)
            .env("EXAMLINK_OUTBOX_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
        child.kill().unwrap();
        let _reaped = child.wait();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let Ok(line) = line else { break };
            match line.split_once(' ') {
                Some(("queued", n)) => {
                    queued.insert(n.parse::<u32>().unwrap());
                }
                Some(("retired", n)) => {
                    retired.insert(n.parse::<u32>().unwrap());
                }
                _ => {}
            }
        }
        let store = Store::open(&db, 1 << 34).expect("the outbox reopens after kill -9");
        let present: BTreeSet<_> = store
            .batch(0..u64::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        for n in &queued {
            let m = synthetic(&device, *n);
            assert!(
                store.is_taken(m.digest()).unwrap(),
                "taken mark of acknowledged message {n} lost"
            );
            if !retired.contains(n) {
                assert!(present.contains(&m.id()), "acknowledged message {n} lost");
            }
        }
        assert_eq!(
            store.backlog().messages,
            present.len() as u64,
            "backlog count matches the queue"
        );
        next = queued.iter().max().map_or(0, |m| m + 1).max(next);
        // A message the child was writing when killed may or may not be there: skip past it.
        next += 1;
    }
    assert!(
        queued.len() > 100,
        "the child made progress ({} messages)",
        queued.len()
    );
}
