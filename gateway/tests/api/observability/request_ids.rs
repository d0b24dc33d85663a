//! Request ids: generated, kept when valid, replaced when not, and seen by the handler (the
//! proxy forwards request headers, so that is what upstream services see).

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request},
    routing::get,
};
use gateway::observability::{request_id_layers, trace_layer};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Answers, in its body, the request id the handler saw (what the proxy forwards upstream).
fn echo_request_id_app() -> Router {
    let echo = get(|headers: HeaderMap| async move {
        headers["x-request-id"].to_str().unwrap().to_owned()
    });
    Router::new()
        .route("/echo", echo)
        .layer(trace_layer())
        .layer(request_id_layers())
}

async fn request_id_round_trip(incoming: Option<&str>) -> (String, String) {
    let mut request = Request::get("/echo");
    if let Some(id) = incoming {
        request = request.header("x-request-id", id);
    }
    let response = echo_request_id_app()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let on_response = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen_by_handler = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    (on_response, seen_by_handler)
}

#[tokio::test]
async fn a_response_carries_the_generated_request_id_that_the_handler_saw() {
    let (on_response, seen_by_handler) = request_id_round_trip(None).await;

    assert!(uuid::Uuid::parse_str(&on_response).is_ok(), "{on_response}");
    assert_eq!(on_response, seen_by_handler);
}

#[tokio::test]
async fn a_valid_incoming_request_id_is_preserved() {
    let (on_response, seen_by_handler) = request_id_round_trip(Some("client-trace_42.a")).await;

    assert_eq!(on_response, "client-trace_42.a");
    assert_eq!(seen_by_handler, "client-trace_42.a");
}

#[tokio::test]
async fn an_invalid_incoming_request_id_is_replaced() {
    for invalid in [
        "x".repeat(200),
        "has spaces in it".to_owned(),
        "quote\"d".to_owned(),
    ] {
        let (on_response, seen_by_handler) = request_id_round_trip(Some(&invalid)).await;

        assert_ne!(on_response, invalid);
        assert!(uuid::Uuid::parse_str(&on_response).is_ok(), "{on_response}");
        assert_eq!(on_response, seen_by_handler);
    }
}
