//! The group service owns groups, their membership and roles, and the membership events the chat
//! service follows to keep its membership cache right. It is the only reader and writer of the
//! `groups` database schema; others ask it over gRPC (`group.v1` for clients, `group.internal.v1`
//! for chat).
//!
//! It does not deliver messages (chat fans group messages out), never sees message content, and
//! does not own users or devices: it asks auth (`auth.v1.LookupUsers`, forwarding the caller's
//! token) whether users exist and for members' profiles, devices and public keys. Its token
//! validator (`token::RemoteValidator`) follows auth's `WatchRevocations` with the deployment's
//! service credential, so a revoked session's token is refused here within seconds.
//!
//! Where to read:
//! - [`run`], then `api.rs` (proto <-> domain) and `service.rs` (each operation: checks, auth
//!   look-ups, the transaction, the wake-up after commit).
//! - `groups.rs` (create, get, list, rename, delete; the version bump and event recording every
//!   change shares) and `members.rs` (add, remove, leave, roles, member lists; the locks that
//!   keep limits and "always an owner" exact).
//! - `events.rs`: the outbox `groups.membership_events`, written in the membership transaction;
//!   inserts are serialised by an advisory lock so ids commit in order (see its docs).
//!   `WatchMembershipEvents` follows it through `common::outbox::Feed` (replay from the cursor,
//!   then follow, with LISTEN/NOTIFY wake-ups sent after commit, a polling fallback, and pruning
//!   after the retention).
//! - `directory.rs` (auth), `config.rs` (limits), `error.rs`.

mod api;
mod config;
mod directory;
pub mod error;
mod events;
mod groups;
mod ids;
mod member_rows;
mod members;
mod metrics;
mod service;

use std::{future::Future, sync::Arc};

use common::service_credential::ServiceCredential;
use proto::group::{internal::v1 as internal_pb, v1 as pb};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::Routes};

pub use api::{GroupApi, GroupInternalApi};
pub use config::{Config, DEFAULT_LISTEN_ADDR, EventSettings, Limits};
pub use error::Error;
pub use events::CHANNEL as EVENTS_CHANNEL;

type GroupServer = pb::group_service_server::GroupServiceServer<GroupApi>;
type GroupInternalServer =
    internal_pb::group_internal_service_server::GroupInternalServiceServer<GroupInternalApi>;

/// The gRPC services group serves (besides health and reflection).
pub const SERVICES: &[&str] = &[GroupServer::NAME, GroupInternalServer::NAME];

/// Serves the group API on `listener` until `shutdown` resolves, then ends every event stream
/// with UNAVAILABLE and drains in-flight calls for at most the configured shutdown timeout.
/// Health follows the database's reachability.
///
/// # Errors
/// When the auth URL or the service secret is invalid, or the server fails.
pub async fn run(
    config: Config,
    db: PgPool,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_listener =
        common::metrics::bind(config.metrics_listen_addr, "GROUP_METRICS_LISTEN_ADDR").await?;
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
    let tokens = &config.access_tokens;
    let service_credential = ServiceCredential::new(&config.service_secret.read()?)?;
    let credential = service_credential.clone();
    let validator = token::RemoteValidator::start_with_auth(
        &tokens.auth_url,
        token::ValidationSettings::new(tokens.issuer.clone(), tokens.audience.clone()),
        tokens.revocation_max_staleness,
        Arc::new(move |request| credential.attach(request)),
    )?;
    let streams_end = CancellationToken::new();
    let service = Arc::new(service::GroupService {
        db: db.clone(),
        limits: config.limits.clone(),
        directory: directory::Directory::new(&tokens.auth_url)?,
        feed: common::outbox::Feed::start(db.clone(), config.events.clone(), streams_end.clone()),
        metrics: crate::metrics::GroupMetrics::default(),
    });
    service
        .metrics
        .register(metrics.registry_mut(), &service.feed.metrics());
    let metrics = Arc::new(metrics);
    let _metrics_server = common::metrics::spawn_server(metrics_listener, metrics.clone())?;
    let routes = Routes::new(GroupServer::new(GroupApi::new(
        validator.clone(),
        service.clone(),
    )))
    .add_service(GroupInternalServer::new(GroupInternalApi::new(
        validator,
        service_credential,
        service,
    )));
    let service = common::service::Service {
        routes,
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
