//! The rows of `groups.members` that creating a group and adding members both write: the
//! per-user locks, the inserts and the size limits. Below `groups.rs` and `members.rs`, so that
//! neither imports the other's helpers.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    Error,
    config::Limits,
    ids::{GroupId, Role, UserId},
};

/// Takes a transaction advisory lock per user (in key order, so two transactions never wait on
/// each other in a cycle), serialising additions of the same user to different groups.
pub(crate) async fn lock_users(tx: &mut PgConnection, users: &[UserId]) -> Result<(), Error> {
    let ids: Vec<Uuid> = users.iter().map(|user| user.0).collect();
    sqlx::query(
        "select count(pg_advisory_xact_lock(hashtext('groups.user_memberships'), s.key))
         from (select distinct hashtext(u::text) as key from unnest($1::uuid[]) u order by 1) s",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn insert_member(
    tx: &mut PgConnection,
    group: GroupId,
    user: UserId,
    role: Role,
    added_by: Option<UserId>,
) -> Result<(), Error> {
    sqlx::query(
        "insert into groups.members (group_id, user_id, role, added_by) values ($1, $2, $3, $4)",
    )
    .bind(group.0)
    .bind(user.0)
    .bind(role.as_str())
    .bind(added_by.map(|user| user.0))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Inserts the users that are not members yet; returns them, ordered by id.
pub(crate) async fn insert_members(
    tx: &mut PgConnection,
    group: GroupId,
    users: &[Uuid],
    role: Role,
    added_by: UserId,
) -> Result<Vec<UserId>, Error> {
    let mut added: Vec<Uuid> = sqlx::query_scalar(
        "insert into groups.members (group_id, user_id, role, added_by)
         select $1, u, $3, $4 from unnest($2::uuid[]) u
         on conflict on constraint members_pkey do nothing
         returning user_id",
    )
    .bind(group.0)
    .bind(users)
    .bind(role.as_str())
    .bind(added_by.0)
    .fetch_all(&mut *tx)
    .await?;
    added.sort_unstable();
    Ok(added.into_iter().map(UserId).collect())
}

/// Fails when one of `users` is now in more groups than allowed (run after inserting, under the
/// users' locks).
pub(crate) async fn check_groups_per_user(
    tx: &mut PgConnection,
    limits: &Limits,
    users: &[UserId],
    caller: UserId,
) -> Result<(), Error> {
    let ids: Vec<Uuid> = users.iter().map(|user| user.0).collect();
    let over: Option<Uuid> = sqlx::query_scalar(
        "select user_id from groups.members where user_id = any($1)
         group by user_id having count(*) > $2
         order by user_id limit 1",
    )
    .bind(&ids)
    .bind(i64::from(limits.max_groups_per_user))
    .fetch_optional(&mut *tx)
    .await?;
    let max = limits.max_groups_per_user;
    match over {
        None => Ok(()),
        Some(user) => Err(Error::LimitExceeded {
            limit: "groups_per_user",
            max,
            message: if user == caller.0 {
                format!("you are already a member of {max} groups, the most allowed")
            } else {
                format!("user {user} is already a member of {max} groups, the most allowed")
            },
        }),
    }
}

pub(crate) fn too_many_members(limits: &Limits, would_be: usize) -> Error {
    let max = limits.max_members_per_group;
    Error::LimitExceeded {
        limit: "members_per_group",
        max,
        message: format!("a group may have at most {max} members (this would make {would_be})"),
    }
}
