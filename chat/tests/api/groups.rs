use std::time::Duration;

use proto::{
    chat::v1 as pb,
    group::v1::{self as group_pb, group_service_client::GroupServiceClient},
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{TestApp, TestDevice, next_event, next_message, replay, spawn_app};

/// Creates a group owned by `owner` with `members`; returns its conversation as `owner` lists it.
pub(crate) async fn create_group(
    app: &TestApp,
    owner: &TestDevice,
    members: &[&TestDevice],
) -> String {
    let mut groups = GroupServiceClient::new(testkit::connect(app.group_addr).await);
    let request = owner.request(group_pb::CreateGroupRequest {
        name: "friends".to_owned(),
        member_user_ids: members.iter().map(|m| m.user_id.clone()).collect(),
    });
    let group = loop {
        // Group fetches auth's token keys in the background after start.
        match groups
            .create_group(owner.request(request.get_ref().clone()))
            .await
        {
            Ok(response) => break response.into_inner().group.unwrap(),
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    group.group_id
}

#[sqlx::test(migrations = "../migrations")]
async fn group_members_exchange_messages_and_outsiders_are_refused(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let mallory = app.user("mallory").await;
    let group_id = create_group(&app, &alice, &[&bob, &carol]).await;
    let mut bob_events = bob.subscribe(&[]).await;
    let mut carol_events = carol.subscribe(&[]).await;
    replay(&mut bob_events).await;
    replay(&mut carol_events).await;
    let members = alice
        .recipients(&[&alice.user_id, &bob.user_id, &carol.user_id])
        .await;

    let sent = alice
        .send(alice.seal(&group_id, "g1", &members, "hello group"))
        .await
        .unwrap();
    let to_bob = next_message(&mut bob_events).await;
    let to_carol = next_message(&mut carol_events).await;
    let listed = bob.list_conversations().await;
    let outsider_send = mallory
        .send(
            mallory.seal(
                &group_id,
                "m1",
                &mallory
                    .recipients(&[&alice.user_id, &bob.user_id, &carol.user_id])
                    .await,
                "let me in",
            ),
        )
        .await
        .unwrap_err();
    let outsider_read = mallory
        .list_messages(&group_id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap_err();
    let missing_carol = alice
        .send(alice.seal(
            &group_id,
            "g2",
            &alice.recipients(&[&bob.user_id]).await,
            "carol left out",
        ))
        .await
        .unwrap_err();

    assert_eq!(sent.sequence, 1);
    assert_eq!(bob.open(&to_bob, &alice), "hello group");
    assert_eq!(carol.open(&to_carol, &alice), "hello group");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].conversation_id, group_id);
    assert_eq!(listed[0].group_id, group_id);
    assert_eq!(listed[0].kind, pb::ConversationKind::Group as i32);
    assert_eq!(listed[0].last_sequence, 1);
    assert_eq!(listed[0].unread_count, 1);
    assert_eq!(outsider_send.code(), Code::NotFound);
    assert_eq!(outsider_read.code(), Code::NotFound);
    assert_eq!(missing_carol.code(), Code::FailedPrecondition);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_group_conversation_is_listed_before_its_first_message(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let group_id = create_group(&app, &alice, &[&bob]).await;

    let listed = bob.list_conversations().await;

    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].conversation_id, group_id);
    assert_eq!(listed[0].last_sequence, 0);
    assert!(listed[0].peer_user_id.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_removed_member_is_no_recipient_and_cannot_read_any_more(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let group_id = create_group(&app, &alice, &[&bob, &carol]).await;
    let everyone = alice
        .recipients(&[&alice.user_id, &bob.user_id, &carol.user_id])
        .await;
    alice
        .send(alice.seal(&group_id, "g1", &everyone, "before"))
        .await
        .unwrap();
    let mut alice_events = alice.subscribe(&[]).await;
    replay(&mut alice_events).await;

    let mut groups = GroupServiceClient::new(testkit::connect(app.group_addr).await);
    groups
        .remove_member(alice.request(group_pb::RemoveMemberRequest {
            group_id: group_id.clone(),
            user_id: carol.user_id.clone(),
        }))
        .await
        .unwrap();
    // The chat service learns of the removal from the group service's event stream (the
    // documented staleness bound): once Alice's stream carries it, sends and reads reflect it.
    next_membership_change(&mut alice_events).await;
    let still_for_carol = alice
        .send(alice.seal(&group_id, "g2", &everyone, "after"))
        .await
        .unwrap_err();
    let without_carol = alice
        .send(alice.seal(
            &group_id,
            "g3",
            &alice.recipients(&[&alice.user_id, &bob.user_id]).await,
            "after",
        ))
        .await;
    let carol_reads = carol
        .list_messages(&group_id, pb::Direction::Forward, 0, 10)
        .await
        .unwrap_err();

    let mismatch = crate::helpers::device_list_mismatch(&still_for_carol);
    assert_eq!(
        mismatch.extra_device_ids,
        std::slice::from_ref(&carol.device_id)
    );
    assert_eq!(without_carol.unwrap().sequence, 2);
    assert_eq!(carol_reads.code(), Code::NotFound);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_send_to_a_member_just_added_is_accepted_before_the_event_arrives(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let group_id = create_group(&app, &alice, &[&bob]).await;
    let pair = alice.recipients(&[&alice.user_id, &bob.user_id]).await;
    // Fills the chat service's membership cache with the group as it was.
    alice
        .send(alice.seal(&group_id, "g1", &pair, "just us"))
        .await
        .unwrap();

    let mut groups = GroupServiceClient::new(testkit::connect(app.group_addr).await);
    groups
        .add_members(alice.request(group_pb::AddMembersRequest {
            group_id: group_id.clone(),
            user_ids: vec![carol.user_id.clone()],
            role: group_pb::Role::Member.into(),
        }))
        .await
        .unwrap();
    // No waiting for the membership event: a cache that still lacks Carol is checked again
    // against the group service before the send is refused.
    let everyone = alice
        .recipients(&[&alice.user_id, &bob.user_id, &carol.user_id])
        .await;
    let with_carol = alice
        .send(alice.seal(&group_id, "g2", &everyone, "welcome"))
        .await;

    assert_eq!(with_carol.unwrap().sequence, 2);
}

/// The next membership change on `stream`, skipping anything else.
async fn next_membership_change(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
) -> pb::MembershipChange {
    loop {
        if let pb::stream_event::Event::MembershipChange(change) = next_event(stream).await {
            return change;
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn membership_changes_reach_open_streams_which_follow_them_without_reconnecting(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let group_id = create_group(&app, &alice, &[&bob]).await;
    let mut bob_events = bob.subscribe(&[]).await;
    let mut carol_events = carol.subscribe(&[]).await;
    replay(&mut bob_events).await;
    replay(&mut carol_events).await;
    let mut groups = GroupServiceClient::new(testkit::connect(app.group_addr).await);

    // Carol joins while streaming: both streams hear of it, and hers delivers the group from now on.
    groups
        .add_members(alice.request(group_pb::AddMembersRequest {
            group_id: group_id.clone(),
            user_ids: vec![carol.user_id.clone()],
            role: group_pb::Role::Member.into(),
        }))
        .await
        .unwrap();
    let bob_hears_of_carol = next_membership_change(&mut bob_events).await;
    let carol_hears_of_herself = next_membership_change(&mut carol_events).await;
    let everyone = alice
        .recipients(&[&alice.user_id, &bob.user_id, &carol.user_id])
        .await;
    alice
        .send(alice.seal(&group_id, "g1", &everyone, "welcome carol"))
        .await
        .unwrap();
    let to_carol = next_message(&mut carol_events).await;
    next_message(&mut bob_events).await;

    // Carol is removed while streaming: she hears of it, then nothing more of the group.
    groups
        .remove_member(alice.request(group_pb::RemoveMemberRequest {
            group_id: group_id.clone(),
            user_id: carol.user_id.clone(),
        }))
        .await
        .unwrap();
    let carol_hears_of_removal = next_membership_change(&mut carol_events).await;
    next_membership_change(&mut bob_events).await;
    let remaining = alice.recipients(&[&alice.user_id, &bob.user_id]).await;
    alice
        .send(alice.seal(&group_id, "g2", &remaining, "carol is gone"))
        .await
        .unwrap();
    let typing = alice.request(pb::SendTypingRequest {
        conversation_id: group_id.clone(),
    });
    alice.chat.clone().send_typing(typing).await.unwrap();
    let bob_after = [
        next_event(&mut bob_events).await,
        next_event(&mut bob_events).await,
    ];
    // Bob's events were routed in the same pass as Carol's would have been.
    let carol_after =
        tokio::time::timeout(Duration::from_millis(300), next_event(&mut carol_events)).await;

    assert_eq!(bob_hears_of_carol.group_id, group_id);
    assert_eq!(
        bob_hears_of_carol.kind,
        pb::MembershipChangeKind::MemberAdded as i32
    );
    assert_eq!(bob_hears_of_carol.user_id, carol.user_id);
    assert!(bob_hears_of_carol.membership_version > 0);
    assert_eq!(carol_hears_of_herself, bob_hears_of_carol);
    assert_eq!(carol.open(&to_carol, &alice), "welcome carol");
    assert_eq!(
        carol_hears_of_removal.kind,
        pb::MembershipChangeKind::MemberRemoved as i32
    );
    assert_eq!(carol_hears_of_removal.user_id, carol.user_id);
    assert!(
        matches!(bob_after[0], pb::stream_event::Event::Message(_)),
        "{bob_after:?}"
    );
    assert!(
        matches!(bob_after[1], pb::stream_event::Event::Typing(_)),
        "{bob_after:?}"
    );
    assert!(carol_after.is_err(), "carol got {carol_after:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_group_of_a_thousand_members_receives_a_message_on_all_its_streams(db: PgPool) {
    const MEMBERS: usize = 1_000;
    let app = spawn_app(db).await;
    let mut members = Vec::with_capacity(MEMBERS);
    let names: Vec<String> = (0..MEMBERS).map(|n| format!("member{n:04}")).collect();
    for chunk in names.chunks(50) {
        let created = futures::future::join_all(chunk.iter().map(|name| app.user(name))).await;
        members.extend(created);
    }
    let owner = &members[0];
    let first_others: Vec<&TestDevice> = members[1..100].iter().collect();
    let group_id = create_group(&app, owner, &first_others).await;
    let mut groups = GroupServiceClient::new(testkit::connect(app.group_addr).await);
    for chunk in members[100..].chunks(100) {
        groups
            .add_members(owner.request(group_pb::AddMembersRequest {
                group_id: group_id.clone(),
                user_ids: chunk.iter().map(|member| member.user_id.clone()).collect(),
                role: group_pb::Role::Member.into(),
            }))
            .await
            .unwrap();
    }
    let mut streams = Vec::with_capacity(MEMBERS - 1);
    for member in &members[1..] {
        let mut stream = member.subscribe(&[]).await;
        replay(&mut stream).await;
        streams.push(stream);
    }
    let recipients: Vec<e2ee::RecipientDevice> = members[1..]
        .iter()
        .map(|member| e2ee::RecipientDevice {
            device_id: member.device_id.clone(),
            encryption_spki: member.keys.public_keys().encryption_spki.clone(),
        })
        .collect();

    let sent = owner
        .send(owner.seal(&group_id, "all", &recipients, "hello, thousand"))
        .await
        .unwrap();
    let received = futures::future::join_all(streams.iter_mut().map(next_message)).await;

    assert_eq!(received.len(), MEMBERS - 1);
    for (member, message) in members[1..].iter().zip(&received) {
        let envelope = message.envelope.as_ref().unwrap();
        assert_eq!(message.message_id, sent.message_id);
        assert_eq!(
            envelope.wrapped_keys.len(),
            1,
            "each device gets only its own key"
        );
        assert_eq!(envelope.wrapped_keys[0].device_id, member.device_id);
    }
    for (member, message) in members[1..].iter().zip(&received).step_by(333) {
        assert_eq!(member.open(message, owner), "hello, thousand");
    }
}

/// A membership stream that stays open but brings nothing, not even a heartbeat (the group
/// replica chat follows cannot read its outbox, while another replica commits changes), must not
/// keep chat's membership cache trusted: after `chat::EVENT_STREAM_SILENCE_BOUND` a send sealed for a
/// removed member is no longer accepted from the cache, and once the replica reads again the
/// send is refused as a device-list mismatch.
#[sqlx::test(migrations = "../migrations")]
async fn a_membership_stream_that_falls_silent_stops_vouching_for_the_cache(db: PgPool) {
    // Chat follows group replica B through `front`, B reaches PostgreSQL through `b_database`;
    // the test's calls go to replica A, straight to the database.
    let front = testkit::ChaosProxy::start(Vec::new());
    let app = crate::helpers::spawn_app_with(db.clone(), |config| {
        config.group_url = format!("http://{}", front.addr);
    })
    .await;
    let options = db.connect_options();
    let database = std::net::SocketAddr::from(([127, 0, 0, 1], options.get_port()));
    let b_database = testkit::ChaosProxy::start(vec![database]);
    let b_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with(
            (*options)
                .clone()
                .host("127.0.0.1")
                .port(b_database.addr.port()),
        );
    let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    front.set_targets(vec![b_listener.local_addr().unwrap()]);
    tokio::spawn(group::run(
        group::Config::for_tests(&format!("http://{}", app.auth_addr)),
        b_pool,
        b_listener,
        std::future::pending(),
    ));
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let group_id = create_group(&app, &alice, &[&bob, &carol]).await;
    let everyone = alice
        .recipients(&[&alice.user_id, &bob.user_id, &carol.user_id])
        .await;
    // Chat retried B's stream with backoff (at most 5 s) until B listened: once it follows
    // it, this send fills the cache, which is trusted from then on.
    tokio::time::sleep(Duration::from_secs(6)).await;
    alice
        .send(alice.seal(&group_id, "g1", &everyone, "all of us"))
        .await
        .unwrap();

    b_database.stall(true);
    let mut groups = GroupServiceClient::new(testkit::connect(app.group_addr).await);
    groups
        .remove_member(alice.request(group_pb::RemoveMemberRequest {
            group_id: group_id.clone(),
            user_id: carol.user_id.clone(),
        }))
        .await
        .unwrap();
    tokio::time::sleep(chat::EVENT_STREAM_SILENCE_BOUND + Duration::from_secs(2)).await;
    let during_the_stall = tokio::time::timeout(
        Duration::from_secs(5),
        alice.send(alice.seal(&group_id, "g2", &everyone, "still for carol?")),
    )
    .await;
    b_database.stall(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after_the_stall = loop {
        let sent = alice
            .send(alice.seal(&group_id, "g3", &everyone, "still for carol?"))
            .await;
        match sent {
            Err(status) if status.code() == Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };

    assert!(
        !matches!(during_the_stall, Ok(Ok(_))),
        "a send for a removed member was accepted {:?} after the removal, on a membership \
         stream that had been silent since: {during_the_stall:?}",
        chat::EVENT_STREAM_SILENCE_BOUND + Duration::from_secs(2)
    );
    let mismatch = crate::helpers::device_list_mismatch(&after_the_stall.unwrap_err());
    assert_eq!(
        mismatch.extra_device_ids,
        std::slice::from_ref(&carol.device_id)
    );
}
