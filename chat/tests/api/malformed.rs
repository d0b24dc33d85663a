use sqlx::PgPool;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = "../migrations")]
async fn malformed_requests_are_invalid_argument_on_chats_own_port(db: PgPool) {
    let app = spawn_app(db).await;

    // OpenDirectConversationRequest's field 1 is the peer's user id.
    testkit::assert_malformed_requests_are_refused(
        app.addr,
        "/chat.v1.ChatService/OpenDirectConversation",
        1,
    )
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_malformed_request_on_an_open_stream_ends_it_with_invalid_argument(db: PgPool) {
    use prost::Message as _;
    use proto::chat::v1 as pb;

    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let authorization = format!("Bearer {}", alice.token);
    let start = pb::OpenStreamRequest {
        request: Some(pb::open_stream_request::Request::Start(
            pb::StartStream::default(),
        )),
    };
    let mut body = testkit::grpc_frame(&start.encode_to_vec());
    body.extend(testkit::grpc_frame(&[0xff, 0xff, 0xff]));

    // Chat would stop reading requests and keep the stream open; the stream must end instead.
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        testkit::raw_grpc(
            app.addr,
            "/chat.v1.ChatService/OpenStream",
            &[("authorization", &authorization)],
            body,
        ),
    )
    .await
    .expect("the stream ended");

    let status = response.status().expect("a status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{response:?}");
}
