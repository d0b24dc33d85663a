//! The CLI and TLS: https:// is always TLS (the gateway's own TLS listener, with a certificate
//! from a private CA), never plaintext; plaintext http:// beyond loopback is warned about.

use std::path::Path;

use sqlx::PgPool;

use crate::{
    cli::{Run, chat_custom},
    helpers::{PASSPHRASE, PASSWORD, TestEnv, spawn_env, spawn_tls_env},
};

/// Runs `chat` on the profile `dir` against `server`, trusting `ca_file` when given.
async fn chat_tls(server: &str, dir: &Path, ca_file: Option<&Path>, args: &[&str]) -> Run {
    let dir = dir.to_str().unwrap();
    let mut env = vec![
        ("CHAT_PROFILE_DIR", dir),
        ("CHAT_PASSWORD", PASSWORD),
        ("CHAT_PASSPHRASE", PASSPHRASE),
    ];
    if let Some(ca_file) = ca_file {
        env.push(("CHAT_CA_FILE", ca_file.to_str().unwrap()));
    }
    chat_custom(server, args, &env, "").await
}

async fn user_exists(env: &TestEnv, username: &str) -> bool {
    sqlx::query_scalar("select exists (select 1 from auth.users where username = $1)")
        .bind(username)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_registers_logs_in_and_sends_over_https_trusting_the_ca_file(db: PgPool) {
    let env = spawn_tls_env(db).await;
    env.user("warmup").await;
    let ca = env.tls.as_ref().unwrap().ca_file.clone();
    let server = env.server();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");
    let (alice, bob) = (env.profile_dir(), env.profile_dir());

    let registered = chat_tls(&server, &alice, Some(&ca), &["register", "alice"]).await;
    let bob_registered = chat_tls(&server, &bob, Some(&ca), &["register", "bob"]).await;
    let logged_in = chat_tls(&server, &alice, Some(&ca), &["login", "alice"]).await;
    let sent = chat_tls(&server, &alice, Some(&ca), &["send", "bob", "over TLS"]).await;
    let history = chat_tls(&server, &bob, Some(&ca), &["history", "alice"]).await;

    for run in [&registered, &bob_registered, &logged_in, &sent, &history] {
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    }
    assert_eq!(
        crate::cli::untimed(&history.stdout),
        "[1] alice: over TLS\n"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn without_the_ca_file_the_cli_refuses_the_servers_certificate_and_sends_nothing(db: PgPool) {
    let env = spawn_tls_env(db).await;
    let dir = env.profile_dir();

    let run = chat_tls(&env.server(), &dir, None, &["register", "carol"]).await;

    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("certificate is not trusted") && run.stderr.contains("--ca-file"),
        "{}",
        run.stderr
    );
    assert!(!user_exists(&env, "carol").await);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_https_url_never_falls_back_to_plaintext(db: PgPool) {
    // A plaintext gateway behind an https:// URL: the password must not reach it.
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let dir = env.profile_dir();
    let https = format!("https://{}", env.gateway);

    let run = chat_tls(&https, &dir, None, &["register", "dave"]).await;

    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("TLS"), "{}", run.stderr);
    assert!(!user_exists(&env, "dave").await);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_warns_before_sending_a_password_in_plaintext_beyond_loopback(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    // 0.0.0.0 is not a loopback address, but Linux delivers a connection to it on this machine,
    // so the test reaches no other host.
    let beyond_loopback = format!("http://0.0.0.0:{}", env.gateway.port());
    let (erin, frank) = (env.profile_dir(), env.profile_dir());

    let warned = chat_tls(&beyond_loopback, &erin, None, &["register", "erin"]).await;
    let loopback = chat_tls(&env.server(), &frank, None, &["register", "frank"]).await;
    let localhost = format!("http://localhost:{}", env.gateway.port());
    let by_name = chat_tls(&localhost, &frank, None, &["login", "frank"]).await;

    assert!(
        warned.stderr.starts_with(&format!(
            "warning: {beyond_loopback} is plaintext http://: the password will cross the network unencrypted"
        )),
        "{}",
        warned.stderr
    );
    for run in [&loopback, &by_name] {
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_profile_that_used_tls_refuses_a_plaintext_login_to_the_same_host(db: PgPool) {
    let env = spawn_tls_env(db).await;
    env.user("warmup").await;
    let ca = env.tls.as_ref().unwrap().ca_file.clone();
    let dir = env.profile_dir();
    let registered = chat_tls(&env.server(), &dir, Some(&ca), &["register", "gina"]).await;
    assert_eq!(registered.code, 0, "{}", registered.stderr);

    let downgrade = format!("http://127.0.0.1:{}", env.gateway.port());
    let run = chat_tls(&downgrade, &dir, Some(&ca), &["login", "gina"]).await;

    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("over TLS: refusing"), "{}", run.stderr);
}
