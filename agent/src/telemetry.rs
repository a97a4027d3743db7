//! telemetry: metric names, the agent's health counters (the source of its retained
//! [`record::StatusReport`]), the optional Prometheus endpoint and tracing set-up.
//!
//! Metrics are Prometheus text on `telemetry.metrics_listen` (off by default; keep it on
//! localhost). Names are `examlink_agent_<name>_total` for counters; labels are bounded:
//! `kind` (record, rejection), `outcome` (stored, duplicate, deferred, rejected), `code`
//! (rejection codes)
//! — never file names or record ids.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use record::{DeviceId, StatusReport};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::outbox::{Backlog, Kind};

/// Exports taken from the export folders.
pub const EXPORTS_TAKEN: &str = "examlink_agent_exports_taken_total";
/// Exports quarantined, by `code`.
pub const EXPORTS_REJECTED: &str = "examlink_agent_exports_rejected_total";
/// Fields flagged for review in built records.
pub const FIELDS_FLAGGED: &str = "examlink_agent_fields_flagged_total";
/// Messages durably queued, by `kind`.
pub const MESSAGES_QUEUED: &str = "examlink_agent_messages_queued_total";
/// Messages published for the first time, by `kind`.
pub const MESSAGES_PUBLISHED: &str = "examlink_agent_messages_published_total";
/// Messages published again (no receipt in time, or a reconnect).
pub const MESSAGES_RESENT: &str = "examlink_agent_messages_resent_total";
/// Receipts received, by `outcome`.
pub const RECEIPTS: &str = "examlink_agent_receipts_total";
/// Connections to the broker established.
pub const CONNECTIONS: &str = "examlink_agent_connections_total";
/// Connection attempts or connections that failed.
pub const CONNECTION_ERRORS: &str = "examlink_agent_connection_errors_total";
/// Queued messages waiting for a receipt (gauge).
pub const BACKLOG_MESSAGES: &str = "examlink_agent_backlog_messages";
/// Their payload bytes (gauge).
pub const BACKLOG_BYTES: &str = "examlink_agent_backlog_bytes";
/// Queued messages the hub deferred (gauge; part of the backlog).
pub const OUTBOX_DEFERRED: &str = "examlink_agent_outbox_deferred";
/// Messages the hub rejected, kept in the outbox's rejected part (gauge; not in the backlog).
pub const OUTBOX_REJECTED: &str = "examlink_agent_outbox_rejected";

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Where to serve Prometheus metrics (`127.0.0.1:9464`); empty: off.
    pub metrics_listen: String,
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Record => "record",
        Kind::Rejection => "rejection",
    }
}

/// Counts one message of `kind` on counter `name`.
pub fn count(name: &'static str, kind: Kind) {
    metrics::counter!(name, "kind" => kind_label(kind)).increment(1);
}

/// Sets the backlog gauges, deferred and rejected included.
pub fn set_backlog(backlog: Backlog) {
    metrics::gauge!(BACKLOG_MESSAGES).set(backlog.messages as f64);
    metrics::gauge!(BACKLOG_BYTES).set(backlog.bytes as f64);
    metrics::gauge!(OUTBOX_DEFERRED).set(backlog.deferred as f64);
    metrics::gauge!(OUTBOX_REJECTED).set(backlog.rejected as f64);
}

/// The status `last_error` while the hub defers records: `N record(s) deferred by the hub:
/// REASON` (the latest reason).
pub fn deferred_error(count: u64, reason: &str) -> String {
    let noun = if count == 1 { "record" } else { "records" };
    format!("{count} {noun} {DEFERRED_BY_THE_HUB}{reason}")
}

/// What marks a `last_error` made by [`deferred_error`].
const DEFERRED_BY_THE_HUB: &str = "deferred by the hub: ";

#[derive(Debug, Default)]
struct HealthInner {
    exports: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What the retained status message reports: counters since start and the last error.
/// Cheap to clone; clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<HealthInner>);

impl Health {
    /// An export was taken.
    pub fn export_taken(&self) {
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(EXPORTS_TAKEN).increment(1);
    }

    /// An export was rejected with `code`.
    pub fn export_rejected(&self, code: &str) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(EXPORTS_REJECTED, "code" => code.to_owned()).increment(1);
    }

    /// `n` records were retired by receipts.
    pub fn delivered(&self, n: u64) {
        self.0.delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// Remembers the last error (reported in the status message).
    pub fn set_error(&self, error: String) {
        if let Ok(mut e) = self.0.last_error.lock() {
            *e = Some(error);
        }
    }

    /// Sets a `last_error` made by [`deferred_error`]; true when the last error was not one
    /// (deferrals just started: worth a WARN).
    pub fn set_deferred_error(&self, error: String) -> bool {
        let Ok(mut e) = self.0.last_error.lock() else {
            return false;
        };
        let started = !e
            .as_deref()
            .is_some_and(|e| e.contains(DEFERRED_BY_THE_HUB));
        *e = Some(error);
        started
    }

    /// Clears a `last_error` made by [`deferred_error`] (nothing is deferred any more).
    pub fn clear_deferred_error(&self) {
        if let Ok(mut e) = self.0.last_error.lock() {
            if e.as_deref()
                .is_some_and(|e| e.contains(DEFERRED_BY_THE_HUB))
            {
                *e = None;
            }
        }
    }

    /// The status report for `device` now.
    pub fn report(&self, device: &DeviceId, online: bool, backlog: Backlog) -> StatusReport {
        StatusReport {
            device_id: device.clone(),
            online,
            agent_version: crate::AGENT_VERSION.to_owned(),
            backlog: backlog.messages,
            exports: self.0.exports.load(Ordering::Relaxed),
            delivered: self.0.delivered.load(Ordering::Relaxed),
            rejected: self.0.rejected.load(Ordering::Relaxed),
            last_error: self.0.last_error.lock().ok().and_then(|e| e.clone()),
            at: chrono::Utc::now(),
        }
    }
}

/// Installs the Prometheus recorder and serves `GET /metrics` (any path, in fact) on `addr`
/// until `shutdown`. Returns the bound address.
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(listen = %local, "Serving metrics.");
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let (mut sock, _) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { warn!(error = %e, "Metrics accept failed."); continue; }
                },
            };
            let body = handle.render();
            tokio::spawn(async move {
                // Read (and ignore) the request head; answer every request with the metrics.
                let mut buf = [0u8; 1024];
                let _read = sock.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if sock.write_all(head.as_bytes()).await.is_ok() {
                    let _written = sock.write_all(body.as_bytes()).await;
                }
                let _closed = sock.shutdown().await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_endpoint_serves_prometheus_text() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = serve_metrics("127.0.0.1:0".parse().unwrap(), async {
            let _stopped = rx.await;
        })
        .await
        .unwrap();
        let health = Health::default();
        health.export_taken();
        health.export_rejected("not_an_image");
        count(MESSAGES_QUEUED, Kind::Record);
        set_backlog(Backlog {
            messages: 3,
            bytes: 10,
            deferred: 2,
            rejected: 1,
        });
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        sock.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("examlink_agent_exports_taken_total 1"),
            "{body}"
        );
        assert!(
            body.contains(r#"examlink_agent_exports_rejected_total{code="not_an_image"} 1"#),
            "{body}"
        );
        assert!(
            body.contains(r#"examlink_agent_messages_queued_total{kind="record"} 1"#),
            "{body}"
        );
        for gauge in [
            "examlink_agent_outbox_deferred 2",
            "examlink_agent_outbox_rejected 1",
        ] {
            assert!(body.contains(gauge), "{gauge} missing from {body}");
        }
        let report = health.report(&DeviceId::new("dev-1").unwrap(), true, Backlog::default());
        assert_eq!((report.exports, report.rejected), (1, 1));
        tx.send(()).unwrap();
    }

    #[test]
    fn a_deferral_shows_in_last_error_until_nothing_is_deferred() {
        let health = Health::default();
        let dev = DeviceId::new("dev-1").unwrap();
        assert!(health.set_deferred_error(deferred_error(
            1,
            "template_version: autoref_fw2 v3 unknown"
        )));
        assert!(!health.set_deferred_error(deferred_error(
            1,
            "template_version: autoref_fw2 v3 unknown"
        )));
        let report = health.report(&dev, true, Backlog::default());
        assert_eq!(
            report.last_error.as_deref(),
            Some("1 record deferred by the hub: template_version: autoref_fw2 v3 unknown")
        );
        health.clear_deferred_error();
        assert_eq!(
            health.report(&dev, true, Backlog::default()).last_error,
            None
        );
        // Another error is left alone.
        health.set_error("broker connection: refused".into());
        health.clear_deferred_error();
        assert!(health
            .report(&dev, true, Backlog::default())
            .last_error
            .is_some());
        assert!(deferred_error(2, "x").starts_with("2 records deferred"));
    }
}
