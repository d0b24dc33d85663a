//! Helpers shared by the unit tests.

use sqlx::PgPool;
use uuid::Uuid;

use crate::ids::ConversationId;

/// A new, empty group conversation (its group id is its own id).
pub(crate) async fn new_conversation(db: &PgPool) -> ConversationId {
    let id = Uuid::now_v7();
    sqlx::query("insert into chat.conversations (id, kind, group_id) values ($1, 'group', $1)")
        .bind(id)
        .execute(db)
        .await
        .unwrap();
    ConversationId(id)
}

/// The conversation's `last_sequence`.
pub(crate) async fn last_sequence(db: &PgPool, conversation: ConversationId) -> i64 {
    sqlx::query_scalar("select last_sequence from chat.conversations where id = $1")
        .bind(conversation.0)
        .fetch_one(db)
        .await
        .unwrap()
}
