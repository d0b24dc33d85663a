//! The whole system, or any part of it, started in process for a test or the bench:
//!
//! ```ignore
//! let stack = Stack::builder().auth().group().chat().gateway().start(db).await?;
//! ```
//!
//! Every service is the crate's own `run` on a loopback port (`127.0.0.1:0`), wired to the
//! others of the stack (a left-out upstream is [`NOWHERE`]), and is started only once the ones
//! it needs are ready. A service listens where its config's `server.listen_addr` says: `for_tests`
//! leaves port 0, and a test that stops a service and starts it again where it was sets the
//! address it had ([`Server::addr`]). Ready ([`ready`]) means what the chart's readiness probe
//! asks (gRPC health SERVING), then, for every service that validates tokens (group, chat, the
//! gateway), that a call with a valid token ([`probe_token`]) is no longer UNAVAILABLE: it has
//! fetched auth's key set and caught up with auth's revocations. One wait, the same for the
//! tests, the bench, and the services' binaries started as child processes ([`process`]: the
//! cluster and fault suites).

mod fixtures;
pub mod process;
pub mod ready;
mod server;
mod services;

use std::net::SocketAddr;

use anyhow::Context as _;
use sqlx::PgPool;

pub use fixtures::{
    DEVICE_KEYS, NOWHERE, probe_token, probe_token_signed_with, public_device_keys, upstreams, uri,
};
pub use ready::Service;
pub use server::{Runtime, Server, Shutdown, spawn, start_in_own_runtime};
pub use services::{start_auth, start_chat, start_gateway, start_group};

/// What the services store into.
#[derive(Debug, Clone)]
pub enum Database {
    /// A pool every service shares (a `#[sqlx::test]` database).
    Pool(PgPool),
    /// A URL each service opens its own pool on, from its `config.database`, inside its
    /// runtime, as its `main` does.
    Url(String),
}

impl From<PgPool> for Database {
    fn from(pool: PgPool) -> Self {
        Self::Pool(pool)
    }
}

impl From<&PgPool> for Database {
    fn from(pool: &PgPool) -> Self {
        Self::Pool(pool.clone())
    }
}

impl From<&str> for Database {
    fn from(url: &str) -> Self {
        Self::Url(url.to_owned())
    }
}

/// How the services of a stack are started: on which database, in which runtime, whether
/// they serve `/metrics`, and with which pool size (a [`Database::Url`] only).
#[derive(Debug, Clone)]
pub struct Launch {
    pub database: Database,
    pub runtime: Runtime,
    pub metrics: bool,
    pub pool_size: Option<u32>,
}

/// The services to start and their configurations: each starts from its `Config::for_tests`,
/// adjusted by the `*_with` closures; the addresses of the others are set at start.
pub struct StackBuilder {
    auth: Option<auth::Config>,
    group: Option<group::Config>,
    chat: Option<chat::Config>,
    chat_replicas: usize,
    gateway: Option<gateway::Config>,
    gateway_per_chat_replica: bool,
    chat_upstream: Option<SocketAddr>,
    runtime: Runtime,
    metrics: bool,
    pool_size: Option<u32>,
}

/// The running services. In [`Runtime::Shared`] they run until the test's runtime ends unless
/// stopped ([`Stack::stop`], [`Server::stop`]); in [`Runtime::Own`] dropping them stops them.
pub struct Stack {
    auth: Option<Server>,
    group: Option<Server>,
    chats: Vec<Server>,
    gateways: Vec<Server>,
    launch: Launch,
    probe_token: Option<String>,
}

impl Stack {
    /// A stack of nothing yet: add services, then [`StackBuilder::start`].
    pub fn builder() -> StackBuilder {
        StackBuilder {
            auth: None,
            group: None,
            chat: None,
            chat_replicas: 1,
            gateway: None,
            gateway_per_chat_replica: false,
            chat_upstream: None,
            runtime: Runtime::Shared,
            metrics: false,
            pool_size: None,
        }
    }

    /// Auth.
    ///
    /// # Panics
    /// When the stack has no auth.
    pub fn auth(&self) -> &Server {
        self.auth.as_ref().expect("the stack runs auth")
    }

    /// Group.
    ///
    /// # Panics
    /// When the stack has no group.
    pub fn group(&self) -> &Server {
        self.group.as_ref().expect("the stack runs group")
    }

    /// The first chat replica.
    pub fn chat(&self) -> &Server {
        &self.chats[0]
    }

    /// The chat replicas, sharing the database (and so the LISTEN/NOTIFY bus).
    pub fn chats(&self) -> &[Server] {
        &self.chats
    }

    /// The first gateway (in front of the first chat replica).
    pub fn gateway(&self) -> &Server {
        &self.gateways[0]
    }

    /// The gateways: one, or one in front of each chat replica
    /// ([`StackBuilder::gateway_per_chat_replica`]).
    pub fn gateways(&self) -> &[Server] {
        &self.gateways
    }

    /// Takes the first gateway out of the stack, to stop it (and maybe start another).
    pub fn take_gateway(&mut self) -> Server {
        self.gateways.remove(0)
    }

    /// How the services were started.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// A token every validator of the stack accepts ([`probe_token`]), for readiness waits.
    pub fn probe_token(&self) -> Option<&str> {
        self.probe_token.as_deref()
    }

    /// Another chat replica on the same auth, group and database, configured as
    /// `chat::Config::for_tests` adjusted by `configure`; ready when returned.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_chat(
        &self,
        configure: impl FnOnce(&mut chat::Config),
    ) -> anyhow::Result<Server> {
        let mut config = chat::Config::for_tests(&self.auth().url());
        config.group_url = self
            .group
            .as_ref()
            .map_or_else(|| uri(NOWHERE).to_string(), Server::url);
        configure(&mut config);
        start_chat(config, &self.launch, self.probe_token()).await
    }

    /// Another group replica on the same auth, on `database` (the stack's, or another pool of
    /// it), configured as `group::Config::for_tests` adjusted by `configure`; ready when
    /// returned.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start_group(
        &self,
        database: Database,
        configure: impl FnOnce(&mut group::Config),
    ) -> anyhow::Result<Server> {
        let mut config = group::Config::for_tests(&self.auth().url());
        configure(&mut config);
        let launch = Launch {
            database,
            ..self.launch.clone()
        };
        start_group(config, &launch, self.probe_token()).await
    }

    /// Stops every service, gateways first, auth last, and waits for each.
    ///
    /// # Errors
    /// The first service that did not stop cleanly (every one is still stopped).
    pub async fn stop(self) -> anyhow::Result<()> {
        let Self {
            auth,
            group,
            chats,
            gateways,
            ..
        } = self;
        let mut stopped = Vec::new();
        for gateway in gateways {
            stopped.push(
                gateway
                    .stop()
                    .await
                    .context("a gateway did not stop cleanly"),
            );
        }
        for chat in chats {
            stopped.push(
                chat.stop()
                    .await
                    .context("a chat replica did not stop cleanly"),
            );
        }
        if let Some(group) = group {
            stopped.push(group.stop().await.context("group did not stop cleanly"));
        }
        if let Some(auth) = auth {
            stopped.push(auth.stop().await.context("auth did not stop cleanly"));
        }
        stopped.into_iter().collect()
    }
}

impl StackBuilder {
    /// Auth, with `auth::Config::for_tests` (cheap password hashing).
    pub fn auth(self) -> Self {
        self.auth_with(|_| {})
    }

    /// Auth, with its configuration adjusted by `configure`.
    pub fn auth_with(mut self, configure: impl FnOnce(&mut auth::Config)) -> Self {
        configure(self.auth.get_or_insert_with(auth::Config::for_tests));
        self
    }

    /// Group.
    pub fn group(self) -> Self {
        self.group_with(|_| {})
    }

    /// Group, with its configuration adjusted by `configure` (its auth is set at start).
    pub fn group_with(mut self, configure: impl FnOnce(&mut group::Config)) -> Self {
        let url = uri(NOWHERE).to_string();
        configure(
            self.group
                .get_or_insert_with(|| group::Config::for_tests(&url)),
        );
        self
    }

    /// One chat replica.
    pub fn chat(self) -> Self {
        self.chat_with(|_| {})
    }

    /// Chat, with its configuration adjusted by `configure` (its auth and group are set at
    /// start).
    pub fn chat_with(mut self, configure: impl FnOnce(&mut chat::Config)) -> Self {
        let url = uri(NOWHERE).to_string();
        configure(
            self.chat
                .get_or_insert_with(|| chat::Config::for_tests(&url)),
        );
        self
    }

    /// `replicas` chat replicas (at least one) on the same database.
    pub fn chat_replicas(mut self, replicas: usize) -> Self {
        self.chat_replicas = replicas.max(1);
        self.chat()
    }

    /// The gateway, with `gateway::Config::for_tests` (generous rate limits).
    pub fn gateway(self) -> Self {
        self.gateway_with(|_| {})
    }

    /// The gateway, with its configuration adjusted by `configure` (its upstreams are set at
    /// start).
    pub fn gateway_with(mut self, configure: impl FnOnce(&mut gateway::Config)) -> Self {
        let nowhere = uri(NOWHERE);
        let fresh = || gateway::Config::for_tests(upstreams(&nowhere, &nowhere, &nowhere));
        configure(self.gateway.get_or_insert_with(fresh));
        self
    }

    /// One gateway in front of each chat replica (gateway `i` routes chat calls to replica `i`
    /// only), instead of one in front of the first.
    pub fn gateway_per_chat_replica(mut self) -> Self {
        self.gateway_per_chat_replica = true;
        self.gateway()
    }

    /// The gateway routes chat calls to `addr` (a double) instead of the stack's chat.
    pub fn chat_upstream(mut self, addr: SocketAddr) -> Self {
        self.chat_upstream = Some(addr);
        self
    }

    /// Auth, group and chat serve `/metrics` on a loopback port each ([`Server::metrics`]).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Each service in a thread and runtime of its own ([`Runtime::Own`]).
    pub fn own_runtimes(mut self) -> Self {
        self.runtime = Runtime::Own;
        self
    }

    /// Each service's pool holds `connections` (with a [`Database::Url`]).
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = Some(connections);
        self
    }

    /// Starts the services on `database`: auth, group, the chat replicas, the gateways, each
    /// once the ones before are ready.
    ///
    /// # Errors
    /// When a service does not start or become ready.
    pub async fn start(self, database: impl Into<Database>) -> anyhow::Result<Stack> {
        let launch = Launch {
            database: database.into(),
            runtime: self.runtime,
            metrics: self.metrics,
            pool_size: self.pool_size,
        };
        let probe_token = self.auth.as_ref().map(probe_token).transpose()?;
        let probe = probe_token.as_deref();
        let auth = match self.auth {
            Some(config) => Some(start_auth(config, &launch).await?),
            None => None,
        };
        let auth_addr = auth.as_ref().map_or(NOWHERE, |auth| auth.addr);
        let group = match self.group {
            Some(mut config) => {
                config.access_tokens.auth_url = uri(auth_addr).to_string();
                Some(start_group(config, &launch, probe).await?)
            }
            None => None,
        };
        let group_addr = group.as_ref().map_or(NOWHERE, |group| group.addr);
        let mut chats = Vec::new();
        if let Some(template) = self.chat {
            for _ in 0..self.chat_replicas {
                let mut config = template.clone();
                config.access_tokens.auth_url = uri(auth_addr).to_string();
                config.group_url = uri(group_addr).to_string();
                chats.push(start_chat(config, &launch, probe).await?);
            }
        }
        let mut gateways = Vec::new();
        if let Some(template) = self.gateway {
            let chat_addrs: Vec<SocketAddr> = match self.chat_upstream {
                Some(addr) => vec![addr],
                None if self.gateway_per_chat_replica => {
                    chats.iter().map(|chat| chat.addr).collect()
                }
                None => vec![chats.first().map_or(NOWHERE, |chat| chat.addr)],
            };
            for chat_addr in chat_addrs {
                let mut config = template.clone();
                config.upstreams = upstreams(&uri(auth_addr), &uri(chat_addr), &uri(group_addr));
                // Only with auth behind it can the gateway check a token.
                let probe = auth.as_ref().and(probe);
                gateways.push(start_gateway(config, launch.runtime, probe).await?);
            }
        }
        Ok(Stack {
            auth,
            group,
            chats,
            gateways,
            launch,
            probe_token,
        })
    }
}
