//! The NATS bus under faults, through the whole service: two chat replicas on a three-node NATS
//! cluster (replica A on node 0, replica B on node 1), alice sending on A, bob's stream on B.
//! Whatever happens to NATS, bob's stream gets every message, in order, without reconnecting:
//! wake-ups lost with a node are made up by the resync and the republication after a
//! reconnection (`chat/src/delivery/bus/nats.rs`).

use std::time::{Duration, Instant};

use proto::chat::v1 as pb;
use sqlx::PgPool;

use crate::{
    helpers::{TestDevice, replay, spawn_two_replicas},
    nats::BusKind,
};

/// Messages alice sends in the test under load.
const MESSAGES: u64 = 300;

#[sqlx::test(migrations = "../migrations")]
async fn nats_nodes_killed_under_load_lose_nothing_and_streams_stay_live(db: PgPool) {
    let (app, replica_b, cluster) = spawn_two_replicas(db, BusKind::Nats).await;
    let mut cluster = cluster.unwrap();
    let alice = app.user("alice").await;
    let bob = app.user("bob").await.on_replica(replica_b).await;
    let conversation = alice.open_direct(&bob).await;
    let mut bobs_stream = bob.subscribe_when_ready().await;
    replay(&mut bobs_stream).await;

    let sending = tokio::spawn(send_many(alice.clone(), conversation.clone(), MESSAGES));
    let mut received = Vec::new();
    let started = Instant::now();
    while received.last() != Some(&MESSAGES) {
        // The node bob's replica is connected to crashes a third of the way, and comes back; at
        // two thirds, the node of alice's replica (the publisher) crashes.
        if received.len() as u64 == MESSAGES / 3 {
            cluster.kill(1);
        } else if received.len() as u64 == 2 * MESSAGES / 3 {
            cluster.restart(1).await;
            cluster.kill(0);
        }
        received.push(next_sequence(&mut bobs_stream, Duration::from_secs(10)).await);
    }
    sending.await.unwrap();

    assert_eq!(received, (1..=MESSAGES).collect::<Vec<_>>());
    eprintln!(
        "{MESSAGES} messages through two node crashes in {:?}",
        started.elapsed()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_nats_cluster_gone_for_10_s_loses_nothing(db: PgPool) {
    let (app, replica_b, cluster) = spawn_two_replicas(db, BusKind::Nats).await;
    let mut cluster = cluster.unwrap();
    let alice = app.user("alice").await;
    let bob = app.user("bob").await.on_replica(replica_b).await;
    let conversation = alice.open_direct(&bob).await;
    let mut bobs_stream = bob.subscribe_when_ready().await;
    replay(&mut bobs_stream).await;
    send_many(alice.clone(), conversation.clone(), 10).await;
    let mut received = Vec::new();
    while received.last() != Some(&10) {
        received.push(next_sequence(&mut bobs_stream, Duration::from_secs(10)).await);
    }

    for node in 0..3 {
        cluster.kill(node);
    }
    let outage = Instant::now();
    // Sends still commit while the bus is gone.
    send_many(alice.clone(), conversation.clone(), 20).await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    cluster.restart_all().await;
    let back = Instant::now();
    while received.last() != Some(&30) {
        received.push(next_sequence(&mut bobs_stream, Duration::from_secs(20)).await);
    }

    assert_eq!(received, (1..=30).collect::<Vec<_>>());
    eprintln!("caught up {:?} after the cluster came back", back.elapsed());
}

async fn send_many(alice: TestDevice, conversation: pb::Conversation, count: u64) {
    for n in 0..count {
        alice
            .send_text(&conversation, &format!("message {n}"))
            .await
            .unwrap();
    }
}

/// The sequence of the next message on `stream`, skipping other events; panics after `patience`.
async fn next_sequence(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
    patience: Duration,
) -> u64 {
    tokio::time::timeout(patience, async {
        loop {
            let item = stream
                .message()
                .await
                .expect("the stream stays healthy")
                .expect("the stream stays open");
            if let Some(pb::stream_event::Event::Message(message)) =
                item.event.and_then(|event| event.event)
            {
                return message.sequence;
            }
        }
    })
    .await
    .expect("the next message arrives")
}
