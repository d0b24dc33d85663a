use proto::auth::v1 as pb;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{PASSWORD, assert_code, reason, spawn_app, spawn_app_with, tokens};

#[sqlx::test(migrations = "../migrations")]
async fn a_registered_user_logs_in_on_a_new_device_and_gets_both_tokens(db: PgPool) {
    let app = spawn_app(db).await;
    let user = app.register("alice").await;

    let login = app.login("alice", PASSWORD).await.unwrap();

    assert_eq!(login.user.as_ref().unwrap().user_id, user.user_id);
    let device = login.device.as_ref().unwrap();
    assert!(!device.device_id.is_empty());
    assert!(device.keys.is_none(), "a new device has no keys yet");
    assert!(!tokens(&login).access_token.is_empty());
    assert_eq!(
        tokens(&login).refresh_token.len(),
        43,
        "256 bits in base64url"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn usernames_breaking_the_rules_are_invalid_arguments(db: PgPool) {
    let app = spawn_app(db).await;

    for username in ["ab", "ålice", "al ice", "a/b", &"x".repeat(33), ""] {
        let result = app
            .client
            .clone()
            .register(pb::RegisterRequest {
                username: username.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
            })
            .await;

        assert_code(result, Code::InvalidArgument);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn passwords_must_be_8_to_128_characters_and_display_names_at_most_64(db: PgPool) {
    let app = spawn_app(db).await;
    let register = |password: String, display_name: String| {
        let mut client = app.client.clone();
        async move {
            client
                .register(pb::RegisterRequest {
                    username: "bob".into(),
                    password,
                    display_name,
                })
                .await
        }
    };

    assert_code(
        register("1234567".into(), String::new()).await,
        Code::InvalidArgument,
    );
    assert_code(
        register("x".repeat(129), String::new()).await,
        Code::InvalidArgument,
    );
    assert_code(
        register(PASSWORD.into(), "d".repeat(65)).await,
        Code::InvalidArgument,
    );
    register("é".repeat(128), "Bob".into()).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_taken_username_is_already_exists(db: PgPool) {
    let app = spawn_app(db).await;
    app.register("carol").await;

    let result = app
        .client
        .clone()
        .register(pb::RegisterRequest {
            username: "carol".into(),
            password: "another password".into(),
            display_name: String::new(),
        })
        .await;

    assert_code(result, Code::AlreadyExists);
}

#[sqlx::test(migrations = "../migrations")]
async fn passwords_are_never_truncated_or_case_folded(db: PgPool) {
    let app = spawn_app(db).await;
    let long_password = format!("{}Z", "p".repeat(127));
    app.client
        .clone()
        .register(pb::RegisterRequest {
            username: "dave".into(),
            password: long_password.clone(),
            display_name: String::new(),
        })
        .await
        .unwrap();

    let truncated = app.login("dave", &long_password[..127]).await;
    let case_folded = app.login("dave", &long_password.to_lowercase()).await;
    let exact = app.login("dave", &long_password).await;

    assert_code(truncated, Code::Unauthenticated);
    assert_code(case_folded, Code::Unauthenticated);
    exact.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unknown_user_and_a_wrong_password_are_refused_identically(db: PgPool) {
    let app = spawn_app(db).await;
    app.register("erin").await;

    let wrong_password = assert_code(
        app.login("erin", "wrong password!").await,
        Code::Unauthenticated,
    );
    let unknown_user = assert_code(app.login("nobody", PASSWORD).await, Code::Unauthenticated);

    assert_eq!(wrong_password.message(), unknown_user.message());
    assert_eq!(reason(&wrong_password), "INVALID_CREDENTIALS");
    assert_eq!(reason(&unknown_user), "INVALID_CREDENTIALS");
}

#[sqlx::test(migrations = "../migrations")]
async fn passwords_are_stored_as_argon2id_with_at_least_the_owasp_parameters(db: PgPool) {
    let mut config = auth::Config::for_tests();
    config.passwords = auth::PasswordSettings {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
        concurrency: 2,
    };
    let app = spawn_app_with(db, config).await;

    app.register("frank").await;

    let stored: String =
        sqlx::query_scalar("select password_hash from auth.users where username = 'frank'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains(PASSWORD));
}
