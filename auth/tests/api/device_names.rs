//! RenameDevice, through the real gateway: with the generated client, and with grpcurl, which
//! learns the method from the gateway's reflection.

use proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use sqlx::PgPool;
use tonic::{Code, Status, transport::Channel};

use crate::helpers::{BehindGateway, PASSWORD, assert_code, spawn_behind_gateway, with_token};

const FROM: &str = "127.0.0.1";

/// A user logged in through the gateway on a new device.
struct Session {
    client: AuthServiceClient<Channel>,
    token: String,
    device_id: String,
}

impl Session {
    async fn start(app: &BehindGateway, username: &str) -> Self {
        let login = app.login_from(FROM, username, PASSWORD).await.unwrap();
        Self {
            client: app.client_from(FROM).await,
            token: login.tokens.unwrap().access_token,
            device_id: login.device.unwrap().device_id,
        }
    }

    async fn rename(&self, device_id: &str, name: &str) -> Result<pb::Device, Status> {
        let request = pb::RenameDeviceRequest {
            device_id: device_id.into(),
            name: name.into(),
        };
        self.client
            .clone()
            .rename_device(with_token(request, &self.token))
            .await
            .map(|response| response.into_inner().device.unwrap())
    }

    async fn device_names(&self) -> Vec<(String, String)> {
        self.client
            .clone()
            .list_devices(with_token(pb::ListDevicesRequest {}, &self.token))
            .await
            .unwrap()
            .into_inner()
            .devices
            .into_iter()
            .map(|device| (device.device_id, device.name))
            .collect()
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn an_owner_renames_this_device_and_another_one(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register("alice").await;
    let laptop = Session::start(&app, "alice").await;
    let phone = Session::start(&app, "alice").await;

    let renamed = laptop
        .rename(&laptop.device_id, "  Laptop (Firefox)  ")
        .await;
    let renamed_other = laptop.rename(&phone.device_id, "Phone 📱").await;

    assert_eq!(renamed.unwrap().name, "Laptop (Firefox)", "trimmed");
    assert_eq!(renamed_other.unwrap().name, "Phone 📱");
    assert_eq!(
        phone.device_names().await,
        [
            (laptop.device_id.clone(), "Laptop (Firefox)".into()),
            (phone.device_id.clone(), "Phone 📱".into()),
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn another_users_device_and_a_revoked_one_are_not_found(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register("alice").await;
    app.register("mallory").await;
    let alice = Session::start(&app, "alice").await;
    let old = Session::start(&app, "alice").await;
    let mallory = Session::start(&app, "mallory").await;
    alice
        .client
        .clone()
        .revoke_device(with_token(
            pb::RevokeDeviceRequest {
                device_id: old.device_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap();

    let foreign = mallory.rename(&alice.device_id, "pwned").await;
    let revoked = alice.rename(&old.device_id, "old laptop").await;
    let unknown = alice.rename(&uuid::Uuid::now_v7().to_string(), "x").await;

    assert_code(foreign, Code::NotFound);
    assert_code(revoked, Code::NotFound);
    assert_code(unknown, Code::NotFound);
    assert_eq!(
        alice.device_names().await,
        [(alice.device_id.clone(), String::new())],
        "mallory's attempt changed nothing"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_names_and_ids_are_invalid_arguments_that_say_why(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register("alice").await;
    let alice = Session::start(&app, "alice").await;
    let device = alice.device_id.as_str();

    let cases = [
        (device, "   ", "device name must not be empty"),
        (
            device,
            &"x".repeat(65),
            "device name must be at most 64 characters",
        ),
        (
            device,
            "bad\u{7}name",
            "device name must not contain control characters",
        ),
        ("not-a-uuid", "laptop", "device_id must be a UUID"),
    ];
    for (device_id, name, message) in cases {
        let status = assert_code(alice.rename(device_id, name).await, Code::InvalidArgument);
        assert_eq!(status.message(), message);
    }
    let at_limit = alice.rename(device, &"é".repeat(64)).await;
    at_limit.expect("64 characters, whatever their bytes");
}

#[sqlx::test(migrations = "../migrations")]
async fn renaming_without_a_token_is_unauthenticated(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;

    let result = app
        .client_from(FROM)
        .await
        .rename_device(pb::RenameDeviceRequest {
            device_id: uuid::Uuid::now_v7().to_string(),
            name: "laptop".into(),
        })
        .await;

    assert_code(result, Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_finds_rename_device_by_reflection_and_renames(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register("alice").await;
    let alice = Session::start(&app, "alice").await;
    let gateway = app.gateway;
    let header = format!("authorization: Bearer {}", alice.token);
    let body = format!(r#"{{"deviceId":"{}","name":"terminal"}}"#, alice.device_id);

    let output = tokio::task::spawn_blocking(move || {
        testkit::grpcurl(
            &["-H", &header, "-d", &body],
            gateway,
            &["auth.v1.AuthService/RenameDevice"],
        )
    })
    .await
    .unwrap();

    assert!(output.success, "{}", output.stderr);
    let response: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(response["device"]["name"], "terminal");
    assert_eq!(
        alice.device_names().await,
        [(alice.device_id.clone(), "terminal".into())]
    );
}
