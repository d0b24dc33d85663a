//! Graceful shutdown: the signal that starts it, and a drain with a deadline.

use std::{future::Future, time::Duration};

use tokio::sync::oneshot;

/// Resolves when the process receives SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Runs a server until `shutdown` resolves, then lets it drain for at most `drain_timeout`.
///
/// `serve` receives the future the server must treat as its own graceful-shutdown signal (it is
/// `Send + 'static`, as axum and tonic require). When the drain outlasts the deadline the server
/// future is dropped, which closes the connections still open.
///
/// # Errors
/// The server's own error, if it fails before or during the drain.
pub async fn serve_with_bounded_drain<S, E>(
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
    serve: impl FnOnce(Box<dyn Future<Output = ()> + Send + Unpin>) -> S,
) -> Result<(), E>
where
    S: Future<Output = Result<(), E>>,
{
    let (stop_server, server_stopping) = oneshot::channel::<()>();
    let server_signal = Box::new(Box::pin(async move {
        // An error means the sender is gone, which only happens once we are shutting down anyway.
        let _ = server_stopping.await;
    }));
    let server = serve(server_signal);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    let _ = stop_server.send(());
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?drain_timeout,
                "drain timed out; dropping the calls still in flight"
            );
            Ok(())
        }
    }
}
