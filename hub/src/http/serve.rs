//! The HTTP accept loop: each connection takes a slot of its address's quota in the
//! [`Guard`] (closed at once when the address is at its cap), does its TLS handshake within the
//! header timeout, and is served by hyper's HTTP/1.1 with a header-read timeout and a bounded
//! read buffer. Every request carries the client's [`PeerAddr`].

use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::guard::Guard;
use crate::telemetry;

use super::session::PeerAddr;

/// Serves `app` on `listener` until `stop` turns true; open connections are then closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    guard: Arc<Guard>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                warn!(%error, "HTTP accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let Some(slot) = guard.connection(peer.ip()) else {
            metrics::counter!(telemetry::GUARD_REFUSED, "why" => "address_cap").increment(1);
            continue;
        };
        let app = app.clone().layer(Extension(PeerAddr(peer.ip())));
        let tls = tls.clone();
        conns.spawn(async move {
            let _slot = slot;
            let service = TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024);
            let served = match tls {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => http.serve_connection(TokioIo::new(s), service).await,
                        Ok(Err(error)) => {
                            debug!(%peer, %error, "HTTPS handshake failed.");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(error) = served {
                debug!(%peer, %error, "HTTP connection ended.");
            }
        });
    }
    conns.shutdown().await;
}
