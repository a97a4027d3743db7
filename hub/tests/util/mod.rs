//! Test harness: a PostgreSQL schema per test (dropped at the end), hubs started in-process on
//! free ports, MQTT device and reader clients, HTTPS requests, and waiting helpers. Deadlines
//! here are guard rails against hangs, never assertions about speed.
//!
//! Hubs start as they do out of the box: TLS on both listeners with the certificate the hub
//! generates at first start (in the test's temp folder). [`TestHub::broker`] and
//! [`TestHub::request`] trust that hub's CA, so every test talks TLS without asking for it.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hub::config::{BrokerMode, HubConfig};
use record::{DeviceId, Receipt, Record, RecordId};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Generous guard against hangs.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// PostgreSQL connection string for tests.
/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn pg_url() -> String {
    std::env::var("EXAMLINK_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=postgres".into())
}

/// A schema that is dropped when this guard drops.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hubtest_{tag}_{}_{}_{:04x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        Self { name }
    }

    /// A client whose search_path is this schema.
    pub async fn client(&self) -> tokio_postgres::Client {
        let mut cfg: tokio_postgres::Config = pg_url().parse().unwrap();
        cfg.options(format!("-c search_path={}", self.name));
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL");
        tokio::spawn(conn);
        client
    }

    /// Creates the schema's tables (as a hub would at start).
    pub async fn migrate(&self) {
        let mut c = self.client().await;
        hub::load::migrate::migrate(&mut c, &self.name)
            .await
            .unwrap();
    }

    /// Registers a device; returns its password.
    pub async fn add_device(&self, id: &str, device_type: &str) -> String {
        let c = self.client().await;
        let d = DeviceId::new(id).unwrap();
        hub::auth::add_device(&c, "cli:test", &d, device_type)
            .await
            .unwrap()
            .expose()
            .to_owned()
    }

    /// Creates a person's account; returns the password.
    pub async fn add_user(&self, name: &str, role: hub::users::UserRole) -> String {
        let c = self.client().await;
        hub::users::add_user(&c, "cli:test", name, role, None)
            .await
            .unwrap()
            .expose()
            .to_owned()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Asserts that the `records` table holds exactly the records `expected`: every one present,
    /// no other id (a lost record and a stray or duplicated one both fail, and the message names
    /// them).
    pub async fn assert_record_ids(&self, expected: impl IntoIterator<Item = RecordId>) {
        let want: BTreeSet<String> = expected.into_iter().map(String::from).collect();
        let rows = self
            .client()
            .await
            .query("SELECT record_id FROM records", &[])
            .await
            .unwrap();
        let got: BTreeSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        let missing: Vec<&String> = want.difference(&got).collect();
        let unexpected: Vec<&String> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "records table: {} of {} expected ids missing {missing:?}; {} unexpected ids {unexpected:?}",
            missing.len(),
            want.len(),
            unexpected.len()
        );
    }

    /// Waits until `sql` (a count) reaches `n`; returns the last value.
    pub async fn wait_count(&self, sql: &str, n: i64) -> i64 {
        let c = self.client().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let v: i64 = c.query_one(sql, &[]).await.unwrap().get(0);
            if v >= n || tokio::time::Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let cfg: tokio_postgres::Config = pg_url().parse().unwrap();
                if let Ok((c, conn)) = cfg.connect(tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await
                        .ok();
                }
            });
        })
        .join()
        .ok();
    }
}

/// Where an MQTT client connects: a port on 127.0.0.1, with TLS trusting `ca` (PEM) or plain.
#[derive(Debug, Clone)]
pub struct Broker {
    pub port: u16,
    pub ca: Option<Vec<u8>>,
}

impl Broker {
    /// Plain MQTT (the shared Mosquitto).
    pub fn plain(port: u16) -> Self {
        Self { port, ca: None }
    }

    /// MQTT over TLS, trusting the CA file at `ca`.
    pub fn tls(port: u16, ca: &std::path::Path) -> Self {
        Self {
            port,
            ca: Some(std::fs::read(ca).expect("CA file readable")),
        }
    }

    /// Client options for `client_id`.
    pub fn options(&self, client_id: &str) -> MqttOptions {
        match &self.ca {
            None => MqttOptions::new(client_id, "127.0.0.1", self.port),
            Some(ca) => {
                // The generated certificate names localhost and 127.0.0.1.
                let mut o = MqttOptions::new(client_id, "localhost", self.port);
                o.set_transport(rumqttc::Transport::tls(ca.clone(), None, None));
                o
            }
        }
    }
}

/// A hub running in this process.
pub struct TestHub {
    pub mqtt: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// The CA file clients trust (`None` when the test configured plaintext or its own cert).
    pub ca_file: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hub::HubError>>>,
    _dir: tempfile::TempDir,
}

impl TestHub {
    pub fn config(
        schema: &TestSchema,
        templates: PathBuf,
        mode: BrokerMode,
        group: &str,
    ) -> HubConfig {
        let mut c = HubConfig {
            templates_dir: templates.clone(),
            ..Default::default()
        };
        c.load.url = pg_url();
        c.load.schema = schema.name.clone();
        c.load.retry_max_ms = 500;
        c.subscribe.mode = mode;
        c.subscribe.embedded.listen = "127.0.0.1:0".parse().unwrap();
        c.subscribe.external.share_group = group.to_owned();
        c.http.listen = "127.0.0.1:0".into();
        c.tls.generate_dir = templates.with_file_name("tls");
        c
    }

    /// Starts a hub and waits until it is subscribed and accepting.
    pub async fn start(schema: &TestSchema, mode: BrokerMode, group: &str) -> Self {
        Self::start_with(schema, mode, group, |_| {}).await
    }

    pub async fn start_with(
        schema: &TestSchema,
        mode: BrokerMode,
        group: &str,
        tweak: impl FnOnce(&mut HubConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let templates = dir.path().join("templates");
        std::fs::create_dir_all(&templates).unwrap();
        hub::testkit::write_templates(&templates).unwrap();
        let mut config = Self::config(schema, templates, mode, group);
        tweak(&mut config);
        let h = hub::Hub::bind(config).await.expect("hub binds");
        let (mqtt, http) = (h.mqtt_addr(), h.http_addr());
        let ca_file = h.ca_file().map(|p| p.to_owned());
        let mut ready = h.ready();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(h.run(async move {
            rx.await.ok();
        }));
        tokio::time::timeout(PATIENCE, ready.wait_for(|r| *r))
            .await
            .expect("hub ready in time")
            .expect("hub running");
        Self {
            mqtt,
            http,
            ca_file,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// The embedded broker, as a device reaches it (TLS with the hub's CA unless plaintext).
    pub fn broker(&self) -> Broker {
        let port = self.mqtt.expect("embedded mode").port();
        match &self.ca_file {
            Some(ca) => Broker::tls(port, ca),
            None => Broker::plain(port),
        }
    }

    /// Stops the hub gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(PATIENCE, t)
                .await
                .expect("hub stops in time")
                .unwrap()
                .unwrap();
        }
    }

    /// `GET path` without credentials.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.request("GET", path, &[], "").await;
        (r.status, r.body)
    }

    /// `GET path` with `Authorization: Bearer token`.
    pub async fn get_as(&self, token: &str, path: &str) -> (u16, String) {
        let auth = format!("Bearer {token}");
        let r = self
            .request("GET", path, &[("Authorization", auth.as_str())], "")
            .await;
        (r.status, r.body)
    }

    /// A bearer token for `name` (`POST /api/token`); panics unless the login succeeds.
    pub async fn token(&self, name: &str, password: &str) -> String {
        let r = self.login("/api/token", name, password).await;
        assert_eq!(r.status, 200, "login of {name}: {}", r.body);
        r.body
    }

    /// POSTs a login form to `path` (`/api/token` or `/login`).
    pub async fn login(&self, path: &str, name: &str, password: &str) -> Response {
        let body = form(&[("name", name), ("password", password)]);
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &body,
        )
        .await
    }

    /// One HTTP/1.1 request over TLS to the hub (trusting its CA), or plain when it has none.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        http_request(
            self.http.unwrap(),
            self.ca_file.as_deref(),
            method,
            path,
            headers,
            body,
        )
        .await
    }
}

/// `k=v&...`, URL-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A rustls client trusting the CA file at `ca`.
pub fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    let config = hub::tls::client_config(ca).expect("CA usable");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// A minimal HTTP/1.1 client (the hub's own API needs nothing more): TLS trusting `ca` when
/// given, server name `localhost`.
pub async fn http_request(
    addr: SocketAddr,
    ca: Option<&std::path::Path>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    let mut buf = Vec::new();
    match ca {
        None => {
            let mut s = tcp;
            s.write_all(req.as_bytes()).await.unwrap();
            s.read_to_end(&mut buf).await.ok();
        }
        Some(ca) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut s = tls_connector(ca)
                .connect(name, tcp)
                .await
                .expect("TLS handshake");
            s.write_all(req.as_bytes()).await.unwrap();
            // A server closing without close_notify is fine for a test client.
            s.read_to_end(&mut buf).await.ok();
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    let head = text
        .split_once("\r\n\r\n")
        .map_or(text.as_str(), |(h, _)| h);
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(&body) } else { body };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// An MQTT client as a device or reader would run it.
pub struct Client {
    pub mqtt: AsyncClient,
    pub incoming: mpsc::UnboundedReceiver<(String, Bytes)>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects; `Err` carries the CONNACK refusal (or the connection error text).
pub async fn connect(
    broker: &Broker,
    client_id: &str,
    login: Option<(&str, &str)>,
    subscribe: &[String],
) -> Result<Client, String> {
    let mut o = broker.options(client_id);
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    connect_with(o, subscribe).await
}

/// As [`connect`], with options the caller prepared (transport, credentials).
pub async fn connect_with(mut o: MqttOptions, subscribe: &[String]) -> Result<Client, String> {
    o.set_max_packet_size(2 << 20, 2 << 20)
        .set_keep_alive(Duration::from_secs(30));
    let (mqtt, mut el) = AsyncClient::new(o, 1024);
    // Wait for the CONNACK.
    let first = tokio::time::timeout(PATIENCE, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return Ok(a.code),
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Ok(code),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no CONNACK".to_string())??;
    if first != ConnectReturnCode::Success {
        return Err(format!("{first:?}"));
    }
    for f in subscribe {
        mqtt.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap();
    }
    let (tx, incoming) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = oneshot::channel();
    let want = subscribe.len();
    let task = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        let mut acks = 0;
        if want == 0 {
            if let Some(t) = subscribed_tx.take() {
                t.send(()).ok();
            }
        }
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    tx.send((p.topic, p.payload)).ok();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acks += 1;
                    if acks == want {
                        if let Some(t) = subscribed_tx.take() {
                            t.send(()).ok();
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(PATIENCE, subscribed)
        .await
        .map_err(|_| "no SUBACK".to_string())?
        .ok();
    Ok(Client {
        mqtt,
        incoming,
        task,
    })
}

/// Connects a registered device to an embedded hub (username = client id = device id) and
/// subscribes it to its receipts.
pub async fn device(hub: &TestHub, id: &str, password: &str) -> Client {
    let d = DeviceId::new(id).unwrap();
    let receipts = record::topic::DeviceTopic::Receipts.topic(&d);
    connect(&hub.broker(), id, Some((id, password)), &[receipts])
        .await
        .expect("device connects")
}

impl Client {
    /// Publishes a record on its device's records topic.
    pub async fn publish_record(&self, r: &Record) {
        let topic = record::topic::DeviceTopic::Records.topic(&r.device_id);
        self.publish(&topic, record::encode(r)).await;
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.mqtt
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// The next message, or `None` after the guard deadline.
    pub async fn next(&mut self) -> Option<(String, Bytes)> {
        tokio::time::timeout(PATIENCE, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next receipt.
    pub async fn receipt(&mut self) -> Receipt {
        let (_, payload) = self.next().await.expect("a receipt");
        record::decode(&payload).expect("receipt decodes")
    }
}
