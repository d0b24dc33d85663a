//! The clients against a malicious server: every service sits behind a proxy that rewrites its
//! answers ([`crate::helpers::spawn_malicious_env`]), and the whole server tells the same lie
//! (auth's answers to clients, chat and group alike), so an attack succeeds unless the client
//! notices it. Each test shows one attack detected: a key substituted under the old or a new
//! fingerprint, a ghost device added to a contact, a ghost member added to a group, a message
//! of another conversation slipped into a history, a revoked device's message.

use std::sync::{Arc, Mutex};

use client::{Content, LiveEvent, Session};
use proto::chat::v1 as chat_pb;
use sqlx::PgPool;

use crate::{
    attacks::{
        Attacker, LIST_MESSAGES, MaliciousServer, add_ghost_device, add_ghost_member,
        substitute_key,
    },
    cli::{chat, chat_merged, cli_user},
    helpers::{
        TestEnv, next_event, passphrase, spawn_env, spawn_malicious_env, text_of, until_caught_up,
    },
};

fn server(env: &TestEnv) -> &MaliciousServer {
    env.malicious.as_ref().expect("a malicious environment")
}

/// A new session on `session`'s profile: what the next `chat` command sees (no cache).
fn restart(session: &Session) -> Arc<Session> {
    Arc::new(Session::resume(session.profile().clone(), Some(&passphrase()), None).unwrap())
}

async fn stored_messages(env: &TestEnv) -> i64 {
    sqlx::query_scalar("select count(*) from chat.messages")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_key_substituted_under_the_old_fingerprint_gets_nothing_and_is_reported(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "before").await.unwrap();
    let mallory = Attacker::new();
    // Clients get mallory's key under bob's device with bob's old fingerprints; chat gets the
    // real fingerprint of the key, so that it accepts envelopes sealed for it.
    substitute_key(
        server(&env),
        &bob.account().user_id,
        &bob.account().device_id,
        &mallory,
        true,
    );
    let alice = restart(&alice);

    let sent = alice.send_text(&to_bob, "the secret").await;

    let warnings = alice.take_warnings();
    assert!(sent.is_err(), "sealed for a substituted key: {sent:?}");
    assert!(sent.unwrap_err().to_string().contains("chat trust"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].username, "bob");
    assert_eq!(warnings[0].changed.len(), 1, "{warnings:?}");
    assert_eq!(mallory.reads(&env.db).await, 0);
    assert_eq!(stored_messages(&env).await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_key_substituted_under_its_new_fingerprint_gets_nothing_and_is_reported(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "before").await.unwrap();
    let mallory = Attacker::new();
    substitute_key(
        server(&env),
        &bob.account().user_id,
        &bob.account().device_id,
        &mallory,
        false,
    );
    let alice = restart(&alice);

    let sent = alice.send_text(&to_bob, "the secret").await;

    let warnings = alice.take_warnings();
    assert!(sent.is_err(), "sealed for a substituted key: {sent:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].changed.len(), 1, "{warnings:?}");
    assert!(warnings[0].blocked);
    assert_eq!(mallory.reads(&env.db).await, 0);
    assert_eq!(stored_messages(&env).await, 1);
    // The user accepts the change (say bob did re-key): then it is sealed for.
    alice.trust("bob").await.unwrap();
    alice.send_text(&to_bob, "accepted").await.unwrap();
    assert_eq!(mallory.reads(&env.db).await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_ghost_device_of_a_verified_contact_gets_nothing_until_it_is_accepted(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.safety_number("bob", true).await.unwrap();
    let mallory = Attacker::new();
    add_ghost_device(server(&env), &bob.account().user_id, &mallory);
    let alice = restart(&alice);

    let sent = alice.send_text(&to_bob, "the secret").await;

    let warnings = alice.take_warnings();
    assert!(sent.is_err(), "sealed for a ghost device: {sent:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].added.len(), 1);
    assert!(warnings[0].was_verified && warnings[0].blocked);
    assert_eq!(mallory.reads(&env.db).await, 0);
    assert_eq!(stored_messages(&env).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_live_cli_seals_nothing_for_a_verified_contacts_ghost_device(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.safety_number("bob", true).await.unwrap();
    let mut live = alice.clone().live(to_bob);
    until_caught_up(&mut live).await;
    let mallory = Attacker::new();
    add_ghost_device(server(&env), &bob.account().user_id, &mallory);

    // The live conversation seals for the devices it knows; chat, lied to, wants the ghost too:
    // the client refetches, finds the ghost, and must stop there.
    live.send("the secret".to_owned()).await.unwrap();
    let mut events = Vec::new();
    loop {
        let event = next_event(&mut live).await;
        let done = matches!(
            event,
            LiveEvent::Sent(_) | LiveEvent::SendFailed { .. } | LiveEvent::SendHeld { .. }
        );
        events.push(event);
        if done {
            break;
        }
    }

    assert!(
        matches!(&events[0], LiveEvent::KeyWarning(warning) if warning.blocked),
        "{events:?}"
    );
    // Kept for alice to decide (sent once she accepts the keys), never sealed for the ghost.
    assert!(
        matches!(events.last(), Some(LiveEvent::SendHeld { reason, .. }) if reason.contains("chat trust")),
        "{events:?}"
    );
    assert_eq!(mallory.reads(&env.db).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn chat_send_shows_a_ghost_device_before_anything_is_sealed_for_it(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    cli_user(&env, "bob").await;
    let first = chat(&env, &alice, &["send", "bob", "first"]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let bob_id: String =
        sqlx::query_scalar("select id::text from auth.users where username = 'bob'")
            .fetch_one(&env.db)
            .await
            .unwrap();
    let mallory = Attacker::new();
    add_ghost_device(server(&env), &bob_id, &mallory);

    let second = chat_merged(&env, &alice, &["send", "bob", "second"]).await;

    // Bob is not verified: his new device gets the message (trust on first use), but only after
    // the change was shown.
    assert_eq!(second.code, 0, "{}", second.stdout);
    let warning = second
        .stdout
        .find("WARNING: the keys of bob CHANGED")
        .unwrap_or_else(|| panic!("no warning: {}", second.stdout));
    let sent = second.stdout.find("sent #2").unwrap();
    assert!(warning < sent, "warned after sending: {}", second.stdout);
    assert_eq!(mallory.reads(&env.db).await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_ghost_member_added_to_a_group_is_shown_before_anything_is_sealed_for_it(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    cli_user(&env, "bob").await;
    let mallory = env.user("mallory").await;
    let create = chat(&env, &alice, &["group", "create", "friends", "bob"]).await;
    assert_eq!(create.code, 0, "{}", create.stderr);
    let first = chat(&env, &alice, &["send", "#friends", "first"]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let ghost = mallory.user_by_name("mallory").await.unwrap();
    add_ghost_member(server(&env), ghost);

    let second = chat_merged(&env, &alice, &["send", "#friends", "second"]).await;
    let third = chat_merged(&env, &alice, &["send", "#friends", "third"]).await;

    assert_eq!(second.code, 0, "{}", second.stdout);
    let warning = second
        .stdout
        .find("WARNING: the members of #friends CHANGED (added: mallory")
        .unwrap_or_else(|| panic!("no warning: {}", second.stdout));
    let sent = second.stdout.find("sent #2").unwrap();
    assert!(warning < sent, "warned after sending: {}", second.stdout);
    assert_eq!(third.stdout, "sent #3\n", "shown once");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_live_cli_shows_a_ghost_member_in_the_group_conversation_before_sealing(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    let alice = env.user("alice").await;
    env.user("bob").await;
    let mallory = env.user("mallory").await;
    alice
        .create_group("friends", &["bob".to_owned()])
        .await
        .unwrap();
    let target = alice.resolve("#friends").await.unwrap();
    alice.send_text(&target, "first").await.unwrap();
    assert!(alice.take_membership_warnings().is_empty());
    let mut live = alice.clone().live(target);
    until_caught_up(&mut live).await;
    add_ghost_member(server(&env), mallory.user_by_name("mallory").await.unwrap());

    live.send("second".to_owned()).await.unwrap();
    let first_event = next_event(&mut live).await;
    let mut next = next_event(&mut live).await;
    while !matches!(next, LiveEvent::Sent(_) | LiveEvent::SendFailed { .. }) {
        next = next_event(&mut live).await;
    }

    assert!(
        matches!(&first_event, LiveEvent::MembershipWarning(w) if w.added == ["mallory"]),
        "{first_event:?}"
    );
    assert!(matches!(next, LiveEvent::Sent(_)), "{next:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_message_of_another_conversation_is_not_shown_in_a_history(db: PgPool) {
    let env = spawn_malicious_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let carol = env.user("carol").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "for bob only").await.unwrap();
    let to_bob_from_carol = carol.resolve("bob").await.unwrap();
    carol.send_text(&to_bob_from_carol, "hi bob").await.unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let with_carol = bob.resolve("carol").await.unwrap();
    // The server answers bob's history with carol with alice's message in it.
    let captured: Arc<Mutex<Option<chat_pb::Message>>> = Arc::default();
    let capture = captured.clone();
    server(&env).chat.rewrite(
        LIST_MESSAGES,
        move |response: &mut chat_pb::ListMessagesResponse| {
            capture
                .lock()
                .unwrap()
                .get_or_insert(response.messages[0].clone());
        },
    );
    bob.history(&with_alice, 10).await.unwrap();
    let alices = captured.lock().unwrap().clone().unwrap();
    server(&env).chat.rewrite(
        LIST_MESSAGES,
        move |response: &mut chat_pb::ListMessagesResponse| {
            response.messages.insert(0, alices.clone());
        },
    );

    let history = bob.history(&with_carol, 10).await.unwrap();

    assert_eq!(history.len(), 2);
    assert_eq!(text_of(&history[0]), "hi bob");
    assert!(
        matches!(&history[1].content, Content::Failed { reason } if reason.contains("another conversation")),
        "{:?}",
        history[1]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_revoked_devices_messages_after_its_revocation_are_refused(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bobs_old_device = env.user("bob").await;
    let bobs_new_device = env.device("bob").await;
    let with_alice = bobs_old_device.resolve("alice").await.unwrap();
    bobs_old_device
        .send_text(&with_alice, "before the revocation")
        .await
        .unwrap();
    bobs_old_device
        .send_text(&with_alice, "after the revocation")
        .await
        .unwrap();
    let to_bob = alice.resolve("bob").await.unwrap();
    bobs_new_device
        .revoke_device(&bobs_old_device.account().device_id)
        .await
        .unwrap();
    // Alice's client sees the device gone: revoked from now on (by its clock).
    restart(&alice).resolve("bob").await.unwrap();
    // The server (or a thief, with the server's help) stamps one of that device's messages
    // after the revocation; the other stays well before it.
    for (sequence, shift) in [(1, "- interval '1 hour'"), (2, "+ interval '1 hour'")] {
        sqlx::query(&format!(
            "update chat.messages set created_at = now() {shift} where sequence = $1"
        ))
        .bind(sequence)
        .execute(&env.db)
        .await
        .unwrap();
    }

    let history = restart(&alice).history(&to_bob, 10).await.unwrap();

    assert_eq!(text_of(&history[0]), "before the revocation");
    assert!(
        matches!(&history[1].content, Content::Failed { reason } if reason.contains("revoked")),
        "{:?}",
        history[1]
    );
}
