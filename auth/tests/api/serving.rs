use sqlx::PgPool;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = "../migrations")]
async fn a_started_service_with_its_database_reports_serving(db: PgPool) {
    let app = spawn_app(db).await;

    let whole_server = testkit::health_status(app.channel.clone(), "").await;
    let auth_service = testkit::health_status(app.channel, "auth.v1.AuthService").await;

    assert_eq!(whole_server, ServingStatus::Serving);
    assert_eq!(auth_service, ServingStatus::Serving);
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_lists_every_auth_api_through_reflection(db: PgPool) {
    let app = spawn_app(db).await;

    let services = tokio::task::spawn_blocking(move || testkit::grpcurl_list(app.addr))
        .await
        .unwrap();

    assert_eq!(
        services,
        [
            "auth.internal.v1.AuthInternalService",
            "auth.v1.AuthService",
            "grpc.health.v1.Health",
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_describes_an_rpc_with_its_documentation(db: PgPool) {
    let app = spawn_app(db).await;

    let description = tokio::task::spawn_blocking(move || {
        testkit::grpcurl_describe(app.addr, "auth.v1.AuthService.Register")
    })
    .await
    .unwrap();

    assert!(description.contains("Creates an account"), "{description}");
    assert!(
        description.contains(
            "rpc Register ( .auth.v1.RegisterRequest ) returns ( .auth.v1.RegisterResponse )"
        ),
        "{description}"
    );
}
