//! Serving a router over HTTP/1.1: the connection loop of `quire serve` and of the worker's
//! metrics endpoint.
//!
//! `axum::serve` configures no timer, so hyper cannot time out a client that never finishes its
//! headers: each such connection (a slow-loris client) would be held forever. This loop is
//! axum's, with hyper's own header-read timeout switched on: a connection is closed when a
//! request's headers, or the next request on an idle keep-alive connection, take longer than
//! the timeout. Bodies are timed by the handlers that read them (see `commands::serve`).

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The header timeout of endpoints that do not configure one (the worker's metrics).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits for the connections
/// in progress to finish (idle ones are closed at once; a request in progress is bounded by its
/// own timeouts).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connections = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for connections to close rather
                    // than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}
