use client::{Content, LiveEvent};
use sqlx::PgPool;

use crate::helpers::{
    CuttableProxy, messages_until_caught_up, next_event, next_texts, spawn_env, spawn_env_with,
    text_of, until_caught_up,
};

#[sqlx::test(migrations = "../migrations")]
async fn three_users_exchange_direct_messages_and_read_them_verified(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let carol = env.user("carol").await;

    let alice_to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&alice_to_bob, "hi bob").await.unwrap();
    let bob_to_alice = bob.resolve("alice").await.unwrap();
    bob.send_text(&bob_to_alice, "hi alice").await.unwrap();
    let carol_to_alice = carol.resolve("alice").await.unwrap();
    carol
        .send_text(&carol_to_alice, "alice, it's carol")
        .await
        .unwrap();
    carol.send_text(&carol_to_alice, "second").await.unwrap();

    let unread: Vec<(String, u64)> = alice
        .conversations()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.with, c.unread_count))
        .collect();
    assert!(unread.contains(&("carol".to_owned(), 2)), "{unread:?}");
    let with_bob = bob.history(&bob_to_alice, 10).await.unwrap();
    let texts: Vec<(String, String)> = with_bob
        .iter()
        .map(|m| (m.sender_username.clone(), text_of(m)))
        .collect();
    assert_eq!(
        texts,
        [
            ("alice".to_owned(), "hi bob".to_owned()),
            ("bob".to_owned(), "hi alice".to_owned())
        ]
    );
    let with_carol = alice.resolve("carol").await.unwrap();
    let from_carol = alice.history(&with_carol, 10).await.unwrap();
    assert_eq!(
        from_carol.iter().map(text_of).collect::<Vec<_>>(),
        ["alice, it's carol", "second"]
    );
    let after_reading: Vec<(String, u64)> = alice
        .conversations()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.with, c.unread_count))
        .collect();
    assert!(
        after_reading.contains(&("carol".to_owned(), 0)),
        "{after_reading:?}"
    );
    assert!(
        after_reading.contains(&("bob".to_owned(), 1)),
        "{after_reading:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_who_comes_back_catches_up_with_nothing_twice_and_nothing_missed(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let mut live = bob.clone().live(with_alice.clone());
    until_caught_up(&mut live).await;
    alice.send_text(&to_bob, "one").await.unwrap();
    alice.send_text(&to_bob, "two").await.unwrap();
    assert_eq!(
        next_texts(&mut live, 2).await,
        [(1, "one".to_owned()), (2, "two".to_owned())]
    );

    drop(live);
    for text in ["three", "four", "five"] {
        alice.send_text(&to_bob, text).await.unwrap();
    }
    let mut live = bob.clone().live(with_alice);
    let replayed = until_caught_up(&mut live).await;
    alice.send_text(&to_bob, "six").await.unwrap();
    let live_message = next_texts(&mut live, 1).await;

    assert_eq!(
        replayed,
        [
            (3, "three".to_owned()),
            (4, "four".to_owned()),
            (5, "five".to_owned())
        ]
    );
    assert_eq!(live_message, [(6, "six".to_owned())]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_dropped_stream_reconnects_and_resumes_from_its_cursor(db: PgPool) {
    let env = spawn_env(db).await;
    let proxy = CuttableProxy::start(env.gateway).await;
    let alice = env.user("alice").await;
    client::register(&env.connection(), "bob", &crate::helpers::password(), "")
        .await
        .unwrap();
    let bob = env.device_via("bob", &proxy.url()).await;
    let to_bob = alice.resolve("bob").await.unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let mut live = bob.clone().live(with_alice);
    until_caught_up(&mut live).await;
    alice.send_text(&to_bob, "before").await.unwrap();
    next_texts(&mut live, 1).await;

    proxy.cut();
    alice.send_text(&to_bob, "during 1").await.unwrap();
    alice.send_text(&to_bob, "during 2").await.unwrap();
    let mut events = Vec::new();
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match next_event(&mut live).await {
            LiveEvent::Message(message) => texts.push((message.sequence, text_of(&message))),
            other => events.push(other),
        }
    }
    live.send("back online".to_owned()).await.unwrap();
    let sent = loop {
        match next_event(&mut live).await {
            LiveEvent::Sent(sent) => break sent,
            LiveEvent::Message(message) => texts.push((message.sequence, text_of(&message))),
            _ => {}
        }
    };

    assert!(
        events
            .iter()
            .any(|e| matches!(e, LiveEvent::Disconnected { .. })),
        "{events:?}"
    );
    assert_eq!(
        texts[..2],
        [(2, "during 1".to_owned()), (3, "during 2".to_owned())]
    );
    assert_eq!(sent.sequence, 4);
    let history = alice.history(&to_bob, 10).await.unwrap();
    assert_eq!(text_of(&history[3]), "back online");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rotated_device_is_picked_up_by_other_senders(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let old_bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "to the old device").await.unwrap();

    let new_bob = env.device("bob").await;
    new_bob
        .revoke_device(&old_bob.account().device_id)
        .await
        .unwrap();
    // Alice's session still has bob's old device list: the send is refused with a device-list
    // mismatch, and retried for the refetched devices.
    let sent = alice.send_text(&to_bob, "to the new device").await.unwrap();

    assert_eq!(sent.sequence, 2);
    let with_alice = new_bob.resolve("alice").await.unwrap();
    let history = new_bob.history(&with_alice, 10).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(text_of(last), "to the new device");
    let warnings = alice.take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].username, "bob");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_message_tampered_with_in_the_database_fails_verification(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "the original").await.unwrap();
    alice.send_text(&to_bob, "untouched").await.unwrap();

    sqlx::query(
        "update chat.messages set ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)
         where sequence = 1",
    )
    .execute(&env.db)
    .await
    .unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let history = bob.history(&with_alice, 10).await.unwrap();

    assert!(
        matches!(history[0].content, Content::Failed { .. }),
        "{:?}",
        history[0]
    );
    assert!(!format!("{:?}", history[0]).contains("original"));
    assert_eq!(text_of(&history[1]), "untouched");
    // Acknowledged on receipt whatever the outcome of the checks.
    let conversations = bob.conversations().await.unwrap();
    assert_eq!(conversations[0].unread_count, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_verified_contacts_new_device_stops_sending_to_them_until_it_is_accepted(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let seen_by_alice = alice.safety_number("bob", true).await.unwrap();
    let seen_by_bob = bob.safety_number("alice", false).await.unwrap();
    assert_eq!(seen_by_alice.safety_number, seen_by_bob.safety_number);
    assert!(alice.take_warnings().is_empty());

    let _bobs_new_device = env.device("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    let warnings = alice.take_warnings();
    let refused = alice.send_text(&to_bob, "to every device?").await;
    let now = alice.safety_number("bob", false).await.unwrap();
    let trusted = alice.trust("bob").await.unwrap();
    let sent = alice.send_text(&to_bob, "to every device").await.unwrap();

    assert_eq!(warnings.len(), 1);
    assert!(!warnings[0].own);
    assert!(warnings[0].was_verified && warnings[0].blocked);
    assert_eq!(warnings[0].added.len(), 1);
    assert!(warnings[0].to_string().contains("chat trust bob"));
    assert!(
        matches!(&refused, Err(client::Error::Untrusted(message)) if message.contains("bob")),
        "{refused:?}"
    );
    assert!(!now.verified);
    assert_ne!(now.safety_number, seen_by_alice.safety_number);
    assert_eq!(trusted.accepted.len(), 1);
    assert!(!trusted.verified);
    assert_eq!(sent.sequence, 1, "the refused send stored nothing");
    assert!(!alice.safety_number("bob", false).await.unwrap().verified);
}

#[sqlx::test(migrations = "../migrations")]
async fn tokens_are_refreshed_before_expiry_and_after_rejection_and_saved(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let saved = || alice.profile().tokens().unwrap().unwrap().refresh_token;
    let first = saved();

    alice.expire_access_token().await;
    alice.whoami().await.unwrap();
    let second = saved();
    alice.corrupt_access_token().await;
    let (user, _) = alice.whoami().await.unwrap();

    assert_eq!(user.username, "alice");
    assert_ne!(first, second);
    assert_ne!(second, saved());
    let resumed = client::Session::resume(alice.profile().clone(), None, None).unwrap();
    resumed.whoami().await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn logging_in_again_resumes_the_device_unless_it_was_revoked(db: PgPool) {
    let env = spawn_env(db).await;
    let bob = env.user("bob").await;
    let alice = env.user("alice").await;
    let profile = alice.profile().clone();
    let first_device = alice.account().device_id.clone();
    let server = env.connection();
    let password = crate::helpers::password();
    let passphrase = crate::helpers::passphrase();
    let login = || {
        client::Session::login(
            profile.clone(),
            &server,
            "alice",
            &password,
            &passphrase,
            crate::helpers::TEST_KEYS,
        )
    };

    let again = login().await.unwrap();
    let other = env.device("alice").await;
    other.revoke_device(&first_device).await.unwrap();
    let after_revocation = login().await.unwrap();

    assert_eq!(again.account().device_id, first_device);
    assert_ne!(after_revocation.account().device_id, first_device);
    let after_revocation = std::sync::Arc::new(after_revocation);
    let to_bob = after_revocation.resolve("bob").await.unwrap();
    after_revocation
        .send_text(&to_bob, "from the replacement device")
        .await
        .unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let history = bob.history(&with_alice, 10).await.unwrap();
    assert_eq!(text_of(&history[0]), "from the replacement device");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_live_conversation_ends_when_the_session_ends(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();

    alice.logout().await.unwrap();
    alice.expire_access_token().await;
    let mut live = alice.clone().live(to_bob);

    let event = next_event(&mut live).await;
    assert!(matches!(event, LiveEvent::Ended { .. }), "{event:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_message_replayed_by_the_server_is_shown_once_and_flagged(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "pay 10 euros").await.unwrap();
    replay_first_message_as_sequence_2(&env).await;
    let with_alice = bob.resolve("alice").await.unwrap();

    let mut live = bob.clone().live(with_alice.clone());
    let streamed = messages_until_caught_up(&mut live).await;
    let history = bob.history(&with_alice, 10).await.unwrap();

    let stored: i64 = sqlx::query_scalar("select count(*) from chat.messages")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(stored, 2);
    assert_eq!(streamed.len(), 2);
    assert_eq!(text_of(&streamed[0]), "pay 10 euros");
    assert_eq!(streamed[1].content, Content::Replayed { first_sequence: 1 });
    assert_eq!(history.len(), 2);
    assert_eq!(text_of(&history[0]), "pay 10 euros");
    assert_eq!(history[1].content, Content::Replayed { first_sequence: 1 });
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replay_after_a_restart_is_flagged_not_shown_as_new(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "pay 10 euros").await.unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let mut live = bob.clone().live(with_alice.clone());
    assert_eq!(messages_until_caught_up(&mut live).await.len(), 1);
    drop(live);
    // Bob's program ends; the server replays the envelope under a new sequence, past his cursor.
    let profile = bob.profile().clone();
    drop(bob);
    replay_first_message_as_sequence_2(&env).await;
    let restarted = std::sync::Arc::new(
        client::Session::resume(profile, Some(&crate::helpers::passphrase()), None).unwrap(),
    );

    let mut live = restarted.clone().live(with_alice.clone());
    let streamed = messages_until_caught_up(&mut live).await;
    let newest_only = restarted.history(&with_alice, 1).await.unwrap();

    assert_eq!(streamed.len(), 1, "{streamed:?}");
    assert_eq!(streamed[0].sequence, 2);
    assert_eq!(streamed[0].content, Content::Replayed { first_sequence: 1 });
    assert_eq!(
        newest_only[0].content,
        Content::Replayed { first_sequence: 1 }
    );
}

/// A malicious server stores the first message's signed envelope again under a new id and
/// sequence 2.
async fn replay_first_message_as_sequence_2(env: &crate::helpers::TestEnv) {
    let replay = [
        "alter table chat.messages drop constraint messages_sender_device_id_client_message_id_key",
        "insert into chat.messages
         select (jsonb_populate_record(null::chat.messages, to_jsonb(m)
             || jsonb_build_object('sequence', 2, 'id', gen_random_uuid()))).*
         from chat.messages m where sequence = 1",
        "insert into chat.message_keys
         select (jsonb_populate_record(null::chat.message_keys, to_jsonb(k)
             || jsonb_build_object('sequence', 2))).*
         from chat.message_keys k where sequence = 1",
        "update chat.conversations set last_sequence = 2",
    ];
    for statement in replay {
        sqlx::query(statement).execute(&env.db).await.unwrap();
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_cut_at_its_token_expiry_resumes_with_a_fresh_token(db: PgPool) {
    let env = spawn_env_with(db, |auth| {
        auth.tokens.access_token_ttl = std::time::Duration::from_secs(3);
    })
    .await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    let with_alice = bob.resolve("alice").await.unwrap();
    let mut live = bob.clone().live(with_alice);
    until_caught_up(&mut live).await;
    alice.send_text(&to_bob, "before expiry").await.unwrap();
    next_texts(&mut live, 1).await;

    let cut = loop {
        if let LiveEvent::Disconnected { error, .. } = next_event(&mut live).await {
            break error;
        }
    };
    alice.send_text(&to_bob, "after expiry").await.unwrap();

    assert!(
        cut.contains("authenticat") || cut.contains("expired"),
        "{cut}"
    );
    assert_eq!(
        next_texts(&mut live, 1).await,
        [(2, "after expiry".to_owned())]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_device_added_to_ones_own_account_triggers_a_warning(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    env.user("bob").await;
    let to_bob = alice.resolve("bob").await.unwrap();
    alice.send_text(&to_bob, "first").await.unwrap();
    assert!(alice.take_warnings().is_empty());

    let _second_device = env.device("alice").await;
    // Chat checks a send against the devices auth's events told it of: until the new device's
    // event reaches it (a moment after the login), a send sealed for the cached list is stored
    // as it is and nothing is noticed. The first send after that is refused for the device list,
    // and the client refetches the keys and warns.
    let mut warnings = Vec::new();
    for attempt in 0..50 {
        alice
            .send_text(&to_bob, &format!("second {attempt}"))
            .await
            .unwrap();
        warnings = alice.take_warnings();
        if !warnings.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].own);
    assert_eq!(warnings[0].added.len(), 1);
    assert!(warnings[0].to_string().contains("your account"));
}

/// Sends `count` lines on `live` as fast as it takes them, reading its events meanwhile; returns
/// how many of its own sends were answered and how many of the peer's messages were shown, once
/// both reach `count`.
async fn chat_flat_out(mut live: client::Live, who: &'static str, count: usize) -> (usize, usize) {
    let mut tally = (0, 0); // (own sends answered, peer's messages shown)
    let count_event = |tally: &mut (usize, usize), event: LiveEvent| match event {
        LiveEvent::Sent(_) => tally.0 += 1,
        LiveEvent::Message(message) if !text_of(&message).starts_with(who) => tally.1 += 1,
        _ => {}
    };
    for n in 0..count {
        live.send(format!("{who} {n}")).await.unwrap();
        while let Ok(event) = live.events.try_recv() {
            count_event(&mut tally, event);
        }
    }
    while tally != (count, count) {
        let Some(event) = live.events.recv().await else {
            break;
        };
        count_event(&mut tally, event);
    }
    tally
}

#[sqlx::test(migrations = "../migrations")]
async fn two_live_conversations_sending_flat_out_both_ways_never_stall(db: PgPool) {
    // A client that waited for room to send while not reading its answers deadlocked with the
    // server, which stops reading sends while its answers are not read.
    const LINES: usize = 300;
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let mut alice_live = alice.clone().live(alice.resolve("bob").await.unwrap());
    let mut bob_live = bob.clone().live(bob.resolve("alice").await.unwrap());
    until_caught_up(&mut alice_live).await;
    until_caught_up(&mut bob_live).await;

    // A stall never ends; the bound only has to be far above an honest run (about 90 s on a
    // loaded 2-core CI machine, since a live view sends one line at a time).
    let both = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        futures::future::join(
            chat_flat_out(alice_live, "alice", LINES),
            chat_flat_out(bob_live, "bob", LINES),
        ),
    )
    .await
    .expect("neither side stalls");

    assert_eq!(both, ((LINES, LINES), (LINES, LINES)));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_contacts_new_device_is_shown_in_the_live_conversation_as_soon_as_it_is_announced(
    db: PgPool,
) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    env.user("bob").await;
    let mut live = alice.clone().live(alice.resolve("bob").await.unwrap());
    until_caught_up(&mut live).await;

    let _bobs_new_device = env.device("bob").await;

    // Nothing was sent: the stream's DevicesChanged event is enough to show it.
    match next_event(&mut live).await {
        LiveEvent::KeyWarning(warning) => {
            assert_eq!(warning.username, "bob");
            assert_eq!(warning.added.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}
