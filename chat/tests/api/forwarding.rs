//! ForwardKeys (issue 22, section 1): a device forwards the keys of earlier messages to a new
//! device of its user; ListMessages hands the new device its forwarded keys; and what the
//! service refuses: other users' devices, revoked devices, messages the forwarder never had a
//! key of, and malformed requests.

use std::time::{Duration, Instant};

use proto::{
    auth::v1 as auth_pb,
    chat::v1::{self as pb, open_stream_response::Response, stream_event::Event},
};
use sqlx::PgPool;
use tonic::{Code, Status};

use crate::helpers::{BidiStream, TestDevice, next_event, reason, replay, spawn_app};

/// `forwarder`'s key of `message` (sent by `sender`) re-wrapped for `recipient`.
pub fn forward(
    forwarder: &TestDevice,
    message: &pb::Message,
    sender: &TestDevice,
    recipient: &TestDevice,
) -> pb::ForwardedKey {
    let received = e2ee::ReceivedMessage::try_from(message.clone()).unwrap();
    let key = e2ee::forward_key(
        &received,
        &message.message_id,
        &e2ee::Forwarder {
            user_id: &forwarder.user_id,
            device_id: &forwarder.device_id,
            keys: &forwarder.keys,
        },
        &sender.keys.public_keys().signing_public_key,
        &e2ee::RecipientDevice {
            device_id: recipient.device_id.clone(),
            encryption_spki: recipient.keys.public_keys().encryption_spki.clone(),
        },
    )
    .unwrap();
    pb::ForwardedKey {
        message_id: key.message_id,
        recipient_device_id: key.recipient_device_id,
        recipient_key_fingerprint: key.recipient_key_fingerprint,
        wrapped_key: key.wrapped_key,
        signature: key.signature,
        ..Default::default()
    }
}

pub async fn forward_keys(
    device: &TestDevice,
    conversation_id: &str,
    keys: Vec<pb::ForwardedKey>,
) -> Result<pb::ForwardKeysResponse, Status> {
    let request = device.request(pb::ForwardKeysRequest {
        conversation_id: conversation_id.to_owned(),
        keys,
    });
    let response = device.chat.clone().forward_keys(request).await;
    response.map(tonic::Response::into_inner)
}

/// Opens `message`, delivered to `device` with a forwarded key, as the clients do.
pub fn open_forwarded(
    device: &TestDevice,
    message: &pb::Message,
    sender: &TestDevice,
    forwarder: &TestDevice,
) -> Result<String, e2ee::Error> {
    let delivered = &message.forwarded_keys[0];
    let key = e2ee::ForwardedKey {
        conversation_id: message.conversation_id.clone(),
        message_id: message.message_id.clone(),
        forwarder_user_id: delivered.forwarder_user_id.clone(),
        forwarder_device_id: delivered.forwarder_device_id.clone(),
        recipient_device_id: delivered.recipient_device_id.clone(),
        recipient_key_fingerprint: delivered.recipient_key_fingerprint.clone(),
        wrapped_key: delivered.wrapped_key.clone(),
        signature: delivered.signature.clone(),
    };
    let opened = e2ee::open_forwarded(
        &e2ee::ReceivedMessage::try_from(message.clone())?,
        &message.message_id,
        &key,
        &device.device_id,
        &device.keys,
        &sender.keys.public_keys().signing_public_key,
        &forwarder.keys.public_keys().signing_public_key,
    )?;
    Ok(String::from_utf8(opened.plaintext).unwrap())
}

#[sqlx::test(migrations = "../migrations")]
async fn a_new_device_reads_earlier_messages_with_keys_another_device_of_its_user_forwarded(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = bob.open_direct(&alice).await;
    let id = conversation.conversation_id.clone();
    bob.send_text(&conversation, "one").await.unwrap();
    bob.send_text(&conversation, "two").await.unwrap();
    let alices_new_device = app.device("alice").await;
    let before = alices_new_device
        .list_messages(&id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    let page = alice
        .list_messages(&id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    let keys: Vec<_> = page
        .messages
        .iter()
        .map(|message| forward(&alice, message, &bob, &alices_new_device))
        .collect();

    let stored = forward_keys(&alice, &id, keys.clone()).await.unwrap();
    let replaced = forward_keys(&alice, &id, keys).await.unwrap();
    let after = alices_new_device
        .list_messages(&id, pb::Direction::Backward, 0, 10)
        .await
        .unwrap();
    bob.send_text(&conversation, "three").await.unwrap();
    let with_new = alices_new_device
        .list_messages(&id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();

    assert!(before.messages.is_empty(), "not encrypted for it");
    assert_eq!((stored.stored_count, stored.skipped_count), (2, 0));
    assert_eq!((replaced.stored_count, replaced.skipped_count), (2, 0));
    let sequences: Vec<u64> = after.messages.iter().map(|m| m.sequence).collect();
    assert_eq!(sequences, [2, 1], "backward, as asked");
    for message in &after.messages {
        assert_eq!(message.forwarded_keys.len(), 1, "replaced, not added");
        let key = &message.forwarded_keys[0];
        assert_eq!(key.forwarder_device_id, alice.device_id);
        assert_eq!(key.forwarder_user_id, alice.user_id);
        assert!(key.forwarded_at.is_some());
        assert!(
            message.envelope.as_ref().unwrap().wrapped_keys.is_empty(),
            "no key of its own"
        );
    }
    let texts: Vec<String> = after
        .messages
        .iter()
        .map(|m| open_forwarded(&alices_new_device, m, &bob, &alice).unwrap())
        .collect();
    assert_eq!(texts, ["two", "one"]);
    let merged: Vec<(u64, usize)> = with_new
        .messages
        .iter()
        .map(|m| (m.sequence, m.forwarded_keys.len()))
        .collect();
    assert_eq!(
        merged,
        [(1, 1), (2, 1), (3, 0)],
        "forwarded and own, in order"
    );
    assert_eq!(
        alices_new_device.open(&with_new.messages[2], &bob),
        "three",
        "its own key"
    );
    assert_eq!(
        open_forwarded(&alices_new_device, &with_new.messages[0], &bob, &bob),
        Err(e2ee::Error::BadSignature),
        "checked with the forwarder's key"
    );
}

crate::nats::on_both_buses!(
    forwarded_keys_are_announced_to_the_recipient_devices_streams_only_on_every_replica
);

/// Keys forwarded to a device reach its open streams (Subscribe and OpenStream, on the replica
/// that stored them and on another) as `KeysForwarded`, and no other device's or user's.
async fn forwarded_keys_are_announced_to_the_recipient_devices_streams_only_on_every_replica(
    bus: crate::nats::BusKind,
    db: PgPool,
) {
    let (app, replica_b, _nats) = crate::helpers::spawn_two_replicas(db, bus).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = bob.open_direct(&alice).await;
    let id = conversation.conversation_id.clone();
    bob.send_text(&conversation, "one").await.unwrap();
    bob.send_text(&conversation, "two").await.unwrap();
    let new_device = app.device("alice").await;
    let third_device = app.device("alice").await;
    let mut on_b = new_device
        .on_replica(replica_b)
        .await
        .subscribe_when_ready()
        .await;
    let mut on_a = BidiStream::open(&new_device, Vec::new()).await;
    let mut third = third_device.subscribe(&[]).await;
    let mut bobs = bob.subscribe(&[]).await;
    for stream in [&mut on_b, &mut third, &mut bobs] {
        replay(stream).await;
    }
    while !matches!(
        on_a.next().await,
        Response::Event(pb::StreamEvent {
            event: Some(Event::CaughtUp(_))
        })
    ) {}
    let page = alice
        .list_messages(&id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    let to_new_device = page
        .messages
        .iter()
        .map(|message| forward(&alice, message, &bob, &new_device))
        .collect();
    let to_third_device = vec![forward(&alice, &page.messages[0], &bob, &third_device)];

    forward_keys(&alice, &id, to_new_device).await.unwrap();
    // Published after the first, on the same replica: the third device's and bob's streams hear
    // these in order, so the first `KeysForwarded` (or typing) they get is theirs.
    forward_keys(&alice, &id, to_third_device).await.unwrap();
    let typing = alice.request(pb::SendTypingRequest {
        conversation_id: id.clone(),
    });
    alice.chat.clone().send_typing(typing).await.unwrap();

    let expected = pb::KeysForwarded {
        conversation_id: id.clone(),
        message_count: 2,
    };
    assert_eq!(next_keys_forwarded(&mut on_b).await, expected, "replica B");
    let on_a_event = loop {
        if let Response::Event(pb::StreamEvent {
            event: Some(Event::KeysForwarded(event)),
        }) = on_a.next().await
        {
            break event;
        }
    };
    assert_eq!(on_a_event, expected, "OpenStream on replica A");
    assert_eq!(next_keys_forwarded(&mut third).await.message_count, 1);
    let bobs_next = loop {
        match next_event(&mut bobs).await {
            Event::DevicesChanged(_) => {}
            other => break other,
        }
    };
    assert!(matches!(bobs_next, Event::Typing(_)), "{bobs_next:?}");
}

/// The next `KeysForwarded` of a Subscribe stream, skipping device changes.
async fn next_keys_forwarded(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
) -> pb::KeysForwarded {
    loop {
        match next_event(stream).await {
            Event::KeysForwarded(event) => return event,
            Event::DevicesChanged(_) => {}
            other => panic!("not a KeysForwarded: {other:?}"),
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn forwarding_is_refused_across_users_for_messages_never_received_and_for_bad_input(
    db: PgPool,
) {
    let app = spawn_app(db.clone()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = bob.open_direct(&alice).await;
    let id = conversation.conversation_id.clone();
    bob.send_text(&conversation, "before").await.unwrap();
    let alices_new_device = app.device("alice").await;
    let alices_third_device = app.device("alice").await;
    bob.send_text(&conversation, "after").await.unwrap();
    let page = alice
        .list_messages(&id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    let (before, after) = (&page.messages[0], &page.messages[1]);
    let good = forward(&alice, before, &bob, &alices_new_device);
    let with = |change: &dyn Fn(&mut pb::ForwardedKey)| {
        let mut key = good.clone();
        change(&mut key);
        vec![key]
    };
    let mut unknown_message = good.clone();
    unknown_message.message_id = uuid::Uuid::new_v4().to_string();
    let over_the_limit = vec![good.clone(); 501];
    let elsewhere = uuid::Uuid::new_v4().to_string();

    let cases: Vec<(&str, &TestDevice, &str, Vec<pb::ForwardedKey>, Code)> = vec![
        // Bob takes part in the conversation, but the recipient is not his device.
        (
            "another user's device",
            &bob,
            &id,
            vec![good.clone()],
            Code::PermissionDenied,
        ),
        (
            "an unknown message",
            &alice,
            &id,
            vec![unknown_message],
            Code::NotFound,
        ),
        (
            "a conversation the caller is not in",
            &alice,
            &elsewhere,
            vec![good.clone()],
            Code::NotFound,
        ),
        ("no keys", &alice, &id, Vec::new(), Code::InvalidArgument),
        (
            "501 keys",
            &alice,
            &id,
            over_the_limit,
            Code::InvalidArgument,
        ),
        (
            "a short fingerprint",
            &alice,
            &id,
            with(&|k| k.recipient_key_fingerprint.truncate(31)),
            Code::InvalidArgument,
        ),
        (
            "a short signature",
            &alice,
            &id,
            with(&|k| k.signature.truncate(63)),
            Code::InvalidArgument,
        ),
        (
            "an empty wrapped key",
            &alice,
            &id,
            with(&|k| k.wrapped_key.clear()),
            Code::InvalidArgument,
        ),
        (
            "a wrapped key over 512 bytes",
            &alice,
            &id,
            with(&|k| k.wrapped_key = vec![1; 513]),
            Code::InvalidArgument,
        ),
        (
            "a malformed message id",
            &alice,
            &id,
            with(&|k| k.message_id = "nope".into()),
            Code::InvalidArgument,
        ),
        (
            "to the forwarding device itself",
            &alice,
            &id,
            with(&|k| k.recipient_device_id.clone_from(&alice.device_id)),
            Code::InvalidArgument,
        ),
        (
            "a key that is not the recipient's current one",
            &alice,
            &id,
            with(&|k| k.recipient_key_fingerprint = vec![7; 32]),
            Code::FailedPrecondition,
        ),
    ];
    for (case, device, conversation_id, keys, code) in cases {
        let refused = forward_keys(device, conversation_id, keys)
            .await
            .unwrap_err();

        assert_eq!(refused.code(), code, "{case}: {refused:?}");
    }
    // Signed by the new device itself, which never had the key: refused for what it is.
    let unheld = signed_by(
        &alices_new_device,
        before,
        &alices_third_device,
        vec![9; 256],
    );
    let never_given = forward_keys(&alices_new_device, &id, vec![unheld])
        .await
        .unwrap_err();
    assert_eq!(
        never_given.code(),
        Code::PermissionDenied,
        "{never_given:?}"
    );
    assert!(
        never_given.message().contains("never given the key"),
        "{never_given:?}"
    );
    let mut unsigned = good.clone();
    unsigned.signature[0] ^= 1;
    let forged = forward_keys(&alice, &id, vec![unsigned]).await.unwrap_err();
    assert_eq!(forged.code(), Code::PermissionDenied, "{forged:?}");
    assert_eq!(reason(&forged), "SIGNATURE_INVALID");
    let stored: i64 = sqlx::query_scalar("select count(*) from chat.forwarded_keys")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing stored by a refused request");
    let direct = forward(&alice, after, &bob, &alices_new_device);
    let skipped = forward_keys(&alice, &id, vec![direct]).await.unwrap();
    assert_eq!(
        (skipped.stored_count, skipped.skipped_count),
        (0, 1),
        "the new device has its own key of the later message"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_revoked_device_neither_forwards_nor_is_forwarded_to(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = bob.open_direct(&alice).await;
    let id = conversation.conversation_id.clone();
    bob.send_text(&conversation, "before").await.unwrap();
    let alices_lost_device = app.device("alice").await;
    let page = alice
        .list_messages(&id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    let key = forward(&alice, &page.messages[0], &bob, &alices_lost_device);

    alice
        .auth
        .clone()
        .revoke_device(alice.request(auth_pb::RevokeDeviceRequest {
            device_id: alices_lost_device.device_id.clone(),
        }))
        .await
        .unwrap();

    // Chat learns of the revocation from auth's events within moments.
    let to_revoked = refused_soon(|| forward_keys(&alice, &id, vec![key.clone()])).await;
    assert_eq!(to_revoked.code(), Code::PermissionDenied, "{to_revoked:?}");
    let from_revoked =
        refused_soon(|| forward_keys(&alices_lost_device, &id, vec![key.clone()])).await;
    assert!(
        matches!(
            from_revoked.code(),
            Code::Unauthenticated | Code::PermissionDenied
        ),
        "{from_revoked:?}"
    );
}

/// The first refusal of `call`, retried for up to 10 seconds while it succeeds.
async fn refused_soon<F, Fut>(call: F) -> Status
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<pb::ForwardKeysResponse, Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call().await {
            Err(status) => return status,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(answer) => panic!("still accepted: {answer:?}"),
        }
    }
}

/// A forwarded key of `message` that `forwarder` really signs, with any `wrapped_key` it likes,
/// for `recipient`.
fn signed_by(
    forwarder: &TestDevice,
    message: &pb::Message,
    recipient: &TestDevice,
    wrapped_key: Vec<u8>,
) -> pb::ForwardedKey {
    use ed25519_dalek::{Signer, SigningKey, pkcs8::DecodePrivateKey};
    let mut key = e2ee::ForwardedKey {
        conversation_id: message.conversation_id.clone(),
        message_id: message.message_id.clone(),
        forwarder_user_id: forwarder.user_id.clone(),
        forwarder_device_id: forwarder.device_id.clone(),
        recipient_device_id: recipient.device_id.clone(),
        recipient_key_fingerprint: recipient
            .keys
            .public_keys()
            .encryption_key_fingerprint
            .to_vec(),
        wrapped_key,
        signature: Vec::new(),
    };
    let commitment = &message.envelope.as_ref().unwrap().key_commitment;
    let signed = e2ee::forwarded_key_signed_message(&key, commitment).unwrap();
    let signing = SigningKey::from_pkcs8_der(&forwarder.keys.signing_pkcs8_der().unwrap()).unwrap();
    key.signature = signing.sign(&signed).to_bytes().to_vec();
    pb::ForwardedKey {
        message_id: key.message_id,
        recipient_device_id: key.recipient_device_id,
        recipient_key_fingerprint: key.recipient_key_fingerprint,
        wrapped_key: key.wrapped_key,
        signature: key.signature,
        ..Default::default()
    }
}
