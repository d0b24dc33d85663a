//! Revocations: each of the four ways of revoking reaches `WatchRevocations`, auth itself refuses
//! the revoked tokens (this replica at once, another through the outbox), and other sessions keep
//! working.

use std::time::Duration;

use proto::auth::{
    internal::v1::{
        self as internal_pb, auth_internal_service_client::AuthInternalServiceClient,
        watch_revocations_response::Item,
    },
    v1 as pb,
};
use sqlx::PgPool;
use tonic::{Code, Request, Status, Streaming};

use crate::helpers::{
    DEVICE_KEYS, PASSWORD, TestApp, assert_code, spawn_app, spawn_app_with, tokens, with_token,
};

async fn watch_revocations(
    app: &TestApp,
    after_event_id: u64,
) -> Result<Streaming<internal_pb::WatchRevocationsResponse>, Status> {
    let credential = common::service_credential::ServiceCredential::for_tests();
    let request = Request::new(internal_pb::WatchRevocationsRequest { after_event_id });
    AuthInternalServiceClient::new(app.channel.clone())
        .watch_revocations(credential.attach(request))
        .await
        .map(tonic::Response::into_inner)
}

async fn next_item(stream: &mut Streaming<internal_pb::WatchRevocationsResponse>) -> Item {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
        .expect("the stream stays open")
        .item
        .expect("an item")
}

/// The next revocation, skipping heartbeats.
async fn next_revocation(
    stream: &mut Streaming<internal_pb::WatchRevocationsResponse>,
) -> internal_pb::Revocation {
    loop {
        if let Item::Revocation(revocation) = next_item(stream).await {
            return revocation;
        }
    }
}

fn ids(login: &pb::LoginResponse) -> (String, String) {
    (
        login.user.as_ref().unwrap().user_id.clone(),
        login.device.as_ref().unwrap().device_id.clone(),
    )
}

async fn list_devices(app: &TestApp, access_token: &str) -> Result<(), Status> {
    app.client
        .clone()
        .list_devices(with_token(pb::ListDevicesRequest {}, access_token))
        .await
        .map(drop)
}

/// The session id of an access token (its `sid` claim, read without verifying).
fn session_of(access_token: &str) -> String {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn each_way_of_revoking_is_streamed_as_a_revocation_in_commit_order(db: PgPool) {
    let app = spawn_app(db).await;
    let mut revocations = watch_revocations(&app, 0).await.unwrap();
    let first = next_item(&mut revocations).await;
    assert!(
        matches!(first, Item::Heartbeat(_)),
        "caught up at once: {first:?}"
    );
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    let bobs_laptop = app.login("bob", PASSWORD).await.unwrap();
    let carol = app.signed_up("carol").await;
    let carols_phone = app.login("carol", PASSWORD).await.unwrap();
    let dave = app.signed_up("dave").await;
    app.upload_keys(&tokens(&alice).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();

    // Logout.
    app.client
        .clone()
        .logout(with_token(
            pb::LogoutRequest {},
            &tokens(&alice).access_token,
        ))
        .await
        .unwrap();
    // Logout everywhere: both of bob's sessions.
    app.client
        .clone()
        .logout_everywhere(with_token(
            pb::LogoutEverywhereRequest {},
            &tokens(&bob).access_token,
        ))
        .await
        .unwrap();
    // RevokeDevice, from carol's other device.
    let carols_first_device = ids(&carol).1;
    app.client
        .clone()
        .revoke_device(with_token(
            pb::RevokeDeviceRequest {
                device_id: carols_first_device.clone(),
            },
            &tokens(&carols_phone).access_token,
        ))
        .await
        .unwrap();
    // Refresh-token reuse: the first token again once its successor has been used.
    let first_refresh = &tokens(&dave).refresh_token;
    let second = app.refresh(first_refresh).await.unwrap();
    app.refresh(&second.refresh_token).await.unwrap();
    assert_code(app.refresh(first_refresh).await, Code::Unauthenticated);

    let streamed = [
        next_revocation(&mut revocations).await,
        next_revocation(&mut revocations).await,
        next_revocation(&mut revocations).await,
        next_revocation(&mut revocations).await,
        next_revocation(&mut revocations).await,
    ];
    let summary: Vec<(String, String, String)> = streamed
        .iter()
        .map(|r| (r.user_id.clone(), r.device_id.clone(), r.session_id.clone()))
        .collect();
    let session = |login: &pb::LoginResponse| session_of(&tokens(login).access_token);
    let (alice_user, alice_device) = ids(&alice);
    let (bob_user, bob_device) = ids(&bob);
    let (_, bob_laptop_device) = ids(&bobs_laptop);
    let (carol_user, _) = ids(&carol);
    let (dave_user, dave_device) = ids(&dave);
    assert_eq!(
        summary[0],
        (alice_user, alice_device, session(&alice)),
        "logout"
    );
    let mut bobs: Vec<_> = summary[1..3].to_vec();
    bobs.sort();
    let mut expected_bobs = vec![
        (bob_user.clone(), bob_device, session(&bob)),
        (bob_user, bob_laptop_device, session(&bobs_laptop)),
    ];
    expected_bobs.sort();
    assert_eq!(bobs, expected_bobs, "logout everywhere");
    assert_eq!(
        summary[3],
        (carol_user, carols_first_device, String::new()),
        "a revoked device: every session of it"
    );
    assert_eq!(
        summary[4],
        (dave_user, dave_device, session(&dave)),
        "refresh-token reuse"
    );
    assert!(streamed.windows(2).all(|w| w[0].event_id < w[1].event_id));
    assert!(streamed.iter().all(|r| r.revoked_at.is_some()));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_follower_resumes_after_a_heartbeat_without_the_revocations_it_has_seen(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    app.client
        .clone()
        .logout(with_token(
            pb::LogoutRequest {},
            &tokens(&alice).access_token,
        ))
        .await
        .unwrap();
    let mut first = watch_revocations(&app, 0).await.unwrap();
    let seen = next_revocation(&mut first).await;
    let Item::Heartbeat(heartbeat) = next_item(&mut first).await else {
        panic!("a heartbeat after the replay");
    };
    assert!(heartbeat.event_id >= seen.event_id);

    app.client
        .clone()
        .logout(with_token(pb::LogoutRequest {}, &tokens(&bob).access_token))
        .await
        .unwrap();
    let mut resumed = watch_revocations(&app, heartbeat.event_id).await.unwrap();
    let next = next_revocation(&mut resumed).await;

    assert_eq!(next.session_id, session_of(&tokens(&bob).access_token));
}

#[sqlx::test(migrations = "../migrations")]
async fn revocations_need_the_service_credential_and_a_known_cursor(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;

    let with_user_token = AuthInternalServiceClient::new(app.channel.clone())
        .watch_revocations(with_token(
            internal_pb::WatchRevocationsRequest { after_event_id: 0 },
            &tokens(&alice).access_token,
        ))
        .await;
    let past_the_newest = watch_revocations(&app, 1_000_000).await;

    assert_code(with_user_token, Code::Unauthenticated);
    assert_code(past_the_newest, Code::OutOfRange);
}

#[sqlx::test(migrations = "../migrations")]
async fn device_changes_leave_session_revocations_out(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    let credential = common::service_credential::ServiceCredential::for_tests();
    let mut changes = AuthInternalServiceClient::new(app.channel.clone())
        .watch_device_changes(credential.attach(Request::new(
            internal_pb::WatchDeviceChangesRequest {
                after_event_id: 0,
                start_at_newest: true,
                heartbeats: false,
            },
        )))
        .await
        .unwrap()
        .into_inner();

    app.client
        .clone()
        .logout(with_token(
            pb::LogoutRequest {},
            &tokens(&alice).access_token,
        ))
        .await
        .unwrap();
    app.upload_keys(&tokens(&bob).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), changes.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    assert_eq!(
        change.user_id,
        ids(&bob).0,
        "the logout is not a device change"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn auth_refuses_a_revoked_token_at_once_and_another_replica_soon_while_other_sessions_work(
    db: PgPool,
) {
    // Two replicas of one deployment: the same signing key.
    let config = auth::Config::for_tests();
    let app = spawn_app_with(db.clone(), config.clone()).await;
    let other_replica = spawn_app_with(db, config).await;
    let alice = app.signed_up("alice").await;
    let other_session = app.login("alice", PASSWORD).await.unwrap();
    let revoked_token = tokens(&alice).access_token.clone();
    let other_token = tokens(&other_session).access_token.clone();
    list_devices(&other_replica, &revoked_token).await.unwrap();

    app.client
        .clone()
        .logout(with_token(pb::LogoutRequest {}, &revoked_token))
        .await
        .unwrap();

    let status = assert_code(
        list_devices(&app, &revoked_token).await,
        Code::Unauthenticated,
    );
    assert_eq!(status.message(), "access token revoked; sign in again");
    list_devices(&app, &other_token).await.unwrap();
    // The other replica learns it from the outbox: poll until it refuses.
    let mut refused = false;
    for _ in 0..500 {
        let result = list_devices(&other_replica, &revoked_token).await;
        if result.is_err_and(|status| status.code() == Code::Unauthenticated) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the other replica refuses the revoked token");
    list_devices(&other_replica, &other_token).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_follower_starting_afresh_gets_only_the_revocations_that_can_still_refuse_a_token(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    for login in [&alice, &bob] {
        app.client
            .clone()
            .logout(with_token(
                pb::LogoutRequest {},
                &tokens(login).access_token,
            ))
            .await
            .unwrap();
    }
    // Alice logged out an hour ago: every token of her session has long expired.
    sqlx::query(
        "update auth.device_events set created_at = now() - interval '1 hour'
         where session_id = $1::uuid",
    )
    .bind(session_of(&tokens(&alice).access_token))
    .execute(&app.db)
    .await
    .unwrap();

    let mut revocations = watch_revocations(&app, 0).await.unwrap();
    let first = next_revocation(&mut revocations).await;

    assert_eq!(first.session_id, session_of(&tokens(&bob).access_token));
}
