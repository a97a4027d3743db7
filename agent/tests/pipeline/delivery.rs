//! Outbox + publisher against a real Mosquitto, with a stand-in hub answering receipts.

use std::time::Duration;

use agent::assemble::{build_record, Recognition};
use agent::ingest::Taken;
use agent::outbox::{DeliveryConfig, Message, Store};
use agent::publish::{PublishConfig, Publisher};
use agent::telemetry::Health;
use record::{DeviceId, Field, FieldStatus};

use crate::util::{self, Hub, Mosquitto};

/// A record as the pipeline would build it for export number `n`.
pub fn synthetic(device: &DeviceId, n: u32) -> Message {
    let bytes = format!("export {n}").into_bytes();
    let taken = Taken {
        path: format!("/exports/e{n}.png").into(),
        file_name: format!("e{n}.png"),
        sha256: record::ids::sha256_hex(&bytes),
        size: bytes.len() as u64,
        bytes: Some(bytes),
        captured_at: chrono::Utc::now(),
    };
    let fields = record::catalog::fields("autoref")
        .unwrap()
        .iter()
        .map(|name| Field {
            name: (*name).into(),
            value: Some("+1.25".into()),
            number: Some(1.25),
            unit: Some("D".into()),
            status: FieldStatus::Ok,
            confidence: 0.99,
            reason: None,
            raw: None,
        })
        .collect();
    let recognition = Recognition {
        device_type: "autoref".into(),
        template_id: "autoref_fw2".into(),
        template_version: 1,
        firmware: "fw2".into(),
        fields,
        crops: vec![],
        contexts: vec![],
        model_version: "test".into(),
        alignment: None,
    };
    Message::Record(Box::new(build_record(
        device,
        &taken,
        recognition,
        chrono::Utc::now(),
        0.0,
    )))
}

fn publisher(device: &DeviceId, port: u16, store: &Store) -> Publisher {
    let config = PublishConfig {
        broker_url: format!("mqtt://127.0.0.1:{port}"),
        allow_plaintext: true,
        reconnect_min_ms: 100,
        reconnect_max_ms: 500,
        status_every_secs: 1,
        ..PublishConfig::default()
    };
    Publisher::new(
        config.build(device).unwrap(),
        store.clone(),
        DeliveryConfig {
            window: 64,
            resend_after: Duration::from_secs(2),
            ..DeliveryConfig::default()
        },
        Health::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_hub_and_leave_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new(util::device_id("happy")).unwrap();
    let store = Store::open(&dir.path().join("outbox"), 1 << 30).unwrap();
    for n in 0..200 {
        store.enqueue(&synthetic(&device, n)).unwrap();
    }
    let hub = Hub::start(util::MOSQUITTO_PORT, &device).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(publisher(&device, util::MOSQUITTO_PORT, &store).run(async {
        let _stopped = stop_rx.await;
    }));

    util::wait_until("all records receipted", Duration::from_secs(60), || {
        store.backlog().messages == 0
    })
    .await;
    assert_eq!(hub.record_count(), 200);
    util::wait_until("an online status", Duration::from_secs(10), || {
        hub.seen
            .lock()
            .unwrap()
            .status
            .as_ref()
            .is_some_and(|s| s.online && s.device_id == device)
    })
    .await;

    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    util::wait_until("an offline status", Duration::from_secs(10), || {
        hub.seen
            .lock()
            .unwrap()
            .status
            .as_ref()
            .is_some_and(|s| !s.online)
    })
    .await;
    hub.clear_retained_status().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_for_a_while_then_back_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new(util::device_id("offline")).unwrap();
    let port = util::free_port();
    let store = Store::open(&dir.path().join("outbox"), 1 << 30).unwrap();
    // The agent starts while the broker is down.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(publisher(&device, port, &store).run(async {
        let _stopped = stop_rx.await;
    }));
    for n in 0..150 {
        store.enqueue(&synthetic(&device, n)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.backlog().messages, 150);

    let broker = Mosquitto::start(port);
    let hub = Hub::start(port, &device).await;
    util::wait_until("first backlog drained", Duration::from_secs(60), || {
        store.backlog().messages == 0
    })
    .await;

    // Down again, mid-flow: exports keep coming while it is down.
    for n in 150..250 {
        store.enqueue(&synthetic(&device, n)).unwrap();
    }
    drop(broker);
    for n in 250..400 {
        store.enqueue(&synthetic(&device, n)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _broker = Mosquitto::start(port);
    util::wait_until("second backlog drained", Duration::from_secs(90), || {
        store.backlog().messages == 0
    })
    .await;
    assert_eq!(hub.record_count(), 400, "every record reached the hub");

    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_outbox_resends_what_was_not_receipted() {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::new(util::device_id("restart")).unwrap();
    let port = util::free_port();
    {
        // Queued while no broker exists at all, then the agent stops.
        let store = Store::open(&dir.path().join("outbox"), 1 << 30).unwrap();
        for n in 0..50 {
            store.enqueue(&synthetic(&device, n)).unwrap();
        }
    }
    let _broker = Mosquitto::start(port);
    let hub = Hub::start(port, &device).await;
    let store = Store::open(&dir.path().join("outbox"), 1 << 30).unwrap();
    assert_eq!(store.backlog().messages, 50);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(publisher(&device, port, &store).run(async {
        let _stopped = stop_rx.await;
    }));
    util::wait_until("backlog drained", Duration::from_secs(60), || {
        store.backlog().messages == 0
    })
    .await;
    assert_eq!(hub.record_count(), 50);
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
