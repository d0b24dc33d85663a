//! `auth.internal.v1`: what chat and group ask auth for.

use proto::auth::{
    internal::v1::{self as internal_pb, auth_internal_service_client::AuthInternalServiceClient},
    v1 as pb,
};
use sqlx::PgPool;
use tonic::{Code, transport::Channel};

use crate::helpers::{DEVICE_KEYS, PASSWORD, TestApp, assert_code, spawn_app, tokens, with_token};

fn internal(app: &TestApp) -> AuthInternalServiceClient<Channel> {
    AuthInternalServiceClient::new(app.channel.clone())
}

async fn active_devices(
    app: &TestApp,
    token: &str,
    user_ids: Vec<String>,
) -> Result<Vec<internal_pb::UserDevices>, tonic::Status> {
    internal(app)
        .get_active_devices(with_token(
            internal_pb::GetActiveDevicesRequest { user_ids },
            token,
        ))
        .await
        .map(|response| response.into_inner().users)
}

#[sqlx::test(migrations = "../migrations")]
async fn active_devices_come_per_requested_user_in_order_with_keys_and_fingerprints(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    let token = &tokens(&alice).access_token;
    let alice_device = app.upload_keys(token, DEVICE_KEYS.clone()).await.unwrap();
    let bob_device = app
        .upload_keys(&tokens(&bob).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();
    // A second device of bob without keys yet: senders cannot wrap for it, so it is not listed.
    app.login("bob", crate::helpers::PASSWORD).await.unwrap();
    let nobody = uuid::Uuid::now_v7().to_string();
    let bob_id = bob.user.as_ref().unwrap().user_id.clone();
    let alice_id = alice.user.as_ref().unwrap().user_id.clone();

    let users = active_devices(
        &app,
        token,
        vec![bob_id.clone(), nobody.clone(), alice_id.clone()],
    )
    .await
    .unwrap();

    let listed: Vec<(&str, Vec<&pb::Device>)> = users
        .iter()
        .map(|user| (user.user_id.as_str(), user.devices.iter().collect()))
        .collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].0, bob_id);
    assert_eq!(listed[0].1, vec![&bob_device]);
    assert_eq!(listed[1].0, nobody);
    assert!(listed[1].1.is_empty(), "an unknown user has no devices");
    assert_eq!(listed[2].0, alice_id);
    assert_eq!(listed[2].1, vec![&alice_device]);
    assert_eq!(bob_device.encryption_key_fingerprint.len(), 32);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_revoked_device_is_no_longer_listed(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;
    let token = tokens(&alice).access_token.clone();
    let first = app.upload_keys(&token, DEVICE_KEYS.clone()).await.unwrap();
    let second_login = app.login("alice", crate::helpers::PASSWORD).await.unwrap();
    let second = app
        .upload_keys(&tokens(&second_login).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();
    let alice_id = alice.user.unwrap().user_id;

    app.client
        .clone()
        .revoke_device(with_token(
            pb::RevokeDeviceRequest {
                device_id: first.device_id.clone(),
            },
            &tokens(&second_login).access_token,
        ))
        .await
        .unwrap();

    let users = active_devices(&app, &tokens(&second_login).access_token, vec![alice_id])
        .await
        .unwrap();
    let ids: Vec<&str> = users[0]
        .devices
        .iter()
        .map(|d| d.device_id.as_str())
        .collect();
    assert_eq!(ids, vec![second.device_id.as_str()]);
}

#[sqlx::test(migrations = "../migrations")]
async fn active_devices_need_a_token_and_well_formed_bounded_input(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;
    let token = &tokens(&alice).access_token;

    let anonymous = internal(&app)
        .get_active_devices(internal_pb::GetActiveDevicesRequest {
            user_ids: vec![alice.user.as_ref().unwrap().user_id.clone()],
        })
        .await;
    assert_code(anonymous, Code::Unauthenticated);

    let malformed = active_devices(&app, token, vec!["not-a-uuid".into()]).await;
    let status = assert_code(malformed, Code::InvalidArgument);
    assert!(status.message().contains("user_ids"), "{status:?}");

    let too_many = (0..1_001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let status = assert_code(
        active_devices(&app, token, too_many).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("1000"), "{status:?}");
}

async fn watch(
    app: &TestApp,
    request: internal_pb::WatchDeviceChangesRequest,
) -> Result<tonic::Streaming<internal_pb::WatchDeviceChangesResponse>, tonic::Status> {
    let credential = common::service_credential::ServiceCredential::for_tests();
    internal(app)
        .watch_device_changes(credential.attach(tonic::Request::new(request)))
        .await
        .map(tonic::Response::into_inner)
}

async fn next_change(
    stream: &mut tonic::Streaming<internal_pb::WatchDeviceChangesResponse>,
) -> internal_pb::WatchDeviceChangesResponse {
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
        .await
        .expect("a device change in time")
        .expect("no error")
        .expect("the stream stays open")
}

#[sqlx::test(migrations = "../migrations")]
async fn device_changes_stream_live_and_replay_from_a_cursor(db: PgPool) {
    let app = spawn_app(db).await;
    let carol = app.signed_up("carol").await;
    let laptop = app.login("carol", PASSWORD).await.unwrap();
    let carol_id = carol.user.as_ref().unwrap().user_id.clone();
    let phone_id = carol.device.as_ref().unwrap().device_id.clone();
    let mut live = watch(
        &app,
        internal_pb::WatchDeviceChangesRequest {
            after_event_id: 0,
            start_at_newest: true,
            heartbeats: false,
        },
    )
    .await
    .unwrap();

    app.upload_keys(&tokens(&carol).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();
    let keyed = next_change(&mut live).await;
    app.client
        .clone()
        .revoke_device(with_token(
            pb::RevokeDeviceRequest {
                device_id: phone_id.clone(),
            },
            &tokens(&laptop).access_token,
        ))
        .await
        .unwrap();
    let revoked = next_change(&mut live).await;
    let mut replay = watch(
        &app,
        internal_pb::WatchDeviceChangesRequest {
            after_event_id: keyed.event_id,
            start_at_newest: false,
            heartbeats: false,
        },
    )
    .await
    .unwrap();
    let replayed = next_change(&mut replay).await;

    assert_eq!(
        (keyed.user_id.as_str(), keyed.device_id.as_str()),
        (carol_id.as_str(), phone_id.as_str())
    );
    assert!(revoked.event_id > keyed.event_id);
    assert_eq!(revoked.device_id, phone_id);
    assert_eq!(replayed, revoked);
}

#[sqlx::test(migrations = "../migrations")]
async fn device_changes_need_the_service_credential_and_a_valid_start(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;

    let with_user_token = internal(&app)
        .watch_device_changes(with_token(
            internal_pb::WatchDeviceChangesRequest::default(),
            &tokens(&alice).access_token,
        ))
        .await;
    let both_starts = watch(
        &app,
        internal_pb::WatchDeviceChangesRequest {
            after_event_id: 1,
            start_at_newest: true,
            heartbeats: false,
        },
    )
    .await;
    let past_the_newest = watch(
        &app,
        internal_pb::WatchDeviceChangesRequest {
            after_event_id: 1_000,
            start_at_newest: false,
            heartbeats: false,
        },
    )
    .await;

    assert_code(with_user_token, Code::Unauthenticated);
    assert_code(both_starts, Code::InvalidArgument);
    assert_code(past_the_newest, Code::OutOfRange);
}

#[sqlx::test(migrations = "../migrations")]
async fn device_change_heartbeats_come_only_when_asked(db: PgPool) {
    let app = spawn_app(db).await;
    let carol = app.signed_up("carol").await;
    let request = |heartbeats| internal_pb::WatchDeviceChangesRequest {
        after_event_id: 0,
        start_at_newest: true,
        heartbeats,
    };
    let mut with = watch(&app, request(true)).await.unwrap();
    let mut without = watch(&app, request(false)).await.unwrap();

    let beat = next_change(&mut with).await;
    app.upload_keys(&tokens(&carol).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();
    let plain = next_change(&mut without).await;

    assert!(beat.heartbeat, "{beat:?}");
    assert!(beat.user_id.is_empty() && beat.device_id.is_empty());
    assert!(!plain.heartbeat, "a heartbeat sent unasked: {plain:?}");
    assert_eq!(plain.user_id, carol.user.as_ref().unwrap().user_id);
}
