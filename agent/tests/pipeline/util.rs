//! Test harness: free ports, a private Mosquitto, a stand-in for the hub's receipts, sample
//! exports, agent configurations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use record::topic::DeviceTopic;
use record::{Receipt, ReceiptOutcome, Record, RecordId, Rejection};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// The shared Mosquitto the tests may use.
pub const MOSQUITTO_PORT: u16 = 1883;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A unique device id for one test.
pub fn device_id(test: &str) -> String {
    let n: u32 = rand::random();
    format!("{test}-{n:08x}")
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private Mosquitto on its own port, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
}

impl Mosquitto {
    /// Starts `mosquitto -p port` and waits until it accepts connections.
    pub fn start(port: u16) -> Self {
        let mut child = Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _killed = child.kill();
        let _reaped = child.wait();
        panic!("mosquitto did not start on port {port}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// What the stand-in hub saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Record ids and how often each came.
    pub records: BTreeMap<RecordId, usize>,
    /// The last record received per image digest.
    pub record_by_digest: BTreeMap<String, Record>,
    /// Rejections by file digest.
    pub rejections: BTreeMap<String, Rejection>,
    /// Distinct ids per file digest, records and rejections together.
    pub ids_by_digest: BTreeMap<String, BTreeSet<RecordId>>,
    /// The last status report seen.
    pub status: Option<record::StatusReport>,
    /// How many status reports were seen.
    pub statuses: u64,
    /// Whether an empty status (a cleared retained message) was seen.
    pub status_cleared: bool,
}

/// A stand-in for the hub: subscribes to one device's records, rejections and status and
/// answers each record or rejection with a receipt (`stored` the first time, `duplicate`
/// after), like the real hub does after its COMMIT. Other devices on a shared broker are left
/// alone.
pub struct Hub {
    pub seen: Arc<Mutex<Seen>>,
    client: AsyncClient,
    device: record::DeviceId,
    task: tokio::task::JoinHandle<()>,
}

impl Hub {
    /// Connects to `port` and waits for its subscriptions to be acknowledged.
    pub async fn start(port: u16, device: &record::DeviceId) -> Self {
        let device = device.clone();
        let id = format!("standin-hub-{:08x}", rand::random::<u32>());
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(o, 10_000);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let seen2 = seen.clone();
        let client2 = client.clone();
        let device2 = device.clone();
        let task = tokio::spawn(async move {
            let (client, device) = (client2, device2);
            let mut subacks = 0;
            loop {
                let ev = match eventloop.poll().await {
                    Ok(ev) => ev,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                match ev {
                    Event::Incoming(Incoming::ConnAck(_)) => {
                        for kind in [
                            DeviceTopic::Records,
                            DeviceTopic::Rejections,
                            DeviceTopic::Status,
                        ] {
                            client
                                .subscribe(kind.topic(&device), QoS::AtLeastOnce)
                                .await
                                .expect("subscribe");
                        }
                    }
                    Event::Incoming(Incoming::SubAck(_)) => {
                        subacks += 1;
                        if subacks == 3 {
                            if let Some(tx) = ready_tx.take() {
                                let _ready = tx.send(());
                            }
                        }
                    }
                    Event::Incoming(Incoming::Publish(p)) => {
                        if let Some((device, receipt)) = handle(&seen2, &p.topic, &p.payload) {
                            let topic = DeviceTopic::Receipts.topic(&device);
                            client
                                .publish(topic, QoS::AtLeastOnce, false, record::encode(&receipt))
                                .await
                                .expect("publish receipt");
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("stand-in hub subscribed")
            .expect("stand-in hub running");
        Self {
            seen,
            client,
            device,
            task,
        }
    }

    /// Clears the device's retained status on the broker (tests on the shared broker tidy up).
    pub async fn clear_retained_status(&self) {
        let topic = DeviceTopic::Status.topic(&self.device);
        self.client
            .publish(topic, QoS::AtLeastOnce, true, Vec::new())
            .await
            .expect("clear retained status");
        wait_until(
            "the retained status cleared",
            Duration::from_secs(10),
            || self.seen.lock().unwrap().status_cleared,
        )
        .await;
    }

    /// Distinct record ids seen.
    pub fn record_count(&self) -> usize {
        self.seen.lock().unwrap().records.len()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn handle(seen: &Mutex<Seen>, topic: &str, payload: &[u8]) -> Option<(record::DeviceId, Receipt)> {
    let (device, kind) = record::topic::parse_device_topic(topic)?;
    let mut seen = seen.lock().unwrap();
    let (id, digest) = match kind {
        DeviceTopic::Records => {
            let r: Record = record::decode(payload).expect("a valid record");
            assert_eq!(r.device_id, device, "record on another device's topic");
            let out = (r.record_id.clone(), r.image_sha256.clone());
            seen.record_by_digest.insert(r.image_sha256.clone(), r);
            out
        }
        DeviceTopic::Rejections => {
            let r: Rejection = record::decode(payload).expect("a valid rejection");
            let id = agent::assemble::rejection_id(&r);
            let digest = r.file_sha256.clone();
            seen.rejections.insert(digest.clone(), r);
            (id, digest)
        }
        DeviceTopic::Status => {
            if payload.is_empty() {
                seen.status_cleared = true;
            } else {
                seen.status = Some(record::decode(payload).expect("a valid status"));
                seen.statuses += 1;
            }
            return None;
        }
        DeviceTopic::Receipts => return None,
    };
    seen.ids_by_digest
        .entry(digest)
        .or_default()
        .insert(id.clone());
    let count = seen.records.entry(id.clone()).or_default();
    *count += 1;
    let outcome = if *count == 1 {
        ReceiptOutcome::Stored
    } else {
        ReceiptOutcome::Duplicate
    };
    Some((
        device,
        Receipt {
            record_id: id,
            outcome,
            reason: None,
        },
    ))
}

/// The committed templates and model directory.
///
/// # Panics
/// When either is missing (they are committed: a checkout without them is broken).
pub fn recognizer_assets() -> (PathBuf, PathBuf) {
    let templates = repo().join("templates");
    let models = repo().join("models");
    let has_templates = std::fs::read_dir(&templates)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .unwrap_or(false);
    let has_model = models.join("model.json").exists();
    assert!(
        has_templates && has_model,
        "the committed templates ({}) or model ({}) are missing",
        templates.display(),
        models.display()
    );
    (templates, models)
}

/// Sample exports of every device, from the folder [`sim::samples::locate`] finds.
///
/// # Panics
/// When there is no samples folder: these tests need real exports and do not skip.
pub fn sample_exports() -> Vec<PathBuf> {
    let root = sim::samples::locate().unwrap_or_else(|why| panic!("{why}"));
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = f.path();
            if p.extension()
                .is_some_and(|x| x == "png" || x == "jpg" || x == "bmp")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// An agent configuration for a test in `dir` (exports in `dir/exports`).
pub fn config(dir: &Path, device: &str, port: u16) -> agent::config::Config {
    let (templates, models) = (repo().join("templates"), repo().join("models"));
    let mut c = agent::config::Config {
        device_id: device.to_owned(),
        data_dir: dir.join("data"),
        ..Default::default()
    };
    c.ingest.export_dirs = vec![dir.join("exports")];
    c.ingest.settle_ms = 100;
    c.ingest.rescan_secs = 1;
    c.recognize.templates_dir = templates;
    c.recognize.model_path = models;
    c.recognize.workers = 2;
    c.quarantine.dir = dir.join("quarantine");
    c.outbox.resend_after_secs = 2;
    // The shared Mosquitto speaks plain MQTT.
    c.publish.broker_url = format!("mqtt://127.0.0.1:{port}");
    c.publish.allow_plaintext = true;
    c.publish.reconnect_min_ms = 100;
    c.publish.reconnect_max_ms = 1000;
    c.publish.status_every_secs = 1;
    std::fs::create_dir_all(dir.join("exports")).expect("exports dir");
    c
}
