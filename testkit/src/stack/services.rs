//! Starting each service of a stack and waiting until it is ready: health SERVING, then, for
//! those that validate tokens, a call with the probe token that is no longer UNAVAILABLE.

use common::config::DatabaseSettings;
use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
    group::v1::{self as group_pb, group_service_client::GroupServiceClient},
};
use sqlx::PgPool;
use tonic::transport::Channel;

use super::{Database, Launch, Probe, Runtime, Server, spawn};
use crate::with_token;

/// Starts auth with `config` and waits until it is ready.
///
/// # Errors
/// When it does not start or become ready.
pub async fn start_auth(mut config: auth::Config, launch: &Launch) -> anyhow::Result<Server> {
    let database = launch.database_for(&mut config.database);
    let server = spawn(
        "auth",
        launch.runtime,
        launch.metrics,
        move |listener, metrics, shutdown| async move {
            let db = database.pool()?;
            auth::run_with_metrics_listener(config, db, listener, metrics, shutdown).await
        },
    )
    .await?;
    server.wait_until_ready(auth::SERVICES[0], None).await?;
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
    let server = spawn(
        "group",
        launch.runtime,
        launch.metrics,
        move |listener, metrics, shutdown| async move {
            let db = database.pool()?;
            group::run_with_metrics_listener(config, db, listener, metrics, shutdown).await
        },
    )
    .await?;
    let probe = probe_token.map(|token| -> Probe {
        let token = token.to_owned();
        Box::new(move |channel: Channel| {
            let request = with_token(group_pb::ListMyGroupsRequest::default(), &token);
            Box::pin(async move {
                GroupServiceClient::new(channel)
                    .list_my_groups(request)
                    .await
                    .map(drop)
            })
        })
    });
    server.wait_until_ready(group::SERVICES[0], probe).await?;
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
    let server = spawn(
        "chat",
        launch.runtime,
        launch.metrics,
        move |listener, metrics, shutdown| async move {
            let db = database.pool()?;
            chat::run_with_metrics_listener(config, db, listener, metrics, shutdown).await
        },
    )
    .await?;
    let probe = probe_token.map(|token| -> Probe {
        let token = token.to_owned();
        Box::new(move |channel: Channel| {
            let request = with_token(chat_pb::ListConversationsRequest::default(), &token);
            Box::pin(async move {
                ChatServiceClient::new(channel)
                    .list_conversations(request)
                    .await
                    .map(drop)
            })
        })
    });
    server.wait_until_ready(chat::SERVICES[0], probe).await?;
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
    let server = spawn("gateway", runtime, false, move |listener, _, shutdown| {
        gateway::run(config, listener, shutdown)
    })
    .await?;
    let probe = probe_token.map(|token| -> Probe {
        let token = token.to_owned();
        Box::new(move |channel: Channel| {
            let request = with_token(auth_pb::GetCurrentUserRequest {}, &token);
            Box::pin(async move {
                AuthServiceClient::new(channel)
                    .get_current_user(request)
                    .await
                    .map(drop)
            })
        })
    });
    if !tls {
        server.wait_until_ready("", probe).await?;
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
