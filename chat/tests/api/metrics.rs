//! chat's metrics port: the shared gRPC and pool metrics, and chat's own, move when messages are
//! sent, delivered and refused, and when streams open and close.

use std::time::Duration;

use sqlx::PgPool;
use testkit::{metric_sum, scrape_metrics};

use crate::helpers::{BidiStream, next_message, replay, spawn_app};

/// Scrapes `metrics` until `ready` holds for the scrape (at most 10 s); returns that scrape.
async fn scrape_until(metrics: std::net::SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = scrape_metrics(metrics).await;
        if ready(&scrape) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics did not get there: {scrape}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn sends_deliveries_and_streams_show_on_the_metrics_port(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = alice.open_direct(&bob).await;
    let mut stream = bob.subscribe_when_ready().await;
    replay(&mut stream).await;
    let envelope = alice.envelope_for(&conversation, "hi").await;
    let mut forged = alice.envelope_for(&conversation, "hi").await;
    forged.signature[0] ^= 1;
    let before = scrape_metrics(app.metrics).await;

    alice.send(envelope.clone()).await.unwrap();
    let retried = alice.send(envelope).await.unwrap();
    alice.send(forged).await.unwrap_err();
    next_message(&mut stream).await;
    let after = scrape_metrics(app.metrics).await;

    let moved = |name: &str, labels: &[&str]| {
        metric_sum(&after, name, labels) - metric_sum(&before, name, labels)
    };
    assert!(retried.duplicate);
    assert_eq!(moved("chat_send_seconds_count", &[r#"path="unary""#]), 3.0);
    assert_eq!(moved("chat_sends_total", &[r#"outcome="stored""#]), 1.0);
    assert_eq!(moved("chat_sends_total", &[r#"outcome="duplicate""#]), 1.0);
    assert_eq!(
        moved("chat_sends_total", &[r#"outcome="signature_invalid""#]),
        1.0
    );
    assert!(moved("chat_commit_batch_size_count", &[]) >= 1.0, "{after}");
    assert!(moved("chat_commit_seconds_count", &[]) >= 1.0, "{after}");
    assert!(moved("chat_commit_batches_total", &[r#"outcome="ok""#]) >= 1.0);
    assert_eq!(moved("chat_deliveries_total", &[r#"phase="live""#]), 1.0);
    assert!(moved("chat_recent_tail_reads_total", &[]) >= 1.0, "{after}");
    assert!(moved("chat_bus_published_total", &[]) >= 1.0, "{after}");
    assert!(
        moved("chat_devices_cache_lookups_total", &[]) >= 1.0,
        "{after}"
    );
    assert_eq!(
        metric_sum(&after, "chat_streams_open", &[r#"kind="subscribe""#]),
        1.0
    );
    let send_calls = [
        r#"service="chat.v1.ChatService""#,
        r#"method="SendMessage""#,
    ];
    assert_eq!(
        moved(
            "grpc_server_handled_total",
            &[send_calls[0], send_calls[1], r#"code="OK""#]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "grpc_server_handled_total",
            &[send_calls[0], send_calls[1], r#"code="PERMISSION_DENIED""#]
        ),
        1.0
    );
    assert!(
        metric_sum(&after, "db_pool_connections", &[]) >= 1.0,
        "{after}"
    );
    // The replica hears its own wake-up back over the bus (NOTIFY) and times it; the pool's
    // acquire probe has timed at least its first wait.
    let lag_before = metric_sum(&before, "chat_bus_lag_seconds_count", &[]);
    let heard = scrape_until(app.metrics, |scrape| {
        metric_sum(scrape, "chat_bus_lag_seconds_count", &[]) > lag_before
            && metric_sum(scrape, "db_pool_acquire_seconds_count", &[]) >= 1.0
    })
    .await;
    assert!(
        metric_sum(&heard, "chat_bus_lag_seconds_sum", &[]) > 0.0,
        "{heard}"
    );

    // A send on OpenStream, which no gRPC metric times (its answer is a message on the stream).
    let mut alices_stream = BidiStream::open(&alice, Vec::new()).await;
    let on_stream = alice.envelope_for(&conversation, "on the stream").await;
    alices_stream.send("s1", on_stream).await;
    while !matches!(
        alices_stream.next().await,
        proto::chat::v1::open_stream_response::Response::SendResult(_)
    ) {}
    let after_stream = scrape_metrics(app.metrics).await;
    assert_eq!(
        metric_sum(
            &after_stream,
            "chat_send_seconds_count",
            &[r#"path="stream""#]
        ) - metric_sum(&before, "chat_send_seconds_count", &[r#"path="stream""#]),
        1.0,
        "{after_stream}"
    );
    drop(alices_stream);

    drop(stream);
    let closed = scrape_until(app.metrics, |scrape| {
        metric_sum(scrape, "chat_streams_open", &[]) == 0.0
    })
    .await;
    // bob's Subscribe and alice's OpenStream.
    assert_eq!(
        metric_sum(
            &closed,
            "chat_streams_ended_total",
            &[r#"reason="client_closed""#]
        ),
        2.0
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_event_streams_and_the_bus_listener_show_once_connected(db: PgPool) {
    let app = spawn_app(db).await;

    let followed = scrape_until(app.metrics, |scrape| {
        // The listener's first LISTEN resyncs every stream: what came before was not heard.
        let listening =
            metric_sum(scrape, "chat_bus_resyncs_total", &[r#"cause="listener""#]) >= 1.0;
        listening
            && ["devices", "membership"].iter().all(|events| {
                let label = format!(r#"events="{events}""#);
                metric_sum(scrape, "chat_event_stream_following", &[&label]) == 1.0
            })
    })
    .await;

    for events in ["devices", "membership"] {
        let label = format!(r#"events="{events}""#);
        assert!(metric_sum(&followed, "chat_event_stream_connects_total", &[&label]) >= 1.0);
    }
}
