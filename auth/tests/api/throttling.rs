use std::time::Duration;

use sqlx::PgPool;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{PASSWORD, assert_code, reason, spawn_app, spawn_app_with};

#[sqlx::test(migrations = "../migrations")]
async fn five_failures_block_the_account_even_for_the_right_password_with_retry_info(db: PgPool) {
    let app = spawn_app(db).await;
    app.register("grace").await;
    for _ in 0..5 {
        assert_code(
            app.login("grace", "not the password").await,
            Code::Unauthenticated,
        );
    }

    let status = assert_code(app.login("grace", PASSWORD).await, Code::ResourceExhausted);

    assert_eq!(reason(&status), "LOGIN_THROTTLED");
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay);
    let retry = retry.expect("RetryInfo with a delay");
    assert!(
        retry > Duration::from_secs(800) && retry <= Duration::from_secs(900),
        "{retry:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_blocked_account_does_not_block_another_account(db: PgPool) {
    let app = spawn_app(db).await;
    app.register("heidi").await;
    app.register("ivan").await;
    for _ in 0..5 {
        let _ = app.login("heidi", "not the password").await;
    }

    let other = app.login("ivan", PASSWORD).await;

    other.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_block_ends_when_its_window_has_passed_so_nobody_is_locked_out_for_good(db: PgPool) {
    let app = spawn_app(db).await;
    app.register("judy").await;
    for _ in 0..5 {
        let _ = app.login("judy", "not the password").await;
    }
    assert_code(app.login("judy", PASSWORD).await, Code::ResourceExhausted);

    // Move the block and its window into the past, as if 15 minutes had gone by.
    sqlx::query(
        "update auth.login_throttles set blocked_until = now() - interval '1 second',
           window_started_at = now() - interval '16 minutes'",
    )
    .execute(&app.db)
    .await
    .unwrap();

    app.login("judy", PASSWORD).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_success_clears_the_accounts_failures(db: PgPool) {
    let app = spawn_app(db).await;
    app.register("ken").await;
    for _ in 0..4 {
        let _ = app.login("ken", "not the password").await;
    }
    app.login("ken", PASSWORD).await.unwrap();

    for _ in 0..4 {
        let _ = app.login("ken", "not the password").await;
    }

    app.login("ken", PASSWORD).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn many_failures_from_one_address_block_that_address_for_every_username(db: PgPool) {
    let mut config = auth::Config::for_tests();
    config.login_throttle.failures_per_address = 3;
    let app = spawn_app_with(db, config).await;
    app.register("leo").await;
    for username in ["x1-unknown", "x2-unknown", "x3-unknown"] {
        assert_code(app.login(username, PASSWORD).await, Code::Unauthenticated);
    }

    let status = assert_code(app.login("leo", PASSWORD).await, Code::ResourceExhausted);

    assert_eq!(reason(&status), "LOGIN_THROTTLED");
}
