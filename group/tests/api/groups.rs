//! Creating, reading, listing, renaming and deleting groups.

use proto::group::v1 as pb;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{assert_code, error_info, spawn_app, unknown_id};

#[sqlx::test(migrations = "../migrations")]
async fn creating_a_group_makes_the_caller_owner_and_adds_the_others_as_members(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;

    let group = app
        .create_group(&alice, "Friends", &[&bob, &carol, &bob, &alice])
        .await
        .unwrap();

    assert_eq!(group.name, "Friends");
    assert_eq!(group.my_role(), pb::Role::Owner);
    assert_eq!(
        group.member_count, 3,
        "duplicates and the creator count once"
    );
    assert_eq!(group.membership_version, 3, "one version per member added");
    assert!(group.created_at.is_some() && group.updated_at.is_some());
    let mut expected = vec![
        (alice.id.clone(), pb::Role::Owner),
        (bob.id.clone(), pb::Role::Member),
        (carol.id.clone(), pb::Role::Member),
    ];
    expected.sort();
    assert_eq!(app.roles(&bob, &group.group_id).await, expected);
    let seen_by_bob = app.get_group(&bob, &group.group_id).await.unwrap();
    assert_eq!(seen_by_bob.my_role(), pb::Role::Member);
    assert_eq!(seen_by_bob.member_count, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn creating_a_group_with_an_unknown_user_is_not_found_and_names_the_user(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let nobody = unknown_id();
    let mut request = crate::helpers::with_token(
        pb::CreateGroupRequest {
            name: "Friends".into(),
            member_user_ids: vec![nobody.clone()],
        },
        &alice.token,
    );
    request.set_timeout(std::time::Duration::from_secs(10));

    let status = assert_code(app.groups().create_group(request).await, Code::NotFound);

    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "USER_NOT_FOUND");
    assert_eq!(metadata.get("user_id"), Some(&nobody));
    assert!(
        app.list_my_groups(&alice, 0, "")
            .await
            .unwrap()
            .groups
            .is_empty()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn names_must_be_1_to_64_characters_and_not_only_white_space(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;

    for bad in ["", "   ", "\t\n", &"x".repeat(65), "line\nbreak"] {
        let status = assert_code(
            app.create_group(&alice, bad, &[]).await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains("name"), "{status:?}");
    }
    let longest = "é".repeat(64);
    let group = app.create_group(&alice, &longest, &[]).await.unwrap();
    assert_eq!(
        group.name, longest,
        "64 characters, though more bytes, are fine"
    );
    let status = assert_code(
        app.rename(&alice, &group.group_id, &"y".repeat(65)).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("64"), "{status:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_malformed_id_is_invalid_argument(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;

    let status = assert_code(
        app.get_group(&alice, "not-a-uuid").await,
        Code::InvalidArgument,
    );

    assert!(status.message().contains("group_id"), "{status:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_non_member_gets_not_found_for_everything_exactly_like_for_an_unknown_group(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let group = app.create_group(&alice, "Private", &[&bob]).await.unwrap();
    let unknown = unknown_id();

    for group_id in [group.group_id.as_str(), unknown.as_str()] {
        let statuses = [
            app.get_group(&mallory, group_id).await.map(drop),
            app.list_members(&mallory, group_id).await.map(drop),
            app.rename(&mallory, group_id, "Mine").await.map(drop),
            app.delete(&mallory, group_id).await,
            app.add_members(&mallory, group_id, &[&mallory], pb::Role::Member)
                .await
                .map(drop),
            app.remove(&mallory, group_id, &bob).await.map(drop),
            app.leave(&mallory, group_id).await,
            app.change_role(&mallory, group_id, &bob, pb::Role::Admin)
                .await
                .map(drop),
        ];
        for status in statuses {
            let status = assert_code(status, Code::NotFound);
            assert_eq!(status.message(), "group not found");
        }
    }
    assert_eq!(
        app.list_members(&alice, &group.group_id)
            .await
            .unwrap()
            .members
            .len(),
        2
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn my_groups_come_most_recently_changed_first_in_pages(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(
            app.create_group(&alice, &format!("g{n}"), &[])
                .await
                .unwrap(),
        );
    }
    // Someone else's group is never listed; a renamed group moves to the front.
    app.create_group(&bob, "bob's", &[]).await.unwrap();
    app.rename(&alice, &created[1].group_id, "g1 renamed")
        .await
        .unwrap();

    let first = app.list_my_groups(&alice, 2, "").await.unwrap();
    let second = app
        .list_my_groups(&alice, 2, &first.next_page_token)
        .await
        .unwrap();
    let third = app
        .list_my_groups(&alice, 2, &second.next_page_token)
        .await
        .unwrap();

    let names = |page: &pb::ListMyGroupsResponse| -> Vec<String> {
        page.groups.iter().map(|group| group.name.clone()).collect()
    };
    assert_eq!(names(&first), ["g1 renamed", "g4"]);
    assert_eq!(names(&second), ["g3", "g2"]);
    assert_eq!(names(&third), ["g0"]);
    assert!(!first.next_page_token.is_empty());
    assert!(
        third.next_page_token.is_empty(),
        "the last page has no token"
    );
    assert!(
        third
            .groups
            .iter()
            .all(|group| group.my_role() == pb::Role::Owner)
    );
    let everything = app.list_my_groups(&alice, 0, "").await.unwrap();
    assert_eq!(
        everything.groups.len(),
        5,
        "page size 0 means the default (50)"
    );
    assert!(everything.next_page_token.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_malformed_page_token_is_invalid_argument(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;

    for token in ["garbage!", "bm90LWEtY3Vyc29y"] {
        let status = assert_code(
            app.list_my_groups(&alice, 10, token).await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains("page_token"), "{status:?}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn owners_and_admins_may_rename_a_group_but_plain_members_may_not(db: PgPool) {
    let app = spawn_app(db).await;
    let owner = app.user("owner").await;
    let admin = app.user("admin").await;
    let member = app.user("member").await;
    let group = app
        .create_group(&owner, "Before", &[&member])
        .await
        .unwrap();
    app.add_members(&owner, &group.group_id, &[&admin], pb::Role::Admin)
        .await
        .unwrap();

    let by_owner = app
        .rename(&owner, &group.group_id, "By owner")
        .await
        .unwrap();
    let by_admin = app
        .rename(&admin, &group.group_id, "By admin")
        .await
        .unwrap();
    let by_member = app.rename(&member, &group.group_id, "By member").await;

    assert_eq!(by_owner.name, "By owner");
    assert_eq!(by_admin.name, "By admin");
    assert_eq!(by_admin.my_role(), pb::Role::Admin);
    assert_eq!(
        by_admin.membership_version,
        group.membership_version + 1,
        "renaming does not change the membership (only the admin's addition did)"
    );
    assert_code(by_member, Code::PermissionDenied);
    assert_eq!(
        app.get_group(&member, &group.group_id).await.unwrap().name,
        "By admin"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn only_an_owner_may_delete_a_group_which_is_then_gone_for_everyone(db: PgPool) {
    let app = spawn_app(db).await;
    let owner = app.user("owner").await;
    let admin = app.user("admin").await;
    let member = app.user("member").await;
    let group = app
        .create_group(&owner, "Doomed", &[&member])
        .await
        .unwrap();
    app.add_members(&owner, &group.group_id, &[&admin], pb::Role::Admin)
        .await
        .unwrap();

    assert_code(
        app.delete(&admin, &group.group_id).await,
        Code::PermissionDenied,
    );
    assert_code(
        app.delete(&member, &group.group_id).await,
        Code::PermissionDenied,
    );
    app.delete(&owner, &group.group_id).await.unwrap();

    for user in [&owner, &admin, &member] {
        assert_code(app.get_group(user, &group.group_id).await, Code::NotFound);
        assert!(
            app.list_my_groups(user, 0, "")
                .await
                .unwrap()
                .groups
                .is_empty()
        );
    }
}
