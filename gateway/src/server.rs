//! The gateway's own HTTP server loop, in place of `axum::serve`, which cannot set HTTP/2 limits.
//!
//! One port speaks HTTP/1.1 (gRPC-Web from browsers), HTTP/2 with prior knowledge (native gRPC,
//! h2c) and, when given a [`TlsAcceptor`], both over TLS (HTTP/2 chosen by ALPN). Every request
//! carries the peer address as `ConnectInfo<SocketAddr>`. Start reading at [`serve`].
//!
//! What it does not do: routing, authentication or per-client rate limits (the router's layers do
//! those), and HTTP upgrades (nothing the gateway serves needs WebSocket or CONNECT).

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use common::grpc_guard;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::{Bytes, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
    time::Instant,
};
use tokio_rustls::{TlsAcceptor, rustls};
use tower::ServiceExt;

use crate::frames::FrameWatch;

/// A client that has not finished the TLS handshake by then is disconnected, so half-open
/// handshakes cannot pile up.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOMEM):
/// retrying at once would spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// The listening socket's accept queue (the kernel caps it at `net.core.somaxconn`, 4096 by
/// default since Linux 5.4, in each pod's network namespace too). Every client of a gateway that
/// restarts reconnects within a second or so, and an Ingress in front opens one connection per
/// stream (nginx's `grpc_pass` does not multiplex): with tokio's default of 1024, the fault suite's
/// storm of 5,000 streams through nginx overflowed it, the kernel dropped SYNs, and connections
/// waited for TCP's retransmissions (1 s, 3 s) until nginx's connect timeout answered 504.
pub const LISTEN_BACKLOG: u32 = 4096;
/// hyper panics on an HTTP/1 buffer limit below this.
const MIN_HTTP1_BUFFER_BYTES: usize = 8 * 1024;
/// The smallest transport-level cap on a request's header list; see [`hard_header_list_bytes`].
const MIN_HARD_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// Per-connection limits. `Default` gives the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection (hyper and tonic announce none,
    /// which means unlimited): default 100.
    pub max_concurrent_streams: u32,
    /// The largest request header list (each field's name and value plus 32 bytes, as HTTP/2
    /// counts): default 16 KiB. A larger gRPC request is answered with a gRPC status,
    /// UNAUTHENTICATED when the `authorization` header alone is what makes it too large and
    /// RESOURCE_EXHAUSTED otherwise; any other request gets 431. That holds up to the transport's
    /// own cap ([`hard_header_list_bytes`]: 4 times this, at least 64 KiB), which hyper enforces
    /// before any request exists: above it, 431 over HTTP/1.1 and, over HTTP/2, 431 or a reset
    /// stream (or GOAWAY for a header block that cannot even be skipped).
    pub max_header_list_bytes: u32,
    /// TCP keepalive: an idle connection is probed after this long, which finds dead peers:
    /// default 30 s. (TCP, not HTTP/2 PING: see [`tcp_keepalive`].)
    pub keepalive_interval: Duration,
    /// An idle connection whose probe goes unanswered this long is closed: default 10 s.
    pub keepalive_timeout: Duration,
    /// A connection with no request in flight (a response still streaming counts as in flight)
    /// for this long is closed gracefully: default 5 min. One that has not closed
    /// `keepalive_timeout` later (its client never takes the GOAWAY, or never ends a request body
    /// the gateway stopped reading) is dropped.
    pub idle_timeout: Duration,
    /// An HTTP/1.1 client must send a request's whole head (request line and headers) within this
    /// once the gateway waits for one (from its first byte, and between keep-alive requests), or
    /// the connection is closed without an answer (slowloris on the headers): default 30 s.
    pub header_read_timeout: Duration,
    /// A connection whose writes have been blocked this long (the client reads nothing: its
    /// receive window and the socket buffers are full) is dropped, whatever is in flight, like
    /// nginx's `send_timeout`: default 60 s. So is an HTTP/2 connection on which a response has
    /// been held by the client's flow-control windows (zero for its stream or the connection)
    /// while no stream sent any DATA, for this long to a quarter more (checked every quarter):
    /// a client that opens streams and grants them no window holds nothing for longer.
    pub send_timeout: Duration,
}

/// The PEM files [`tls_acceptor`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate first, then any intermediates.
    pub certificate_chain: PathBuf,
    /// The private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// Why [`tls_acceptor`] cannot build a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or not PEM.
    #[error("cannot read the TLS certificate chain from {path}")]
    Certificates {
        /// The file that was read.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{path} holds no certificate")]
    NoCertificate {
        /// The file that was read.
        path: PathBuf,
    },
    /// The key file is missing, unreadable or holds no private key.
    #[error("cannot read the TLS private key from {path}")]
    PrivateKey {
        /// The file that was read.
        path: PathBuf,
        /// What went wrong (never the key itself).
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the pair, for example because the key does not match the certificate.
    #[error("the TLS certificate chain and private key are unusable")]
    Config(#[from] rustls::Error),
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            max_header_list_bytes: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5 * 60),
            header_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// Reads a certificate chain and its private key and builds a TLS acceptor for them: TLS 1.2 and
/// 1.3 on the ring provider, ALPN offering `h2` then `http/1.1`.
///
/// # Errors
/// When a file cannot be read or parsed, or rustls rejects the pair.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certificate_error = |source| TlsError::Certificates {
        path: files.certificate_chain.clone(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(&files.certificate_chain)
        .map_err(certificate_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(certificate_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.certificate_chain.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.private_key).map_err(|source| {
        TlsError::PrivateKey {
            path: files.private_key.clone(),
            source,
        }
    })?;
    // An explicit provider, because the process-wide default is ambiguous (and `builder()` panics)
    // once any dependency also enables rustls' aws-lc-rs feature.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds the gateway's listener on `addr` with an accept queue of [`LISTEN_BACKLOG`] (and
/// `SO_REUSEADDR`, as `TcpListener::bind` sets it, so that a restarted gateway can bind while
/// connections of the previous one linger in TIME_WAIT).
///
/// # Errors
/// When the socket cannot be created or bound.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// connection to finish (HTTP/2 GOAWAY, HTTP/1 close after the current response), waits for them
/// at most `drain_timeout`, drops what remains and returns.
///
/// With `tls`, every connection must complete a TLS handshake first (within 10 s); failures are
/// logged at debug and only end that connection. Errors on single connections never end the loop,
/// and neither does running out of file descriptors (the loop logs and retries after a pause).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let builder = Arc::new(connection_builder(&limits));
    let (stop_connections, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections as we go, or the set would grow for the life of the process.
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                log_panic(finished);
            }
            (tcp, peer) = accept(&listener) => {
                tcp_keepalive(&tcp, &limits);
                let connection = ConnectionTask {
                    builder: Arc::clone(&builder),
                    app: app.clone(),
                    peer,
                    idle_timeout: limits.idle_timeout,
                    close_grace: limits.keepalive_timeout,
                    send_timeout: limits.send_timeout,
                    max_header_list_bytes: limits.max_header_list_bytes,
                    stopping: stopping.clone(),
                };
                connections.spawn(connection.run(tcp, tls.clone()));
            }
        }
    }
    // Closing the listener makes new clients fail fast (and retry elsewhere) instead of waiting in
    // the backlog of a server that will never accept them.
    drop(listener);
    let _ = stop_connections.send(true);
    let draining = async {
        while let Some(finished) = connections.join_next().await {
            log_panic(finished);
        }
    };
    if tokio::time::timeout(drain_timeout, draining).await.is_err() {
        tracing::warn!(
            ?drain_timeout,
            n_connections = connections.len(),
            "drain timed out; dropping the connections still open"
        );
    }
    // Aborting drops each connection, which closes its socket; waiting makes sure that is done
    // by the time `serve` returns.
    connections.shutdown().await;
}

/// The hyper builder for every connection: HTTP/1.1 and HTTP/2, detected from the first bytes
/// (the HTTP/2 preface), which also covers HTTP/2 chosen by ALPN.
fn connection_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let hard_limit = hard_header_list_bytes(limits.max_header_list_bytes);
    let http1_buffer = usize::try_from(hard_limit)
        .unwrap_or(usize::MAX)
        .max(MIN_HTTP1_BUFFER_BYTES);
    // Against slow request heads (slowloris); the timer is what makes hyper enforce it.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(http1_buffer);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(hard_limit)
        // No HTTP/2 PING: see `tcp_keepalive`.
        .keep_alive_interval(None);
    builder
}

/// Dead peers are found by TCP keepalive, not by HTTP/2 PING. A PING waits behind the response
/// data already written, so it cannot tell a dead peer from a live one that stopped reading: nginx
/// (the Ingress) opens one connection per stream and stops reading it while its client does not
/// read, and a PING there closed the connection, which nginx reports to its client as INTERNAL,
/// before chat's SLOW_CONSUMER status behind that backlog could reach it (`client/tests/cluster`,
/// `slow_consumers.rs`). Keepalive probes find a dead idle peer after the interval plus the
/// timeout. No TCP_USER_TIMEOUT: Linux applies it to a zero window too, which is a live slow
/// reader (it closed those connections after 40 s in the same test); a dead peer with data in
/// flight is found by the kernel's retransmission limit (`tcp_retries2`, about 15 minutes).
fn tcp_keepalive(tcp: &TcpStream, limits: &ServerLimits) {
    let socket = socket2::SockRef::from(tcp);
    let probes = socket2::TcpKeepalive::new()
        .with_time(limits.keepalive_interval)
        .with_interval(limits.keepalive_timeout)
        .with_retries(1);
    if let Err(error) = socket.set_tcp_keepalive(&probes) {
        tracing::debug!(%error, "cannot set TCP keepalive");
    }
}

/// The transport-level cap on a request's header list, above the configured limit so that
/// requests between the two reach [`ConnectionService`], which answers gRPC ones with a gRPC
/// status (a client cannot read a status from a 431 or a reset stream: it reports UNKNOWN or
/// INTERNAL). Bounded, as h2 and hyper hold a header list in memory while they read it.
pub fn hard_header_list_bytes(limit: u32) -> u32 {
    limit.saturating_mul(4).max(MIN_HARD_HEADER_LIST_BYTES)
}

/// Waits for the next connection. Errors about one connection are skipped; others (EMFILE and
/// friends) pause the loop briefly, since they last until some connection closes.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                // gRPC writes small frames and waits for answers: Nagle would add latency.
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
                }
                return (tcp, peer);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(%error, "a connection failed before it was accepted");
            }
            Err(error) => {
                tracing::error!(%error, "cannot accept connections; retrying shortly");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

fn log_panic(finished: Result<(), tokio::task::JoinError>) {
    if let Err(error) = finished
        && error.is_panic()
    {
        tracing::error!(%error, "a connection task panicked");
    }
}

/// One accepted connection, from the TLS handshake to the end of HTTP.
struct ConnectionTask {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    peer: SocketAddr,
    idle_timeout: Duration,
    /// How long an idle connection asked to close may take to do it (the keepalive timeout).
    close_grace: Duration,
    send_timeout: Duration,
    max_header_list_bytes: u32,
    /// Becomes `true` when the server shuts down.
    stopping: watch::Receiver<bool>,
}

impl ConnectionTask {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.serve_http(tcp).await;
        };
        let mut stopping = self.stopping.clone();
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
        let handshake = tokio::select! {
            result = handshake => result,
            // Nothing has been served on this connection yet, so there is nothing to drain.
            Ok(_) = stopping.wait_for(|stopping| *stopping) => return,
        };
        match handshake {
            Ok(Ok(tls_stream)) => self.serve_http(tls_stream).await,
            Ok(Err(error)) => tracing::debug!(%error, peer = %self.peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    /// Serves HTTP until the connection ends, closing it gracefully when it has been idle for
    /// `idle_timeout` or when the server shuts down, and dropping it when its writes have been
    /// blocked for `send_timeout`.
    async fn serve_http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Self {
            builder,
            app,
            peer,
            idle_timeout,
            close_grace,
            send_timeout,
            max_header_list_bytes,
            mut stopping,
        } = self;
        let (in_flight_count, mut in_flight) = watch::channel(0_usize);
        let service = ConnectionService {
            app,
            peer,
            max_header_list_bytes: usize::try_from(max_header_list_bytes).unwrap_or(usize::MAX),
            in_flight: Arc::new(in_flight_count),
        };
        let writes = Arc::new(WriteProgress::default());
        let frames = Arc::new(FrameWatch::default());
        let io = WatchedIo {
            io,
            writes: Arc::clone(&writes),
            frames: Arc::clone(&frames),
            flooded: false,
        };
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut closing = false;
        let mut idle_close_since: Option<Instant> = None;
        // The idle timer restarts from the moment the count of requests in flight last changed,
        // i.e. when the last request of a busy period finished.
        let mut idle_since = Instant::now();
        let mut send_checks =
            tokio::time::interval((send_timeout / 4).max(Duration::from_millis(100)));
        send_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let idle = *in_flight.borrow_and_update() == 0;
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                    return;
                }
                Ok(()) = in_flight.changed() => idle_since = Instant::now(),
                () = tokio::time::sleep_until(idle_since + idle_timeout), if idle && !closing => {
                    tracing::debug!(%peer, "closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    idle_close_since = Some(Instant::now());
                }
                // A graceful close needs the client: HTTP/2 waits for it to take the GOAWAY (a
                // client that sent only the preface, or floods PINGs, never lets it finish), and
                // HTTP/1.1 for a request body it never ends. With no request in flight there is
                // nothing to lose: after the grace, the connection is dropped.
                () = tokio::time::sleep_until(
                    idle_close_since.unwrap_or(idle_since) + close_grace
                ), if idle && idle_close_since.is_some() => {
                    tracing::debug!(%peer, "dropping an idle connection that did not close");
                    return;
                }
                _ = send_checks.tick() => {
                    if writes.blocked_for() >= send_timeout {
                        // Nothing can be sent to this client, not even a GOAWAY: drop it.
                        tracing::debug!(%peer, "dropping a connection whose client reads nothing");
                        return;
                    }
                    // The same client over HTTP/2 flow control: its windows hold a response,
                    // and no stream has sent anything for as long.
                    if frames.stalled_for(std::time::Instant::now()) >= send_timeout {
                        tracing::debug!(%peer, "dropping a connection whose client grants no window");
                        return;
                    }
                }
                Ok(_) = stopping.wait_for(|stopping| *stopping), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Since when a connection's writes have been blocked, if they are.
#[derive(Default)]
struct WriteProgress {
    blocked_since: std::sync::Mutex<Option<Instant>>,
}

impl WriteProgress {
    fn note<T>(&self, poll: &Poll<T>) {
        let mut blocked_since = common::sync::lock(&self.blocked_since);
        match poll {
            Poll::Pending => {
                blocked_since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => *blocked_since = None,
        }
    }

    fn blocked_for(&self) -> Duration {
        common::sync::lock(&self.blocked_since).map_or(Duration::ZERO, |since| since.elapsed())
    }
}

pin_project_lite::pin_project! {
    /// A connection's I/O, noting in [`WriteProgress`] whether its writes are blocked and showing
    /// its HTTP/2 frames to a [`FrameWatch`]. When the client floods control frames, it writes a
    /// GOAWAY ENHANCE_YOUR_CALM (if the socket takes it at once) and fails every read after, which
    /// ends the connection.
    struct WatchedIo<I> {
        #[pin]
        io: I,
        writes: Arc<WriteProgress>,
        frames: Arc<FrameWatch>,
        flooded: bool,
    }
}

impl<I: AsyncRead + AsyncWrite> AsyncRead for WatchedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if *this.flooded {
            return Poll::Ready(Err(control_frame_flood()));
        }
        let filled = buf.filled().len();
        let poll = this.io.as_mut().poll_read(cx, buf);
        if poll.is_ready() && this.frames.read(&buf.filled()[filled..]) {
            *this.flooded = true;
            if let Some(goaway) = this.frames.goaway() {
                // Best effort: a client that reads nothing has no room for it, and is dropped.
                if let Poll::Ready(Ok(_)) = this.io.as_mut().poll_write(cx, &goaway) {
                    let _ = this.io.as_mut().poll_flush(cx);
                }
            }
            return Poll::Ready(Err(control_frame_flood()));
        }
        poll
    }
}

fn control_frame_flood() -> io::Error {
    io::Error::other("the client flooded PING or SETTINGS frames")
}

impl<I: AsyncWrite> AsyncWrite for WatchedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write(cx, buf);
        this.writes.note(&poll);
        if let Poll::Ready(Ok(n)) = poll {
            this.frames.wrote(&buf[..n]);
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write_vectored(cx, bufs);
        this.writes.note(&poll);
        if let Poll::Ready(Ok(mut n)) = poll {
            for buf in bufs {
                if n == 0 {
                    break;
                }
                let taken = n.min(buf.len());
                this.frames.wrote(&buf[..taken]);
                n -= taken;
            }
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.io.poll_flush(cx);
        // A TCP flush is always ready: only a write that goes through shows the client reads.
        if poll.is_pending() {
            this.writes.note(&poll);
        }
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// The hyper service of one connection: refuses header lists over the limit, adds `ConnectInfo`
/// and counts requests in flight around the router.
struct ConnectionService {
    app: Router,
    peer: SocketAddr,
    max_header_list_bytes: usize,
    in_flight: Arc<watch::Sender<usize>>,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(Arc::clone(&self.in_flight));
        if let Some(refusal) = refuse_large_headers(request.headers(), self.max_header_list_bytes) {
            let response = refusal.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            });
            return Box::pin(std::future::ready(Ok(response)));
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let response = self.app.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            // The guard moves into the body: a stream's response body lives as long as the stream.
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// The answer to a request whose header list is over `limit` bytes, if it is: a gRPC status for
/// a gRPC request (trailers-only, in the head, which gRPC-Web clients read too), else 431. It is
/// given before the router, so it carries no CORS headers: a browser calling from another origin
/// sees a failed request rather than the status (same-origin pages, like the web demo, see it).
fn refuse_large_headers(headers: &http::HeaderMap, limit: usize) -> Option<Response<Body>> {
    let size = grpc_guard::header_list_size(headers);
    if size <= limit {
        return None;
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(http::HeaderValue::as_bytes)
        .unwrap_or_default();
    tracing::debug!(size, limit, "a request's header list is over the limit");
    if !grpc_guard::is_grpc(headers) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        return Some(response);
    }
    let authorization = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .map(|value| "authorization".len() + value.len() + 32)
        .sum::<usize>();
    let status = if authorization > 0 && size - authorization <= limit {
        tonic::Status::unauthenticated(format!(
            "the authorization header is too large ({authorization} bytes; every header together \
             may take {limit}): send the access token you were given"
        ))
    } else {
        tonic::Status::resource_exhausted(format!(
            "the request's headers take {size} bytes; the limit is {limit}"
        ))
    };
    let mut response: Response<Body> = status.into_http();
    let answer_type = if content_type.starts_with(b"application/grpc-web-text") {
        Some("application/grpc-web-text+proto")
    } else if content_type.starts_with(b"application/grpc-web") {
        Some("application/grpc-web+proto")
    } else {
        None
    };
    if let Some(answer_type) = answer_type {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(answer_type),
        );
    }
    Some(response)
}

/// Counts one request as in flight until dropped.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(count: Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its request counted as in flight until hyper has finished with it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,100 connections arrive before the gateway accepts any (a reconnect storm while it is
    /// busy): every one completes its handshake at once. With tokio's default accept queue of
    /// 1024 the last ones wait for SYN retransmissions (a second or more).
    #[tokio::test]
    async fn a_burst_of_connections_beyond_tokios_default_backlog_is_queued() {
        const CONNECTIONS: usize = 1100;
        if open_files_soft_limit().is_some_and(|limit| limit < CONNECTIONS as u64 + 100) {
            eprintln!("skipped: RLIMIT_NOFILE is below {CONNECTIONS} connections");
            return;
        }
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connections = Vec::new();
        for n in 0..CONNECTIONS {
            let connect = tokio::net::TcpStream::connect(addr);
            let connected = tokio::time::timeout(Duration::from_millis(500), connect).await;
            assert!(
                matches!(connected, Ok(Ok(_))),
                "connection {n} was not queued: {connected:?}"
            );
            connections.push(connected);
        }
        drop(listener);
    }

    /// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
    fn open_files_soft_limit() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}
