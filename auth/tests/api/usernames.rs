//! Usernames compare in their canonical form (NFKC, lowercase) and show as registered: through
//! the real gateway, with the generated client.

use proto::auth::v1 as pb;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{
    BehindGateway, PASSWORD, assert_code, spawn_behind_gateway, throttled, with_token,
};

const FROM: &str = "127.0.0.1";

impl BehindGateway {
    async fn register_as(&self, username: &str) -> Result<pb::User, tonic::Status> {
        self.client_from(FROM)
            .await
            .register(pb::RegisterRequest {
                username: username.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
            })
            .await
            .map(|response| response.into_inner().user.unwrap())
    }

    /// Looks names up as a new user "viewer" (so at most once per test).
    async fn lookup_names(&self, usernames: &[&str]) -> pb::LookupUsersResponse {
        self.register("viewer").await;
        let login = self.login_from(FROM, "viewer", PASSWORD).await.unwrap();
        let request = pb::LookupUsersRequest {
            user_ids: Vec::new(),
            usernames: usernames.iter().map(|name| (*name).to_owned()).collect(),
        };
        self.client_from(FROM)
            .await
            .lookup_users(with_token(request, &login.tokens.unwrap().access_token))
            .await
            .unwrap()
            .into_inner()
    }
}

fn names(response: &pb::LookupUsersResponse) -> Vec<&str> {
    response
        .users
        .iter()
        .map(|user| user.user.as_ref().unwrap().username.as_str())
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_username_taken_in_another_case_or_width_is_already_exists(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register_as("bob").await.unwrap();

    let upper = app.register_as("BOB").await;
    let full_width = app.register_as("\u{ff42}\u{ff4f}\u{ff22}").await; // "ｂｏＢ"

    let status = assert_code(upper, Code::AlreadyExists);
    assert_eq!(status.message(), "username is already taken");
    assert_code(full_width, Code::AlreadyExists);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_logs_in_in_any_case_or_width_and_keeps_the_name_as_registered(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    let registered = app.register_as("Bob").await.unwrap();

    let logins = [
        app.login_from(FROM, "bob", PASSWORD).await.unwrap(),
        app.login_from(FROM, "BOB", PASSWORD).await.unwrap(),
        app.login_from(FROM, "\u{ff22}\u{ff4f}\u{ff42}", PASSWORD) // "Ｂｏｂ"
            .await
            .unwrap(),
    ];

    assert_eq!(registered.username, "Bob");
    for login in logins {
        let user = login.user.unwrap();
        assert_eq!(
            (user.user_id.as_str(), user.username.as_str()),
            (registered.user_id.as_str(), "Bob")
        );
    }
    assert_code(
        app.login_from(FROM, "bobb", PASSWORD).await,
        Code::Unauthenticated,
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_full_width_registration_is_stored_in_plain_letters(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;

    let user = app.register_as("\u{ff23}arol").await.unwrap(); // full-width "Ｃ", then "arol"

    assert_eq!(user.username, "Carol");
    app.login_from(FROM, "carol", PASSWORD).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn lookup_finds_a_user_by_any_case_and_answers_the_name_as_registered(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register_as("bob").await.unwrap();
    app.register_as("Carol").await.unwrap();

    let found = app
        .lookup_names(&["BOB", "carol", "\u{ff43}arol", "nobody", "not a name!"])
        .await;

    assert_eq!(names(&found), ["bob", "Carol"]);
    assert_eq!(found.not_found, ["nobody", "not a name!"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn failures_in_another_case_count_against_the_same_username(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register_as("bob").await.unwrap();

    // The first three failures of a username from an address cost nothing, in whatever case.
    for variant in ["bob", "BOB", "Bob"] {
        assert_code(
            app.login_from("127.0.0.2", variant, "wrong password").await,
            Code::Unauthenticated,
        );
    }
    assert_code(
        app.login_from("127.0.0.2", "bOb", "wrong password").await,
        Code::Unauthenticated,
    );

    throttled(app.login_from("127.0.0.2", "\u{ff42}ob", PASSWORD).await);
}

/// Accounts that collided when the canonical column was backfilled keep a null canonical form
/// (the migration's rule): each stays reachable by its exact name, the canonical holder by any.
#[sqlx::test(migrations = "../migrations")]
async fn an_account_left_without_a_canonical_form_is_reached_by_its_exact_name(db: PgPool) {
    let app = spawn_behind_gateway(db.clone(), auth::Config::for_tests()).await;
    let holder = app.register_as("bob").await.unwrap();
    let legacy = app.register_as("legacy").await.unwrap();
    sqlx::query(
        "update auth.users set username = 'BoB', username_canonical = null
         where username = 'legacy'",
    )
    .execute(&db)
    .await
    .unwrap();

    let exact = app.login_from(FROM, "BoB", PASSWORD).await.unwrap();
    let other_case = app.login_from(FROM, "BOB", PASSWORD).await.unwrap();
    let looked_up = app.lookup_names(&["BoB"]).await;

    assert_eq!(exact.user.unwrap().user_id, legacy.user_id);
    assert_eq!(other_case.user.unwrap().user_id, holder.user_id);
    assert_eq!(names(&looked_up), ["BoB"]);
    assert_code(app.register_as("boB").await, Code::AlreadyExists);
}
