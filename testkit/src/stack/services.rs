//! Starting each service of a stack where its config's `server.listen_addr` says (`for_tests`:
//! a new loopback port; the address of an earlier run: to start it again there) and waiting
//! until it is ready ([`super::ready`]).

use common::config::DatabaseSettings;
use sqlx::PgPool;

use super::{Database, Launch, Runtime, Server, ready::Service, spawn};

/// Starts auth with `config` and waits until it is ready.
///
/// # Errors
/// When it does not start or become ready.
pub async fn start_auth(mut config: auth::Config, launch: &Launch) -> anyhow::Result<Server> {
    let database = launch.database_for(&mut config.database);
    let addr = config.server.listen_addr;
    let server = spawn(
        "auth",
        addr,
        launch.runtime,
        launch.metrics,
        move |listener, metrics, shutdown| async move {
            let db = database.pool()?;
            auth::run_with_metrics_listener(config, db, listener, metrics, shutdown).await
        },
    )
    .await?;
    server.wait_until_ready(Service::Auth, None).await?;
    Ok(server)
}

/// Starts group with `config` and waits until it is ready (with `probe_token`: until it
/// checks tokens).
///
/// # Errors
/// When it does not start or become ready.
pub async fn start_group(
    mut config: group::Config,
    launch: &Launch,
    probe_token: Option<&str>,
) -> anyhow::Result<Server> {
    let database = launch.database_for(&mut config.database);
    let addr = config.server.listen_addr;
    let server = spawn(
        "group",
        addr,
        launch.runtime,
        launch.metrics,
        move |listener, metrics, shutdown| async move {
            let db = database.pool()?;
            group::run_with_metrics_listener(config, db, listener, metrics, shutdown).await
        },
    )
    .await?;
    server.wait_until_ready(Service::Group, probe_token).await?;
    Ok(server)
}

/// Starts a chat replica with `config` and waits until it is ready (with `probe_token`: until
/// it checks tokens).
///
/// # Errors
/// When it does not start or become ready.
pub async fn start_chat(
    mut config: chat::Config,
    launch: &Launch,
    probe_token: Option<&str>,
) -> anyhow::Result<Server> {
    let database = launch.database_for(&mut config.database);
    let addr = config.server.listen_addr;
    let server = spawn(
        "chat",
        addr,
        launch.runtime,
        launch.metrics,
        move |listener, metrics, shutdown| async move {
            let db = database.pool()?;
            chat::run_with_metrics_listener(config, db, listener, metrics, shutdown).await
        },
    )
    .await?;
    server.wait_until_ready(Service::Chat, probe_token).await?;
    Ok(server)
}

/// Starts the gateway with `config` and waits until it is ready: its health (`""`, the whole
/// server) and, with `probe_token` (auth must be its upstream), a call through it to auth. A
/// gateway serving TLS is not waited for (its port is bound: calls queue until it serves).
///
/// # Errors
/// When it does not start or become ready.
pub async fn start_gateway(
    config: gateway::Config,
    runtime: Runtime,
    probe_token: Option<&str>,
) -> anyhow::Result<Server> {
    let tls = config.tls.is_some();
    let addr = config.server.listen_addr;
    let server = spawn(
        "gateway",
        addr,
        runtime,
        false,
        move |listener, _, shutdown| gateway::run(config, listener, shutdown),
    )
    .await?;
    if !tls {
        server
            .wait_until_ready(Service::Gateway, probe_token)
            .await?;
    }
    Ok(server)
}

/// What one service's pool is made from.
enum ServiceDatabase {
    Shared(PgPool),
    /// Opened lazily by the service, in its own runtime.
    Own(DatabaseSettings),
}

impl ServiceDatabase {
    fn pool(self) -> anyhow::Result<PgPool> {
        Ok(match self {
            Self::Shared(pool) => pool,
            Self::Own(settings) => common::db::connect_lazy(&settings)?,
        })
    }
}

impl Launch {
    /// The database a service uses; for a URL, its settings (URL, pool size) set first.
    fn database_for(&self, settings: &mut DatabaseSettings) -> ServiceDatabase {
        match &self.database {
            Database::Pool(pool) => ServiceDatabase::Shared(pool.clone()),
            Database::Url(url) => {
                settings.url = url.clone().into();
                if let Some(connections) = self.pool_size {
                    settings.max_connections = connections;
                }
                ServiceDatabase::Own(settings.clone())
            }
        }
    }
}
