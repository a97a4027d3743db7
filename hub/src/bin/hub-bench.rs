//! `hub-bench`: simulated devices publish over MQTT into a hub (the `hub` binary next to this
//! one, embedded broker) backed by PostgreSQL on this machine. Prints numbers measured in the
//! same run, as ratios where there is a reference; it asserts nothing about time.
//!
//! 1. COPY ceiling: the same records and measurements written with raw `COPY ... BINARY`.
//! 2. Sustained throughput: each device keeps up to `--window` unreceipted records in flight
//!    (an agent outbox); records/s from first publish to last receipt, and the ratio to (1).
//! 3. Latency at `--rate` records/s: publish → receipt p50 and p99.
//! 4. The hub process's peak RSS.
//!
//! With `--external HOST:PORT` the hub runs in external-broker mode (a shared subscription on
//! that broker, e.g. Mosquitto) and the devices publish to that broker, so the broker's memory
//! is outside the hub's RSS.
//!
//! Usage: `cargo build -p hub --bins && /var/tmp/examlink-target/debug/hub-bench`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use hub::testkit;
use record::topic::DeviceTopic;
use record::{DeviceId, Receipt, Record, RecordId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

#[derive(Parser)]
struct Args {
    /// Records in the throughput phase.
    #[arg(long, default_value_t = 60_000)]
    records: u64,
    /// Simulated devices.
    #[arg(long, default_value_t = 20)]
    devices: u64,
    /// Unreceipted records each device keeps in flight.
    #[arg(long, default_value_t = 500)]
    window: usize,
    /// Rate of the latency phase, records/s.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency phase, seconds.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// PostgreSQL connection string.
    #[arg(long, default_value = "host=127.0.0.1 user=postgres dbname=postgres")]
    pg: String,
    /// An external broker (HOST:PORT) instead of the embedded one.
    #[arg(long)]
    external: Option<String>,
}

type Receipts = mpsc::UnboundedReceiver<(Receipt, Instant)>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.devices > 0 && args.records >= args.devices,
        "need a record per device"
    );
    let schema = format!("hubbench_{}", std::process::id());
    let result = bench(&args, &schema).await;
    let admin = pg(&args, "public").await?;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA IF EXISTS {schema}_copy CASCADE"
        ))
        .await?;
    result
}

async fn pg(args: &Args, schema: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut cfg: tokio_postgres::Config = args.pg.parse()?;
    cfg.options(format!("-c search_path={schema}"));
    let (c, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(conn);
    Ok(c)
}

async fn bench(args: &Args, schema: &str) -> anyhow::Result<()> {
    let devs: Vec<DeviceId> = (0..args.devices)
        .map(|i| DeviceId::new(format!("bench-{i:03}")).expect("valid id"))
        .collect();
    let per = args.records / args.devices;
    let total = per * args.devices;
    let records: Vec<Vec<Record>> = devs
        .iter()
        .map(|d| (0..per).map(|n| testkit::record(d, n)).collect())
        .collect();
    let bytes = record::encode(&records[0][0]).len();
    println!(
        "records {total} of {bytes} bytes, {} fields each, {} devices",
        records[0][0].fields.len(),
        args.devices
    );

    // 1. COPY ceiling.
    let copy_schema = format!("{schema}_copy");
    let mut c = pg(args, &copy_schema).await?;
    hub::load::migrate::migrate(&mut c, &copy_schema).await?;
    let t = Instant::now();
    for chunk in records.concat().chunks(2000) {
        copy_chunk(&mut c, chunk).await?;
    }
    let copy_rate = total as f64 / t.elapsed().as_secs_f64();
    println!("copy_ceiling_records_per_s {copy_rate:.0}");

    // The hub, as its own process.
    let mut c = pg(args, schema).await?;
    hub::load::migrate::migrate(&mut c, schema).await?;
    let mut passwords = HashMap::new();
    for d in &devs {
        passwords.insert(
            d.clone(),
            hub::auth::add_device(&c, "cli:hub-bench", d, "autoref")
                .await?
                .expose()
                .to_owned(),
        );
    }
    let templates = tempfile::tempdir()?;
    testkit::write_templates(templates.path())?;
    let etc = tempfile::tempdir()?;
    let (host, port, subscribe, broker) = match &args.external {
        Some(addr) => {
            let (host, port) = addr
                .rsplit_once(':')
                .context("--external wants HOST:PORT")?;
            let port: u16 = port.parse().context("--external port")?;
            let toml = format!(
                "[subscribe]\nmode = \"external\"\n[subscribe.external]\nhost = {host:?}\n\
                 port = {port}\nshare_group = \"{schema}\"\n"
            );
            let broker = format!("external at {addr} (its memory is not in the hub's RSS)");
            (host.to_owned(), port, toml, broker)
        }
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let toml = format!("[subscribe.embedded]\nlisten = \"127.0.0.1:{port}\"\n");
            let broker = "embedded (rumqttd in the hub process)".to_owned();
            ("127.0.0.1".to_owned(), port, toml, broker)
        }
    };
    println!("broker: {broker}");
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = etc.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            // Plain TCP, so the figures stay comparable with earlier runs (TLS is the default).
            "templates_dir = {:?}\n{subscribe}[load]\nurl = {:?}\nschema = \"{schema}\"\n\
             [http]\nlisten = \"{http}\"\n[tls]\nallow_plaintext = true\n",
            templates.path(),
            args.pg
        ),
    )?;
    let exe = std::env::current_exe()?.with_file_name("hub");
    let mut child = tokio::process::Command::new(&exe)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id().context("hub pid")?;
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // The hub serves HTTP once it is subscribed: with an external broker, records published
    // before that would have no subscriber.
    let up = Instant::now();
    while !healthy(http).await {
        ensure!(
            up.elapsed() < Duration::from_secs(60),
            "hub not healthy within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut clients = Vec::new();
    for d in &devs {
        clients.push(connect(&host, port, d, &passwords[d]).await?);
    }

    // 2. Sustained throughput.
    let t = Instant::now();
    let mut tasks = Vec::new();
    let mut publishers = Vec::new();
    for ((client, receipts), recs) in clients.into_iter().zip(records) {
        publishers.push(client.clone());
        tasks.push(tokio::spawn(outbox(client, receipts, recs, args.window)));
    }
    let mut streams = Vec::new();
    for task in tasks {
        streams.push(task.await??);
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    println!(
        "hub_records_per_s {rate:.0}  ratio_to_copy {:.2}",
        rate / copy_rate
    );

    // 3. Latency at a fixed rate.
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<(Receipt, Instant)>();
    for mut receipts in streams {
        let tx = lat_tx.clone();
        tokio::spawn(async move {
            while let Some(r) = receipts.recv().await {
                if tx.send(r).is_err() {
                    break;
                }
            }
        });
    }
    let mut latencies = Vec::new();
    let mut sent: HashMap<RecordId, Instant> = HashMap::new();
    let n = args.rate * args.latency_secs;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = Instant::now();
    for i in 0..n {
        let k = (i % args.devices) as usize;
        let d = &devs[k];
        let r = testkit::record(d, per + i);
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        sent.insert(r.record_id.clone(), Instant::now());
        publishers[k]
            .publish(
                DeviceTopic::Records.topic(d),
                QoS::AtLeastOnce,
                false,
                record::encode(&r),
            )
            .await?;
        while let Ok((receipt, at)) = lat_rx.try_recv() {
            if let Some(s) = sent.get(&receipt.record_id) {
                latencies.push(at.duration_since(*s));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (latencies.len() as u64) < n && Instant::now() < deadline {
        if let Ok(Some((receipt, at))) =
            tokio::time::timeout(Duration::from_secs(1), lat_rx.recv()).await
        {
            if let Some(s) = sent.get(&receipt.record_id) {
                latencies.push(at.duration_since(*s));
            }
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "latency_at_{}_per_s receipts {}/{}  p50_ms {:.1}  p99_ms {:.1}",
        args.rate,
        latencies.len(),
        n,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "hub_peak_rss_mib {:.1}",
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    sampler.abort();
    child.kill().await.ok();
    Ok(())
}

/// Publishes `recs` keeping at most `window` without a receipt; returns the receipts stream.
async fn outbox(
    client: AsyncClient,
    mut receipts: Receipts,
    recs: Vec<Record>,
    window: usize,
) -> anyhow::Result<Receipts> {
    let topic = DeviceTopic::Records.topic(&recs[0].device_id);
    let mut next = 0;
    let mut done = 0;
    while done < recs.len() {
        while next < recs.len() && next - done < window {
            client
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    record::encode(&recs[next]),
                )
                .await?;
            next += 1;
        }
        let (r, _) = tokio::time::timeout(Duration::from_secs(60), receipts.recv())
            .await
            .context("no receipt within 60 s")?
            .context("receipts closed")?;
        ensure!(
            r.outcome != record::ReceiptOutcome::Rejected,
            "rejected: {:?}",
            r.reason
        );
        done += 1;
    }
    Ok(receipts)
}

async fn connect(
    host: &str,
    port: u16,
    d: &DeviceId,
    password: &str,
) -> anyhow::Result<(AsyncClient, Receipts)> {
    let mut o = MqttOptions::new(d.as_str(), host, port);
    o.set_credentials(d.as_str(), password)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_keep_alive(Duration::from_secs(60))
        .set_inflight(500);
    let (client, mut el) = AsyncClient::new(o, 1000);
    client
        .subscribe(DeviceTopic::Receipts.topic(d), QoS::AtLeastOnce)
        .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = ready_tx.take() {
                        t.send(()).ok();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(r) = record::decode::<Receipt>(&p.payload) {
                        if tx.send((r, Instant::now())).is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .context("device subscribe")??;
    Ok((client, rx))
}

async fn copy_chunk(c: &mut tokio_postgres::Client, chunk: &[Record]) -> anyhow::Result<()> {
    let tx = c.transaction().await?;
    let sink = tx
        .copy_in(
            "COPY records (record_id, device_id, device_type, template, template_version, firmware, \
             patient_id, source_file, image_sha256, model_version, agent_version, captured_at, \
             recognized_at, received_at, review_count, payload) FROM STDIN BINARY",
        )
        .await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT4,
        Type::JSONB,
    ];
    let mut w = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    let now = chrono::Utc::now();
    for r in chunk {
        let payload: serde_json::Value = serde_json::from_slice(&record::encode(r))?;
        let version = r.template_version as i32;
        w.as_mut()
            .write(&[
                &r.record_id.as_str(),
                &r.device_id.as_str(),
                &r.device_type,
                &r.template_id,
                &version,
                &r.firmware,
                &r.patient_id,
                &r.source_file,
                &r.image_sha256,
                &r.model_version,
                &r.agent_version,
                &r.captured_at,
                &r.recognized_at,
                &now,
                &0i32,
                &payload,
            ])
            .await?;
    }
    w.finish().await?;
    let refs: Vec<&Record> = chunk.iter().collect();
    hub::load::batch::copy_measurements(&tx, &refs).await?;
    tx.commit().await?;
    Ok(())
}

/// `GET /healthz` answers 200.
async fn healthy(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let mut answer = Vec::new();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.is_ok()
        && s.read_to_end(&mut answer).await.is_ok()
        && answer.starts_with(b"HTTP/1.0 200") | answer.starts_with(b"HTTP/1.1 200")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
