use std::time::Duration;

use proto::group::v1::ListMyGroupsRequest;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{spawn_app, with_token};

#[sqlx::test(migrations = "../migrations")]
async fn a_started_service_with_its_database_reports_serving(db: PgPool) {
    let app = spawn_app(db).await;

    let whole_server = testkit::health_status(app.channel.clone(), "").await;
    let group_service = testkit::health_status(app.channel, "group.v1.GroupService").await;

    assert_eq!(whole_server, ServingStatus::Serving);
    assert_eq!(group_service, ServingStatus::Serving);
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_lists_every_group_api_through_reflection(db: PgPool) {
    let app = spawn_app(db).await;

    let services = tokio::task::spawn_blocking(move || testkit::grpcurl_list(app.addr))
        .await
        .unwrap();

    assert_eq!(
        services,
        [
            "group.internal.v1.GroupInternalService",
            "group.v1.GroupService",
            "grpc.health.v1.Health",
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn grpcurl_describes_an_rpc_with_its_documentation(db: PgPool) {
    let app = spawn_app(db).await;

    let description = tokio::task::spawn_blocking(move || {
        testkit::grpcurl_describe(app.addr, "group.v1.GroupService.CreateGroup")
    })
    .await
    .unwrap();

    assert!(description.contains("Creates a group"), "{description}");
    assert!(
        description.contains("rpc CreateGroup ( .group.v1.CreateGroupRequest ) returns ( .group.v1.CreateGroupResponse )"),
        "{description}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_call_without_a_token_is_refused_even_when_it_bypasses_the_gateway(db: PgPool) {
    let app = spawn_app(db).await;
    let mut group =
        proto::group::v1::group_service_client::GroupServiceClient::new(app.channel.clone());

    let status = group
        .list_my_groups(proto::group::v1::ListMyGroupsRequest::default())
        .await
        .unwrap_err();

    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_call_with_a_valid_token_gets_past_authentication(db: PgPool) {
    let app = spawn_app(db).await;
    let token = app.access_token("alice").await;

    let response = app
        .groups()
        .list_my_groups(crate::helpers::with_token(
            proto::group::v1::ListMyGroupsRequest::default(),
            &token,
        ))
        .await;

    assert!(response.unwrap().into_inner().groups.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_database_without_a_free_connection_answers_unavailable_until_one_frees(db: PgPool) {
    let connect_options = PgConnectOptions::clone(&db.connect_options());
    let app = spawn_app(db).await;
    let token = app.access_token("alice").await;
    // A replica with a pool of two (its event feed's LISTEN keeps one) that gives up quickly.
    let small = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(300))
        .connect_with(connect_options)
        .await
        .unwrap();
    let replica = app.replica_on(small.clone(), |_| {}).await;
    let list = || {
        let mut groups = replica.groups();
        let token = token.clone();
        async move {
            groups
                .list_my_groups(with_token(ListMyGroupsRequest::default(), &token))
                .await
        }
    };
    // Take every connection the pool can give, opening them if it has not yet: `try_acquire`
    // takes only idle ones, so it could leave one unopened. The last acquire times out.
    let mut held = Vec::new();
    while let Ok(connection) = small.acquire().await {
        held.push(connection);
    }

    let status = list().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{status:?}");

    drop(held);
    assert!(list().await.unwrap().into_inner().groups.is_empty());
    small.close().await;
}
