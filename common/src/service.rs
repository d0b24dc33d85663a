//! The end of every service's `run`: gRPC health that follows the database, then serving the
//! service's routes until shutdown (`crate::grpc::serve`), ending its long-lived streams first.

use std::{future::Future, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::grpc::ServeError;

/// What a service serves.
pub struct Service {
    /// Its own APIs.
    pub routes: Routes,
    /// Their names (for health and reflection).
    pub names: &'static [&'static str],
    /// Its database, which health follows.
    pub db: PgPool,
    /// Where its gRPC server metrics are recorded.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Serves `service` on `listener`, with gRPC health that reports SERVING only while its
/// database answers (`crate::health::track_database`, whose first probe is done before the first
/// connection is accepted), reflection, and the layers of [`crate::grpc::serve`].
///
/// When `shutdown` resolves, `streams_end` is cancelled: the service's event and message streams
/// never finish on their own, and must end so that the drain (at most `drain_timeout`) can
/// complete.
///
/// # Errors
/// When the reflection descriptors are invalid or the server fails.
pub async fn serve(
    service: Service,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    streams_end: CancellationToken,
    drain_timeout: Duration,
) -> Result<(), ServeError> {
    let Service {
        routes,
        names,
        db,
        metrics,
    } = service;
    let (health, health_service) = tonic_health::server::health_reporter();
    crate::health::track_database(health, db, names).await;
    let routes = routes.add_service(health_service);
    let shutdown = async move {
        shutdown.await;
        streams_end.cancel();
    };
    crate::grpc::serve(routes, names, metrics, listener, shutdown, drain_timeout).await
}
