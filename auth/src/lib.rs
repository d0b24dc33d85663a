//! The auth service owns accounts, devices and their public keys, sessions (refresh-token
//! families) and the keys that sign access tokens. It is the only reader and writer of the `auth`
//! database schema; other services ask it over gRPC (`auth.v1`, `auth.internal.v1`).
//!
//! It does not route or proxy anything, and it never sees message content.
//!
//! Start reading at [`run`], then `api.rs`; the rules live in `accounts.rs` (usernames,
//! passwords), `passwords.rs` (argon2id off the runtime), `throttle.rs` (failed logins),
//! `devices.rs` and `keys.rs` (devices and their public keys), `sessions.rs` (refresh-token
//! rotation and reuse detection), `tokens.rs` (signing keys, access tokens, JWKS) and
//! `revocations.rs` (the revoked sessions and devices auth's own validator refuses).

mod accounts;
mod api;
mod config;
mod devices;
pub mod error;
mod keys;
mod metrics;
mod passwords;
mod revocations;
mod sessions;
mod state;
mod throttle;
mod tokens;

use std::{future::Future, sync::Arc};

use proto::auth::{internal::v1 as internal_pb, v1 as pb};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::Routes};

pub use api::{AuthApi, AuthInternalApi};
pub use config::{Config, DEFAULT_LISTEN_ADDR, PasswordSettings, ThrottleSettings, TokenSettings};
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
/// When a signing key or secret cannot be loaded, or the server fails.
pub async fn run(
    config: Config,
    db: PgPool,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_listener =
        common::metrics::bind(config.metrics_listen_addr, "AUTH_METRICS_LISTEN_ADDR").await?;
    run_with_metrics_listener(config, db, listener, metrics_listener, shutdown).await
}

/// As [`run`], with `/metrics` served on `metrics_listener` (bound by the caller; `None`: no
/// metrics port) instead of at `config.metrics_listen_addr`.
///
/// # Errors
/// As [`run`].
pub async fn run_with_metrics_listener(
    config: Config,
    db: PgPool,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut metrics = common::metrics::for_service(SERVICES, &db);
    let streams_end = CancellationToken::new();
    let state = Arc::new(state::State::new(&config, db.clone(), streams_end.clone())?);
    state.metrics.register(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let _metrics_server = common::metrics::spawn_server(metrics_listener, metrics.clone())?;
    // Serving before the revocations are read would answer UNAVAILABLE to every token.
    revocations::wait_until_caught_up(&state.revocations).await;
    let services = Routes::new(AuthServer::new(AuthApi::new(state.clone())))
        .add_service(AuthInternalServer::new(AuthInternalApi::new(state)));
    let service = common::service::Service {
        routes: services,
        names: SERVICES,
        db,
        metrics,
    };
    common::service::serve(
        service,
        listener,
        shutdown,
        streams_end,
        config.server.shutdown_timeout,
    )
    .await?;
    Ok(())
}

/// A fresh Ed25519 signing key as PKCS#8 PEM, for `auth keygen` (set it as `AUTH_SIGNING_KEY`).
pub fn generate_signing_key_pem() -> String {
    token::SigningKey::generate().to_pkcs8_pem()
}
