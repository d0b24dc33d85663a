//! The membership-event outbox (`groups.membership_events`): written in the same transaction as
//! every membership change, read by `WatchMembershipEvents`, pruned after the retention.
//!
//! # Ordering
//! Identity values are assigned at insert, not at commit, so two concurrent transactions could
//! commit ids out of order and a consumer resuming with `id > last` would skip the late one for
//! good. [`append`] therefore takes a transaction-scoped advisory lock on one fixed key right
//! before its insert and holds it until commit: event inserts (and their commits) are serialised,
//! so once an id is visible every smaller id is visible too (or was rolled back and never will
//! be). The lock is the last thing a membership transaction takes (after the group's row lock and
//! any per-user locks), so it cannot deadlock, and it is held only for one insert and the commit.
//! The price is one commit at a time for membership changes across the whole service, which is
//! far more than membership changes need (and nothing else takes that lock).

use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::{
    Error,
    ids::{GroupId, Role, UserId},
};

/// What happened, as stored in `membership_events.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The user joined with the role.
    MemberAdded,
    /// The user was removed or left.
    MemberRemoved,
    /// The user now has the role.
    RoleChanged,
    /// The group was renamed (membership is unchanged: the version is not bumped).
    GroupRenamed,
    /// The group was deleted with all its members.
    GroupDeleted,
}

/// An event to append: what happened to whom.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The member concerned, for member events.
    pub user: Option<UserId>,
    /// The member's role after the event, for additions and role changes.
    pub role: Option<Role>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipEvent {
    /// Increasing id, the consumers' cursor.
    pub id: i64,
    /// The group concerned.
    pub group: GroupId,
    /// What happened.
    pub kind: EventKind,
    /// The member concerned, for member events.
    pub user: Option<UserId>,
    /// The role after the event, for additions and role changes.
    pub role: Option<Role>,
    /// The group's membership version after the event.
    pub membership_version: i64,
}

/// One read of the outbox: events after a cursor, and how far the outbox has been pruned, both
/// from the same snapshot.
#[derive(Debug)]
pub struct Page {
    /// Events in id order.
    pub events: Vec<MembershipEvent>,
    /// Every event with an id up to this one has been deleted.
    pub pruned_through: i64,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::RoleChanged => "role_changed",
            EventKind::GroupRenamed => "group_renamed",
            EventKind::GroupDeleted => "group_deleted",
        }
    }

    fn from_stored(value: &str) -> Self {
        match value {
            "member_added" => EventKind::MemberAdded,
            "member_removed" => EventKind::MemberRemoved,
            "role_changed" => EventKind::RoleChanged,
            "group_renamed" => EventKind::GroupRenamed,
            // membership_events_kind_check allows nothing else.
            _ => EventKind::GroupDeleted,
        }
    }
}

impl NewEvent {
    /// `user` joined with `role`.
    pub fn added(user: UserId, role: Role) -> Self {
        Self {
            kind: EventKind::MemberAdded,
            user: Some(user),
            role: Some(role),
        }
    }

    /// `user` was removed or left.
    pub fn removed(user: UserId) -> Self {
        Self {
            kind: EventKind::MemberRemoved,
            user: Some(user),
            role: None,
        }
    }

    /// `user` now has `role`.
    pub fn role_changed(user: UserId, role: Role) -> Self {
        Self {
            kind: EventKind::RoleChanged,
            user: Some(user),
            role: Some(role),
        }
    }

    /// A group-wide event.
    pub fn group(kind: EventKind) -> Self {
        Self {
            kind,
            user: None,
            role: None,
        }
    }
}

/// Appends `events` of `group` inside the caller's membership transaction; the i-th event
/// (from 0) carries membership version `first_version + i`. Takes the outbox lock (see the module
/// docs), which the transaction holds until it ends: call it last, right before commit.
///
/// # Errors
/// [`Error::Db`].
pub async fn append(
    tx: &mut PgConnection,
    group: GroupId,
    first_version: i64,
    events: &[NewEvent],
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query("select pg_advisory_xact_lock(hashtext('groups.membership_events'))")
        .execute(&mut *tx)
        .await?;
    let users: Vec<Option<Uuid>> = events.iter().map(|e| e.user.map(|u| u.0)).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let roles: Vec<Option<&str>> = events.iter().map(|e| e.role.map(Role::as_str)).collect();
    // clock_timestamp(), not now(): the insert time, which follows id order (retention is by it).
    sqlx::query(
        "insert into groups.membership_events
             (group_id, user_id, kind, role, membership_version, created_at)
         select $1, e.user_id, e.kind, e.role, $2 + e.n - 1, clock_timestamp()
         from unnest($3::uuid[], $4::text[], $5::text[]) with ordinality as e(user_id, kind, role, n)
         order by e.n",
    )
    .bind(group.0)
    .bind(first_version)
    .bind(&users)
    .bind(&kinds)
    .bind(&roles)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// At most `limit` events after `after`, in id order, with the pruning watermark of the same
/// snapshot (one statement), so that a prune that removed part of the range is always noticed.
///
/// # Errors
/// [`Error::Db`].
pub async fn read_after(db: &PgPool, after: i64, limit: i64) -> Result<Page, Error> {
    let rows = sqlx::query(
        "select r.pruned_through, e.id, e.group_id, e.kind, e.user_id, e.role, e.membership_version
         from groups.membership_event_retention r
         left join lateral (
             select id, group_id, kind, user_id, role, membership_version
             from groups.membership_events where id > $1 order by id limit $2
         ) e on true
         order by e.id",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let pruned_through = rows.first().map_or(0, |row| row.get("pruned_through"));
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(id) = row.get::<Option<i64>, _>("id") else {
            continue;
        };
        events.push(MembershipEvent {
            id,
            group: GroupId(row.get("group_id")),
            kind: EventKind::from_stored(row.get("kind")),
            user: row.get::<Option<Uuid>, _>("user_id").map(UserId),
            role: row.get::<Option<&str>, _>("role").map(Role::from_stored),
            membership_version: row.get("membership_version"),
        });
    }
    Ok(Page {
        events,
        pruned_through,
    })
}

/// The pruning watermark and the newest id a cursor may name (the newest event, or the watermark
/// when everything has been pruned).
///
/// # Errors
/// [`Error::Db`].
pub async fn bounds(db: &PgPool) -> Result<(i64, i64), Error> {
    let row = sqlx::query(
        "select r.pruned_through,
                greatest(r.pruned_through, (select coalesce(max(id), 0) from groups.membership_events)) as newest
         from groups.membership_event_retention r",
    )
    .fetch_one(db)
    .await?;
    Ok((row.get("pruned_through"), row.get("newest")))
}

/// Deletes the events older than `retention` and moves the watermark past them. Deletes by id
/// up to the newest old event, so that what remains is always a suffix of the id sequence.
///
/// # Errors
/// [`Error::Db`].
pub async fn prune(db: &PgPool, retention: std::time::Duration) -> Result<u64, Error> {
    let mut tx = db.begin().await?;
    let cutoff: Option<i64> = sqlx::query_scalar(
        "select max(id) from groups.membership_events
         where created_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let Some(cutoff) = cutoff else {
        return Ok(0);
    };
    sqlx::query(
        "update groups.membership_event_retention
         set pruned_through = greatest(pruned_through, $1), updated_at = now()",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    let deleted = sqlx::query("delete from groups.membership_events where id <= $1")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}
