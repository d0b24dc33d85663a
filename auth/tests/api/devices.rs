use proto::auth::v1 as pb;
use rsa::{BigUint, RsaPrivateKey, pkcs8::EncodePublicKey};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{
    DEVICE_KEYS, PASSWORD, assert_code, reason, spawn_app, spawn_app_with, tokens, with_token,
};

#[sqlx::test(migrations = "../migrations")]
async fn uploaded_keys_come_back_with_their_sha256_fingerprints(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("alice").await;

    let device = app
        .upload_keys(&tokens(&login).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();

    assert_eq!(device.keys.as_ref(), Some(&*DEVICE_KEYS));
    assert_eq!(
        device.encryption_key_fingerprint,
        Sha256::digest(&DEVICE_KEYS.encryption_public_key).to_vec()
    );
    assert_eq!(
        device.signing_key_fingerprint,
        Sha256::digest(&DEVICE_KEYS.signing_public_key).to_vec()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn weak_or_malformed_keys_are_refused_with_the_reason(db: PgPool) {
    let app = spawn_app(db).await;
    let token = tokens(&app.signed_up("bob").await).access_token.clone();
    let mut rng = rand_core::OsRng;
    let spki = |key: RsaPrivateKey| key.to_public_key().to_public_key_der().unwrap().into_vec();
    let small = spki(RsaPrivateKey::new(&mut rng, 1024).unwrap());
    let exponent_3 =
        spki(RsaPrivateKey::new_with_exp(&mut rng, 2048, &BigUint::from(3u32)).unwrap());
    let good = DEVICE_KEYS.clone();
    let cases = [
        (
            "1024 bits",
            pb::DeviceKeys {
                encryption_public_key: small,
                ..good.clone()
            },
        ),
        (
            "exponent",
            pb::DeviceKeys {
                encryption_public_key: exponent_3,
                ..good.clone()
            },
        ),
        (
            "SubjectPublicKeyInfo",
            pb::DeviceKeys {
                encryption_public_key: b"garbage".to_vec(),
                ..good.clone()
            },
        ),
        (
            "32-byte",
            pb::DeviceKeys {
                signing_public_key: vec![1; 31],
                ..good.clone()
            },
        ),
        (
            "missing",
            pb::DeviceKeys {
                encryption_public_key: vec![],
                ..good.clone()
            },
        ),
    ];

    for (expected, keys) in cases {
        let status = assert_code(app.upload_keys(&token, keys).await, Code::InvalidArgument);

        assert_eq!(reason(&status), "INVALID_PUBLIC_KEY");
        assert!(
            status.message().contains(expected),
            "{expected}: {}",
            status.message()
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn lookups_by_name_or_id_return_active_keyed_devices_and_list_the_unknown(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.signed_up("alice").await;
    app.upload_keys(&tokens(&alice).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();
    app.login("alice", PASSWORD).await.unwrap(); // a second device without keys
    let bob = app.signed_up("bob").await;
    let alice_id = alice.user.as_ref().unwrap().user_id.clone();
    let unknown_id = uuid_string();

    let found = app
        .lookup(
            &tokens(&bob).access_token,
            &[&alice_id, &unknown_id],
            &["bob", "nobody"],
        )
        .await
        .unwrap();

    let names: Vec<&str> = found
        .users
        .iter()
        .map(|u| u.user.as_ref().unwrap().username.as_str())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(found.users[0].devices.len(), 1, "only the device with keys");
    assert_eq!(
        found.users[0].devices[0].device_id,
        alice.device.as_ref().unwrap().device_id
    );
    assert!(found.users[1].devices.is_empty());
    assert_eq!(found.not_found, [unknown_id, "nobody".to_owned()]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_revoked_device_loses_its_sessions_and_disappears_from_lookups(db: PgPool) {
    let app = spawn_app(db).await;
    let phone = app.signed_up("carol").await;
    let laptop = app.login("carol", PASSWORD).await.unwrap();
    app.upload_keys(&tokens(&phone).access_token, DEVICE_KEYS.clone())
        .await
        .unwrap();
    let phone_id = phone.device.as_ref().unwrap().device_id.clone();

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

    assert_code(
        app.refresh(&tokens(&phone).refresh_token).await,
        Code::Unauthenticated,
    );
    let found = app
        .lookup(&tokens(&laptop).access_token, &[], &["carol"])
        .await
        .unwrap();
    assert!(found.users[0].devices.is_empty());
    let events: Vec<String> = sqlx::query_scalar("select kind from auth.device_events order by id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(events, ["keys_uploaded", "device_revoked"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn revoking_someone_elses_device_is_not_found(db: PgPool) {
    let app = spawn_app(db).await;
    let victim = app.signed_up("dave").await;
    let attacker = app.signed_up("eve").await;

    let result = app
        .client
        .clone()
        .revoke_device(with_token(
            pb::RevokeDeviceRequest {
                device_id: victim.device.as_ref().unwrap().device_id.clone(),
            },
            &tokens(&attacker).access_token,
        ))
        .await;

    assert_code(result, Code::NotFound);
    app.refresh(&tokens(&victim).refresh_token).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_login_naming_a_device_resumes_it_and_a_foreign_device_is_not_found(db: PgPool) {
    let app = spawn_app(db).await;
    let first = app.signed_up("frank").await;
    let other = app.signed_up("gina").await;
    let resume = |device_id: String| pb::LoginRequest {
        username: "frank".into(),
        password: PASSWORD.into(),
        device_id,
        device_name: String::new(),
    };

    let resumed = app
        .login_as(resume(first.device.as_ref().unwrap().device_id.clone()))
        .await
        .unwrap();
    let foreign = app.login_as(resume(other.device.unwrap().device_id)).await;

    assert_eq!(
        resumed.device.unwrap().device_id,
        first.device.unwrap().device_id
    );
    assert_code(foreign, Code::NotFound);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_new_device_past_the_limit_is_refused_until_one_is_revoked(db: PgPool) {
    let mut config = auth::Config::for_tests();
    config.max_devices_per_user = 2;
    let app = spawn_app_with(db, config).await;
    let first = app.signed_up("hank").await;
    app.login("hank", PASSWORD).await.unwrap();

    let third = app.login("hank", PASSWORD).await;

    assert_eq!(
        reason(&assert_code(third, Code::FailedPrecondition)),
        "TOO_MANY_DEVICES"
    );
    let listed = app
        .client
        .clone()
        .list_devices(with_token(
            pb::ListDevicesRequest {},
            &tokens(&first).access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.devices.len(), 2);
    assert_eq!(listed.current_device_id, first.device.unwrap().device_id);
}

fn uuid_string() -> String {
    uuid::Uuid::new_v4().to_string()
}
