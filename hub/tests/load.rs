//! Knock-over load tests (#12), against the real hub binary (so its RSS is its own), real
//! PostgreSQL and 20 real MQTT devices over TLS. Heavy (minutes of both cores), so ignored by
//! default; run them with
//!
//! `cargo test -p hub --release --test load -- --ignored --nocapture --test-threads 1`
//!
//! Attackers connect from other loopback addresses (127.0.1.x, 127.0.2.x) than the devices
//! (127.0.0.1), as they would from other hosts; each address stays under the per-address cap.

mod util;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hub::testkit;
use record::{DeviceId, ReceiptOutcome, RecordId};
use tokio::io::AsyncWriteExt;
use util::{connect, free_port, Broker, TestSchema};

const DEVICES: usize = 20;

struct HubProc {
    child: tokio::process::Child,
    port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl HubProc {
    async fn start(schema: &TestSchema) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let templates = dir.path().join("templates");
        std::fs::create_dir_all(&templates).unwrap();
        testkit::write_templates(&templates).unwrap();
        let port = free_port();
        let config = dir.path().join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "templates_dir = {templates:?}\n[subscribe.embedded]\nlisten = \"0.0.0.0:{port}\"\n\
                 [load]\nurl = {:?}\nschema = \"{}\"\n[http]\nlisten = \"\"\n\
                 [tls]\ngenerate_dir = {:?}\n",
                util::pg_url(),
                schema.name,
                dir.path().join("tls"),
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hub"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "error")
            .kill_on_drop(true)
            .spawn()
            .expect("hub starts");
        let ca = dir.path().join("tls").join(hub::tls::CA_FILE);
        for _ in 0..600 {
            if ca.exists()
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            child,
            port,
            ca,
            _dir: dir,
        }
    }

    fn rss_mib(&self) -> f64 {
        rss_of(self.child.id().unwrap())
    }
}

/// Resident memory of process `pid` in MiB (0 when it is gone).
fn rss_of(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// 20 devices publishing a record each every `period`, and the publish-to-receipt latency of
/// every receipt, stamped with when it arrived.
struct Fleet {
    latencies: Arc<Mutex<Vec<(Instant, Duration)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Fleet {
    async fn start(hub: &HubProc, passwords: &[(String, String)], period: Duration) -> Self {
        let broker = Broker::tls(hub.port, &hub.ca);
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, (id, pw)) in passwords.iter().enumerate() {
            let d = DeviceId::new(id).unwrap();
            let receipts = record::topic::DeviceTopic::Receipts.topic(&d);
            let mut c = connect(&broker, id, Some((id, pw)), &[receipts])
                .await
                .expect("device connects");
            let (lat, stop) = (latencies.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let sent: Arc<Mutex<HashMap<RecordId, Instant>>> = Default::default();
                let mut n = 0u64;
                let mut stored = 0u64;
                // Stagger the devices over the period.
                tokio::time::sleep(period * i as u32 / DEVICES as u32).await;
                let mut tick = tokio::time::interval(period);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::select! {
                        _ = tick.tick() => {
                            let r = testkit::record(&d, n);
                            n += 1;
                            sent.lock().unwrap().insert(r.record_id.clone(), Instant::now());
                            c.publish_record(&r).await;
                        }
                        m = c.incoming.recv() => {
                            let Some((_, p)) = m else { break };
                            let receipt: record::Receipt = record::decode(&p).unwrap();
                            assert_ne!(receipt.outcome, ReceiptOutcome::Rejected);
                            if let Some(t) = sent.lock().unwrap().remove(&receipt.record_id) {
                                lat.lock().unwrap().push((Instant::now(), t.elapsed()));
                                stored += 1;
                            }
                        }
                    }
                }
                // Drain the receipts still coming.
                let deadline = Instant::now() + Duration::from_secs(30);
                while !sent.lock().unwrap().is_empty() && Instant::now() < deadline {
                    if let Ok(Some((_, p))) =
                        tokio::time::timeout(Duration::from_secs(1), c.incoming.recv()).await
                    {
                        let receipt: record::Receipt = record::decode(&p).unwrap();
                        if sent.lock().unwrap().remove(&receipt.record_id).is_some() {
                            stored += 1;
                        }
                    }
                }
                assert!(
                    sent.lock().unwrap().is_empty(),
                    "{d}: records without receipt"
                );
                stored
            }));
        }
        Self {
            latencies,
            stop,
            tasks,
        }
    }

    /// p50 and p99 of the receipts that arrived within `[from, to)`.
    fn percentiles(&self, from: Instant, to: Instant) -> (usize, Duration, Duration) {
        let mut v: Vec<Duration> = self
            .latencies
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, d)| *d)
            .collect();
        v.sort();
        if v.is_empty() {
            return (0, Duration::ZERO, Duration::ZERO);
        }
        let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        (v.len(), p(0.50), p(0.99))
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        for t in self.tasks {
            total += t.await.unwrap();
        }
        total
    }
}

async fn setup(tag: &str) -> (TestSchema, Vec<(String, String)>) {
    let schema = TestSchema::new(tag);
    schema.migrate().await;
    let mut passwords = Vec::new();
    for i in 0..DEVICES {
        let id = format!("load-{i:02}");
        let pw = schema.add_device(&id, "autoref").await;
        passwords.push((id, pw));
    }
    (schema, passwords)
}

async fn tcp_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    s.connect(to).await
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load: cargo test -p hub --release --test load -- --ignored --nocapture --test-threads 1"]
async fn pre_auth_garbage_leaves_rss_bounded_while_devices_deliver() {
    let (schema, passwords) = setup("garbage").await;
    let hub = HubProc::start(&schema).await;
    let fleet = Fleet::start(&hub, &passwords, Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let baseline = hub.rss_mib();
    let before = Instant::now();

    // 2,000 connections from 16 addresses, each sending 1 MiB of garbage: half as raw bytes
    // (not TLS), half inside a TLS session as an MQTT CONNECT whose header claims 1 MiB.
    let garbage: Arc<Vec<u8>> = Arc::new((0..1 << 20).map(|i| (i * 7 + 3) as u8).collect());
    let to: SocketAddr = ([127, 0, 0, 1], hub.port).into();
    let connector = util::tls_connector(&hub.ca);
    let attack_start = Instant::now();
    let mut attackers = Vec::new();
    for i in 0..2000u32 {
        let src = Ipv4Addr::new(127, 0, 1, 1 + (i % 16) as u8);
        let (g, connector) = (garbage.clone(), connector.clone());
        attackers.push(tokio::spawn(async move {
            let Ok(tcp) = tcp_from(src, to).await else {
                return (false, 0usize);
            };
            let mut written = 0usize;
            if i % 2 == 0 {
                let mut tcp = tcp;
                for chunk in g.chunks(64 << 10) {
                    if tcp.write_all(chunk).await.is_err() {
                        break;
                    }
                    written += chunk.len();
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            } else {
                let name =
                    tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let Ok(mut tls) = connector.connect(name, tcp).await else {
                    return (true, 0);
                };
                let mut header = vec![0x10u8, 0xFF, 0xFF, 0x3F];
                header.extend_from_slice(&g[..1024]);
                if tls.write_all(&header).await.is_ok() {
                    written += header.len();
                    for chunk in g.chunks(64 << 10) {
                        if tls.write_all(chunk).await.is_err() {
                            break;
                        }
                        written += chunk.len();
                    }
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            (true, written)
        }));
    }
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let pid = hub.child.id().unwrap();
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0.0f64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_of(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let mut connected = 0;
    let mut bytes = 0usize;
    for a in attackers {
        let (c, w) = a.await.unwrap();
        connected += c as usize;
        bytes += w;
    }
    let attack_end = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = hub.rss_mib();
    let (n_during, p50, p99) = fleet.percentiles(attack_start, attack_end);
    let (n_before, b50, b99) = fleet.percentiles(before - Duration::from_secs(5), before);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap().max(after);
    let stored = fleet.stop().await;
    eprintln!(
        "garbage: baseline RSS {baseline:.1} MiB, peak {peak:.1} MiB, after {after:.1} MiB; \
         {connected} of 2000 attackers connected, {:.0} MiB of garbage accepted by the kernel in {:.1} s; \
         devices: {stored} records stored; receipts before p50 {b50:?} p99 {b99:?} (n={n_before}), \
         during p50 {p50:?} p99 {p99:?} (n={n_during})",
        bytes as f64 / (1 << 20) as f64,
        (attack_end - attack_start).as_secs_f64()
    );
    assert!(n_during > 0, "no device receipt during the attack");
    assert!(
        peak - baseline < 100.0,
        "RSS grew {:.1} MiB over its baseline",
        peak - baseline
    );
    let in_db = schema.count("SELECT count(*) FROM records").await;
    assert_eq!(
        in_db as u64, stored,
        "every receipted record is in PostgreSQL"
    );
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load: cargo test -p hub --release --test load -- --ignored --nocapture --test-threads 1"]
async fn a_burst_of_wrong_passwords_does_not_slow_real_devices() {
    let addresses: u32 = std::env::var("EXAMLINK_LOAD_ADDRESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (schema, passwords) = setup("wrongpw").await;
    let hub = HubProc::start(&schema).await;
    let fleet = Fleet::start(&hub, &passwords, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let quiet_end = Instant::now();

    // 1,000 CONNECTs with wrong passwords for real device names, from `addresses` addresses,
    // 100 at a time.
    let to_port = hub.port;
    let ca = hub.ca.clone();
    let burst_start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(100));
    let mut tries = Vec::new();
    for i in 0..1000u32 {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let src = Ipv4Addr::new(127, 0, 2, 1 + (i % addresses) as u8);
        let user = format!("load-{:02}", i % DEVICES as u32);
        let ca = ca.clone();
        tries.push(tokio::spawn(async move {
            let _permit = permit;
            wrong_login(src, to_port, &ca, &user).await
        }));
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for t in tries {
        *outcomes.entry(t.await.unwrap()).or_default() += 1;
    }
    let burst_end = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (nq, q50, q99) = fleet.percentiles(quiet_start, quiet_end);
    let (nb, b50, b99) = fleet.percentiles(burst_start, burst_end + Duration::from_secs(1));
    let stored = fleet.stop().await;
    eprintln!(
        "wrong passwords from {addresses} addresses: burst {:.1} s, outcomes {outcomes:?}; \
         devices {stored} records stored; publish-to-receipt quiet p50 {q50:?} p99 {q99:?} (n={nq}), \
         during the burst p50 {b50:?} p99 {b99:?} (n={nb})",
        (burst_end - burst_start).as_secs_f64()
    );
    assert!(nb > 0, "no receipts during the burst");
    assert!(
        b99 <= Duration::from_millis(250),
        "publish-to-receipt p99 during the burst: {b99:?}"
    );
}

/// One CONNECT with a wrong password from `src`, over TLS; the CONNACK code (or the error).
async fn wrong_login(src: Ipv4Addr, port: u16, ca: &std::path::Path, user: &str) -> String {
    use tokio::io::AsyncReadExt;
    let Ok(tcp) = tcp_from(src, ([127, 0, 0, 1], port).into()).await else {
        return "tcp".into();
    };
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(mut tls) = util::tls_connector(ca).connect(name, tcp).await else {
        return "tls".into();
    };
    let mut c = rumqttc::Connect::new(user);
    c.login = Some(rumqttc::Login::new(user, "definitely-wrong"));
    let mut out = bytes::BytesMut::new();
    c.write(&mut out).unwrap();
    if tls.write_all(&out).await.is_err() {
        return "write".into();
    }
    let mut buf = [0u8; 4];
    match tokio::time::timeout(util::PATIENCE, tls.read_exact(&mut buf)).await {
        Ok(Ok(_)) => match buf[3] {
            4 => "bad_credentials".into(),
            5 => "backoff".into(),
            other => format!("code_{other}"),
        },
        _ => "no_connack".into(),
    }
}
