use sqlx::PgPool;
use tonic::Code;

use crate::helpers::spawn_app;
use proto::chat::v1 as pb;

#[sqlx::test(migrations = "../migrations")]
async fn opening_a_direct_conversation_twice_from_either_side_gives_the_same_one(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;

    let first = alice.open_direct(&bob).await;
    let again = alice.open_direct(&bob).await;
    let from_bob = bob.open_direct(&alice).await;

    assert_eq!(first.conversation_id, again.conversation_id);
    assert_eq!(first.conversation_id, from_bob.conversation_id);
    assert_eq!(first.peer_user_id, bob.user_id);
    assert_eq!(from_bob.peer_user_id, alice.user_id);
    assert_eq!(first.kind, pb::ConversationKind::Direct as i32);
    assert_eq!(first.last_sequence, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_conversation_with_oneself_or_an_unknown_user_is_refused(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let mut chat = alice.chat.clone();

    let with_self = chat
        .open_direct_conversation(alice.request(pb::OpenDirectConversationRequest {
            peer_user_id: alice.user_id.clone(),
        }))
        .await
        .unwrap_err();
    let with_nobody = chat
        .open_direct_conversation(alice.request(pb::OpenDirectConversationRequest {
            peer_user_id: uuid::Uuid::new_v4().to_string(),
        }))
        .await
        .unwrap_err();

    assert_eq!(with_self.code(), Code::InvalidArgument);
    assert_eq!(with_nobody.code(), Code::NotFound);
}

#[sqlx::test(migrations = "../migrations")]
async fn conversations_are_listed_with_last_sequence_and_unread_count(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let with_bob = alice.open_direct(&bob).await;
    let with_carol = alice.open_direct(&carol).await;
    for text in ["one", "two", "three"] {
        bob.send_text(&bob.open_direct(&alice).await, text)
            .await
            .unwrap();
    }
    alice
        .acknowledge(&with_bob.conversation_id, 3, 1)
        .await
        .unwrap();

    let listed = alice.list_conversations().await;

    assert_eq!(listed.len(), 2);
    // Most recent activity first: the conversation with bob has messages.
    assert_eq!(listed[0].conversation_id, with_bob.conversation_id);
    assert_eq!(listed[0].last_sequence, 3);
    assert_eq!(listed[0].read_sequence, 1);
    assert_eq!(listed[0].unread_count, 2);
    assert!(listed[0].last_message_at.is_some());
    assert_eq!(listed[1].conversation_id, with_carol.conversation_id);
    assert_eq!(listed[1].unread_count, 0);
    assert!(listed[1].last_message_at.is_none());
    assert!(bob.list_conversations().await[0].unread_count == 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn conversations_are_paged(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    for name in ["bob", "carol", "dave"] {
        let peer = app.user(name).await;
        alice.open_direct(&peer).await;
    }
    let mut chat = alice.chat.clone();

    let first = chat
        .list_conversations(alice.request(pb::ListConversationsRequest {
            page_size: 2,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let second = chat
        .list_conversations(alice.request(pb::ListConversationsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(first.conversations.len(), 2);
    assert!(!first.next_page_token.is_empty());
    assert_eq!(second.conversations.len(), 1);
    assert!(second.next_page_token.is_empty());
    let mut all: Vec<_> = first
        .conversations
        .iter()
        .chain(&second.conversations)
        .map(|c| c.peer_user_id.clone())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_non_participant_cannot_read_send_or_acknowledge_and_sees_not_found(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let conversation = alice.open_direct(&bob).await;
    alice.send_text(&conversation, "secret").await.unwrap();
    let unknown = uuid::Uuid::new_v4().to_string();

    let read = mallory
        .list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap_err();
    let read_unknown = mallory
        .list_messages(&unknown, pb::Direction::Forward, 0, 10)
        .await
        .unwrap_err();
    let envelope = mallory.seal(
        &conversation.conversation_id,
        "m1",
        &mallory.recipients(&[&alice.user_id, &bob.user_id]).await,
        "hi",
    );
    let send = mallory.send(envelope).await.unwrap_err();
    let ack = mallory
        .acknowledge(&conversation.conversation_id, 1, 1)
        .await
        .unwrap_err();

    assert_eq!(read.code(), Code::NotFound);
    assert_eq!(read_unknown.code(), Code::NotFound);
    assert_eq!(read.message(), read_unknown.message());
    assert_eq!(send.code(), Code::NotFound);
    assert_eq!(ack.code(), Code::NotFound);
    assert!(mallory.list_conversations().await.is_empty());
}
