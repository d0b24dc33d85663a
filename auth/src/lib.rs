//! The auth service owns accounts, devices and their public keys, sessions (refresh-token
//! families) and the keys that sign access tokens. It is the only reader and writer of the `auth`
//! database schema; other services ask it over gRPC (`auth.v1`, `auth.internal.v1`).
//!
//! It does not route or proxy anything, and it never sees message content.
//!
//! Start reading at [`run`], then `api.rs`.

mod api;
mod config;
pub mod error;

use std::future::Future;

use proto::auth::{internal::v1 as internal_pb, v1 as pb};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Routes};

pub use api::{AuthApi, AuthInternalApi};
pub use config::{Config, DEFAULT_LISTEN_ADDR};
pub use error::Error;

type AuthServer = pb::auth_service_server::AuthServiceServer<AuthApi>;
type AuthInternalServer =
    internal_pb::auth_internal_service_server::AuthInternalServiceServer<AuthInternalApi>;

/// The gRPC services auth serves (besides health and reflection).
pub const SERVICES: &[&str] = &[AuthServer::NAME, AuthInternalServer::NAME];

/// Serves the auth API on `listener` until `shutdown` resolves, then drains in-flight calls for at
/// most the configured shutdown timeout. Health follows the database's reachability.
///
/// # Errors
/// When the server fails.
pub async fn run(
    config: Config,
    db: PgPool,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    common::health::track_database(health, db, SERVICES).await;
    let services = Routes::new(health_service)
        .add_service(AuthServer::new(AuthApi))
        .add_service(AuthInternalServer::new(AuthInternalApi));
    common::grpc::serve(
        services,
        SERVICES,
        listener,
        shutdown,
        config.server.shutdown_timeout,
    )
    .await?;
    Ok(())
}
