//! The configured limits: members per group, groups per user, users per AddMembers call.

use proto::group::v1::Role;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{assert_code, error_info, spawn_app_with};

#[sqlx::test(migrations = "../migrations")]
async fn a_group_cannot_grow_past_the_configured_member_limit(db: PgPool) {
    let app = spawn_app_with(db, |config| config.limits.max_members_per_group = 3).await;
    let users = app.users("user", 5).await;
    let [owner, a, b, c, d] = &users[..] else {
        unreachable!()
    };

    let too_big = app.create_group(owner, "Too big", &[a, b, c]).await;
    let group = app.create_group(owner, "Small", &[a]).await.unwrap();
    let over = app
        .add_members(owner, &group.group_id, &[b, c], Role::Member)
        .await;
    app.add_members(owner, &group.group_id, &[b], Role::Member)
        .await
        .unwrap();
    let full = app
        .add_members(owner, &group.group_id, &[d], Role::Member)
        .await;

    for refused in [too_big.map(drop), over.map(drop), full.map(drop)] {
        let status = assert_code(refused, Code::FailedPrecondition);
        let (reason, metadata) = error_info(&status);
        assert_eq!(reason, "LIMIT_EXCEEDED");
        assert_eq!(
            metadata.get("limit").map(String::as_str),
            Some("members_per_group")
        );
        assert_eq!(metadata.get("max").map(String::as_str), Some("3"));
        assert!(status.message().contains("at most 3 members"), "{status:?}");
    }
    assert_eq!(
        app.get_group(owner, &group.group_id)
            .await
            .unwrap()
            .member_count,
        3
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_additions_never_pass_the_member_limit(db: PgPool) {
    let app = spawn_app_with(db, |config| config.limits.max_members_per_group = 4).await;
    let owner = app.user("owner").await;
    let joiners = app.users("joiner", 8).await;
    let group = app.create_group(&owner, "Race", &[]).await.unwrap();

    let (app, owner, group_id) = (&app, &owner, &group.group_id);
    let attempts = joiners.iter().map(|joiner| async move {
        app.add_members(owner, group_id, &[joiner], Role::Member)
            .await
    });
    let results = futures::future::join_all(attempts).await;

    let succeeded = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(succeeded, 3);
    for refused in results.into_iter().filter(Result::is_err) {
        assert_code(refused, Code::FailedPrecondition);
    }
    assert_eq!(
        app.get_group(owner, group_id).await.unwrap().member_count,
        4
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_cannot_be_in_more_groups_than_configured(db: PgPool) {
    let app = spawn_app_with(db, |config| config.limits.max_groups_per_user = 2).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.create_group(&alice, "one", &[&bob]).await.unwrap();
    let second = app.create_group(&alice, "two", &[]).await.unwrap();

    let alice_third = app.create_group(&alice, "three", &[]).await;
    let bob_owns_one = app.create_group(&bob, "bob's", &[]).await.unwrap();
    let bob_third = app
        .add_members(&alice, &second.group_id, &[&bob], Role::Member)
        .await;

    let status = assert_code(alice_third, Code::FailedPrecondition);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "LIMIT_EXCEEDED");
    assert_eq!(
        metadata.get("limit").map(String::as_str),
        Some("groups_per_user")
    );
    assert_eq!(metadata.get("max").map(String::as_str), Some("2"));
    assert!(
        status
            .message()
            .contains("you are already a member of 2 groups"),
        "{status:?}"
    );
    let status = assert_code(bob_third, Code::FailedPrecondition);
    assert!(status.message().contains(&bob.id), "{status:?}");
    assert_eq!(bob_owns_one.member_count, 1);
    assert_eq!(
        app.list_my_groups(&alice, 0, "")
            .await
            .unwrap()
            .groups
            .len(),
        2
    );
    assert_eq!(
        app.list_my_groups(&bob, 0, "").await.unwrap().groups.len(),
        2
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn add_members_names_one_to_the_configured_number_of_users(db: PgPool) {
    let app = spawn_app_with(db, |config| config.limits.max_users_per_add = 2).await;
    let users = app.users("user", 4).await;
    let [owner, a, b, c] = &users[..] else {
        unreachable!()
    };
    let group = app.create_group(owner, "Batch", &[]).await.unwrap();

    let too_many = app
        .add_members(owner, &group.group_id, &[a, b, c], Role::Member)
        .await;
    let none = app
        .add_members(owner, &group.group_id, &[], Role::Member)
        .await;
    let two = app
        .add_members(owner, &group.group_id, &[a, b], Role::Member)
        .await
        .unwrap();

    let status = assert_code(too_many, Code::InvalidArgument);
    assert!(status.message().contains("1 to 2 users"), "{status:?}");
    assert_code(none, Code::InvalidArgument);
    assert_eq!(two.added_user_ids.len(), 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_shorter_configured_name_limit_applies(db: PgPool) {
    let app = spawn_app_with(db, |config| config.limits.max_name_chars = 5).await;
    let alice = app.user("alice").await;

    let status = assert_code(
        app.create_group(&alice, "sixsix", &[]).await,
        Code::InvalidArgument,
    );
    app.create_group(&alice, "five5", &[]).await.unwrap();

    assert!(
        status.message().contains("at most 5 characters"),
        "{status:?}"
    );
}
