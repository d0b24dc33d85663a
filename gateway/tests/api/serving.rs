use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{http1_request, spawn_app};

#[tokio::test]
async fn the_gateway_reports_serving_over_native_grpc() {
    let app = spawn_app().await;

    let status = testkit::health_status(testkit::connect(app.addr).await, "").await;

    assert_eq!(status, ServingStatus::Serving);
}

#[tokio::test]
async fn grpcurl_lists_the_public_apis_and_no_internal_one() {
    let app = spawn_app().await;

    let services = tokio::task::spawn_blocking(move || testkit::grpcurl_list(app.addr))
        .await
        .unwrap();

    assert_eq!(
        services,
        [
            "auth.v1.AuthService",
            "chat.v1.ChatService",
            "group.v1.GroupService",
            "grpc.health.v1.Health",
        ]
    );
}

#[tokio::test]
async fn grpcurl_describes_the_bidirectional_chat_stream() {
    let app = spawn_app().await;

    let description = tokio::task::spawn_blocking(move || {
        testkit::grpcurl_describe(app.addr, "chat.v1.ChatService.OpenStream")
    })
    .await
    .unwrap();

    assert!(
        description.contains(
            "rpc OpenStream ( stream .chat.v1.OpenStreamRequest ) returns ( stream .chat.v1.OpenStreamResponse )"
        ),
        "{description}"
    );
}

#[tokio::test]
async fn healthz_answers_ok_over_plain_http() {
    let app = spawn_app().await;

    let response = http1_request(app.addr, "GET /healthz HTTP/1.1", b"").await;

    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_and_the_public_port_answers_404() {
    let nowhere: http::Uri = "http://127.0.0.1:1".parse().unwrap();
    let config =
        gateway::Config::for_tests(crate::helpers::upstreams(&nowhere, &nowhere, &nowhere));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (public_addr, metrics_addr) = (
        listener.local_addr().unwrap(),
        metrics_listener.local_addr().unwrap(),
    );
    tokio::spawn(gateway::run_with_metrics_listener(
        config,
        listener,
        metrics_listener,
        std::future::pending(),
    ));

    let public = http1_request(public_addr, "GET /metrics HTTP/1.1", b"").await;
    let private = http1_request(metrics_addr, "GET /metrics HTTP/1.1", b"").await;

    let public = String::from_utf8(public).unwrap();
    let private = String::from_utf8(private).unwrap();
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    assert!(!public.contains("# EOF"), "{public}");
    assert!(private.starts_with("HTTP/1.1 200"), "{private}");
    assert!(private.contains("# EOF"), "{private}");
    // The public port's refusal is counted like any other answer.
    assert!(
        private.contains(r#"http_requests_total{path_kind="metrics",status="404"} 1"#),
        "{private}"
    );
}

#[tokio::test]
async fn the_default_gateway_keeps_metrics_off_its_public_port() {
    let app = spawn_app().await;

    let public = http1_request(app.addr, "GET /metrics HTTP/1.1", b"").await;

    let public = String::from_utf8(public).unwrap();
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
}

#[tokio::test]
async fn a_grpc_web_call_over_http1_gets_a_grpc_web_answer() {
    let app = spawn_app().await;
    // An empty HealthCheckRequest in one uncompressed gRPC frame: flag 0, length 0.
    let frame = [0u8, 0, 0, 0, 0];

    let response = http1_request(
        app.addr,
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1",
        &frame,
    )
    .await;

    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..head_end]).to_lowercase();
    let body = &response[head_end + 4..];
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/grpc-web+proto"),
        "{head}"
    );
    // A data frame holding HealthCheckResponse{status: SERVING} (field 1 = 1), then a trailer
    // frame (the body is chunked, so look for the frames rather than at fixed offsets).
    let serving_frame = [0, 0, 0, 0, 2, 0x08, 0x01];
    assert!(body.windows(7).any(|w| w == serving_frame), "{body:?}");
    assert!(
        String::from_utf8_lossy(body).contains("grpc-status:0"),
        "{body:?}"
    );
}

#[tokio::test]
async fn the_gateway_stops_promptly_when_shutdown_is_signalled() {
    let app = spawn_app().await;

    let result = tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("the gateway stops within its drain timeout");
    result.unwrap();
}

#[tokio::test]
async fn the_web_root_is_served_at_the_root_and_under_static() {
    let root = std::env::temp_dir().join(format!("gateway-web-root-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>chat</h1>").unwrap();
    std::fs::write(root.join("app.js"), "console.log(1)").unwrap();
    let nowhere: http::Uri = "http://127.0.0.1:1".parse().unwrap();
    let mut config =
        gateway::Config::for_tests(crate::helpers::upstreams(&nowhere, &nowhere, &nowhere));
    config.web_root = Some(root.clone());
    let app = crate::helpers::spawn_gateway(config).await;

    let index = http1_request(app.addr, "GET / HTTP/1.1", b"").await;
    let script = http1_request(app.addr, "GET /static/app.js HTTP/1.1", b"").await;

    let (index, script) = (
        String::from_utf8_lossy(&index),
        String::from_utf8_lossy(&script),
    );
    assert!(
        index.starts_with("HTTP/1.1 200") && index.ends_with("<h1>chat</h1>"),
        "{index}"
    );
    assert!(
        script.starts_with("HTTP/1.1 200") && script.contains("javascript"),
        "{script}"
    );
    std::fs::remove_dir_all(root).unwrap();
}
