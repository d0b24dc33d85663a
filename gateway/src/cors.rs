//! Cross-origin access for browsers speaking gRPC-Web.
//!
//! Browsers send a preflight (`OPTIONS`) before a gRPC-Web call from another origin. The layer
//! answers preflights itself, so it must sit outside `tonic_web::GrpcWebLayer` (which rejects
//! `OPTIONS`); see the layer order in [`crate::observability`].

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer (browsers cap it: Chromium at 2 hours).
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Request headers a gRPC-Web client may send cross-origin.
const ALLOWED_REQUEST_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    HeaderName::from_static("x-grpc-web"),
    HeaderName::from_static("x-user-agent"),
    HeaderName::from_static("grpc-timeout"),
    header::AUTHORIZATION,
    HeaderName::from_static("x-request-id"),
];

/// Response headers a gRPC-Web client must be able to read (the status of trailers-only answers,
/// and the request id to quote in a bug report).
const EXPOSED_RESPONSE_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("grpc-status"),
    HeaderName::from_static("grpc-message"),
    HeaderName::from_static("grpc-status-details-bin"),
    HeaderName::from_static("x-request-id"),
];

/// CORS for gRPC-Web from the browser origins in `allowed_origins` (e.g. `https://chat.example`,
/// compared exactly with the browser's `Origin` header; a trailing `/` is ignored).
///
/// - An empty list allows no cross-origin access: same-origin pages and non-browser clients are
///   unaffected, since CORS only restricts browsers.
/// - `*` anywhere in the list allows every origin. Use it deliberately.
/// - Credentials (cookies, client certificates) are never allowed, with `*` or without: the access
///   token travels in the `authorization` header, which is allowed explicitly, and with no
///   cookie-based session a foreign page can't act as the user.
/// - Entries that cannot be an `Origin` value are skipped with a warning.
///
/// Methods: `POST` (gRPC-Web), `GET` (`/healthz`, `/.well-known/...`) and `OPTIONS`. Requests may
/// carry `content-type`, `x-grpc-web`, `x-user-agent`, `grpc-timeout`, `authorization` and
/// `x-request-id`; responses expose `grpc-status`, `grpc-message`, `grpc-status-details-bin` and
/// `x-request-id`. Preflights are cached for [`PREFLIGHT_MAX_AGE`].
pub fn cors_layer(allowed_origins: &[String]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(allow_origin(allowed_origins))
        .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
        .allow_headers(ALLOWED_REQUEST_HEADERS)
        .expose_headers(EXPOSED_RESPONSE_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE)
}

fn allow_origin(allowed_origins: &[String]) -> AllowOrigin {
    if allowed_origins.iter().any(|origin| origin.trim() == "*") {
        return AllowOrigin::any();
    }
    let origins = allowed_origins.iter().filter_map(|origin| {
        let origin = origin.trim().trim_end_matches('/');
        match HeaderValue::from_str(origin) {
            Ok(value) if !origin.is_empty() => Some(value),
            _ => {
                tracing::warn!(
                    origin,
                    "ignoring an allowed CORS origin that is not a valid Origin value"
                );
                None
            }
        }
    });
    // An empty list matches no origin, so no response carries access-control-allow-origin.
    AllowOrigin::list(origins)
}
