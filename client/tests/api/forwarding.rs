//! History on a new device (issue 22, section 1): another device of the same user forwards the
//! keys of earlier messages (`chat forward-keys`, `Session::forward_keys`), through the real
//! gateway; the new device reads them verified, and refuses forwarded keys that a malicious
//! server tampered with or attributed to another device.

use std::sync::Arc;

use client::Content;
use proto::chat::v1 as chat_pb;
use sqlx::PgPool;

use crate::{
    attacks::LIST_MESSAGES,
    cli::{chat, cli_user},
    helpers::{TestEnv, spawn_env, spawn_malicious_env, text_of},
};

#[sqlx::test(migrations = "../migrations")]
async fn a_new_cli_device_reads_earlier_messages_once_another_device_forwarded_their_keys(
    db: PgPool,
) {
    let env = spawn_env(db).await;
    let alice = three_messages_between_alice_and_bob(&env).await;
    let alices_new_device = new_device_of(&env, "alice").await;

    // Sealed before the device existed: not for it. Shown as such, not as an empty history.
    let before = chat(&env, &alices_new_device, &["--json", "history", "bob"]).await;
    let forwarded = chat(&env, &alice, &["--json", "forward-keys"]).await;
    let after = chat(&env, &alices_new_device, &["--json", "history", "bob"]).await;
    let again = chat(&env, &alice, &["--json", "forward-keys"]).await;

    assert_eq!(before.code, 0, "{}", before.stderr);
    let before = before.json();
    assert_eq!(before.as_array().unwrap().len(), 1, "{before}");
    assert_eq!(before[0]["unreadable"]["count"], 3, "{before}");
    assert_eq!(before[0]["unreadable"]["before_this_device"], true);
    assert_eq!(forwarded.code, 0, "{}", forwarded.stderr);
    assert_eq!(forwarded.json()["keys"], 3, "{}", forwarded.stdout);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert_eq!(shown(&after.json()), THE_THREE_VERIFIED, "{}", after.stdout);
    assert_eq!(again.json()["keys"], 0, "nothing new: {}", again.stdout);
}

/// A key forwarded to a device is forwarded on: alice's second device, which reads the earlier
/// messages only through the keys her first device forwarded to it, gives them to her third
/// device, while the first one does nothing more.
#[sqlx::test(migrations = "../migrations")]
async fn a_device_forwards_on_the_keys_forwarded_to_it_so_that_a_third_device_reads_the_history(
    db: PgPool,
) {
    let env = spawn_env(db).await;
    let alice = three_messages_between_alice_and_bob(&env).await;
    let second = new_device_of(&env, "alice").await;
    let from_first = chat(&env, &alice, &["--json", "forward-keys"]).await;
    let third = new_device_of(&env, "alice").await;

    let from_second = chat(&env, &second, &["--json", "forward-keys"]).await;
    let on_third = chat(&env, &third, &["--json", "history", "bob"]).await;

    assert_eq!(from_first.json()["keys"], 3, "{}", from_first.stdout);
    assert_eq!(from_second.code, 0, "{}", from_second.stderr);
    assert_eq!(from_second.json()["keys"], 3, "{}", from_second.stdout);
    assert_eq!(on_third.code, 0, "{}", on_third.stderr);
    assert_eq!(
        shown(&on_third.json()),
        THE_THREE_VERIFIED,
        "{}",
        on_third.stdout
    );
}

/// alice and bob (CLI profiles) write "one", "two" and "three"; returns alice's profile.
async fn three_messages_between_alice_and_bob(env: &TestEnv) -> std::path::PathBuf {
    env.user("warmup").await;
    let alice = cli_user(env, "alice").await;
    let bob = cli_user(env, "bob").await;
    for (dir, to, text) in [
        (&alice, "bob", "one"),
        (&bob, "alice", "two"),
        (&alice, "bob", "three"),
    ] {
        let sent = chat(env, dir, &["send", to, text]).await;
        assert_eq!(sent.code, 0, "{}", sent.stderr);
    }
    alice
}

/// A new CLI profile logged in as `username`: a new device.
async fn new_device_of(env: &TestEnv, username: &str) -> std::path::PathBuf {
    let profile = env.profile_dir();
    let login = chat(env, &profile, &["login", username]).await;
    assert_eq!(login.code, 0, "{}", login.stderr);
    profile
}

const THE_THREE_VERIFIED: [&str; 3] = [
    "verified alice: one",
    "verified bob: two",
    "verified alice: three",
];

/// Each message of a `--json history` as "status sender: text".
fn shown(history: &serde_json::Value) -> Vec<String> {
    let field = |value: &serde_json::Value| value.as_str().unwrap_or("?").to_owned();
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {}: {}",
                field(&m["content"]["status"]),
                field(&m["sender_username"]),
                field(&m["content"]["text"])
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn forwarded_keys_tampered_with_or_attributed_to_another_device_are_refused(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let with_alice = bob.resolve("alice").await.unwrap();
    bob.send_text(&with_alice, "before the new device")
        .await
        .unwrap();
    let alices_new_device = env.device("alice").await;
    let alices_third_device = env.device("alice").await;
    let with_bob = alices_new_device.resolve("bob").await.unwrap();
    let forwarded = alice.forward_keys().await.unwrap();
    assert_eq!(forwarded.keys, 2, "to both new devices: {forwarded:?}");
    let honest = alices_new_device.history(&with_bob, 10).await.unwrap();
    assert_eq!(honest.len(), 1);
    assert_eq!(text_of(&honest[0]), "before the new device");
    let ids = Ids {
        bob_user: bob.account().user_id.clone(),
        bob_device: bob.account().device_id.clone(),
        new_device: alices_new_device.account().device_id.clone(),
        third_device: alices_third_device.account().device_id.clone(),
    };

    for (lie, rewrite) in lies(&ids) {
        server(&env).chat.rewrite(
            LIST_MESSAGES,
            move |response: &mut chat_pb::ListMessagesResponse| {
                for message in &mut response.messages {
                    for key in &mut message.forwarded_keys {
                        rewrite(key);
                    }
                }
            },
        );

        let history = alices_new_device.history(&with_bob, 10).await.unwrap();

        assert_eq!(history.len(), 1, "{lie}");
        assert!(
            matches!(history[0].content, Content::Failed { .. }),
            "{lie}: {:?}",
            history[0].content
        );
    }
}

struct Ids {
    bob_user: String,
    bob_device: String,
    new_device: String,
    third_device: String,
}

type Rewrite = Arc<dyn Fn(&mut chat_pb::ForwardedKey) + Send + Sync>;

/// What a malicious server can do to a forwarded key it serves.
fn lies(ids: &Ids) -> Vec<(&'static str, Rewrite)> {
    let (bob_user, bob_device) = (ids.bob_user.clone(), ids.bob_device.clone());
    let (new_device, third_device) = (ids.new_device.clone(), ids.third_device.clone());
    vec![
        (
            "a flipped bit in the wrapped key",
            Arc::new(|key: &mut chat_pb::ForwardedKey| key.wrapped_key[7] ^= 1),
        ),
        (
            "a flipped bit in the signature",
            Arc::new(|key: &mut chat_pb::ForwardedKey| key.signature[3] ^= 1),
        ),
        (
            "attributed to another trusted device of the user (signed by the wrong device)",
            Arc::new(move |key: &mut chat_pb::ForwardedKey| {
                key.forwarder_device_id.clone_from(&third_device);
            }),
        ),
        (
            "attributed to a device of another user",
            Arc::new(move |key: &mut chat_pb::ForwardedKey| {
                key.forwarder_user_id.clone_from(&bob_user);
                key.forwarder_device_id.clone_from(&bob_device);
            }),
        ),
        (
            "attributed to the receiving device itself",
            Arc::new(move |key: &mut chat_pb::ForwardedKey| {
                key.forwarder_device_id.clone_from(&new_device);
            }),
        ),
    ]
}

fn server(env: &TestEnv) -> &crate::attacks::MaliciousServer {
    env.malicious.as_ref().expect("a malicious environment")
}
