//! CORS for gRPC-Web from browsers: preflights, exposed headers, disallowed and wildcard origins.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, Response},
    routing::post,
};
use gateway::cors::cors_layer;
use tower::ServiceExt;

const ORIGIN: &str = "https://app.example";

fn cors_app(allowed_origins: &[&str]) -> Router {
    let allowed_origins: Vec<String> = allowed_origins
        .iter()
        .map(|origin| (*origin).to_owned())
        .collect();
    let login = post(|| async {
        (
            [("content-type", "application/grpc"), ("grpc-status", "0")],
            "",
        )
    });
    Router::new()
        .route("/auth.v1.AuthService/Login", login)
        .layer(cors_layer(&allowed_origins))
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/auth.v1.AuthService/Login")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,authorization,x-request-id",
        )
        .body(Body::empty())
        .unwrap()
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_the_allow_headers() {
    let app = cors_app(&["https://other.example", ORIGIN]);

    let response = app.oneshot(preflight(ORIGIN)).await.unwrap();

    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert!(
        header(&response, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    let allowed_headers = header(&response, "access-control-allow-headers").unwrap();
    for name in [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "authorization",
        "x-request-id",
    ] {
        assert!(
            allowed_headers.contains(name),
            "{name} not in {allowed_headers}"
        );
    }
    assert_eq!(header(&response, "access-control-max-age"), Some("86400"));
    assert_eq!(header(&response, "access-control-allow-credentials"), None);
}

#[tokio::test]
async fn a_cross_origin_response_exposes_the_grpc_status_headers_and_the_request_id() {
    // Browsers read Access-Control-Expose-Headers on the actual response, not on the preflight.
    let request = Request::post("/auth.v1.AuthService/Login")
        .header("origin", ORIGIN)
        .header("content-type", "application/grpc-web+proto")
        .body(Body::empty())
        .unwrap();

    let response = cors_app(&[ORIGIN]).oneshot(request).await.unwrap();

    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let exposed = header(&response, "access-control-expose-headers").unwrap();
    for name in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
}

#[tokio::test]
async fn a_preflight_from_a_disallowed_origin_gets_no_allow_origin() {
    for allowed in [&[ORIGIN][..], &[]] {
        let response = cors_app(allowed)
            .oneshot(preflight("https://evil.example"))
            .await
            .unwrap();

        assert_eq!(
            header(&response, "access-control-allow-origin"),
            None,
            "allowed: {allowed:?}"
        );
    }
}

#[tokio::test]
async fn a_wildcard_origin_allows_any_origin_without_credentials() {
    let response = cors_app(&["*"])
        .oneshot(preflight("https://anyone.example"))
        .await
        .unwrap();

    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&response, "access-control-allow-credentials"), None);
}
