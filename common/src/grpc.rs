//! Serving a tonic router the same way in every service: TCP settings, server reflection for the
//! service's own APIs and gRPC health, malformed requests answered INVALID_ARGUMENT and response
//! metadata bounded (`crate::grpc_guard`), every status cut to a bounded size
//! ([`crate::status::BoundStatusLayer`]), gRPC server metrics ([`crate::metrics::MetricsLayer`]),
//! and a graceful shutdown whose drain is bounded.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// How often an idle HTTP/2 connection is pinged, so dead peers are noticed and middleboxes keep
/// the connection open.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is closed.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server builder with the settings every service uses.
fn server_builder() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        // The gateway multiplexes many clients' streams over few connections: large windows keep
        // flow control from throttling them, and h2 sizes its flood protection for small DATA
        // frames from the connection window (the default 64 KiB trips on a burst of small
        // messages over a thousand streams).
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        // For the same reason: every client's cancelled calls reach a service as resets on the
        // gateway's few connections, and with h2's default (20 reset streams waiting to be
        // accepted) one client cancelling calls as fast as it opens them got the connection all
        // clients share closed (GOAWAY "too_many_resets"; the gateway's abuse suite). Clients'
        // own connections to the gateway keep h2's default.
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
}

/// Streams reset by the peer before the service accepted them, per connection; see
/// `server_builder`.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 4096;

/// HTTP/2 flow-control window of each connection.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of each stream.
const STREAM_WINDOW: u32 = 1024 * 1024;

/// Errors from [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the embedded descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed while running.
    #[error("server error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `services` on `listener`, adding server reflection (v1 and v1alpha, as grpcurl 1.8 still
/// asks for v1alpha) for `reflected_services` and for gRPC health, from every API file (a service's
/// own port describes internal APIs too). Every call is recorded into `metrics` with the status
/// the client gets.
///
/// When `shutdown` resolves the server stops accepting connections and lets in-flight calls finish
/// for at most `drain_timeout`; calls still running then are dropped. Long-lived streams should
/// also watch a cancellation token, so that they end cleanly well within the drain.
///
/// # Errors
/// When the reflection descriptors are invalid or the server fails.
pub async fn serve(
    services: Routes,
    reflected_services: &[&str],
    metrics: Arc<crate::metrics::Metrics>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> Result<(), ServeError> {
    let router = server_builder()
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(request_span)
                // Error statuses are mostly client mistakes; real failures are logged where they
                // happen (each crate's `From<Error> for Status`).
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // Outside the guard and the status bound, so that it records the status the client gets.
        .layer(crate::metrics::MetricsLayer::new(metrics))
        // Inside the trace layer, so that its events show the status the client gets.
        .layer(crate::grpc_guard::GrpcGuardLayer::new(
            crate::grpc_guard::workspace_schemas(),
        ))
        // Inside the guard: statuses are cut to size before its last-resort metadata bound.
        .layer(crate::status::BoundStatusLayer)
        .add_routes(with_reflection(
            services,
            proto::FILE_DESCRIPTOR_SET,
            reflected_services,
        )?);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    crate::shutdown::serve_with_bounded_drain(shutdown, drain_timeout, |signal| {
        router.serve_with_incoming_shutdown(incoming, signal)
    })
    .await?;
    Ok(())
}

/// Adds both versions of the reflection service to `routes`, listing `services` and gRPC health and
/// describing what `descriptor_set` (an encoded `FileDescriptorSet`) holds, and nothing else: a
/// file, symbol or dependency that is not in it is NOT_FOUND. The gateway passes
/// [`proto::PUBLIC_FILE_DESCRIPTOR_SET`], so internal APIs stay undescribed there.
///
/// # Errors
/// When the embedded descriptor sets are invalid (a build problem, caught by every test).
pub fn with_reflection(
    routes: Routes,
    descriptor_set: &'static [u8],
    services: &[&str],
) -> Result<Routes, tonic_reflection::server::Error> {
    let builder = || {
        services.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(descriptor_set)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health"),
            |builder, service| builder.with_service_name(*service),
        )
    };
    Ok(routes
        .add_service(builder().build_v1()?)
        .add_service(builder().build_v1alpha()?))
}

/// The span every log line of a call belongs to: its method and the `x-request-id` the gateway set,
/// so one request can be followed from the gateway through every service. With traces exported,
/// it continues the caller's trace (`traceparent`) and carries its `trace_id`.
fn request_span(request: &http::Request<tonic::body::Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!(
        "grpc",
        path = %request.uri().path(),
        request_id,
        trace_id = tracing::field::Empty,
        otel.kind = "server",
    );
    crate::telemetry::propagation::continue_trace(&span, request.headers());
    span
}

/// The status every RPC of a service skeleton answers until its issue implements it.
pub fn not_implemented(method: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!("{method} is not implemented yet"))
}
