//! Every status an upstream sends reaches the client unchanged, code, message and details, on
//! unary and streaming calls, native and gRPC-Web, whether it comes in trailers or alone in the
//! head (trailers-only).

use prost::Message as _;
use proto::chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient};
use sqlx::PgPool;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    grpc_web,
    helpers::{Stack, spawn_stack, subscribe_request, with_token},
};

fn reason(status: &tonic::Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

async fn token(stack: &Stack, name: &str) -> String {
    stack.access_token(name).await
}

#[sqlx::test(migrations = "../migrations")]
async fn a_trailers_only_refusal_of_a_server_stream_reaches_a_tonic_client_with_its_details(
    db: PgPool,
) {
    let stack = spawn_stack(db).await;
    let token = token(&stack, "alice").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());

    let status = chat
        .subscribe(with_token(subscribe_request(&["refuse"]), &token))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "too many open streams for this device");
    assert_eq!(reason(&status).as_deref(), Some("TOO_MANY_STREAMS"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_trailers_only_answer_stays_trailers_only_on_the_wire(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = token(&stack, "bob").await;
    let header = format!("Bearer {token}");

    let response = testkit::raw_grpc(
        stack.gateway,
        "/chat.v1.ChatService/Subscribe",
        &[("authorization", &header)],
        testkit::grpc_frame(&subscribe_request(&["refuse"]).encode_to_vec()),
    )
    .await;

    assert_eq!(response.http_status, 200);
    assert_eq!(
        response.headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"8"[..]),
        "{response:?}"
    );
    assert!(response.ended_with_head, "{response:?}");
    assert!(response.body.is_empty(), "{response:?}");
    assert!(response.trailers.is_none(), "{response:?}");
    assert!(response.error.is_none(), "{response:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_open_stream_refused_at_its_first_request_reaches_the_client_with_its_details(
    db: PgPool,
) {
    let stack = spawn_stack(db).await;
    let token = token(&stack, "carol").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());
    let ack = chat_pb::OpenStreamRequest {
        request: Some(chat_pb::open_stream_request::Request::Ack(
            chat_pb::Acknowledgement::default(),
        )),
    };

    let outcome = chat
        .open_stream(with_token(tokio_stream::iter([ack]), &token))
        .await;
    // tonic may hand over the stream first and the status with its first message.
    let status = match outcome {
        Err(status) => status,
        Ok(response) => response.into_inner().next().await.unwrap().unwrap_err(),
    };

    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "the first request must be start");
    assert_eq!(reason(&status).as_deref(), Some("FIRST_REQUEST_NOT_START"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_status_in_trailers_after_messages_reaches_the_client_with_its_details(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = token(&stack, "dave").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());

    let mut stream = chat
        .subscribe(with_token(subscribe_request(&["end"]), &token))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap();
    let end = stream.next().await.unwrap();

    assert!(first.is_ok(), "{first:?}");
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), "the stream ends here");
    assert_eq!(reason(&status).as_deref(), Some("STREAM_ENDED"));
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_sees_a_refused_stream_s_status_rather_than_missing_trailers(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = token(&stack, "erin").await;
    let gateway = stack.gateway;

    let output = tokio::task::spawn_blocking(move || {
        let header = format!("authorization: Bearer {token}");
        testkit::grpcurl(
            &[
                "-H",
                &header,
                "-d",
                r#"{"positions":[{"conversationId":"refuse"}]}"#,
            ],
            gateway,
            &["chat.v1.ChatService/Subscribe"],
        )
    })
    .await
    .unwrap();

    assert!(!output.success);
    assert!(
        output.stderr.contains("Code: ResourceExhausted")
            && output
                .stderr
                .contains("Message: too many open streams for this device"),
        "{}",
        output.stderr
    );
    assert!(
        !output.stderr.contains("without sending trailers"),
        "{}",
        output.stderr
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn grpc_web_clients_get_refusals_and_stream_endings_with_their_details(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = token(&stack, "frank").await;
    let authorization = format!("\r\nauthorization: Bearer {token}");
    let subscribe = "/chat.v1.ChatService/Subscribe";
    let call = |conversation: &'static str, content_type: &'static str| {
        let body = grpc_web::frame(&subscribe_request(&[conversation]).encode_to_vec());
        let authorization = authorization.clone();
        async move {
            let body = if content_type.contains("text") {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .encode(&body)
                    .into_bytes()
            } else {
                body
            };
            grpc_web::call(
                stack.gateway,
                subscribe,
                content_type,
                &authorization,
                &body,
            )
            .await
        }
    };

    for content_type in ["application/grpc-web+proto", "application/grpc-web-text"] {
        let refused = call("refuse", content_type).await;
        let ended = call("end", content_type).await;

        assert_eq!(refused.http_status(), 200, "{refused:?}");
        assert!(refused.status_in_head(), "{refused:?}");
        assert_eq!(
            refused.status().code(),
            Code::ResourceExhausted,
            "{refused:?}"
        );
        assert_eq!(
            refused.status().message(),
            "too many open streams for this device"
        );
        assert_eq!(refused.reason().as_deref(), Some("TOO_MANY_STREAMS"));
        assert_eq!(ended.messages.len(), 1, "{ended:?}");
        assert_eq!(ended.status().code(), Code::Aborted, "{ended:?}");
        assert_eq!(ended.reason().as_deref(), Some("STREAM_ENDED"));
    }
}
