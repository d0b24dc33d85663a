//! Membership: adding, removing, leaving, roles, and reading the member list.
//!
//! Every change runs in one transaction that locks the group's row first (which serialises
//! changes per group, so the member-count and last-owner checks are exact), then records its
//! events through `groups::record_change`. Additions also lock each added user (transaction
//! advisory locks taken in key order before the group row), so two groups cannot both take a
//! user past the groups-per-user limit.

use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Error,
    config::Limits,
    events::NewEvent,
    groups::{self, Group},
    ids::{GroupId, Role, UserId},
    member_rows::{check_groups_per_user, insert_members, lock_users, too_many_members},
};

/// A member as stored here (profiles and devices come from auth).
#[derive(Debug, Clone)]
pub struct Member {
    /// The member.
    pub user: UserId,
    /// Their role.
    pub role: Role,
    /// When they joined.
    pub joined_at: OffsetDateTime,
}

/// A group's members at one membership version.
#[derive(Debug, Clone)]
pub struct Membership {
    /// Every member, ordered by user id.
    pub members: Vec<Member>,
    /// The version these members belong to.
    pub membership_version: i64,
}

/// Adds `users` (known to exist) to `group` with `role`; users already members are left as they
/// are. Returns the group afterwards and the users actually added.
///
/// # Errors
/// [`Error::GroupNotFound`]; [`Error::PermissionDenied`] for a plain member or an admin adding
/// owners or admins; [`Error::LimitExceeded`].
pub async fn add_members(
    db: &PgPool,
    limits: &Limits,
    group: GroupId,
    caller: UserId,
    users: &[UserId],
    role: Role,
) -> Result<(Group, Vec<UserId>), Error> {
    let mut tx = db.begin().await?;
    lock_users(&mut tx, users).await?;
    let caller_role = groups::lock_as_member(&mut tx, group, caller).await?;
    check_may_add(caller_role, role)?;
    let ids: Vec<Uuid> = users.iter().map(|user| user.0).collect();
    let added = insert_members(&mut tx, group, &ids, role, caller).await?;
    if !added.is_empty() {
        let member_count: i64 =
            sqlx::query_scalar("select count(*) from groups.members where group_id = $1")
                .bind(group.0)
                .fetch_one(&mut *tx)
                .await?;
        if member_count > i64::from(limits.max_members_per_group) {
            return Err(too_many_members(limits, member_count as usize));
        }
        check_groups_per_user(&mut tx, limits, &added, caller).await?;
        let new_events: Vec<NewEvent> = added
            .iter()
            .map(|user| NewEvent::added(*user, role))
            .collect();
        groups::record_change(&mut tx, group, &new_events).await?;
    }
    let after = groups::view(&mut tx, group, caller).await?;
    tx.commit().await?;
    Ok((after, added))
}

/// Whether `caller_role` may add members with `role`. Public so `service.rs` can refuse before
/// asking auth about the users.
///
/// # Errors
/// [`Error::PermissionDenied`].
pub fn check_may_add(caller_role: Role, role: Role) -> Result<(), Error> {
    match (caller_role, role) {
        (Role::Member, _) => Err(Error::PermissionDenied(
            "only owners and admins may add members",
        )),
        (Role::Admin, Role::Owner | Role::Admin) => Err(Error::PermissionDenied(
            "only owners may add owners or admins",
        )),
        _ => Ok(()),
    }
}

/// Removes `target` from `group`. Owners may remove anyone but the last owner; admins plain
/// members only. Returns the group afterwards (without a role for a caller who removed
/// themselves).
///
/// # Errors
/// [`Error::GroupNotFound`]; [`Error::PermissionDenied`]; [`Error::MemberNotFound`];
/// [`Error::LastOwner`].
pub async fn remove_member(
    db: &PgPool,
    group: GroupId,
    caller: UserId,
    target: UserId,
) -> Result<Group, Error> {
    let mut tx = db.begin().await?;
    let caller_role = groups::lock_as_member(&mut tx, group, caller).await?;
    if !caller_role.manages() {
        return Err(Error::PermissionDenied(
            "only owners and admins may remove members",
        ));
    }
    let target_role = role_of(&mut tx, group, target)
        .await?
        .ok_or(Error::MemberNotFound(target))?;
    if caller_role == Role::Admin && target_role != Role::Member {
        return Err(Error::PermissionDenied(
            "admins may remove plain members only, never an owner or another admin",
        ));
    }
    if target_role == Role::Owner && owner_count(&mut tx, group).await? == 1 {
        return Err(Error::LastOwner(
            "the last owner cannot be removed: make someone else owner first, or delete the group",
        ));
    }
    delete_member(&mut tx, group, target).await?;
    let after = groups::view(&mut tx, group, caller).await?;
    tx.commit().await?;
    Ok(after)
}

/// Removes `caller` from `group`.
///
/// # Errors
/// [`Error::GroupNotFound`]; [`Error::LastOwner`] when the caller is the last owner.
pub async fn leave_group(db: &PgPool, group: GroupId, caller: UserId) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    let role = groups::lock_as_member(&mut tx, group, caller).await?;
    if role == Role::Owner && owner_count(&mut tx, group).await? == 1 {
        return Err(Error::LastOwner(
            "the last owner cannot leave: make someone else owner first, or delete the group",
        ));
    }
    delete_member(&mut tx, group, caller).await?;
    tx.commit().await?;
    Ok(())
}

/// Gives `target` the role `role` (owner only), and says whether it changed (and so recorded an
/// event). Setting the role a member already has changes nothing and records no event.
///
/// # Errors
/// [`Error::GroupNotFound`]; [`Error::PermissionDenied`] for admins and members;
/// [`Error::MemberNotFound`]; [`Error::LastOwner`] when no owner would remain.
pub async fn change_role(
    db: &PgPool,
    group: GroupId,
    caller: UserId,
    target: UserId,
    role: Role,
) -> Result<(Group, bool), Error> {
    let mut tx = db.begin().await?;
    let caller_role = groups::lock_as_member(&mut tx, group, caller).await?;
    if caller_role != Role::Owner {
        return Err(Error::PermissionDenied("only owners may change roles"));
    }
    let current = role_of(&mut tx, group, target)
        .await?
        .ok_or(Error::MemberNotFound(target))?;
    if current != role {
        if current == Role::Owner && owner_count(&mut tx, group).await? == 1 {
            return Err(Error::LastOwner(
                "the group would have no owner: make someone else owner first",
            ));
        }
        sqlx::query(
            "update groups.members set role = $3, updated_at = now()
             where group_id = $1 and user_id = $2",
        )
        .bind(group.0)
        .bind(target.0)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        groups::record_change(&mut tx, group, &[NewEvent::role_changed(target, role)]).await?;
    }
    let after = groups::view(&mut tx, group, caller).await?;
    tx.commit().await?;
    Ok((after, current != role))
}

/// `caller`'s role in `group`, read without locking (a pre-check; changes re-check under lock).
///
/// # Errors
/// [`Error::GroupNotFound`] when the group is unknown or `caller` is not a member.
pub async fn role_in(db: &PgPool, group: GroupId, caller: UserId) -> Result<Role, Error> {
    let mut connection = db.acquire().await?;
    role_of(&mut connection, group, caller)
        .await?
        .ok_or(Error::GroupNotFound)
}

/// The members of `group` and their version, in one snapshot. With `viewer`, only if the viewer
/// is a member.
///
/// # Errors
/// [`Error::GroupNotFound`] for an unknown group, or when `viewer` is not a member.
pub async fn membership(
    db: &PgPool,
    group: GroupId,
    viewer: Option<UserId>,
) -> Result<Membership, Error> {
    let rows = sqlx::query(
        "select g.membership_version, m.user_id, m.role, m.joined_at
         from groups.groups g
         left join groups.members m on m.group_id = g.id
         where g.id = $1
         order by m.user_id",
    )
    .bind(group.0)
    .fetch_all(db)
    .await?;
    let Some(first) = rows.first() else {
        return Err(Error::GroupNotFound);
    };
    let membership_version = first.get("membership_version");
    let mut members = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(user) = row.get::<Option<Uuid>, _>("user_id") else {
            continue;
        };
        members.push(Member {
            user: UserId(user),
            role: Role::from_stored(row.get("role")),
            joined_at: row.get("joined_at"),
        });
    }
    if let Some(viewer) = viewer
        && !members.iter().any(|member| member.user == viewer)
    {
        return Err(Error::GroupNotFound);
    }
    Ok(Membership {
        members,
        membership_version,
    })
}

/// The ids of every group `user` is a member of, ordered by id.
///
/// # Errors
/// [`Error::Db`].
pub async fn user_groups(db: &PgPool, user: UserId) -> Result<Vec<GroupId>, Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select group_id from groups.members where user_id = $1 order by group_id",
    )
    .bind(user.0)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(GroupId).collect())
}

async fn role_of(
    connection: &mut PgConnection,
    group: GroupId,
    user: UserId,
) -> Result<Option<Role>, Error> {
    let role: Option<String> =
        sqlx::query_scalar("select role from groups.members where group_id = $1 and user_id = $2")
            .bind(group.0)
            .bind(user.0)
            .fetch_optional(connection)
            .await?;
    Ok(role.map(|role| Role::from_stored(&role)))
}

async fn owner_count(tx: &mut PgConnection, group: GroupId) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "select count(*) from groups.members where group_id = $1 and role = 'owner'",
    )
    .bind(group.0)
    .fetch_one(tx)
    .await?)
}

async fn delete_member(tx: &mut PgConnection, group: GroupId, user: UserId) -> Result<(), Error> {
    sqlx::query("delete from groups.members where group_id = $1 and user_id = $2")
        .bind(group.0)
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
    groups::record_change(tx, group, &[NewEvent::removed(user)]).await
}
