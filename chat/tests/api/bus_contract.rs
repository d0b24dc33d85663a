//! One contract, two buses: every test here runs against PostgreSQL LISTEN/NOTIFY (`postgres`)
//! and against a three-node NATS cluster (`nats`), two bus instances standing for two replicas
//! (on NATS, connected to different nodes). The contract (`chat/src/delivery/bus.rs`): events
//! reach every replica, but may be lost, duplicated or coalesced; a lost connection makes every
//! stream re-read (`Resync`); payloads stay within the transport's bound, and what does not read
//! as events is dropped without stopping the bus.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chat::bus_contract::{
    Bus, BusEvent, BusMetrics, CHANNEL, ConversationId, DeviceId, KeysForwarded, NATS_MAX_PAYLOAD,
    NatsBus, POSTGRES_MAX_PAYLOAD, PgBus, Receipt, Typing, UserId,
};
use futures::StreamExt;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::nats::{BusKind, NatsCluster, on_both_buses};

on_both_buses!(
    every_kind_of_event_reaches_the_other_replica,
    wakeups_may_coalesce_but_the_newest_sequence_arrives,
    a_replicas_own_wakeups_reach_its_streams_without_the_round_trip,
    payloads_stay_within_the_bound_and_nothing_is_lost,
    unreadable_payloads_are_dropped_and_the_bus_goes_on,
    a_lost_connection_makes_every_stream_resync,
);

/// How long an event may take to arrive in these tests.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// Two replicas' buses on one transport.
struct Replicas {
    a: Arc<dyn Bus>,
    b: Arc<dyn Bus>,
    b_events: broadcast::Receiver<BusEvent>,
    db: PgPool,
    /// The NATS cluster (`a` is connected to node 0, `b` to node 1).
    nats: Option<NatsCluster>,
    _stop: DropGuard,
}

async fn replicas(kind: BusKind, db: PgPool) -> Replicas {
    let stop = CancellationToken::new();
    let (a, b, nats): (Arc<dyn Bus>, Arc<dyn Bus>, _) = match kind {
        BusKind::Postgres => {
            let start = || {
                PgBus::start(
                    db.clone(),
                    Duration::ZERO,
                    stop.clone(),
                    BusMetrics::default(),
                )
            };
            (start(), start(), None)
        }
        BusKind::Nats => {
            let cluster = NatsCluster::start(3).await;
            let start = |node| {
                let chat::BusSettings::Nats(settings) = cluster.bus_via(node) else {
                    unreachable!()
                };
                let stop = stop.clone();
                async move {
                    NatsBus::start(&settings, stop, BusMetrics::default())
                        .await
                        .unwrap()
                }
            };
            (start(0).await, start(1).await, Some(cluster))
        }
    };
    let mut b_events = b.subscribe();
    // Connected, and what `a` publishes reaches `b` (on NATS, interest has crossed the routes).
    let probe = conversation();
    tokio::time::timeout(PATIENCE, async {
        loop {
            a.publish(wakeup(probe, 1));
            let heard = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    if let Ok(BusEvent::NewMessages { conversation, .. }) = b_events.recv().await
                        && conversation == probe
                    {
                        return;
                    }
                }
            });
            if heard.await.is_ok() {
                return;
            }
        }
    })
    .await
    .expect("the two replicas hear each other");
    drain(&mut b_events);
    Replicas {
        a,
        b,
        b_events,
        db,
        nats,
        _stop: stop.drop_guard(),
    }
}

pub(crate) fn conversation() -> ConversationId {
    ConversationId(Uuid::now_v7())
}

pub(crate) fn wakeup(conversation: ConversationId, last_sequence: u64) -> BusEvent {
    BusEvent::NewMessages {
        conversation,
        last_sequence,
    }
}

pub(crate) fn drain(events: &mut broadcast::Receiver<BusEvent>) {
    while !matches!(
        events.try_recv(),
        Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
    ) {}
}

/// The next event that `wanted` keeps, skipping the others; panics after [`PATIENCE`].
pub(crate) async fn next_where<T>(
    events: &mut broadcast::Receiver<BusEvent>,
    mut wanted: impl FnMut(BusEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = wanted(event) {
                        return found;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => panic!("the bus closed"),
            }
        }
    })
    .await
    .expect("the event arrives")
}

async fn every_kind_of_event_reaches_the_other_replica(kind: BusKind, db: PgPool) {
    let mut replicas = replicas(kind, db).await;
    let conversation = conversation();
    let (user, device) = (UserId(Uuid::now_v7()), DeviceId(Uuid::now_v7()));
    let sent = [
        wakeup(conversation, 3),
        BusEvent::Receipt(Receipt {
            conversation,
            user,
            device,
            delivered: 3,
            read: 2,
        }),
        BusEvent::Typing(Typing {
            conversation,
            user,
            device,
        }),
        BusEvent::KeysForwarded(KeysForwarded {
            conversation,
            user,
            device,
            count: 7,
        }),
    ];

    for event in &sent {
        replicas.a.publish(event.clone());
    }
    let mut heard = Vec::new();
    while heard.len() < sent.len() {
        let event = next_where(&mut replicas.b_events, |event| {
            (event != BusEvent::Resync).then_some(event)
        })
        .await;
        if !heard.contains(&event) {
            heard.push(event);
        }
    }

    for event in &sent {
        assert!(heard.contains(event), "{event:?} not in {heard:?}");
    }
}

async fn wakeups_may_coalesce_but_the_newest_sequence_arrives(kind: BusKind, db: PgPool) {
    let mut replicas = replicas(kind, db).await;
    let conversation = conversation();

    for sequence in 1..=200 {
        replicas.a.publish(wakeup(conversation, sequence));
    }
    let mut heard = Vec::new();
    while heard.last() != Some(&200) {
        heard.push(
            next_where(&mut replicas.b_events, |event| match event {
                BusEvent::NewMessages {
                    conversation: c,
                    last_sequence,
                } if c == conversation => Some(last_sequence),
                _ => None,
            })
            .await,
        );
    }

    assert!(heard.len() <= 200, "{heard:?}");
    assert!(
        heard.is_sorted(),
        "one publisher's wake-ups keep their order: {heard:?}"
    );
}

async fn a_replicas_own_wakeups_reach_its_streams_without_the_round_trip(
    kind: BusKind,
    db: PgPool,
) {
    let replicas = replicas(kind, db).await;
    let mut a_events = replicas.a.subscribe();
    let conversation = conversation();

    replicas.a.publish(wakeup(conversation, 1));

    assert_eq!(a_events.try_recv(), Ok(wakeup(conversation, 1)));
}

async fn payloads_stay_within_the_bound_and_nothing_is_lost(kind: BusKind, db: PgPool) {
    let mut replicas = replicas(kind, db).await;
    let (mut payloads, bound) = raw_payloads(kind, &replicas).await;
    let conversations: Vec<ConversationId> = (0..3_000).map(|_| conversation()).collect();

    for conversation in &conversations {
        replicas.a.publish(wakeup(*conversation, 1));
    }
    let mut missing: HashSet<ConversationId> = conversations.iter().copied().collect();
    while !missing.is_empty() {
        next_where(&mut replicas.b_events, |event| match event {
            BusEvent::NewMessages { conversation, .. } => Some(missing.remove(&conversation)),
            _ => None,
        })
        .await;
    }
    let mut sizes = Vec::new();
    while let Ok(Some(size)) =
        tokio::time::timeout(Duration::from_millis(500), payloads.recv()).await
    {
        sizes.push(size);
    }

    assert!(
        sizes.len() > 1,
        "3,000 wake-ups need several payloads: {sizes:?}"
    );
    assert!(
        sizes.iter().all(|size| *size <= bound),
        "{sizes:?} over {bound}"
    );
}

/// The sizes of the payloads on the transport, as a third party sees them, and the bound.
async fn raw_payloads(
    kind: BusKind,
    replicas: &Replicas,
) -> (tokio::sync::mpsc::UnboundedReceiver<usize>, usize) {
    let (sizes, received) = tokio::sync::mpsc::unbounded_channel();
    match kind {
        BusKind::Postgres => {
            let mut listener = PgListener::connect_with(&replicas.db).await.unwrap();
            listener.listen(CHANNEL).await.unwrap();
            tokio::spawn(async move {
                while let Ok(notification) = listener.recv().await {
                    let _ = sizes.send(notification.payload().len());
                }
            });
            (received, POSTGRES_MAX_PAYLOAD)
        }
        BusKind::Nats => {
            let client = raw_nats(replicas).await;
            let mut subscriber = client.subscribe("chat.bus").await.unwrap();
            client.flush().await.unwrap();
            tokio::spawn(async move {
                let _client = client;
                while let Some(message) = subscriber.next().await {
                    let _ = sizes.send(message.payload.len());
                }
            });
            (received, NATS_MAX_PAYLOAD)
        }
    }
}

/// A plain NATS client on node 0, as anyone allowed on the subject.
async fn raw_nats(replicas: &Replicas) -> async_nats::Client {
    let cluster = replicas.nats.as_ref().unwrap();
    async_nats::connect(cluster.url(0)).await.unwrap()
}

async fn unreadable_payloads_are_dropped_and_the_bus_goes_on(kind: BusKind, db: PgPool) {
    let mut replicas = replicas(kind, db).await;
    let (good, in_oversized, after) = (conversation(), conversation(), conversation());
    let readable = format!("x\nm nope 1\nr {good} 1\nm {good} 5");
    let oversized = format!("m {in_oversized} 1\n{}", "x".repeat(NATS_MAX_PAYLOAD));

    match kind {
        BusKind::Postgres => {
            notify(&replicas.db, &readable).await.unwrap();
            // PostgreSQL itself bounds what can be sent.
            let refused = notify(&replicas.db, &oversized).await.unwrap_err();
            assert!(
                refused.to_string().contains("payload string too long"),
                "{refused}"
            );
        }
        BusKind::Nats => {
            let client = raw_nats(&replicas).await;
            client.publish("chat.bus", readable.into()).await.unwrap();
            client.publish("chat.bus", oversized.into()).await.unwrap();
            client.flush().await.unwrap();
        }
    }
    replicas.a.publish(wakeup(after, 1));
    // Two publishers (the raw one, and replica a on another node): their messages may arrive
    // in either order, so the test waits for both, then checks nothing else came.
    let mut heard = Vec::new();
    while !(heard.contains(&good) && heard.contains(&after)) {
        let event = next_where(&mut replicas.b_events, |event| match event {
            BusEvent::NewMessages { conversation, .. } => Some(conversation),
            _ => None,
        })
        .await;
        heard.push(event);
    }

    assert!(
        heard.iter().all(|heard| *heard == good || *heard == after),
        "the bad lines and the oversized payload are dropped: {heard:?}"
    );
}

async fn notify(db: &PgPool, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(db)
        .await
        .map(drop)
}

async fn a_lost_connection_makes_every_stream_resync(kind: BusKind, db: PgPool) {
    let mut replicas = replicas(kind, db).await;
    let conversation = conversation();

    match kind {
        BusKind::Postgres => {
            let cut: Vec<bool> = sqlx::query_scalar(
                "select pg_terminate_backend(pid) from pg_stat_activity
                 where datname = current_database() and query ilike 'listen%chat_events%'",
            )
            .fetch_all(&replicas.db)
            .await
            .unwrap();
            assert_eq!(cut, [true, true], "both replicas' listeners are cut");
        }
        // The node `b` is connected to crashes; `b` reconnects to another it learnt of.
        BusKind::Nats => replicas.nats.as_mut().unwrap().kill(1),
    }
    next_where(&mut replicas.b_events, |event| {
        (event == BusEvent::Resync).then_some(())
    })
    .await;
    replicas.a.publish(wakeup(conversation, 9));
    let heard = next_where(&mut replicas.b_events, |event| match event {
        BusEvent::NewMessages {
            conversation: c,
            last_sequence,
        } if c == conversation => Some(last_sequence),
        _ => None,
    })
    .await;

    assert_eq!(heard, 9, "the bus goes on after the resync");
    if let Some(cluster) = replicas.nats.as_mut() {
        // The node comes back and joins the cluster again; the bus still works.
        cluster.restart(1).await;
        replicas.b.publish(wakeup(conversation, 10));
        let mut a_events = replicas.a.subscribe();
        let from_b = next_where(&mut a_events, |event| match event {
            BusEvent::NewMessages {
                conversation: c,
                last_sequence,
            } if c == conversation => Some(last_sequence),
            _ => None,
        });
        assert_eq!(from_b.await, 10);
    }
}
