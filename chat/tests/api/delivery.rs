use std::time::Duration;

use proto::chat::v1::{self as pb, open_stream_request::Request as Kind, stream_event::Event};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::helpers::{
    BidiStream, next_event, next_message, reason, replay, spawn_app, spawn_app_with, spawn_chat,
};

#[sqlx::test(migrations = "../migrations")]
async fn two_users_exchange_messages_over_subscribe(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let bobs_view = bob.open_direct(&alice).await;
    let mut alice_events = alice.subscribe(&[]).await;
    let mut bob_events = bob.subscribe(&[]).await;
    assert!(replay(&mut alice_events).await.is_empty());
    assert!(replay(&mut bob_events).await.is_empty());

    alice.send_text(&conversation, "hi bob").await.unwrap();
    let to_bob = next_message(&mut bob_events).await;
    bob.send_text(&bobs_view, "hi alice").await.unwrap();
    let to_alice = next_message(&mut alice_events).await;

    assert_eq!(bob.open(&to_bob, &alice), "hi bob");
    assert_eq!(to_bob.sequence, 1);
    assert_eq!(alice.open(&to_alice, &bob), "hi alice");
    assert_eq!(to_alice.sequence, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn two_users_exchange_messages_over_the_bidirectional_stream(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let bobs_view = bob.open_direct(&alice).await;
    let mut alice_stream = BidiStream::open(&alice, Vec::new()).await;
    let mut bob_stream = BidiStream::open(&bob, Vec::new()).await;
    for stream in [&mut alice_stream, &mut bob_stream] {
        assert!(matches!(
            stream.next().await,
            pb::open_stream_response::Response::Event(pb::StreamEvent {
                event: Some(Event::CaughtUp(_))
            })
        ));
    }

    alice_stream
        .send(
            "r1",
            alice.envelope_for(&conversation, "over the stream").await,
        )
        .await;
    let answer = alice_stream.next().await;
    let to_bob = bob_stream.next_message().await;
    bob_stream
        .send("r2", bob.envelope_for(&bobs_view, "and back").await)
        .await;
    let to_alice = alice_stream.next_message().await;
    let bad = pb::Envelope {
        nonce: vec![0; 3],
        ..bob.envelope_for(&bobs_view, "x").await
    };
    bob_stream.send("r3", bad).await;
    let rejected = loop {
        match bob_stream.next().await {
            pb::open_stream_response::Response::SendRejected(rejected) => break rejected,
            _ => continue,
        }
    };

    let pb::open_stream_response::Response::SendResult(result) = answer else {
        panic!("expected a send result, got {answer:?}");
    };
    assert_eq!(result.request_id, "r1");
    assert_eq!(result.result.unwrap().sequence, 1);
    assert_eq!(bob.open(&to_bob, &alice), "over the stream");
    assert_eq!(alice.open(&to_alice, &bob), "and back");
    assert_eq!(rejected.request_id, "r3");
    assert_eq!(rejected.code, Code::InvalidArgument as i32);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_resumed_stream_gets_exactly_the_missed_messages(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let id = conversation.conversation_id.clone();
    let mut bob_events = bob.subscribe(&[]).await;
    replay(&mut bob_events).await;
    for n in 1..=2 {
        alice
            .send_text(&conversation, &format!("m{n}"))
            .await
            .unwrap();
    }
    let seen = [
        next_message(&mut bob_events).await.sequence,
        next_message(&mut bob_events).await.sequence,
    ];
    drop(bob_events);

    for n in 3..=5 {
        alice
            .send_text(&conversation, &format!("m{n}"))
            .await
            .unwrap();
    }
    let mut resumed = bob.subscribe(&[(&id, 2)]).await;
    let missed = replay(&mut resumed).await;
    bob.acknowledge(&id, 4, 0).await.unwrap();
    let mut from_stored_position = bob.subscribe(&[]).await;
    let after_ack = replay(&mut from_stored_position).await;

    assert_eq!(seen, [1, 2]);
    let missed: Vec<_> = missed
        .iter()
        .map(|m| (m.sequence, bob.open(m, &alice)))
        .collect();
    assert_eq!(
        missed,
        [(3, "m3".into()), (4, "m4".into()), (5, "m5".into())]
    );
    assert_eq!(
        after_ack.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        [5]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn subscribing_while_messages_arrive_loses_and_repeats_nothing(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut envelopes = Vec::new();
    for n in 0..30 {
        envelopes.push(alice.envelope_for(&conversation, &format!("m{n}")).await);
    }
    let sender = alice.clone();
    let sending = tokio::spawn(async move {
        for envelope in envelopes {
            sender.send(envelope).await.unwrap();
        }
    });

    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut bob_events = bob.subscribe(&[]).await;
    let mut sequences: Vec<u64> = replay(&mut bob_events)
        .await
        .iter()
        .map(|m| m.sequence)
        .collect();
    while sequences.last() != Some(&30) {
        sequences.push(next_message(&mut bob_events).await.sequence);
    }
    sending.await.unwrap();

    assert_eq!(sequences, (1..=30).collect::<Vec<_>>());
}

crate::nats::on_both_buses!(users_on_different_replicas_reach_each_other);

async fn users_on_different_replicas_reach_each_other(bus: crate::nats::BusKind, db: PgPool) {
    let (app, replica_b, _nats) = crate::helpers::spawn_two_replicas(db, bus).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await.on_replica(replica_b).await;
    let conversation = alice.open_direct(&bob).await;
    let bobs_view = bob.open_direct(&alice).await;
    let mut alice_events = alice.subscribe(&[]).await;
    // Replica B fetches auth's token keys in the background after start.
    let mut bob_events = bob.subscribe_when_ready().await;
    replay(&mut alice_events).await;
    replay(&mut bob_events).await;

    alice
        .send_text(&conversation, "from replica A")
        .await
        .unwrap();
    let to_bob = next_message(&mut bob_events).await;
    bob.send_text(&bobs_view, "from replica B").await.unwrap();
    let to_alice = next_message(&mut alice_events).await;

    assert_eq!(bob.open(&to_bob, &alice), "from replica A");
    assert_eq!(alice.open(&to_alice, &bob), "from replica B");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_slow_consumer_is_cut_and_resumes_with_nothing_lost(db: PgPool) {
    let app = spawn_app_with(db, |config| {
        config.streams.queue = 4;
        config.streams.stall_limit = Duration::from_millis(200);
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await.with_small_windows(app.addr).await;
    let conversation = alice.open_direct(&bob).await;
    let id = conversation.conversation_id.clone();
    let mut bob_events = bob.subscribe(&[]).await;
    replay(&mut bob_events).await;
    let big = "x".repeat(60_000);
    let cuts_before = slow_consumer_cuts(&app).await;

    // Bob does not read while alice sends. His queue fills, and stays full for the stall limit
    // (200 ms) before the cut: a scrape after each send sees it.
    let mut deepest_queue = 0.0_f64;
    for _ in 0..30 {
        alice.send_text(&conversation, &big).await.unwrap();
        deepest_queue = deepest_queue.max(queue_depth_max(&app).await);
    }
    let mut received = Vec::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), bob_events.message())
            .await
            .expect("the stream ends within 5 s")
        {
            Ok(Some(response)) => {
                if let Some(Event::Message(message)) = response.event.and_then(|e| e.event) {
                    received.push(message.sequence);
                }
            }
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    let last = received.last().copied().unwrap_or(0);
    let mut resumed = bob.subscribe(&[(&id, last)]).await;
    received.extend(replay(&mut resumed).await.iter().map(|m| m.sequence));

    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "SLOW_CONSUMER");
    assert!(last < 30, "the stream was not cut");
    assert_eq!(received, (1..=30).collect::<Vec<_>>());
    // The cut is counted on the metrics port (what an operator alerts on), and so was the full
    // queue before it.
    assert_eq!(slow_consumer_cuts(&app).await - cuts_before, 1.0);
    assert_eq!(deepest_queue, 4.0, "the full queue was not seen");
}

/// Items queued to this replica's fullest stream, from its metrics port.
async fn queue_depth_max(app: &crate::helpers::TestApp) -> f64 {
    let scrape = testkit::scrape_metrics(app.metrics).await;
    testkit::metric_sum(&scrape, "chat_stream_queue_depth_max", &[])
}

/// Streams this replica ended as too slow, from its metrics port.
async fn slow_consumer_cuts(app: &crate::helpers::TestApp) -> f64 {
    let scrape = testkit::scrape_metrics(app.metrics).await;
    testkit::metric_sum(
        &scrape,
        "chat_streams_ended_total",
        &[r#"reason="slow_consumer""#],
    )
}

/// Replays take turns on the database (half the pool at a time); a client that stops reading in
/// the middle of its replay must not keep its turn, or a few such clients stop every other
/// stream of the replica from resuming.
#[sqlx::test(migrations = "../migrations")]
async fn a_client_that_stops_reading_its_replay_does_not_hold_up_other_replays(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    // A pool of two: one replay reads at a time.
    let small_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.connect_options().as_ref().clone())
        .await
        .unwrap();
    let replica = spawn_chat(
        &small_pool,
        app.auth_addr,
        app.group_addr,
        |config| config.streams.queue = 4,
        std::future::pending(),
    )
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await.with_small_windows(replica).await;
    let carol = app.user("carol").await.with_small_windows(replica).await;
    let to_bob = alice.open_direct(&bob).await;
    let to_carol = alice.open_direct(&carol).await;
    let big = "x".repeat(60_000);
    for _ in 0..30 {
        alice.send_text(&to_bob, &big).await.unwrap();
    }
    alice.send_text(&to_carol, "hi carol").await.unwrap();

    // Bob's replay fills his queue and his HTTP/2 window, and he reads nothing.
    let _bob_events = bob.subscribe(&[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut carol_events = carol.subscribe(&[]).await;
    let carols = tokio::time::timeout(Duration::from_secs(10), replay(&mut carol_events))
        .await
        .expect("carol's replay is not held up by bob's");

    assert_eq!(carols.len(), 1);
    assert_eq!(carol.open(&carols[0], &alice), "hi carol");
}

#[sqlx::test(migrations = "../migrations")]
async fn streams_send_heartbeats(db: PgPool) {
    let app = spawn_app_with(db, |config| {
        config.streams.heartbeat = Duration::from_secs(1)
    })
    .await;
    let alice = app.user("alice").await;
    let mut events = alice.subscribe(&[]).await;
    replay(&mut events).await;

    // Other events may come first (alice's own device announcement can trail the replay).
    let heartbeat = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let event = events.message().await.unwrap().unwrap();
            if let Some(Event::Heartbeat(heartbeat)) = event.event.and_then(|e| e.event) {
                return heartbeat;
            }
        }
    })
    .await;

    assert!(heartbeat.is_ok(), "no heartbeat within 3 s");
}

#[sqlx::test(migrations = "../migrations")]
async fn on_shutdown_streams_end_with_unavailable(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica = spawn_chat(&db, app.auth_addr, app.group_addr, |_| {}, async {
        let _ = stopped.await;
    })
    .await;
    let alice = app.user("alice").await.on_replica(replica).await;
    let mut events = alice.subscribe_when_ready().await;
    replay(&mut events).await;

    stop.send(()).unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn receipts_and_typing_reach_the_other_participant(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let id = conversation.conversation_id.clone();
    alice.send_text(&conversation, "read me").await.unwrap();
    let mut alice_events = alice.subscribe(&[]).await;
    replay(&mut alice_events).await;

    bob.acknowledge(&id, 1, 1).await.unwrap();
    let receipt = next_event(&mut alice_events).await;
    let typing = || async {
        let request = bob.request(pb::SendTypingRequest {
            conversation_id: id.clone(),
        });
        bob.chat.clone().send_typing(request).await
    };
    typing().await.unwrap();
    let indicator = next_event(&mut alice_events).await;
    let too_soon = typing().await.unwrap_err();

    let Event::Receipt(receipt) = receipt else {
        panic!("expected a receipt, got {receipt:?}");
    };
    assert_eq!(
        (receipt.user_id, receipt.device_id, receipt.read_sequence),
        (bob.user_id.clone(), bob.device_id.clone(), 1)
    );
    let Event::Typing(indicator) = indicator else {
        panic!("expected a typing indicator, got {indicator:?}");
    };
    assert_eq!(indicator.user_id, bob.user_id);
    assert_eq!(too_soon.code(), Code::ResourceExhausted);
    assert_eq!(reason(&too_soon), "RATE_LIMITED");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_device_gets_a_limited_number_of_streams(db: PgPool) {
    let app = spawn_app_with(db, |config| config.limits.max_streams_per_device = 1).await;
    let alice = app.user("alice").await;
    let _first = alice.subscribe(&[]).await;

    let second = alice
        .chat
        .clone()
        .subscribe(alice.request(pb::SubscribeRequest::default()))
        .await
        .unwrap_err();

    assert_eq!(second.code(), Code::ResourceExhausted);
    assert_eq!(reason(&second), "TOO_MANY_STREAMS");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_bidirectional_stream_must_start_with_start(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let (requests, outgoing) = mpsc::channel(1);
    requests
        .send(pb::OpenStreamRequest {
            request: Some(Kind::Typing(pb::StreamTyping::default())),
        })
        .await
        .unwrap();

    let status = alice
        .chat
        .clone()
        .open_stream(alice.request(ReceiverStream::new(outgoing)))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_conversation_opened_while_streaming_is_delivered_from_its_start(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut bob_events = bob.subscribe(&[]).await;
    replay(&mut bob_events).await;

    let conversation = alice.open_direct(&bob).await;
    alice.send_text(&conversation, "first words").await.unwrap();
    let message = next_message(&mut bob_events).await;

    assert_eq!(message.sequence, 1);
    assert_eq!(bob.open(&message, &alice), "first words");
}

#[sqlx::test(migrations = "../migrations")]
async fn every_device_of_a_participant_receives_a_message_live(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bob_laptop = app.device("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut on_phone = bob.subscribe(&[]).await;
    let mut on_laptop = bob_laptop.subscribe(&[]).await;
    replay(&mut on_phone).await;
    replay(&mut on_laptop).await;

    alice.send_text(&conversation, "both of you").await.unwrap();

    assert_eq!(
        bob.open(&next_message(&mut on_phone).await, &alice),
        "both of you"
    );
    assert_eq!(
        bob_laptop.open(&next_message(&mut on_laptop).await, &alice),
        "both of you"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_burst_larger_than_the_queue_reaches_a_client_that_reads(db: PgPool) {
    let app = spawn_app_with(db, |config| config.streams.queue = 2).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut envelopes = Vec::new();
    for n in 0..20 {
        envelopes.push(alice.envelope_for(&conversation, &format!("m{n}")).await);
    }
    let mut bob_events = bob.subscribe(&[]).await;
    replay(&mut bob_events).await;

    let sends = envelopes.into_iter().map(|envelope| alice.send(envelope));
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
    let mut sequences = Vec::new();
    while sequences.len() < 20 {
        sequences.push(next_message(&mut bob_events).await.sequence);
    }

    assert_eq!(sequences, (1..=20).collect::<Vec<_>>());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_message_whose_wake_up_was_lost_is_delivered_when_the_bus_reconnects(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut bob_events = bob.subscribe(&[]).await;
    replay(&mut bob_events).await;
    // A message committed without any wake-up, as if its notification had been lost.
    let envelope = e2ee::Envelope::from(alice.envelope_for(&conversation, "no wake-up").await);
    let check = envelope
        .verify_as_sent(&alice.keys.public_keys().signing_public_key)
        .unwrap();
    let digest = check.recipients_digest;
    let mut tx = db.begin().await.unwrap();
    sqlx::query("update chat.conversations set last_sequence = 1 where id = $1::uuid")
        .bind(&conversation.conversation_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "insert into chat.messages (conversation_id, sequence, id, sender_user_id,
             sender_device_id, client_message_id, suite, nonce, ciphertext, key_commitment,
             signature, recipients_digest, sender_counter, previous_envelope_hash,
             sender_time_ms, recipient_count)
         values ($1::uuid, 1, gen_random_uuid(), $2::uuid, $3::uuid, $4, 2, $5, $6, $7, $8, $9,
                 $10, $11, $12, $13)",
    )
    .bind(&envelope.conversation_id)
    .bind(&envelope.sender_user_id)
    .bind(&envelope.sender_device_id)
    .bind(&envelope.client_message_id)
    .bind(&envelope.nonce)
    .bind(&envelope.ciphertext)
    .bind(&envelope.key_commitment)
    .bind(&envelope.signature)
    .bind(digest.as_slice())
    .bind(envelope.sender_counter as i64)
    .bind(&envelope.previous_envelope_hash)
    .bind(envelope.sender_time_ms as i64)
    .bind(envelope.wrapped_keys.len() as i32)
    .execute(&mut *tx)
    .await
    .unwrap();
    for (key, inclusion) in envelope.wrapped_keys.iter().zip(&check.inclusions) {
        sqlx::query(
            "insert into chat.message_keys (conversation_id, sequence, device_id,
                 key_fingerprint, wrapped_key, leaf_index, inclusion_proof)
             values ($1::uuid, 1, $2::uuid, $3, $4, $5, $6)",
        )
        .bind(&envelope.conversation_id)
        .bind(&key.device_id)
        .bind(&key.key_fingerprint)
        .bind(&key.wrapped_key)
        .bind(inclusion.leaf_index as i32)
        .bind(&inclusion.proof)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let silence = tokio::time::timeout(Duration::from_millis(300), next_message(&mut bob_events));
    assert!(silence.await.is_err(), "delivered without a wake-up");

    // Cut the LISTEN connection: whatever it missed, the replica re-reads every stream when it
    // is back.
    let cut: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and query ilike 'listen%chat_events%'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let message = next_message(&mut bob_events).await;

    assert_eq!(cut, [true]);
    assert_eq!(message.sequence, 1);
    assert_eq!(bob.open(&message, &alice), "no wake-up");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_ends_with_unauthenticated_when_its_token_expires(db: PgPool) {
    let app = crate::helpers::spawn_app_with_auth(
        db,
        |auth| auth.tokens.access_token_ttl = Duration::from_secs(3),
        |_| {},
    )
    .await;
    let alice = app.user("alice").await;
    let mut events = alice.subscribe(&[]).await;
    replay(&mut events).await;

    let status = loop {
        match tokio::time::timeout(Duration::from_secs(6), events.message())
            .await
            .expect("the stream ends within 6 s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };

    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn acknowledgements_and_typing_on_the_bidirectional_stream_reach_the_other_side(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let id = conversation.conversation_id.clone();
    bob.send_text(&bob.open_direct(&alice).await, "hi")
        .await
        .unwrap();
    let mut bob_events = bob.subscribe(&[]).await;
    replay(&mut bob_events).await;
    let alice_stream = BidiStream::open(&alice, Vec::new()).await;

    alice_stream
        .requests
        .send(pb::OpenStreamRequest {
            request: Some(Kind::Ack(pb::Acknowledgement {
                conversation_id: id.clone(),
                delivered_sequence: 1,
                read_sequence: 1,
            })),
        })
        .await
        .unwrap();
    let receipt = next_event(&mut bob_events).await;
    alice_stream
        .requests
        .send(pb::OpenStreamRequest {
            request: Some(Kind::Typing(pb::StreamTyping {
                conversation_id: id.clone(),
            })),
        })
        .await
        .unwrap();
    let typing = next_event(&mut bob_events).await;

    assert!(
        matches!(&receipt, Event::Receipt(r) if r.read_sequence == 1 && r.user_id == alice.user_id),
        "{receipt:?}"
    );
    assert!(
        matches!(&typing, Event::Typing(t) if t.user_id == alice.user_id),
        "{typing:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_ignores_positions_in_conversations_of_others(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let conversation = alice.open_direct(&bob).await;
    alice
        .send_text(&conversation, "not for mallory")
        .await
        .unwrap();

    let mut events = mallory
        .subscribe(&[(&conversation.conversation_id, 0)])
        .await;
    let replayed = replay(&mut events).await;
    alice.send_text(&conversation, "still not").await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(300), events.message()).await;

    assert!(replayed.is_empty());
    assert!(
        matches!(
            &nothing,
            Err(_)
                | Ok(Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::StreamEvent {
                        event: Some(Event::Heartbeat(_))
                    })
                })))
        ),
        "{nothing:?}"
    );
}
