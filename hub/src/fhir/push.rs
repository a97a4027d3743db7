//! The push stage: drains `fhir_queue` (migration 0007: a row per record, added in the record's
//! own transaction and again at each new revision) to the FHIR server at `[fhir] push_url`.
//!
//! Each queued export's resources go out in order (Device, DocumentReference, Observations,
//! DiagnosticReport, Provenances) on one HTTP/1.1 connection, each as a **conditional update**
//! on its business identifier, `PUT <base>/<Type>?identifier=<system>|<value>`, so sending
//! again changes nothing. The pushed bodies carry no `id` (the server keeps its own) and their
//! references are logical (by identifier), so they hold on any server. Provenance has no
//! identifier in R4: it goes as `PUT <base>/Provenance/<id>` (update as create) with the
//! hub's stable id. Headers: `Content-Type` and `Accept` `application/fhir+json`, and
//! `Authorization: Bearer` when a token is configured.
//!
//! The queue row goes only after every resource was accepted (2xx); on any failure the export
//! waits `push_retry_initial_ms`, doubling per failure up to `push_retry_max_secs`, and is sent
//! again whole. The stage never touches ingest: the load stage only adds a row.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::PushTarget;
use super::resources::{self, ids, Rendered};
use super::store::{self, Filter};
use super::FhirConfig;
use crate::config::{ConfigError, Secret};
use crate::load::PgTarget;
use crate::supervise::sleep_or_stop;
use crate::telemetry;
use crate::templates::Catalog;

/// A push that failed, with a bounded kind for the metrics.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The server could not be reached.
    #[error("connecting to the FHIR server: {0}")]
    Connect(String),
    /// TLS failed.
    #[error("TLS with the FHIR server: {0}")]
    Tls(String),
    /// No answer in time.
    #[error("the FHIR server did not answer within the timeout")]
    Timeout,
    /// HTTP went wrong mid-request.
    #[error("HTTP: {0}")]
    Http(String),
    /// The server refused a resource.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Refused {
        /// Method.
        method: &'static str,
        /// Path and query.
        path: String,
        /// Status code.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// PostgreSQL.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

impl PushError {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            PushError::Connect(_) => "connect",
            PushError::Tls(_) => "tls",
            PushError::Timeout => "timeout",
            PushError::Http(_) => "http",
            PushError::Refused { status, .. } if *status < 500 => "http_4xx",
            PushError::Refused { .. } => "http_5xx",
            PushError::Db(_) => "db",
        }
    }
}

/// One request: method, path and query, body.
#[derive(Debug, Clone, PartialEq)]
pub struct Put {
    /// Path and query (`/fhir/Observation?identifier=...`).
    pub path: String,
    /// The resource as sent.
    pub body: Value,
}

/// Removes `reference` from every Reference that also names an identifier (the hub's literal
/// references mean nothing on another server).
fn logical_references(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("identifier") && map.contains_key("type") {
                map.remove("reference");
            }
            map.values_mut().for_each(logical_references);
        }
        Value::Array(items) => items.iter_mut().for_each(logical_references),
        _ => {}
    }
}

fn identifier_of(r: &Value) -> Option<(String, String)> {
    let i = r
        .get("masterIdentifier")
        .or_else(|| r.get("identifier").and_then(|i| i.get(0)))?;
    Some((
        i["system"].as_str()?.to_owned(),
        i["value"].as_str()?.to_owned(),
    ))
}

/// The requests that send `rendered` to a server whose base path is `base` (`/fhir`).
pub fn requests(base: &str, rendered: &Rendered) -> Vec<Put> {
    rendered
        .all()
        .into_iter()
        .map(|r| {
            let kind = r["resourceType"].as_str().unwrap_or_default();
            let mut body = r.clone();
            logical_references(&mut body);
            let path = match identifier_of(r) {
                Some((system, value)) => {
                    if let Some(m) = body.as_object_mut() {
                        m.remove("id");
                    }
                    let q =
                        serde_urlencoded::to_string([("identifier", format!("{system}|{value}"))])
                            .unwrap_or_default();
                    format!("{base}/{kind}?{q}")
                }
                None => format!("{base}/{kind}/{}", r["id"].as_str().unwrap_or_default()),
            };
            Put { path, body }
        })
        .collect()
}

/// The push stage's connection settings, checked at start.
pub struct Pusher {
    target: PushTarget,
    tls: Option<tokio_rustls::TlsConnector>,
    token: Option<Secret>,
    config: FhirConfig,
}

impl Pusher {
    /// `None` when `[fhir] push_url` is empty.
    pub fn new(config: &FhirConfig) -> Result<Option<Self>, ConfigError> {
        let Some(target) = config.push_target()? else {
            return Ok(None);
        };
        let tls = match (&config.push_tls_ca_file, target.tls) {
            (Some(ca), true) => {
                let c = crate::tls::client_config(ca).map_err(|e| ConfigError::Invalid {
                    key: "fhir.push_tls_ca_file",
                    problem: e.to_string(),
                })?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(c)))
            }
            _ => None,
        };
        if !target.tls && !crate::load::postgres::is_local_host(&target.host) {
            warn!(host = %target.host, "fhir.push_url is http to another host: patient data crosses the network in clear.");
        }
        let token = config.push_token().resolve("fhir.push_token_file")?;
        Ok(Some(Self {
            target,
            tls,
            token,
            config: config.clone(),
        }))
    }

    async fn connect(&self) -> Result<SendRequest<Body>, PushError> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| PushError::Connect(e.to_string()))?;
        match &self.tls {
            Some(tls) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| PushError::Tls(e.to_string()))?;
                let s = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| PushError::Tls(e.to_string()))?;
                handshake(s).await
            }
            None => handshake(tcp).await,
        }
    }

    /// Sends every request of one export on one connection; `Ok` when all were accepted.
    async fn send(&self, puts: &[Put]) -> Result<(), PushError> {
        let mut sender = self.connect().await?;
        let host = format!("{}:{}", self.target.host, self.target.port);
        for p in puts {
            let mut req = Request::builder()
                .method(Method::PUT)
                .uri(p.path.as_str())
                .header(header::HOST, host.as_str())
                .header(header::CONTENT_TYPE, "application/fhir+json")
                .header(header::ACCEPT, "application/fhir+json");
            if let Some(t) = &self.token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {}", t.expose()));
            }
            let req = req
                .body(Body::from(p.body.to_string()))
                .map_err(|e| PushError::Http(e.to_string()))?;
            sender
                .ready()
                .await
                .map_err(|e| PushError::Http(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| PushError::Http(e.to_string()))?;
            let status = resp.status();
            let body = axum::body::to_bytes(Body::new(resp.into_body()), 64 * 1024)
                .await
                .unwrap_or_default();
            if !status.is_success() {
                return Err(PushError::Refused {
                    method: "PUT",
                    path: p.path.clone(),
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body).chars().take(300).collect(),
                });
            }
        }
        Ok(())
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let initial = Duration::from_millis(self.config.push_retry_initial_ms);
        let max = Duration::from_secs(self.config.push_retry_max_secs);
        initial
            .saturating_mul(1u32 << attempts.clamp(0, 20) as u32)
            .min(max)
    }

    /// Drains the queue until `stop`; errors are retried, never returned.
    pub async fn run(self, db: PgTarget, catalog: Arc<Catalog>, mut stop: watch::Receiver<bool>) {
        info!(host = %self.target.host, port = self.target.port, "FHIR push running.");
        let ctx = super::serve::render_context(&self.config);
        let poll = Duration::from_millis(self.config.push_poll_ms);
        let mut client: Option<tokio_postgres::Client> = None;
        let mut db_backoff = poll;
        while !*stop.borrow() {
            let c = match client.take().filter(|c| !c.is_closed()) {
                Some(c) => c,
                None => match db.connect().await {
                    Ok(c) => c,
                    Err(error) => {
                        warn!(%error, "FHIR push: PostgreSQL unavailable; retrying.");
                        db_backoff = (db_backoff * 2).min(Duration::from_secs(10));
                        sleep_or_stop(&mut stop, db_backoff).await;
                        continue;
                    }
                },
            };
            db_backoff = poll;
            match self.round(&c, &catalog, &ctx, &mut stop).await {
                Ok(0) => sleep_or_stop(&mut stop, poll).await,
                Ok(_) => {}
                Err(error) => {
                    metrics::counter!(telemetry::FHIR_PUSH_FAILURES, "kind" => "db").increment(1);
                    warn!(%error, "FHIR push: reading the queue failed.");
                    sleep_or_stop(&mut stop, poll).await;
                    continue;
                }
            }
            client = Some(c);
        }
    }

    /// One pass over the due part of the queue: how many exports were due.
    async fn round(
        &self,
        c: &tokio_postgres::Client,
        catalog: &Catalog,
        ctx: &resources::RenderContext,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<usize, tokio_postgres::Error> {
        let backlog: i64 = c
            .query_one("SELECT count(*) FROM fhir_queue", &[])
            .await?
            .get(0);
        metrics::gauge!(telemetry::FHIR_PUSH_BACKLOG).set(backlog as f64);
        let due = c
            .query(
                "SELECT record_id, seq, attempts FROM fhir_queue WHERE next_attempt_at <= now() \
                 ORDER BY next_attempt_at, record_id LIMIT $1",
                &[&self.config.push_batch],
            )
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = due.iter().map(|r| r.get(0)).collect();
        let filter = Filter {
            record_ids: ids.clone(),
            limit: ids.len() as i64,
            ..Default::default()
        };
        let exams = store::exams(c, catalog, &filter).await?;
        for row in &due {
            if *stop.borrow() {
                break;
            }
            let (id, seq, attempts): (String, i64, i32) = (row.get(0), row.get(1), row.get(2));
            let Some(exam) = exams.iter().find(|e| e.record_id == id) else {
                c.execute(
                    "DELETE FROM fhir_queue WHERE record_id = $1 AND seq = $2",
                    &[&id, &seq],
                )
                .await?;
                continue;
            };
            let puts = requests(&self.target.path, &resources::render(exam, ctx));
            let timeout = Duration::from_millis(self.config.push_timeout_ms);
            // A shutdown does not wait for a slow server: the export stays queued.
            let sent = tokio::select! {
                r = tokio::time::timeout(timeout, self.send(&puts)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(PushError::Timeout),
                },
                _ = stop.wait_for(|s| *s) => break,
            };
            match sent {
                Ok(()) => {
                    c.execute(
                        "DELETE FROM fhir_queue WHERE record_id = $1 AND seq = $2",
                        &[&id, &seq],
                    )
                    .await?;
                    metrics::counter!(telemetry::FHIR_EXPORTS_PUSHED).increment(1);
                    metrics::counter!(telemetry::FHIR_RESOURCES_PUSHED)
                        .increment(puts.len() as u64);
                }
                Err(error) => {
                    let wait = self.backoff(attempts);
                    metrics::counter!(telemetry::FHIR_PUSH_FAILURES, "kind" => error.kind())
                        .increment(1);
                    warn!(record = %id, attempts = attempts + 1, retry_ms = wait.as_millis() as u64,
                          %error, "FHIR push failed; will retry.");
                    c.execute(
                        "UPDATE fhir_queue SET attempts = attempts + 1, last_error = $3, \
                         next_attempt_at = now() + make_interval(secs => $4) \
                         WHERE record_id = $1 AND seq = $2",
                        &[&id, &seq, &error.to_string(), &wait.as_secs_f64()],
                    )
                    .await?;
                }
            }
        }
        Ok(due.len())
    }
}

async fn handshake<S>(s: S) -> Result<SendRequest<Body>, PushError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| PushError::Http(e.to_string()))?;
    tokio::spawn(async move {
        conn.await.ok();
    });
    Ok(sender)
}

/// The identifier systems conditional updates use, by resource type (for docs and tests).
pub const CONDITIONAL: &[(&str, &str)] = &[
    ("Device", ids::DEVICE),
    ("DocumentReference", ids::IMAGE_SHA256),
    ("Observation", ids::OBSERVATION),
    ("DiagnosticReport", ids::REPORT),
];
