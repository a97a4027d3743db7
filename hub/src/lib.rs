//! The examlink hub: receives every device's records, decides what is trustworthy, stores it
//! in PostgreSQL exactly once, and republishes it to whoever listens live.
//!
//! Stages, in order, joined by bounded channels carrying record-crate types:
//!
//! 1. [`subscribe`]: MQTT in. Embedded `rumqttd` behind an authenticating, topic-checking
//!    [`gate`](subscribe::gate), or an external broker with a shared subscription.
//! 2. [`validate`]: schema version, template, every field's grammar/range/step, rules, dates.
//! 3. [`load`]: one transaction per batch, idempotent by record id; rejects stored too.
//! 4. [`republish`]: after COMMIT, the device's receipt and the live result; each review
//!    decision's new revision of a record, again on the live results topic.
//!
//! Every stage runs [`supervise`]d: one that ends unexpectedly fails `/healthz` and makes the
//! hub exit non-zero. [`templates`] keeps every template version the hub has seen.
//!
//! Beside them: [`fhir`] (FHIR R4 under `/fhir` and the optional push to a FHIR server),
//! [`status`] (agents' status and rejection messages), [`rejects`] (list, show and
//! replay what was rejected), [`review`] (people resolve flagged fields), [`quality`] (blind
//! checks of sampled `ok` fields and the ok-but-wrong estimate), [`http`] (health, metrics,
//! query API, pages, behind logins), [`auth`] (device accounts), [`users`] (people's accounts,
//! roles and sessions), [`audit`] (the append-only trail of reads and changes), [`guard`]
//! (limits on unauthenticated clients), [`tls`] (the listeners' certificate), [`config`],
//! [`secret`], [`telemetry`].

pub mod audit;
pub mod auth;
pub mod config;
pub mod fhir;
pub mod guard;
pub mod http;
pub mod load;
pub mod quality;
pub mod rejects;
pub mod republish;
pub mod review;
pub mod secret;
pub mod status;
pub mod subscribe;
pub mod supervise;
pub mod telemetry;
pub mod templates;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
pub mod users;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use record::TemplateError;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::{BrokerMode, ConfigError, HubConfig};
use crate::guard::Guard;
use crate::load::{Db, Loader, PgTarget};
use crate::subscribe::gate::{self, GateContext};
use crate::subscribe::mqtt::Endpoint;
use crate::subscribe::{external, EmbeddedBroker, EmbeddedError, Publisher, Subscriber};
use crate::supervise::{StageHealth, Supervisor};
use crate::templates::Catalog;
use crate::validate::Validator;

/// How often the template versions are reloaded from PostgreSQL (another hub may add some).
const TEMPLATES_RELOAD: Duration = Duration::from_secs(60);

/// The hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Bad configuration or secret.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A template failed to load.
    #[error("loading templates")]
    Templates(#[from] TemplateError),
    /// A listener could not be bound.
    #[error("binding the {what} listener on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The embedded broker.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The listeners' TLS certificate or key.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsSetupError),
    /// Migrations failed for a reason retrying will not fix.
    #[error("migrating the database schema")]
    Migrate(#[source] tokio_postgres::Error),
    /// Storing or reading the template versions failed.
    #[error("storing the template versions in PostgreSQL")]
    TemplateVersions(#[source] tokio_postgres::Error),
    /// A stage ended while the hub was running; it shut down so a supervisor restarts it.
    #[error("{}", .0.join("; "))]
    StageEnded(Vec<String>),
}

/// A hub with its listeners bound, ready to [`run`](Hub::run).
pub struct Hub {
    config: HubConfig,
    templates: Vec<templates::Source>,
    target: PgTarget,
    gate: Option<TcpListener>,
    http: Option<TcpListener>,
    external: Option<Endpoint>,
    tls: Option<tls::HubTls>,
    push: Option<fhir::push::Pusher>,
    ready: watch::Sender<bool>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, HubError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Bind { what, addr, source })
}

impl Hub {
    /// Loads templates and secrets and binds the listeners (port 0 picks a free port).
    pub async fn bind(config: HubConfig) -> Result<Self, HubError> {
        let templates = templates::read_folder(&config.templates_dir)?;
        let target = PgTarget::new(&config.load)?;
        let (gate, external) = match config.subscribe.mode {
            BrokerMode::Embedded => (
                Some(bind("MQTT", config.subscribe.embedded.listen).await?),
                None,
            ),
            BrokerMode::External => {
                let e = external::endpoint(
                    &config.subscribe.external,
                    config.subscribe.max_packet_bytes,
                )?;
                (None, Some(e))
            }
        };
        let http = match config.http.listen_addr() {
            Some(a) => Some(bind("HTTP", a).await?),
            None => None,
        };
        let tls = tls::prepare(&config.tls)?;
        let push = fhir::push::Pusher::new(&config.fhir)?;
        if !target.is_local() && !target.uses_tls() {
            warn!("load.tls = \"disable\" with a database on another host: the hub's database login and patient data cross the network in clear.");
        }
        Ok(Self {
            config,
            templates,
            target,
            gate,
            http,
            external,
            tls,
            push,
            ready: watch::channel(false).0,
        })
    }

    /// The device-facing MQTT address (embedded mode).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.gate.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTP address, when enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The CA file clients must trust, when the hub generated its own certificate.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().and_then(|t| t.ca_file.as_deref())
    }

    /// Whether the listeners speak TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Becomes `true` once the schema is migrated and the hub is subscribed and accepting.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Migrates the schema, starts every stage and runs until `shutdown` completes; then stops
    /// taking messages, finishes the batch in hand and sends its receipts.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HubError> {
        telemetry::prometheus();
        let (stop_tx, stop) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        {
            let stop_tx = stop_tx.clone();
            tokio::spawn(async move {
                shutdown.await;
                stop_tx.send(true).ok();
            });
        }
        if !migrate(&self.target, &stop).await? {
            return Ok(());
        }
        let catalog = {
            let client = self
                .target
                .connect()
                .await
                .map_err(HubError::TemplateVersions)?;
            templates::open_catalog(&client, &self.templates)
                .await
                .map(Arc::new)
                .map_err(HubError::TemplateVersions)?
        };
        info!(
            versions = catalog.snapshot().len(),
            "Template versions loaded."
        );
        let (sup, mut ended) = Supervisor::new(Arc::new(StageHealth::default()), stop.clone());
        let c = &self.config;
        // Separate connections: logins and device status, and the HTTP API (under a
        // statement_timeout). The load stage has its own.
        let db = Arc::new(Db::new(self.target.clone()));
        let api_db = Arc::new(Db::new(
            self.target
                .with_statement_timeout(c.load.api_statement_timeout_ms, "examlink-hub-api"),
        ));
        let guard = Guard::new(c.guard.clone());
        {
            // Make the dummy hash now, not during the first unknown login.
            let g = guard.clone();
            tokio::task::spawn_blocking(move || {
                g.dummy_hash();
            });
        }
        let acceptor = self.tls.as_ref().map(|t| t.acceptor.clone());
        let cap = c.queue_capacity;
        let (records_tx, records_rx) = mpsc::channel(cap);
        let (devices_tx, devices_rx) = mpsc::channel(1024);
        let (checked_tx, checked_rx) = mpsc::channel(cap);
        let (outcomes_tx, outcomes_rx) = mpsc::channel(cap);
        let max_packet = c.subscribe.max_packet_bytes;

        let (endpoint, filters, broker) = match self.external {
            Some(e) => (
                e,
                external::filters(Some(&c.subscribe.external.share_group)),
                None,
            ),
            None => {
                let e = &c.subscribe.embedded;
                let retention = subscribe::embedded::Retention {
                    segment_bytes: e.retention_segment_bytes,
                    segments: e.retention_segments,
                    results_bytes: e.results_retention_bytes,
                    other_bytes: e.receipts_retention_bytes,
                };
                let b = EmbeddedBroker::start(e.max_connections, max_packet, retention).await?;
                (b.endpoint(max_packet), external::filters(None), Some(b))
            }
        };
        let reject_cap = c.validate.reject_payload_cap_bytes;
        let validator = Validator::with_catalog(catalog.clone(), c.validate.clone());
        let validate = sup.spawn("validate", validate::run(validator, records_rx, checked_tx));
        let reload = sup.spawn(
            "templates",
            reload_templates(self.target.clone(), catalog.clone(), stop.clone()),
        );
        let loader = Loader::new(self.target.clone(), c.load.clone(), reject_cap);
        let load = sup.spawn("load", loader.run(checked_rx, outcomes_tx, stop.clone()));
        let receipts = Publisher::new(&endpoint, "pub");
        let results = Publisher::new(&endpoint, "res");
        let republish = sup.spawn(
            "republish",
            republish::run(receipts.client(), results.client(), outcomes_rx),
        );
        let revisions = sup.spawn(
            "revisions",
            republish::revisions::run(self.target.clone(), endpoint.clone(), stop.clone()),
        );
        let status_receipts = receipts.client();
        let (force_tx, force) = watch::channel(false);
        let publish = sup.spawn("publish", async move {
            tokio::join!(receipts.run(force.clone()), results.run(force));
        });
        let status = sup.spawn(
            "status",
            status::run(
                db.clone(),
                status_receipts,
                reject_cap,
                devices_rx,
                stop.clone(),
            ),
        );

        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let subscriber = Subscriber::new(&endpoint, filters).on_subscribed(subscribed_tx);
        let subscribe = sup.spawn(
            "subscribe",
            subscriber.run(records_tx.clone(), devices_tx, stop.clone()),
        );
        let mut wait_stop = stop.clone();
        tokio::select! {
            _ = subscribed => {}
            _ = wait_stop.wait_for(|s| *s) => {}
        }
        let gate_task = match (self.gate, broker) {
            (Some(listener), Some(b)) => {
                let e = &c.subscribe.embedded;
                let ctx = Arc::new(GateContext {
                    internal: b.internal_addr(),
                    tls: acceptor.clone(),
                    recheck_login: Duration::from_secs(e.recheck_login_secs),
                    secret: b.secret().clone(),
                    credentials: Arc::new(auth::Credentials::new(db.clone(), guard.clone())),
                    refused: records_tx.clone(),
                    max_packet_bytes: max_packet,
                    connect_timeout: Duration::from_millis(e.connect_timeout_ms),
                    max_connections: e.max_connections,
                    max_connect_bytes: e.max_connect_bytes,
                    guard: guard.clone(),
                });
                Some(sup.spawn("gate", gate::run(listener, ctx, stop.clone())))
            }
            _ => None,
        };
        drop(records_tx);
        let http_task = self.http.map(|listener| {
            let session_ttl = Duration::from_secs(c.http.session_ttl_secs);
            let logins = Arc::new(users::Logins::new(db.clone(), guard.clone(), session_ttl));
            let state = http::HttpState {
                db: api_db.clone(),
                logins: logins.clone(),
                online_window_secs: c.http.online_window_secs,
                session_ttl,
                tls: acceptor.is_some(),
                stages: sup.health(),
                catalog: catalog.clone(),
                review: Arc::new(c.review.clone()),
                fhir: Arc::new(c.fhir.clone()),
            };
            let app = http::router(state);
            let header_timeout = Duration::from_millis(c.http.header_timeout_ms);
            let (stop_http, mut stop_prune) = (stop.clone(), stop.clone());
            sup.spawn("http", async move {
                let prune = async move {
                    loop {
                        if let Err(error) = logins.prune().await {
                            warn!(%error, "Pruning old sessions failed.");
                        }
                        tokio::select! {
                            _ = stop_prune.wait_for(|s| *s) => break,
                            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                        }
                    }
                };
                tokio::join!(
                    http::serve::serve(listener, app, acceptor, guard, header_timeout, stop_http),
                    prune
                );
            })
        });
        let push_task = self.push.map(|p| {
            sup.spawn(
                "fhir_push",
                p.run(self.target.clone(), catalog.clone(), stop.clone()),
            )
        });
        self.ready.send(true).ok();
        info!(mode = ?c.subscribe.mode, "Hub running.");

        let mut wait_stop = stop.clone();
        tokio::select! {
            _ = wait_stop.wait_for(|s| *s) => {}
            Some(stage) = ended.recv() => {
                tracing::error!(stage, "Stopping the hub: a stage ended.");
                stop_tx.send(true).ok();
            }
        }
        info!("Shutting down: finishing the batch in hand.");
        joined("subscribe", subscribe.await);
        if let Some(g) = gate_task {
            joined("gate", g.await);
        }
        joined("validate", validate.await);
        joined("load", load.await);
        joined("republish", republish.await);
        joined("revisions", revisions.await);
        if tokio::time::timeout(Duration::from_secs(5), publish)
            .await
            .is_err()
        {
            force_tx.send(true).ok();
        }
        joined("status", status.await);
        joined("templates", reload.await);
        if let Some(h) = http_task {
            joined("http", h.await);
        }
        if let Some(p) = push_task {
            joined("fhir_push", p.await);
        }
        let failed = sup.health().failed();
        if !failed.is_empty() {
            tracing::error!(failed = ?failed, "Hub stopped after a stage failure.");
            return Err(HubError::StageEnded(failed));
        }
        info!("Hub stopped.");
        Ok(())
    }
}

/// Reloads the template versions from PostgreSQL every [`TEMPLATES_RELOAD`] until shutdown.
async fn reload_templates(target: PgTarget, catalog: Arc<Catalog>, stop: watch::Receiver<bool>) {
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(TEMPLATES_RELOAD) => {}
        }
        let loaded = async {
            let client = target.connect().await?;
            templates::load(&client).await
        };
        match loaded.await {
            Ok(v) => catalog.merge(v),
            Err(error) => {
                warn!(%error, "Reloading the template versions failed; keeping those loaded.")
            }
        }
    }
}

fn joined(stage: &str, r: Result<(), tokio::task::JoinError>) {
    if let Err(error) = r {
        tracing::error!(stage, %error, "Stage task failed.");
    }
}

/// Binds and runs a hub until `shutdown` completes.
pub async fn run(
    config: HubConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    Hub::bind(config).await?.run(shutdown).await
}

/// Applies migrations, retrying while the database is unreachable; `false` on shutdown first.
async fn migrate(target: &PgTarget, stop: &watch::Receiver<bool>) -> Result<bool, HubError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut client = target.connect().await?;
            load::migrate::migrate(&mut client, target.schema()).await
        };
        match attempt.await {
            Ok(_) => return Ok(true),
            Err(e) if load::is_retriable(&e) => {
                warn!(error = %e, retry_ms = backoff.as_millis() as u64, "PostgreSQL unavailable at start; retrying.");
                let mut s = stop.clone();
                tokio::select! {
                    _ = s.wait_for(|s| *s) => return Ok(false),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(HubError::Migrate(e)),
        }
    }
}
