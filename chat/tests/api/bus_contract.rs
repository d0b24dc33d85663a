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
const PATIENCE: Duration = Duration::from_secs(10);

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

fn conversation() -> ConversationId {
    ConversationId(Uuid::now_v7())
}

fn wakeup(conversation: ConversationId, last_sequence: u64) -> BusEvent {
    BusEvent::NewMessages {
        conversation,
        last_sequence,
    }
}

fn drain(events: &mut broadcast::Receiver<BusEvent>) {
    while !matches!(
        events.try_recv(),
        Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
    ) {}
}

/// The next event that `wanted` keeps, skipping the others; panics after [`PATIENCE`].
async fn next_where<T>(
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
    let mut heard = Vec::new();
    loop {
        let event = next_where(&mut replicas.b_events, |event| match event {
            BusEvent::NewMessages { conversation, .. } => Some(conversation),
            _ => None,
        })
        .await;
        heard.push(event);
        if event == after {
            break;
        }
    }

    assert_eq!(
        heard,
        [good, after],
        "the bad lines and the oversized payload are dropped"
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

/// The fault case at the bus's level: the whole NATS cluster gone for 10 s. Every stream
/// re-reads when the bus is back, and what was published meanwhile is published then.
#[tokio::test]
async fn a_nats_cluster_gone_for_10_s_ends_in_a_resync_and_loses_no_wakeup() {
    let mut cluster = NatsCluster::start(3).await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
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
    let (a, b) = (start(0).await, start(1).await);
    let mut b_events = b.subscribe();
    next_where(&mut b_events, |event| {
        (event == BusEvent::Resync).then_some(())
    })
    .await;
    let during = conversation();

    for node in 0..3 {
        cluster.kill(node);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.publish(wakeup(during, 4));
    tokio::time::sleep(Duration::from_secs(5)).await;
    drain(&mut b_events);
    cluster.restart_all().await;
    next_where(&mut b_events, |event| {
        (event == BusEvent::Resync).then_some(())
    })
    .await;
    let heard = next_where(&mut b_events, |event| match event {
        BusEvent::NewMessages {
            conversation,
            last_sequence,
        } if conversation == during => Some(last_sequence),
        _ => None,
    })
    .await;

    assert_eq!(heard, 4);
}

/// A credentials file that cannot be read, or is not a NATS credentials file, stops the start
/// with an error naming the variable (and never the content), before any connection is tried.
#[tokio::test]
async fn bad_nats_credentials_are_refused_at_start() {
    use common::config::SecretSource;
    let missing = SecretSource::File("/nonexistent/chat.creds".into());
    let garbage = SecretSource::Inline("not a credentials file, but a secret".into());

    for credentials in [missing, garbage] {
        let settings = chat::NatsSettings {
            // Nothing listens there: the error must come before any connection.
            servers: vec!["nats://127.0.0.1:1".parse().unwrap()],
            subject: "chat.bus".to_owned(),
            credentials: Some(credentials),
        };
        let started = NatsBus::start(&settings, CancellationToken::new(), BusMetrics::default());
        let error = match tokio::time::timeout(PATIENCE, started).await.unwrap() {
            Ok(_) => panic!("started with bad credentials"),
            Err(error) => error.to_string(),
        };

        assert!(error.contains("CHAT_NATS_CREDENTIALS_FILE"), "{error}");
        assert!(!error.contains("but a secret"), "{error}");
    }
}

/// With `CHAT_NATS_CREDENTIALS_FILE`, the bus connects to a server that requires them (a NATS
/// server in operator mode, the user signed by its account); without, it never connects.
#[tokio::test]
async fn the_nats_bus_connects_with_a_credentials_file() {
    let server = crate::nats::SecuredNats::start().await;
    let file = std::env::temp_dir().join(format!("chat-{}.creds", Uuid::now_v7()));
    std::fs::write(&file, &server.credentials).unwrap();
    let settings = |credentials| chat::NatsSettings {
        servers: vec![server.url.parse().unwrap()],
        subject: "chat.bus".to_owned(),
        credentials,
    };
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let start = |credentials| {
        let settings = settings(credentials);
        let stop = stop.clone();
        async move {
            NatsBus::start(&settings, stop, BusMetrics::default())
                .await
                .unwrap()
        }
    };
    let with = start(Some(common::config::SecretSource::File(file.clone()))).await;
    let without = start(None).await;
    let (mut with_events, mut without_events) = (with.subscribe(), without.subscribe());

    next_where(&mut with_events, |event| {
        (event == BusEvent::Resync).then_some(())
    })
    .await;
    let conversation = conversation();
    with.publish(wakeup(conversation, 1));
    let heard = next_where(&mut with_events, |event| match event {
        BusEvent::NewMessages {
            conversation: c,
            last_sequence,
        } if c == conversation => Some(last_sequence),
        _ => None,
    })
    .await;
    // Its own wake-up, heard at once locally and again through the server.
    assert_eq!(heard, 1);
    let through_server = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(BusEvent::NewMessages {
                conversation: c, ..
            }) = with_events.recv().await
                && c == conversation
            {
                return;
            }
        }
    });
    assert!(
        through_server.await.is_ok(),
        "the server accepted the credentials"
    );
    let refused = tokio::time::timeout(Duration::from_secs(3), without_events.recv()).await;
    assert!(
        refused.is_err(),
        "connected without credentials: {refused:?}"
    );
    let _ = std::fs::remove_file(file);
}
