//! Prometheus metrics for every server (the gateway and each service), on a port of its own.
//!
//! - [`Metrics`] holds the registry and the gRPC server families with the grpc-ecosystem names and
//!   labels (`grpc_server_handled_total{service, method, code}`, `grpc_server_handling_seconds`,
//!   `grpc_server_open_streams`); a service registers its own families into
//!   [`Metrics::registry_mut`] before sharing it behind an `Arc`.
//! - [`MetricsLayer`] records each call into it; [`crate::grpc::serve`] puts it outermost, so it
//!   sees the status the client gets.
//! - [`register_pool`] adds the database pool's gauges, read at each scrape, and its acquire time,
//!   sampled by a probe.
//! - [`spawn_server`] serves `GET /metrics` ([`metrics_route`]) on the metrics listener
//!   (`<SERVICE>_METRICS_LISTEN_ADDR`, see [`crate::config::metrics_listen_addr`]).
//!
//! The metrics each service adds, and what they mean, are listed in `docs/metrics.md`.

mod grpc;
mod layer;
mod pool;

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};

pub use grpc::{
    Metrics, OPENMETRICS_CONTENT_TYPE, UNKNOWN, method_paths, metrics_route, served_method_paths,
};
pub use layer::{MetricsBody, MetricsFuture, MetricsLayer, MetricsService};
pub use pool::{ACQUIRE_PROBE_PERIOD, register_pool};

/// The metrics of a service serving `services` (full gRPC service names) with `pool`: gRPC server
/// metrics whose labels take those services' methods, health and reflection, and the pool's
/// gauges. The service registers its own families before sharing it.
pub fn for_service(services: &[&str], pool: &sqlx::PgPool) -> Metrics {
    let mut metrics = Metrics::new(served_method_paths(services));
    register_pool(metrics.registry_mut(), pool.clone());
    metrics
}

/// The `/metrics` server of a [`spawn_server`] call; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer {
    task: Option<JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Binds the metrics listener at `addr` (the value of the variable `variable`), if set.
///
/// # Errors
/// When the address cannot be bound; the error names `variable`.
pub async fn bind(addr: Option<SocketAddr>, variable: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("binding {variable} {addr}: {error}"))?;
    Ok(Some(listener))
}

/// Serves `GET /metrics` ([`metrics_route`]) on `listener` (`None`: nowhere) until the returned
/// handle is dropped.
///
/// # Errors
/// When the listener's address cannot be read.
pub fn spawn_server(
    listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
) -> std::io::Result<MetricsServer> {
    let Some(listener) = listener else {
        return Ok(MetricsServer { task: None });
    };
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let routes = metrics_route(metrics);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, routes).await {
            tracing::error!(%error, "the metrics server failed");
        }
    });
    Ok(MetricsServer { task: Some(task) })
}
