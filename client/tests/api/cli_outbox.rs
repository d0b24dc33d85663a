//! Through the `chat` binary: no message typed is lost (the profile's outbox, `chat pending`,
//! `chat flush`), and a new device's history explains the messages it cannot read, and its live
//! conversation shows them once another device forwards their keys (issue 22, sections 5 and 1).

use std::path::PathBuf;

use sqlx::PgPool;

use crate::{
    cli::{Background, chat, chat_on, chat_with_stdin, cli_user, untimed},
    helpers::{CuttableProxy, TestEnv, spawn_env, spawn_malicious_env},
};

const SEND_MESSAGE: &str = "/chat.v1.ChatService/SendMessage";

async fn stored_messages(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from chat.messages")
        .fetch_one(db)
        .await
        .unwrap()
}

/// bob sends alice three messages through the CLI, then alice logs in on a new device: the
/// stack, alice's old profile, bob's profile and alice's new one.
async fn alice_logs_in_on_a_new_device_after_three_messages(
    db: PgPool,
) -> (TestEnv, PathBuf, PathBuf, PathBuf) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    for text in ["one", "two", "three"] {
        let sent = chat(&env, &bob, &["send", "alice", text]).await;
        assert_eq!(sent.code, 0, "{}", sent.stderr);
    }
    let alices_new_device = env.profile_dir();
    let login = chat(&env, &alices_new_device, &["login", "alice"]).await;
    assert_eq!(login.code, 0, "{}", login.stderr);
    (env, alice, bob, alices_new_device)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_message_whose_answer_is_lost_is_kept_and_sent_once_by_the_next_send_or_flush(
    db: PgPool,
) {
    let env = spawn_malicious_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    let chat_service = &env.malicious.as_ref().unwrap().chat;

    // The chat service stores each send, and its answer never comes back.
    chat_service.lose_answers(SEND_MESSAGE, 1000);
    let unanswered = chat(&env, &alice, &["send", "bob", "first"]).await;
    let pending = chat(&env, &alice, &["--json", "pending"]).await;
    chat_service.lose_answers(SEND_MESSAGE, 0);
    let next = chat(&env, &alice, &["send", "bob", "second"]).await;
    let after_next = chat(&env, &alice, &["--json", "pending"]).await;
    chat_service.lose_answers(SEND_MESSAGE, 1000);
    let unanswered_again = chat(&env, &alice, &["send", "bob", "third"]).await;
    let still_unanswered = chat(&env, &alice, &["flush"]).await;
    chat_service.lose_answers(SEND_MESSAGE, 0);
    let flush = chat(&env, &alice, &["--json", "flush"]).await;
    let after_flush = chat(&env, &alice, &["--json", "pending"]).await;
    let history = chat(&env, &bob, &["history", "alice"]).await;

    assert_eq!(unanswered.code, 5, "{}", unanswered.stderr);
    assert!(
        unanswered.stderr.contains("kept in this profile")
            && unanswered.stderr.contains("chat flush"),
        "{}",
        unanswered.stderr
    );
    assert_eq!(
        pending.json().as_array().unwrap().len(),
        1,
        "{}",
        pending.stdout
    );
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert!(
        next.stdout.contains("sent kept message")
            && next.stdout.contains("(it had reached the server already)"),
        "{}",
        next.stdout
    );
    assert!(next.stdout.ends_with("sent #2\n"), "{}", next.stdout);
    assert_eq!(after_next.json(), serde_json::json!([]));
    assert_eq!(unanswered_again.code, 5, "{}", unanswered_again.stderr);
    assert_eq!(still_unanswered.code, 5, "{}", still_unanswered.stderr);
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    assert_eq!(flush.json()["sequence"], 3, "{}", flush.stdout);
    assert_eq!(flush.json()["duplicate"], true);
    assert_eq!(after_flush.json(), serde_json::json!([]));
    assert_eq!(
        untimed(&history.stdout),
        "[1] alice: first\n[2] alice: second\n[3] alice: third\n"
    );
    assert_eq!(stored_messages(&env.db).await, 3);
    let mode = std::fs::metadata(alice.join("outbox.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

/// alice, whose profile reaches the gateway through a proxy the test can cut, and bob (CLI
/// profiles), after alice sent bob "before" (so her profile pinned his device).
async fn alice_wrote_to_bob_through_a_cuttable_proxy(
    db: PgPool,
) -> (TestEnv, CuttableProxy, PathBuf, PathBuf) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let outage = CuttableProxy::start(env.gateway).await;
    let alice = env.profile_dir();
    let registered = chat_on(&outage.url(), &alice, &["register", "alice"]).await;
    assert_eq!(registered.code, 0, "{}", registered.stderr);
    let bob = cli_user(&env, "bob").await;
    let before = chat(&env, &alice, &["send", "bob", "before"]).await;
    assert_eq!(before.code, 0, "{}", before.stderr);
    (env, outage, alice, bob)
}

/// alice sends bob "kept" while the server is down (the `chat send` is killed once it kept the
/// message), then bob logs in on a new device: returns that device's profile.
async fn kept_while_down_then_bob_adds_a_device(
    env: &TestEnv,
    outage: &CuttableProxy,
    alice: &std::path::Path,
) -> PathBuf {
    outage.set_down(true);
    let kept = Background::start_on(&outage.url(), alice, &["send", "bob", "kept"]);
    kept.printed_on_stderr("kept in this profile").await;
    drop(kept); // killed: the message stays in the profile
    outage.set_down(false);
    let bobs_new_device = env.profile_dir();
    let login = chat(env, &bobs_new_device, &["login", "bob"]).await;
    assert_eq!(login.code, 0, "{}", login.stderr);
    bobs_new_device
}

/// The texts of a `--json history`, unreadable runs and failures left out.
fn texts(history: &serde_json::Value) -> Vec<String> {
    history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["content"]["text"].as_str().map(str::to_owned))
        .collect()
}

/// alice's profile reaches the gateway through a proxy, which then resets every connection as
/// if the server were down: `chat send` seals from the devices alice pinned for bob (and for the
/// members of her group) and keeps the message (the first run is killed once it says so), `chat
/// pending` shows its text, and once the server is back every message is delivered exactly once,
/// sealed again for bob's device added meanwhile (a stale pin is refused by the server with a
/// device-list mismatch). A message to someone alice never wrote to is not kept, and `chat send`
/// says why.
#[sqlx::test(migrations = "../migrations")]
async fn a_message_sent_while_the_server_is_down_is_kept_shown_and_delivered_once_when_it_is_back(
    db: PgPool,
) {
    let (env, outage, alice, bob) = alice_wrote_to_bob_through_a_cuttable_proxy(db).await;
    let group = chat(&env, &alice, &["group", "create", "friends", "bob"]).await;
    assert_eq!(group.code, 0, "{}", group.stderr);
    let to_group = chat(&env, &alice, &["send", "#friends", "hi all"]).await;
    assert_eq!(to_group.code, 0, "{}", to_group.stderr);

    outage.set_down(true);
    let killed = Background::start_on(&outage.url(), &alice, &["send", "bob", "during"]);
    let said = killed.printed_on_stderr("kept in this profile").await;
    drop(killed); // SIGKILL: no chance to clean up
    let pending = chat(&env, &alice, &["--json", "pending"]).await;
    let pending_text = chat(&env, &alice, &["pending"]).await;
    let bobs_new_device = env.profile_dir();
    let login = chat(&env, &bobs_new_device, &["login", "bob"]).await;
    assert_eq!(login.code, 0, "{}", login.stderr);
    let waiting = Background::start_on(&outage.url(), &alice, &["send", "bob", "after"]);
    waiting.printed_on_stderr("kept in this profile").await;
    let group_waiting =
        Background::start_on(&outage.url(), &alice, &["send", "#friends", "all during"]);
    group_waiting
        .printed_on_stderr("kept in this profile")
        .await;
    let stranger = Background::start_on(&outage.url(), &alice, &["send", "carol", "hi"]);
    let stranger_said = stranger.printed_on_stderr("trying again").await;
    drop(stranger);
    outage.set_down(false);
    let sent = waiting.finish().await;
    let sent_to_group = group_waiting.finish().await;
    let pending_after = chat(&env, &alice, &["--json", "pending"]).await;
    // The new device first: the old one forwards the keys of what it reads to it.
    let new_device = chat(&env, &bobs_new_device, &["--json", "history", "alice"]).await;
    let old_device = chat(&env, &bob, &["history", "alice"]).await;
    let group_on_new_device = chat(&env, &bobs_new_device, &["history", "#friends"]).await;

    assert!(said.contains("… pending"), "{said}");
    assert!(!said.contains("not sent"), "{said}");
    let kept = pending.json();
    assert_eq!(kept.as_array().unwrap().len(), 1, "{}", pending.stdout);
    assert_eq!(kept[0]["text"], "during", "{}", pending.stdout);
    assert_eq!(kept[0]["to"], "bob");
    assert_eq!(kept[0]["attempts"], 0);
    assert!(
        pending_text.stdout.starts_with("to bob  kept since ")
            && pending_text.stdout.contains("\"during\""),
        "{}",
        pending_text.stdout
    );
    assert!(
        stranger_said.contains(
            "this profile has not exchanged a message with carol yet and knows none of their \
             devices, so the message cannot be sealed without the server"
        ),
        "{stranger_said}"
    );
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        sent.stdout.contains("sent kept message") && sent.stdout.ends_with("sent #3\n"),
        "{}",
        sent.stdout
    );
    assert_eq!(pending_after.json(), serde_json::json!([]));
    assert_eq!(
        untimed(&old_device.stdout),
        "[1] alice: before\n[2] alice: during\n[3] alice: after\n",
        "{}",
        old_device.stderr
    );
    let new_device_entries = new_device.json();
    let readable: Vec<&str> = new_device_entries
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["content"]["text"].as_str())
        .collect();
    assert_eq!(readable, ["during", "after"], "{}", new_device.stdout);
    assert_eq!(sent_to_group.code, 0, "{}", sent_to_group.stderr);
    assert!(
        untimed(
            group_on_new_device
                .stdout
                .lines()
                .last()
                .map(|line| format!("{line}\n"))
                .as_deref()
                .unwrap_or("")
        ) == "[2] alice: all during\n",
        "{}",
        group_on_new_device.stdout
    );
    assert_eq!(stored_messages(&env.db).await, 5);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_live_conversation_sends_a_message_kept_by_an_earlier_run_first(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    let chat_service = &env.malicious.as_ref().unwrap().chat;
    chat_service.lose_answers(SEND_MESSAGE, 1000);
    let unanswered = chat(&env, &alice, &["send", "bob", "kept"]).await;
    chat_service.lose_answers(SEND_MESSAGE, 0);

    let live = chat_with_stdin(&env.server(), &alice, &["chat", "bob"], "typed live\n").await;
    let pending = chat(&env, &alice, &["--json", "pending"]).await;
    let history = chat(&env, &bob, &["history", "alice"]).await;

    assert_eq!(unanswered.code, 5, "{}", unanswered.stderr);
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert_eq!(pending.json(), serde_json::json!([]));
    assert_eq!(
        untimed(&history.stdout),
        "[1] alice: kept\n[2] alice: typed live\n"
    );
    assert_eq!(stored_messages(&env.db).await, 2);
}

/// A message kept while the server was down, sealed before bob added a device: the server
/// refuses it for the device list when the live conversation sends it, and the live
/// conversation seals it again from its own envelope (its text is not kept in the clear) for
/// both of bob's devices, never as an empty message.
#[sqlx::test(migrations = "../migrations")]
async fn the_live_conversation_seals_a_kept_message_again_for_a_device_added_meanwhile(db: PgPool) {
    let (env, outage, alice, bob) = alice_wrote_to_bob_through_a_cuttable_proxy(db).await;
    let bobs_new_device = kept_while_down_then_bob_adds_a_device(&env, &outage, &alice).await;

    let live = chat_with_stdin(&outage.url(), &alice, &["chat", "bob"], "typed live\n").await;
    let pending = chat(&env, &alice, &["--json", "pending"]).await;
    let on_old_device = chat(&env, &bob, &["history", "alice"]).await;
    let on_new_device = chat(&env, &bobs_new_device, &["--json", "history", "alice"]).await;

    assert_eq!(live.code, 0, "{}", live.stderr);
    assert_eq!(pending.json(), serde_json::json!([]));
    assert_eq!(
        untimed(&on_old_device.stdout),
        "[1] alice: before\n[2] alice: kept\n[3] alice: typed live\n",
        "{}",
        on_old_device.stderr
    );
    let readable = texts(&on_new_device.json());
    // "before" too: bob's old device forwarded its key when it listed the history.
    assert_eq!(
        readable,
        ["before", "kept", "typed live"],
        "{}",
        on_new_device.stdout
    );
    assert_eq!(stored_messages(&env.db).await, 3);
}

/// alice verified bob, so his new device waits for her to accept it. A message she kept while
/// the server was down is refused for bob's device list once it is back, and cannot be sealed
/// again for his new keys: `chat flush` keeps it (never "not sent" for good), and so do `chat
/// send` and `chat chat` with what she writes meanwhile; `chat pending` says they wait for her,
/// and `chat trust bob` sends them, once each and in order, for both of bob's devices.
#[sqlx::test(migrations = "../migrations")]
async fn a_kept_message_that_needs_new_keys_accepted_stays_kept_until_chat_trust(db: PgPool) {
    let (env, outage, alice, bob) = alice_wrote_to_bob_through_a_cuttable_proxy(db).await;
    let verified = chat(&env, &alice, &["verify", "bob", "--yes"]).await;
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    let bobs_new_device = kept_while_down_then_bob_adds_a_device(&env, &outage, &alice).await;

    let flushed = chat(&env, &alice, &["flush"]).await;
    let pending = chat(&env, &alice, &["--json", "pending"]).await;
    let pending_text = chat(&env, &alice, &["pending"]).await;
    let sent_meanwhile = chat(&env, &alice, &["send", "bob", "while waiting"]).await;
    let live = chat_with_stdin(&env.server(), &alice, &["chat", "bob"], "typed live\n").await;
    let pending_after_live = chat(&env, &alice, &["--json", "pending"]).await;
    let stored_before_trust = stored_messages(&env.db).await;
    let trusted = chat(&env, &alice, &["trust", "bob"]).await;
    let pending_after_trust = chat(&env, &alice, &["--json", "pending"]).await;
    let on_old_device = chat(&env, &bob, &["history", "alice"]).await;
    let on_new_device = chat(&env, &bobs_new_device, &["--json", "history", "alice"]).await;

    assert_eq!(flushed.code, 7, "{}", flushed.stderr);
    assert!(
        flushed.stderr.contains("still kept")
            && flushed.stderr.contains("the keys of bob changed")
            && !flushed.stderr.contains("no longer kept"),
        "{}",
        flushed.stderr
    );
    let kept = pending.json();
    assert_eq!(kept.as_array().unwrap().len(), 1, "{}", pending.stdout);
    assert_eq!(kept[0]["text"], "kept", "{}", pending.stdout);
    assert!(
        kept[0]["held"]
            .as_str()
            .is_some_and(|held| held.starts_with("the keys of bob changed")),
        "{}",
        pending.stdout
    );
    assert!(
        pending_text
            .stdout
            .contains("waiting for you: the keys of bob changed"),
        "{}",
        pending_text.stdout
    );
    assert_eq!(sent_meanwhile.code, 7, "{}", sent_meanwhile.stderr);
    assert!(
        sent_meanwhile
            .stderr
            .contains("not sent yet, and kept in this profile: the keys of bob changed"),
        "{}",
        sent_meanwhile.stderr
    );
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert!(
        live.stderr
            .contains("not sent yet, kept in this profile: the keys of bob changed"),
        "{}",
        live.stderr
    );
    let waiting: Vec<(String, bool)> = pending_after_live
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["text"].as_str().unwrap_or("?").to_owned(),
                m["held"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        waiting,
        [
            ("kept".to_owned(), true),
            ("while waiting".to_owned(), true),
            ("typed live".to_owned(), true)
        ],
        "{}",
        pending_after_live.stdout
    );
    assert_eq!(stored_before_trust, 1);
    assert_eq!(trusted.code, 0, "{}", trusted.stderr);
    assert!(
        trusted.stdout.contains("sent kept message"),
        "{}",
        trusted.stdout
    );
    assert_eq!(pending_after_trust.json(), serde_json::json!([]));
    assert_eq!(
        untimed(&on_old_device.stdout),
        "[1] alice: before\n[2] alice: kept\n[3] alice: while waiting\n[4] alice: typed live\n",
        "{}",
        on_old_device.stderr
    );
    let readable = texts(&on_new_device.json());
    // "before" too: bob's old device forwarded its key when it listed the history.
    assert_eq!(
        readable,
        ["before", "kept", "while waiting", "typed live"],
        "{}",
        on_new_device.stdout
    );
    assert_eq!(stored_messages(&env.db).await, 4);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_new_device_says_how_many_earlier_messages_it_cannot_read(db: PgPool) {
    let (env, alice, bob, alices_new_device) =
        alice_logs_in_on_a_new_device_after_three_messages(db).await;

    let before = chat(&env, &alices_new_device, &["history", "bob"]).await;
    let sent_after = chat(&env, &bob, &["send", "alice", "four"]).await;
    let after = chat(&env, &alices_new_device, &["history", "bob"]).await;
    let as_json = chat(&env, &alices_new_device, &["--json", "history", "bob"]).await;
    let old_device = chat(&env, &alice, &["history", "bob"]).await;

    let explanation = "(3 earlier messages were sent before this device existed and cannot be \
                       read here (they were not encrypted for it))";
    assert_eq!(before.code, 0, "{}", before.stderr);
    assert_eq!(before.stdout, format!("{explanation}\n"));
    assert_eq!(sent_after.code, 0, "{}", sent_after.stderr);
    assert_eq!(after.code, 0, "{}", after.stderr);
    let lines: Vec<&str> = after.stdout.lines().collect();
    assert_eq!(lines[0], explanation);
    assert_eq!(untimed(&format!("{}\n", lines[1])), "[4] bob: four\n");
    let entries = as_json.json();
    assert_eq!(entries[0]["unreadable"]["count"], 3);
    assert_eq!(entries[0]["unreadable"]["first_sequence"], 1);
    assert_eq!(entries[0]["unreadable"]["before_this_device"], true);
    assert_eq!(entries[1]["content"]["text"], "four");
    assert!(
        !old_device.stdout.contains("cannot be read"),
        "{}",
        old_device.stdout
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_new_devices_live_conversation_says_how_many_earlier_messages_it_cannot_read(db: PgPool) {
    let (env, alice, bob, alices_new_device) =
        alice_logs_in_on_a_new_device_after_three_messages(db).await;

    let before = chat_with_stdin(&env.server(), &alices_new_device, &["chat", "bob"], "").await;
    let sent_after = chat(&env, &bob, &["send", "alice", "four"]).await;
    let after = chat_with_stdin(
        &env.server(),
        &alices_new_device,
        &["--json", "chat", "bob"],
        "",
    )
    .await;
    let old_device = chat_with_stdin(&env.server(), &alice, &["chat", "bob"], "").await;

    let explanation = "(3 earlier messages were sent before this device existed and cannot be \
                       read here (they were not encrypted for it))";
    assert_eq!(before.code, 0, "{}", before.stderr);
    assert_eq!(
        before.stdout,
        format!("{explanation}\n"),
        "{}",
        before.stderr
    );
    assert_eq!(sent_after.code, 0, "{}", sent_after.stderr);
    assert_eq!(after.code, 0, "{}", after.stderr);
    let events: Vec<serde_json::Value> = after
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[0]["unreadable"]["count"], 3, "{}", after.stdout);
    assert_eq!(events[0]["unreadable"]["first_sequence"], 1);
    assert_eq!(events[0]["unreadable"]["before_this_device"], true);
    assert_eq!(
        format!("({})", events[0]["message"].as_str().unwrap()),
        explanation
    );
    assert_eq!(events[1]["content"]["text"], "four", "{}", after.stdout);
    assert_eq!(events[2]["caught_up"], true, "{}", after.stdout);
    assert_eq!(events.len(), 3, "{}", after.stdout);
    assert_eq!(old_device.code, 0, "{}", old_device.stderr);
    assert_eq!(
        untimed(&old_device.stdout),
        "[1] bob: one\n[2] bob: two\n[3] bob: three\n[4] bob: four\n"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_new_devices_open_live_conversation_shows_the_earlier_messages_once_their_keys_are_forwarded(
    db: PgPool,
) {
    let (env, alice, _bob, alices_new_device) =
        alice_logs_in_on_a_new_device_after_three_messages(db).await;
    let live = Background::start(&env, &alices_new_device, &["chat", "bob"]);
    let explanation = "(3 earlier messages were sent before this device existed and cannot be \
                       read here (they were not encrypted for it))";
    live.printed(explanation).await;

    let forwarded = chat(&env, &alice, &["--json", "forward-keys"]).await;
    let now_readable = "(3 earlier messages are now readable here (another device of yours \
                        forwarded the keys):)";
    let shown = live.printed("three").await;

    assert_eq!(forwarded.code, 0, "{}", forwarded.stderr);
    let (before, after) = shown.split_once(&format!("{now_readable}\n")).unwrap();
    assert_eq!(before, format!("{explanation}\n"));
    assert_eq!(
        untimed(after),
        "[1] bob: one\n[2] bob: two\n[3] bob: three\n"
    );
}

/// The runs a live conversation said it cannot read are kept in the profile: a later `chat
/// chat`, whose stream starts after them (its cursor is past the message that followed them),
/// shows them once another device forwarded their keys meanwhile, and only once.
#[sqlx::test(migrations = "../migrations")]
async fn a_later_live_conversation_shows_what_an_earlier_one_could_not_read_once_keys_are_forwarded(
    db: PgPool,
) {
    let (env, alice, bob, alices_new_device) =
        alice_logs_in_on_a_new_device_after_three_messages(db).await;
    let sent_after = chat(&env, &bob, &["send", "alice", "four"]).await;
    assert_eq!(sent_after.code, 0, "{}", sent_after.stderr);
    let server = env.server();
    let live = || chat_with_stdin(&server, &alices_new_device, &["chat", "bob"], "");

    let before = live().await;
    let forwarded = chat(&env, &alice, &["--json", "forward-keys"]).await;
    let after = live().await;
    let again = live().await;

    let (first_line, rest) = before.stdout.split_once('\n').unwrap_or_default();
    assert_eq!(
        first_line,
        "(3 earlier messages were sent before this device existed and cannot be read here (they \
         were not encrypted for it))",
        "{}",
        before.stderr
    );
    assert_eq!(untimed(rest), "[4] bob: four\n");
    assert_eq!(forwarded.json()["keys"], 3, "{}", forwarded.stdout);
    assert_eq!(after.code, 0, "{}", after.stderr);
    let (first_line, rest) = after.stdout.split_once('\n').unwrap_or_default();
    assert_eq!(
        first_line,
        "(3 earlier messages are now readable here (another device of yours forwarded the keys):)",
        "{}",
        after.stderr
    );
    assert_eq!(
        untimed(rest),
        "[1] bob: one\n[2] bob: two\n[3] bob: three\n"
    );
    assert_eq!(again.stdout, "", "shown once: {}", again.stderr);
}
