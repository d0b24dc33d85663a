//! What RSA decryption may and may not influence (RUSTSEC-2023-0071, see deny.toml): no
//! acknowledgement waits for it, and a sender whose messages keep failing to decrypt is no
//! longer decrypted at all once it used up its failure budget.

use std::{
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use client::LiveEvent;
use sqlx::PgPool;

use crate::helpers::{PASSPHRASE, next_event, spawn_env, text_of, until_caught_up};

/// How long the test hook keeps a decryption hanging when nobody releases it.
const HANG: Duration = Duration::from_secs(6);

/// The delivered position chat stored for `session`'s device in `conversation_id`.
async fn delivered(db: &PgPool, session: &client::Session, conversation_id: &str) -> i64 {
    sqlx::query_scalar(
        "select coalesce(max(delivered_sequence), 0) from chat.device_positions
         where device_id = $1 and conversation_id = $2",
    )
    .bind(uuid::Uuid::parse_str(&session.account().device_id).unwrap())
    .bind(uuid::Uuid::parse_str(conversation_id).unwrap())
    .fetch_one(db)
    .await
    .unwrap()
}

/// The test runs on one thread with the services: an RSA decryption done on it (rather than
/// on a blocking thread) would stop the stream, and its acknowledgement, for as long as it runs.
#[sqlx::test(migrations = "../migrations")]
async fn a_live_message_is_acknowledged_while_its_decryption_still_runs(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let mut live = bob.clone().live(with_alice.clone());
    until_caught_up(&mut live).await;
    let (entered, decrypting) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    bob.set_decryption_hook(Some(Arc::new(move || {
        let _ = entered.send(());
        let _ = released.lock().unwrap().recv_timeout(HANG);
    })));

    let sent = alice.send_text(&to_bob, "slow to open").await.unwrap();
    let started = Instant::now();
    let mut acknowledged = false;
    while !acknowledged && started.elapsed() < 2 * HANG {
        acknowledged =
            delivered(&env.db, &bob, &with_alice.conversation_id).await >= sent.sequence as i64;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = started.elapsed();
    // The hook is reached (it holds the decryption until released).
    let decryption_had_started =
        tokio::task::spawn_blocking(move || decrypting.recv_timeout(HANG).is_ok())
            .await
            .unwrap();
    let shown_before_release = live.events.try_recv().ok();
    release.send(()).unwrap();

    assert!(
        acknowledged && waited < HANG / 2,
        "acknowledged after {waited:?}: the acknowledgement waited for the decryption"
    );
    assert!(decryption_had_started);
    assert!(
        !matches!(shown_before_release, Some(LiveEvent::Message(_))),
        "{shown_before_release:?}"
    );
    let shown = loop {
        if let LiveEvent::Message(message) = next_event(&mut live).await {
            break message;
        }
    };
    assert_eq!(text_of(&shown), "slow to open");
}

/// A failure budget of [`client::chains::MAX_FAILURES_PER_SENDER`] per sending device, kept in
/// the profile: used up, that device's messages are not decrypted at all (not even its honest
/// ones), in this run of `chat` and the next, while other senders' messages still open.
#[sqlx::test(migrations = "../migrations")]
async fn the_cli_stops_decrypting_a_sender_whose_messages_keep_failing(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let mallory = env.user("mallory").await;
    let bob = crate::cli::cli_user(&env, "bob").await;
    let budget = client::chains::MAX_FAILURES_PER_SENDER as usize;
    let to_bob = mallory.resolve("bob").await.unwrap();
    for n in 0..budget + 2 {
        crate::dishonest::send_with_a_bad_wrapped_key(
            &env.server(),
            &mallory,
            PASSPHRASE,
            &to_bob,
            "bob",
            n,
        )
        .await;
    }
    mallory
        .send_text(&to_bob, "an honest line after the bad ones")
        .await
        .unwrap();
    alice
        .send_text(&alice.resolve("bob").await.unwrap(), "hello bob")
        .await
        .unwrap();

    let first = crate::cli::chat(&env, &bob, &["--json", "history", "mallory"]).await;
    let again = crate::cli::chat(&env, &bob, &["--json", "history", "mallory"]).await;
    let from_alice = crate::cli::chat(&env, &bob, &["--json", "history", "alice"]).await;
    let as_text = crate::cli::chat(&env, &bob, &["history", "mallory"]).await;

    let reasons = |run: &crate::cli::Run| -> Vec<String> {
        run.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|message| {
                message["content"]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    let attempted = "the signature, key commitment or decryption check failed";
    let cut_off = "too many messages from this sender failed to decrypt: not decrypted";
    let mut expected = vec![attempted.to_owned(); budget];
    expected.extend(vec![cut_off.to_owned(); 3]);
    assert_eq!(first.code, 6, "{}", first.stderr);
    assert_eq!(reasons(&first), expected);
    assert_eq!(reasons(&again), vec![cut_off.to_owned(); budget + 3]);
    assert_eq!(from_alice.code, 0, "{}", from_alice.stderr);
    assert_eq!(from_alice.json()[0]["content"]["text"], "hello bob");
    assert!(as_text.stdout.contains(cut_off), "{}", as_text.stdout);
    assert!(!as_text.stdout.contains("an honest line"));
}
