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
