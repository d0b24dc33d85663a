//! The chat service owns conversations and end-to-end encrypted messages: it validates and stores
//! envelopes (ciphertext, wrapped keys, signatures; never plaintext), assigns gap-free
//! per-conversation sequences, and delivers messages, receipts and typing indicators over streams.
//! It is the only reader and writer of the `chat` database schema.
//!
//! It does not own membership: it asks the group service over gRPC (`group.internal.v1`) and auth
//! for devices and keys (`auth.internal.v1`). It never decrypts anything.
//!
//! Start reading at [`run`], then `api.rs`.

mod api;
mod config;
pub mod error;

use std::future::Future;

use proto::chat::v1 as pb;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Routes};

pub use api::ChatApi;
pub use config::{Config, DEFAULT_LISTEN_ADDR};
pub use error::Error;

type ChatServer = pb::chat_service_server::ChatServiceServer<ChatApi>;

/// The gRPC services chat serves (besides health and reflection).
pub const SERVICES: &[&str] = &[ChatServer::NAME];

/// Serves the chat API on `listener` until `shutdown` resolves, then drains in-flight calls for at
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
    let services =
        Routes::new(health_service).add_service(ChatServer::new(ChatApi::new(validator)));
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
