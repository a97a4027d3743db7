//! Metrics: the names the hub records (`examlink_hub_<name>_total` counters and a few gauges,
//! labels bounded to reason codes, stages, and for quality sampling template and field) and the
//! process-wide Prometheus recorder that `/metrics` renders.
//!
//! The recorder is installed at most once per process; a second hub in the same process (tests)
//! shares it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Record payloads taken off the broker.
pub const RECORDS_RECEIVED: &str = "examlink_hub_records_received_total";
/// Records committed for the first time.
pub const RECORDS_STORED: &str = "examlink_hub_records_stored_total";
/// Records already stored (resends).
pub const RECORDS_DUPLICATE: &str = "examlink_hub_records_duplicate_total";
/// Records rejected by the checks (label `code`).
pub const RECORDS_REJECTED: &str = "examlink_hub_records_rejected_total";
/// Records the hub cannot take yet, answered `deferred` (label `code`).
pub const RECORDS_DEFERRED: &str = "examlink_hub_records_deferred_total";
/// Transactions committed by the load stage.
pub const BATCHES_COMMITTED: &str = "examlink_hub_batches_committed_total";
/// PostgreSQL errors (label `kind`: `retriable` or `permanent`).
pub const DB_ERRORS: &str = "examlink_hub_db_errors_total";
/// Receipts sent to devices.
pub const RECEIPTS_SENT: &str = "examlink_hub_receipts_sent_total";
/// Records republished on the results tree.
pub const RESULTS_PUBLISHED: &str = "examlink_hub_results_published_total";
/// Reviewed records republished on the results tree as a new revision (after PUBACK).
pub const REVISIONS_PUBLISHED: &str = "examlink_hub_revisions_published_total";
/// Device connections refused at CONNECT (label `code`).
pub const CONNECTS_REFUSED: &str = "examlink_hub_connects_refused_total";
/// Device connections accepted.
pub const CONNECTS_ACCEPTED: &str = "examlink_hub_connects_accepted_total";
/// Logins refused (label `via`: `mqtt` or `http`), wrong password or unknown user.
pub const LOGINS_REFUSED: &str = "examlink_hub_logins_refused_total";
/// Password hashes run (argon2 verifications and hashing), behind the guard's semaphore.
pub const PASSWORD_HASHES: &str = "examlink_hub_password_hashes_total";
/// Connections or logins refused by the guard (label `why`: `address_cap`, `backoff`).
pub const GUARD_REFUSED: &str = "examlink_hub_guard_refused_total";
/// Status reports and agent rejections processed (label `kind`).
pub const DEVICE_MESSAGES: &str = "examlink_hub_device_messages_total";

/// Exports waiting in the FHIR push queue (gauge, set by the push stage each pass).
pub const FHIR_PUSH_BACKLOG: &str = "examlink_hub_fhir_push_backlog";
/// Exports whose every resource the FHIR server accepted.
pub const FHIR_EXPORTS_PUSHED: &str = "examlink_hub_fhir_exports_pushed_total";
/// Resources the FHIR server accepted.
pub const FHIR_RESOURCES_PUSHED: &str = "examlink_hub_fhir_resources_pushed_total";
/// FHIR push attempts that failed (label `kind`: connect, tls, timeout, http, http_4xx,
/// http_5xx, db); the export is retried with backoff.
pub const FHIR_PUSH_FAILURES: &str = "examlink_hub_fhir_push_failures_total";

/// Blind checks answered (labels `template`, `field`), from the database when `/metrics` is
/// rendered ([`crate::quality::publish_metrics`]).
pub const BLIND_CHECKS_ANSWERED: &str = "examlink_hub_blind_checks_answered_total";
/// Blind checks whose answer disagreed with the value read `ok` (labels `template`, `field`).
pub const BLIND_CHECKS_DISAGREED: &str = "examlink_hub_blind_checks_disagreed_total";
/// Blind checks waiting for a reviewer (gauge).
pub const BLIND_CHECKS_PENDING: &str = "examlink_hub_blind_checks_pending";
/// The ok-but-wrong rate estimated from the blind checks (gauge; labels `template`, `field`,
/// and `bound`: `estimate`, or `lower` / `upper` of its 95% Wilson score interval).
pub const OK_WRONG_RATIO: &str = "examlink_hub_ok_wrong_ratio";
/// The same over every template and field (gauge; label `bound`).
pub const OK_WRONG_OVERALL_RATIO: &str = "examlink_hub_ok_wrong_overall_ratio";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program): then this
        // handle renders nothing, which only affects /metrics.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("A metrics recorder was already installed; /metrics will be empty.");
        }
        handle
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_render() {
        let h = super::prometheus();
        metrics::counter!(super::RECORDS_STORED).increment(1);
        assert!(h.render().contains(super::RECORDS_STORED));
    }
}
