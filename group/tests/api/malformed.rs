use sqlx::PgPool;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = "../migrations")]
async fn malformed_requests_are_invalid_argument_on_groups_own_port(db: PgPool) {
    let app = spawn_app(db).await;

    // CreateGroupRequest's field 1 is the name.
    testkit::assert_malformed_requests_are_refused(
        app.addr,
        "/group.v1.GroupService/CreateGroup",
        1,
    )
    .await;
}
