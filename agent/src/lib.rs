//! examlink agent: runs on every exam-device PC and turns each new export into a record that
//! reaches the hub exactly once, through crashes and days offline.
//!
//! Stages, in data-flow order:
//! - [`ingest`]: watch export folders, take complete files, digest, skip what was taken.
//! - [`recognize`]: identify layout → align → crop → model → decode → validate.
//! - [`assemble`]: build the record-crate `Record` (with review crops for doubtful fields), or
//!   quarantine the file and build a `Rejection`; runs recognition on a bounded worker pool.
//! - [`outbox`]: durable queue; a record leaves only on the hub's receipt.
//! - [`publish`]: MQTT to the hub, resend until receipted, status and last will.
//!
//! Plus [`config`], [`telemetry`], [`logfile`] (the rotated log file), [`paths`] (Windows-aware
//! folder comparisons and default locations) and, on Windows, [`service`]. [`run`] wires the stages in that order with bounded
//! channels; `main.rs` only parses the command line, installs tracing, loads the configuration
//! and calls [`run`].

pub mod assemble;
pub mod config;
pub mod ingest;
pub mod logfile;
pub mod outbox;
pub mod paths;
pub mod publish;
pub mod recognize;
pub mod service;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::assemble::sample::Draw;
use crate::assemble::stage::{AssembleSettings, AssembleStage, RecognizeFn};
use crate::config::Settings;
use crate::ingest::{Claims, Ingest};
use crate::outbox::{OutboxStage, Store};
use crate::publish::Publisher;
use crate::telemetry::Health;

/// This agent's version (reported in records and status messages).
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Name of the outbox database directory inside `data_dir`.
pub const OUTBOX_DIR: &str = "outbox";

/// How long stages get to finish after shutdown before `run` returns anyway.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The outbox database failed.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    /// The publisher stopped on an error.
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    /// The recognizer (templates or model) could not be loaded.
    #[error("loading the recognizer: {0}")]
    Recognizer(#[from] recognize::LoadError),
    /// A stage task died (a bug).
    #[error("{stage} task failed: {source}")]
    Task {
        /// Which task.
        stage: &'static str,
        /// How it died.
        source: tokio::task::JoinError,
    },
    /// The metrics listener could not be started.
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the agent on its own runtime until `shutdown` resolves: what `agent run` and the
/// Windows service do.
pub fn run_blocking(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), anyhow::Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the runtime: {e}"))?;
    let result = runtime.block_on(run(settings, shutdown));
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(result?)
}

fn stop_signal(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _stopped = rx.wait_for(|s| *s).await;
    }
}

/// Runs the agent until `shutdown` resolves (or the outbox fails).
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let store = Store::open(
        &settings.data_dir.join(OUTBOX_DIR),
        settings.outbox.max_bytes,
    )?;
    let backlog = store.backlog();
    info!(
        device = %settings.device, version = AGENT_VERSION, backlog = backlog.messages,
        backlog_bytes = backlog.bytes, deferred = backlog.deferred, "Agent starting."
    );
    if backlog.rejected > 0 {
        warn!(
            rejected = backlog.rejected,
            "The outbox keeps messages the hub rejected; see `agent outbox list --rejected`."
        );
    }
    let recognize = {
        let settings = settings.clone();
        let recognizer =
            tokio::task::spawn_blocking(move || recognize::load::from_settings(&settings))
                .await
                .map_err(|source| RunError::Task {
                    stage: "recognizer loading",
                    source,
                })??;
        let call: Arc<RecognizeFn> = Arc::new(move |bytes: &[u8], name: &str, draw: &Draw| {
            recognizer
                .recognize_drawn(bytes, name, Some(draw))
                .map(Into::into)
        });
        call
    };
    let health = Health::new(settings.recognize.layout_alarm_after);
    if let Some((_, d)) = store
        .deferrals()?
        .into_iter()
        .min_by_key(|(_, d)| d.first_deferred_at)
    {
        health.set_deferred_error(telemetry::deferred_error(backlog.deferred, &d.reason));
    }
    let claims = Claims::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(addr) = settings.metrics_listen {
        telemetry::serve_metrics(addr, stop_signal(&stop_rx))
            .await
            .map_err(|source| RunError::Metrics { addr, source })?;
    }
    telemetry::set_backlog(backlog);

    let workers = settings.recognize.workers.max(1);
    let (taken_tx, taken_rx) = mpsc::channel(workers * 2);
    let (out_tx, out_rx) = mpsc::channel(64);

    let ingest = Ingest::new(
        settings.ingest.clone(),
        store.clone(),
        claims.clone(),
        health.clone(),
    );
    let assemble = AssembleStage::new(
        AssembleSettings {
            device: settings.device.clone(),
            workers,
            max_file_bytes: settings.ingest.max_file_bytes,
            max_pixels: settings.recognize.max_pixels,
            after_take: settings.ingest.after_take,
            quarantine: settings.quarantine.clone(),
            quality_sample: settings.recognize.quality_sample,
        },
        recognize,
        claims.clone(),
        health.clone(),
    );
    let outbox_stage = OutboxStage::new(store.clone(), claims, health.clone());
    let publisher = Publisher::new(
        settings.mqtt.clone(),
        store.clone(),
        settings.delivery(),
        health,
    );

    let mut stages = tokio::task::JoinSet::new();
    stages.spawn(ingest.run(taken_tx, stop_signal(&stop_rx)));
    stages.spawn(assemble.run(taken_rx, out_tx, stop_signal(&stop_rx)));
    stages.spawn(outbox_stage.run(out_rx, stop_signal(&stop_rx)));
    let mut publish = tokio::spawn(publisher.run(stop_signal(&stop_rx)));

    let result = tokio::select! {
        _ = shutdown => {
            info!("Shutting down.");
            Ok(())
        }
        r = &mut publish => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                error!(error = %e, "Publisher failed; stopping.");
                Err(RunError::Publish(e))
            }
            Err(source) => Err(RunError::Task {
                stage: "publish",
                source,
            }),
        },
    };
    let _sent = stop_tx.send(true);
    let _stopped = tokio::time::timeout(STOP_GRACE, async {
        while stages.join_next().await.is_some() {}
        if !publish.is_finished() {
            let _published = (&mut publish).await;
        }
    })
    .await;
    stages.abort_all();
    store.flush()?;
    info!(backlog = store.backlog().messages, "Agent stopped.");
    result
}
