//! The process's stop request, the same for the agent and the hub (feature `signal`).

/// Resolves on Ctrl-C (a Windows console's Ctrl-C or Ctrl-Break too), or SIGTERM where there is
/// one: what `systemctl stop`, `docker stop` and a terminal send. A process that cannot watch
/// SIGTERM still stops on Ctrl-C.
pub async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _signalled = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _signalled = tokio::signal::ctrl_c().await;
    }
}
