//! The gateway is the only component exposed to the outside. One port serves native gRPC (HTTP/2
//! with prior knowledge), gRPC-Web (through `tonic_web::GrpcWebLayer`) and plain HTTP.
//!
//! What it does today: gRPC health, server reflection describing every public API
//! (`proto::PUBLIC_SERVICES`), and `/healthz`.
//!
//! Not implemented yet (the gateway issue): validating access tokens, proxying calls to the auth,
//! chat and group services, limits and metrics. Until then, calls to the public APIs answer
//! UNIMPLEMENTED here; call each service's own port instead.
//!
//! Start reading at [`run`], then [`router`].

mod config;

use std::future::Future;

use axum::routing::get;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;

pub use config::{Config, DEFAULT_LISTEN_ADDR};

/// Serves the gateway on `listener` until `shutdown` resolves, then drains in-flight requests for
/// at most the configured shutdown timeout.
///
/// # Errors
/// When the router cannot be built or the server fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = router().await?;
    common::shutdown::serve_with_bounded_drain(
        shutdown,
        config.server.shutdown_timeout,
        |signal| {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .into_future()
        },
    )
    .await?;
    Ok(())
}

/// The gateway's HTTP router: gRPC (native and gRPC-Web) for health and reflection, and
/// `GET /healthz`, which answers 200 while the process runs (liveness).
///
/// # Errors
/// When the reflection service cannot be built from the embedded descriptors.
pub async fn router() -> anyhow::Result<axum::Router> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    let grpc = common::grpc::with_reflection(Routes::new(health_service), proto::PUBLIC_SERVICES)?;
    // GrpcWebLayer answers 400 to anything that is not gRPC, so it wraps the gRPC routes only.
    let grpc = grpc
        .prepare()
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new());
    let http = axum::Router::new().route("/healthz", get(|| async { "ok\n" }));
    Ok(http.merge(grpc))
}
