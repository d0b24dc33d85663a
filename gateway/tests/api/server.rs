//! `gateway::server`: the HTTP server loop against a real socket, with a small axum app and
//! hyper's own client connections (HTTP/1.1, h2c, and both over TLS).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Path, State},
    routing::get,
};
use gateway::server::{self, ServerLimits, TlsError, TlsFiles};
use http_body_util::{BodyExt, Empty};
use hyper::{
    Request, Response, StatusCode, Version,
    body::{Bytes, Incoming},
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, oneshot},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, rustls};

const DRAIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn http1_and_h2c_with_prior_knowledge_are_served_on_the_same_port() {
    let server = TestServer::start(app(), ServerLimits::default(), None, DRAIN).await;
    let (mut h1, _) = http1_over(TcpStream::connect(server.addr).await.unwrap()).await;
    let (mut h2, _) = http2_over(TcpStream::connect(server.addr).await.unwrap()).await;

    let h1_response = h1.send_request(h1_get(server.addr, "/hello")).await;
    let h2_response = h2.send_request(h2_get("http", server.addr, "/hello")).await;

    let h1_response = h1_response.unwrap();
    assert_eq!(h1_response.version(), Version::HTTP_11);
    assert_eq!(text(h1_response).await, "hello");
    let h2_response = h2_response.unwrap();
    assert_eq!(h2_response.version(), Version::HTTP_2);
    assert_eq!(text(h2_response).await, "hello");
}

#[tokio::test]
async fn each_request_carries_the_client_address_as_connect_info() {
    let server = TestServer::start(app(), ServerLimits::default(), None, DRAIN).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let client_addr = tcp.local_addr().unwrap();
    let (mut h2, _) = http2_over(tcp).await;

    let response = h2.send_request(h2_get("http", server.addr, "/peer")).await;

    assert_eq!(text(response.unwrap()).await, client_addr.to_string());
}

#[tokio::test]
async fn a_stream_beyond_max_concurrent_streams_waits_until_another_finishes() {
    let gate = Gate::default();
    let limits = ServerLimits {
        max_concurrent_streams: 2,
        ..ServerLimits::default()
    };
    let server = TestServer::start(gate.app(), limits, None, DRAIN).await;
    let (mut h2, _) = http2_over(TcpStream::connect(server.addr).await.unwrap()).await;
    // A first exchange makes sure the client has received the server's SETTINGS.
    h2.send_request(h2_get("http", server.addr, "/hello"))
        .await
        .unwrap();

    let held: Vec<_> = (0..3)
        .map(|_| tokio::spawn(h2.send_request(h2_get("http", server.addr, "/hold"))))
        .collect();
    gate.wait_until_entered(2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let entered_while_full = gate.entered();
    gate.release(1);
    gate.wait_until_entered(3).await;
    gate.release(2);

    assert_eq!(entered_while_full, 2);
    for response in held {
        assert_eq!(response.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn an_http1_request_head_over_the_header_limit_gets_431() {
    let server = TestServer::start(app(), small_header_limit(), None, DRAIN).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let big_value = "a".repeat(10 * 1024);

    let head = format!(
        "GET /hello HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\nx-big: {big_value}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut tcp).await;

    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
}

#[tokio::test]
async fn an_h2_header_list_over_the_limit_is_refused() {
    let server = TestServer::start(app(), small_header_limit(), None, DRAIN).await;
    let (mut h2, _) = http2_over(TcpStream::connect(server.addr).await.unwrap()).await;
    let mut request = h2_get("http", server.addr, "/hello");
    let big_value = "a".repeat(10 * 1024);
    request
        .headers_mut()
        .insert("x-big", big_value.parse().unwrap());

    let response = h2.send_request(request).await;

    // h2 answers 431 when the stream can still carry a response, and resets it otherwise.
    match response {
        Ok(response) => assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ),
        Err(error) => assert!(error.to_string().contains("http2"), "{error}"),
    }
}

#[tokio::test]
async fn https_with_alpn_h2_is_served() {
    let (acceptor, certificate) = self_signed_tls();
    let server = TestServer::start(app(), ServerLimits::default(), Some(acceptor), DRAIN).await;
    let tls = connect_tls(server.addr, &certificate, b"h2").await;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (mut h2, _) = http2_over(tls).await;

    let response = h2
        .send_request(h2_get("https", server.addr, "/hello"))
        .await;

    assert_eq!(negotiated.as_deref(), Some(&b"h2"[..]));
    let response = response.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(text(response).await, "hello");
}

#[tokio::test]
async fn http1_over_tls_is_served() {
    let (acceptor, certificate) = self_signed_tls();
    let server = TestServer::start(app(), ServerLimits::default(), Some(acceptor), DRAIN).await;
    let tls = connect_tls(server.addr, &certificate, b"http/1.1").await;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (mut h1, _) = http1_over(tls).await;

    let response = h1.send_request(h1_get(server.addr, "/hello")).await;

    assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..]));
    let response = response.unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(text(response).await, "hello");
}

#[tokio::test]
async fn a_failed_tls_handshake_ends_only_that_connection() {
    let (acceptor, certificate) = self_signed_tls();
    let server = TestServer::start(app(), ServerLimits::default(), Some(acceptor), DRAIN).await;
    let mut plaintext = TcpStream::connect(server.addr).await.unwrap();
    plaintext
        .write_all(b"GET /hello HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut plaintext).await;

    let tls = connect_tls(server.addr, &certificate, b"h2").await;
    let (mut h2, _) = http2_over(tls).await;
    let response = h2
        .send_request(h2_get("https", server.addr, "/hello"))
        .await;

    assert_eq!(response.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn tls_acceptor_names_a_missing_certificate_file() {
    let files = TlsFiles {
        certificate_chain: "/nonexistent/chain.pem".into(),
        private_key: "/nonexistent/key.pem".into(),
    };

    let error = server::tls_acceptor(&files).err().unwrap();

    assert!(
        matches!(&error, TlsError::Certificates { path, .. } if path == &files.certificate_chain),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let server = TestServer::start(app(), short_idle_timeout(), None, DRAIN).await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();

    let received = read_until_closed(&mut tcp).await;

    assert!(received.is_empty());
    let elapsed = started.elapsed();
    assert!(elapsed >= short_idle_timeout().idle_timeout, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[tokio::test]
async fn an_h2_connection_is_closed_once_idle_for_the_idle_timeout() {
    let server = TestServer::start(app(), short_idle_timeout(), None, DRAIN).await;
    let (mut h2, connection) = http2_over(TcpStream::connect(server.addr).await.unwrap()).await;
    let response = h2.send_request(h2_get("http", server.addr, "/hello")).await;
    assert_eq!(text(response.unwrap()).await, "hello");
    let idle_since = Instant::now();

    let ended = tokio::time::timeout(Duration::from_secs(2), connection).await;

    assert!(ended.is_ok(), "the server kept the idle connection open");
    let elapsed = idle_since.elapsed();
    let idle_timeout = short_idle_timeout().idle_timeout;
    assert!(
        elapsed >= idle_timeout - Duration::from_millis(50),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_connection_whose_response_is_still_streaming_does_not_count_as_idle() {
    let server = TestServer::start(app(), short_idle_timeout(), None, DRAIN).await;
    let (mut h2, _) = http2_over(TcpStream::connect(server.addr).await.unwrap()).await;

    // The handler returns at once; only the body outlasts the 300 ms idle timeout.
    let late = h2
        .send_request(h2_get("http", server.addr, "/late-body/500"))
        .await;
    let late_body = text(late.unwrap()).await;
    let next = h2.send_request(h2_get("http", server.addr, "/hello")).await;

    assert_eq!(late_body, "late");
    // Had the connection counted as idle during the body, it would have been sent GOAWAY by now.
    assert_eq!(text(next.unwrap()).await, "hello");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish_and_serve_returns() {
    let gate = Gate::default();
    let mut server = TestServer::start(gate.app(), ServerLimits::default(), None, DRAIN).await;
    let (mut h1, _) = http1_over(TcpStream::connect(server.addr).await.unwrap()).await;
    let (mut h2, _) = http2_over(TcpStream::connect(server.addr).await.unwrap()).await;
    let h1_response = tokio::spawn(h1.send_request(h1_get(server.addr, "/hold")));
    let h2_response = tokio::spawn(h2.send_request(h2_get("http", server.addr, "/hold")));
    gate.wait_until_entered(2).await;

    server.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let new_connection = TcpStream::connect(server.addr).await;
    gate.release(2);
    let served = tokio::time::timeout(Duration::from_secs(1), server.task).await;

    assert!(new_connection.is_err(), "still accepting while draining");
    assert_eq!(text(h1_response.await.unwrap().unwrap()).await, "released");
    assert_eq!(text(h2_response.await.unwrap().unwrap()).await, "released");
    assert!(served.is_ok(), "serve did not return after the drain");
}

#[tokio::test]
async fn a_request_running_past_the_drain_timeout_is_dropped_and_serve_returns_at_the_deadline() {
    let gate = Gate::default();
    let drain_timeout = Duration::from_millis(200);
    let mut server =
        TestServer::start(gate.app(), ServerLimits::default(), None, drain_timeout).await;
    let (mut h1, _) = http1_over(TcpStream::connect(server.addr).await.unwrap()).await;
    let response = tokio::spawn(h1.send_request(h1_get(server.addr, "/hold")));
    gate.wait_until_entered(1).await;
    let stopped_at = Instant::now();

    server.stop();
    let served = tokio::time::timeout(Duration::from_secs(2), server.task).await;

    let elapsed = stopped_at.elapsed();
    assert!(served.is_ok(), "serve did not return");
    assert!(elapsed >= drain_timeout, "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
    let response = tokio::time::timeout(Duration::from_secs(1), response).await;
    assert!(
        response.unwrap().unwrap().is_err(),
        "the request was not dropped"
    );
}

#[tokio::test]
async fn a_client_reading_slowly_through_a_small_window_keeps_its_connection() {
    let server = TestServer::start(app(), short_send_timeout(), None, DRAIN).await;
    let (mut h2, _connection) = h2_with_window(server.addr, 1024).await;

    // 16 KiB through a 1 KiB window, a window update every 100 ms: 1.6 s in all, far past the
    // 300 ms send timeout, but never 300 ms without progress.
    let mut body = h2_response_body(&mut h2, server.addr, "/big/16").await;
    let mut received = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the connection stays");
        received += chunk.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }

    assert_eq!(received, 16 * 1024);
}

#[tokio::test]
async fn a_client_that_grants_no_window_is_dropped_after_the_send_timeout() {
    let limits = short_send_timeout();
    let server = TestServer::start(app(), limits, None, DRAIN).await;
    let (mut h2, connection) = h2_with_window(server.addr, 0).await;

    let _body = h2_response_body(&mut h2, server.addr, "/big/16").await;
    let held_since = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(2), connection).await;

    assert!(ended.is_ok(), "the server kept the connection");
    let held = held_since.elapsed();
    // At least the send timeout, at most a quarter more (the check's period) and some slack.
    assert!(
        held >= limits.send_timeout - Duration::from_millis(50),
        "{held:?}"
    );
    assert!(held < limits.send_timeout * 2, "{held:?}");
}

/// A `serve` task on a loopback port.
struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start(
        app: Router,
        limits: ServerLimits,
        tls: Option<TlsAcceptor>,
        drain_timeout: Duration,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(server::serve(
            listener,
            app,
            limits,
            tls,
            shutdown,
            drain_timeout,
        ));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn stop(&mut self) {
        let _ = self.stop.take().expect("stopped twice").send(());
    }
}

/// `/hello`, `/peer` (the `ConnectInfo` address), `/late-body/{ms}` (headers at once, the body
/// after `ms`) and `/big/{kib}` (that many KiB).
fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route("/late-body/{ms}", get(late_body))
        .route(
            "/big/{kib}",
            get(|Path(kib): Path<usize>| async move { vec![b'x'; kib * 1024] }),
        )
}

async fn late_body(Path(ms): Path<u64>) -> Body {
    Body::from_stream(futures::stream::once(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Infallible>("late")
    }))
}

/// `/hold` requests wait for [`Gate::release`]; the gate counts how many have started.
#[derive(Clone)]
struct Gate {
    entered: Arc<AtomicUsize>,
    permits: Arc<Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: Arc::default(),
            permits: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Gate {
    fn app(&self) -> Router {
        let hold = Router::new()
            .route("/hold", get(hold))
            .with_state(self.clone());
        app().merge(hold)
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    fn release(&self, n_requests: usize) {
        self.permits.add_permits(n_requests);
    }

    async fn wait_until_entered(&self, n_requests: usize) {
        let wait = async {
            while self.entered() < n_requests {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .unwrap_or_else(|_| panic!("{} of {n_requests} requests arrived", self.entered()));
    }
}

async fn hold(State(gate): State<Gate>) -> &'static str {
    gate.entered.fetch_add(1, Ordering::SeqCst);
    gate.permits.acquire().await.unwrap().forget();
    "released"
}

fn small_header_limit() -> ServerLimits {
    // Below both hyper's defaults (16 KiB for HTTP/2, ~400 KiB for HTTP/1), so a 10 KiB header is
    // refused only if the configured limit is applied.
    ServerLimits {
        max_header_list_bytes: 8 * 1024,
        ..ServerLimits::default()
    }
}

fn short_send_timeout() -> ServerLimits {
    ServerLimits {
        send_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    }
}

/// An HTTP/2 connection (the `h2` crate, which leaves flow control to its caller) granting each
/// stream `window` bytes; the task ends when the connection does.
async fn h2_with_window(
    addr: SocketAddr,
    window: u32,
) -> (h2::client::SendRequest<Bytes>, JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, connection)
}

async fn h2_response_body(
    h2: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
) -> h2::RecvStream {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    response.await.unwrap().into_body()
}

fn short_idle_timeout() -> ServerLimits {
    ServerLimits {
        idle_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    }
}

async fn http1_over<I>(io: I) -> (http1::SendRequest<Empty<Bytes>>, JoinHandle<()>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await.unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, connection)
}

async fn http2_over<I>(io: I) -> (http2::SendRequest<Empty<Bytes>>, JoinHandle<()>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, connection)
}

fn h1_get(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::new())
        .unwrap()
}

fn h2_get(scheme: &str, addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("{scheme}://{addr}{path}"))
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap()
}

async fn text(response: Response<Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Everything the server sends until it closes the connection (a reset counts as closing).
///
/// # Panics
/// When the server keeps the connection open for more than 2 s.
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    let reading = async {
        loop {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), reading)
        .await
        .expect("the server kept the connection open");
    received
}

/// A server acceptor for a fresh self-signed `localhost` certificate, read through
/// [`server::tls_acceptor`] from PEM files, and the certificate for clients to trust.
fn self_signed_tls() -> (TlsAcceptor, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let directory = std::env::temp_dir().join(format!("gateway-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let files = TlsFiles {
        certificate_chain: directory.join("chain.pem"),
        private_key: directory.join("key.pem"),
    };
    std::fs::write(&files.certificate_chain, certified.cert.pem()).unwrap();
    std::fs::write(&files.private_key, certified.signing_key.serialize_pem()).unwrap();
    let acceptor = server::tls_acceptor(&files);
    std::fs::remove_dir_all(&directory).unwrap();
    (acceptor.unwrap(), certified.cert.der().clone())
}

pub(crate) async fn connect_tls(
    addr: SocketAddr,
    certificate: &CertificateDer<'static>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}
