//! Starting a service for a scenario, as close to its own process as one binary allows.
//!
//! Each service gets its own OS thread with its own multi-threaded tokio runtime, built like
//! `#[tokio::main]` builds the services' (one worker per CPU, the default blocking pool), and its
//! pool is opened inside that runtime. The scenario's clients run on the bench's runtime, so the
//! server's workers and blocking threads are not shared with the load generator. The service's
//! threads are named `<name>-worker` (async workers) and `<name>-blocking` (blocking pool), so
//! that `cpu.rs` can tell who spent what.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use testkit::nginx::{Nginx, Role};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long a service may take to report SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long stopping may take; a service drains for at most its configured shutdown timeout.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves when the server should shut down.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service serving on a loopback port. Dropping it without [`RunningServer::stop`] also asks it
/// to stop, without waiting.
#[derive(Debug)]
pub struct RunningServer {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts auth with `config` (its pool built from `config.database`, as `auth`'s `main` does)
/// and waits until it reports SERVING.
///
/// # Errors
/// When it cannot bind, fails to start, or does not become SERVING in time.
pub async fn start_auth(config: auth::Config) -> anyhow::Result<RunningServer> {
    let server = start("auth", move |listener, shutdown| async move {
        let db = common::db::connect_lazy(&config.database)?;
        auth::run(config, db, listener, shutdown).await
    })?;
    server.wait_until_serving(auth::SERVICES[0]).await?;
    Ok(server)
}

/// Starts chat with `config` (its pool built from `config.database`, as `chat`'s `main` does)
/// and waits until it reports SERVING.
///
/// # Errors
/// When it cannot bind, fails to start, or does not become SERVING in time.
pub async fn start_chat(config: chat::Config) -> anyhow::Result<RunningServer> {
    let server = start("chat", move |listener, shutdown| async move {
        let db = common::db::connect_lazy(&config.database)?;
        chat::run(config, db, listener, shutdown).await
    })?;
    server.wait_until_serving(chat::SERVICES[0]).await?;
    Ok(server)
}

/// Starts group with `config` (its pool built from `config.database`, as `group`'s `main` does)
/// and waits until it reports SERVING.
///
/// # Errors
/// When it cannot bind, fails to start, or does not become SERVING in time.
pub async fn start_group(config: group::Config) -> anyhow::Result<RunningServer> {
    let server = start("group", move |listener, shutdown| async move {
        let db = common::db::connect_lazy(&config.database)?;
        group::run(config, db, listener, shutdown).await
    })?;
    server.wait_until_serving(group::SERVICES[0]).await?;
    Ok(server)
}

/// Starts the gateway with `config` and waits until it reports SERVING (its own health service
/// answers for the whole server, `""`).
///
/// # Errors
/// When it cannot bind, fails to start, or does not become SERVING in time.
pub async fn start_gateway(config: gateway::Config) -> anyhow::Result<RunningServer> {
    let server = start("gateway", move |listener, shutdown| {
        gateway::run(config, listener, shutdown)
    })?;
    server.wait_until_serving("").await?;
    Ok(server)
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

/// `gateway::Config::for_tests` routing to the upstreams at these addresses, with the
/// production upstream settings (2 connections per address).
pub fn gateway_config(auth: SocketAddr, chat: SocketAddr, group: SocketAddr) -> gateway::Config {
    let url = |addr: SocketAddr| -> tonic::transport::Uri {
        format!("http://{addr}")
            .parse()
            .expect("a socket address makes a valid URI")
    };
    gateway::Config::for_tests(gateway::UpstreamSettings {
        auth: url(auth).into(),
        chat: url(chat).into(),
        group: url(group).into(),
        resolve_interval: Duration::from_secs(10),
        hosts_file: None,
        connect_timeout: Duration::from_secs(1),
        connections_per_address: 2,
    })
}

/// Each service's pool, as `*_DATABASE_MAX_CONNECTIONS` defaults to.
pub const POOL_SIZE: u32 = 10;

/// The services a chat client needs, as the chat scenarios run them: auth, group, one or more
/// chat replicas and one gateway in front of each replica (gateway `i` routes chat calls to
/// replica `i` only, so a scenario chooses the replica by choosing the gateway), all with their
/// production settings and pools of [`POOL_SIZE`]. Two test settings: auth's cheap password
/// hashing (`auth::Config::for_tests`, only setup logs in) and the gateway's
/// `gateway::Config::for_tests` limits (1,000 sends per user per second instead of 20, 2,000
/// streams per connection instead of 100).
#[derive(Debug)]
pub struct ChatStack {
    /// auth.
    pub auth: RunningServer,
    /// group.
    pub group: RunningServer,
    /// The chat replicas, sharing the database (and so the LISTEN/NOTIFY bus).
    pub chats: Vec<RunningServer>,
    /// `gateways[i]` in front of `chats[i]`.
    pub gateways: Vec<RunningServer>,
}

impl ChatStack {
    /// Starts auth, group, `replicas` chat replicas and their gateways against `database_url`.
    ///
    /// # Errors
    /// When a service fails to start.
    pub async fn start(database_url: &str, replicas: usize) -> anyhow::Result<Self> {
        let auth = start_test_auth(database_url).await?;
        let auth_url = format!("http://{}", auth.addr);
        let mut group_config = group::Config::for_tests(&auth_url);
        group_config.database.url = database_url.to_owned().into();
        group_config.database.max_connections = POOL_SIZE;
        group_config.events = group::EventSettings::default();
        let group = start_group(group_config).await?;
        let group_url = format!("http://{}", group.addr);
        let (mut chats, mut gateways) = (Vec::new(), Vec::new());
        for _ in 0..replicas.max(1) {
            let mut chat_config = chat::Config::for_tests(&auth_url);
            chat_config.database.url = database_url.to_owned().into();
            chat_config.database.max_connections = POOL_SIZE;
            chat_config.group_url = group_url.clone();
            let chat = start_chat(chat_config).await?;
            let gateway = start_gateway(gateway_config(auth.addr, chat.addr, group.addr)).await?;
            chats.push(chat);
            gateways.push(gateway);
        }
        Ok(Self {
            auth,
            group,
            chats,
            gateways,
        })
    }

    /// The first gateway (in front of the first replica).
    pub fn gateway(&self) -> &RunningServer {
        &self.gateways[0]
    }

    /// Stops every service, gateways first, and waits for them.
    ///
    /// # Errors
    /// The first service that did not stop cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        let mut stopped = Vec::new();
        for gateway in self.gateways {
            stopped.push(
                gateway
                    .stop()
                    .await
                    .context("a gateway did not stop cleanly"),
            );
        }
        for chat in self.chats {
            stopped.push(
                chat.stop()
                    .await
                    .context("a chat replica did not stop cleanly"),
            );
        }
        stopped.push(
            self.group
                .stop()
                .await
                .context("group did not stop cleanly"),
        );
        stopped.push(self.auth.stop().await.context("auth did not stop cleanly"));
        stopped.into_iter().collect()
    }
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

impl RunningServer {
    /// A server at `addr` that this process does not run (nginx), for helpers that only
    /// connect; stopping it does nothing.
    pub fn elsewhere(addr: SocketAddr) -> Self {
        Self {
            addr,
            stop: None,
            thread: None,
        }
    }

    /// A new HTTP/2 connection to the service.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?)
    }

    /// Stops the service and waits for its thread, returning how `run` ended.
    ///
    /// # Errors
    /// When the service failed, or did not stop within [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stop.take());
        let thread = self.thread.take().context("server already stopped")?;
        let joined = tokio::time::timeout(
            STOP_TIMEOUT,
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await
        .context("the server did not stop in time")??;
        joined.map_err(|_| anyhow!("the server thread panicked"))?
    }

    async fn wait_until_serving(&self, service: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut health = HealthClient::new(self.connect().await?);
        loop {
            let request = HealthCheckRequest {
                service: service.to_owned(),
            };
            let status = health
                .check(request)
                .await
                .map(|response| response.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                return Ok(());
            }
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished)
                || Instant::now() > deadline
            {
                bail!("{service} did not become SERVING (last answer: {status:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// Starts `serve` like a service: its own thread and runtime, threads named `<name>-`, on a
/// bound loopback listener. It does not wait for a health check (the `start_*` functions do;
/// `fanout-floor`'s source has none).
///
/// # Errors
/// When it cannot bind or spawn its thread.
pub fn start<F, Fut>(name: &str, serve: F) -> anyhow::Result<RunningServer>
where
    F: FnOnce(TcpListener, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let (worker_name, blocking_name) = (format!("{name}-worker"), format!("{name}-blocking"));
    let threads_named = AtomicUsize::new(0);
    let thread = std::thread::Builder::new()
        .name(format!("{name}-server"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                // Tokio starts its workers while building the runtime, before any blocking
                // thread: naming the first `workers` threads apart lets `cpu.rs` tell the async
                // side's CPU time from the blocking pool's (argon2 in auth). A label only.
                .thread_name_fn(move || {
                    if threads_named.fetch_add(1, Ordering::Relaxed) < workers {
                        worker_name.clone()
                    } else {
                        blocking_name.clone()
                    }
                })
                .build()?;
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                // The sender is dropped by `stop` (or with the handle): either way, shut down.
                let shutdown: Shutdown = Box::pin(async move {
                    let _ = stopped.await;
                });
                serve(listener, shutdown).await
            })
        })?;
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
