//! Groups: names, the view a member gets, and the group-level operations (create, get, list,
//! rename, delete). Membership changes live in `members.rs`, which builds on this module; both
//! record their events through [`record_change`] and write member rows through `member_rows.rs`.

use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Error,
    config::Limits,
    events::{self, EventKind, NewEvent},
    ids::{GroupId, Role, UserId},
    member_rows,
};

/// A group as one member sees it.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// The viewer's role; `None` when the viewer has just removed themselves.
    pub my_role: Option<Role>,
    /// How many members it has.
    pub member_count: u32,
    /// Bumped by every membership change.
    pub membership_version: i64,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When its name or membership last changed.
    pub updated_at: OffsetDateTime,
}

/// A validated group name: 1 to `max_name_chars` characters, not only white space, no control
/// characters.
#[derive(Debug, Clone)]
pub struct GroupName(String);

/// Where a page of ListMyGroups starts: after this group in (updated_at, id) descending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    /// The last group's `updated_at`, in microseconds since the Unix epoch.
    pub updated_at_micros: i64,
    /// The last group's id.
    pub id: Uuid,
}

/// One page of the caller's groups.
#[derive(Debug)]
pub struct GroupPage {
    /// The groups, most recently changed first.
    pub groups: Vec<Group>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageCursor>,
}

impl GroupName {
    /// Checks `name` against the configured length and the documented rules.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying what is wrong.
    pub fn parse(name: String, limits: &Limits) -> Result<Self, Error> {
        let chars = name.chars().count();
        if chars == 0 || name.chars().all(char::is_whitespace) {
            return Err(Error::InvalidArgument(
                "name must not be empty or only white space".into(),
            ));
        }
        if chars > limits.max_name_chars as usize {
            return Err(Error::InvalidArgument(format!(
                "name must be at most {} characters",
                limits.max_name_chars
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(
                "name must not contain control characters".into(),
            ));
        }
        Ok(Self(name))
    }
}

/// The columns of a [`Group`] for viewer `$2`; `m` is the viewer's membership row.
const GROUP_COLUMNS: &str =
    "g.id, g.name, m.role, g.membership_version, g.created_at, g.updated_at,
    (select count(*) from groups.members c where c.group_id = g.id) as member_count";

/// Creates a group with `creator` as owner and `others` (deduplicated, without the creator,
/// known to exist) as plain members, with one MEMBER_ADDED event each.
///
/// # Errors
/// [`Error::LimitExceeded`] when the group or a user's group count would pass its limit.
pub async fn create_group(
    db: &PgPool,
    limits: &Limits,
    creator: UserId,
    name: &GroupName,
    others: &[UserId],
) -> Result<Group, Error> {
    let member_count = others.len() + 1;
    if member_count > limits.max_members_per_group as usize {
        return Err(member_rows::too_many_members(limits, member_count));
    }
    let id = GroupId(Uuid::now_v7());
    let mut tx = db.begin().await?;
    let mut everyone = vec![creator];
    everyone.extend_from_slice(others);
    member_rows::lock_users(&mut tx, &everyone).await?;
    sqlx::query("insert into groups.groups (id, name, created_by) values ($1, $2, $3)")
        .bind(id.0)
        .bind(&name.0)
        .bind(creator.0)
        .execute(&mut *tx)
        .await
        .map_err(name_error)?;
    member_rows::insert_member(&mut tx, id, creator, Role::Owner, None).await?;
    let other_ids: Vec<Uuid> = others.iter().map(|user| user.0).collect();
    member_rows::insert_members(&mut tx, id, &other_ids, Role::Member, creator).await?;
    member_rows::check_groups_per_user(&mut tx, limits, &everyone, creator).await?;
    let mut new_events = vec![NewEvent::added(creator, Role::Owner)];
    new_events.extend(
        others
            .iter()
            .map(|user| NewEvent::added(*user, Role::Member)),
    );
    record_change(&mut tx, id, &new_events).await?;
    let group = view(&mut tx, id, creator).await?;
    tx.commit().await?;
    Ok(group)
}

/// The group as `viewer` sees it.
///
/// # Errors
/// [`Error::GroupNotFound`] when the group is unknown or `viewer` is not a member.
pub async fn get_group(db: &PgPool, group: GroupId, viewer: UserId) -> Result<Group, Error> {
    let mut connection = db.acquire().await?;
    let group = view(&mut connection, group, viewer).await?;
    match group.my_role {
        Some(_) => Ok(group),
        None => Err(Error::GroupNotFound),
    }
}

/// A page of `user`'s groups, most recently changed first, starting after `after`.
///
/// # Errors
/// [`Error::Db`].
pub async fn list_my_groups(
    db: &PgPool,
    user: UserId,
    page_size: u32,
    after: Option<PageCursor>,
) -> Result<GroupPage, Error> {
    let after_time = after
        .map(|cursor| micros_to_time(cursor.updated_at_micros))
        .transpose()?;
    let rows = sqlx::query(&format!(
        "select {GROUP_COLUMNS}
         from groups.members m join groups.groups g on g.id = m.group_id
         where m.user_id = $1
           and ($2::timestamptz is null or (g.updated_at, g.id) < ($2, $3))
         order by g.updated_at desc, g.id desc
         limit $4"
    ))
    .bind(user.0)
    .bind(after_time)
    .bind(after.map(|cursor| cursor.id))
    .bind(i64::from(page_size) + 1)
    .fetch_all(db)
    .await?;
    let mut groups: Vec<Group> = rows.iter().map(group_from_row).collect();
    let next = if groups.len() > page_size as usize {
        groups.truncate(page_size as usize);
        groups.last().map(|last| PageCursor {
            updated_at_micros: time_to_micros(last.updated_at),
            id: last.id.0,
        })
    } else {
        None
    };
    Ok(GroupPage { groups, next })
}

/// Renames `group` (owner and admins), with a GROUP_RENAMED event.
///
/// # Errors
/// [`Error::GroupNotFound`]; [`Error::PermissionDenied`] for a plain member.
pub async fn rename_group(
    db: &PgPool,
    group: GroupId,
    caller: UserId,
    name: &GroupName,
) -> Result<Group, Error> {
    let mut tx = db.begin().await?;
    let role = lock_as_member(&mut tx, group, caller).await?;
    if !role.manages() {
        return Err(Error::PermissionDenied(
            "only owners and admins may rename the group",
        ));
    }
    // A rename is not a membership change: the version stays, the event carries it.
    let version: i64 = sqlx::query_scalar(
        "update groups.groups set name = $2, updated_at = now() where id = $1
         returning membership_version",
    )
    .bind(group.0)
    .bind(&name.0)
    .fetch_one(&mut *tx)
    .await
    .map_err(name_error)?;
    events::append(
        &mut tx,
        group,
        version,
        &[NewEvent::group(EventKind::GroupRenamed)],
    )
    .await?;
    let renamed = view(&mut tx, group, caller).await?;
    tx.commit().await?;
    Ok(renamed)
}

/// Deletes `group` and every membership (owner only), with a GROUP_DELETED event.
///
/// # Errors
/// [`Error::GroupNotFound`]; [`Error::PermissionDenied`] for admins and members.
pub async fn delete_group(db: &PgPool, group: GroupId, caller: UserId) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    let role = lock_as_member(&mut tx, group, caller).await?;
    if role != Role::Owner {
        return Err(Error::PermissionDenied("only owners may delete the group"));
    }
    record_change(&mut tx, group, &[NewEvent::group(EventKind::GroupDeleted)]).await?;
    // Members go with it (members_group_id_fkey cascades); events stay (no foreign key).
    sqlx::query("delete from groups.groups where id = $1")
        .bind(group.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Locks `group`'s row for a membership change (which serialises changes per group) and returns
/// `caller`'s role in it.
///
/// # Errors
/// [`Error::GroupNotFound`] when the group is unknown or `caller` is not a member.
pub(crate) async fn lock_as_member(
    tx: &mut PgConnection,
    group: GroupId,
    caller: UserId,
) -> Result<Role, Error> {
    let role: Option<String> = sqlx::query_scalar(
        "select m.role from groups.groups g
         join groups.members m on m.group_id = g.id and m.user_id = $2
         where g.id = $1
         for update of g",
    )
    .bind(group.0)
    .bind(caller.0)
    .fetch_optional(&mut *tx)
    .await?;
    role.map(|role| Role::from_stored(&role))
        .ok_or(Error::GroupNotFound)
}

/// Records membership events of `group`: bumps its membership version once per event, touches
/// `updated_at`, and appends the events (taking the outbox lock, so call it last).
///
/// # Errors
/// [`Error::Db`].
pub(crate) async fn record_change(
    tx: &mut PgConnection,
    group: GroupId,
    new_events: &[NewEvent],
) -> Result<(), Error> {
    let count = new_events.len() as i64;
    let version: i64 = sqlx::query_scalar(
        "update groups.groups
         set membership_version = membership_version + $2, updated_at = now()
         where id = $1 returning membership_version",
    )
    .bind(group.0)
    .bind(count)
    .fetch_one(&mut *tx)
    .await?;
    events::append(tx, group, version - count + 1, new_events).await
}

/// The group as `viewer` sees it, with no role when `viewer` is not a member (only used after a
/// caller removed themselves; [`get_group`] refuses non-members).
///
/// # Errors
/// [`Error::GroupNotFound`] when the group is unknown.
pub(crate) async fn view(
    connection: &mut PgConnection,
    group: GroupId,
    viewer: UserId,
) -> Result<Group, Error> {
    let row = sqlx::query(&format!(
        "select {GROUP_COLUMNS} from groups.groups g
         left join groups.members m on m.group_id = g.id and m.user_id = $2
         where g.id = $1"
    ))
    .bind(group.0)
    .bind(viewer.0)
    .fetch_optional(connection)
    .await?
    .ok_or(Error::GroupNotFound)?;
    Ok(group_from_row(&row))
}

fn group_from_row(row: &PgRow) -> Group {
    Group {
        id: GroupId(row.get("id")),
        name: row.get("name"),
        my_role: row.get::<Option<&str>, _>("role").map(Role::from_stored),
        member_count: u32::try_from(row.get::<i64, _>("member_count")).unwrap_or(u32::MAX),
        membership_version: row.get("membership_version"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

/// Maps the database's own name check (its idea of white space can differ from Rust's).
fn name_error(error: sqlx::Error) -> Error {
    let violates_name_check = error
        .as_database_error()
        .and_then(|db_error| db_error.constraint())
        == Some("groups_name_check");
    if violates_name_check {
        Error::InvalidArgument("name must be 1 to 64 characters and not only white space".into())
    } else {
        Error::Db(error)
    }
}

fn time_to_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

fn micros_to_time(micros: i64) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|_| Error::InvalidArgument("page_token is malformed".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> Result<GroupName, Error> {
        GroupName::parse(name.to_owned(), &Limits::default())
    }

    #[test]
    fn names_are_counted_in_characters_not_bytes() {
        assert!(parse(&"é".repeat(64)).is_ok());
        assert!(parse(&"é".repeat(65)).is_err());
    }

    #[test]
    fn empty_blank_and_control_character_names_are_refused() {
        for bad in ["", " ", "\u{3000}\t", "a\u{0}b", "two\nlines"] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        assert!(
            parse(" padded ").is_ok(),
            "surrounding spaces are kept as given"
        );
    }

    #[test]
    fn cursor_times_keep_microseconds() {
        let micros = 1_764_000_000_123_456;

        let time = micros_to_time(micros).unwrap();

        assert_eq!(time_to_micros(time), micros);
    }
}
