//! auth's metrics port: the shared gRPC and pool metrics, and auth's own, move when logins and
//! refreshes happen.

use proto::auth::internal::v1::{
    self as internal_pb, auth_internal_service_client::AuthInternalServiceClient,
};
use sqlx::PgPool;
use testkit::{metric_sum, scrape_metrics};

use crate::helpers::{PASSWORD, spawn_app_with_metrics, tokens};

#[sqlx::test(migrations = "../migrations")]
async fn logins_refreshes_and_password_hashing_show_on_the_metrics_port(db: PgPool) {
    let (app, metrics) = spawn_app_with_metrics(db).await;
    // Answered once auth follows its revocations: that stream is open before `before`.
    app.register("olivia").await;
    let before = scrape_metrics(metrics).await;

    let login = app.login("olivia", PASSWORD).await.unwrap();
    app.login("olivia", "not the password").await.unwrap_err();
    let stolen = tokens(&login).refresh_token.clone();
    let successor = app.refresh(&stolen).await.unwrap();
    app.refresh(&successor.refresh_token).await.unwrap();
    app.refresh(&stolen).await.unwrap_err();
    let credential = common::service_credential::ServiceCredential::for_tests();
    let _watch = AuthInternalServiceClient::new(app.channel.clone())
        .watch_device_changes(credential.attach(tonic::Request::new(
            internal_pb::WatchDeviceChangesRequest::default(),
        )))
        .await
        .unwrap();
    let after = scrape_metrics(metrics).await;

    let moved = |name: &str, labels: &[&str]| {
        metric_sum(&after, name, labels) - metric_sum(&before, name, labels)
    };
    assert_eq!(moved("auth_logins_total", &[r#"outcome="ok""#]), 1.0);
    assert_eq!(
        moved("auth_logins_total", &[r#"outcome="invalid_credentials""#]),
        1.0
    );
    assert_eq!(moved("auth_refreshes_total", &[r#"outcome="ok""#]), 2.0);
    assert_eq!(moved("auth_refreshes_total", &[r#"outcome="reused""#]), 1.0);
    // Each login verifies a password.
    assert_eq!(moved("auth_password_hash_seconds_count", &[]), 2.0);
    assert_eq!(moved("auth_password_queue_wait_seconds_count", &[]), 2.0);
    let login_calls = [r#"service="auth.v1.AuthService""#, r#"method="Login""#];
    assert_eq!(
        moved(
            "grpc_server_handled_total",
            &[login_calls[0], login_calls[1], r#"code="OK""#]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "grpc_server_handled_total",
            &[login_calls[0], login_calls[1], r#"code="UNAUTHENTICATED""#]
        ),
        1.0
    );
    assert_eq!(
        moved("grpc_server_handling_seconds_count", &login_calls),
        2.0
    );
    assert_eq!(moved("auth_device_events_streams_open", &[]), 1.0);
    assert!(
        metric_sum(&after, "db_pool_connections", &[]) >= 1.0,
        "{after}"
    );
}
