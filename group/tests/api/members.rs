//! Adding, removing, leaving, roles, and every authorization rule between them.

use proto::group::v1::Role;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{TestApp, TestUser, assert_code, error_info, spawn_app, unknown_id};

/// A group with an owner, an admin and two plain members.
struct Cast {
    owner: TestUser,
    admin: TestUser,
    member: TestUser,
    other_member: TestUser,
    group_id: String,
}

async fn cast(app: &TestApp) -> Cast {
    let owner = app.user("owner").await;
    let admin = app.user("admin").await;
    let member = app.user("member").await;
    let other_member = app.user("othermember").await;
    let group = app
        .create_group(&owner, "Cast", &[&member, &other_member])
        .await
        .unwrap();
    app.add_members(&owner, &group.group_id, &[&admin], Role::Admin)
        .await
        .unwrap();
    Cast {
        owner,
        admin,
        member,
        other_member,
        group_id: group.group_id,
    }
}

fn role_of(roles: &[(String, Role)], user: &TestUser) -> Option<Role> {
    roles
        .iter()
        .find(|(id, _)| *id == user.id)
        .map(|(_, role)| *role)
}

#[sqlx::test(migrations = "../migrations")]
async fn an_admin_may_add_plain_members_but_not_admins_or_owners(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let dave = app.user("dave").await;
    let erin = app.user("erin").await;

    let as_admin = app
        .add_members(&cast.admin, &cast.group_id, &[&erin], Role::Admin)
        .await;
    let as_owner = app
        .add_members(&cast.admin, &cast.group_id, &[&erin], Role::Owner)
        .await;
    let added = app
        .add_members(&cast.admin, &cast.group_id, &[&dave], Role::Unspecified)
        .await
        .unwrap();

    assert_code(as_admin, Code::PermissionDenied);
    assert_code(as_owner, Code::PermissionDenied);
    assert_eq!(added.added_user_ids, vec![dave.id.clone()]);
    assert_eq!(added.group.unwrap().member_count, 5);
    let roles = app.roles(&cast.owner, &cast.group_id).await;
    assert_eq!(
        role_of(&roles, &dave),
        Some(Role::Member),
        "unset means ROLE_MEMBER"
    );
    assert_eq!(role_of(&roles, &erin), None);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_owner_may_add_admins_and_owners(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let dave = app.user("dave").await;
    let erin = app.user("erin").await;

    app.add_members(&cast.owner, &cast.group_id, &[&dave], Role::Owner)
        .await
        .unwrap();
    app.add_members(&cast.owner, &cast.group_id, &[&erin], Role::Admin)
        .await
        .unwrap();

    let roles = app.roles(&cast.owner, &cast.group_id).await;
    assert_eq!(role_of(&roles, &dave), Some(Role::Owner));
    assert_eq!(role_of(&roles, &erin), Some(Role::Admin));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_plain_member_may_not_add_members(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let dave = app.user("dave").await;

    let status = app
        .add_members(&cast.member, &cast.group_id, &[&dave], Role::Member)
        .await;

    assert_code(status, Code::PermissionDenied);
}

#[sqlx::test(migrations = "../migrations")]
async fn adding_users_who_are_already_members_leaves_them_as_they_are(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let dave = app.user("dave").await;
    let before = app.get_group(&cast.owner, &cast.group_id).await.unwrap();

    let response = app
        .add_members(
            &cast.owner,
            &cast.group_id,
            &[&cast.admin, &dave, &dave],
            Role::Member,
        )
        .await
        .unwrap();
    let nothing_new = app
        .add_members(&cast.owner, &cast.group_id, &[&dave], Role::Owner)
        .await
        .unwrap();

    assert_eq!(response.added_user_ids, vec![dave.id.clone()]);
    assert!(nothing_new.added_user_ids.is_empty());
    let after = nothing_new.group.unwrap();
    assert_eq!(after.membership_version, before.membership_version + 1);
    let roles = app.roles(&cast.owner, &cast.group_id).await;
    assert_eq!(
        role_of(&roles, &cast.admin),
        Some(Role::Admin),
        "not demoted"
    );
    assert_eq!(role_of(&roles, &dave), Some(Role::Member), "not promoted");
}

#[sqlx::test(migrations = "../migrations")]
async fn adding_an_unknown_user_is_not_found_with_the_reason_and_adds_nobody(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let dave = app.user("dave").await;
    let nobody = unknown_id();

    let status = app
        .add_member_ids(
            &cast.owner,
            &cast.group_id,
            vec![dave.id.clone(), nobody.clone()],
            Role::Member,
        )
        .await;

    let status = assert_code(status, Code::NotFound);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "USER_NOT_FOUND");
    assert_eq!(metadata.get("user_id"), Some(&nobody));
    assert_eq!(
        role_of(&app.roles(&cast.owner, &cast.group_id).await, &dave),
        None
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_admin_may_remove_plain_members_but_never_an_owner_or_another_admin(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let second_admin = app.user("secondadmin").await;
    app.add_members(&cast.owner, &cast.group_id, &[&second_admin], Role::Admin)
        .await
        .unwrap();

    let owner_removal = app.remove(&cast.admin, &cast.group_id, &cast.owner).await;
    let admin_removal = app.remove(&cast.admin, &cast.group_id, &second_admin).await;
    let self_removal = app.remove(&cast.admin, &cast.group_id, &cast.admin).await;
    let after = app
        .remove(&cast.admin, &cast.group_id, &cast.member)
        .await
        .unwrap();

    assert_code(owner_removal, Code::PermissionDenied);
    assert_code(admin_removal, Code::PermissionDenied);
    assert_code(self_removal, Code::PermissionDenied);
    assert_eq!(after.member_count, 4);
    let roles = app.roles(&cast.owner, &cast.group_id).await;
    assert_eq!(role_of(&roles, &cast.owner), Some(Role::Owner));
    assert_eq!(role_of(&roles, &second_admin), Some(Role::Admin));
    assert_eq!(role_of(&roles, &cast.member), None);
    assert_code(
        app.get_group(&cast.member, &cast.group_id).await,
        Code::NotFound,
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_plain_member_may_not_remove_anyone(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;

    for target in [&cast.other_member, &cast.admin, &cast.owner] {
        assert_code(
            app.remove(&cast.member, &cast.group_id, target).await,
            Code::PermissionDenied,
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_owner_may_remove_admins_and_other_owners_but_not_the_last_owner(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let co_owner = app.user("coowner").await;
    app.add_members(&cast.owner, &cast.group_id, &[&co_owner], Role::Owner)
        .await
        .unwrap();

    app.remove(&cast.owner, &cast.group_id, &cast.admin)
        .await
        .unwrap();
    app.remove(&co_owner, &cast.group_id, &cast.owner)
        .await
        .unwrap();
    let last_owner = app.remove(&co_owner, &cast.group_id, &co_owner).await;

    let status = assert_code(last_owner, Code::FailedPrecondition);
    assert_eq!(error_info(&status).0, "LAST_OWNER");
    let roles = app.roles(&co_owner, &cast.group_id).await;
    assert_eq!(roles.len(), 3);
    assert_eq!(role_of(&roles, &co_owner), Some(Role::Owner));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_owner_removing_themselves_gets_the_group_without_a_role(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let co_owner = app.user("coowner").await;
    app.add_members(&cast.owner, &cast.group_id, &[&co_owner], Role::Owner)
        .await
        .unwrap();

    let after = app
        .remove(&cast.owner, &cast.group_id, &cast.owner)
        .await
        .unwrap();

    assert_eq!(after.my_role(), Role::Unspecified);
    assert_eq!(after.member_count, 4);
    assert_code(
        app.get_group(&cast.owner, &cast.group_id).await,
        Code::NotFound,
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn removing_someone_who_is_not_a_member_is_not_found(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let stranger = app.user("stranger").await;

    let status = assert_code(
        app.remove(&cast.owner, &cast.group_id, &stranger).await,
        Code::NotFound,
    );

    assert!(status.message().contains(&stranger.id), "{status:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_last_owner_cannot_leave_until_someone_else_is_owner(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;

    let refused = app.leave(&cast.owner, &cast.group_id).await;
    app.change_role(&cast.owner, &cast.group_id, &cast.admin, Role::Owner)
        .await
        .unwrap();
    app.leave(&cast.owner, &cast.group_id).await.unwrap();

    let status = assert_code(refused, Code::FailedPrecondition);
    assert_eq!(error_info(&status).0, "LAST_OWNER");
    assert!(status.message().contains("owner"), "{status:?}");
    let roles = app.roles(&cast.admin, &cast.group_id).await;
    assert_eq!(role_of(&roles, &cast.owner), None);
    assert_eq!(role_of(&roles, &cast.admin), Some(Role::Owner));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_owner_alone_in_the_group_cannot_leave_either_and_deletes_it_instead(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let group = app.create_group(&alice, "Solo", &[]).await.unwrap();

    let status = assert_code(
        app.leave(&alice, &group.group_id).await,
        Code::FailedPrecondition,
    );
    app.delete(&alice, &group.group_id).await.unwrap();

    assert_eq!(error_info(&status).0, "LAST_OWNER");
}

#[sqlx::test(migrations = "../migrations")]
async fn members_and_admins_may_leave(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;

    app.leave(&cast.member, &cast.group_id).await.unwrap();
    app.leave(&cast.admin, &cast.group_id).await.unwrap();

    let roles = app.roles(&cast.owner, &cast.group_id).await;
    assert_eq!(roles.len(), 2);
    assert_code(
        app.get_group(&cast.member, &cast.group_id).await,
        Code::NotFound,
    );
    assert!(
        app.list_my_groups(&cast.admin, 0, "")
            .await
            .unwrap()
            .groups
            .is_empty()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn only_an_owner_may_change_roles_and_an_admin_can_never_demote_the_owner(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;

    let admin_demotes_owner = app
        .change_role(&cast.admin, &cast.group_id, &cast.owner, Role::Member)
        .await;
    let admin_promotes = app
        .change_role(&cast.admin, &cast.group_id, &cast.member, Role::Admin)
        .await;
    let admin_promotes_self = app
        .change_role(&cast.admin, &cast.group_id, &cast.admin, Role::Owner)
        .await;
    let member_promotes_self = app
        .change_role(&cast.member, &cast.group_id, &cast.member, Role::Admin)
        .await;
    let promoted = app
        .change_role(&cast.owner, &cast.group_id, &cast.member, Role::Admin)
        .await
        .unwrap();
    let demoted = app
        .change_role(&cast.owner, &cast.group_id, &cast.admin, Role::Member)
        .await
        .unwrap();

    for refused in [
        admin_demotes_owner,
        admin_promotes,
        admin_promotes_self,
        member_promotes_self,
    ] {
        assert_code(refused, Code::PermissionDenied);
    }
    assert_eq!(demoted.membership_version, promoted.membership_version + 1);
    let roles = app.roles(&cast.owner, &cast.group_id).await;
    assert_eq!(role_of(&roles, &cast.owner), Some(Role::Owner));
    assert_eq!(role_of(&roles, &cast.member), Some(Role::Admin));
    assert_eq!(role_of(&roles, &cast.admin), Some(Role::Member));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_group_always_keeps_an_owner_when_roles_change(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;

    let last_owner_demotes_self = app
        .change_role(&cast.owner, &cast.group_id, &cast.owner, Role::Admin)
        .await;
    let made_owner = app
        .change_role(&cast.owner, &cast.group_id, &cast.admin, Role::Owner)
        .await
        .unwrap();
    let demoted_self = app
        .change_role(&cast.owner, &cast.group_id, &cast.owner, Role::Member)
        .await
        .unwrap();
    let new_last_owner = app
        .change_role(&cast.admin, &cast.group_id, &cast.admin, Role::Member)
        .await;

    let status = assert_code(last_owner_demotes_self, Code::FailedPrecondition);
    assert_eq!(error_info(&status).0, "LAST_OWNER");
    assert_eq!(
        made_owner.my_role(),
        Role::Owner,
        "making someone owner keeps the caller owner"
    );
    assert_eq!(demoted_self.my_role(), Role::Member);
    assert_eq!(
        error_info(&assert_code(new_last_owner, Code::FailedPrecondition)).0,
        "LAST_OWNER"
    );
    let roles = app.roles(&cast.owner, &cast.group_id).await;
    assert_eq!(
        roles
            .iter()
            .filter(|(_, role)| *role == Role::Owner)
            .count(),
        1
    );
    assert_eq!(role_of(&roles, &cast.admin), Some(Role::Owner));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_role_change_needs_a_valid_role_and_a_member(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;
    let stranger = app.user("stranger").await;

    let unspecified = app
        .change_role(&cast.owner, &cast.group_id, &cast.member, Role::Unspecified)
        .await;
    let not_member = app
        .change_role(&cast.owner, &cast.group_id, &stranger, Role::Admin)
        .await;
    let unchanged = app
        .change_role(&cast.owner, &cast.group_id, &cast.member, Role::Member)
        .await
        .unwrap();

    assert_code(unspecified, Code::InvalidArgument);
    assert_code(not_member, Code::NotFound);
    let before = app.get_group(&cast.owner, &cast.group_id).await.unwrap();
    assert_eq!(
        unchanged.membership_version, before.membership_version,
        "no change, no version"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn members_are_listed_with_their_profiles_and_active_devices_with_keys(db: PgPool) {
    let app = spawn_app(db).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let alice_device = app.upload_keys(&alice).await;
    // bob logs in on a second device and uploads keys there only: the first has none to wrap for.
    let bob_second = app.user_login_again(&bob).await;
    let bob_device = app.upload_keys(&bob_second).await;
    let group = app.create_group(&alice, "Keys", &[&bob]).await.unwrap();

    let listed = app.list_members(&bob, &group.group_id).await.unwrap();

    assert_eq!(listed.membership_version, group.membership_version);
    let mut expected_order = vec![alice.id.clone(), bob.id.clone()];
    expected_order.sort();
    let order: Vec<String> = listed
        .members
        .iter()
        .map(|member| member.user.as_ref().unwrap().user_id.clone())
        .collect();
    assert_eq!(order, expected_order, "ordered by user id");
    let alice_entry = listed
        .members
        .iter()
        .find(|m| m.user.as_ref().unwrap().user_id == alice.id)
        .unwrap();
    let bob_entry = listed
        .members
        .iter()
        .find(|m| m.user.as_ref().unwrap().user_id == bob.id)
        .unwrap();
    assert_eq!(alice_entry.user.as_ref().unwrap().username, "alice");
    assert_eq!(
        alice_entry.user.as_ref().unwrap().display_name,
        "alice display"
    );
    assert_eq!(alice_entry.role(), Role::Owner);
    assert_eq!(alice_entry.devices, vec![alice_device]);
    assert_eq!(bob_entry.role(), Role::Member);
    assert_eq!(bob_entry.devices, vec![bob_device]);
    let keys = alice_entry.devices[0].keys.as_ref().unwrap();
    assert_eq!(
        keys.encryption_public_key,
        crate::helpers::DEVICE_KEYS.encryption_public_key
    );
    assert_eq!(alice_entry.devices[0].encryption_key_fingerprint.len(), 32);
    assert!(alice_entry.joined_at.is_some());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_plain_member_may_read_the_membership(db: PgPool) {
    let app = spawn_app(db).await;
    let cast = cast(&app).await;

    let listed = app
        .list_members(&cast.member, &cast.group_id)
        .await
        .unwrap();

    assert_eq!(listed.members.len(), 4);
}

#[sqlx::test(migrations = "../migrations")]
async fn groups_larger_than_one_auth_lookup_are_created_and_listed_completely(db: PgPool) {
    let app = spawn_app(db).await;
    let owner = app.user("owner").await;
    let member_ids = app.registered_ids("member", 150).await;
    let mut request = crate::helpers::with_token(
        proto::group::v1::CreateGroupRequest {
            name: "Big".into(),
            member_user_ids: member_ids.clone(),
        },
        &owner.token,
    );
    request.set_timeout(std::time::Duration::from_secs(30));
    let group = app
        .groups()
        .create_group(request)
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();

    let listed = app.list_members(&owner, &group.group_id).await.unwrap();

    assert_eq!(group.member_count, 151);
    assert_eq!(listed.members.len(), 151);
    let mut expected: Vec<String> = member_ids;
    expected.push(owner.id.clone());
    expected.sort();
    let listed_ids: Vec<String> = listed
        .members
        .iter()
        .map(|member| member.user.as_ref().unwrap().user_id.clone())
        .collect();
    assert_eq!(listed_ids, expected);
    assert!(
        listed.members.iter().all(|member| member
            .user
            .as_ref()
            .unwrap()
            .username
            .starts_with(['m', 'o'])),
        "every member's profile came from auth"
    );
}
