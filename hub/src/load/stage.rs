//! The load stage loop.
//!
//! - Batching: take what is queued, up to `batch_max_records`, waiting at most
//!   `batch_linger_ms` for more.
//! - Database down (a retriable error): keep the batch in hand, stop taking new work (the
//!   bounded channels fill and the broker pushes back), reconnect with exponential backoff,
//!   write the same batch again. Nothing is acknowledged before COMMIT, so nothing is lost:
//!   agents keep unreceipted records and resend them.
//! - A permanent error (the database refuses some value): split the batch until the refused
//!   record is alone, then store it as a reject (code `database`).
//! - Shutdown: the stage finishes the batch in hand and whatever is queued, then ends when its
//!   input closes. If the database is down at shutdown it gives up the retry instead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tracing::{debug, error, info, warn};

use crate::config::LoadConfig;
use crate::load::batch::{self, reject_valid, Outcome, Statements};
use crate::load::{is_retriable, PgTarget};
use crate::telemetry;
use crate::validate::Checked;
use record::ReceiptOutcome;

/// The load stage.
pub struct Loader {
    target: PgTarget,
    config: LoadConfig,
    reject_cap: usize,
}

struct Conn {
    client: Client,
    statements: Statements,
}

impl Loader {
    /// A loader writing to `target`.
    pub fn new(target: PgTarget, config: LoadConfig, reject_cap: usize) -> Self {
        Self {
            target,
            config,
            reject_cap,
        }
    }

    /// Runs until `rx` closes (or, while retrying, until shutdown).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Checked>,
        tx: mpsc::Sender<Outcome>,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut conn: Option<Conn> = None;
        let mut backoff = self.initial_backoff();
        let mut touched: HashMap<String, Instant> = HashMap::new();
        'batches: loop {
            let Some(first) = rx.recv().await else { break };
            let mut pending = vec![self.fill(first, &mut rx).await];
            while let Some(chunk) = pending.pop() {
                if conn.is_none() {
                    match self.connect().await {
                        Ok(c) => {
                            backoff = self.initial_backoff();
                            conn = Some(c);
                        }
                        Err(e) => {
                            pending.push(chunk);
                            if !self.pause(&e, &mut backoff, &shutdown).await {
                                break 'batches;
                            }
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                match batch::write(&mut c.client, &c.statements, &chunk, self.reject_cap).await {
                    Ok(outcomes) => {
                        metrics::counter!(telemetry::BATCHES_COMMITTED).increment(1);
                        self.touch_devices(&c.client, &chunk, &mut touched).await;
                        for o in outcomes {
                            count(&o);
                            if tx.send(o).await.is_err() {
                                break 'batches;
                            }
                        }
                    }
                    Err(e) if is_retriable(&e) => {
                        conn = None;
                        pending.push(chunk);
                        if !self.pause(&e, &mut backoff, &shutdown).await {
                            break 'batches;
                        }
                    }
                    Err(e) => {
                        metrics::counter!(telemetry::DB_ERRORS, "kind" => "permanent").increment(1);
                        split(chunk, &e, &mut pending, self.reject_cap);
                    }
                }
            }
        }
        debug!("Load stage stopped.");
    }

    fn initial_backoff(&self) -> Duration {
        Duration::from_millis(self.config.retry_initial_ms)
    }

    /// Gathers a batch starting with `first`.
    async fn fill(&self, first: Checked, rx: &mut mpsc::Receiver<Checked>) -> Vec<Checked> {
        let max = self.config.batch_max_records;
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        if batch.len() < max && self.config.batch_linger_ms > 0 {
            let deadline =
                tokio::time::Instant::now() + Duration::from_millis(self.config.batch_linger_ms);
            while batch.len() < max {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(c)) => batch.push(c),
                    _ => break,
                }
            }
        }
        batch
    }

    async fn connect(&self) -> Result<Conn, tokio_postgres::Error> {
        let client = self.target.connect().await?;
        let statements = Statements::prepare(&client).await?;
        info!(
            schema = self.target.schema(),
            "Load stage connected to PostgreSQL."
        );
        Ok(Conn { client, statements })
    }

    /// Waits out a retriable error; `false` when shutdown asks to give up.
    async fn pause(
        &self,
        e: &tokio_postgres::Error,
        backoff: &mut Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> bool {
        metrics::counter!(telemetry::DB_ERRORS, "kind" => "retriable").increment(1);
        error!(error = %e, retry_ms = backoff.as_millis() as u64, "PostgreSQL unavailable; holding the batch.");
        let mut stop = shutdown.clone();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            _ = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_millis(self.config.retry_max_ms));
        true
    }

    /// Records `last_seen_at` for the batch's devices, at most once a second each, outside the
    /// batch transaction (so concurrent hubs do not queue on device rows).
    async fn touch_devices(
        &self,
        client: &Client,
        chunk: &[Checked],
        touched: &mut HashMap<String, Instant>,
    ) {
        let now = Instant::now();
        let mut due: Vec<&str> = chunk
            .iter()
            .filter_map(|c| match c {
                Checked::Valid(v) => Some(v.record.device_id.as_str()),
                Checked::Rejected(_) => None,
            })
            .filter(|d| {
                touched
                    .get(*d)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(1))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        due.dedup();
        for d in &due {
            touched.insert((*d).to_owned(), now);
        }
        let at = Utc::now();
        if let Err(error) = client
            .execute(
                "UPDATE devices SET last_seen_at = greatest(last_seen_at, $2) WHERE device_id = ANY($1)",
                &[&due, &at],
            )
            .await
        {
            warn!(%error, "Could not update last_seen_at.");
        }
    }
}

/// Splits a chunk the database refused; a lone record becomes a `database` reject, and a lone
/// reject that still fails is dropped (logged: only its bookkeeping row is lost).
fn split(
    mut chunk: Vec<Checked>,
    e: &tokio_postgres::Error,
    pending: &mut Vec<Vec<Checked>>,
    cap: usize,
) {
    if chunk.len() > 1 {
        let tail = chunk.split_off(chunk.len() / 2);
        pending.push(tail);
        pending.push(chunk);
        return;
    }
    match chunk.pop() {
        Some(Checked::Valid(v)) => {
            warn!(device = %v.record.device_id, record = %v.record.record_id, error = %e, "Database refused a record; rejecting it.");
            let reason = format!("the database refused the record: {e}");
            pending.push(vec![Checked::Rejected(reject_valid(
                &v, "database", reason, cap,
            ))]);
        }
        Some(Checked::Rejected(r)) => {
            error!(code = r.code, topic = %r.topic, error = %e, "Could not store a reject; dropping it.");
        }
        None => {}
    }
}

fn count(o: &Outcome) {
    match o.receipt.as_ref().map(|r| (r.outcome, r.reason.as_deref())) {
        Some((ReceiptOutcome::Stored, _)) => {
            metrics::counter!(telemetry::RECORDS_STORED).increment(1)
        }
        Some((ReceiptOutcome::Duplicate, _)) => {
            metrics::counter!(telemetry::RECORDS_DUPLICATE).increment(1)
        }
        Some((ReceiptOutcome::Deferred, reason)) => {
            let code = reason.and_then(|r| r.split(':').next()).unwrap_or("other");
            metrics::counter!(telemetry::RECORDS_DEFERRED, "code" => code.to_owned()).increment(1)
        }
        Some((ReceiptOutcome::Rejected, reason)) => {
            let code = reason.and_then(|r| r.split(':').next()).unwrap_or("other");
            metrics::counter!(telemetry::RECORDS_REJECTED, "code" => code.to_owned()).increment(1)
        }
        None => {
            metrics::counter!(telemetry::RECORDS_REJECTED, "code" => "no_record_id").increment(1)
        }
    }
}
