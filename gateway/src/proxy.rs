//! The generic streaming proxy: every public RPC, unary or streaming in either direction, is
//! forwarded by path with no per-method code.
//!
//! For each call: find the method in the [`MethodTable`] (unknown or internal paths answer
//! UNIMPLEMENTED), check the access token unless the method is public (UNAUTHENTICATED before any
//! upstream call), apply rate limits, strip headers an upstream might take as identity, then send
//! the request to the upstream's connection pool (`upstream.rs`). Bodies stream through in both
//! directions without buffering; trailers, status codes, error details and `grpc-timeout` pass
//! through unchanged, and dropping the client's request drops the upstream call, which cancels it.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, HeaderValue, Request, Response, Version},
};
use bytes::Bytes;
use http_body::Frame;
use tonic::Status;

use crate::{
    limits::RateLimits,
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
            if method.rate_limit == Some(RateLimit::Send) {
                self.rate_limits.check_send(claims.user_id)?;
            }
            Some(claims)
        };
        if method.rate_limit == Some(RateLimit::Login)
            && let Some(address) = peer
        {
            self.rate_limits.check_login(address)?;
        }

        let (mut parts, body) = request.into_parts();
        sanitize_headers(&mut parts.headers, peer);
        parts.version = Version::HTTP_2;
        if method.is_unary() {
            bound_grpc_timeout(&mut parts.headers, self.unary_timeout);
        }
        // gRPC needs no content-length, and a stale one breaks the call: tonic-web decodes
        // grpc-web-text bodies (shorter than what the client declared) but still reports the
        // encoded size, which hyper would send upstream as content-length.
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let oversized = Arc::new(AtomicBool::new(false));
        let body = MessageLimitBody::new(body, self.max_message_bytes, oversized.clone());
        let upstream_request = Request::from_parts(parts, UpstreamBody::new(body));
        let response = self
            .call_upstream(method, upstream_request)
            .await
            .map_err(|status| {
                if oversized.load(Ordering::Relaxed) {
                    message_too_large(self.max_message_bytes)
                } else {
                    status
                }
            })?;

        let (parts, body) = response.into_parts();
        let body = match caller {
            // A stream outliving its token is ended as the token expires; the client refreshes
            // and resumes from its cursor.
            Some(claims) if method.server_streaming => {
                let body = ExpiringBody::new(tonic::body::Body::new(body), claims.expires_at);
                // And as its session or device is revoked (revocation.rs).
                let revoked = self.validator.revocations().ended(claims.subject());
                Body::new(RevocableBody::new(body, revoked))
            }
            _ => Body::new(body),
        };
        Ok(Response::from_parts(parts, body))
    }

    async fn call_upstream(
        &self,
        method: &Method,
        request: Request<UpstreamBody>,
    ) -> Result<Response<hyper::body::Incoming>, Status> {
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
                tracing::warn!(%error, "upstream call failed");
                Status::unavailable("upstream unavailable")
            }
        })
    }
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

fn message_too_large(limit: u32) -> Status {
    Status::resource_exhausted(format!("a request message is larger than {limit} bytes"))
}

pin_project_lite::pin_project! {
    /// The client's request body on its way upstream: it reads the 5-byte gRPC frame headers as
    /// they pass and fails the body (which resets the upstream call) at the first message over the
    /// limit, before its payload is forwarded. It never claims an exact size: gRPC needs no
    /// content-length, and tonic-web reports a grpc-web-text body's encoded size, which hyper
    /// would otherwise send upstream as a wrong content-length.
    struct MessageLimitBody {
        #[pin]
        inner: Body,
        limit: u32,
        // Bytes left of the current message's payload, then the partial header being read.
        payload_left: u64,
        header: Vec<u8>,
        oversized: Arc<AtomicBool>,
    }
}

impl MessageLimitBody {
    fn new(inner: Body, limit: u32, oversized: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            limit,
            payload_left: 0,
            header: Vec::with_capacity(5),
            oversized,
        }
    }
}

impl http_body::Body for MessageLimitBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => {
                return Poll::Ready(Some(Err(Status::from_error(error.into()))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let mut rest: &[u8] = data;
            while !rest.is_empty() {
                if *this.payload_left > 0 {
                    let skipped = rest
                        .len()
                        .min(usize::try_from(*this.payload_left).unwrap_or(usize::MAX));
                    rest = &rest[skipped..];
                    *this.payload_left -= skipped as u64;
                    continue;
                }
                let wanted = 5 - this.header.len();
                let taken = rest.len().min(wanted);
                this.header.extend_from_slice(&rest[..taken]);
                rest = &rest[taken..];
                if this.header.len() == 5 {
                    let length = u32::from_be_bytes([
                        this.header[1],
                        this.header[2],
                        this.header[3],
                        this.header[4],
                    ]);
                    this.header.clear();
                    if length > *this.limit {
                        this.oversized.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(message_too_large(*this.limit))));
                    }
                    *this.payload_left = u64::from(length);
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends with UNAUTHENTICATED trailers when the caller's token expires.
    pub struct ExpiringBody {
        #[pin]
        inner: tonic::body::Body,
        #[pin]
        expiry: tokio::time::Sleep,
        expired: bool,
    }
}

impl ExpiringBody {
    fn new(inner: tonic::body::Body, expires_at_unix: i64) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left =
            Duration::from_secs(u64::try_from(expires_at_unix).unwrap_or(0)).saturating_sub(now);
        Self {
            inner,
            expiry: tokio::time::sleep(left),
            expired: false,
        }
    }
}

impl http_body::Body for ExpiringBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.expiry.poll(cx).is_ready() {
            *this.expired = true;
            let status =
                Status::unauthenticated("access token expired; refresh it and resume the stream");
            let mut trailers = HeaderMap::new();
            status.add_header(&mut trailers).ok();
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Pending
    }
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
