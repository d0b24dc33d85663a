use sqlx::PgPool;
use tonic::Code;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = "../migrations")]
async fn malformed_requests_are_invalid_argument_on_every_method_of_auths_own_port(db: PgPool) {
    let app = spawn_app(db).await;

    // LoginRequest's field 1 is the username.
    testkit::assert_malformed_requests_are_refused(app.addr, "/auth.v1.AuthService/Login", 1).await;
    let valid = testkit::raw_grpc(
        app.addr,
        "/auth.v1.AuthService/GetJwks",
        &[],
        testkit::grpc_frame(&[]),
    )
    .await;

    assert_eq!(valid.status().map(|status| status.code()), Some(Code::Ok));
}
