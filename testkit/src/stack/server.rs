//! One service of a stack: started on a loopback port, in the test's runtime or in a runtime and
//! thread of its own, waited for, and stopped.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Channel;

use super::ready::{Service, wait_until_ready};

/// How long a service may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long stopping may take; a service drains for at most its configured shutdown timeout.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves when the server should shut down.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a service's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// Spawned on the caller's runtime, as the integration tests run services. Dropping the
    /// handle leaves the service running (until the runtime ends).
    #[default]
    Shared,
    /// A thread and a multi-threaded runtime of its own, built like `#[tokio::main]` builds a
    /// service's (one worker per CPU), its threads named `<name>-worker` and `<name>-blocking`:
    /// as close to its own process as one binary allows (the bench). Dropping the handle asks
    /// the service to stop, without waiting.
    Own,
}

/// A service serving on a loopback port.
#[derive(Debug)]
pub struct Server {
    /// Where it serves gRPC: its config's `server.listen_addr`, which `for_tests` leaves at
    /// 127.0.0.1 and port 0 (a new port each time).
    pub addr: SocketAddr,
    /// Where it serves `/metrics`, when the stack was asked for it.
    pub metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    running: Running,
}

#[derive(Debug)]
enum Running {
    Task(tokio::task::JoinHandle<anyhow::Result<()>>),
    Thread(std::thread::JoinHandle<anyhow::Result<()>>),
    Elsewhere,
}

impl Server {
    /// A server at `addr` that this process does not run (nginx, a double), for code that only
    /// connects; stopping it does nothing.
    pub fn elsewhere(addr: SocketAddr) -> Self {
        Self {
            addr,
            metrics: None,
            stop: None,
            running: Running::Elsewhere,
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new HTTP/2 connection to the service.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(self.url())?.connect().await?)
    }

    /// Asks the service to stop (it drains, then its port closes) and waits, returning how
    /// `run` ended.
    ///
    /// # Errors
    /// When the service failed, or did not stop within 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match std::mem::replace(&mut self.running, Running::Elsewhere) {
            Running::Task(task) => tokio::time::timeout(STOP_TIMEOUT, task)
                .await
                .context("the server did not stop in time")?
                .context("the server task panicked")?,
            Running::Thread(thread) => {
                let joined = tokio::time::timeout(
                    STOP_TIMEOUT,
                    tokio::task::spawn_blocking(move || thread.join()),
                )
                .await
                .context("the server did not stop in time")??;
                joined.map_err(|_| anyhow!("the server thread panicked"))?
            }
            Running::Elsewhere => Ok(()),
        }
    }

    /// Waits until the service is ready ([`super::ready::wait_until_ready`]): `service`
    /// SERVING on gRPC health, then, with `probe_token`, until a call with it is no longer
    /// UNAVAILABLE.
    ///
    /// # Errors
    /// When the service ended, or is not ready within 15 s.
    pub async fn wait_until_ready(
        &self,
        service: Service,
        probe_token: Option<&str>,
    ) -> anyhow::Result<()> {
        let ended = || {
            let ended = match &self.running {
                Running::Task(task) => task.is_finished(),
                Running::Thread(thread) => thread.is_finished(),
                Running::Elsewhere => false,
            };
            ended.then(|| "its `run` returned".to_owned())
        };
        wait_until_ready(self.addr, service, probe_token, START_TIMEOUT, ended).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // In its own runtime a service outlives nothing: stop it. In the test's runtime it runs
        // until the runtime ends, as tests always ran it.
        if matches!(self.running, Running::Thread(_)) {
            drop(self.stop.take());
        }
    }
}

/// Starts `serve` on a listener bound to `addr` (port 0: a new port; a given one: to start a
/// service again where it was) and, with `metrics`, a new loopback listener for `/metrics`, in
/// `runtime`. It does not wait for readiness ([`Server::wait_until_ready`] does).
///
/// # Errors
/// When it cannot bind or spawn its thread.
pub async fn spawn<F, Fut>(
    name: &str,
    addr: SocketAddr,
    runtime: Runtime,
    metrics: bool,
    serve: F,
) -> anyhow::Result<Server>
where
    F: FnOnce(TcpListener, Option<TcpListener>, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = bind(addr)?;
    let addr = listener.local_addr()?;
    let metrics_listener = metrics.then(|| bind(LOOPBACK)).transpose()?;
    let metrics = metrics_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let running = match runtime {
        Runtime::Shared => {
            // Only an explicit stop ends it: a dropped sender leaves it running.
            let shutdown: Shutdown = Box::pin(async move {
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
            });
            let listener = TcpListener::from_std(listener)?;
            let metrics_listener = metrics_listener.map(TcpListener::from_std).transpose()?;
            Running::Task(tokio::spawn(serve(listener, metrics_listener, shutdown)))
        }
        Runtime::Own => {
            let shutdown: Shutdown = Box::pin(async move {
                let _ = stopped.await;
            });
            Running::Thread(own_runtime(name, move || async move {
                let listener = TcpListener::from_std(listener)?;
                let metrics_listener = metrics_listener.map(TcpListener::from_std).transpose()?;
                serve(listener, metrics_listener, shutdown).await
            })?)
        }
    };
    Ok(Server {
        addr,
        metrics,
        stop: Some(stop),
        running,
    })
}

/// 127.0.0.1, port 0.
const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Starts `serve` like a service ([`Runtime::Own`]) on a loopback listener, for a server that is
/// none of the stack's (the bench's minimal HTTP/2 source). It does not wait for readiness.
///
/// # Errors
/// When it cannot bind or spawn its thread.
pub fn start_in_own_runtime<F, Fut>(name: &str, serve: F) -> anyhow::Result<Server>
where
    F: FnOnce(TcpListener, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let listener = bind(LOOPBACK)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = own_runtime(name, move || async move {
        let listener = TcpListener::from_std(listener)?;
        // The sender is dropped by `stop` (or with the handle): either way, shut down.
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        serve(listener, shutdown).await
    })?;
    Ok(Server {
        addr,
        metrics: None,
        stop: Some(stop),
        running: Running::Thread(thread),
    })
}

/// Runs the future `make` returns on a thread and runtime of its own, named after `name`.
fn own_runtime<M, Fut>(
    name: &str,
    make: M,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>>
where
    M: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
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
                // thread: naming the first `workers` threads apart lets the bench tell the
                // async side's CPU time from the blocking pool's (argon2 in auth). A label only.
                .thread_name_fn(move || {
                    if threads_named.fetch_add(1, Ordering::Relaxed) < workers {
                        worker_name.clone()
                    } else {
                        blocking_name.clone()
                    }
                })
                .build()?;
            runtime.block_on(make())
        })?;
    Ok(thread)
}
