//! Suite V2 chains as the CLI sees them: what a malicious server does to a conversation's
//! history (drop a message and renumber, show two histories) is flagged on the message.

use client::Content;
use e2ee::ChainAnomaly;
use sqlx::PgPool;

use crate::helpers::{spawn_env, text_of};

#[sqlx::test(migrations = "../migrations")]
async fn a_message_the_server_drops_and_renumbers_around_is_flagged_as_a_gap(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    for text in ["one", "two: the one the server drops", "three"] {
        alice.send_text(&to_bob, text).await.unwrap();
    }
    // The server deletes message 2 and closes the hole in the sequence.
    for statement in [
        "delete from chat.messages where sequence = 2",
        "update chat.message_keys set sequence = 2 where sequence = 3",
        "update chat.messages set sequence = 2 where sequence = 3",
        "update chat.conversations set last_sequence = 2",
    ] {
        sqlx::query(statement).execute(&env.db).await.unwrap();
    }
    let with_alice = bob.resolve("alice").await.unwrap();

    let history = bob.history(&with_alice, 10).await.unwrap();

    let shown: Vec<(String, Vec<ChainAnomaly>)> = history
        .iter()
        .map(|m| (text_of(m), m.chain.clone()))
        .collect();
    assert_eq!(
        shown,
        [
            ("one".to_owned(), Vec::new()),
            (
                "three".to_owned(),
                vec![ChainAnomaly::Gap { first: 2, last: 2 }]
            ),
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn two_envelopes_under_one_counter_are_flagged_as_a_fork(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "first").await.unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let before = bob.history(&with_alice, 10).await.unwrap();
    // Alice's device seals another first message (its chain forgotten, as a server could show
    // one history to some and another to others).
    std::fs::remove_file(alice.profile().dir().join("chains.json")).unwrap();
    alice.send_text(&to_bob, "another first").await.unwrap();

    let after = bob.history(&with_alice, 10).await.unwrap();

    assert!(before[0].chain.is_empty());
    assert!(matches!(after[1].content, Content::Verified { .. }));
    assert_eq!(after[0].chain, []);
    assert_eq!(after[1].chain, [ChainAnomaly::Fork { counter: 1 }]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_device_continues_its_chain_across_sessions_and_retries(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "before").await.unwrap();
    // A new device for bob: alice's next send is refused once (device-list mismatch) and
    // resealed under the same counter.
    let _bob_phone = env.device("bob").await;
    alice.send_text(&to_bob, "after").await.unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();

    let history = bob.history(&with_alice, 10).await.unwrap();

    let counters: Vec<(String, Vec<ChainAnomaly>)> = history
        .iter()
        .map(|m| (text_of(m), m.chain.clone()))
        .collect();
    assert_eq!(
        counters,
        [
            ("before".to_owned(), Vec::new()),
            ("after".to_owned(), Vec::new())
        ]
    );
    let sent: serde_json::Value =
        serde_json::from_slice(&std::fs::read(alice.profile().dir().join("chains.json")).unwrap())
            .unwrap();
    assert_eq!(sent[&to_bob.conversation_id]["counter"], 2);
}

/// Each send reserves the device's next counter: two at once must not take the same one (a
/// false fork at every recipient), nor reach the server in the other order (a false gap).
#[sqlx::test(migrations = "../migrations")]
async fn sends_at_once_from_one_device_raise_no_false_alarm(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "first").await.unwrap();

    let lines: Vec<String> = (1..=6).map(|n| format!("at once {n}")).collect();
    let sends = lines.iter().map(|line| alice.send_text(&to_bob, line));
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }

    let history = bob
        .history(&bob.resolve("alice").await.unwrap(), 20)
        .await
        .unwrap();
    let flagged: Vec<(u64, Vec<ChainAnomaly>)> = history
        .iter()
        .filter(|m| !m.chain.is_empty() || m.content.is_flagged())
        .map(|m| (m.sequence, m.chain.clone()))
        .collect();
    assert_eq!(history.len(), 7);
    assert_eq!(flagged, []);
}

/// As above, with `chat send` processes of one profile started together: they take turns.
#[sqlx::test(migrations = "../migrations")]
async fn chat_send_processes_of_one_profile_at_once_raise_no_false_alarm(db: PgPool) {
    let env = spawn_env(db).await;
    let bob = env.user("bob").await;
    let alice = crate::cli::cli_user(&env, "alice").await;
    let first = crate::cli::chat(&env, &alice, &["send", "bob", "first"]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);

    let lines: Vec<String> = (1..=5).map(|n| format!("at once {n}")).collect();
    let args: Vec<[&str; 3]> = lines.iter().map(|line| ["send", "bob", line]).collect();
    let runs =
        futures::future::join_all(args.iter().map(|args| crate::cli::chat(&env, &alice, args)))
            .await;

    for run in &runs {
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let history = bob
        .history(&bob.resolve("alice").await.unwrap(), 20)
        .await
        .unwrap();
    let flagged: Vec<(u64, Vec<ChainAnomaly>)> = history
        .iter()
        .filter(|m| !m.chain.is_empty() || m.content.is_flagged())
        .map(|m| (m.sequence, m.chain.clone()))
        .collect();
    assert_eq!(history.len(), 6);
    assert_eq!(flagged, []);
}

/// Lines typed faster than the server answers go one at a time.
#[sqlx::test(migrations = "../migrations")]
async fn lines_sent_in_a_burst_in_a_live_conversation_raise_no_false_alarm(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let mut live = alice.clone().live(alice.resolve("bob").await.unwrap());

    for n in 1..=8 {
        live.send(format!("burst {n}")).await.unwrap();
    }
    let mut sent = 0;
    while sent < 8 {
        match crate::helpers::next_event(&mut live).await {
            client::LiveEvent::Sent(_) => sent += 1,
            client::LiveEvent::SendFailed { reason, .. } => panic!("{reason}"),
            _ => {}
        }
    }

    let history = bob
        .history(&bob.resolve("alice").await.unwrap(), 20)
        .await
        .unwrap();
    let shown: Vec<(String, Vec<ChainAnomaly>)> = history
        .iter()
        .map(|m| (text_of(m), m.chain.clone()))
        .collect();
    let expected: Vec<(String, Vec<ChainAnomaly>)> = (1..=8)
        .map(|n| (format!("burst {n}"), Vec::new()))
        .collect();
    assert_eq!(shown, expected);
}
