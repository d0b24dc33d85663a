//! The browser demo's static files (`GATEWAY_WEB_ROOT`), served with the headers a page that holds
//! private keys needs: one injected script would be stolen keys, so the page may run only the
//! scripts of its own origin, talk only to its own origin, and never be framed.
//!
//! Layout of the web root (what `web-demo/build.mjs` writes): `index.html`, served at `/` and
//! never cached, and assets named by their content (`app-<HASH>.js`, `style-<HASH>.css`), served
//! under `/static/` and cached for a year as immutable: a new build has new names, and the
//! revalidated `index.html` points at them.

use std::path::Path;

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::Response,
};
use tower_http::services::{ServeDir, ServeFile};

/// The page's Content-Security-Policy: scripts, styles and connections (gRPC-Web) from its own
/// origin only, no inline script or style, no plugins, no `<base>` rewriting, no framing, no form
/// submissions (the app handles every form in script). `data:` images are the empty favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// `Cache-Control` of a content-hashed asset: its name changes with its content.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `Cache-Control` of everything else: the page, unhashed files, errors. Browsers may store them
/// but must ask again (a 304 costs little) before use.
pub const CACHE_REVALIDATE: &str = "no-cache";

/// `Strict-Transport-Security` when the gateway terminates TLS: browsers use HTTPS only for a
/// year. Behind a TLS-terminating Ingress the Ingress sets it (ingress-nginx does by default).
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// `/` (the root's `index.html`) and `/static/*` (the root's files), with [`CONTENT_SECURITY_POLICY`],
/// `nosniff`, `no-referrer`, no framing, and caching by name (see the module docs).
pub fn routes(root: &Path) -> axum::Router {
    axum::Router::new()
        .route_service("/", ServeFile::new(root.join("index.html")))
        .nest_service("/static", ServeDir::new(root))
        .layer(middleware::from_fn(with_page_headers))
}

/// Adds [`STRICT_TRANSPORT_SECURITY`] to a response (for every answer over TLS).
pub async fn with_hsts(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
    );
    response
}

async fn with_page_headers(request: Request, next: Next) -> Response {
    let hashed = request
        .uri()
        .path()
        .strip_prefix("/static/")
        .is_some_and(is_content_hashed);
    let mut response = next.run(request).await;
    // A 404 (a build not deployed yet) or an error must not be remembered for a year.
    let found = response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED;
    let cache = if hashed && found {
        CACHE_IMMUTABLE
    } else {
        CACHE_REVALIDATE
    };
    set_page_headers(response.headers_mut(), cache);
    response
}

fn set_page_headers(headers: &mut HeaderMap, cache: &'static str) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // For browsers without CSP's frame-ancestors.
        (header::X_FRAME_OPTIONS, "DENY"),
        // No window this page opens (or that opens it) gets a handle on it.
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (header::CACHE_CONTROL, cache),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// Whether a file name carries a content hash as `web-demo/build.mjs` writes it: the part before
/// the first `.` ends in `-` and at least 8 characters of `[A-Z0-9]` (esbuild's `[hash]`), as in
/// `app-7GQ2XK4M.js` or `app-7GQ2XK4M.js.map` (in any directory).
fn is_content_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    if stem.len() == name.len() {
        return false;
    }
    stem.rsplit_once('-').is_some_and(|(base, hash)| {
        !base.is_empty()
            && hash.len() >= 8
            && hash
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_with_an_esbuild_style_hash_are_content_hashed() {
        for hashed in [
            "app-7GQ2XK4M.js",
            "app-7GQ2XK4M.js.map",
            "style-ABCDEFGH.css",
            "web-demo-7GQ2XK4M.js",
            "chunks/app-7GQ2XK4M.js",
        ] {
            assert!(is_content_hashed(hashed), "{hashed}");
        }
        for plain in [
            "app.js",
            "index.html",
            "app-7gq2xk4m.js",
            "app-7GQ2XK4.js",
            "-7GQ2XK4M.js",
            "app-7GQ2XK4M",
            "app-7GQ2XK4M.js/index.html",
            "app.min-7GQ2XK4M.js",
        ] {
            assert!(!is_content_hashed(plain), "{plain}");
        }
    }
}
