use sqlx::PgPool;

use crate::helpers::spawn_app;
use proto::chat::v1 as pb;

#[sqlx::test(migrations = "../migrations")]
async fn history_pages_both_ways_with_cursors(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let id = &conversation.conversation_id;
    for n in 1..=5 {
        alice
            .send_text(&conversation, &format!("m{n}"))
            .await
            .unwrap();
    }
    let sequences = |page: &pb::ListMessagesResponse| {
        page.messages.iter().map(|m| m.sequence).collect::<Vec<_>>()
    };

    let newest = bob
        .list_messages(id, pb::Direction::Backward, 0, 2)
        .await
        .unwrap();
    let older = bob
        .list_messages(id, pb::Direction::Backward, newest.next_from_sequence, 2)
        .await
        .unwrap();
    let oldest = bob
        .list_messages(id, pb::Direction::Backward, older.next_from_sequence, 2)
        .await
        .unwrap();
    let forward = bob
        .list_messages(id, pb::Direction::Forward, 0, 3)
        .await
        .unwrap();
    let rest = bob
        .list_messages(id, pb::Direction::Forward, forward.next_from_sequence, 3)
        .await
        .unwrap();
    let unspecified = bob
        .list_messages(id, pb::Direction::Unspecified, 0, 1)
        .await
        .unwrap();

    assert_eq!(sequences(&newest), [5, 4]);
    assert_eq!(sequences(&older), [3, 2]);
    assert_eq!(sequences(&oldest), [1]);
    assert_eq!(oldest.next_from_sequence, 0);
    assert_eq!(sequences(&forward), [1, 2, 3]);
    assert_eq!(forward.next_from_sequence, 3);
    assert_eq!(sequences(&rest), [4, 5]);
    assert_eq!(rest.next_from_sequence, 0);
    assert_eq!(sequences(&unspecified), [5]);
}

#[sqlx::test(migrations = "../migrations")]
async fn every_device_gets_only_its_own_key_and_can_audit_the_recipients(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alice_phone = app.device("alice").await;
    let conversation = alice.open_direct(&bob).await;
    let id = conversation.conversation_id.clone();

    alice
        .send_text(&conversation, "to bob and my phone")
        .await
        .unwrap();
    let on_phone = alice_phone
        .list_messages(&id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    let on_sending_device = alice
        .list_messages(&id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    let audit = bob
        .chat
        .clone()
        .list_messages(bob.request(pb::ListMessagesRequest {
            conversation_id: id.clone(),
            direction: pb::Direction::Forward as i32,
            from_sequence: 0,
            page_size: 10,
            include_all_recipients: true,
        }))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        alice_phone.open(&on_phone.messages[0], &alice),
        "to bob and my phone"
    );
    // The sending device did not wrap the key for itself, so it has nothing to read.
    assert!(on_sending_device.messages.is_empty());
    let keys = &audit.messages[0].envelope.as_ref().unwrap().wrapped_keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].device_id, bob.device_id);
    assert!(!keys[0].wrapped_key.is_empty());
    assert_eq!(keys[1].device_id, alice_phone.device_id);
    assert!(keys[1].wrapped_key.is_empty());
    assert_eq!(bob.open(&audit.messages[0], &alice), "to bob and my phone");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_sender_may_wrap_the_key_for_its_own_device_too(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut recipients = alice.recipients(&[&bob.user_id]).await;
    recipients.push(e2ee::RecipientDevice {
        device_id: alice.device_id.clone(),
        encryption_spki: alice.keys.public_keys().encryption_spki.clone(),
    });
    let envelope = alice.seal(
        &conversation.conversation_id,
        "self",
        &recipients,
        "note to self",
    );

    alice.send(envelope).await.unwrap();
    let own = alice
        .list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();

    assert_eq!(alice.open(&own.messages[0], &alice), "note to self");
}

#[sqlx::test(migrations = "../migrations")]
async fn positions_never_move_backwards_or_past_the_end(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let id = &conversation.conversation_id;
    for _ in 0..3 {
        alice.send_text(&conversation, "x").await.unwrap();
    }

    let first = bob.acknowledge(id, 3, 2).await.unwrap();
    let backwards = bob.acknowledge(id, 1, 1).await.unwrap();
    let unchanged = bob.acknowledge(id, 0, 0).await.unwrap();
    let past_the_end = bob.acknowledge(id, 99, 99).await.unwrap();

    assert_eq!((first.delivered_sequence, first.read_sequence), (3, 2));
    assert_eq!(
        (backwards.delivered_sequence, backwards.read_sequence),
        (3, 2)
    );
    assert_eq!(
        (unchanged.delivered_sequence, unchanged.read_sequence),
        (3, 2)
    );
    assert_eq!(
        (past_the_end.delivered_sequence, past_the_end.read_sequence),
        (3, 3)
    );
}
