use proto::chat::v1 as pb;
use sqlx::PgPool;
use testkit::stack::Runtime;

use crate::helpers::{
    BidiStream, TestApp, TestDevice, device_list_mismatch, next_message, reason, replay, spawn_app,
};

/// The real gateway in front of the app's auth, chat and group.
pub(crate) async fn spawn_gateway(app: &TestApp) -> std::net::SocketAddr {
    let uri = testkit::stack::uri;
    let upstreams =
        testkit::stack::upstreams(&uri(app.auth_addr), &uri(app.addr), &uri(app.group_addr));
    let config = gateway::Config::for_tests(upstreams);
    let probe = app.stack.probe_token();
    let gateway = testkit::stack::start_gateway(config, Runtime::Shared, probe)
        .await
        .unwrap();
    gateway.addr
}

#[sqlx::test(migrations = "../migrations")]
async fn two_users_exchange_messages_through_the_gateway_over_both_stream_kinds(db: PgPool) {
    let app = spawn_app(db).await;
    let gateway = spawn_gateway(&app).await;
    let alice = app.user("alice").await.on_replica(gateway).await;
    let bob = app.user("bob").await.on_replica(gateway).await;
    let mut bob_events = bob.subscribe_when_ready().await;
    replay(&mut bob_events).await;
    let conversation = alice.open_direct(&bob).await;
    let bobs_view = bob.open_direct(&alice).await;
    let mut alice_stream = BidiStream::open(&alice, Vec::new()).await;

    alice_stream
        .send(
            "r1",
            alice.envelope_for(&conversation, "via the gateway").await,
        )
        .await;
    let to_bob = next_message(&mut bob_events).await;
    bob.send_text(&bobs_view, "and back").await.unwrap();
    let to_alice = alice_stream.next_message().await;

    assert_eq!(bob.open(&to_bob, &alice), "via the gateway");
    assert_eq!(alice.open(&to_alice, &bob), "and back");
}

/// The most recipient devices a message may name (`CHAT_MAX_WRAPPED_KEYS`'s default).
const MAX_WRAPPED_KEYS: usize = 10_000;

/// An envelope sealed for the conversation's devices whose wrapped keys are then replaced by `n`
/// for random devices that nobody has. Chat refuses it with a device-list mismatch (`n` extra,
/// the peer's device missing) before it would check the signature.
async fn envelope_for_unknown_devices(
    sender: &TestDevice,
    conversation: &pb::Conversation,
    n: usize,
) -> pb::Envelope {
    let mut envelope = sender.envelope_for(conversation, "to nobody").await;
    envelope.wrapped_keys = (0..n)
        .map(|_| pb::WrappedKey {
            device_id: uuid::Uuid::new_v4().to_string(),
            key_fingerprint: vec![0; 32],
            wrapped_key: vec![0; 1],
            ..Default::default()
        })
        .collect();
    envelope
}

#[sqlx::test(migrations = "../migrations")]
async fn oversized_mismatches_of_one_user_never_break_another_users_calls(db: PgPool) {
    const ROUNDS: usize = 12;
    let app = spawn_app(db).await;
    let gateway = spawn_gateway(&app).await;
    let alice = app.user("alice").await.on_replica(gateway).await;
    let bob = app.user("bob").await.on_replica(gateway).await;
    let mallory = app.user("mallory").await.on_replica(gateway).await;
    let carol = app.user("carol").await;
    let mut bob_events = bob.subscribe_when_ready().await;
    replay(&mut bob_events).await;
    let conversation = alice.open_direct(&bob).await;
    let mallorys = mallory.open_direct(&carol).await;

    // Mallory sends, again and again, messages naming 10,000 unknown devices while Alice sends
    // to Bob, Bob reads the history, and Bob's Subscribe stream (opened before) stays open.
    let flood = async {
        let mut refusals = Vec::new();
        for _ in 0..ROUNDS {
            let envelope =
                envelope_for_unknown_devices(&mallory, &mallorys, MAX_WRAPPED_KEYS).await;
            refusals.push(mallory.send(envelope).await.unwrap_err());
        }
        refusals
    };
    let conversing = async {
        let mut outcomes = Vec::new();
        for round in 0..ROUNDS {
            let sent = alice
                .send_text(&conversation, &format!("message {round}"))
                .await;
            let history = bob
                .list_messages(
                    &conversation.conversation_id,
                    pb::Direction::Forward,
                    0,
                    200,
                )
                .await;
            outcomes.push((sent, history));
        }
        outcomes
    };
    let (refusals, outcomes) = tokio::join!(flood, conversing);

    for (round, (sent, history)) in outcomes.into_iter().enumerate() {
        let sent = sent.unwrap_or_else(|status| panic!("send {round}: {status:?}"));
        let history = history.unwrap_or_else(|status| panic!("history {round}: {status:?}"));
        assert_eq!(sent.sequence, round as u64 + 1);
        assert_eq!(history.messages.len(), round + 1);
    }
    for round in 0..ROUNDS {
        let delivered = next_message(&mut bob_events).await;
        assert_eq!(bob.open(&delivered, &alice), format!("message {round}"));
    }
    for refusal in &refusals {
        assert_eq!(
            refusal.code(),
            tonic::Code::FailedPrecondition,
            "{refusal:?}"
        );
        assert_eq!(reason(refusal), "DEVICE_LIST_MISMATCH");
        let mismatch = device_list_mismatch(refusal);
        assert_eq!(mismatch.extra_device_count, MAX_WRAPPED_KEYS as u32);
        assert_eq!(mismatch.extra_device_ids.len(), 32);
        assert_eq!(
            mismatch.missing_device_ids,
            std::slice::from_ref(&carol.device_id)
        );
        assert_eq!(mismatch.missing_device_count, 1);
        assert!(mismatch.truncated);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_send_naming_ten_thousand_unknown_devices_is_rejected_with_a_capped_mismatch(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    let gateway = spawn_gateway(&app).await;
    let alice = app.user("alice").await.on_replica(gateway).await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut stream = BidiStream::open(&alice, Vec::new()).await;
    let flood = envelope_for_unknown_devices(&alice, &conversation, MAX_WRAPPED_KEYS).await;
    let fine = alice.envelope_for(&conversation, "still open").await;

    stream.send("flood", flood).await;
    stream.send("fine", fine).await;
    // Sends on one stream are answered as they finish, not in order.
    let (mut rejected, mut committed) = (None, None);
    while rejected.is_none() || committed.is_none() {
        match stream.next().await {
            pb::open_stream_response::Response::SendRejected(answer) => {
                rejected = Some(answer);
            }
            pb::open_stream_response::Response::SendResult(answer) => {
                committed = Some(answer);
            }
            _ => {}
        }
    }

    let rejected = rejected.unwrap();
    assert_eq!(rejected.request_id, "flood");
    assert_eq!(rejected.reason, "DEVICE_LIST_MISMATCH");
    let mismatch = rejected.device_list_mismatch.unwrap();
    assert_eq!(mismatch.extra_device_count, MAX_WRAPPED_KEYS as u32);
    assert_eq!(mismatch.extra_device_ids.len(), 32);
    assert!(mismatch.truncated);
    assert_eq!(committed.unwrap().request_id, "fine");
}
