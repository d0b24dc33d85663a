use std::time::{Duration, Instant};

use futures::future::join_all;
use proto::{
    auth::v1 as auth_pb,
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
};
use sqlx::PgPool;
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::helpers::{PASSWORD, spawn_stack, spawn_stack_with, subscribe_request, with_token};

fn typing_conversation(event: &chat_pb::StreamEvent) -> String {
    match &event.event {
        Some(chat_pb::stream_event::Event::Typing(typing)) => typing.conversation_id.clone(),
        other => panic!("expected a typing event, got {other:?}"),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn register_login_and_an_authenticated_call_go_through_to_auth(db: PgPool) {
    let stack = spawn_stack(db).await;

    let token = stack.access_token("alice").await;
    let me = stack
        .auth
        .clone()
        .get_current_user(with_token(auth_pb::GetCurrentUserRequest {}, &token))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(me.user.unwrap().username, "alice");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_call_without_a_valid_token_is_refused_before_reaching_the_upstream(db: PgPool) {
    let stack = spawn_stack(db).await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());

    let missing = chat
        .send_message(chat_pb::SendMessageRequest::default())
        .await
        .unwrap_err();
    let garbage = chat
        .send_message(with_token(
            chat_pb::SendMessageRequest::default(),
            "not.a.token",
        ))
        .await
        .unwrap_err();

    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(garbage.code(), Code::Unauthenticated);
    assert!(
        stack.chat.seen.lock().unwrap().metadata.is_empty(),
        "nothing reached chat"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn upstream_errors_keep_their_code_message_and_details(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("bob").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());
    let request = chat_pb::SendMessageRequest {
        envelope: Some(chat_pb::Envelope {
            conversation_id: "fail".into(),
            ..Default::default()
        }),
    };

    let status = chat
        .send_message(with_token(request, &token))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "devices changed");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "DEVICE_LIST_MISMATCH");
}

#[sqlx::test(migrations = "../migrations")]
async fn forged_identity_headers_never_reach_the_upstream(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("carol").await;
    let mut request = with_token(chat_pb::SendMessageRequest::default(), &token);
    for name in [
        "x-user-id",
        "x-forwarded-for",
        "x-internal-caller",
        "x-real-ip",
    ] {
        request
            .metadata_mut()
            .insert(name, "forged".parse().unwrap());
    }

    ChatServiceClient::new(stack.channel.clone())
        .send_message(request)
        .await
        .unwrap();

    let seen = stack.chat.seen.lock().unwrap();
    let metadata = seen.metadata.last().unwrap();
    assert!(metadata.get("x-user-id").is_none());
    assert!(metadata.get("x-internal-caller").is_none());
    assert!(metadata.get("x-real-ip").is_none());
    assert_eq!(metadata.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert!(
        metadata.get("authorization").is_some(),
        "the upstream validates the token again"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_server_stream_is_proxied_and_cancelling_it_cancels_the_upstream(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("dave").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());

    let mut stream = chat
        .subscribe(with_token(subscribe_request(&["c1", "c2", "c3"]), &token))
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(typing_conversation(
            &stream.next().await.unwrap().unwrap().event.unwrap(),
        ));
    }
    drop(stream);

    assert_eq!(received, ["c1", "c2", "c3"]);
    for _ in 0..100 {
        if stack.chat.seen.lock().unwrap().cancelled_streams == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream stream was not cancelled");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_server_stream_ends_with_unavailable_as_soon_as_the_gateway_starts_draining(db: PgPool) {
    let drain = Duration::from_secs(30);
    let mut stack = spawn_stack_with(db, auth::Config::for_tests(), |mut config| {
        config.server.shutdown_timeout = drain;
        config
    })
    .await;
    let token = stack.access_token("frank").await;
    let mut stream = ChatServiceClient::new(stack.channel.clone())
        .subscribe(with_token(subscribe_request(&["c1"]), &token))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();

    stack.stop_gateway();
    let started = Instant::now();
    let ended = loop {
        match stream.next().await {
            Some(Ok(_)) => {}
            other => break other,
        }
    };

    // Without it, the stream would stay open until the drain timed out and then be cut.
    let status = ended.expect("a status").unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < drain / 3, "{:?}", started.elapsed());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_bidirectional_stream_is_proxied_message_by_message(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("erin").await;
    let (requests, outgoing) = tokio::sync::mpsc::channel(4);
    let mut chat = ChatServiceClient::new(stack.channel.clone());
    // As chat, the double reads the first request before it answers.
    requests
        .send(chat_pb::OpenStreamRequest {
            request: Some(chat_pb::open_stream_request::Request::Start(
                chat_pb::StartStream::default(),
            )),
        })
        .await
        .unwrap();

    let mut responses = chat
        .open_stream(with_token(
            tokio_stream::wrappers::ReceiverStream::new(outgoing),
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut echoed = Vec::new();
    for conversation in ["a", "b", "c"] {
        let typing = chat_pb::StreamTyping {
            conversation_id: conversation.into(),
        };
        requests
            .send(chat_pb::OpenStreamRequest {
                request: Some(chat_pb::open_stream_request::Request::Typing(typing)),
            })
            .await
            .unwrap();
        // Each answer arrives before the next request is sent: nothing is buffered whole.
        let response = responses.next().await.unwrap().unwrap();
        match response.response {
            Some(chat_pb::open_stream_response::Response::Event(event)) => {
                echoed.push(typing_conversation(&event))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    assert_eq!(echoed, ["a", "b", "c"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_thousand_concurrent_streams_are_each_proxied_correctly(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("frank").await;
    // Clients spread over a few connections, as real ones would be.
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(testkit::connect(stack.gateway).await);
    }

    let streams = join_all((0..1000).map(|i| {
        let mut chat = ChatServiceClient::new(channels[i % channels.len()].clone());
        let token = token.clone();
        async move {
            let conversation = format!("stream-{i}");
            let mut stream = chat
                .subscribe(with_token(subscribe_request(&[&conversation]), &token))
                .await
                .unwrap()
                .into_inner();
            let first = stream.next().await.unwrap().unwrap();
            (
                conversation,
                typing_conversation(&first.event.unwrap()),
                stream,
            )
        }
    }))
    .await;

    assert_eq!(streams.len(), 1000);
    for (sent, received, _open) in &streams {
        assert_eq!(sent, received);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_dead_upstream_answers_unavailable_quickly(db: PgPool) {
    let stack = spawn_stack_with(db, auth::Config::for_tests(), |mut config| {
        config.upstreams.group = "http://127.0.0.1:1".parse().unwrap();
        config
    })
    .await;
    let token = stack.access_token("grace").await;
    let mut group =
        proto::group::v1::group_service_client::GroupServiceClient::new(stack.channel.clone());
    let started = Instant::now();

    let status = group
        .list_my_groups(with_token(
            proto::group::v1::ListMyGroupsRequest::default(),
            &token,
        ))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_client_deadline_reaches_the_upstream_and_ends_the_call_in_time(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("heidi").await;
    let mut request = with_token(
        chat_pb::SendMessageRequest {
            envelope: Some(chat_pb::Envelope {
                conversation_id: "slow".into(),
                ..Default::default()
            }),
        },
        &token,
    );
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = Instant::now();

    let status = ChatServiceClient::new(stack.channel.clone())
        .send_message(request)
        .await
        .unwrap_err();

    // The upstream (which would take 5 s) gives up at the deadline it was handed.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let seen = stack.chat.seen.lock().unwrap();
    assert_eq!(
        seen.metadata.last().unwrap().get("grpc-timeout").unwrap(),
        "300m"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_ends_with_unauthenticated_when_its_token_expires(db: PgPool) {
    let mut auth_config = auth::Config::for_tests();
    auth_config.tokens.access_token_ttl = Duration::from_secs(2);
    let stack = spawn_stack_with(db, auth_config, |config| config).await;
    let token = stack.access_token("ivan").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());
    let mut stream = chat
        .subscribe(with_token(subscribe_request(&["c1"]), &token))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();

    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();

    let status = end.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn logins_past_the_per_address_rate_are_resource_exhausted_with_retry_info(db: PgPool) {
    let stack = spawn_stack_with(db, auth::Config::for_tests(), |mut config| {
        config.limits.login_rate_per_minute = 2;
        config
    })
    .await;
    let login = || {
        let mut auth = stack.auth.clone();
        async move {
            auth.login(auth_pb::LoginRequest {
                username: "nobody".into(),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await
        }
    };

    let first = login().await.unwrap_err();
    let second = login().await.unwrap_err();
    let third = login().await.unwrap_err();

    assert_eq!(
        (first.code(), second.code()),
        (Code::Unauthenticated, Code::Unauthenticated)
    );
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(third.get_error_details().retry_info().is_some());
}

#[sqlx::test(migrations = "../migrations")]
async fn public_calls_past_the_per_address_rate_are_resource_exhausted_but_health_is_not(
    db: PgPool,
) {
    let stack = spawn_stack_with(db, auth::Config::for_tests(), |mut config| {
        config.limits.public_rate_per_second = 1;
        config
    })
    .await;
    let get_jwks = || {
        let mut auth = stack.auth.clone();
        async move { auth.get_jwks(auth_pb::GetJwksRequest {}).await.map(drop) }
    };
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            stack.channel.clone(),
        );
    let mut health = tonic_health::pb::health_client::HealthClient::new(stack.channel.clone());

    // A burst of twice the rate, then refused.
    let (first, second, third) = (get_jwks().await, get_jwks().await, get_jwks().await);
    let reflected = reflection
        .server_reflection_info(tokio_stream::iter([
            tonic_reflection::pb::v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                        String::new(),
                    ),
                ),
            },
        ]))
        .await;
    let checked = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    let token = stack.access_token("mallory").await;
    let me = stack
        .auth
        .clone()
        .get_current_user(with_token(auth_pb::GetCurrentUserRequest {}, &token))
        .await;

    assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    let third = third.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(third.get_error_details().retry_info().is_some());
    assert_eq!(reflected.unwrap_err().code(), Code::ResourceExhausted);
    assert!(checked.is_ok(), "health is not limited: {checked:?}");
    assert!(me.is_ok(), "calls with a token are not limited: {me:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn internal_services_are_not_reachable_through_the_gateway(db: PgPool) {
    let stack = spawn_stack(db).await;
    let token = stack.access_token("judy").await;
    let mut internal =
        proto::auth::internal::v1::auth_internal_service_client::AuthInternalServiceClient::new(
            stack.channel.clone(),
        );

    let status = internal
        .get_active_devices(with_token(
            proto::auth::internal::v1::GetActiveDevicesRequest::default(),
            &token,
        ))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status.message().contains("unknown method"),
        "{}",
        status.message()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_registers_logs_in_and_calls_with_a_bearer_token_through_the_gateway(db: PgPool) {
    let stack = spawn_stack(db).await;
    let gateway = stack.gateway;
    let credentials = r#"{"username":"kate","password":"correct horse battery staple"}"#;

    let (register, login, refused, me) = tokio::task::spawn_blocking(move || {
        let register = testkit::grpcurl(
            &["-d", credentials],
            gateway,
            &["auth.v1.AuthService/Register"],
        );
        let login = testkit::grpcurl(
            &["-d", credentials],
            gateway,
            &["auth.v1.AuthService/Login"],
        );
        let login_json: serde_json::Value = serde_json::from_str(&login.stdout).unwrap();
        let token = login_json["tokens"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let refused = testkit::grpcurl(&[], gateway, &["auth.v1.AuthService/GetCurrentUser"]);
        let header = format!("authorization: Bearer {token}");
        let me = testkit::grpcurl(
            &["-H", &header],
            gateway,
            &["auth.v1.AuthService/GetCurrentUser"],
        );
        (register, login, refused, me)
    })
    .await
    .unwrap();

    assert!(register.success, "{}", register.stderr);
    assert!(login.success, "{}", login.stderr);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("Unauthenticated"),
        "{}",
        refused.stderr
    );
    assert!(me.success, "{}", me.stderr);
    assert!(
        me.stdout.contains("\"username\": \"kate\""),
        "{}",
        me.stdout
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_grpc_web_unary_call_over_http1_reaches_auth(db: PgPool) {
    let stack = spawn_stack(db).await;
    // GetJwksRequest is empty: one uncompressed gRPC-Web frame of length 0.
    let frame = [0u8, 0, 0, 0, 0];

    let response = crate::helpers::http1_request(
        stack.gateway,
        "POST /auth.v1.AuthService/GetJwks HTTP/1.1\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1",
        &frame,
    )
    .await;

    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Ed25519"), "{text}");
    assert!(text.contains("grpc-status:0"), "{text}");
    let _ = Request::new(());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_grpc_web_text_call_whose_body_has_a_content_length_reaches_auth(db: PgPool) {
    let stack = spawn_stack(db).await;
    // An empty GetJwksRequest frame, base64: what the grpc-web JavaScript client sends by default.
    let body = b"AAAAAAA=";

    let response = crate::helpers::http1_request(
        stack.gateway,
        "POST /auth.v1.AuthService/GetJwks HTTP/1.1\r\ncontent-type: application/grpc-web-text\r\nx-grpc-web: 1",
        body,
    )
    .await;

    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Ed25519"), "{text}");
    assert!(text.contains("grpc-status:0"), "{text}");
}

fn envelope_request(conversation_id: &str, ciphertext_bytes: usize) -> chat_pb::SendMessageRequest {
    chat_pb::SendMessageRequest {
        envelope: Some(chat_pb::Envelope {
            conversation_id: conversation_id.into(),
            ciphertext: vec![7; ciphertext_bytes],
            ..Default::default()
        }),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_message_over_the_size_limit_is_resource_exhausted_and_a_smaller_one_passes(db: PgPool) {
    let stack = spawn_stack_with(db, auth::Config::for_tests(), |mut config| {
        config.limits.max_message_bytes = 64 * 1024;
        config
    })
    .await;
    let token = stack.access_token("liam").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());

    let small = chat
        .send_message(with_token(envelope_request("small", 60 * 1024), &token))
        .await;
    let large = chat
        .send_message(with_token(envelope_request("large", 65 * 1024), &token))
        .await;

    assert_eq!(small.unwrap().into_inner().message_id, "small");
    let status = large.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("65536 bytes"),
        "{}",
        status.message()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn sends_past_the_per_user_rate_are_resource_exhausted(db: PgPool) {
    let stack = spawn_stack_with(db, auth::Config::for_tests(), |mut config| {
        config.limits.send_rate_per_second = 1;
        config
    })
    .await;
    let token = stack.access_token("mia").await;
    let other = stack.access_token("noah").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());

    for _ in 0..2 {
        chat.send_message(with_token(envelope_request("c", 1), &token))
            .await
            .unwrap();
    }
    let third = chat
        .send_message(with_token(envelope_request("c", 1), &token))
        .await;
    let someone_else = chat
        .send_message(with_token(envelope_request("c", 1), &other))
        .await;

    let status = third.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_error_details().retry_info().is_some());
    someone_else.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn forwarding_keys_past_the_per_user_rate_is_resource_exhausted_for_that_user_only(
    db: PgPool,
) {
    let stack = spawn_stack_with(db, auth::Config::for_tests(), |mut config| {
        config.limits.forward_keys_rate_per_second = 1;
        config
    })
    .await;
    let token = stack.access_token("olga").await;
    let other = stack.access_token("piet").await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());
    let forward = || chat_pb::ForwardKeysRequest {
        conversation_id: "c".into(),
        keys: Vec::new(),
    };

    // A rate of 1 per second allows a burst of 20.
    for _ in 0..20 {
        chat.forward_keys(with_token(forward(), &token))
            .await
            .unwrap();
    }
    let over = chat.forward_keys(with_token(forward(), &token)).await;
    let someone_else = chat.forward_keys(with_token(forward(), &other)).await;

    let status = over.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_error_details().retry_info().cloned();
    let retry_delay = retry.and_then(|retry| retry.retry_delay);
    assert!(
        retry_delay
            .is_some_and(|delay| delay > std::time::Duration::ZERO
                && delay <= std::time::Duration::from_secs(1)),
        "{retry_delay:?}"
    );
    someone_else.unwrap();
}
