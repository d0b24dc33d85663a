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

/// The start of a `chat.messages` insert for tests that store rows directly, up to its column
/// list: `conversation_id, sequence, id, sender_user_id, sender_device_id, client_message_id,
/// suite, nonce, ciphertext, key_commitment, signature, recipients_digest`.
pub(crate) const INSERT_MESSAGE: &str = "insert into chat.messages (conversation_id, sequence, \
     id, sender_user_id, sender_device_id, client_message_id, suite, nonce, ciphertext, \
     key_commitment, signature, recipients_digest)";
