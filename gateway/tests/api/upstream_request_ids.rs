//! What `x-request-id` an upstream receives: the client's when it is a short token, else one the
//! gateway made. The chat double records the metadata of every call that reaches it.

use prost::Message as _;
use proto::chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient};
use sqlx::PgPool;
use tonic::metadata::MetadataValue;

use crate::helpers::{Stack, http1_request, spawn_stack, with_token};

/// The ids the chat double saw on its last call.
fn ids_seen_upstream(stack: &Stack) -> Vec<String> {
    let seen = stack.chat.seen.lock().unwrap();
    let metadata = seen.metadata.last().expect("a call reached chat");
    metadata
        .get_all("x-request-id")
        .iter()
        .map(|id| String::from_utf8_lossy(id.as_bytes()).into_owned())
        .collect()
}

fn send_request() -> chat_pb::SendMessageRequest {
    chat_pb::SendMessageRequest {
        envelope: Some(chat_pb::Envelope {
            conversation_id: "c1".into(),
            ..Default::default()
        }),
    }
}

/// A SendMessage over native gRPC carrying `ids` as `x-request-id` headers (in that order);
/// returns the ids the upstream saw and the one on the response.
async fn native_call(stack: &Stack, token: &str, ids: &[&'static str]) -> (Vec<String>, String) {
    let mut request = with_token(send_request(), token);
    for id in ids {
        request
            .metadata_mut()
            .append("x-request-id", MetadataValue::from_static(id));
    }
    let response = ChatServiceClient::new(stack.channel.clone())
        .send_message(request)
        .await
        .unwrap();
    let on_response = response
        .metadata()
        .get("x-request-id")
        .expect("the response carries the request id")
        .to_str()
        .unwrap()
        .to_owned();
    (ids_seen_upstream(stack), on_response)
}

fn is_generated(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|uuid| uuid.get_version_num() == 4)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_short_token_chosen_by_the_client_reaches_the_upstream_unchanged(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("alice").await;
    let longest: &'static str = "A-z_0.9".repeat(10)[..64].to_owned().leak();

    for id in ["client-trace_42.a", longest] {
        let (upstream, on_response) = native_call(&stack, &token, &[id]).await;

        assert_eq!(upstream, [id]);
        assert_eq!(on_response, id);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_malformed_or_repeated_request_id_is_replaced_before_it_reaches_the_upstream(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("alice").await;
    let too_long: &'static str = "x".repeat(65).leak();
    let cases: [&[&'static str]; 6] = [
        &[too_long],
        &["has space"],
        &["semi;colon"],
        &["quote\"and=equals"],
        &["tab\tinside"],
        &["first", "second"],
    ];

    for ids in cases {
        let (upstream, on_response) = native_call(&stack, &token, ids).await;

        assert_eq!(upstream.len(), 1, "{ids:?}: {upstream:?}");
        assert!(is_generated(&upstream[0]), "{ids:?}: {upstream:?}");
        assert_eq!(on_response, upstream[0], "{ids:?}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_non_ascii_request_id_over_grpc_web_is_replaced_before_it_reaches_the_upstream(
    db: PgPool,
) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("alice").await;
    let message = send_request().encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);

    // Bytes above 0x7f are legal (obs-text) in an HTTP/1.1 header value, and tonic's native
    // client cannot send them, hence gRPC-Web over a raw HTTP/1.1 request.
    let response = http1_request(
        stack.gateway,
        &format!(
            "POST /chat.v1.ChatService/SendMessage HTTP/1.1\r\n\
             content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
             authorization: Bearer {token}\r\nx-request-id: caf\u{e9}-\u{202e}id"
        ),
        &frame,
    )
    .await;

    let head = String::from_utf8_lossy(&response).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let upstream = ids_seen_upstream(&stack);
    assert_eq!(upstream.len(), 1, "{upstream:?}");
    assert!(is_generated(&upstream[0]), "{upstream:?}");
    assert!(
        head.contains(&format!("x-request-id: {}", upstream[0])),
        "{head}"
    );
}
