//! supervise: every stage runs as a supervised task. A stage that ends while the hub is not
//! shutting down (it returned, or panicked) is a failure of the whole hub: `/healthz` answers
//! `503` naming it, the gauge `examlink_hub_stage_up{stage}` drops to 0, the hub shuts the other
//! stages down in order (finishing the batch in hand) and the process exits non-zero, so its
//! supervisor (systemd, a container runtime) restarts it. Agents keep everything unreceipted and
//! resend it to the restarted hub, so nothing is lost.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::error;

/// Gauge: 1 while a stage runs, 0 once it ended (label `stage`).
pub const STAGE_UP: &str = "examlink_hub_stage_up";

/// Which stages ended unexpectedly, for `/healthz`.
#[derive(Debug, Default)]
pub struct StageHealth {
    failed: Mutex<Vec<String>>,
}

impl StageHealth {
    /// Marks `stage` failed, with why.
    pub fn fail(&self, stage: &str, why: &str) {
        let entry = format!("stage {stage} ended: {why}");
        match self.failed.lock() {
            Ok(mut g) => g.push(entry),
            Err(p) => p.into_inner().push(entry),
        }
    }

    /// The failures so far (empty while healthy).
    pub fn failed(&self) -> Vec<String> {
        match self.failed.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// What supervised tasks report to.
#[derive(Debug, Clone)]
pub struct Supervisor {
    health: Arc<StageHealth>,
    stop: watch::Receiver<bool>,
    ended: mpsc::UnboundedSender<&'static str>,
}

impl Supervisor {
    /// A supervisor; the receiver yields the name of each stage that ends unexpectedly.
    pub fn new(
        health: Arc<StageHealth>,
        stop: watch::Receiver<bool>,
    ) -> (Self, mpsc::UnboundedReceiver<&'static str>) {
        let (ended, rx) = mpsc::unbounded_channel();
        (
            Self {
                health,
                stop,
                ended,
            },
            rx,
        )
    }

    /// The shared health.
    pub fn health(&self) -> Arc<StageHealth> {
        self.health.clone()
    }

    /// Runs `stage` as a task; its end before shutdown is reported.
    pub fn spawn<F>(&self, name: &'static str, stage: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        metrics::gauge!(STAGE_UP, "stage" => name).set(1.0);
        let inner = tokio::spawn(stage);
        let me = self.clone();
        tokio::spawn(async move {
            let result = inner.await;
            metrics::gauge!(STAGE_UP, "stage" => name).set(0.0);
            let why = match &result {
                Ok(()) => "returned".to_owned(),
                Err(e) => format!("task failed: {e}"),
            };
            if *me.stop.borrow() {
                if result.is_err() {
                    error!(stage = name, why, "Stage task failed during shutdown.");
                }
                return;
            }
            error!(
                stage = name,
                why, "A hub stage ended unexpectedly: /healthz fails and the hub shuts down."
            );
            me.health.fail(name, &why);
            let _reported = me.ended.send(name);
        })
    }
}

/// Sleeps `d`, or less if `stop` turns true.
pub async fn sleep_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, d: std::time::Duration) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = tokio::time::sleep(d) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stage_that_ends_early_is_reported_and_one_at_shutdown_is_not() {
        let (stop_tx, stop) = watch::channel(false);
        let (sup, mut ended) = Supervisor::new(Arc::default(), stop);
        sup.spawn("republish", async {}).await.unwrap();
        assert_eq!(ended.recv().await, Some("republish"));
        sup.spawn("panics", async { panic!("boom") }).await.unwrap();
        assert_eq!(ended.recv().await, Some("panics"));
        let failed = sup.health().failed();
        assert_eq!(failed.len(), 2);
        assert!(
            failed[1].contains("panics") && failed[1].contains("boom"),
            "{failed:?}"
        );
        stop_tx.send(true).unwrap();
        sup.spawn("load", async {}).await.unwrap();
        drop(sup);
        assert_eq!(ended.recv().await, None);
    }
}
