//! A request whose header list is over `GATEWAY_MAX_HEADER_LIST_BYTES` (16 KiB here) gets a gRPC
//! status when it is a gRPC call, so that clients can tell what happened: RESOURCE_EXHAUSTED, or
//! UNAUTHENTICATED when the token is what is too large. Other requests get 431, and so does
//! everything above the transport's cap (`gateway::server::hard_header_list_bytes`).

use proto::{
    auth::v1 as auth_pb,
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
};
use sqlx::PgPool;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

use crate::{
    grpc_web,
    helpers::{http1_request, spawn_stack, with_token},
};

/// 20 KiB: over the 16 KiB limit, under the transport's 64 KiB cap.
fn padding() -> String {
    "p".repeat(20 * 1024)
}

fn padded<T>(mut request: Request<T>) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-padding", padding().parse().unwrap());
    request
}

#[sqlx::test(migrations = "../migrations")]
async fn oversized_headers_on_native_grpc_calls_are_resource_exhausted(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("alice").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());

    let unary = stack
        .auth
        .clone()
        .get_current_user(padded(with_token(
            auth_pb::GetCurrentUserRequest {},
            &token,
        )))
        .await;
    let server_stream = chat
        .subscribe(padded(with_token(
            chat_pb::SubscribeRequest::default(),
            &token,
        )))
        .await;
    let start = chat_pb::OpenStreamRequest {
        request: Some(chat_pb::open_stream_request::Request::Start(
            chat_pb::StartStream::default(),
        )),
    };
    let bidirectional = match chat
        .open_stream(padded(with_token(tokio_stream::iter([start]), &token)))
        .await
    {
        Ok(response) => response.into_inner().next().await.unwrap().map(drop),
        Err(status) => Err(status),
    };
    let after = stack
        .auth
        .clone()
        .get_current_user(with_token(auth_pb::GetCurrentUserRequest {}, &token))
        .await;

    for status in [
        unary.unwrap_err(),
        server_stream.unwrap_err(),
        bidirectional.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("the limit is 16384"),
            "{status:?}"
        );
    }
    assert!(
        after.is_ok(),
        "the connection still serves calls: {after:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_oversized_token_is_unauthenticated(db: PgPool) {
    let stack = spawn_stack(db).await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());

    let status = chat
        .subscribe(with_token(chat_pb::SubscribeRequest::default(), &padding()))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("authorization"), "{status:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_and_grpc_web_see_resource_exhausted_and_plain_http_sees_431(db: PgPool) {
    let stack = spawn_stack(db).await;
    let gateway = stack.gateway;
    let header = format!("x-padding: {}", padding());

    let grpcurl = tokio::task::spawn_blocking(move || {
        testkit::grpcurl(
            &["-rpc-header", &header, "-d", "{}"],
            gateway,
            &["auth.v1.AuthService/GetJwks"],
        )
    })
    .await
    .unwrap();
    let grpc_web = grpc_web::call(
        gateway,
        "/auth.v1.AuthService/GetJwks",
        "application/grpc-web-text",
        &format!("\r\nx-padding: {}", padding()),
        b"AAAAAAA=",
    )
    .await;
    let plain = http1_request(
        gateway,
        &format!("GET /healthz HTTP/1.1\r\nx-padding: {}", padding()),
        b"",
    )
    .await;

    assert!(
        grpcurl.stderr.contains("Code: ResourceExhausted"),
        "{}",
        grpcurl.stderr
    );
    assert_eq!(grpc_web.http_status(), 200, "{grpc_web:?}");
    assert_eq!(grpc_web.status().code(), Code::ResourceExhausted);
    assert!(
        grpc_web
            .raw_head
            .contains("content-type: application/grpc-web-text+proto"),
        "{grpc_web:?}"
    );
    let plain = String::from_utf8_lossy(&plain);
    assert!(plain.starts_with("HTTP/1.1 431"), "{plain}");
}

#[sqlx::test(migrations = "../migrations")]
async fn headers_above_the_transport_cap_are_refused_by_the_transport(db: PgPool) {
    let stack = spawn_stack(db).await;
    let cap = gateway::server::hard_header_list_bytes(16 * 1024) as usize;

    let response = http1_request(
        stack.gateway,
        &format!(
            "POST /auth.v1.AuthService/GetJwks HTTP/1.1\r\ncontent-type: application/grpc-web+proto\r\nx-padding: {}",
            "p".repeat(cap + 1024)
        ),
        &grpc_web::frame(&[]),
    )
    .await;

    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
}
