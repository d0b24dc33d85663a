//! One service of a stack: started on a loopback port, in the test's runtime or in a runtime and
//! thread of its own, waited for, and stopped.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long a service may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long stopping may take; a service drains for at most its configured shutdown timeout.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness is asked again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

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
    /// Where it serves gRPC (127.0.0.1, an ephemeral port).
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

    /// Waits until the service reports `service` SERVING on gRPC health (`""`: the whole
    /// server), as the chart's readiness probe does, then, with `probe`, until an
    /// authenticated call ([`Probe`]) is no longer UNAVAILABLE: the service has fetched auth's
    /// key set and caught up with its revocations.
    ///
    /// # Errors
    /// When the service ended, or is not ready within 15 s.
    pub async fn wait_until_ready(
        &self,
        service: &str,
        probe: Option<Probe>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let channel = self.connect().await?;
        let mut health = HealthClient::new(channel.clone());
        loop {
            let request = HealthCheckRequest {
                service: service.to_owned(),
            };
            let status = health
                .check(request)
                .await
                .map(|response| response.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                break;
            }
            self.check_waiting(deadline, || format!("{service} SERVING (last: {status:?})"))?;
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let Some(probe) = probe else { return Ok(()) };
        loop {
            match probe(channel.clone()).await {
                Err(status) if status.code() == Code::Unavailable => {
                    self.check_waiting(deadline, || {
                        format!("{service} to check tokens ({status:?})")
                    })?;
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Fails once the service ended or time is up.
    fn check_waiting(&self, deadline: Instant, what: impl Fn() -> String) -> anyhow::Result<()> {
        let ended = match &self.running {
            Running::Task(task) => task.is_finished(),
            Running::Thread(thread) => thread.is_finished(),
            Running::Elsewhere => false,
        };
        if ended || Instant::now() > deadline {
            bail!("timed out waiting for {}", what());
        }
        Ok(())
    }
}

/// An authenticated call that answers UNAVAILABLE while the service cannot check tokens yet.
pub type Probe =
    Box<dyn Fn(Channel) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send>> + Send + Sync>;

impl Drop for Server {
    fn drop(&mut self) {
        // In its own runtime a service outlives nothing: stop it. In the test's runtime it runs
        // until the runtime ends, as tests always ran it.
        if matches!(self.running, Running::Thread(_)) {
            drop(self.stop.take());
        }
    }
}

/// Starts `serve` on a new loopback listener (and, with `metrics`, a second one for `/metrics`),
/// in `runtime`. It does not wait for readiness ([`Server::wait_until_ready`] does).
///
/// # Errors
/// When it cannot bind or spawn its thread.
pub async fn spawn<F, Fut>(
    name: &str,
    runtime: Runtime,
    metrics: bool,
    serve: F,
) -> anyhow::Result<Server>
where
    F: FnOnce(TcpListener, Option<TcpListener>, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = bind_loopback()?;
    let addr = listener.local_addr()?;
    let metrics_listener = metrics.then(bind_loopback).transpose()?;
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

fn bind_loopback() -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
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
    let listener = bind_loopback()?;
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
