//! Drain benchmark: fills an outbox with a backlog of records (as after days offline), then
//! measures how fast the publisher drains it through a real broker, with a stand-in for the
//! hub answering each record with a receipt. Halfway through, one fresh export is queued and
//! its time to receipt is reported too (it must not wait behind the backlog).
//!
//! `agent-bench [--broker mqtt://127.0.0.1:1883] [--records 20000] [--window 1000]`
//!
//! Prints `drain: N records in S s = R records/s` and the fresh export's latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::assemble::{build_record, Recognition};
use agent::ingest::Taken;
use agent::outbox::{DeliveryConfig, Message, Store};
use agent::publish::{PublishConfig, Publisher};
use agent::telemetry::Health;
use anyhow::{bail, Context};
use record::topic::DeviceTopic;
use record::{DeviceId, Field, FieldStatus, Receipt, ReceiptOutcome, RecordId};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

struct Args {
    broker: String,
    records: u32,
    window: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        broker: "mqtt://127.0.0.1:1883".into(),
        records: 20_000,
        window: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--broker" => a.broker = value,
            "--records" => a.records = value.parse().context("--records")?,
            "--window" => a.window = value.parse().context("--window")?,
            other => bail!("unknown flag {other}; use --broker, --records, --window"),
        }
    }
    Ok(a)
}

/// A record as the pipeline builds it: all autoref fields, two flagged with a 2 KiB crop each.
fn record(device: &DeviceId, n: u32) -> Message {
    let bytes = format!("bench export {n} {}", rand::random::<u64>()).into_bytes();
    let taken = Taken {
        path: format!("exports/e{n}.png").into(),
        file_name: format!("autoref_{n:06}.png"),
        sha256: record::ids::sha256_hex(&bytes),
        size: bytes.len() as u64,
        bytes: Some(bytes),
        captured_at: chrono::Utc::now(),
    };
    let names = record::catalog::fields("autoref").unwrap_or_default();
    let fields = names
        .iter()
        .enumerate()
        .map(|(i, name)| Field {
            name: (*name).into(),
            value: Some("-1.25".into()),
            number: Some(-1.25),
            unit: Some("D".into()),
            status: if i < 2 {
                FieldStatus::Unreadable
            } else {
                FieldStatus::Ok
            },
            confidence: 0.97,
            reason: (i < 2).then(|| "low confidence".into()),
            raw: None,
        })
        .collect();
    let crops = names
        .iter()
        .take(2)
        .map(|n| ((*n).to_owned(), vec![0x5a; 2048]))
        .collect();
    let r = Recognition {
        device_type: "autoref".into(),
        template_id: "autoref_fw2".into(),
        template_version: 1,
        firmware: "fw2".into(),
        fields,
        crops,
        contexts: vec![],
        model_version: "bench".into(),
        alignment: None,
    };
    Message::Record(Box::new(build_record(
        device,
        &taken,
        r,
        chrono::Utc::now(),
        0.0,
    )))
}

#[derive(serde::Deserialize)]
struct IdOnly {
    record_id: RecordId,
}

/// The stand-in hub: answers every record with a `stored` receipt. Returns when subscribed.
async fn responder(
    host: &str,
    port: u16,
    device: &DeviceId,
    fresh: Arc<Mutex<(Option<RecordId>, Option<Instant>)>>,
) -> anyhow::Result<AsyncClient> {
    let mut o = MqttOptions::new(format!("bench-hub-{}", rand::random::<u32>()), host, port);
    o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(o, 100_000);
    let handle = client.clone();
    client
        .subscribe(DeviceTopic::Records.topic(device), QoS::AtLeastOnce)
        .await?;
    let receipts = DeviceTopic::Receipts.topic(device);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(tx) = ready.take() {
                        let _ready = tx.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let Ok(r) = serde_json::from_slice::<IdOnly>(&p.payload) else {
                        continue;
                    };
                    if let Ok(mut f) = fresh.lock() {
                        if f.0.as_ref() == Some(&r.record_id) {
                            f.1 = Some(Instant::now());
                        }
                    }
                    let receipt = Receipt {
                        record_id: r.record_id,
                        outcome: ReceiptOutcome::Stored,
                        reason: None,
                    };
                    if client
                        .try_publish(
                            receipts.as_str(),
                            QoS::AtLeastOnce,
                            false,
                            record::encode(&receipt),
                        )
                        .is_err()
                    {
                        eprintln!("responder: receipt queue full");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("responder: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .context("responder did not subscribe")??;
    Ok(handle)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let device = DeviceId::new(format!("bench-{:08x}", rand::random::<u32>()))?;
    let dir = std::env::temp_dir().join(format!("agent-bench-{}", device));
    let store = Store::open(&dir, u64::MAX)?;

    let t = Instant::now();
    let mut bytes = 0usize;
    for chunk in (0..args.records).collect::<Vec<_>>().chunks(256) {
        let batch: Vec<Message> = chunk.iter().map(|n| record(&device, *n)).collect();
        bytes += batch.iter().map(|m| m.encode().len()).sum::<usize>();
        for r in store.enqueue_all(&batch) {
            r?;
        }
    }
    let fill = t.elapsed().as_secs_f64();
    println!(
        "backlog: {} records, {:.1} MiB payload, queued in {fill:.2} s ({:.0} records/s)",
        args.records,
        bytes as f64 / (1 << 20) as f64,
        f64::from(args.records) / fill
    );

    let config = PublishConfig {
        broker_url: args.broker.clone(),
        // The bench's own broker (Mosquitto on this machine) speaks plain MQTT.
        allow_plaintext: args.broker.starts_with("mqtt://"),
        ..PublishConfig::default()
    };
    let settings = config.build(&device)?;
    let fresh = Arc::new(Mutex::new((None, None)));
    let hub = responder(
        &settings.broker.host,
        settings.broker.port,
        &device,
        fresh.clone(),
    )
    .await?;
    let publisher = Publisher::new(
        settings,
        store.clone(),
        DeliveryConfig {
            window: args.window,
            resend_after: Duration::from_secs(60),
            ..DeliveryConfig::default()
        },
        Health::default(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(publisher.run(async {
        let _stopped = stop_rx.await;
    }));

    let start = Instant::now();
    let mut fresh_queued: Option<Instant> = None;
    loop {
        let left = store.backlog().messages;
        if fresh_queued.is_none() && left <= u64::from(args.records / 2) {
            let m = record(&device, u32::MAX);
            if let Ok(mut f) = fresh.lock() {
                f.0 = Some(m.id());
            }
            store.enqueue(&m)?;
            fresh_queued = Some(Instant::now());
        }
        if left == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("drain did not finish in 10 minutes ({left} left)");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let drained = args.records + 1;
    println!(
        "drain: {drained} records in {secs:.2} s = {:.0} records/s (window {})",
        f64::from(drained) / secs,
        args.window
    );
    let seen = fresh.lock().ok().and_then(|f| f.1);
    if let (Some(q), Some(s)) = (fresh_queued, seen) {
        println!(
            "fresh export queued mid-drain reached the hub after {:.0} ms",
            s.saturating_duration_since(q).as_secs_f64() * 1000.0
        );
    }
    let _sent = stop_tx.send(());
    let _stopped = task.await;
    // Leave no retained status of this throw-away device on the broker.
    hub.publish(
        DeviceTopic::Status.topic(&device),
        QoS::AtLeastOnce,
        true,
        Vec::new(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(store);
    let _removed = std::fs::remove_dir_all(&dir);
    Ok(())
}
