//! The operations behind each RPC: validation that needs configuration, look-ups in auth, the
//! transaction, and the wake-up after commit. `api.rs` only maps proto to these and back.

use std::{collections::BTreeSet, sync::Arc};

use common::{
    credentials::Credentials,
    outbox::{Feed, FeedItem, Start, StreamItem},
};
use proto::auth::v1 as auth_pb;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::{
    Error,
    config::Limits,
    directory::Directory,
    events::MembershipEvent,
    groups::{self, Group, GroupName, GroupPage, PageCursor},
    ids::{GroupId, Role, UserId},
    member_rows,
    members::{self, Member, Membership},
    metrics::GroupMetrics,
};

/// Page size of ListMyGroups when the request leaves it 0, and the largest allowed.
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 200;

/// Who is calling: their user id (from the validated token) and their credentials to forward.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user: UserId,
    /// The `authorization` metadata, forwarded to auth.
    pub credentials: Credentials,
}

/// A member with what auth knows about them; `None` when auth no longer knows the user.
pub type MemberWithDevices = (Member, Option<auth_pb::UserWithDevices>);

/// The group service's operations, shared by both APIs.
pub struct GroupService {
    pub(crate) db: PgPool,
    pub(crate) limits: Limits,
    pub(crate) directory: Directory,
    pub(crate) feed: Arc<Feed<MembershipEvent>>,
    /// Operations and events written (`metrics.rs`), registered by `run`.
    pub(crate) metrics: GroupMetrics,
}

impl GroupService {
    /// Creates a group owned by the caller with `member_ids` (duplicates and the caller ignored)
    /// as plain members.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::UserNotFound`], [`Error::LimitExceeded`].
    pub async fn create_group(
        &self,
        caller: &Caller,
        name: String,
        member_ids: Vec<UserId>,
    ) -> Result<Group, Error> {
        let name = GroupName::parse(name, &self.limits)?;
        let others: Vec<UserId> = member_ids
            .into_iter()
            .filter(|user| *user != caller.user)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if others.len() + 1 > self.limits.max_members_per_group as usize {
            return Err(member_rows::too_many_members(
                &self.limits,
                others.len() + 1,
            ));
        }
        self.require_existing(caller, &others).await?;
        let group =
            groups::create_group(&self.db, &self.limits, caller.user, &name, &others).await?;
        self.feed.committed();
        // One ADDED event per member, the creator included.
        self.metrics.events_written(group.member_count as usize);
        tracing::info!(group_id = %group.id, n_members = group.member_count, "group created");
        Ok(group)
    }

    /// The group, if the caller is a member.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`].
    pub async fn get_group(&self, caller: &Caller, group: GroupId) -> Result<Group, Error> {
        groups::get_group(&self.db, group, caller.user).await
    }

    /// A page of the caller's groups; `page_size` 0 means the default, above the maximum the
    /// maximum.
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn list_my_groups(
        &self,
        caller: &Caller,
        page_size: u32,
        after: Option<PageCursor>,
    ) -> Result<GroupPage, Error> {
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        groups::list_my_groups(&self.db, caller.user, page_size, after).await
    }

    /// Renames the group (owner and admins).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::GroupNotFound`], [`Error::PermissionDenied`].
    pub async fn rename_group(
        &self,
        caller: &Caller,
        group: GroupId,
        name: String,
    ) -> Result<Group, Error> {
        let name = GroupName::parse(name, &self.limits)?;
        let renamed = groups::rename_group(&self.db, group, caller.user, &name).await?;
        self.feed.committed();
        self.metrics.events_written(1);
        Ok(renamed)
    }

    /// Deletes the group (owner only).
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], [`Error::PermissionDenied`].
    pub async fn delete_group(&self, caller: &Caller, group: GroupId) -> Result<(), Error> {
        groups::delete_group(&self.db, group, caller.user).await?;
        self.feed.committed();
        self.metrics.events_written(1);
        tracing::info!(group_id = %group, "group deleted");
        Ok(())
    }

    /// Adds users with `role` (owner and admins; only owners add owners or admins).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::GroupNotFound`], [`Error::PermissionDenied`],
    /// [`Error::UserNotFound`], [`Error::LimitExceeded`].
    pub async fn add_members(
        &self,
        caller: &Caller,
        group: GroupId,
        user_ids: Vec<UserId>,
        role: Role,
    ) -> Result<(Group, Vec<UserId>), Error> {
        let max = self.limits.max_users_per_add as usize;
        if user_ids.is_empty() || user_ids.len() > max {
            return Err(Error::InvalidArgument(format!(
                "user_ids must name 1 to {max} users"
            )));
        }
        let users: Vec<UserId> = user_ids
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Refuse before asking auth: a plain member learns nothing about who exists.
        let caller_role = members::role_in(&self.db, group, caller.user).await?;
        members::check_may_add(caller_role, role)?;
        self.require_existing(caller, &users).await?;
        let (after, added) =
            members::add_members(&self.db, &self.limits, group, caller.user, &users, role).await?;
        if !added.is_empty() {
            self.feed.committed();
            self.metrics.events_written(added.len());
        }
        Ok((after, added))
    }

    /// Removes a member (owners anyone but the last owner; admins plain members only).
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], [`Error::PermissionDenied`], [`Error::MemberNotFound`],
    /// [`Error::LastOwner`].
    pub async fn remove_member(
        &self,
        caller: &Caller,
        group: GroupId,
        target: UserId,
    ) -> Result<Group, Error> {
        let after = members::remove_member(&self.db, group, caller.user, target).await?;
        self.feed.committed();
        self.metrics.events_written(1);
        Ok(after)
    }

    /// Leaves the group.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], [`Error::LastOwner`].
    pub async fn leave_group(&self, caller: &Caller, group: GroupId) -> Result<(), Error> {
        members::leave_group(&self.db, group, caller.user).await?;
        self.feed.committed();
        self.metrics.events_written(1);
        Ok(())
    }

    /// Changes a member's role (owner only).
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], [`Error::PermissionDenied`], [`Error::MemberNotFound`],
    /// [`Error::LastOwner`].
    pub async fn change_member_role(
        &self,
        caller: &Caller,
        group: GroupId,
        target: UserId,
        role: Role,
    ) -> Result<Group, Error> {
        let (after, changed) =
            members::change_role(&self.db, group, caller.user, target, role).await?;
        if changed {
            self.feed.committed();
            self.metrics.events_written(1);
        }
        Ok(after)
    }

    /// The members (if the caller is one) with their profiles and active, keyed devices.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], [`Error::Auth`].
    pub async fn list_members(
        &self,
        caller: &Caller,
        group: GroupId,
    ) -> Result<(Vec<MemberWithDevices>, i64), Error> {
        let membership = members::membership(&self.db, group, Some(caller.user)).await?;
        let users: Vec<UserId> = membership
            .members
            .iter()
            .map(|member| member.user)
            .collect();
        let mut lookup = self.directory.lookup(&caller.credentials, &users).await?;
        let listed = membership
            .members
            .into_iter()
            .map(|member| {
                let known = lookup.found.remove(&member.user);
                (member, known)
            })
            .collect();
        Ok((listed, membership.membership_version))
    }

    /// The members of any group (internal: not filtered by the caller).
    ///
    /// # Errors
    /// [`Error::GroupNotFound`].
    pub async fn membership(&self, group: GroupId) -> Result<Membership, Error> {
        members::membership(&self.db, group, None).await
    }

    /// The groups of any user (internal).
    ///
    /// # Errors
    /// [`Error::Db`].
    pub async fn user_groups(&self, user: UserId) -> Result<Vec<GroupId>, Error> {
        members::user_groups(&self.db, user).await
    }

    /// Replays the events after `start`, then follows new ones (see `common::outbox`).
    ///
    /// # Errors
    /// [`Error::Feed`] for a cursor out of range.
    pub async fn watch_events(
        &self,
        start: Start,
    ) -> Result<mpsc::Receiver<StreamItem<FeedItem<MembershipEvent>>>, Error> {
        Ok(self.feed.follow_with_progress(start).await?)
    }

    async fn require_existing(&self, caller: &Caller, users: &[UserId]) -> Result<(), Error> {
        if users.is_empty() {
            return Ok(());
        }
        let lookup = self.directory.lookup(&caller.credentials, users).await?;
        match users.iter().find(|user| lookup.not_found.contains(user)) {
            Some(missing) => Err(Error::UserNotFound(*missing)),
            None => Ok(()),
        }
    }
}
