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
