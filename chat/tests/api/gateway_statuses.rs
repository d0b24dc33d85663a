//! Chat's refusals reach clients of the gateway unchanged, code, message and `ErrorInfo`, though
//! chat sends them trailers-only (the status alone in the response head).

use proto::chat::v1 as pb;
use sqlx::PgPool;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::{
    gateway::spawn_gateway,
    helpers::{reason, spawn_app_with},
};

#[sqlx::test(migrations = "../migrations")]
async fn stream_refusals_reach_gateway_clients_with_their_details(db: PgPool) {
    let app = spawn_app_with(db, |config| config.limits.max_streams_per_device = 1).await;
    let gateway = spawn_gateway(&app).await;
    let alice = app.user("alice").await.on_replica(gateway).await;
    let _the_one_stream_allowed = alice.subscribe_when_ready().await;
    let ack_first = pb::OpenStreamRequest {
        request: Some(pb::open_stream_request::Request::Ack(
            pb::Acknowledgement::default(),
        )),
    };

    let one_too_many = alice
        .chat
        .clone()
        .subscribe(alice.request(pb::SubscribeRequest::default()))
        .await
        .unwrap_err();
    let not_started = match alice
        .chat
        .clone()
        .open_stream(alice.request(tokio_stream::iter([ack_first])))
        .await
    {
        Err(status) => status,
        Ok(response) => response.into_inner().next().await.unwrap().unwrap_err(),
    };
    let token = alice.token.clone();
    let (grpcurl_subscribe, grpcurl_open_stream) = tokio::task::spawn_blocking(move || {
        let header = format!("authorization: Bearer {token}");
        let call = |method: &str, data: &str| {
            testkit::grpcurl(&["-H", &header, "-d", data], gateway, &[method])
        };
        (
            call("chat.v1.ChatService/Subscribe", "{}"),
            call("chat.v1.ChatService/OpenStream", r#"{"ack":{}}"#),
        )
    })
    .await
    .unwrap();

    assert_eq!(
        one_too_many.code(),
        Code::ResourceExhausted,
        "{one_too_many:?}"
    );
    assert_eq!(reason(&one_too_many), "TOO_MANY_STREAMS");
    assert_eq!(not_started.code(), Code::InvalidArgument, "{not_started:?}");
    assert_eq!(not_started.message(), "the first request must be start");
    assert!(
        grpcurl_subscribe.stderr.contains("Code: ResourceExhausted"),
        "{}",
        grpcurl_subscribe.stderr
    );
    assert!(
        grpcurl_open_stream.stderr.contains("Code: InvalidArgument"),
        "{}",
        grpcurl_open_stream.stderr
    );
}
