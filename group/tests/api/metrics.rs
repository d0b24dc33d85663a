//! group's metrics port: the shared gRPC and pool metrics, and group's own, move when groups
//! change.

use proto::group::v1 as pb;
use sqlx::PgPool;
use testkit::{metric_sum, scrape_metrics};

use crate::helpers::spawn_app;

#[sqlx::test(migrations = "../migrations")]
async fn group_changes_and_their_membership_events_written_and_streamed_show_on_the_metrics_port(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    let (alice, bob, carol, dave) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
        app.user("dave").await,
    );
    let before = scrape_metrics(app.metrics).await;

    // Three events: alice, bob and carol added.
    let group = app
        .create_group(&alice, "crew", &[&bob, &carol])
        .await
        .unwrap();
    // One event each.
    app.rename(&alice, &group.group_id, "the crew")
        .await
        .unwrap();
    app.change_role(&alice, &group.group_id, &bob, pb::Role::Admin)
        .await
        .unwrap();
    app.add_members(&alice, &group.group_id, &[&dave], pb::Role::Member)
        .await
        .unwrap();
    app.remove(&alice, &group.group_id, &carol).await.unwrap();
    // No event: bob is an admin already.
    app.change_role(&alice, &group.group_id, &bob, pb::Role::Admin)
        .await
        .unwrap();
    // Refused: plain members do not rename.
    app.rename(&dave, &group.group_id, "mine")
        .await
        .unwrap_err();
    let mut watch = app.watch(0).await.unwrap();
    for _ in 0..7 {
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
    }
    let after = scrape_metrics(app.metrics).await;

    let moved = |name: &str, labels: &[&str]| {
        metric_sum(&after, name, labels) - metric_sum(&before, name, labels)
    };
    assert_eq!(moved("group_membership_events_written_total", &[]), 7.0);
    assert_eq!(moved("group_membership_events_streamed_total", &[]), 7.0);
    assert_eq!(
        metric_sum(&after, "group_membership_events_streams_open", &[]),
        1.0
    );
    let ok = r#"outcome="ok""#;
    assert_eq!(
        moved(
            "group_operations_total",
            &[r#"operation="create_group""#, ok]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "group_operations_total",
            &[r#"operation="change_member_role""#, ok]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "group_operations_total",
            &[r#"operation="rename_group""#, r#"outcome="refused""#]
        ),
        1.0
    );
    assert_eq!(moved("group_operations_total", &[ok]), 6.0);
    assert_eq!(
        moved(
            "grpc_server_handled_total",
            &[
                r#"service="group.v1.GroupService""#,
                r#"method="RenameGroup""#,
                r#"code="PERMISSION_DENIED""#
            ]
        ),
        1.0
    );
    assert!(
        metric_sum(&after, "db_pool_connections", &[]) >= 1.0,
        "{after}"
    );
}
