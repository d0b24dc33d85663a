//! What clients get when an upstream fails: one that sends a response the gateway will not
//! forward fails only that call, and one that dies ends its calls with UNAVAILABLE.

use std::time::Duration;

use futures::future::join_all;
use prost::Message as _;
use proto::chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient};
use sqlx::PgPool;
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};

use crate::{
    chat_double::{ChatDouble, spawn_chat_double},
    grpc_web,
    helpers::{Stack, spawn_stack_with, subscribe_request, with_token},
};

fn send_request(conversation: &str) -> chat_pb::SendMessageRequest {
    chat_pb::SendMessageRequest {
        envelope: Some(chat_pb::Envelope {
            conversation_id: conversation.into(),
            ..Default::default()
        }),
    }
}

async fn open_subscription(
    channel: &Channel,
    token: &str,
    conversation: &str,
) -> tonic::Streaming<chat_pb::SubscribeResponse> {
    let mut stream = ChatServiceClient::new(channel.clone())
        .subscribe(with_token(subscribe_request(&[conversation]), token))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    stream
}

/// The stack with one connection to chat (so every call shares it), chat being `chat` if given.
async fn stack_with_one_chat_connection(db: PgPool, chat: Option<std::net::SocketAddr>) -> Stack {
    spawn_stack_with(db, auth::Config::for_tests(), move |mut config| {
        config.upstreams.connections_per_address = 1;
        if let Some(chat) = chat {
            let uri: http::Uri = format!("http://{chat}").parse().unwrap();
            config.upstreams.chat = uri.into();
        }
        config
    })
    .await
}

#[sqlx::test(migrations = "../migrations")]
async fn a_response_too_large_to_forward_fails_only_its_call_and_every_other_call_goes_on(
    db: PgPool,
) {
    let stack = stack_with_one_chat_connection(db, None).await;
    let mallory = stack.access_token("mallory").await;
    let bob = stack.access_token("bob").await;
    let mut bobs_streams = Vec::new();
    for index in 0..5 {
        bobs_streams.push(open_subscription(&stack.channel, &bob, &format!("c{index}")).await);
    }

    let huge_sends = join_all((0..5).map(|_| {
        let mut chat = ChatServiceClient::new(stack.channel.clone());
        let request = with_token(send_request("huge"), &mallory);
        async move { chat.send_message(request).await }
    }));
    let bobs_sends = join_all((0..50).map(|index| {
        let mut chat = ChatServiceClient::new(stack.channel.clone());
        let request = with_token(send_request(&format!("m{index}")), &bob);
        async move { chat.send_message(request).await }
    }));
    let (huge_sends, bobs_sends) = tokio::join!(huge_sends, bobs_sends);
    let mut huge_trailers = ChatServiceClient::new(stack.channel.clone())
        .subscribe(with_token(subscribe_request(&["huge"]), &mallory))
        .await
        .unwrap()
        .into_inner();
    let event_before_huge_trailers = huge_trailers.next().await.unwrap();
    let huge_trailers_end = huge_trailers.next().await.unwrap();
    let late_send = ChatServiceClient::new(stack.channel.clone())
        .send_message(with_token(send_request("late"), &bob))
        .await;

    for outcome in huge_sends {
        let status = outcome.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(status.message(), "upstream response metadata too large");
    }
    for (index, outcome) in bobs_sends.into_iter().enumerate() {
        assert_eq!(
            outcome.unwrap().into_inner().message_id,
            format!("m{index}")
        );
    }
    assert!(event_before_huge_trailers.is_ok());
    let status = huge_trailers_end.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(late_send.unwrap().into_inner().message_id, "late");
    // Bob's streams are still open: a dropped upstream connection would have ended them.
    for stream in &mut bobs_streams {
        let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        assert!(next.is_err(), "a stream ended: {next:?}");
    }
}

async fn wait_for_calls(chat: &ChatDouble, calls: usize) {
    for _ in 0..500 {
        if chat.seen.lock().unwrap().metadata.len() >= calls {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the calls did not reach chat");
}

#[sqlx::test(migrations = "../migrations")]
async fn calls_on_an_upstream_that_dies_end_with_unavailable_native_and_grpc_web(db: PgPool) {
    let (chat_addr, chat) = spawn_chat_double().await;
    let replica = testkit::Relay::start(chat_addr).await;
    let stack = stack_with_one_chat_connection(db, Some(replica.addr)).await;
    let token = stack.access_token("alice").await;
    let mut stream = open_subscription(&stack.channel, &token, "c1").await;
    let slow_send = tokio::spawn({
        let mut chat = ChatServiceClient::new(stack.channel.clone());
        let request = with_token(send_request("slow"), &token);
        async move { chat.send_message(request).await }
    });
    let grpc_web_stream = tokio::spawn({
        let gateway = stack.gateway;
        let authorization = format!("\r\nauthorization: Bearer {token}");
        async move {
            let body = grpc_web::frame(&subscribe_request(&["c2"]).encode_to_vec());
            grpc_web::call(
                gateway,
                "/chat.v1.ChatService/Subscribe",
                "application/grpc-web+proto",
                &authorization,
                &body,
            )
            .await
        }
    });
    wait_for_calls(&chat, 3).await;

    replica.kill();
    let stream_end = stream.next().await.unwrap();
    let slow_send = slow_send.await.unwrap();
    let grpc_web_stream = grpc_web_stream.await.unwrap();

    let status = stream_end.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = slow_send.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        grpc_web_stream.status().code(),
        Code::Unavailable,
        "{grpc_web_stream:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn when_one_of_two_replicas_dies_its_streams_end_with_unavailable_and_retries_reach_the_other(
    db: PgPool,
) {
    let (first_addr, first) = spawn_chat_double().await;
    let (second_addr, second) = spawn_chat_double().await;
    let (first_replica, second_replica) = (
        testkit::Relay::start(first_addr).await,
        testkit::Relay::start(second_addr).await,
    );
    let replicas: gateway::UpstreamUrls = format!(
        "http://{},http://{}",
        first_replica.addr, second_replica.addr
    )
    .parse()
    .unwrap();
    let stack = spawn_stack_with(db, auth::Config::for_tests(), move |mut config| {
        config.upstreams.chat = replicas;
        config
    })
    .await;
    let token = stack.access_token("alice").await;
    let mut streams = Vec::new();
    for index in 0..8 {
        streams.push(open_subscription(&stack.channel, &token, &format!("c{index}")).await);
    }
    let on_first = first.seen.lock().unwrap().metadata.len();
    let on_second = second.seen.lock().unwrap().metadata.len();
    assert!(on_first > 0 && on_second > 0, "{on_first} and {on_second}");

    first_replica.kill();
    let mut ended = Vec::new();
    for stream in &mut streams {
        if let Ok(end) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            ended.push(end.unwrap().unwrap_err());
        }
    }
    let retried = ChatServiceClient::new(stack.channel.clone())
        .send_message(with_token(send_request("retried"), &token))
        .await;

    assert_eq!(ended.len(), on_first, "{ended:?}");
    for status in &ended {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    assert_eq!(retried.unwrap().into_inner().message_id, "retried");
}
