//! Metrics, request ids and request spans for everything the gateway answers.
//!
//! - [`Metrics`] holds the Prometheus families; [`metrics_route`] serves them at `GET /metrics`,
//!   on the metrics port only (`GATEWAY_METRICS_LISTEN_ADDR`), never on the public one. Both, and
//!   [`MetricsLayer`], live in `common::metrics`, shared with the services, whose gRPC metrics
//!   have the same names and labels; they are re-exported here.
//! - [`MetricsLayer`] records each request into a shared `Arc<Metrics>`.
//! - [`request_id_layers`] gives every request an `x-request-id` (kept from the client when it is a
//!   reasonable token) and copies it onto the response; [`trace_layer`] opens one span per request
//!   carrying `request_id`, `method` and `path`, so every log line of the request has the id.
//!
//! # Layer order
//!
//! In axum the last `.layer(..)` is the outermost. From the outside in:
//!
//! 1. [`request_id_layers`]: first, so everything inside (even CORS preflights) has an id.
//! 2. [`trace_layer`]: inside the request ids, or its span has no `request_id`.
//! 3. [`crate::cors::cors_layer`]: outside `GrpcWebLayer`, which rejects `OPTIONS` preflights.
//! 4. `tonic_web::GrpcWebLayer`, on the gRPC routes only (it answers 400 to other HTTP/1.1 requests).
//! 5. [`MetricsLayer`], **inside** `GrpcWebLayer`, so it sees plain gRPC with a `grpc-status`
//!    trailer rather than gRPC-Web, whose trailers are encoded in the body. Put one `MetricsLayer`
//!    (sharing the same `Arc<Metrics>`) on the plain HTTP routes as well; every request crosses
//!    exactly one of them.
//!
//! ```ignore
//! let metrics = Arc::new(Metrics::new(gateway_method_paths()));
//! let grpc = grpc_routes.layer(MetricsLayer::new(metrics.clone())).layer(GrpcWebLayer::new());
//! let http = http_routes.layer(MetricsLayer::new(metrics.clone()));
//! let metrics_port = metrics_route(metrics); // served on its own listener
//! let app = http
//!     .merge(grpc)
//!     .layer(cors_layer(&allowed_origins))
//!     .layer(trace_layer())
//!     .layer(request_id_layers());
//! ```
//!
//! # Request ids upstream
//!
//! The id lives in the request's `x-request-id` header, and the proxy forwards request headers,
//! so upstream services receive the same id without further work (as long as the proxy does not
//! strip `x-request-id`). If an upstream answers with its own `x-request-id`, that one is kept.

use http::{HeaderMap, HeaderName, Request};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::LatencyUnit;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse,
    MakeSpan, TraceLayer,
};
use tracing::{Level, Span};

pub use common::metrics::{
    Metrics, MetricsBody, MetricsFuture, MetricsLayer, MetricsService, OPENMETRICS_CONTENT_TYPE,
    UNKNOWN, method_paths, metrics_route,
};

/// Every method the gateway serves or routes: the public APIs (`proto::PUBLIC_SERVICES`),
/// `grpc.health.v1.Health` and server reflection (v1 and v1alpha). Pass it to [`Metrics::new`].
pub fn gateway_method_paths() -> Vec<String> {
    common::metrics::served_method_paths(proto::PUBLIC_SERVICES)
}

/// The request-id header, on requests (and so upstream) and on responses.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// What [`request_id_layers`] returns: drop invalid ids, set missing ones, copy to the response.
pub type RequestIdLayers = ServiceBuilder<
    Stack<
        PropagateRequestIdLayer,
        Stack<SetRequestIdLayer<MakeRequestUuid>, Stack<DropInvalidRequestIdLayer, Identity>>,
    >,
>;

/// What [`trace_layer`] returns.
pub type RequestTraceLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    RequestSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    DefaultOnFailure,
>;

/// Request ids, as one layer: a client's `x-request-id` is kept if it is a reasonable token (see
/// [`is_valid_request_id`]) and otherwise removed; a request without one gets a random UUID (v4);
/// the response carries the request's id. Put [`trace_layer`] inside it.
pub fn request_id_layers() -> RequestIdLayers {
    ServiceBuilder::new()
        .layer(DropInvalidRequestIdLayer)
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
}

/// One `request` span per request, with fields `request_id`, `method` (HTTP), `path` (for gRPC,
/// the full method path; never the query) and, with traces exported, `trace_id`. Requests and responses are logged at DEBUG, server
/// errors and broken bodies at WARN; gRPC statuses are in the metrics, not in these events.
pub fn trace_layer() -> RequestTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(DefaultOnRequest::new().level(Level::DEBUG))
        .on_response(
            DefaultOnResponse::new()
                .level(Level::DEBUG)
                .latency_unit(LatencyUnit::Micros),
        )
        .on_failure(
            DefaultOnFailure::new()
                .level(Level::WARN)
                .latency_unit(LatencyUnit::Micros),
        )
}

/// Whether a client-supplied request id is kept: 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// `[A-Za-z0-9._-]`. Anything else (long, spaces, control or non-ASCII characters) could forge or
/// break log lines, so it is replaced.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

/// Makes the span of [`trace_layer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let span = tracing::info_span!(
            "request",
            request_id,
            method = %request.method(),
            path = request.uri().path(),
            trace_id = tracing::field::Empty,
            otel.kind = "server",
        );
        // With traces exported: the client's `traceparent` is this span's parent, and the proxy
        // hands this span's context upstream (proxy.rs).
        common::telemetry::propagation::continue_trace(&span, request.headers());
        span
    }
}

/// Removes every `x-request-id` header unless there is exactly one and it is valid, so that
/// `SetRequestIdLayer` (inside it) generates a fresh one.
#[derive(Clone, Copy, Debug, Default)]
pub struct DropInvalidRequestIdLayer;

/// The service of [`DropInvalidRequestIdLayer`].
#[derive(Clone, Copy, Debug)]
pub struct DropInvalidRequestId<S> {
    inner: S,
}

impl<S> tower::Layer<S> for DropInvalidRequestIdLayer {
    type Service = DropInvalidRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DropInvalidRequestId { inner }
    }
}

impl<S, B> tower::Service<Request<B>> for DropInvalidRequestId<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !has_one_valid_request_id(request.headers()) {
            request.headers_mut().remove(REQUEST_ID_HEADER);
        }
        self.inner.call(request)
    }
}

fn has_one_valid_request_id(headers: &HeaderMap) -> bool {
    let mut ids = headers.get_all(REQUEST_ID_HEADER).iter();
    match (ids.next(), ids.next()) {
        (Some(id), None) => is_valid_request_id(id.as_bytes()),
        // None: nothing to remove. Two or more: ambiguous, so replaced.
        (None, _) => true,
        (Some(_), Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_method_paths_cover_the_public_apis_health_and_reflection() {
        let paths = gateway_method_paths();

        for expected in [
            "/auth.v1.AuthService/Login",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(
                paths.iter().any(|path| path == expected),
                "{expected} missing from {paths:?}"
            );
        }
        assert!(
            !paths.iter().any(|path| path.contains(".internal.")),
            "internal APIs are never routed"
        );
    }

    #[test]
    fn request_ids_are_short_tokens() {
        for valid in [
            "a",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "trace.id_01",
            &"x".repeat(64),
        ] {
            assert!(is_valid_request_id(valid.as_bytes()), "{valid:?}");
        }
        for invalid in [
            "",
            "has space",
            "semi;colon",
            "é",
            "line\nbreak",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_request_id(invalid.as_bytes()), "{invalid:?}");
        }
    }
}
