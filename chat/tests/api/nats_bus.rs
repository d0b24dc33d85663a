//! The NATS bus alone: what the contract suite (`bus_contract.rs`) cannot ask of both buses. The
//! whole cluster gone for 10 s, and credentials files.

use std::time::Duration;

use chat::bus_contract::{Bus, BusEvent, BusMetrics, NatsBus};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    bus_contract::{PATIENCE, conversation, drain, next_where, wakeup},
    nats::NatsCluster,
};

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
