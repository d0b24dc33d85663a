use std::time::Duration;

use proto::chat::v1::{self as pb, open_stream_request::Request as Kind, stream_event::Event};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::helpers::{TestApp, next_message, replay, spawn_app};

/// The real gateway in front of the app's auth, chat and group.
pub async fn spawn_gateway(app: &TestApp) -> std::net::SocketAddr {
    let uri = |addr: std::net::SocketAddr| format!("http://{addr}").parse().unwrap();
    let upstreams = gateway::UpstreamSettings {
        auth: uri(app.auth_addr),
        chat: uri(app.addr),
        group: uri(app.group_addr),
        resolve_interval: Duration::from_secs(10),
        connect_timeout: Duration::from_millis(500),
        connections_per_address: 2,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway::run(
        gateway::Config::for_tests(upstreams),
        listener,
        std::future::pending(),
    ));
    addr
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
    let (requests, outgoing) = mpsc::channel(4);
    requests
        .send(pb::OpenStreamRequest {
            request: Some(Kind::Start(pb::StartStream::default())),
        })
        .await
        .unwrap();
    let mut alice_stream = alice
        .chat
        .clone()
        .open_stream(alice.request(ReceiverStream::new(outgoing)))
        .await
        .unwrap()
        .into_inner();

    requests
        .send(pb::OpenStreamRequest {
            request: Some(Kind::Send(pb::StreamSend {
                request_id: "r1".to_owned(),
                envelope: Some(alice.envelope_for(&conversation, "via the gateway").await),
            })),
        })
        .await
        .unwrap();
    let to_bob = next_message(&mut bob_events).await;
    bob.send_text(&bobs_view, "and back").await.unwrap();
    let to_alice = loop {
        let response = tokio::time::timeout(Duration::from_secs(5), alice_stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(pb::open_stream_response::Response::Event(pb::StreamEvent {
            event: Some(Event::Message(message)),
        })) = response.response
        {
            break message;
        }
    };

    assert_eq!(bob.open(&to_bob, &alice), "via the gateway");
    assert_eq!(alice.open(&to_alice, &bob), "and back");
}
