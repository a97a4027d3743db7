//! The whole agent in-process (`agent::run`): export folder → real recognizer → outbox →
//! Mosquitto → stand-in hub, and bad input routed to quarantine without blocking the rest.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use record::DeviceId;

use crate::util::{self, Hub, Mosquitto};

/// Starts `agent::run` for `config` (validated against `dir`); returns a stopper and the task.
fn start(
    dir: &Path,
    config: agent::config::Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), agent::RunError>>,
) {
    let settings = config.validate(dir).expect("valid test config");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent::run(settings, async {
        let _stopped = stop_rx.await;
    }));
    (stop_tx, task)
}

fn sha(path: &Path) -> String {
    record::ids::sha256_hex(&std::fs::read(path).unwrap())
}

/// One sample export of each device layout.
fn one_per_layout() -> Vec<PathBuf> {
    let mut seen = BTreeMap::new();
    for p in util::sample_exports() {
        let layout = p.parent().unwrap().file_name().unwrap().to_owned();
        seen.entry(layout).or_insert(p);
    }
    seen.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_become_records_at_the_hub() {
    util::recognizer_assets();
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new(util::device_id("pipeline")).unwrap();
    let hub = Hub::start(util::MOSQUITTO_PORT, &device).await;
    let config = util::config(dir.path(), device.as_str(), util::MOSQUITTO_PORT);
    let samples = one_per_layout();
    assert!(samples.len() >= 3, "sample exports missing");
    let (stop, task) = start(dir.path(), config);
    // Exports appear while the agent runs.
    let mut expected = BTreeMap::new();
    for s in &samples {
        let target = dir.path().join("exports").join(s.file_name().unwrap());
        std::fs::copy(s, &target).unwrap();
        expected.insert(sha(&target), s.clone());
    }
    util::wait_until("every export at the hub", Duration::from_secs(180), || {
        hub.seen.lock().unwrap().ids_by_digest.len() == expected.len()
    })
    .await;
    {
        let seen = hub.seen.lock().unwrap();
        for (digest, sample) in &expected {
            let record = seen
                .record_by_digest
                .get(digest)
                .unwrap_or_else(|| panic!("{} became no record", sample.display()));
            let label: serde_json::Value =
                serde_json::from_slice(&std::fs::read(sample.with_extension("json")).unwrap())
                    .unwrap();
            assert_eq!(
                record.device_type,
                label["device_type"],
                "{}",
                sample.display()
            );
            assert_eq!(record.firmware, label["firmware"], "{}", sample.display());
            assert_eq!(
                record.source_file,
                sample.file_name().unwrap().to_str().unwrap()
            );
            let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, record::catalog::fields(&record.device_type).unwrap());
        }
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    hub.clear_retained_status().await;
    // The export folder is untouched (after_take = keep).
    assert_eq!(
        std::fs::read_dir(dir.path().join("exports"))
            .unwrap()
            .count(),
        samples.len()
    );
}

/// Bad inputs of every kind: (file name, bytes, expected code).
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let png = std::fs::read(
        one_per_layout()
            .into_iter()
            .find(|p| p.extension().unwrap() == "png")
            .unwrap(),
    )
    .unwrap();
    let truncated = png[..png.len() / 2].to_vec();
    let mut corrupt = png.clone();
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let mut bomb = Vec::new();
    image::GrayImage::new(1, 1)
        .write_to(&mut Cursor::new(&mut bomb), image::ImageFormat::Png)
        .unwrap();
    bomb[16..20].copy_from_slice(&200_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&200_000u32.to_be_bytes());
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let mut noise = Vec::new();
    let img = image::GrayImage::from_fn(800, 600, |x, y| {
        image::Luma([((x * 7 + y * 13) % 251) as u8])
    });
    img.write_to(&mut Cursor::new(&mut noise), image::ImageFormat::Png)
        .unwrap();
    vec![
        ("empty.png", vec![], "empty_file"),
        ("truncated.png", truncated, "corrupt_image"),
        ("corrupt.png", corrupt, "corrupt_image"),
        ("notes.txt", b"not an export\n".to_vec(), "not_an_image"),
        (
            "anim.gif",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            "unsupported_format",
        ),
        ("bomb.png", bomb, "too_large"),
        ("unknown.png", noise, "unknown_layout"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_quarantined_and_the_rest_flows() {
    util::recognizer_assets();
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new(util::device_id("badinput")).unwrap();
    let broker = Mosquitto::start(util::free_port());
    let hub = Hub::start(broker.port, &device).await;
    let config = util::config(dir.path(), device.as_str(), broker.port);
    let exports = dir.path().join("exports");
    let bad = bad_inputs();
    for (name, bytes, _) in &bad {
        std::fs::write(exports.join(name), bytes).unwrap();
    }
    let good = one_per_layout();
    for s in good.iter().take(3) {
        std::fs::copy(s, exports.join(s.file_name().unwrap())).unwrap();
    }
    let (stop, task) = start(dir.path(), config);
    util::wait_until("every export reported", Duration::from_secs(180), || {
        hub.seen.lock().unwrap().ids_by_digest.len() == bad.len() + 3
    })
    .await;
    {
        let seen = hub.seen.lock().unwrap();
        assert_eq!(
            seen.record_by_digest.len(),
            3,
            "the good exports became records"
        );
        for (name, bytes, code) in &bad {
            let digest = record::ids::sha256_hex(bytes);
            let r = seen
                .rejections
                .get(&digest)
                .unwrap_or_else(|| panic!("no rejection for {name}"));
            assert_eq!(
                (r.source_file.as_str(), r.code.as_str()),
                (*name, *code),
                "{}",
                r.reason
            );
            let q = dir.path().join("quarantine").join(name);
            assert_eq!(
                &std::fs::read(&q).unwrap(),
                bytes,
                "{name} copied to quarantine"
            );
            let reason = std::fs::read_to_string(format!("{}.reason.txt", q.display())).unwrap();
            assert!(reason.contains(&format!("code: {code}")), "{reason}");
            assert!(exports.join(name).exists(), "copy mode keeps {name}");
        }
    }
    util::wait_until(
        "status counts the rejections",
        Duration::from_secs(10),
        || {
            hub.seen
                .lock()
                .unwrap()
                .status
                .as_ref()
                .is_some_and(|s| s.rejected == bad.len() as u64 && s.backlog == 0)
        },
    )
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_leaves_exports_in_the_folder_until_there_is_room() {
    util::recognizer_assets();
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new(util::device_id("quota")).unwrap();
    let broker = Mosquitto::start(util::free_port());
    let hub = Hub::start(broker.port, &device).await;
    let config = util::config(dir.path(), device.as_str(), broker.port);
    let samples: Vec<PathBuf> = one_per_layout().into_iter().take(3).collect();
    let mut digests = Vec::new();
    for s in &samples {
        let target = dir.path().join("exports").join(s.file_name().unwrap());
        std::fs::copy(s, &target).unwrap();
        digests.push(sha(&target));
    }

    // A quota no record fits in: the agent says so and takes nothing.
    let mut settings = config.clone().validate(dir.path()).unwrap();
    settings.outbox.max_bytes = 1;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent::run(settings, async {
        let _stopped = stop_rx.await;
    }));
    util::wait_until(
        "the quota error in the status",
        Duration::from_secs(120),
        || {
            hub.seen.lock().unwrap().status.as_ref().is_some_and(|s| {
                s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("outbox.max_bytes"))
            })
        },
    )
    .await;
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(hub.seen.lock().unwrap().ids_by_digest.is_empty());
    {
        let store =
            agent::outbox::Store::open(&dir.path().join("data").join(agent::OUTBOX_DIR), 1 << 30)
                .unwrap();
        for d in &digests {
            assert!(!store.is_taken(d).unwrap(), "a refused export is not taken");
        }
    }
    for s in &samples {
        assert!(dir
            .path()
            .join("exports")
            .join(s.file_name().unwrap())
            .exists());
    }

    // With room, the same exports are taken and delivered.
    let (stop, task) = start(dir.path(), config);
    util::wait_until(
        "the waiting exports at the hub",
        Duration::from_secs(180),
        || hub.seen.lock().unwrap().ids_by_digest.len() == digests.len(),
    )
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
