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
use tracing::{error, info, warn};

use crate::outbox::{Backlog, Kind};

/// Exports taken from the export folders.
pub const EXPORTS_TAKEN: &str = "examlink_agent_exports_taken_total";
/// Exports quarantined, by `code`.
pub const EXPORTS_REJECTED: &str = "examlink_agent_exports_rejected_total";
/// Fields flagged for review in built records.
pub const FIELDS_FLAGGED: &str = "examlink_agent_fields_flagged_total";
/// Fields read `ok` whose crop went with the record for a blind check (quality sampling).
pub const FIELDS_SAMPLED: &str = "examlink_agent_fields_sampled_total";
/// Exports read that were aligned past their template's declared variation (the record carries
/// its `alignment`): a display scaling or crooked scanner an operator may want to fix.
pub const EXPORTS_BEYOND_DECLARED: &str = "examlink_agent_exports_beyond_declared_total";
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
/// Exports refused as `unknown_layout` in a row, since the last export read (gauge).
pub const UNKNOWN_LAYOUT_STREAK: &str = "examlink_agent_unknown_layout_streak";
/// 1 while the layout-change canary is raised (`recognize.layout_alarm_after` exports in a row
/// refused as `unknown_layout`), else 0: the gauge to alert on.
pub const LAYOUT_ALARM: &str = "examlink_agent_layout_alarm";

/// The rejection code the layout-change canary counts.
const UNKNOWN_LAYOUT: &str = "unknown_layout";

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

#[derive(Debug)]
struct HealthInner {
    exports: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The layout-change canary: exports refused as unknown in a row, and its alarm.
    layout: Mutex<LayoutCanary>,
}

#[derive(Debug, Default)]
struct LayoutCanary {
    after: u64,
    streak: u64,
    alarm: Option<String>,
}

/// What the retained status message reports: counters since start and the last error.
/// Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub struct Health(Arc<HealthInner>);

impl Default for Health {
    fn default() -> Self {
        Self::new(crate::config::RecognizeConfig::default().layout_alarm_after)
    }
}

impl Health {
    /// Health whose layout-change canary is raised after `layout_alarm_after` exports in a
    /// row refused as `unknown_layout`.
    pub fn new(layout_alarm_after: u32) -> Self {
        Self(Arc::new(HealthInner {
            exports: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_error: Mutex::new(None),
            layout: Mutex::new(LayoutCanary {
                after: u64::from(layout_alarm_after.max(1)),
                ..LayoutCanary::default()
            }),
        }))
    }

    /// An export was read (a record built): the layout-change canary goes quiet.
    pub fn export_recognized(&self) {
        let Ok(mut c) = self.0.layout.lock() else {
            return;
        };
        if c.alarm.take().is_some() {
            info!("An export was read again: the layout alarm is cleared.");
        }
        c.streak = 0;
        metrics::gauge!(UNKNOWN_LAYOUT_STREAK).set(0.0);
        metrics::gauge!(LAYOUT_ALARM).set(0.0);
    }

    /// An export was refused as `unknown_layout` for `reason`: counts towards the canary, and
    /// raises it (status `last_error`, [`LAYOUT_ALARM`]) at `layout_alarm_after` in a row.
    fn unknown_layout(&self, reason: &str) {
        let Ok(mut c) = self.0.layout.lock() else {
            return;
        };
        c.streak += 1;
        metrics::gauge!(UNKNOWN_LAYOUT_STREAK).set(c.streak as f64);
        if c.streak >= c.after {
            let raised = c.alarm.is_none();
            c.alarm = Some(format!(
                "layout problem: the last {} exports were refused as unknown_layout (a firmware \
                 update, a changed display scaling or scanner?); latest: {reason}",
                c.streak
            ));
            metrics::gauge!(LAYOUT_ALARM).set(1.0);
            if raised {
                error!(
                    streak = c.streak, reason,
                    "Layout alarm: exports in a row match no template. Check the device's firmware \
                     and export settings; a new firmware needs a template (firmware-notes/)."
                );
            }
        }
    }

    /// The layout-change canary's error, while it is raised.
    pub fn layout_alarm(&self) -> Option<String> {
        self.0.layout.lock().ok().and_then(|c| c.alarm.clone())
    }

    /// An export was taken.
    pub fn export_taken(&self) {
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(EXPORTS_TAKEN).increment(1);
    }

    /// An export was rejected with `code` for `reason`.
    pub fn export_rejected(&self, code: &str, reason: &str) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(EXPORTS_REJECTED, "code" => code.to_owned()).increment(1);
        if code == UNKNOWN_LAYOUT {
            self.unknown_layout(reason);
        }
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
            // The layout alarm outranks the last passing error: it stays until an export is
            // read again, and every export of the device is quarantined meanwhile.
            last_error: self
                .layout_alarm()
                .or_else(|| self.0.last_error.lock().ok().and_then(|e| e.clone())),
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
        health.export_rejected("not_an_image", "not a PNG");
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

    // See: #14
    #[test]
    fn exports_refused_as_unknown_in_a_row_raise_the_layout_alarm_until_one_is_read() {
        let health = Health::new(3);
        let dev = DeviceId::new("dev-1").unwrap();
        let last_error = |h: &Health| h.report(&dev, true, Backlog::default()).last_error;
        health.set_error("broker connection: refused".into());
        health.export_rejected(
            UNKNOWN_LAYOUT,
            "best template autoref_fw2: anchor \"title\"",
        );
        health.export_rejected(
            UNKNOWN_LAYOUT,
            "best template autoref_fw2: anchor \"title\"",
        );
        assert_eq!(
            health.layout_alarm(),
            None,
            "two in a row are not yet an alarm"
        );
        // Another refusal neither counts nor resets the streak.
        health.export_rejected("not_an_image", "not a PNG");
        health.export_rejected(UNKNOWN_LAYOUT, "firmware anchor \"fw\" differs");
        let alarm = health.layout_alarm().expect("raised at the third in a row");
        assert!(
            alarm.starts_with("layout problem: the last 3 exports were refused as unknown_layout"),
            "{alarm}"
        );
        assert!(
            alarm.ends_with("latest: firmware anchor \"fw\" differs"),
            "{alarm}"
        );
        assert_eq!(
            last_error(&health),
            Some(alarm),
            "the alarm outranks other errors"
        );
        health.export_recognized();
        assert_eq!(health.layout_alarm(), None);
        assert_eq!(
            last_error(&health).as_deref(),
            Some("broker connection: refused")
        );
        // The streak starts again from zero.
        health.export_rejected(UNKNOWN_LAYOUT, "x");
        health.export_rejected(UNKNOWN_LAYOUT, "x");
        assert_eq!(health.layout_alarm(), None);
    }
}
