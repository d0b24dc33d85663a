//! [`MetricsLayer`]: records every request into [`Metrics`], gRPC calls when their body ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};

use super::grpc::{Metrics, path_kind};

/// Records every request that passes through it into a shared [`Metrics`].
///
/// A request is gRPC when its `content-type` starts with `application/grpc`. Its status is read
/// from the response headers (trailers-only responses, and non-200 HTTP answers mapped as in
/// gRPC's HTTP-to-gRPC table), else from the `grpc-status` trailer at the end of the response
/// body. The call is recorded when that status is known, or, if the body is dropped before its
/// end (the client went away), as `CANCELLED`. Other requests are counted when their response
/// head is ready.
///
/// **Order**: `tonic_web::GrpcWebLayer` must wrap this layer (be added after it), so this layer sees
/// plain gRPC: gRPC-Web carries its trailers inside the body, where this layer does not look, and
/// such calls would end up `UNKNOWN`.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

/// The service [`MetricsLayer`] produces.
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

pin_project! {
    /// The response future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        tracking: Option<Tracking>,
    }
}

pin_project! {
    /// A response body that records its gRPC call when the status trailer arrives or it is dropped.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        call: Option<GrpcCall>,
    }
}

enum Tracking {
    Grpc(GrpcCall),
    Http {
        metrics: Arc<Metrics>,
        path_kind: &'static str,
    },
}

/// A gRPC call in flight: counted in the open-streams gauge from creation until [`GrpcCall::finish`]
/// or drop (which records `CANCELLED`).
struct GrpcCall {
    metrics: Arc<Metrics>,
    service: String,
    method: String,
    started: Instant,
    finished: bool,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let metrics = Arc::clone(&self.metrics);
        let tracking = if is_grpc(request.headers()) {
            Tracking::Grpc(GrpcCall::start(metrics, request.uri().path()))
        } else {
            Tracking::Http {
                metrics,
                path_kind: path_kind(request.uri().path()),
            }
        };
        MetricsFuture {
            inner: self.inner.call(request),
            tracking: Some(tracking),
        }
    }
}

impl<F, B, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<MetricsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => {
                // The server drops the connection: the client sees an error, not a status.
                if let Some(Tracking::Grpc(mut call)) = this.tracking.take() {
                    call.finish(Code::Unknown);
                }
                return Poll::Ready(Err(error));
            }
        };
        let call = match this.tracking.take() {
            Some(Tracking::Grpc(mut call)) => {
                if let Some(code) = status_from_head(&response) {
                    call.finish(code);
                } else if response.body().is_end_stream() {
                    // A 200 gRPC response without any status: a protocol violation.
                    call.finish(Code::Unknown);
                }
                Some(call)
            }
            Some(Tracking::Http { metrics, path_kind }) => {
                metrics.http_answered(path_kind, response.status());
                None
            }
            None => None,
        };
        Poll::Ready(Ok(response.map(|inner| MetricsBody { inner, call })))
    }
}

impl<B: Body> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        call.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                    }
                }
                // The upstream stream broke: the client sees an error, not a status.
                Some(Err(_)) => call.finish(Code::Unknown),
                // The body ended without a grpc-status trailer.
                None => call.finish(Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Default> Default for MetricsBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            call: None,
        }
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody")
            .field("tracked", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcCall {
    fn start(metrics: Arc<Metrics>, path: &str) -> Self {
        let (service, method) = metrics.grpc_labels(path);
        metrics.grpc_started(&service);
        Self {
            metrics,
            service,
            method,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Records the call with `code`; only the first call counts.
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let service = std::mem::take(&mut self.service);
        let method = std::mem::take(&mut self.method);
        self.metrics
            .grpc_finished(service, method, code, self.started.elapsed());
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The status a gRPC client derives from the response head alone, if it can.
fn status_from_head<B>(response: &Response<B>) -> Option<Code> {
    if let Some(code) = grpc_status(response.headers()) {
        return Some(code);
    }
    // https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md
    match response.status() {
        StatusCode::OK => None,
        StatusCode::BAD_REQUEST => Some(Code::Internal),
        StatusCode::UNAUTHORIZED => Some(Code::Unauthenticated),
        StatusCode::FORBIDDEN => Some(Code::PermissionDenied),
        StatusCode::NOT_FOUND => Some(Code::Unimplemented),
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Some(Code::Unavailable),
        _ => Some(Code::Unknown),
    }
}
