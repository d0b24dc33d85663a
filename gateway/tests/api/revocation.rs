//! Revocation at the gateway itself, in front of real auth and the chat double (which checks no
//! token): a revoked session's token is refused before any upstream call, and an open server
//! stream of it ends with UNAUTHENTICATED (native gRPC and gRPC-Web), cancelling the upstream
//! call, while another session's calls keep going through. Without auth the gateway fails closed
//! (UNAVAILABLE) after its maximum staleness, and once auth is back it refuses what was revoked
//! meanwhile.

use std::time::Duration;

use prost::Message as _;
use proto::{
    auth::v1 as auth_pb,
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
};
use sqlx::PgPool;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::{PASSWORD, Stack, http1_request, login, spawn_stack, with_token};

/// Longest wait for the revocation to arrive; far above the documented bound.
const PATIENCE: Duration = Duration::from_secs(30);

/// Two sessions of alice: (the one to revoke, another).
async fn two_sessions(stack: &Stack) -> (String, String) {
    let first = stack.access_token("alice").await;
    let second = login(&stack.auth, "alice").await;
    (first, second)
}

async fn logout(stack: &Stack, token: &str) {
    stack
        .auth
        .clone()
        .logout(with_token(auth_pb::LogoutRequest {}, token))
        .await
        .unwrap();
}

fn send(token: &str) -> tonic::Request<chat_pb::SendMessageRequest> {
    with_token(chat_pb::SendMessageRequest::default(), token)
}

fn calls_seen_by_chat(stack: &Stack) -> usize {
    stack.chat.seen.lock().unwrap().metadata.len()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_revoked_sessions_token_is_refused_before_reaching_the_upstream(db: PgPool) {
    let stack = spawn_stack(db).await;
    let (revoked, other) = two_sessions(&stack).await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());
    chat.send_message(send(&revoked)).await.unwrap();

    logout(&stack, &revoked).await;
    let refused = tokio::time::timeout(PATIENCE, async {
        loop {
            match chat.send_message(send(&revoked)).await {
                Err(status) if status.code() == Code::Unauthenticated => return status,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("the gateway refuses the revoked token");
    let seen = calls_seen_by_chat(&stack);
    let again = chat.send_message(send(&revoked)).await.unwrap_err();

    assert_eq!(refused.message(), "access token revoked; sign in again");
    assert_eq!(again.code(), Code::Unauthenticated);
    assert_eq!(calls_seen_by_chat(&stack), seen, "nothing reached chat");
    chat.send_message(send(&other)).await.unwrap();
    assert_eq!(calls_seen_by_chat(&stack), seen + 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_open_stream_of_a_revoked_session_ends_unauthenticated_and_its_upstream_call_is_cancelled(
    db: PgPool,
) {
    let stack = spawn_stack(db).await;
    let (revoked, other) = two_sessions(&stack).await;
    let mut chat = ChatServiceClient::new(stack.channel.clone());
    let subscribe = |token: &str| {
        with_token(
            chat_pb::SubscribeRequest {
                positions: vec![chat_pb::ConversationPosition {
                    conversation_id: "c1".into(),
                    sequence: 0,
                }],
            },
            token,
        )
    };
    let mut doomed = chat
        .subscribe(subscribe(&revoked))
        .await
        .unwrap()
        .into_inner();
    let mut kept = chat
        .subscribe(subscribe(&other))
        .await
        .unwrap()
        .into_inner();
    doomed.next().await.unwrap().unwrap();
    kept.next().await.unwrap().unwrap();

    logout(&stack, &revoked).await;
    // The double never ends a stream by itself: only the gateway can.
    let end = tokio::time::timeout(PATIENCE, doomed.next())
        .await
        .expect("the stream ends");

    let status = end.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "access token revoked; sign in again");
    tokio::time::timeout(PATIENCE, async {
        while stack.chat.seen.lock().unwrap().cancelled_streams == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upstream stream is cancelled");
    assert_eq!(stack.chat.seen.lock().unwrap().cancelled_streams, 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), kept.next())
            .await
            .is_err(),
        "the other session's stream stays open"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_grpc_web_stream_of_a_revoked_session_ends_with_unauthenticated_trailers(db: PgPool) {
    let stack = spawn_stack(db).await;
    let (revoked, _) = two_sessions(&stack).await;
    let request = chat_pb::SubscribeRequest::default().encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&request);
    let head = format!(
        "POST /chat.v1.ChatService/Subscribe HTTP/1.1\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nauthorization: Bearer {revoked}"
    );
    let seen = calls_seen_by_chat(&stack);
    let gateway = stack.gateway;
    let response = tokio::spawn(async move { http1_request(gateway, &head, &body).await });
    tokio::time::timeout(PATIENCE, async {
        while calls_seen_by_chat(&stack) == seen {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stream reaches chat");

    logout(&stack, &revoked).await;
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("the response ends")
        .unwrap();

    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("grpc-status:16"), "{response}");
    assert!(
        response.contains("grpc-message:access%20token%20revoked"),
        "{response}"
    );
}

/// One auth replica on a fixed loopback address, which the test can stop and start again.
struct AuthReplica {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl AuthReplica {
    async fn start(db: &PgPool, config: &auth::Config, addr: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(auth::run(config.clone(), db.clone(), listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            server: Some(server),
        }
    }

    async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

/// Polls `call` until it fails with `code`, for at most [`PATIENCE`].
async fn until_code<F, Fut>(code: Code, mut call: F) -> tonic::Status
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    tokio::time::timeout(PATIENCE, async {
        loop {
            match call().await {
                Err(status) if status.code() == code => return status,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {code:?} within {PATIENCE:?}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn without_auth_the_gateway_fails_closed_and_once_back_refuses_what_was_revoked_meanwhile(
    db: PgPool,
) {
    // Two auth replicas of one deployment; the gateway knows only the first.
    let auth_config = auth::Config::for_tests();
    let mut followed = AuthReplica::start(&db, &auth_config, "127.0.0.1:0".parse().unwrap()).await;
    let other = AuthReplica::start(&db, &auth_config, "127.0.0.1:0".parse().unwrap()).await;
    let (chat_addr, double) = crate::chat_double::spawn_chat_double().await;
    let uri = |addr: std::net::SocketAddr| format!("http://{addr}").parse().unwrap();
    let mut config = gateway::Config::for_tests(crate::helpers::upstreams(
        &uri(followed.addr),
        &uri(chat_addr),
        &"http://127.0.0.1:1".parse().unwrap(),
    ));
    config.revocation_max_staleness = Duration::from_secs(2);
    let gateway = crate::helpers::spawn_gateway(config).await;
    let channel = testkit::connect(gateway.addr).await;
    let mut other_auth = proto::auth::v1::auth_service_client::AuthServiceClient::new(
        testkit::connect(other.addr).await,
    );
    other_auth
        .register(auth_pb::RegisterRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await
        .unwrap();
    let (revoked, kept) = (
        login(&other_auth, "alice").await,
        login(&other_auth, "alice").await,
    );
    let chat = ChatServiceClient::new(channel.clone());
    let call = |token: &str| {
        let (mut chat, request) = (chat.clone(), send(token));
        async move { chat.send_message(request).await.map(drop) }
    };
    tokio::time::timeout(PATIENCE, async {
        while call(&kept).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway becomes ready");
    let mut stream = chat
        .clone()
        .subscribe(with_token(chat_pb::SubscribeRequest::default(), &kept))
        .await
        .unwrap()
        .into_inner();

    followed.stop().await;
    let unavailable = until_code(Code::Unavailable, || call(&kept)).await;
    let stream_end = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the open stream ends too")
        .unwrap()
        .unwrap_err();
    // Revoked on the other replica while the gateway cannot hear about it.
    other_auth
        .logout(with_token(auth_pb::LogoutRequest {}, &revoked))
        .await
        .unwrap();
    let seen = double.seen.lock().unwrap().metadata.len();
    let _followed_again = AuthReplica::start(&db, &auth_config, followed.addr).await;
    let refused = until_code(Code::Unauthenticated, || call(&revoked)).await;

    assert_eq!(
        unavailable.message(),
        "cannot check access token revocations right now; retry shortly"
    );
    assert_eq!(stream_end.code(), Code::Unavailable);
    assert_eq!(refused.message(), "access token revoked; sign in again");
    call(&kept).await.unwrap();
    assert_eq!(
        double.seen.lock().unwrap().metadata.len(),
        seen + 1,
        "only the kept session's call reached chat after the outage"
    );
}
