//! The generic streaming proxy: every public RPC, unary or streaming in either direction, is
//! forwarded by path with no per-method code.
//!
//! For each call: find the method in the [`MethodTable`] (unknown or internal paths answer
//! UNIMPLEMENTED), check the access token unless the method is public (UNAUTHENTICATED before any
//! upstream call), apply rate limits, strip headers an upstream might take as identity, then send
//! the request to the upstream's connection pool (`upstream.rs`). Bodies stream through in both
//! directions without buffering; trailers, status codes, error details and `grpc-timeout` pass
//! through unchanged, trailers-only answers stay trailers-only, and dropping the client's request
//! drops the upstream call, which cancels it.
//!
//! What a client gets when something fails on the way:
//!
//! - its request is malformed (a frame with an unknown flag, a truncated frame, a body its
//!   gRPC-Web encoding cannot decode): INVALID_ARGUMENT; a compressed frame: UNIMPLEMENTED; a
//!   message over the size limit: RESOURCE_EXHAUSTED (`common::grpc_guard::CheckedRequestBody`,
//!   whose first status wins over whatever the upstream made of the broken request, which it gets
//!   cut short rather than reset: see `EndOnProblem`);
//! - the upstream cannot be reached, or its connection fails before or while the response
//!   streams (a replica killed mid-stream): UNAVAILABLE, which clients retry;
//! - the upstream's response carries more metadata in one header block than clients accept
//!   (`common::grpc_guard::MAX_RESPONSE_METADATA_BYTES`): INTERNAL "upstream response metadata
//!   too large", for that call only (the connection, shared with other calls, stays up: see
//!   `upstream.rs`);
//! - the upstream ends a call without any status: INTERNAL;
//! - the gateway shuts down (SIGTERM): every server stream ends at once with UNAVAILABLE, which
//!   clients retry through another gateway (the Ingress has dropped this one during the pod's
//!   preStop), while unary calls finish within the drain.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, HeaderValue, Request, Response, Version},
};
use bytes::Bytes;
use common::grpc_guard::{
    self, CheckedRequestBody, MAX_RESPONSE_METADATA_BYTES, RequestChecks, RequestProblem,
    header_list_size,
};
use http_body::Frame;
use hyper::body::Incoming;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

use crate::{
    limits::RateLimits,
    linger::LingeringBody,
    methods::{Method, MethodTable, RateLimit},
    revocation::RevocableBody,
    upstream::{UpstreamBody, UpstreamError, Upstreams},
};

/// Headers a client must not be able to set, because an upstream might read them as identity or
/// provenance. The gateway sets `x-forwarded-for` itself.
const STRIPPED_HEADERS: &[&str] = &[
    "x-user-id",
    "x-device-id",
    "x-session-id",
    "x-authenticated-user",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
    "x-client-address",
    common::service_credential::HEADER,
];
/// Prefixes of headers stripped for the same reason.
const STRIPPED_PREFIXES: &[&str] = &["x-internal-", "x-auth-"];

/// Everything the proxy handler needs.
pub struct Proxy {
    /// Cancelled when the gateway starts draining: server streams then end with UNAVAILABLE.
    pub stopping: CancellationToken,
    /// The routable RPCs.
    pub methods: MethodTable,
    /// The upstream channels.
    pub upstreams: Upstreams,
    /// The token validator (fed by auth's key set).
    pub validator: token::RemoteValidator,
    /// Per-address and per-user rate limits.
    pub rate_limits: RateLimits,
    /// Bound on unary calls.
    pub unary_timeout: Duration,
    /// Largest gRPC message a client may send.
    pub max_message_bytes: u32,
}

/// Proxies one gRPC request (the router's fallback for every path it does not serve itself).
pub async fn proxy(proxy: Arc<Proxy>, request: Request<Body>) -> Response<Body> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    match proxy.forward(peer, request).await {
        Ok(response) => response,
        Err(status) => status.into_http(),
    }
}

impl Proxy {
    async fn forward(
        &self,
        peer: Option<IpAddr>,
        request: Request<Body>,
    ) -> Result<Response<Body>, Status> {
        let method = self.methods.get(request.uri().path()).ok_or_else(|| {
            Status::unimplemented(format!("unknown method {}", request.uri().path()))
        })?;
        let caller = if method.public {
            None
        } else {
            let claims = self
                .validator
                .authenticate_headers(request.headers())
                .await?;
            match method.rate_limit {
                Some(RateLimit::Send) => self.rate_limits.check_send(claims.user_id)?,
                Some(RateLimit::ForwardKeys) => {
                    self.rate_limits.check_forward_keys(claims.user_id)?;
                }
                _ => {}
            }
            Some(claims)
        };
        if let Some(address) = peer {
            match method.rate_limit {
                Some(RateLimit::Login) => self.rate_limits.check_login(address)?,
                Some(RateLimit::Public) => self.rate_limits.check_public(address)?,
                Some(RateLimit::Send | RateLimit::ForwardKeys) | None => {}
            }
        }

        let (mut parts, body) = request.into_parts();
        // Only a client stream over HTTP/2 can be reset under a response it has not read yet
        // (linger.rs). An HTTP/1.1 connection cannot serve another request before the body ends,
        // and a unary body that never ends (slowloris) must be let go with its call.
        let lingers = parts.version == Version::HTTP_2 && method.client_streaming;
        let path: Arc<str> = Arc::from(parts.uri.path());
        sanitize_headers(&mut parts.headers, peer);
        // The upstream's span is a child of the gateway's (a client's `traceparent` is replaced;
        // with traces off it passes through).
        common::telemetry::propagation::inject_current(&mut parts.headers);
        parts.version = Version::HTTP_2;
        if method.is_unary() {
            bound_grpc_timeout(&mut parts.headers, self.unary_timeout);
        }
        // gRPC needs no content-length, and a stale one breaks the call: tonic-web decodes
        // grpc-web-text bodies (shorter than what the client declared) but still reports the
        // encoded size, which hyper would send upstream as content-length.
        parts.headers.remove(http::header::CONTENT_LENGTH);
        // The first problem with the client's request, which is what the client must hear about
        // even when the upstream, seeing its request break off, answers something else.
        let request_problem = Arc::new(RequestProblem::default());
        let checks = RequestChecks {
            max_message_bytes: Some(self.max_message_bytes),
            // The upstream checks the messages themselves; the gateway checks the framing.
            message_type: None,
        };
        // Read on after the call ends, so that ending the response does not reset the stream
        // under it while the client still sends (linger.rs).
        let body = if lingers {
            LingeringBody::new(body)
        } else {
            LingeringBody::passthrough(body)
        };
        let body = CheckedRequestBody::new(body, checks, request_problem.clone());
        let body = EndOnProblem {
            inner: body,
            problem: request_problem.clone(),
            ended: false,
        };
        let upstream_request = Request::from_parts(parts, UpstreamBody::new(body));
        let response = self.call_upstream(method, &path, upstream_request).await;
        if let Some(problem) = request_problem.get() {
            return Err(problem.clone());
        }
        let (parts, body) = response?.into_parts();
        let head_size = header_list_size(&parts.headers);
        if head_size > MAX_RESPONSE_METADATA_BYTES {
            return Err(metadata_too_large(&path, head_size));
        }
        if parts.headers.contains_key(Status::GRPC_STATUS) {
            // Trailers-only: the status is in the head and nothing follows. An empty body says so
            // to hyper, which then ends the stream with the head (HEADERS with END_STREAM).
            return Ok(Response::from_parts(parts, Body::empty()));
        }
        // A stream outliving its token is ended as the token expires (the client refreshes and
        // resumes from its cursor), and as its session or device is revoked (revocation.rs).
        let stream_caller = caller.filter(|_| method.server_streaming);
        let expiry = stream_caller.as_ref().map(|claims| claims.expires_at);
        let stopping = method
            .server_streaming
            .then(|| self.stopping.clone().cancelled_owned());
        let body = ResponseBody::new(body, path, expiry, stopping, request_problem);
        Ok(match stream_caller {
            Some(claims) => {
                let revoked = self.validator.revocations().ended(claims.subject());
                Response::from_parts(parts, Body::new(RevocableBody::new(body, revoked)))
            }
            None => Response::from_parts(parts, Body::new(body)),
        })
    }

    async fn call_upstream(
        &self,
        method: &Method,
        path: &str,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, Status> {
        let call = self.upstreams.pool(method.upstream).send(request);
        let response = if method.is_unary() {
            tokio::time::timeout(self.unary_timeout, call)
                .await
                .map_err(|_| Status::deadline_exceeded("the call took too long"))?
        } else {
            call.await
        };
        response.map_err(|error| match error {
            UpstreamError::Unavailable => {
                Status::unavailable("upstream unavailable (no connection is up)")
            }
            UpstreamError::Call(error) => {
                tracing::warn!(%error, path, "upstream call failed");
                Status::unavailable("upstream unavailable")
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A client's request body on its way upstream, ended (END_STREAM) where the gateway's checks
    /// find a problem with it instead of failing there. A failing body makes hyper reset the
    /// upstream stream, and an upstream counts the resets on a connection (h2's defence against
    /// rapid reset): a client sending malformed requests got the gateway's connection to auth,
    /// which every client's calls share, closed with GOAWAY, failing other users' calls (found by
    /// the abuse suite). The client still hears about the problem ([`RequestProblem`]). Other
    /// errors (the client reset its stream) still reset the upstream stream, so that the
    /// upstream never takes a cancelled request for a complete one.
    struct EndOnProblem<B> {
        #[pin]
        inner: B,
        problem: Arc<RequestProblem>,
        ended: bool,
    }
}

impl<B> http_body::Body for EndOnProblem<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        match std::task::ready!(this.inner.poll_frame(cx)) {
            Some(Err(_)) if this.problem.get().is_some() => {
                *this.ended = true;
                Poll::Ready(None)
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.ended {
            http_body::SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

fn metadata_too_large(path: &str, size: usize) -> Status {
    tracing::error!(
        path,
        size,
        limit = MAX_RESPONSE_METADATA_BYTES,
        "an upstream response carries too much metadata to forward; the call fails with INTERNAL"
    );
    Status::internal("upstream response metadata too large")
}

fn sanitize_headers(headers: &mut HeaderMap, peer: Option<IpAddr>) {
    let doomed: Vec<_> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            STRIPPED_HEADERS.contains(&name)
                || STRIPPED_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
    // Hop-by-hop headers never cross a proxy.
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
    ] {
        headers.remove(name);
    }
    if let Some(address) = peer
        && let Ok(value) = HeaderValue::from_str(&address.to_string())
    {
        headers.insert("x-forwarded-for", value);
    }
}

/// Caps the call's `grpc-timeout` at `limit` (keeping a shorter one the client asked for), so the
/// upstream gives up when the gateway does.
fn bound_grpc_timeout(headers: &mut HeaderMap, limit: Duration) {
    let requested = headers
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    if requested.is_none_or(|requested| requested > limit) {
        let millis = u64::try_from(limit.as_millis())
            .unwrap_or(u64::MAX)
            .min(99_999_999);
        headers.insert(
            "grpc-timeout",
            HeaderValue::from_str(&format!("{millis}m")).expect("digits"),
        );
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

pin_project_lite::pin_project! {
    /// The upstream's response body on its way to the client. It always ends with a status in
    /// trailers, whatever happens upstream:
    ///
    /// - the upstream's trailers, unless they are too large to forward (INTERNAL instead) or the
    ///   client's request had a problem (that status instead);
    /// - UNAVAILABLE when the upstream connection fails mid-stream (a killed replica), rather
    ///   than a reset stream, which clients report as INTERNAL;
    /// - INTERNAL when the upstream ends without a status;
    /// - UNAUTHENTICATED when the caller's token expires (server-streaming calls), so a stream
    ///   never outlives its token;
    /// - UNAVAILABLE when the gateway starts draining (server-streaming calls).
    struct ResponseBody {
        #[pin]
        inner: Incoming,
        path: Arc<str>,
        #[pin]
        expiry: Option<tokio::time::Sleep>,
        #[pin]
        stopping: Option<WaitForCancellationFutureOwned>,
        request_problem: Arc<RequestProblem>,
        done: bool,
    }
}

impl ResponseBody {
    fn new(
        inner: Incoming,
        path: Arc<str>,
        expires_at_unix: Option<i64>,
        stopping: Option<WaitForCancellationFutureOwned>,
        request_problem: Arc<RequestProblem>,
    ) -> Self {
        let expiry = expires_at_unix.map(|expires_at| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let left =
                Duration::from_secs(u64::try_from(expires_at).unwrap_or(0)).saturating_sub(now);
            tokio::time::sleep(left)
        });
        Self {
            inner,
            path,
            expiry,
            stopping,
            request_problem,
            done: false,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let ending = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Err(data) => return Poll::Ready(Some(Ok(data))),
                Ok(trailers) => {
                    let size = header_list_size(&trailers);
                    if let Some(problem) = this.request_problem.get() {
                        Ending::Status(problem.clone())
                    } else if size > MAX_RESPONSE_METADATA_BYTES {
                        tracing::error!(
                            path = %this.path,
                            size,
                            "an upstream's trailers are too large to forward; the call fails with INTERNAL"
                        );
                        Ending::Status(Status::internal("upstream response metadata too large"))
                    } else {
                        Ending::Trailers(trailers)
                    }
                }
            },
            Poll::Ready(Some(Err(error))) => {
                Ending::Status(this.request_problem.get().cloned().unwrap_or_else(|| {
                    tracing::warn!(%error, path = %this.path, "an upstream response broke off");
                    Status::unavailable("the upstream connection was lost; retry")
                }))
            }
            Poll::Ready(None) => {
                Ending::Status(this.request_problem.get().cloned().unwrap_or_else(|| {
                    tracing::warn!(path = %this.path, "an upstream ended a call without a status");
                    Status::internal("the upstream ended the call without a status")
                }))
            }
            Poll::Pending => {
                let expired = this
                    .expiry
                    .as_pin_mut()
                    .is_some_and(|expiry| expiry.poll(cx).is_ready());
                if expired {
                    Ending::Status(Status::unauthenticated(
                        "access token expired; refresh it and resume the stream",
                    ))
                } else if this
                    .stopping
                    .as_pin_mut()
                    .is_some_and(|stopping| stopping.poll(cx).is_ready())
                {
                    Ending::Status(Status::unavailable(
                        "the gateway is shutting down; resume the stream",
                    ))
                } else {
                    return Poll::Pending;
                }
            }
        };
        *this.done = true;
        let trailers = match ending {
            Ending::Trailers(trailers) => trailers,
            Ending::Status(status) => grpc_guard::status_trailers(&status),
        };
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// How a [`ResponseBody`] ends.
enum Ending {
    Trailers(HeaderMap),
    Status(Status),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_from_the_client_are_stripped_and_the_peer_is_forwarded() {
        let mut headers = HeaderMap::new();
        for name in [
            "x-user-id",
            "x-forwarded-for",
            "x-internal-token",
            "forwarded",
            "authorization",
            "x-service-credential",
        ] {
            headers.insert(name, HeaderValue::from_static("forged"));
        }

        sanitize_headers(&mut headers, Some("192.0.2.7".parse().unwrap()));

        assert_eq!(headers.get("x-forwarded-for").unwrap(), "192.0.2.7");
        assert!(headers.get("x-user-id").is_none());
        assert!(headers.get("x-internal-token").is_none());
        assert!(headers.get("forwarded").is_none());
        assert!(headers.get("x-service-credential").is_none());
        assert_eq!(
            headers.get("authorization").unwrap(),
            "forged",
            "upstreams validate it again"
        );
    }

    #[test]
    fn a_unary_timeout_caps_a_longer_or_missing_grpc_timeout_but_keeps_a_shorter_one() {
        let limit = Duration::from_secs(30);
        let mut missing = HeaderMap::new();
        let mut longer = HeaderMap::new();
        longer.insert("grpc-timeout", HeaderValue::from_static("5M"));
        let mut shorter = HeaderMap::new();
        shorter.insert("grpc-timeout", HeaderValue::from_static("250m"));

        for headers in [&mut missing, &mut longer, &mut shorter] {
            bound_grpc_timeout(headers, limit);
        }

        assert_eq!(missing.get("grpc-timeout").unwrap(), "30000m");
        assert_eq!(longer.get("grpc-timeout").unwrap(), "30000m");
        assert_eq!(shorter.get("grpc-timeout").unwrap(), "250m");
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_refuse_garbage() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("15S"), Some(Duration::from_secs(15)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }
}
