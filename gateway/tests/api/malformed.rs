//! Malformed requests through the gateway answer INVALID_ARGUMENT (UNIMPLEMENTED for a
//! compressed frame), on proxied methods, unary and streaming, and on the gateway's own health
//! and reflection, over native gRPC and gRPC-Web.

use base64::Engine as _;
use sqlx::PgPool;
use tonic::Code;

use crate::{grpc_web, helpers::spawn_stack};

#[sqlx::test(migrations = "../migrations")]
async fn malformed_native_requests_are_invalid_argument_on_proxied_and_own_methods(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("alice").await;
    let authorization = format!("Bearer {token}");

    // Login (auth, unary): LoginRequest's field 1 is the username; health and reflection are
    // the gateway's own.
    testkit::assert_malformed_requests_are_refused(stack.gateway, "/auth.v1.AuthService/Login", 1)
        .await;
    // OpenStream (chat, bidirectional), with a valid token.
    let mut compressed = testkit::grpc_frame(&[]);
    compressed[0] = 1;
    for (body, expected) in [
        (
            testkit::grpc_frame(&[0xff, 0xff, 0xff]),
            Code::InvalidArgument,
        ),
        (
            testkit::grpc_frame(&[0x0a, 0x02, 0x0a]),
            Code::InvalidArgument,
        ),
        (compressed, Code::Unimplemented),
        (vec![0, 0, 0, 0, 9, 1], Code::InvalidArgument),
    ] {
        let response = testkit::raw_grpc(
            stack.gateway,
            "/chat.v1.ChatService/OpenStream",
            &[("authorization", &authorization)],
            body.clone(),
        )
        .await;
        assert_eq!(
            response.status().map(|status| status.code()),
            Some(expected),
            "{body:02x?}: {response:?}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_grpc_web_requests_over_http1_are_invalid_argument(db: PgPool) {
    let stack = spawn_stack(db).await;
    let base64 = |bytes: &[u8]| {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes()
    };
    let mut compressed = grpc_web::frame(&[]);
    compressed[0] = 1;
    let mut trailers_flag = grpc_web::frame(&[]);
    trailers_flag[0] = 0x80;
    let mut unknown_flag = grpc_web::frame(&[]);
    unknown_flag[0] = 0x04;
    let not_protobuf = grpc_web::frame(&[0xff, 0xff, 0xff]);
    let truncated = vec![0, 0, 0, 0, 10, 0x0a, 0x01];
    let binary = "application/grpc-web+proto";
    let text = "application/grpc-web-text";
    let login = "/auth.v1.AuthService/Login";
    let health = "/grpc.health.v1.Health/Check";
    let cases = [
        (login, binary, not_protobuf.clone(), Code::InvalidArgument),
        (login, binary, truncated.clone(), Code::InvalidArgument),
        (login, binary, compressed.clone(), Code::Unimplemented),
        (login, binary, trailers_flag.clone(), Code::InvalidArgument),
        (login, binary, unknown_flag, Code::InvalidArgument),
        (login, text, base64(&truncated), Code::InvalidArgument),
        (login, text, b"AAAA!AAA".to_vec(), Code::InvalidArgument),
        (login, text, b"AAAAAAA".to_vec(), Code::InvalidArgument),
        (health, binary, not_protobuf, Code::InvalidArgument),
        (health, binary, truncated, Code::InvalidArgument),
        (health, binary, compressed, Code::Unimplemented),
        (health, binary, trailers_flag, Code::InvalidArgument),
        (health, text, b"AAAA!AAA".to_vec(), Code::InvalidArgument),
    ];

    for (path, content_type, body, expected) in cases {
        let response = grpc_web::call(stack.gateway, path, content_type, "", &body).await;

        assert_eq!(response.http_status(), 200, "{response:?}");
        assert_eq!(
            response.status().code(),
            expected,
            "{path} {content_type} {:?}: {response:?}",
            String::from_utf8_lossy(&body)
        );
    }
}
