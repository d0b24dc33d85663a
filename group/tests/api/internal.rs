//! `group.internal.v1`: membership look-ups for chat, the membership events written with every
//! change, and the stream that replays and follows them.

use std::time::Duration;

use proto::group::{
    internal::v1::{self as internal_pb, MembershipEventKind as Kind},
    v1::Role,
};
use sqlx::PgPool;
use tonic::{Code, Streaming};

use crate::helpers::{TestApp, assert_code, spawn_app, spawn_app_with, unknown_id, with_token};

type Event = internal_pb::WatchMembershipEventsResponse;
/// id, user_id, kind, role, membership_version of a stored event.
type EventRow = (i64, Option<uuid::Uuid>, String, Option<String>, i64);

/// The next event, or a panic after `wait`.
async fn next_event(stream: &mut Streaming<Event>, wait: Duration) -> Event {
    tokio::time::timeout(wait, stream.message())
        .await
        .expect("an event in time")
        .expect("no error")
        .expect("the stream stays open")
}

async fn take_events(stream: &mut Streaming<Event>, count: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(next_event(stream, Duration::from_secs(5)).await);
    }
    events
}

/// (kind, user id, role, membership version) of each event, for comparisons.
fn summary(events: &[Event]) -> Vec<(Kind, String, Role, u64)> {
    events
        .iter()
        .map(|event| {
            (
                event.kind(),
                event.user_id.clone(),
                event.role(),
                event.membership_version,
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn every_membership_change_writes_an_event_with_the_next_version_in_the_same_transaction(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let group = app.create_group(&alice, "Events", &[&bob]).await.unwrap();
    let id = group.group_id.clone();

    app.add_members(&alice, &id, &[&carol], Role::Member)
        .await
        .unwrap();
    app.change_role(&alice, &id, &bob, Role::Admin)
        .await
        .unwrap();
    app.rename(&alice, &id, "Renamed").await.unwrap();
    app.remove(&bob, &id, &carol).await.unwrap();
    let before_delete = app.get_group(&alice, &id).await.unwrap();
    app.leave(&bob, &id).await.unwrap();
    app.delete(&alice, &id).await.unwrap();

    let rows: Vec<EventRow> = sqlx::query_as(
        "select id, user_id, kind, role, membership_version from groups.membership_events
         where group_id = $1 order by id",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    let (alice_id, bob_id, carol_id) = (uuid(&alice.id), uuid(&bob.id), uuid(&carol.id));
    let owner = Some("owner".to_owned());
    let member = Some("member".to_owned());
    let admin = Some("admin".to_owned());
    let expected = vec![
        (Some(alice_id), "member_added".to_owned(), owner, 1),
        (Some(bob_id), "member_added".into(), member.clone(), 2),
        (Some(carol_id), "member_added".into(), member, 3),
        (Some(bob_id), "role_changed".into(), admin, 4),
        (None, "group_renamed".into(), None, 4),
        (Some(carol_id), "member_removed".into(), None, 5),
        (Some(bob_id), "member_removed".into(), None, 6),
        (None, "group_deleted".into(), None, 7),
    ];
    let stored: Vec<_> = rows
        .iter()
        .map(|(_, user, kind, role, version)| (*user, kind.clone(), role.clone(), *version))
        .collect();
    assert_eq!(stored, expected);
    assert!(
        rows.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "ids increase"
    );
    assert_eq!(
        before_delete.membership_version, 5,
        "the group's version is its last event's"
    );
}

fn uuid(id: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(id).unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_change_writes_no_event_and_keeps_the_version(db: PgPool) {
    let app = spawn_app_with(db, |config| config.limits.max_members_per_group = 2).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let group = app.create_group(&alice, "Full", &[&bob]).await.unwrap();

    assert_code(
        app.add_members(&alice, &group.group_id, &[&carol], Role::Member)
            .await,
        Code::FailedPrecondition,
    );
    assert_code(
        app.leave(&alice, &group.group_id).await,
        Code::FailedPrecondition,
    );

    let count: i64 = sqlx::query_scalar("select count(*) from groups.membership_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 2);
    assert_eq!(
        app.get_group(&alice, &group.group_id)
            .await
            .unwrap()
            .membership_version,
        2
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn get_membership_answers_any_valid_token_with_members_roles_and_version(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let service_caller = app.user("chatservice").await;
    let group = app
        .create_group(&alice, "Looked up", &[&bob])
        .await
        .unwrap();

    let membership = app
        .membership(&service_caller.token, &group.group_id)
        .await
        .unwrap();
    let unknown = app.membership(&service_caller.token, &unknown_id()).await;
    let malformed = app.membership(&service_caller.token, "nope").await;

    let mut expected = vec![
        internal_pb::GroupMember {
            user_id: alice.id.clone(),
            role: Role::Owner.into(),
        },
        internal_pb::GroupMember {
            user_id: bob.id.clone(),
            role: Role::Member.into(),
        },
    ];
    expected.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(membership.members, expected);
    assert_eq!(membership.membership_version, group.membership_version);
    assert_code(unknown, Code::NotFound);
    assert_code(malformed, Code::InvalidArgument);
    app.delete(&alice, &group.group_id).await.unwrap();
    assert_code(
        app.membership(&service_caller.token, &group.group_id).await,
        Code::NotFound,
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn list_user_groups_returns_every_group_of_a_user(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let first = app.create_group(&alice, "one", &[&bob]).await.unwrap();
    let second = app.create_group(&bob, "two", &[]).await.unwrap();
    app.create_group(&alice, "three", &[]).await.unwrap();

    let groups = app
        .internal()
        .list_user_groups(with_token(
            internal_pb::ListUserGroupsRequest {
                user_id: bob.id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .group_ids;

    let mut expected = vec![first.group_id, second.group_id];
    expected.sort();
    assert_eq!(groups, expected);
}

#[sqlx::test(migrations = "../migrations")]
async fn internal_calls_without_a_valid_token_are_unauthenticated(db: PgPool) {
    let app = spawn_app(db).await;
    let mut internal = app.internal();

    let membership = internal
        .get_membership(internal_pb::GetMembershipRequest {
            group_id: unknown_id(),
        })
        .await;
    let groups = internal
        .list_user_groups(with_token(
            internal_pb::ListUserGroupsRequest {
                user_id: unknown_id(),
            },
            "not.a.token",
        ))
        .await;
    let watch = internal
        .watch_membership_events(internal_pb::WatchMembershipEventsRequest::default())
        .await;

    assert_code(membership, Code::Unauthenticated);
    assert_code(groups, Code::Unauthenticated);
    assert_code(watch, Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_event_stream_replays_stored_events_then_follows_live_changes(db: PgPool) {
    // A long poll interval: live events must arrive through the wake-up, not the fallback.
    let app = spawn_app_with(db, |config| {
        config.events.poll_interval = Duration::from_secs(60)
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let group = app.create_group(&alice, "Live", &[&bob]).await.unwrap();

    let mut stream = app.watch(0).await.unwrap();
    let replayed = take_events(&mut stream, 2).await;
    app.add_members(&alice, &group.group_id, &[&carol], Role::Admin)
        .await
        .unwrap();
    let added = next_event(&mut stream, Duration::from_secs(2)).await;
    app.rename(&alice, &group.group_id, "Still live")
        .await
        .unwrap();
    app.delete(&alice, &group.group_id).await.unwrap();
    let last = take_events(&mut stream, 2).await;

    assert_eq!(
        summary(&replayed),
        [
            (Kind::MemberAdded, alice.id.clone(), Role::Owner, 1),
            (Kind::MemberAdded, bob.id.clone(), Role::Member, 2),
        ]
    );
    assert_eq!(
        summary(std::slice::from_ref(&added)),
        [(Kind::MemberAdded, carol.id.clone(), Role::Admin, 3)]
    );
    assert_eq!(
        summary(&last),
        [
            (Kind::GroupRenamed, String::new(), Role::Unspecified, 3),
            (Kind::GroupDeleted, String::new(), Role::Unspecified, 4),
        ]
    );
    let all: Vec<&Event> = replayed.iter().chain([&added]).chain(&last).collect();
    assert!(all.iter().all(|event| event.group_id == group.group_id));
    assert!(
        all.windows(2)
            .all(|pair| pair[0].event_id < pair[1].event_id)
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn resuming_after_an_event_id_replays_only_what_came_after_it(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let group = app.create_group(&alice, "Resume", &[]).await.unwrap();
    let mut first = app.watch(0).await.unwrap();
    let seen = next_event(&mut first, Duration::from_secs(5)).await;
    drop(first);
    app.add_members(&alice, &group.group_id, &[&bob], Role::Member)
        .await
        .unwrap();

    let mut resumed = app.watch(seen.event_id).await.unwrap();
    let next = next_event(&mut resumed, Duration::from_secs(5)).await;

    assert_eq!(
        summary(std::slice::from_ref(&next)),
        [(Kind::MemberAdded, bob.id.clone(), Role::Member, 2)]
    );
    assert!(next.event_id > seen.event_id);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_on_another_replica_is_woken_by_notify_after_commit(db: PgPool) {
    let app = spawn_app(db).await;
    let other_replica = app
        .replica(|config| config.events.poll_interval = Duration::from_secs(60))
        .await;
    let alice = app.user("alice").await;
    app.create_group(&alice, "First", &[]).await.unwrap();
    let mut stream = other_replica.watch(0).await.unwrap();
    next_event(&mut stream, Duration::from_secs(5)).await;

    let group = app.create_group(&alice, "Elsewhere", &[]).await.unwrap();
    let event = next_event(&mut stream, Duration::from_secs(3)).await;

    assert_eq!(event.group_id, group.group_id);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_changes_stream_in_id_order_without_gaps(db: PgPool) {
    let app = spawn_app(db).await;
    let owners = app.users("owner", 6).await;
    let joiners = app.users("joiner", 6).await;
    let mut groups = Vec::new();
    for owner in &owners {
        groups.push(app.create_group(owner, "Busy", &[]).await.unwrap());
    }
    let mut stream = app.watch(0).await.unwrap();
    take_events(&mut stream, owners.len()).await;

    let (app_ref, joiners_ref) = (&app, &joiners);
    let changes = owners.iter().zip(&groups).flat_map(|(owner, group)| {
        joiners_ref.iter().map(move |joiner| async move {
            app_ref
                .add_members(owner, &group.group_id, &[joiner], Role::Member)
                .await
        })
    });
    for result in futures::future::join_all(changes).await {
        result.unwrap();
    }
    let live = take_events(&mut stream, owners.len() * joiners.len()).await;

    let ids: Vec<i64> = sqlx::query_scalar("select id from groups.membership_events order by id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let streamed: Vec<i64> = live.iter().map(|event| event.event_id as i64).collect();
    assert_eq!(
        streamed,
        ids[owners.len()..],
        "every stored event, once, in id order"
    );
    for group in &groups {
        let versions: Vec<u64> = live
            .iter()
            .filter(|event| event.group_id == group.group_id)
            .map(|event| event.membership_version)
            .collect();
        assert_eq!(
            versions,
            (2..=7).collect::<Vec<u64>>(),
            "per group, versions follow each other"
        );
    }
}

async fn backdate_and_prune(app: &TestApp) {
    sqlx::query("update groups.membership_events set created_at = now() - interval '2 days'")
        .execute(&app.db)
        .await
        .unwrap();
    for _ in 0..100 {
        let pruned: i64 =
            sqlx::query_scalar("select pruned_through from groups.membership_event_retention")
                .fetch_one(&app.db)
                .await
                .unwrap();
        if pruned > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("old events were never pruned");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cursor_into_pruned_events_is_out_of_range_and_0_starts_at_the_oldest_kept(db: PgPool) {
    let app = spawn_app_with(db, |config| {
        config.events.prune_interval = Duration::from_millis(50)
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let group = app.create_group(&alice, "Old", &[&bob]).await.unwrap();
    backdate_and_prune(&app).await;
    app.rename(&alice, &group.group_id, "New").await.unwrap();

    let behind = app.watch(1).await;
    let mut from_start = app.watch(0).await.unwrap();
    let oldest_kept = next_event(&mut from_start, Duration::from_secs(5)).await;
    let up_to_date = app.watch(oldest_kept.event_id).await;

    let status = assert_code(behind.map(drop), Code::OutOfRange);
    assert!(status.message().contains("drop the cache"), "{status:?}");
    assert_eq!(oldest_kept.kind(), Kind::GroupRenamed);
    assert!(up_to_date.is_ok());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cursor_past_the_newest_event_is_out_of_range(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    app.create_group(&alice, "Only", &[]).await.unwrap();

    let status = app.watch(1_000).await.map(drop);

    assert_code(status, Code::OutOfRange);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_event_stream_requires_the_service_credential_not_a_user_token(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let request = internal_pb::WatchMembershipEventsRequest::default();

    let with_user_token = app
        .internal()
        .watch_membership_events(with_token(request, &alice.token))
        .await;
    let mut forged = tonic::Request::new(request);
    forged.metadata_mut().insert(
        common::service_credential::HEADER,
        "a-guess-at-the-secret-that-is-long-enough".parse().unwrap(),
    );
    let with_wrong_credential = app.internal().watch_membership_events(forged).await;

    let refused = assert_code(with_user_token, Code::Unauthenticated);
    assert!(
        refused.message().contains("x-service-credential"),
        "{refused:?}"
    );
    assert_code(with_wrong_credential, Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn starting_at_newest_skips_stored_events_and_follows_new_ones(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let group = app.create_group(&alice, "Fresh", &[]).await.unwrap();

    let mut stream = app
        .watch_with(internal_pb::WatchMembershipEventsRequest {
            after_event_id: 0,
            start_at_newest: true,
            heartbeats: false,
        })
        .await
        .unwrap();
    app.add_members(&alice, &group.group_id, &[&bob], Role::Member)
        .await
        .unwrap();
    let first = next_event(&mut stream, Duration::from_secs(5)).await;

    assert_eq!(first.kind, Kind::MemberAdded as i32, "{first:?}");
    assert_eq!(first.user_id, bob.id);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cursor_and_start_at_newest_together_are_invalid(db: PgPool) {
    let app = spawn_app(db).await;

    let status = app
        .watch_with(internal_pb::WatchMembershipEventsRequest {
            after_event_id: 1,
            start_at_newest: true,
            heartbeats: false,
        })
        .await
        .map(drop);

    assert_code(status, Code::InvalidArgument);
}

#[sqlx::test(migrations = "../migrations")]
async fn heartbeats_come_when_asked_and_carry_the_cursor_past_the_last_event(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let group = app.create_group(&alice, "Beats", &[]).await.unwrap();
    let mut with = app
        .watch_with(internal_pb::WatchMembershipEventsRequest {
            after_event_id: 0,
            start_at_newest: false,
            heartbeats: true,
        })
        .await
        .unwrap();
    let mut without = app
        .watch_with(internal_pb::WatchMembershipEventsRequest {
            after_event_id: 0,
            start_at_newest: false,
            heartbeats: false,
        })
        .await
        .unwrap();

    // The stored event, then heartbeats on a quiet stream (the tests poll every 200 ms).
    let created = next_event(&mut with, Duration::from_secs(5)).await;
    let beat = next_event(&mut with, Duration::from_secs(5)).await;
    app.add_members(&alice, &group.group_id, &[&bob], Role::Member)
        .await
        .unwrap();
    let mut after_the_change = next_event(&mut with, Duration::from_secs(5)).await;
    while after_the_change.heartbeat {
        after_the_change = next_event(&mut with, Duration::from_secs(5)).await;
    }
    let next_beat = next_event(&mut with, Duration::from_secs(5)).await;
    let plain = take_events(&mut without, 2).await;

    assert!(!created.heartbeat);
    assert!(beat.heartbeat, "{beat:?}");
    assert!(
        beat.event_id >= created.event_id,
        "{beat:?} after {created:?}"
    );
    assert!(beat.group_id.is_empty() && beat.user_id.is_empty());
    assert_eq!(after_the_change.user_id, bob.id);
    assert!(next_beat.heartbeat, "{next_beat:?}");
    assert!(next_beat.event_id >= after_the_change.event_id);
    assert!(
        plain.iter().all(|event| !event.heartbeat),
        "heartbeats sent unasked: {plain:?}"
    );
}
