//! The group service owns groups, their membership and roles, and the membership events the chat
//! service follows to keep its membership cache right. It is the only reader and writer of the
//! `groups` database schema; others ask it over gRPC (`group.v1`, `group.internal.v1`).
//!
//! It does not deliver messages (chat fans group messages out) and never sees message content.
//!
//! Start reading at [`run`], then `api.rs`.

mod api;
mod config;
pub mod error;

use std::future::Future;

use proto::group::{internal::v1 as internal_pb, v1 as pb};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Routes};

pub use api::{GroupApi, GroupInternalApi};
pub use config::{Config, DEFAULT_LISTEN_ADDR};
pub use error::Error;

type GroupServer = pb::group_service_server::GroupServiceServer<GroupApi>;
type GroupInternalServer =
    internal_pb::group_internal_service_server::GroupInternalServiceServer<GroupInternalApi>;

/// The gRPC services group serves (besides health and reflection).
pub const SERVICES: &[&str] = &[GroupServer::NAME, GroupInternalServer::NAME];

/// Serves the group API on `listener` until `shutdown` resolves, then drains in-flight calls for at
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
    let tokens = &config.access_tokens;
    let validator = token::RemoteValidator::start_with_auth(
        &tokens.auth_url,
        token::ValidationSettings::new(tokens.issuer.clone(), tokens.audience.clone()),
    )?;
    let (health, health_service) = tonic_health::server::health_reporter();
    common::health::track_database(health, db, SERVICES).await;
    let services = Routes::new(health_service)
        .add_service(GroupServer::new(GroupApi::new(validator)))
        .add_service(GroupInternalServer::new(GroupInternalApi));
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
