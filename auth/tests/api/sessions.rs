use futures::future::join_all;
use proto::auth::v1 as pb;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{PASSWORD, assert_code, reason, spawn_app, tokens, with_token};

#[sqlx::test(migrations = "../migrations")]
async fn a_refresh_rotates_both_tokens_and_the_successor_works(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("mallory").await;
    let first = tokens(&login).refresh_token.clone();

    let second = app.refresh(&first).await.unwrap();
    let third = app.refresh(&second.refresh_token).await.unwrap();

    assert_ne!(second.refresh_token, first);
    assert_ne!(third.refresh_token, second.refresh_token);
    assert_ne!(second.access_token, tokens(&login).access_token);
    app.current_user(&third.access_token).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_client_that_lost_the_response_gets_the_same_successor_within_the_grace(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("niaj").await;
    let token = tokens(&login).refresh_token.clone();

    let lost = app.refresh(&token).await.unwrap();
    let retried = app.refresh(&token).await.unwrap();

    assert_eq!(retried.refresh_token, lost.refresh_token);
    app.refresh(&retried.refresh_token).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn reusing_a_rotated_token_after_the_grace_revokes_the_whole_family(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("olivia").await;
    let stolen = tokens(&login).refresh_token.clone();
    let successor = app.refresh(&stolen).await.unwrap();
    sqlx::query("update auth.refresh_tokens set rotated_at = now() - interval '1 hour' where rotated_at is not null")
        .execute(&app.db)
        .await
        .unwrap();

    let reuse = app.refresh(&stolen).await;
    let legitimate = app.refresh(&successor.refresh_token).await;

    assert_eq!(
        reason(&assert_code(reuse, Code::Unauthenticated)),
        "REFRESH_TOKEN_INVALID"
    );
    assert_code(legitimate, Code::Unauthenticated);
    let revoked_reason: String = sqlx::query_scalar("select revoked_reason from auth.sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(revoked_reason, "refresh_reuse");
}

#[sqlx::test(migrations = "../migrations")]
async fn reusing_a_token_whose_successor_was_used_revokes_the_family_even_within_the_grace(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    let login = app.signed_up("peggy").await;
    let stolen = tokens(&login).refresh_token.clone();
    let successor = app.refresh(&stolen).await.unwrap();
    let latest = app.refresh(&successor.refresh_token).await.unwrap();

    let reuse = app.refresh(&stolen).await;

    assert_code(reuse, Code::Unauthenticated);
    assert_code(
        app.refresh(&latest.refresh_token).await,
        Code::Unauthenticated,
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_refreshes_of_one_token_leave_exactly_one_live_successor(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("rupert").await;
    let token = tokens(&login).refresh_token.clone();

    let results = join_all((0..10).map(|_| app.refresh(&token))).await;

    let successors: std::collections::BTreeSet<String> = results
        .into_iter()
        .map(|result| {
            result
                .expect("every racer is a retry within the grace")
                .refresh_token
        })
        .collect();
    assert_eq!(successors.len(), 1);
    let live: i64 =
        sqlx::query_scalar("select count(*) from auth.refresh_tokens where rotated_at is null")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(live, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_idle_refresh_token_expires(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("sybil").await;
    sqlx::query("update auth.refresh_tokens set idle_expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();

    let result = app.refresh(&tokens(&login).refresh_token).await;

    assert_code(result, Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_and_malformed_refresh_tokens_are_refused(db: PgPool) {
    let app = spawn_app(db).await;

    for token in ["", "short", &"A".repeat(43), &"!".repeat(43)] {
        assert_code(app.refresh(token).await, Code::Unauthenticated);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn logout_revokes_the_sessions_refresh_tokens_only(db: PgPool) {
    let app = spawn_app(db).await;
    let phone = app.signed_up("trent").await;
    let laptop = app.login("trent", PASSWORD).await.unwrap();

    app.client
        .clone()
        .logout(with_token(
            pb::LogoutRequest {},
            &tokens(&phone).access_token,
        ))
        .await
        .unwrap();

    assert_code(
        app.refresh(&tokens(&phone).refresh_token).await,
        Code::Unauthenticated,
    );
    app.refresh(&tokens(&laptop).refresh_token).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn logout_everywhere_revokes_every_session_of_the_user(db: PgPool) {
    let app = spawn_app(db).await;
    let phone = app.signed_up("uma").await;
    let laptop = app.login("uma", PASSWORD).await.unwrap();
    let bystander = app.signed_up("victor").await;

    let response = app
        .client
        .clone()
        .logout_everywhere(with_token(
            pb::LogoutEverywhereRequest {},
            &tokens(&laptop).access_token,
        ))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(response.revoked_sessions, 2);
    assert_code(
        app.refresh(&tokens(&phone).refresh_token).await,
        Code::Unauthenticated,
    );
    assert_code(
        app.refresh(&tokens(&laptop).refresh_token).await,
        Code::Unauthenticated,
    );
    app.refresh(&tokens(&bystander).refresh_token)
        .await
        .unwrap();
}
