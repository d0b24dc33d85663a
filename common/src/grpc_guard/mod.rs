//! Bad input gets the right status, in every service and in the gateway's own gRPC services:
//! [`GrpcGuardLayer`], which `crate::grpc::serve` puts in front of every service.
//!
//! tonic answers a request it cannot read with INTERNAL (tonic-prost's `from_decode_error`, the
//! framing errors of tonic's decoder) or ends a stream quietly (tonic-reflection drops a bad
//! request), though the fault is the client's. The layer reads each request before tonic does
//! ([`CheckedRequestBody`]: flags, lengths, truncation, and every message against its type from
//! the descriptor sets, [`Schemas`]) and answers what the client sent wrong:
//!
//! | the client sent | it gets |
//! |---|---|
//! | bytes that are not a valid message of the method's request type (`ffffff`, a string that is not UTF-8, ...) | INVALID_ARGUMENT |
//! | a frame with the compressed flag (no compression is offered) | UNIMPLEMENTED |
//! | a frame with any other flag but 0 | INVALID_ARGUMENT |
//! | a body that ends inside a frame | INVALID_ARGUMENT |
//! | a body its transport could not deliver (broken gRPC-Web base64, say) | INVALID_ARGUMENT |
//!
//! The first such status replaces whatever status the handler ends the call with (tonic hands
//! it to the handler as the request stream's error; a handler that then stops reading ends its
//! response, as chat's OpenStream does, and the client gets this status).
//!
//! The layer also bounds what a response carries in one header block (the head, or the
//! trailers) to [`MAX_RESPONSE_METADATA_BYTES`]: a larger one would make an HTTP/2 client with
//! the usual 16 KiB limit refuse it, or drop the whole connection it shares with other calls. It
//! is replaced by INTERNAL "response metadata too large" and logged.

mod body;
mod schema;

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header::CONTENT_TYPE};
use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Status};

pub use body::{CheckedRequestBody, RequestChecks, RequestProblem, message_too_large};
pub use schema::{Malformed, Schemas};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most one header block of a response (its head, or its trailers) may carry, counted as
/// HTTP/2 counts a header list (name and value lengths plus 32 per field). hyper's HTTP/2 client
/// (tonic's) accepts 16 KiB, gRPC C-core clients (Python, C++, ...) 16 KiB at most; this leaves
/// 1 KiB for what proxies add on the way.
pub const MAX_RESPONSE_METADATA_BYTES: usize = 15 * 1024;

/// What tonic-prost's decode errors say: a request message prost could not decode is the
/// client's fault. The request checks catch these first; this catches what they do not know
/// (a method missing from the descriptor sets).
/// tonic percent-encodes `grpc-message`, spaces included; other servers may not.
const PROST_DECODE_ERROR: [&[u8]; 2] = [
    b"failed%20to%20decode%20Protobuf%20message",
    b"failed to decode Protobuf message",
];

/// The request types of every API this workspace serves: its own protos, gRPC health and both
/// versions of server reflection.
pub fn workspace_schemas() -> Arc<Schemas> {
    static SCHEMAS: LazyLock<Arc<Schemas>> = LazyLock::new(|| {
        Arc::new(Schemas::from_descriptor_sets(&[
            proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]))
    });
    SCHEMAS.clone()
}

/// The size of `headers` as HTTP/2 counts a header list.
pub fn header_list_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Replaces the gRPC status in `headers` (head or trailers) by `status`, details included.
pub fn replace_status(headers: &mut HeaderMap, status: &Status) {
    headers.remove(Status::GRPC_STATUS_DETAILS);
    headers.remove(Status::GRPC_MESSAGE);
    if status.add_header(headers).is_err() {
        // Only a message that cannot be a header value fails; keep the code.
        headers.insert(Status::GRPC_STATUS, code_value(status.code()));
    }
}

fn code_value(code: Code) -> http::HeaderValue {
    http::HeaderValue::from(code as i32)
}

/// The trailers that end a call with `status`.
pub fn status_trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    replace_status(&mut trailers, status);
    trailers
}

/// Whether `headers` are a gRPC request's (`application/grpc`, `+proto`, gRPC-Web, ...).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The layer described in the module docs.
#[derive(Clone)]
pub struct GrpcGuardLayer {
    schemas: Arc<Schemas>,
    max_response_metadata: usize,
}

impl GrpcGuardLayer {
    /// Checks requests against `schemas` (usually [`workspace_schemas`]), and bounds response
    /// metadata to [`MAX_RESPONSE_METADATA_BYTES`].
    pub fn new(schemas: Arc<Schemas>) -> Self {
        Self {
            schemas,
            max_response_metadata: MAX_RESPONSE_METADATA_BYTES,
        }
    }

    /// Bounds response metadata to `bytes` instead (tests use this to play an upstream that
    /// sends what no service of ours sends).
    pub fn max_response_metadata_bytes(mut self, bytes: usize) -> Self {
        self.max_response_metadata = bytes;
        self
    }
}

impl<S> tower::Layer<S> for GrpcGuardLayer {
    type Service = GrpcGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcGuard {
            inner,
            schemas: self.schemas.clone(),
            max_response_metadata: self.max_response_metadata,
        }
    }
}

/// The service of [`GrpcGuardLayer`]. It hands its inner service a `tonic::body::Body`, which
/// both tonic's routes and axum's accept.
#[derive(Clone)]
pub struct GrpcGuard<S> {
    inner: S,
    schemas: Arc<Schemas>,
    max_response_metadata: usize,
}

impl<S, B, ResBody> tower::Service<Request<B>> for GrpcGuard<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<GuardedBody<ResBody>>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let problem = Arc::new(RequestProblem::default());
        let grpc = is_grpc(request.headers());
        let checks = RequestChecks {
            max_message_bytes: None,
            message_type: self
                .schemas
                .request_type(request.uri().path())
                .map(|index| (self.schemas.clone(), index)),
        };
        let request = request.map(|body| {
            if grpc {
                tonic::body::Body::new(CheckedRequestBody::new(body, checks, problem.clone()))
            } else {
                tonic::body::Body::new(body)
            }
        });
        GuardFuture {
            inner: self.inner.call(request),
            guard: grpc.then_some(Guard {
                problem,
                max_metadata: self.max_response_metadata,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcGuard`].
    pub struct GuardFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

/// What one gRPC call's response is corrected with.
#[derive(Clone)]
struct Guard {
    /// The first problem with the request.
    problem: Arc<RequestProblem>,
    max_metadata: usize,
}

impl<F, ResBody, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<GuardedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let Some(guard) = this.guard.take() else {
            return Poll::Ready(Ok(response.map(|inner| GuardedBody {
                inner,
                guard: None,
                done: false,
            })));
        };
        let status_in_head = response.headers().contains_key(Status::GRPC_STATUS);
        if status_in_head || header_list_size(response.headers()) > guard.max_metadata {
            fix_status(response.headers_mut(), &guard);
        }
        // A status in the head ends the call: nothing may follow it (a head too large to send
        // became such a status above).
        let done = response.headers().contains_key(Status::GRPC_STATUS);
        Poll::Ready(Ok(response.map(|inner| GuardedBody {
            inner,
            guard: Some(guard),
            done,
        })))
    }
}

/// Makes a header block that ends a call say what the client must hear: the request's problem
/// if it had one, INVALID_ARGUMENT for a decode error, and INTERNAL instead of a block too large
/// to send.
fn fix_status(headers: &mut HeaderMap, guard: &Guard) {
    if let Some(status) = guard.problem.get() {
        replace_status(headers, status);
    } else if headers
        .get(Status::GRPC_STATUS)
        .is_some_and(|code| Code::from_bytes(code.as_bytes()) == Code::Internal)
        && headers.get(Status::GRPC_MESSAGE).is_some_and(|message| {
            PROST_DECODE_ERROR
                .iter()
                .any(|prefix| message.as_bytes().starts_with(prefix))
        })
    {
        headers.insert(Status::GRPC_STATUS, code_value(Code::InvalidArgument));
    }
    let size = header_list_size(headers);
    if size > guard.max_metadata {
        tracing::error!(
            size,
            limit = guard.max_metadata,
            code = ?headers.get(Status::GRPC_STATUS),
            "a response's metadata is too large to send; answering INTERNAL instead"
        );
        headers.clear();
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        replace_status(headers, &Status::internal("response metadata too large"));
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers [`GrpcGuard`] corrects (see `fix_status`).
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: Option<Guard>,
        done: bool,
    }
}

impl<B: Body<Data = Bytes>> Body for GuardedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let frame = ready!(this.inner.poll_frame(cx));
        let Some(guard) = this.guard.as_ref() else {
            return Poll::Ready(frame);
        };
        Poll::Ready(match frame {
            Some(Ok(frame)) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    *this.done = true;
                    fix_status(&mut trailers, guard);
                    Some(Ok(Frame::trailers(trailers)))
                }
                Err(frame) => Some(Ok(frame)),
            },
            other => other,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use tower::{Layer, Service};

    use super::*;

    /// A service that drains the request and answers with `status` alone (trailers-only).
    #[derive(Clone)]
    struct Answer(Status);

    impl Service<Request<tonic::body::Body>> for Answer {
        type Response = Response<tonic::body::Body>;
        type Error = Infallible;
        type Future =
            std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
            let status = self.0.clone();
            Box::pin(async move {
                let _ = request.into_body().collect().await;
                Ok(status.into_http())
            })
        }
    }

    async fn answer(status: Status, path: &str, body: Vec<u8>) -> Status {
        let mut guard = GrpcGuardLayer::new(workspace_schemas()).layer(Answer(status));
        let request = Request::post(path)
            .header(CONTENT_TYPE, "application/grpc")
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        let response = guard.call(request).await.unwrap();
        Status::from_header_map(response.headers()).unwrap()
    }

    #[tokio::test]
    async fn a_status_with_more_metadata_than_clients_accept_becomes_internal() {
        let huge = Status::with_details(Code::FailedPrecondition, "x", vec![7; 20_000].into());

        let status = answer(huge, "/chat.v1.ChatService/SendMessage", vec![0; 5]).await;

        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "response metadata too large");
    }

    #[tokio::test]
    async fn a_request_problem_wins_over_the_handler_s_status_and_decode_errors_are_the_client_s() {
        let mut compressed = vec![1, 0, 0, 0, 0];
        let ok = Status::new(Code::Ok, "");
        let decode_error = Status::internal("failed to decode Protobuf message: invalid varint");

        let refused = answer(ok, "/chat.v1.ChatService/SendMessage", compressed.clone()).await;
        compressed[0] = 0;
        let unknown_method = answer(decode_error, "/unknown.v1.Service/Method", compressed).await;

        assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
        assert_eq!(
            unknown_method.code(),
            Code::InvalidArgument,
            "{unknown_method:?}"
        );
    }
}
