//! The assemble stage: for each taken export, on a bounded pool of blocking workers (never on
//! the async runtime): screen → recognize → build the record, or quarantine the file and build
//! the rejection. Then hands the message to the outbox stage.
//!
//! Bad input never stops the stage: every failure of an export — including a panic inside the
//! recognizer — becomes a rejection of that export alone.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::Utc;
use record::{DeviceId, Rejection};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, error, info_span, warn};

use super::build::{build_record, Recognition, Refusal};
use super::quarantine::{quarantine, QuarantineConfig, QuarantineMode};
use super::sample::Draw;
use super::screen::screen;
use crate::ingest::{AfterTake, Claims, Taken};
use crate::outbox::stage::Outgoing;
use crate::outbox::Message;
use crate::telemetry::{self, Health};

/// Rejection code: the recognizer panicked on this export (a bug, reported with the file).
pub const RECOGNIZER_PANIC: &str = "recognizer_panic";

/// The recognition call: export bytes, file name and the export's quality-sampling draw (which
/// `ok` fields keep their crop) to a result or a refusal.
pub type RecognizeFn = dyn Fn(&[u8], &str, &Draw<'_>) -> Result<Recognition, Refusal> + Send + Sync;

/// Limits and routing the stage needs.
#[derive(Debug, Clone)]
pub struct AssembleSettings {
    /// This device.
    pub device: DeviceId,
    /// Parallel recognitions.
    pub workers: usize,
    /// `ingest.max_file_bytes` (for the refusal message).
    pub max_file_bytes: u64,
    /// `recognize.max_pixels`.
    pub max_pixels: u64,
    /// What to do with an export once queued.
    pub after_take: AfterTake,
    /// Where bad exports go.
    pub quarantine: QuarantineConfig,
    /// `recognize.quality_sample`: the share of `ok` fields drawn for a blind check.
    pub quality_sample: f64,
}

/// The assemble stage.
pub struct AssembleStage {
    settings: AssembleSettings,
    recognize: Arc<RecognizeFn>,
    claims: Claims,
    health: Health,
}

impl std::fmt::Debug for AssembleStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssembleStage")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AssembleStage {
    /// A stage calling `recognize` for each export.
    pub fn new(
        settings: AssembleSettings,
        recognize: Arc<RecognizeFn>,
        claims: Claims,
        health: Health,
    ) -> Self {
        Self {
            settings,
            recognize,
            claims,
            health,
        }
    }

    /// Runs until `rx` closes or `shutdown`; exports in progress then are abandoned (they were
    /// not taken and are read again at the next start).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Taken>,
        tx: mpsc::Sender<Outgoing>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let workers = Arc::new(Semaphore::new(self.settings.workers.max(1)));
        let me = Arc::new(self);
        loop {
            let permit = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                p = workers.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let taken = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                t = rx.recv() => match t { Some(t) => t, None => break },
            };
            let me = me.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let path = taken.path.clone();
                let me2 = me.clone();
                let out = tokio::task::spawn_blocking(move || me2.process(taken)).await;
                match out {
                    Ok(Some(o)) => {
                        if tx.send(o).await.is_err() {
                            me.claims.release(&path);
                        }
                    }
                    Ok(None) => me.claims.release(&path),
                    Err(e) => {
                        error!(file = %path.display(), error = %e, "Assemble worker failed.");
                        me.claims.release(&path);
                    }
                }
                drop(permit);
            });
        }
    }

    /// Screens, recognizes and builds the message for one export (blocking).
    pub fn process(&self, taken: Taken) -> Option<Outgoing> {
        let device = &self.settings.device;
        let span =
            info_span!("export", device = %device, file = %taken.file_name, sha256 = %taken.sha256);
        let _entered = span.enter();
        let result = screen(
            &taken,
            self.settings.max_file_bytes,
            self.settings.max_pixels,
        )
        .and_then(|_| {
            let bytes = taken.bytes.as_deref().unwrap_or_default();
            let draw = Draw::new(device, &taken.sha256, self.settings.quality_sample);
            let call = AssertUnwindSafe(|| (self.recognize)(bytes, &taken.file_name, &draw));
            std::panic::catch_unwind(call).unwrap_or_else(|_| {
                Err(Refusal::new(
                    RECOGNIZER_PANIC,
                    "the recognizer crashed on this file (a bug: please report it with the file)",
                ))
            })
        });
        match result {
            Ok(recognition) => {
                let record = build_record(
                    device,
                    &taken,
                    recognition,
                    Utc::now(),
                    self.settings.quality_sample,
                );
                self.health.export_recognized();
                let flagged = record.review_count();
                if flagged > 0 {
                    metrics::counter!(telemetry::FIELDS_FLAGGED).increment(flagged as u64);
                }
                let sampled = record.sample_crops.len();
                if sampled > 0 {
                    metrics::counter!(telemetry::FIELDS_SAMPLED).increment(sampled as u64);
                }
                if let Some(a) = &record.alignment {
                    metrics::counter!(telemetry::EXPORTS_BEYOND_DECLARED).increment(1);
                    debug!(
                        file = %taken.file_name, template = %record.template_id,
                        scale = a.scale, rotation_deg = a.rotation_deg,
                        "Export read past its template's declared variation: its record carries the alignment."
                    );
                }
                debug!(
                    id = %record.record_id, template = %record.template_id, flagged, sampled,
                    "Export recognized."
                );
                Some(Outgoing {
                    message: Message::Record(Box::new(record)),
                    remove_source: self.settings.after_take == AfterTake::Delete,
                    source: taken.path,
                })
            }
            Err(refusal) => self.reject(taken, refusal),
        }
    }

    fn reject(&self, taken: Taken, refusal: Refusal) -> Option<Outgoing> {
        let at = Utc::now();
        let q = &self.settings.quarantine;
        let quarantined_as = match quarantine(&q.dir, &taken, &refusal, at) {
            Ok(p) => p,
            Err(e) => {
                error!(
                    file = %taken.path.display(), code = %refusal.code, error = %e,
                    "Could not quarantine a bad export; it stays where it is and is retried later."
                );
                self.health
                    .set_error(format!("quarantine {}: {e}", q.dir.display()));
                return None;
            }
        };
        warn!(
            file = %taken.path.display(), code = %refusal.code, reason = %refusal.reason,
            quarantined_as = %quarantined_as.display(), "Export rejected."
        );
        self.health.export_rejected(&refusal.code, &refusal.reason);
        let rejection = Rejection {
            device_id: self.settings.device.clone(),
            source_file: taken.file_name.clone(),
            file_sha256: taken.sha256.clone(),
            code: refusal.code,
            reason: refusal.reason,
            quarantined_as: quarantined_as.display().to_string(),
            at,
        };
        Some(Outgoing {
            message: Message::Rejection(rejection),
            remove_source: q.mode == QuarantineMode::Move
                || self.settings.after_take == AfterTake::Delete,
            source: taken.path,
        })
    }
}
