//! Connections to the upstream services, balanced over every address their name resolves to.
//!
//! A Kubernetes headless Service name resolves to one address per ready pod. A plain ClusterIP
//! would pin each long-lived HTTP/2 connection to one pod; resolving ourselves lets calls and
//! streams spread over all pods. The name is re-resolved periodically (`common::resolve`, which
//! chat's and group's balanced channels follow their names with too), so new pods receive calls
//! and removed ones stop receiving new ones (calls already on them finish there). An upstream
//! given as several URLs (static replicas) is one pool over the addresses of all of them. Where
//! no DNS knows the names, a hosts file (`GATEWAY_UPSTREAM_HOSTS_FILE`) read at each resolution
//! stands in for it.
//!
//! Each address gets `connections_per_address` HTTP/2 connections (one connection's I/O runs on
//! one thread at a time), each kept up by its own task, which reconnects with backoff. A call
//! takes the next ready connection round-robin and is handed straight to hyper's HTTP/2 client:
//! unlike a tonic `Channel`, there is no buffer task between the caller and the connection, so a
//! call costs one task hop less each way. A call finding no ready connection waits for one up to
//! the connect timeout, but when every connection has just failed it answers at once.

use std::{
    collections::HashSet,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use common::resolve::{Resolution, Resolver, dns, hosts_file_then_dns};
use futures::future::BoxFuture;
use http::{Request, Response, Uri, uri::Scheme};
use hyper::{
    body::Incoming,
    client::conn::http2::{self, SendRequest},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, sync::Notify};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{UpstreamSettings, UpstreamUrls},
    methods::Upstream,
};

/// HTTP/2 flow-control window of each upstream connection (see [`connect`]).
const UPSTREAM_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of each upstream stream.
const UPSTREAM_STREAM_WINDOW: u32 = 1024 * 1024;
/// The largest header block (a response head, or trailers) accepted from an upstream. h2 drops
/// the whole connection, and every call on it, when a peer sends a header block too large to
/// decode (GOAWAY COMPRESSION_ERROR or ENHANCE_YOUR_CALM), while one under this cap but over what
/// the gateway forwards fails only its own call (`proxy.rs`). Upstreams are trusted and bound
/// their own metadata far below this (`common::grpc_guard`); the cap only has to be out of reach.
const UPSTREAM_MAX_HEADER_LIST_BYTES: u32 = 1024 * 1024;
/// Reconnection backoff after a failed attempt: doubles from the first to the last.
const RECONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// What a request to an upstream carries.
pub type UpstreamBody = tonic::body::Body;

/// Why an upstream call failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection to any address of the upstream is up.
    #[error("no connection to the upstream is up")]
    Unavailable,
    /// The connection failed while sending the request or awaiting the response.
    #[error(transparent)]
    Call(#[from] hyper::Error),
}

/// One balanced pool of connections per upstream service.
#[derive(Clone)]
pub struct Upstreams {
    auth: UpstreamPool,
    chat: UpstreamPool,
    group: UpstreamPool,
}

impl Upstreams {
    /// Starts resolving every upstream name and connecting in the background, and returns the
    /// pools at once. Must run inside a Tokio runtime.
    pub fn start(settings: &UpstreamSettings) -> Self {
        let resolve = match &settings.hosts_file {
            Some(file) => hosts_file_then_dns(file.clone()),
            None => dns(),
        };
        let pool = |urls: &UpstreamUrls| UpstreamPool::start(urls, settings, resolve.clone());
        Self {
            auth: pool(&settings.auth),
            chat: pool(&settings.chat),
            group: pool(&settings.group),
        }
    }

    /// The pool of `upstream`.
    pub fn pool(&self, upstream: Upstream) -> &UpstreamPool {
        match upstream {
            Upstream::Auth => &self.auth,
            Upstream::Chat => &self.chat,
            Upstream::Group => &self.group,
        }
    }
}

/// The connections to every address of one upstream name. Cheap to clone. Dropping every clone
/// stops resolving and lets the connections close once their calls have ended.
#[derive(Clone)]
pub struct UpstreamPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// The current connections; replaced as a whole when the name resolves differently.
    connections: RwLock<Arc<[Arc<Connection>]>>,
    /// Where the round-robin continues.
    next: AtomicUsize,
    /// Wakes calls waiting for a connection when one comes up or fails.
    changed: Notify,
    /// How long a call waits for a connection.
    connect_timeout: Duration,
    /// Cancelled when the last pool handle goes: stops resolving and every connection task.
    stop: CancellationToken,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One HTTP/2 connection to one address, kept up by [`maintain`].
struct Connection {
    address: SocketAddr,
    link: Mutex<Link>,
    /// Cancelled when the address is no longer resolved (or the pool is gone).
    retire: CancellationToken,
}

enum Link {
    Connecting,
    Up(SendRequest<UpstreamBody>),
    /// The last attempt failed; the task retries after a backoff.
    Down,
}

impl UpstreamPool {
    fn start(urls: &UpstreamUrls, settings: &UpstreamSettings, resolve: Resolver) -> Self {
        let inner = Arc::new(PoolInner {
            connections: RwLock::new(Arc::from(Vec::new())),
            next: AtomicUsize::new(0),
            changed: Notify::new(),
            connect_timeout: settings.connect_timeout,
            stop: CancellationToken::new(),
        });
        let names = urls.iter().map(common::resolve::host_and_port).collect();
        tokio::spawn(resolve_forever(
            names,
            Arc::downgrade(&inner),
            inner.stop.clone(),
            settings.clone(),
            resolve,
        ));
        Self { inner }
    }

    /// Sends `request` to the next ready connection (rewriting its URI to that address) and
    /// returns the response head; the body streams from the upstream as it arrives.
    ///
    /// # Errors
    /// [`UpstreamError::Unavailable`] when no connection is up (at once if every connection has
    /// failed, otherwise after waiting up to the connect timeout for one), or the connection's
    /// error if the call fails on it.
    pub async fn send(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (address, mut sender) = match self.ready_connection() {
            Ok(ready) => ready,
            Err(AllDown) => return Err(UpstreamError::Unavailable),
            Err(Waiting) => self.wait_for_connection().await?,
        };
        set_origin(&mut request, address);
        Ok(sender.send_request(request).await?)
    }

    async fn wait_for_connection(
        &self,
    ) -> Result<(SocketAddr, SendRequest<UpstreamBody>), UpstreamError> {
        let wait = async {
            loop {
                // Registered before looking, so a change in between is not missed.
                let changed = self.inner.changed.notified();
                match self.ready_connection() {
                    Ok(ready) => return Ok(ready),
                    Err(AllDown) => return Err(UpstreamError::Unavailable),
                    Err(Waiting) => changed.await,
                }
            }
        };
        tokio::time::timeout(self.inner.connect_timeout, wait)
            .await
            .unwrap_or(Err(UpstreamError::Unavailable))
    }

    /// The next ready connection, round-robin, or why there is none.
    fn ready_connection(&self) -> Result<(SocketAddr, SendRequest<UpstreamBody>), NotReady> {
        let connections = common::sync::read(&self.inner.connections).clone();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut all_down = true;
        for offset in 0..connections.len() {
            let connection = &connections[(start + offset) % connections.len()];
            let link = common::sync::lock(&connection.link);
            match &*link {
                Link::Up(sender) if sender.is_ready() => {
                    return Ok((connection.address, sender.clone()));
                }
                Link::Down => {}
                // Closed but not yet noticed by its task, or connecting: worth waiting for.
                Link::Up(_) | Link::Connecting => all_down = false,
            }
        }
        // No address resolved yet: wait for resolution rather than fail.
        if all_down && !connections.is_empty() {
            Err(AllDown)
        } else {
            Err(Waiting)
        }
    }
}

/// Why [`UpstreamPool::ready_connection`] found no connection.
enum NotReady {
    /// Every connection's last attempt failed.
    AllDown,
    /// Some connection may come up soon.
    Waiting,
}
use NotReady::{AllDown, Waiting};

/// Points the request at `address`, as every HTTP/2 request needs a scheme and an authority.
fn set_origin(request: &mut Request<UpstreamBody>, address: SocketAddr) {
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = address.to_string().parse().ok();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// Lets tonic clients call through a pool (the gateway's JWKS fetch, and tests).
impl tower::Service<Request<UpstreamBody>> for UpstreamPool {
    type Response = Response<Incoming>;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<UpstreamBody>) -> Self::Future {
        let pool = self.clone();
        Box::pin(async move { pool.send(request).await })
    }
}

/// Keeps the pool's connections matching what the `names` (hosts and ports) resolve to, until
/// the pool is gone.
async fn resolve_forever(
    names: Vec<(String, u16)>,
    pool: std::sync::Weak<PoolInner>,
    stop: CancellationToken,
    settings: UpstreamSettings,
    resolve: Resolver,
) {
    let mut resolution = Resolution::new(names, resolve, settings.resolve_interval);
    loop {
        let resolved = tokio::select! {
            resolved = resolution.changed() => resolved,
            () = stop.cancelled() => return,
        };
        let Some(pool) = pool.upgrade() else { return };
        replace_connections(&pool, &resolved, &settings);
    }
}

/// Keeps the connections to addresses still resolved, starts connections to new ones, and
/// retires the rest (their calls in flight finish on them).
fn replace_connections(
    pool: &Arc<PoolInner>,
    resolved: &HashSet<SocketAddr>,
    settings: &UpstreamSettings,
) {
    let mut connections = common::sync::write(&pool.connections);
    let mut kept: Vec<Arc<Connection>> = Vec::new();
    for connection in connections.iter() {
        if resolved.contains(&connection.address) {
            kept.push(connection.clone());
        } else {
            connection.retire.cancel();
        }
    }
    let known: HashSet<SocketAddr> = kept.iter().map(|c| c.address).collect();
    for address in resolved.difference(&known) {
        for _ in 0..settings.connections_per_address.max(1) {
            let connection = Arc::new(Connection {
                address: *address,
                link: Mutex::new(Link::Connecting),
                retire: pool.stop.child_token(),
            });
            tokio::spawn(maintain(
                connection.clone(),
                Arc::downgrade(pool),
                settings.clone(),
            ));
            kept.push(connection);
        }
    }
    *connections = Arc::from(kept);
    drop(connections);
    pool.changed.notify_waiters();
}

/// Keeps one connection up until it is retired: connects, serves the connection until it ends,
/// reconnects (with backoff after failures).
async fn maintain(
    connection: Arc<Connection>,
    pool: std::sync::Weak<PoolInner>,
    settings: UpstreamSettings,
) {
    let set_link = |link: Link| {
        *common::sync::lock(&connection.link) = link;
        if let Some(pool) = pool.upgrade() {
            pool.changed.notify_waiters();
        }
    };
    let mut backoff = RECONNECT_BACKOFF.0;
    loop {
        set_link(Link::Connecting);
        let attempt = tokio::time::timeout(settings.connect_timeout, connect(connection.address));
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = connection.retire.cancelled() => return,
        };
        match outcome {
            Ok(Ok((sender, serving))) => {
                set_link(Link::Up(sender));
                backoff = RECONNECT_BACKOFF.0;
                tokio::pin!(serving);
                tokio::select! {
                    result = &mut serving => {
                        if let Err(error) = result {
                            tracing::warn!(address = %connection.address, %error, "upstream connection failed");
                        }
                    }
                    () = connection.retire.cancelled() => {
                        // No new calls; the connection closes once the calls on it have ended.
                        set_link(Link::Down);
                        let _ = serving.await;
                        return;
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(address = %connection.address, %error, "cannot connect to upstream");
                set_link(Link::Down);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = connection.retire.cancelled() => return,
                }
                backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
            }
            Err(_) => {
                tracing::warn!(address = %connection.address, "connecting to upstream timed out");
                set_link(Link::Down);
            }
        }
    }
}

/// Opens one HTTP/2 connection (prior knowledge, no TLS inside the cluster). Returns its request
/// handle and the future that runs it.
async fn connect(
    address: SocketAddr,
) -> io::Result<(
    SendRequest<UpstreamBody>,
    http2::Connection<TokioIo<TcpStream>, UpstreamBody, TokioExecutor>,
)> {
    let tcp = TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        // Many client streams share one upstream connection. A large connection window keeps
        // flow control from throttling them, and h2 sizes its budget for small DATA frames (one
        // small message per stream, e.g. a heartbeat) from it: with the default 64 KiB window, a
        // burst of small messages on a thousand streams trips h2's flood protection (GOAWAY
        // ENHANCE_YOUR_CALM "too_many_data_frames").
        .initial_connection_window_size(UPSTREAM_CONNECTION_WINDOW)
        .initial_stream_window_size(UPSTREAM_STREAM_WINDOW)
        .max_header_list_size(UPSTREAM_MAX_HEADER_LIST_BYTES)
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tonic::service::Routes;
    use tonic_health::{
        ServingStatus,
        pb::{HealthCheckRequest, health_client::HealthClient},
    };

    use super::*;

    /// A health server whose whole-server status tells which replica answered.
    async fn replica(status: ServingStatus) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        serve_health(listener, status).await;
        address
    }

    async fn serve_health(listener: TcpListener, status: ServingStatus) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(Routes::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }

    async fn answers(pool: &UpstreamPool, calls: usize) -> HashSet<i32> {
        let mut seen = HashSet::new();
        for _ in 0..calls {
            let response = HealthClient::new(pool.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
            seen.insert(response.into_inner().status);
        }
        seen
    }

    fn settings(connect_timeout: Duration) -> UpstreamSettings {
        UpstreamSettings {
            auth: "http://replicas:1".parse().unwrap(),
            chat: "http://replicas:1".parse().unwrap(),
            group: "http://replicas:1".parse().unwrap(),
            resolve_interval: Duration::from_millis(50),
            hosts_file: None,
            connect_timeout,
            connections_per_address: 2,
        }
    }

    fn fixed(addresses: Arc<Mutex<Vec<SocketAddr>>>) -> Resolver {
        Arc::new(move |_, _| {
            let current = addresses.lock().unwrap().clone();
            Box::pin(async move { Ok(current) })
        })
    }

    #[tokio::test]
    async fn calls_spread_over_every_address_and_follow_re_resolution() {
        let first = replica(ServingStatus::Serving).await;
        let second = replica(ServingStatus::NotServing).await;
        let addresses = Arc::new(Mutex::new(vec![first, second]));
        let settings = settings(Duration::from_millis(500));
        let pool = UpstreamPool::start(&settings.chat, &settings, fixed(addresses.clone()));

        let both = answers(&pool, 50).await;
        *addresses.lock().unwrap() = vec![second];
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = answers(&pool, 20).await;

        assert_eq!(both.len(), 2, "both replicas answered: {both:?}");
        assert_eq!(after, HashSet::from([ServingStatus::NotServing as i32]));
    }

    #[tokio::test]
    async fn a_list_of_urls_is_one_pool_over_the_addresses_of_all_of_them() {
        let first = replica(ServingStatus::Serving).await;
        let second = replica(ServingStatus::NotServing).await;
        // Each name resolves to its own replica; "flaky" fails, which must not empty the pool.
        let by_name: Resolver = Arc::new(move |host, _| {
            let resolved = match host.as_str() {
                "first" => Ok(vec![first]),
                "second" => Ok(vec![second]),
                _ => Err(io::Error::other("no such host")),
            };
            Box::pin(async move { resolved })
        });
        let settings = settings(Duration::from_millis(500));
        let urls: UpstreamUrls = "http://first:1,http://second:1,http://flaky:1"
            .parse()
            .unwrap();

        let pool = UpstreamPool::start(&urls, &settings, by_name);
        let seen = answers(&pool, 50).await;

        assert_eq!(seen.len(), 2, "both replicas answered: {seen:?}");
    }

    #[tokio::test]
    async fn a_pool_follows_its_hosts_file_as_it_is_rewritten() {
        // Two replicas on one port of two loopback addresses, as pods behind a headless Service.
        let (first, second) = loop {
            let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = first.local_addr().unwrap().port();
            if let Ok(second) = TcpListener::bind(("127.0.0.2", port)).await {
                break (first, second);
            }
        };
        let port = first.local_addr().unwrap().port();
        serve_health(first, ServingStatus::Serving).await;
        serve_health(second, ServingStatus::NotServing).await;
        let file = std::env::temp_dir().join(format!("upstream-hosts-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, "127.0.0.1 replicas\n").unwrap();
        let settings = settings(Duration::from_millis(500));
        let urls: UpstreamUrls = format!("http://replicas:{port}").parse().unwrap();
        let pool = UpstreamPool::start(&urls, &settings, hosts_file_then_dns(file.clone()));
        let rewrite = |records: &str| {
            std::fs::write(&file, records).unwrap();
            tokio::time::sleep(Duration::from_millis(200))
        };

        let first_only = answers(&pool, 10).await;
        rewrite("127.0.0.1 replicas\n127.0.0.2 replicas\n").await;
        let both = answers(&pool, 50).await;
        rewrite("127.0.0.2 replicas\n").await;
        let second_only = answers(&pool, 10).await;
        std::fs::remove_file(&file).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let unreadable = answers(&pool, 10).await;

        let serving = HashSet::from([ServingStatus::Serving as i32]);
        let not_serving = HashSet::from([ServingStatus::NotServing as i32]);
        assert_eq!(first_only, serving);
        assert_eq!(both.len(), 2, "both replicas answered: {both:?}");
        assert_eq!(second_only, not_serving);
        // An unreadable file keeps the last addresses.
        assert_eq!(unreadable, not_serving);
    }

    #[tokio::test]
    async fn a_dead_upstream_is_unavailable_at_once_and_a_revived_one_is_used_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let settings = settings(Duration::from_secs(5));
        let pool = UpstreamPool::start(
            &settings.chat,
            &settings,
            fixed(Arc::new(Mutex::new(vec![address]))),
        );
        // Let the first connection attempts fail.
        tokio::time::sleep(Duration::from_millis(30)).await;

        let started = std::time::Instant::now();
        let refused = HealthClient::new(pool.clone())
            .check(HealthCheckRequest::default())
            .await;
        assert!(refused.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered after {:?}, not at once",
            started.elapsed()
        );

        // The same port comes back: the pool reconnects (backoff starts at 50 ms).
        let listener = TcpListener::bind(address).await.unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(Routes::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut answered = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(response) = HealthClient::new(pool.clone())
                .check(HealthCheckRequest::default())
                .await
            {
                answered = Some(response.into_inner().status);
                break;
            }
        }
        assert_eq!(answered, Some(ServingStatus::Serving as i32));
    }
}
