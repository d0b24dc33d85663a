//! The metrics: gRPC calls counted from headers or trailers, streams in flight, bounded labels,
//! plain HTTP requests and the `/metrics` route.

use std::{convert::Infallible, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, Request, Response, StatusCode},
    routing::get,
};
use futures::channel::mpsc;
use gateway::observability::{Metrics, MetricsLayer, gateway_method_paths, metrics_route};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{Layer, ServiceExt, service_fn};

type Frames = Vec<Result<Frame<Bytes>, Infallible>>;

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(gateway_method_paths()))
}

/// The value of the sample `series` (name and labels exactly as rendered), if it exists.
fn sample(metrics: &Metrics, series: &str) -> Option<f64> {
    metrics.render().lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

fn grpc_request(path: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/grpc")
        .body(Body::empty())
        .unwrap()
}

fn trailers(code: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_str(code).unwrap());
    trailers
}

fn grpc_response<B>(body: B) -> Response<B> {
    Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap()
}

/// Sends `request` through a `MetricsLayer` to a service that answers `response` once.
async fn call_through_metrics<B>(
    metrics: &Arc<Metrics>,
    request: Request<Body>,
    response: Response<B>,
) -> Response<impl http_body::Body<Data = Bytes, Error = Infallible>>
where
    B: http_body::Body<Data = Bytes, Error = Infallible>,
{
    let mut response = Some(response);
    let upstream = service_fn(move |_: Request<Body>| {
        let response = response.take().expect("one call");
        async move { Ok::<_, Infallible>(response) }
    });
    MetricsLayer::new(Arc::clone(metrics))
        .layer(upstream)
        .oneshot(request)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_unary_call_ending_with_trailer_status_16_is_counted_as_unauthenticated_with_a_latency_sample()
 {
    let metrics = metrics();
    let frames: Frames = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers("16"))),
    ];
    let response = grpc_response(StreamBody::new(futures::stream::iter(frames)));

    let response = call_through_metrics(
        &metrics,
        grpc_request("/auth.v1.AuthService/GetCurrentUser"),
        response,
    )
    .await;
    let before_the_end = sample(
        &metrics,
        r#"grpc_server_handled_total{service="auth.v1.AuthService",method="GetCurrentUser",code="UNAUTHENTICATED"}"#,
    );
    response.into_body().collect().await.unwrap();

    assert_eq!(
        before_the_end, None,
        "a call is counted when its trailers arrive, not before"
    );
    let labels = r#"service="auth.v1.AuthService",method="GetCurrentUser""#;
    assert_eq!(
        sample(
            &metrics,
            &format!(r#"grpc_server_handled_total{{{labels},code="UNAUTHENTICATED"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("grpc_server_handling_seconds_count{{{labels}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"grpc_server_open_streams{service="auth.v1.AuthService"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_trailers_only_response_is_counted_from_its_headers() {
    let metrics = metrics();
    let mut response = grpc_response(http_body_util::Empty::<Bytes>::new());
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from_static("7"));

    let response = call_through_metrics(
        &metrics,
        grpc_request("/group.v1.GroupService/CreateGroup"),
        response,
    )
    .await;

    let series = r#"grpc_server_handled_total{service="group.v1.GroupService",method="CreateGroup",code="PERMISSION_DENIED"}"#;
    assert_eq!(sample(&metrics, series), Some(1.0));
    drop(response);
    assert_eq!(
        sample(&metrics, series),
        Some(1.0),
        "dropping the finished body changes nothing"
    );
}

#[tokio::test]
async fn an_open_stream_is_counted_in_flight_until_its_body_ends() {
    let metrics = metrics();
    let (frames, body) = mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
    let gauge = r#"grpc_server_open_streams{service="chat.v1.ChatService"}"#;

    let response = call_through_metrics(
        &metrics,
        grpc_request("/chat.v1.ChatService/Subscribe"),
        grpc_response(StreamBody::new(body)),
    )
    .await;
    let mut body = response.into_body();
    frames
        .unbounded_send(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))))
        .unwrap();
    body.frame().await.unwrap().unwrap();
    let while_open = sample(&metrics, gauge);
    frames
        .unbounded_send(Ok(Frame::trailers(trailers("0"))))
        .unwrap();
    body.frame().await.unwrap().unwrap();

    assert_eq!(while_open, Some(1.0));
    assert_eq!(sample(&metrics, gauge), Some(0.0));
    let handled =
        r#"grpc_server_handled_total{service="chat.v1.ChatService",method="Subscribe",code="OK"}"#;
    assert_eq!(sample(&metrics, handled), Some(1.0));
}

#[tokio::test]
async fn a_stream_dropped_by_the_client_is_counted_as_cancelled() {
    let metrics = metrics();
    let (frames, body) = mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
    let response = call_through_metrics(
        &metrics,
        grpc_request("/chat.v1.ChatService/OpenStream"),
        grpc_response(StreamBody::new(body)),
    )
    .await;
    let mut body = response.into_body();
    frames
        .unbounded_send(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))))
        .unwrap();
    body.frame().await.unwrap().unwrap();

    drop(body);

    assert_eq!(
        sample(
            &metrics,
            r#"grpc_server_open_streams{service="chat.v1.ChatService"}"#
        ),
        Some(0.0)
    );
    let cancelled = r#"grpc_server_handled_total{service="chat.v1.ChatService",method="OpenStream",code="CANCELLED"}"#;
    assert_eq!(sample(&metrics, cancelled), Some(1.0));
}

#[tokio::test]
async fn unknown_services_and_methods_are_labelled_unknown() {
    let metrics = metrics();

    for path in [
        "/evil.v1.Spray/Attempt1",
        "/evil.v1.Spray/Attempt2",
        "/not-a-method",
        "/auth.v1.AuthService/Invented",
    ] {
        let response = grpc_response(http_body_util::Empty::<Bytes>::new());
        let (mut parts, body) = response.into_parts();
        parts
            .headers
            .insert("grpc-status", HeaderValue::from_static("12"));
        call_through_metrics(
            &metrics,
            grpc_request(path),
            Response::from_parts(parts, body),
        )
        .await;
    }

    let text = metrics.render();
    assert!(
        !text.contains("evil")
            && !text.contains("Attempt")
            && !text.contains("Invented")
            && !text.contains("not-a-method"),
        "{text}"
    );
    let unknown =
        r#"grpc_server_handled_total{service="unknown",method="unknown",code="UNIMPLEMENTED"}"#;
    assert_eq!(sample(&metrics, unknown), Some(3.0));
    let unknown_method = r#"grpc_server_handled_total{service="auth.v1.AuthService",method="unknown",code="UNIMPLEMENTED"}"#;
    assert_eq!(sample(&metrics, unknown_method), Some(1.0));
}

#[tokio::test]
async fn a_grpc_call_answered_without_grpc_status_is_mapped_from_its_http_status() {
    let metrics = metrics();
    let mut response = Response::new(http_body_util::Empty::<Bytes>::new());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;

    call_through_metrics(
        &metrics,
        grpc_request("/auth.v1.AuthService/Login"),
        response,
    )
    .await;

    let series = r#"grpc_server_handled_total{service="auth.v1.AuthService",method="Login",code="UNAVAILABLE"}"#;
    assert_eq!(sample(&metrics, series), Some(1.0));
}

#[tokio::test]
async fn plain_http_requests_are_counted_by_path_kind_and_status_never_by_path() {
    let metrics = metrics();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(MetricsLayer::new(Arc::clone(&metrics)));

    for path in ["/healthz", "/wp-admin/setup.php"] {
        app.clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
    }

    assert_eq!(
        sample(
            &metrics,
            r#"http_requests_total{path_kind="healthz",status="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"http_requests_total{path_kind="other",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(!metrics.render().contains("wp-admin"));
}

#[tokio::test]
async fn the_metrics_route_renders_every_series_as_openmetrics_text() {
    let metrics = metrics();
    let response = grpc_response(http_body_util::Empty::<Bytes>::new());
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert("grpc-status", HeaderValue::from_static("0"));
    call_through_metrics(
        &metrics,
        grpc_request("/grpc.health.v1.Health/Check"),
        Response::from_parts(parts, body),
    )
    .await;

    let app = metrics_route(Arc::clone(&metrics)).layer(MetricsLayer::new(Arc::clone(&metrics)));
    let scrape = || Request::get("/metrics").body(Body::empty()).unwrap();
    app.clone().oneshot(scrape()).await.unwrap();

    let response = app.oneshot(scrape()).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for expected in [
        "# TYPE grpc_server_handled counter",
        r#"grpc_server_handled_total{service="grpc.health.v1.Health",method="Check",code="OK"} 1"#,
        "# TYPE grpc_server_handling_seconds histogram",
        r#"grpc_server_handling_seconds_bucket{le="0.0001",service="grpc.health.v1.Health",method="Check"}"#,
        r#"grpc_server_handling_seconds_bucket{le="60.0",service="grpc.health.v1.Health",method="Check"}"#,
        "# TYPE grpc_server_open_streams gauge",
        r#"grpc_server_open_streams{service="grpc.health.v1.Health"} 0"#,
        "# TYPE http_requests counter",
        r#"http_requests_total{path_kind="metrics",status="200"} 1"#,
        "# EOF",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test]
async fn a_grpc_web_call_through_grpc_web_layer_is_counted_from_its_trailer() {
    let metrics = metrics();
    let upstream = service_fn(|_: Request<tonic::body::Body>| async {
        let frames: Frames = vec![Ok(Frame::trailers(trailers("16")))];
        Ok::<_, Infallible>(grpc_response(StreamBody::new(futures::stream::iter(
            frames,
        ))))
    });
    // The documented order: GrpcWebLayer outside MetricsLayer.
    let service = tonic_web::GrpcWebLayer::new()
        .layer(MetricsLayer::new(Arc::clone(&metrics)).layer(upstream));
    let request = Request::post("/auth.v1.AuthService/GetCurrentUser")
        .header("content-type", "application/grpc-web+proto")
        .body(Body::empty())
        .unwrap();

    let response = service.oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();

    assert_eq!(
        body.first(),
        Some(&0x80),
        "gRPC-Web trailers travel in the body"
    );
    let series = r#"grpc_server_handled_total{service="auth.v1.AuthService",method="GetCurrentUser",code="UNAUTHENTICATED"}"#;
    assert_eq!(sample(&metrics, series), Some(1.0));
}
