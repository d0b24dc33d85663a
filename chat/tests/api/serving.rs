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
