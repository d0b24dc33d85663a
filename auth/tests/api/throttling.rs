//! Login throttling, through the real gateway: each client connects from its own loopback address
//! (127.0.0.2, 127.0.0.3, ...), which the gateway passes on to auth as the caller's address.

use std::time::Duration;

use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{PASSWORD, assert_code, spawn_behind_gateway, throttled};

const WRONG: &str = "not the password";
const ATTACKER: &str = "127.0.0.2";
const OWNER: &str = "127.0.0.3";

#[sqlx::test(migrations = "../migrations")]
async fn an_attackers_failures_do_not_stop_the_owners_right_password_from_another_address(
    db: PgPool,
) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register("alice").await;
    let mut failures = 0;
    for _ in 0..60 {
        if failures == 30 {
            break;
        }
        match app.login_from(ATTACKER, "alice", WRONG).await {
            Err(status) if status.code() == Code::Unauthenticated => failures += 1,
            // Waiting out each delay (by moving it into the past) only grows the next one.
            other => {
                throttled(other);
                app.end_pair_delays().await;
            }
        }
    }

    let owner = app.login_from(OWNER, "alice", PASSWORD).await;

    assert_eq!(failures, 30, "the attacker's guesses, each after its delay");
    owner.expect("the owner's right password from an address that has not failed");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failing_address_waits_longer_after_each_failure_and_gets_retry_info(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register("bob").await;
    for _ in 0..3 {
        // The first three failures of a username from an address cost nothing.
        assert_code(
            app.login_from(ATTACKER, "bob", WRONG).await,
            Code::Unauthenticated,
        );
    }

    let mut delays = Vec::new();
    for _ in 0..4 {
        assert_code(
            app.login_from(ATTACKER, "bob", WRONG).await,
            Code::Unauthenticated,
        );
        let delay = throttled(app.login_from(ATTACKER, "bob", WRONG).await);
        // Attempts while waiting are refused without counting: the wait does not grow.
        let again = throttled(app.login_from(ATTACKER, "bob", PASSWORD).await);
        assert!(again <= delay, "{again:?} after {delay:?}");
        delays.push(delay);
        app.end_pair_delays().await;
    }

    // 1 s, 2 s, 4 s, 8 s, each less the moment that passed since the failure that set it.
    for (delay, full) in delays.iter().zip([1, 2, 4, 8]) {
        assert!(*delay <= Duration::from_secs(full), "{delays:?}");
    }
    assert!(
        delays.windows(2).all(|pair| pair[0] < pair[1]),
        "{delays:?}"
    );
    assert!(delays[3] > Duration::from_secs(4), "{delays:?}");
    app.login_from(OWNER, "bob", PASSWORD).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_success_resets_the_count_of_its_username_and_address(db: PgPool) {
    let app = spawn_behind_gateway(db, auth::Config::for_tests()).await;
    app.register("carol").await;
    for _ in 0..3 {
        let _ = app.login_from(OWNER, "carol", WRONG).await;
    }
    app.login_from(OWNER, "carol", PASSWORD).await.unwrap();

    for _ in 0..3 {
        assert_code(
            app.login_from(OWNER, "carol", WRONG).await,
            Code::Unauthenticated,
        );
    }

    app.login_from(OWNER, "carol", PASSWORD).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn spraying_many_usernames_from_one_address_is_limited_for_that_address_only(db: PgPool) {
    let mut config = auth::Config::for_tests();
    config.login_throttle.failures_per_address = 5;
    let app = spawn_behind_gateway(db, config).await;
    app.register("dave").await;
    for username in ["u1-guess", "u2-guess", "u3-guess", "u4-guess", "u5-guess"] {
        assert_code(
            app.login_from(ATTACKER, username, WRONG).await,
            Code::Unauthenticated,
        );
    }

    let sprayer = throttled(app.login_from(ATTACKER, "dave", PASSWORD).await);
    let owner = app.login_from(OWNER, "dave", PASSWORD).await;

    // The address waits for the end of its 15-minute window.
    assert!(
        sprayer > Duration::from_secs(800) && sprayer <= Duration::from_secs(900),
        "{sprayer:?}"
    );
    owner.expect("another address is not limited by the sprayer's failures");
}

#[sqlx::test(migrations = "../migrations")]
async fn at_the_accounts_ceiling_only_addresses_the_owner_logged_in_from_get_through(db: PgPool) {
    let mut config = auth::Config::for_tests();
    config.login_throttle.failures_per_account = 6;
    let app = spawn_behind_gateway(db, config).await;
    app.register("erin").await;
    app.login_from(OWNER, "erin", PASSWORD).await.unwrap();
    // One failure from each of six addresses: no pair is slowed, the account reaches 6.
    for host in 10..16 {
        assert_code(
            app.login_from(&format!("127.0.0.{host}"), "erin", WRONG)
                .await,
            Code::Unauthenticated,
        );
    }

    let new_address_right_password = app.login_from("127.0.0.20", "erin", PASSWORD).await;
    let new_address_guess = app.login_from("127.0.0.21", "erin", WRONG).await;
    let owners_address = app.login_from(OWNER, "erin", PASSWORD).await;

    let delay = throttled(new_address_right_password);
    assert!(
        delay > Duration::from_secs(3500) && delay <= Duration::from_secs(3600),
        "{delay:?}"
    );
    throttled(new_address_guess);
    owners_address.expect("an address the owner logged in from is not held back");
    // The owner's success reset the count: new addresses are welcome again.
    app.login_from("127.0.0.20", "erin", PASSWORD)
        .await
        .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn at_the_ceiling_other_addresses_get_one_attempt_per_lock_period(db: PgPool) {
    let mut config = auth::Config::for_tests();
    config.login_throttle.failures_per_account = 3;
    let app = spawn_behind_gateway(db, config).await;
    app.register("frank").await;
    for host in 10..13 {
        let _ = app
            .login_from(&format!("127.0.0.{host}"), "frank", WRONG)
            .await;
    }
    throttled(app.login_from("127.0.0.13", "frank", WRONG).await);

    // The lock period passes: one more attempt is admitted, and it renews the lock.
    sqlx::query(
        "update auth.login_throttles set blocked_until = now() where throttle_key = 'user:frank'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let admitted = app.login_from("127.0.0.13", "frank", WRONG).await;
    let next = app.login_from("127.0.0.14", "frank", PASSWORD).await;

    assert_code(admitted, Code::Unauthenticated);
    throttled(next);
}

#[sqlx::test(migrations = "../migrations")]
async fn parallel_guesses_cannot_slip_past_the_ceiling(db: PgPool) {
    let mut config = auth::Config::for_tests();
    config.login_throttle.failures_per_account = 5;
    let app = spawn_behind_gateway(db, config).await;
    app.register("grace").await;
    let mut clients = Vec::new();
    for host in 10..30 {
        clients.push(app.client_from(&format!("127.0.0.{host}")).await);
    }

    let attempts = clients.into_iter().map(|mut client| async move {
        client
            .login(proto::auth::v1::LoginRequest {
                username: "grace".into(),
                password: WRONG.into(),
                ..Default::default()
            })
            .await
    });
    let results = futures::future::join_all(attempts).await;

    let codes: Vec<Code> = results
        .iter()
        .map(|result| result.as_ref().unwrap_err().code())
        .collect();
    let guesses = codes.iter().filter(|code| **code == Code::Unauthenticated);
    assert_eq!(guesses.count(), 5, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|code| matches!(code, Code::Unauthenticated | Code::ResourceExhausted)),
        "{codes:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_username_that_cannot_exist_counts_against_its_address_only(db: PgPool) {
    let mut config = auth::Config::for_tests();
    config.login_throttle.failures_per_address = 2;
    let app = spawn_behind_gateway(db, config).await;
    let junk = "Not A Username!".repeat(100);

    for _ in 0..2 {
        assert_code(
            app.login_from(ATTACKER, &junk, WRONG).await,
            Code::Unauthenticated,
        );
    }

    throttled(app.login_from(ATTACKER, &junk, WRONG).await);
    let keys: Vec<String> = sqlx::query_scalar("select throttle_key from auth.login_throttles")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, ["addr:127.0.0.2"]);
}
