//! Group conversations: membership comes from the group service (`group.internal.v1`
//! `GetMembership`, asked with the caller's own token) and is cached here. A group
//! conversation's id is the group id; its row in `chat.conversations` is created on first use.
//!
//! The cache (`followed_cache.rs`) is only trusted while `group_events.rs` follows
//! `WatchMembershipEvents`, each event dropping its group's entry: an answer is never staler
//! than the event stream's delay, and never stale across a missed event. A send the cached
//! members refuse is checked again against the group service (`sending.rs`).

use std::sync::Arc;

use proto::group::internal::v1 as group_pb;
use sqlx::PgPool;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{
    Error,
    conversations::Participants,
    devices::Credentials,
    followed_cache::FollowedCache,
    ids::{ConversationId, UserId},
};

/// Who may use a conversation: direct participants from chat's tables, group members from the
/// group service.
#[derive(Clone)]
pub struct Membership {
    db: PgPool,
    participants: Participants,
    channel: Channel,
    cache: Arc<MembersCache>,
}

/// Group members as the group service last answered, `None` for "no such group".
pub type MembersCache = FollowedCache<ConversationId, Option<Arc<[UserId]>>>;

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
        let channel = crate::watch::peer_channel(group_url)?;
        Ok(Self {
            db,
            participants,
            channel,
            cache: Arc::default(),
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
