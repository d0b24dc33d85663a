//! Group conversations: membership comes from the group service (`group.internal.v1`
//! `GetMembership`, asked with the caller's own token) and is cached here. A group
//! conversation's id is the group id; its row in `chat.conversations` is created on first use.
//!
//! The cache (`followed_cache.rs`) is only trusted while `group_events.rs` follows
//! `WatchMembershipEvents`, each event dropping its group's entry: an answer is never staler
//! than the event stream's delay, and never stale across a missed event. A send the cached
//! members refuse is checked again against the group service (`send/checks.rs`).
//!
//! Each user's list of groups, which every stream opening needs, is cached the same way for
//! stream openings (every membership change has an event naming its user; a group's deletion
//! drops every list): without it, a reconnect storm (the gateway restarting under 5,000 streams,
//! `client/tests/faults/storm.rs`) made one `ListUserGroups` call per stream, which saturated the
//! group service's database pool (its calls and health probes timed out, its own event feed
//! failed, and with it this cache) and turned reopened streams away with UNAVAILABLE, again and
//! again.

use std::sync::Arc;

use common::credentials::Credentials;
use proto::group::internal::v1 as group_pb;
use sqlx::PgPool;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{
    Error,
    ids::{ConversationId, UserId},
    membership::followed_cache::FollowedCache,
    store::conversations::Participants,
};

/// Who may use a conversation: direct participants from chat's tables, group members from the
/// group service.
#[derive(Clone)]
pub struct Membership {
    db: PgPool,
    participants: Participants,
    channel: Channel,
    cache: Arc<MembersCache>,
    user_groups: Arc<UserGroupsCache>,
}

/// Group members as the group service last answered, `None` for "no such group".
pub type MembersCache = FollowedCache<ConversationId, Option<Arc<[UserId]>>>;

/// Each user's groups as the group service last answered.
pub type UserGroupsCache = FollowedCache<UserId, Arc<[ConversationId]>>;

impl Membership {
    /// Membership over `participants` and the group service at `group_url` (connected lazily).
    ///
    /// # Errors
    /// When `group_url` is not a valid URI.
    pub fn new(
        db: PgPool,
        participants: Participants,
        group_url: &str,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = crate::membership::watch::peer_channel(group_url)?;
        Ok(Self {
            db,
            participants,
            channel,
            cache: Arc::default(),
            user_groups: Arc::default(),
        })
    }

    /// The channel to the group service (shared with the event follower).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The membership cache, for the event follower to keep right.
    pub fn cache(&self) -> Arc<MembersCache> {
        self.cache.clone()
    }

    /// The cache of each user's groups, for the event follower to keep right.
    pub fn user_groups_cache(&self) -> Arc<UserGroupsCache> {
        self.user_groups.clone()
    }

    /// The participants of `conversation` if `user` is one of them: the two users of a direct
    /// conversation, or the current members of a group (whose conversation row is then created
    /// if needed).
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`] when the conversation is unknown or `user` is not in it;
    /// [`Error::Group`] when the group service fails.
    pub async fn authorize(
        &self,
        credentials: &Credentials,
        conversation: ConversationId,
        user: UserId,
    ) -> Result<Arc<[UserId]>, Error> {
        self.authorize_with(credentials, conversation, user, Source::Cache)
            .await
    }

    /// Like [`Membership::authorize`], but asks the group service (refreshing the cache): for
    /// a send the cached members refused, which may trail the group service by the event
    /// stream's delay.
    ///
    /// # Errors
    /// As [`Membership::authorize`].
    pub async fn authorize_current(
        &self,
        credentials: &Credentials,
        conversation: ConversationId,
        user: UserId,
    ) -> Result<Arc<[UserId]>, Error> {
        self.authorize_with(credentials, conversation, user, Source::GroupService)
            .await
    }

    async fn authorize_with(
        &self,
        credentials: &Credentials,
        conversation: ConversationId,
        user: UserId,
        source: Source,
    ) -> Result<Arc<[UserId]>, Error> {
        let direct = self.participants.of(conversation).await?;
        let users = if direct.is_empty() {
            let members = self
                .group_members(credentials, conversation, source)
                .await?
                .ok_or(Error::ConversationNotFound)?;
            if members.contains(&user) {
                ensure_group_conversations(&self.db, &[conversation]).await?;
            }
            members
        } else {
            direct
        };
        if users.contains(&user) {
            Ok(users)
        } else {
            Err(Error::ConversationNotFound)
        }
    }

    /// The group conversations of `user` (their rows created if needed).
    ///
    /// # Errors
    /// [`Error::Group`] when the group service fails.
    pub async fn groups_of(
        &self,
        credentials: &Credentials,
        user: UserId,
    ) -> Result<Vec<ConversationId>, Error> {
        self.groups_of_from(credentials, user, Source::GroupService)
            .await
    }

    /// Like [`Membership::groups_of`], from the cache when it holds `user`: for a stream
    /// opening. A cached list trails the group service by at most the event stream's delay, and a
    /// stream registered with it is kept right by the same events (the hub adds a group its user
    /// joined, and removes one they left), so it ends up as if opened with the current list. A
    /// listing (`ListConversations`) has no such repair and asks the group service.
    ///
    /// # Errors
    /// As [`Membership::groups_of`].
    pub async fn groups_of_for_stream(
        &self,
        credentials: &Credentials,
        user: UserId,
    ) -> Result<Vec<ConversationId>, Error> {
        self.groups_of_from(credentials, user, Source::Cache).await
    }

    async fn groups_of_from(
        &self,
        credentials: &Credentials,
        user: UserId,
        source: Source,
    ) -> Result<Vec<ConversationId>, Error> {
        if source == Source::Cache
            && let Some(cached) = self.user_groups.get(user)
        {
            return Ok(cached.to_vec());
        }
        let generation = self.user_groups.generation();
        let mut client = group_pb::group_internal_service_client::GroupInternalServiceClient::new(
            self.channel.clone(),
        );
        let request = credentials.request(group_pb::ListUserGroupsRequest {
            user_id: user.to_string(),
        });
        let response = client
            .list_user_groups(request)
            .await
            .map_err(Error::Group)?;
        let groups = response
            .into_inner()
            .group_ids
            .iter()
            .map(|id| parse_from_group(id).map(ConversationId))
            .collect::<Result<Vec<_>, _>>()?;
        ensure_group_conversations(&self.db, &groups).await?;
        // Stored once the conversations' rows exist (a cached list needs no more writes), and
        // only for streams: a stream opened with this list later is repaired by the events, so
        // the cache holds lists of users who stream (those a reconnect storm brings back).
        if source == Source::Cache {
            self.user_groups
                .store(generation, [(user, Arc::from(groups.as_slice()))]);
        }
        Ok(groups)
    }

    /// The members of a group, or `None` for an unknown or deleted group (or an id that is not
    /// a group at all): from the cache, else from the group service.
    async fn group_members(
        &self,
        credentials: &Credentials,
        group: ConversationId,
        source: Source,
    ) -> Result<Option<Arc<[UserId]>>, Error> {
        if source == Source::Cache
            && let Some(cached) = self.cache.get(group)
        {
            return Ok(cached);
        }
        let generation = self.cache.generation();
        let members = self.fetch_members(credentials, group).await?;
        self.cache.store(generation, [(group, members.clone())]);
        Ok(members)
    }

    async fn fetch_members(
        &self,
        credentials: &Credentials,
        group: ConversationId,
    ) -> Result<Option<Arc<[UserId]>>, Error> {
        let mut client = group_pb::group_internal_service_client::GroupInternalServiceClient::new(
            self.channel.clone(),
        );
        let request = credentials.request(group_pb::GetMembershipRequest {
            group_id: group.to_string(),
        });
        match client.get_membership(request).await {
            Ok(response) => Ok(Some(
                response
                    .into_inner()
                    .members
                    .iter()
                    .map(|member| parse_from_group(&member.user_id).map(UserId))
                    .collect::<Result<_, _>>()?,
            )),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(Error::Group(status)),
        }
    }
}

/// Where group members may come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The cache if it holds the group, else the group service.
    Cache,
    /// The group service.
    GroupService,
}

/// Creates the conversation rows of groups that have none yet.
async fn ensure_group_conversations(db: &PgPool, groups: &[ConversationId]) -> Result<(), Error> {
    if groups.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = groups.iter().map(|group| group.0).collect();
    sqlx::query(
        "insert into chat.conversations (id, kind, group_id)
         select id, 'group', id from unnest($1::uuid[]) as id
         on conflict do nothing",
    )
    .bind(&ids)
    .execute(db)
    .await?;
    Ok(())
}

fn parse_from_group(id: &str) -> Result<Uuid, Error> {
    Uuid::try_parse(id)
        .map_err(|_| Error::Group(tonic::Status::internal("malformed id from group")))
}
