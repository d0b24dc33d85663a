//! `chat conversations` (most recent activity first, the time of the newest message, a preview
//! decrypted on the device) and empty messages refused everywhere, through the real binary.

use serde_json::Value;
use sqlx::PgPool;

use crate::{
    cli::{chat, chat_custom, cli_user},
    helpers::{PASSWORD, spawn_env},
};

fn row<'a>(list: &'a Value, with: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["with"] == with)
        .unwrap_or_else(|| panic!("no conversation with {with} in {list}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn conversations_are_listed_by_recent_activity_with_time_and_a_verified_preview(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    let carol = cli_user(&env, "carol").await;
    for text in ["one", "two", "three"] {
        let sent = chat(&env, &alice, &["send", "bob", text]).await;
        assert_eq!(sent.code, 0, "{}", sent.stderr);
    }
    // One message, later: carol's conversation has the lower sequence and the newer activity.
    chat(&env, &carol, &["send", "bob", "hi from\ncarol"]).await;

    let first = chat(&env, &bob, &["--json", "conversations"]).await;
    chat(
        &env,
        &alice,
        &[
            "send",
            "bob",
            "four: a longer message, so that the preview has to cut it somewhere",
        ],
    )
    .await;
    let second = chat(&env, &bob, &["conversations"]).await;
    let after = chat(&env, &bob, &["--json", "conversations"]).await;

    assert_eq!(first.code, 0, "{}", first.stderr);
    let list = first.json();
    let order: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["with"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["carol", "alice"],
        "by activity, not by sequence: {list}"
    );
    let (with_carol, with_alice) = (row(&list, "carol"), row(&list, "alice"));
    assert_eq!(with_alice["last_sequence"], 3);
    assert_eq!(with_carol["last_sequence"], 1);
    assert!(
        with_carol["last_message_at"].as_i64().unwrap()
            >= with_alice["last_message_at"].as_i64().unwrap()
    );
    assert_eq!(
        with_carol["preview"],
        serde_json::json!({"status": "verified", "from": "carol", "text": "hi from carol"})
    );
    assert_eq!(with_alice["preview"]["text"], "three");
    // A preview is not reading: the unread counts stay.
    assert_eq!(with_alice["unread_count"], 3);
    assert_eq!(with_carol["unread_count"], 1);

    assert_eq!(second.code, 0, "{}", second.stderr);
    let lines: Vec<&str> = second.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", second.stdout);
    assert!(
        lines[0].starts_with("alice  4 unread  (direct)  "),
        "{}",
        second.stdout
    );
    assert!(
        lines[0].contains(" UTC  alice: four: a longer message"),
        "{}",
        second.stdout
    );
    assert!(
        lines[0].ends_with('…') && lines[0].chars().count() < 130,
        "{}",
        second.stdout
    );
    assert!(
        lines[1].starts_with("carol  1 unread") && lines[1].ends_with("carol: hi from carol"),
        "{}",
        second.stdout
    );
    assert_eq!(
        row(&after.json(), "alice")["preview"]["text"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        client::PREVIEW_CHARS
    );
}

/// A new device of bob's was not a recipient of earlier messages: its list says so, and shows
/// no plaintext. `--no-preview` needs no passphrase.
#[sqlx::test(migrations = "../migrations")]
async fn a_preview_this_device_cannot_open_is_a_placeholder(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    cli_user(&env, "bob").await;
    chat(&env, &alice, &["send", "bob", "before your new device"]).await;
    let new_device = env.profile_dir();
    let login = chat(&env, &new_device, &["login", "bob"]).await;
    assert_eq!(login.code, 0, "{}", login.stderr);

    let json = chat(&env, &new_device, &["--json", "conversations"]).await;
    let text = chat(&env, &new_device, &["conversations"]).await;
    let dir = new_device.to_str().unwrap();
    let without_keys = chat_custom(
        &env.server(),
        &["--json", "conversations", "--no-preview"],
        &[("CHAT_PROFILE_DIR", dir), ("CHAT_PASSWORD", PASSWORD)],
        "",
    )
    .await;

    assert_eq!(json.code, 0, "{}", json.stderr);
    assert_eq!(
        row(&json.json(), "alice")["preview"],
        serde_json::json!({"status": "not_shown"})
    );
    assert!(
        text.stdout.contains("(a message this device cannot show)"),
        "{}",
        text.stdout
    );
    for run in [&json, &text] {
        assert!(
            !run.stdout.contains("before your new device"),
            "{}",
            run.stdout
        );
    }
    assert_eq!(without_keys.code, 0, "{}", without_keys.stderr);
    let listed = row(&without_keys.json(), "alice").clone();
    assert!(listed.get("preview").is_none(), "{listed}");
    assert_eq!(listed["last_sequence"], 1);
}

/// `chat send bob ""` is a usage error (exit code 2) and nothing reaches the server; the library
/// refuses it too, in a send and in a live conversation.
#[sqlx::test(migrations = "../migrations")]
async fn empty_messages_are_refused_by_the_cli_and_the_library(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    let library = env.user("dave").await;

    let empty = chat(&env, &alice, &["send", "bob", ""]).await;
    let blank = chat(&env, &alice, &["send", "bob", " ", "\t"]).await;
    let sent = chat(&env, &alice, &["send", "bob", "not empty"]).await;
    let listed = chat(&env, &bob, &["--json", "conversations"]).await;
    let target = library.resolve("alice").await.unwrap();
    let send_text = library.send_text(&target, "  \n").await;
    let live = library.clone().live(target.clone());
    let live_send = live.send(String::new()).await;

    for run in [&empty, &blank] {
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert_eq!(
            run.stderr,
            "error: the message is empty: nothing was sent (write some text)\n"
        );
    }
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(
        sent.stdout, "sent #1\n",
        "the refused ones took no sequence"
    );
    assert_eq!(row(&listed.json(), "alice")["last_sequence"], 1);
    assert!(
        matches!(send_text, Err(client::Error::Usage(..))),
        "{send_text:?}"
    );
    assert!(
        matches!(live_send, Err(client::Error::Usage(..))),
        "{live_send:?}"
    );
    let history = library.history(&target, 10).await.unwrap();
    assert!(history.is_empty(), "{history:?}");
}

/// A preview opens the newest message alone, out of order: it must not hide from the history that
/// follows that the server dropped the message before it (suite V2 chains).
#[sqlx::test(migrations = "../migrations")]
async fn a_preview_does_not_hide_a_dropped_message_from_the_history(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    for text in ["one", "two: the one the server drops", "three"] {
        chat(&env, &alice, &["send", "bob", text]).await;
    }
    for statement in [
        "delete from chat.messages where sequence = 2",
        "update chat.message_keys set sequence = 2 where sequence = 3",
        "update chat.messages set sequence = 2 where sequence = 3",
        "update chat.conversations set last_sequence = 2",
    ] {
        sqlx::query(statement).execute(&env.db).await.unwrap();
    }

    let listed = chat(&env, &bob, &["--json", "conversations"]).await;
    let history = chat(&env, &bob, &["--json", "history", "alice"]).await;

    assert_eq!(row(&listed.json(), "alice")["preview"]["text"], "three");
    let history = history.json();
    assert_eq!(history[1]["content"]["text"], "three");
    assert_eq!(
        history[1]["chain"],
        serde_json::json!([{"kind": "gap", "first": 2, "last": 2}]),
        "{history}"
    );
}
