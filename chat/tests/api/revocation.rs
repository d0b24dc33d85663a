//! Revocation takes effect everywhere, long before the access token expires: after each of the
//! four ways of revoking (Logout, LogoutEverywhere, RevokeDevice, refresh-token reuse), auth,
//! chat and group refuse the revoked token, called directly and through the gateway; open
//! Subscribe and OpenStream calls of it end with UNAUTHENTICATED; and a token of another session
//! keeps working. The bound (README, limits table) is not timed here: the test polls, with a
//! generous timeout.

use std::{net::SocketAddr, time::Duration};

use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1 as pb,
    group::v1::{self as group_pb, group_service_client::GroupServiceClient},
};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tonic::{Code, Status, transport::Channel};

use crate::{
    gateway::spawn_gateway,
    helpers::BidiStream,
    helpers::{TestApp, TestDevice, replay, spawn_app, with_token},
};

/// Longest wait for a refusal; far above the documented bound, so that a slow machine passes.
const PATIENCE: Duration = Duration::from_secs(30);

/// The app, and the gateway in front of it.
struct Stack {
    app: TestApp,
    gateway: SocketAddr,
}

impl Stack {
    async fn start(db: PgPool) -> Self {
        let app = spawn_app(db).await;
        let gateway = spawn_gateway(&app).await;
        Self { app, gateway }
    }

    /// Auth, chat and group, each directly and through the gateway.
    async fn endpoints(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![
            ("auth", self.app.auth_addr),
            ("chat", self.app.addr),
            ("group", self.app.group_addr),
            ("gateway", self.gateway),
        ]
    }

    /// One authenticated call to each service at each endpoint with `token`: `(what, result)`.
    async fn call_everything(&self, token: &str) -> Vec<(String, Result<(), Status>)> {
        let mut results = Vec::new();
        for (name, addr) in self.endpoints().await {
            let channel = testkit::connect(addr).await;
            if name == "auth" || name == "gateway" {
                results.push((
                    format!("auth via {name}"),
                    list_devices(&channel, token).await,
                ));
            }
            if name == "chat" || name == "gateway" {
                let result = list_conversations(&channel, token).await;
                results.push((format!("chat via {name}"), result));
            }
            if name == "group" || name == "gateway" {
                results.push((
                    format!("group via {name}"),
                    list_groups(&channel, token).await,
                ));
            }
        }
        results
    }

    /// Polls until every service refuses `token` with UNAUTHENTICATED, directly and through the
    /// gateway.
    async fn wait_until_refused_everywhere(&self, token: &str) {
        let started = tokio::time::Instant::now();
        loop {
            let results = self.call_everything(token).await;
            let accepted: Vec<_> = results
                .iter()
                .filter(|(_, result)| {
                    !matches!(result, Err(status) if status.code() == Code::Unauthenticated)
                })
                .collect();
            if accepted.is_empty() {
                for (what, result) in &results {
                    let status = result.as_ref().unwrap_err();
                    assert_eq!(
                        status.message(),
                        "access token revoked; sign in again",
                        "{what}"
                    );
                }
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "still not refused after {PATIENCE:?}: {accepted:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every service accepts `token`, directly and through the gateway.
    async fn assert_accepted_everywhere(&self, token: &str) {
        // Right after start the services may still be fetching keys (UNAVAILABLE): retry those.
        let started = tokio::time::Instant::now();
        loop {
            let results = self.call_everything(token).await;
            let unavailable = results.iter().any(
                |(_, result)| matches!(result, Err(status) if status.code() == Code::Unavailable),
            );
            if !unavailable || started.elapsed() > PATIENCE {
                for (what, result) in results {
                    assert!(result.is_ok(), "{what}: {result:?}");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn list_devices(channel: &Channel, token: &str) -> Result<(), Status> {
    AuthServiceClient::new(channel.clone())
        .list_devices(with_token(auth_pb::ListDevicesRequest {}, token))
        .await
        .map(drop)
}

async fn list_conversations(channel: &Channel, token: &str) -> Result<(), Status> {
    pb::chat_service_client::ChatServiceClient::new(channel.clone())
        .list_conversations(with_token(pb::ListConversationsRequest::default(), token))
        .await
        .map(drop)
}

async fn list_groups(channel: &Channel, token: &str) -> Result<(), Status> {
    GroupServiceClient::new(channel.clone())
        .list_my_groups(with_token(group_pb::ListMyGroupsRequest::default(), token))
        .await
        .map(drop)
}

/// The open streams of one token: Subscribe to chat directly, Subscribe and OpenStream through
/// the gateway, each past its replay.
struct OpenStreams {
    direct: tonic::Streaming<pb::SubscribeResponse>,
    subscribe: tonic::Streaming<pb::SubscribeResponse>,
    open_stream: tonic::Streaming<pb::OpenStreamResponse>,
    _requests: mpsc::Sender<pb::OpenStreamRequest>,
}

impl OpenStreams {
    async fn open(device: &TestDevice, gateway: SocketAddr) -> Self {
        let mut direct = device.subscribe_when_ready().await;
        replay(&mut direct).await;
        let through_gateway = device.on_replica(gateway).await;
        let mut subscribe = through_gateway.subscribe_when_ready().await;
        replay(&mut subscribe).await;
        let BidiStream {
            requests,
            responses: mut open_stream,
        } = BidiStream::open(&through_gateway, Vec::new()).await;
        loop {
            let response = next_within_patience(open_stream.message()).await.unwrap();
            if let Some(pb::open_stream_response::Response::Event(pb::StreamEvent {
                event: Some(pb::stream_event::Event::CaughtUp(_)),
            })) = response.and_then(|response| response.response)
            {
                break;
            }
        }
        Self {
            direct,
            subscribe,
            open_stream,
            _requests: requests,
        }
    }

    /// Every stream ends with UNAUTHENTICATED (after whatever heartbeats were on their way).
    async fn assert_all_end_unauthenticated(mut self) {
        for (what, end) in [
            ("Subscribe to chat", end_of(&mut self.direct).await),
            (
                "Subscribe via the gateway",
                end_of(&mut self.subscribe).await,
            ),
            (
                "OpenStream via the gateway",
                end_of(&mut self.open_stream).await,
            ),
        ] {
            let status = end.expect_err(what);
            assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        }
    }
}

/// Reads `stream` to its end: `Ok` if it ended without an error, else the error.
async fn end_of<T>(stream: &mut tonic::Streaming<T>) -> Result<(), Status> {
    next_within_patience(async {
        while stream.message().await?.is_some() {}
        Ok(())
    })
    .await
}

async fn next_within_patience<T>(next: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, next)
        .await
        .expect("within the test's patience")
}

/// A new session of `device`'s device (a login of `username` that resumes it), with its token
/// pair.
async fn another_session_of(
    app: &TestApp,
    username: &str,
    device: &TestDevice,
) -> auth_pb::TokenPair {
    app.auth
        .clone()
        .login(auth_pb::LoginRequest {
            username: username.to_owned(),
            password: testkit::PASSWORD.to_owned(),
            device_id: device.device_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn after_logout_the_session_is_refused_everywhere_and_its_streams_end(db: PgPool) {
    let stack = Stack::start(db).await;
    let alice = stack.app.user("alice").await;
    let alices_laptop = stack.app.device("alice").await;
    stack.assert_accepted_everywhere(&alice.token).await;
    let streams = OpenStreams::open(&alice, stack.gateway).await;

    AuthServiceClient::new(testkit::connect(stack.gateway).await)
        .logout(alice.request(auth_pb::LogoutRequest {}))
        .await
        .unwrap();

    stack.wait_until_refused_everywhere(&alice.token).await;
    streams.assert_all_end_unauthenticated().await;
    stack.assert_accepted_everywhere(&alices_laptop.token).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn after_logout_everywhere_every_session_of_the_user_is_refused_and_others_work(db: PgPool) {
    let stack = Stack::start(db).await;
    let alice = stack.app.user("alice").await;
    let alices_laptop = stack.app.device("alice").await;
    let bob = stack.app.user("bob").await;
    stack.assert_accepted_everywhere(&alice.token).await;
    let streams = OpenStreams::open(&alices_laptop, stack.gateway).await;

    AuthServiceClient::new(testkit::connect(stack.gateway).await)
        .logout_everywhere(alice.request(auth_pb::LogoutEverywhereRequest {}))
        .await
        .unwrap();

    stack.wait_until_refused_everywhere(&alice.token).await;
    stack
        .wait_until_refused_everywhere(&alices_laptop.token)
        .await;
    streams.assert_all_end_unauthenticated().await;
    stack.assert_accepted_everywhere(&bob.token).await;
    let signed_in_again = another_session_of(&stack.app, "alice", &alice).await;
    stack
        .assert_accepted_everywhere(&signed_in_again.access_token)
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn after_revoke_device_every_session_of_the_device_is_refused_and_its_streams_end(
    db: PgPool,
) {
    let stack = Stack::start(db).await;
    let alice = stack.app.user("alice").await;
    let same_device_other_session = another_session_of(&stack.app, "alice", &alice).await;
    let alices_laptop = stack.app.device("alice").await;
    stack.assert_accepted_everywhere(&alice.token).await;
    let streams = OpenStreams::open(&alice, stack.gateway).await;

    AuthServiceClient::new(testkit::connect(stack.gateway).await)
        .revoke_device(alices_laptop.request(auth_pb::RevokeDeviceRequest {
            device_id: alice.device_id.clone(),
        }))
        .await
        .unwrap();

    stack.wait_until_refused_everywhere(&alice.token).await;
    stack
        .wait_until_refused_everywhere(&same_device_other_session.access_token)
        .await;
    streams.assert_all_end_unauthenticated().await;
    stack.assert_accepted_everywhere(&alices_laptop.token).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn after_refresh_token_reuse_the_session_is_refused_but_its_devices_other_session_works(
    db: PgPool,
) {
    let stack = Stack::start(db).await;
    let alice = stack.app.user("alice").await;
    let stolen = another_session_of(&stack.app, "alice", &alice).await;
    let stolen_session = TestDevice {
        token: stolen.access_token.clone(),
        ..alice.clone()
    };
    stack.assert_accepted_everywhere(&stolen.access_token).await;
    let streams = OpenStreams::open(&stolen_session, stack.gateway).await;
    let mut auth = AuthServiceClient::new(testkit::connect(stack.gateway).await);
    let refresh = |refresh_token: String| auth_pb::RefreshRequest { refresh_token };

    // The thief refreshes first; the owner's client presents the same refresh token again.
    let successor = auth
        .refresh(refresh(stolen.refresh_token.clone()))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    auth.refresh(refresh(successor.refresh_token))
        .await
        .unwrap();
    let reused = auth.refresh(refresh(stolen.refresh_token)).await;
    assert_eq!(reused.unwrap_err().code(), Code::Unauthenticated);

    stack
        .wait_until_refused_everywhere(&stolen.access_token)
        .await;
    stack
        .wait_until_refused_everywhere(&successor.access_token)
        .await;
    streams.assert_all_end_unauthenticated().await;
    stack.assert_accepted_everywhere(&alice.token).await;
}
