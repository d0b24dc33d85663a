//! Starting a service for a scenario, as close to its own process as one binary allows.
//!
//! Each service gets its own OS thread with its own multi-threaded tokio runtime, built like
//! `#[tokio::main]` builds the services' (one worker per CPU, the default blocking pool), and its
//! pool is opened inside that runtime. The scenario's clients run on the bench's runtime, so the
//! server's workers and blocking threads are not shared with the load generator. The service's
//! threads are named `<name>-worker` (async workers) and `<name>-blocking` (blocking pool), so
//! that `cpu.rs` can tell who spent what.

use std::net::SocketAddr;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use testkit::{
    nginx::{Nginx, Role},
    stack::{Database, Launch, Runtime, Stack, upstreams, uri},
};

pub use testkit::stack::{Server as RunningServer, Shutdown};

/// Each service's pool, as `*_DATABASE_MAX_CONNECTIONS` defaults to.
pub const POOL_SIZE: u32 = 10;

/// The services a chat client needs, as the chat scenarios run them (`testkit::stack`, each in
/// a runtime of its own): auth, group, one or more chat replicas and one gateway in front of
/// each replica (gateway `i` routes chat calls to replica `i` only, so a scenario chooses the
/// replica by choosing the gateway), all with their production settings and pools of
/// [`POOL_SIZE`]. Two test settings: auth's cheap password hashing (`auth::Config::for_tests`,
/// only setup logs in) and the gateway's `gateway::Config::for_tests` limits (1,000 sends per
/// user per second instead of 20, 2,000 streams per connection instead of 100).
pub type ChatStack = Stack;

/// Starts auth, group, `replicas` chat replicas and their gateways against `database_url`.
///
/// # Errors
/// When a service fails to start.
pub async fn start_chat_stack(database_url: &str, replicas: usize) -> anyhow::Result<ChatStack> {
    Stack::builder()
        .auth()
        .group_with(|config| config.events = group::EventSettings::default())
        .chat_replicas(replicas)
        .gateway_per_chat_replica()
        .own_runtimes()
        .pool_size(POOL_SIZE)
        .start(database_url)
        .await
}

/// How a service whose pool `database` describes is started here: in a runtime of its own,
/// its pool opened there from these settings, as its `main` does.
fn launch(database: &common::config::DatabaseSettings) -> Launch {
    Launch {
        database: Database::Url(database.url.expose_secret().to_owned()),
        runtime: Runtime::Own,
        metrics: false,
        pool_size: Some(database.max_connections),
    }
}

/// Starts auth with `config` (its pool built from `config.database`, as `auth`'s `main` does)
/// and waits until it reports SERVING.
///
/// # Errors
/// When it cannot bind, fails to start, or does not become SERVING in time.
pub async fn start_auth(config: auth::Config) -> anyhow::Result<RunningServer> {
    let launch = launch(&config.database);
    testkit::stack::start_auth(config, &launch).await
}

/// Starts chat with `config` (its pool built from `config.database`) and waits until it
/// reports SERVING.
///
/// # Errors
/// When it cannot bind, fails to start, or does not become SERVING in time.
pub async fn start_chat(config: chat::Config) -> anyhow::Result<RunningServer> {
    let launch = launch(&config.database);
    testkit::stack::start_chat(config, &launch, None).await
}

/// Starts the gateway with `config` and waits until it reports SERVING (its own health service
/// answers for the whole server, `""`).
///
/// # Errors
/// When it cannot bind, fails to start, or does not become SERVING in time.
pub async fn start_gateway(config: gateway::Config) -> anyhow::Result<RunningServer> {
    testkit::stack::start_gateway(config, Runtime::Own, None).await
}

/// Starts auth as the chat scenarios run it: `auth::Config::for_tests` (cheap password hashing:
/// only setup logs in) against `database_url`, with a pool of [`POOL_SIZE`].
///
/// # Errors
/// When it fails to start.
pub async fn start_test_auth(database_url: &str) -> anyhow::Result<RunningServer> {
    let mut config = auth::Config::for_tests();
    config.database.url = database_url.to_owned().into();
    config.database.max_connections = POOL_SIZE;
    start_auth(config).await
}

/// `gateway::Config::for_tests` routing to the upstreams at these addresses
/// (`testkit::stack::upstreams`).
pub fn gateway_config(auth: SocketAddr, chat: SocketAddr, group: SocketAddr) -> gateway::Config {
    gateway::Config::for_tests(upstreams(&uri(auth), &uri(chat), &uri(group)))
}

/// nginx as the reference proxy (`testkit::nginx`, [`Role::Reference`]) in front of `upstream`,
/// in a scratch directory of this process (a stale one from an earlier run is replaced).
///
/// # Errors
/// When nginx does not start (its error log is quoted).
pub async fn start_nginx(upstream: SocketAddr) -> anyhow::Result<Nginx> {
    let dir = std::env::temp_dir().join(format!("bench-nginx-{}", std::process::id()));
    Nginx::start(&dir, upstream, Role::Reference)
        .await
        .context("starting nginx")
}

/// Starts `serve` like a service: its own thread and runtime, threads named `<name>-`, on a
/// bound loopback listener (`testkit::stack::start_in_own_runtime`). It does not wait for a
/// health check (`fanout-floor`'s source has none).
///
/// # Errors
/// When it cannot bind or spawn its thread.
pub fn start<F, Fut>(name: &str, serve: F) -> anyhow::Result<RunningServer>
where
    F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    testkit::stack::start_in_own_runtime(name, serve)
}
