use std::collections::HashSet;

use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{device_list_mismatch, reason, spawn_app};
use proto::chat::v1 as pb;

#[sqlx::test(migrations = "../migrations")]
async fn a_sent_message_is_committed_with_the_next_sequence_and_opens_for_the_recipient(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;

    let first = alice.send_text(&conversation, "hello bob").await.unwrap();
    let second = alice
        .send_text(&conversation, "are you there?")
        .await
        .unwrap();
    let history = bob
        .list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();

    assert_eq!((first.sequence, second.sequence), (1, 2));
    assert!(!first.duplicate);
    assert_eq!(history.messages.len(), 2);
    assert_eq!(bob.open(&history.messages[0], &alice), "hello bob");
    assert_eq!(bob.open(&history.messages[1], &alice), "are you there?");
    assert_eq!(history.messages[0].message_id, first.message_id);
    // Bob's device receives its own wrapped key only.
    let keys = &history.messages[0].envelope.as_ref().unwrap().wrapped_keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].device_id, bob.device_id);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_retry_with_the_same_client_message_id_returns_the_original(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let envelope = alice.envelope_for(&conversation, "only once").await;

    let original = alice.send(envelope.clone()).await.unwrap();
    let retry = alice.send(envelope.clone()).await.unwrap();
    let recipients = alice.recipients(&[&alice.user_id, &bob.user_id]).await;
    let different = alice
        .send(alice.seal(
            &conversation.conversation_id,
            &envelope.client_message_id,
            &recipients,
            "something else",
        ))
        .await
        .unwrap_err();

    assert!(retry.duplicate);
    assert_eq!(retry.message_id, original.message_id);
    assert_eq!(retry.sequence, original.sequence);
    assert_eq!(retry.sent_at, original.sent_at);
    // A validly signed envelope under a used id is refused, not stored again.
    assert_eq!(different.code(), Code::AlreadyExists);
    assert_eq!(reason(&different), "CLIENT_MESSAGE_ID_REUSED");
    let history = bob
        .list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_retries_of_one_message_store_it_once(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let envelope = alice.envelope_for(&conversation, "only once").await;

    let sends = (0..8).map(|_| alice.send(envelope.clone()));
    let results: Vec<_> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let ids: HashSet<_> = results
        .iter()
        .map(|r| (&r.message_id, r.sequence))
        .collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_forged_signature_or_another_sender_is_refused(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut forged = alice.envelope_for(&conversation, "hi").await;
    forged.signature[0] ^= 1;
    let mut tampered = alice.envelope_for(&conversation, "hi").await;
    tampered.ciphertext[0] ^= 1;
    // Bob seals a message claiming to be alice.
    let mut impostor = bob.envelope_for(&bob.open_direct(&alice).await, "hi").await;
    impostor.sender_user_id = alice.user_id.clone();
    impostor.sender_device_id = alice.device_id.clone();

    let forged = alice.send(forged).await.unwrap_err();
    let tampered = alice.send(tampered).await.unwrap_err();
    let impostor = bob.send(impostor).await.unwrap_err();

    for status in [&forged, &tampered, &impostor] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(reason(status), "SIGNATURE_INVALID");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_wrong_recipient_set_is_refused_with_the_missing_extra_and_stale_devices(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alice_phone = app.device("alice").await;
    let conversation = alice.open_direct(&bob).await;
    let everyone = alice.recipients(&[&alice.user_id, &bob.user_id]).await;
    let without_phone: Vec<_> = everyone
        .iter()
        .filter(|device| device.device_id != alice_phone.device_id)
        .cloned()
        .collect();
    let stranger = e2ee::RecipientDevice {
        device_id: uuid::Uuid::new_v4().to_string(),
        encryption_spki: alice.keys.public_keys().encryption_spki.clone(),
    };
    let mut with_stranger = everyone.clone();
    with_stranger.push(stranger.clone());
    // Bob's device, but wrapped for a key that is not his.
    let stale: Vec<_> = everyone
        .iter()
        .map(|device| e2ee::RecipientDevice {
            encryption_spki: if device.device_id == bob.device_id {
                alice.keys.public_keys().encryption_spki.clone()
            } else {
                device.encryption_spki.clone()
            },
            device_id: device.device_id.clone(),
        })
        .collect();
    let id = &conversation.conversation_id;

    let missing = alice.send(alice.seal(id, "1", &without_phone, "x")).await;
    let extra = alice.send(alice.seal(id, "2", &with_stranger, "x")).await;
    let stale = alice.send(alice.seal(id, "3", &stale, "x")).await;
    let exact = alice.send(alice.seal(id, "4", &everyone, "x")).await;

    let missing = missing.unwrap_err();
    assert_eq!(missing.code(), Code::FailedPrecondition);
    assert_eq!(reason(&missing), "DEVICE_LIST_MISMATCH");
    assert_eq!(
        device_list_mismatch(&missing).missing_device_ids,
        std::slice::from_ref(&alice_phone.device_id)
    );
    let extra = device_list_mismatch(&extra.unwrap_err());
    assert_eq!(extra.extra_device_ids, [stranger.device_id]);
    assert!(extra.missing_device_ids.is_empty());
    let stale = device_list_mismatch(&stale.unwrap_err());
    assert_eq!(stale.stale_device_ids, std::slice::from_ref(&bob.device_id));
    assert!(stale.missing_device_ids.is_empty());
    assert_eq!(exact.unwrap().sequence, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_envelopes_are_invalid_arguments(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let good = alice.envelope_for(&conversation, "x").await;
    let cases = [
        pb::Envelope {
            nonce: vec![0; 11],
            ..good.clone()
        },
        pb::Envelope {
            key_commitment: vec![0; 31],
            ..good.clone()
        },
        pb::Envelope {
            signature: Vec::new(),
            ..good.clone()
        },
        pb::Envelope {
            suite: 3,
            ..good.clone()
        },
        pb::Envelope {
            sender_counter: 0,
            ..good.clone()
        },
        pb::Envelope {
            previous_envelope_hash: vec![0; 31],
            ..good.clone()
        },
        pb::Envelope {
            ciphertext: vec![0; 300],
            ..good.clone()
        },
        pb::Envelope {
            suite: 1,
            ..good.clone()
        },
        pb::Envelope {
            client_message_id: "x".repeat(65),
            ..good.clone()
        },
        pb::Envelope {
            ciphertext: vec![0; 64 * 1024 + 1],
            ..good.clone()
        },
        pb::Envelope {
            wrapped_keys: Vec::new(),
            ..good.clone()
        },
        pb::Envelope {
            conversation_id: "not a uuid".to_owned(),
            ..good.clone()
        },
    ];

    for envelope in cases {
        let status = alice.send(envelope).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let missing = alice
        .chat
        .clone()
        .send_message(alice.request(pb::SendMessageRequest { envelope: None }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_senders_get_gap_free_sequences_committed_in_batches(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let bobs_view = bob.open_direct(&alice).await;
    let mut envelopes = Vec::new();
    for n in 0..20 {
        envelopes.push((
            alice.clone(),
            alice.envelope_for(&conversation, &format!("a{n}")).await,
        ));
        envelopes.push((
            bob.clone(),
            bob.envelope_for(&bobs_view, &format!("b{n}")).await,
        ));
    }

    let sends = envelopes
        .into_iter()
        .map(|(sender, envelope)| async move { sender.send(envelope).await });
    let results: Vec<_> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let mut sequences: Vec<u64> = results.iter().map(|r| r.sequence).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=40).collect::<Vec<_>>());
    let stored: Vec<i64> =
        sqlx::query_scalar("select sequence from chat.messages order by sequence")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(stored, (1..=40).collect::<Vec<_>>());
    let last: i64 = sqlx::query_scalar("select last_sequence from chat.conversations")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(last, 40);
    // Sends of one transaction share its timestamp: fewer distinct times than sends means batches.
    let commits: HashSet<_> = results.iter().map(|r| r.sent_at.unwrap()).collect();
    assert!(commits.len() < 40, "one commit per send");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_database_holds_no_plaintext(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let marker = "PLAINTEXT-MARKER-7f3a9c";

    alice
        .send_text(&conversation, &format!("the marker is {marker}"))
        .await
        .unwrap();
    // A device bob adds later gets the message's key forwarded by his first one: that key is
    // stored too, wrapped for the new device only.
    let bobs_new_device = app.device("bob").await;
    let sent = bob
        .list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 1)
        .await
        .unwrap()
        .messages
        .remove(0);
    let key = crate::forwarding::forward(&bob, &sent, &alice, &bobs_new_device);
    crate::forwarding::forward_keys(&bob, &conversation.conversation_id, vec![key])
        .await
        .unwrap();

    // Every table of every schema (auth's and the migrations' too), not only chat's.
    let tables: Vec<String> = sqlx::query_scalar(
        "select format('%I.%I', table_schema, table_name) from information_schema.tables
         where table_type = 'BASE TABLE'
           and table_schema not in ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "chat.messages"), "{tables:?}");
    assert!(
        tables.iter().any(|t| t == "chat.forwarded_keys"),
        "{tables:?}"
    );
    let forwarded: i64 = sqlx::query_scalar("select count(*) from chat.forwarded_keys")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(forwarded, 1, "the forwarded key is in the dump");
    let hex_marker = hex::encode(marker);
    for table in tables {
        // Every row as text; bytea columns come out as hex.
        let dump: Vec<String> = sqlx::query_scalar(&format!("select t::text from {table} t"))
            .fetch_all(&db)
            .await
            .unwrap();
        let dump = dump.join("\n");
        assert!(!dump.contains(marker), "{table} holds the marker");
        assert!(
            !dump.contains(&hex_marker),
            "{table} holds the marker in hex"
        );
    }
    assert_eq!(
        bob.list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 1)
            .await
            .map(|page| bob.open(&page.messages[0], &alice))
            .unwrap(),
        format!("the marker is {marker}")
    );
    let with_forwarded_key = bobs_new_device
        .list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 1)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(
        crate::forwarding::open_forwarded(&bobs_new_device, &with_forwarded_key, &alice, &bob)
            .unwrap(),
        format!("the marker is {marker}"),
        "only the new device's key opens it"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn one_client_message_id_racing_into_two_conversations_on_two_replicas_is_stored_once(
    db: PgPool,
) {
    let app = spawn_app(db.clone()).await;
    let replica_b = crate::helpers::spawn_chat(
        &db,
        app.auth_addr,
        app.group_addr,
        |_| {},
        std::future::pending(),
    )
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let alice_on_b = alice.on_replica(replica_b).await;
    alice_on_b.subscribe_when_ready().await;
    let with_bob = alice.open_direct(&bob).await;
    let with_carol = alice.open_direct(&carol).await;
    let to_bob = alice.seal(
        &with_bob.conversation_id,
        "same-id",
        &alice.recipients(&[&bob.user_id]).await,
        "x",
    );
    let to_carol = alice.seal(
        &with_carol.conversation_id,
        "same-id",
        &alice.recipients(&[&carol.user_id]).await,
        "y",
    );

    let (first, second) = tokio::join!(alice.send(to_bob), alice_on_b.send(to_carol));

    let outcomes = [first, second];
    assert_eq!(
        outcomes.iter().filter(|r| r.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    let refused = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    let stored: i64 = sqlx::query_scalar("select count(*) from chat.messages")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_peers_new_device_is_announced_on_open_streams_and_required_at_once(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut alice_events = alice.subscribe(&[]).await;
    crate::helpers::replay(&mut alice_events).await;
    // Fills chat's device cache with bob's one device.
    let old_recipients = alice.recipients(&[&alice.user_id, &bob.user_id]).await;
    alice
        .send(alice.seal(&conversation.conversation_id, "m1", &old_recipients, "one"))
        .await
        .unwrap();

    let bobs_tablet = app.device("bob").await;
    let announced = loop {
        match crate::helpers::next_event(&mut alice_events).await {
            pb::stream_event::Event::DevicesChanged(changed) => break changed,
            _ => continue,
        }
    };
    let stale_send = alice
        .send(alice.seal(&conversation.conversation_id, "m2", &old_recipients, "two"))
        .await
        .unwrap_err();
    let fresh_send = alice
        .send(alice.seal(
            &conversation.conversation_id,
            "m3",
            &alice.recipients(&[&alice.user_id, &bob.user_id]).await,
            "three",
        ))
        .await;

    assert_eq!(announced.user_id, bob.user_id);
    assert_eq!(stale_send.code(), Code::FailedPrecondition);
    assert_eq!(
        device_list_mismatch(&stale_send).missing_device_ids,
        std::slice::from_ref(&bobs_tablet.device_id)
    );
    assert_eq!(fresh_send.unwrap().sequence, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_retry_after_the_peer_added_a_device_still_returns_the_original(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let envelope = alice
        .envelope_for(&conversation, "sent before the tablet")
        .await;
    let original = alice.send(envelope.clone()).await.unwrap();

    // The envelope no longer names every device of bob's, but it was stored before that.
    let _bobs_tablet = app.device("bob").await;
    let retry = alice.send(envelope.clone()).await.unwrap();
    let new_id = alice
        .send(pb::Envelope {
            client_message_id: "never stored".to_owned(),
            ..envelope.clone()
        })
        .await
        .unwrap_err();

    assert!(retry.duplicate);
    assert_eq!(
        (retry.message_id, retry.sequence),
        (original.message_id, original.sequence)
    );
    // The same stale envelope under a new id is a send like any other: refused with the diff.
    assert_eq!(new_id.code(), Code::FailedPrecondition, "{new_id:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn envelopes_naming_ids_in_another_spelling_are_refused_even_when_signed_so(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let good = alice.envelope_for(&conversation, "x").await;
    let mut uppercase_recipient = good.clone();
    uppercase_recipient.wrapped_keys[0].device_id =
        uppercase_recipient.wrapped_keys[0].device_id.to_uppercase();
    // Each signed by alice over the respelled id: before, the server verified the signature
    // over the text as sent, stored the UUID and delivered its canonical text, which no
    // recipient could verify.
    let respelled = [
        pb::Envelope {
            conversation_id: good.conversation_id.to_uppercase(),
            ..good.clone()
        },
        pb::Envelope {
            sender_user_id: good.sender_user_id.to_uppercase(),
            ..good.clone()
        },
        pb::Envelope {
            sender_device_id: good.sender_device_id.replace('-', ""),
            ..good.clone()
        },
        uppercase_recipient,
    ];

    for envelope in respelled {
        let status = alice.send(alice.resign(envelope)).await.unwrap_err();

        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("canonical"), "{status:?}");
    }
    assert_eq!(alice.send(good).await.unwrap().sequence, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_v2_message_reaches_each_device_with_its_chain_and_its_own_inclusion_proof(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    // Alice's device wraps for itself too, as the reference clients do.
    let mut recipients = alice.recipients(&[&alice.user_id, &bob.user_id]).await;
    recipients.push(e2ee::RecipientDevice {
        device_id: alice.device_id.clone(),
        encryption_spki: alice.keys.public_keys().encryption_spki.clone(),
    });
    let envelope = alice.seal(&conversation.conversation_id, "v2", &recipients, "chained");

    alice.send(envelope.clone()).await.unwrap();

    for (reader, text) in [(&bob, "bob"), (&alice, "alice")] {
        let history = reader
            .list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 10)
            .await
            .unwrap();
        let message = &history.messages[0];
        let delivered = message.envelope.as_ref().unwrap();
        assert_eq!(delivered.suite, pb::CipherSuite::V2 as i32, "{text}");
        assert_eq!(delivered.sender_counter, envelope.sender_counter, "{text}");
        assert_eq!(
            delivered.previous_envelope_hash, envelope.previous_envelope_hash,
            "{text}"
        );
        assert_eq!(delivered.sender_time_ms, envelope.sender_time_ms, "{text}");
        assert_eq!(message.recipient_count, 2, "{text}");
        assert_eq!(delivered.wrapped_keys.len(), 1, "{text}");
        assert_eq!(
            delivered.wrapped_keys[0].inclusion_proof.len(),
            32,
            "{text}"
        );
        let opened = reader.try_open(message, &alice).unwrap();
        assert_eq!(opened.plaintext, b"chained", "{text}");
        assert_eq!(opened.link.unwrap().counter, 1, "{text}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_wrapped_key_the_server_substitutes_is_refused_before_decryption(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    alice.send_text(&conversation, "secret").await.unwrap();
    // A compromised server puts a ciphertext of its choosing in bob's entry: a valid RSA-OAEP
    // wrap of another key, under bob's real public key.
    let bob_public = bob.keys.public_keys().encryption_spki.clone();
    let chosen = e2ee::primitives::rsa_oaep_wrap(
        &e2ee::primitives::parse_rsa_public_key(&bob_public).unwrap(),
        &[0x42; 32],
    )
    .unwrap();
    sqlx::query("update chat.message_keys set wrapped_key = $1 where device_id = $2::uuid")
        .bind(&chosen)
        .bind(&bob.device_id)
        .execute(&db)
        .await
        .unwrap();

    let history = bob
        .list_messages(&conversation.conversation_id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();

    assert_eq!(
        history.messages[0].envelope.as_ref().unwrap().wrapped_keys[0].wrapped_key,
        chosen
    );
    assert_eq!(
        bob.try_open(&history.messages[0], &alice).map(|_| ()),
        Err(e2ee::Error::WrappedKeyNotSigned)
    );
}
