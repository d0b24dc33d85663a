//! The membership-event outbox (`groups.membership_events`): written in the same transaction as
//! every membership change, then streamed by `WatchMembershipEvents` and pruned after the
//! retention through `common::outbox::Feed`.
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

use common::outbox::{OutboxEvent, OutboxTable};
use sqlx::{PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

use crate::{
    Error,
    ids::{GroupId, Role, UserId},
};

/// The NOTIFY channel that wakes `WatchMembershipEvents` streams on every replica.
pub const CHANNEL: &str = "groups_membership_events";

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

impl OutboxEvent for MembershipEvent {
    const TABLE: OutboxTable = OutboxTable {
        events: "groups.membership_events",
        retention: "groups.membership_event_retention",
        columns: "group_id, kind, user_id, role, membership_version",
        channel: CHANNEL,
    };

    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(MembershipEvent {
            id: row.try_get("id")?,
            group: GroupId(row.try_get("group_id")?),
            kind: EventKind::from_stored(row.try_get("kind")?),
            user: row.try_get::<Option<Uuid>, _>("user_id")?.map(UserId),
            role: row
                .try_get::<Option<&str>, _>("role")?
                .map(Role::from_stored),
            membership_version: row.try_get("membership_version")?,
        })
    }

    fn id(&self) -> i64 {
        self.id
    }
}
