use sqlx::PgPool;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = "../migrations")]
async fn a_started_service_with_its_database_reports_serving(db: PgPool) {
    let app = spawn_app(db).await;

    let whole_server = testkit::health_status(app.channel.clone(), "").await;
    let chat_service = testkit::health_status(app.channel, "chat.v1.ChatService").await;

    assert_eq!(whole_server, ServingStatus::Serving);
    assert_eq!(chat_service, ServingStatus::Serving);
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_lists_every_chat_api_through_reflection(db: PgPool) {
    let app = spawn_app(db).await;

    let services = tokio::task::spawn_blocking(move || testkit::grpcurl_list(app.addr))
        .await
        .unwrap();

    assert_eq!(services, ["chat.v1.ChatService", "grpc.health.v1.Health",]);
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_describes_an_rpc_with_its_documentation(db: PgPool) {
    let app = spawn_app(db).await;

    let description = tokio::task::spawn_blocking(move || {
        testkit::grpcurl_describe(app.addr, "chat.v1.ChatService.SendMessage")
    })
    .await
    .unwrap();

    assert!(description.contains("Sends one message"), "{description}");
    assert!(
        description.contains("rpc SendMessage ( .chat.v1.SendMessageRequest ) returns ( .chat.v1.SendMessageResponse )"),
        "{description}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_call_without_a_token_is_refused_even_when_it_bypasses_the_gateway(db: PgPool) {
    let app = spawn_app(db).await;
    let mut chat =
        proto::chat::v1::chat_service_client::ChatServiceClient::new(app.channel.clone());

    let status = chat
        .list_conversations(proto::chat::v1::ListConversationsRequest::default())
        .await
        .unwrap_err();

    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_call_with_a_valid_token_gets_past_authentication(db: PgPool) {
    let app = spawn_app(db).await;
    let token = app.access_token("alice").await;
    let mut chat =
        proto::chat::v1::chat_service_client::ChatServiceClient::new(app.channel.clone());

    let result = loop {
        let attempt =
            testkit::with_token(proto::chat::v1::ListConversationsRequest::default(), &token);
        let result = chat.list_conversations(attempt).await;
        // The key set is fetched from auth in the background right after start.
        match &result {
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            _ => break result,
        }
    };

    assert!(result.unwrap().into_inner().conversations.is_empty());
}
