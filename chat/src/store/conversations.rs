//! Conversations: opening direct ones, listing the caller's, and who takes part in each direct
//! conversation.
//!
//! Direct participants are the two rows of `chat.conversation_participants`, which never change,
//! so [`Participants`] caches them. Group conversations take their members from the group service
//! (`groups.rs`); they are listed here through the caller's group ids.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Error,
    ids::{ConversationId, UserId},
    message::to_u64,
};

/// Most conversations whose participants [`Participants`] keeps; it starts over when full
/// (direct participants never change, so a miss only costs one query).
const MAX_CACHED_CONVERSATIONS: usize = 100_000;

/// A conversation as one user sees it.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// For direct conversations, the other user.
    pub peer_user_id: Option<UserId>,
    /// For group conversations, the group.
    pub group_id: Option<Uuid>,
    /// The newest message's sequence (0 when none).
    pub last_sequence: u64,
    /// The highest sequence any of the user's devices has read.
    pub read_sequence: u64,
    /// Messages after `read_sequence` sent by others.
    pub unread_count: u64,
    /// When the newest message was committed.
    pub last_message_at: Option<OffsetDateTime>,
    /// When the conversation was created.
    pub created_at: OffsetDateTime,
    /// Last activity (creation or newest message): the list's sort key.
    pub updated_at: OffsetDateTime,
}

/// Where the next page of [`list`] starts: after this (activity, id) in descending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    updated_at: OffsetDateTime,
    id: Uuid,
}

impl PageToken {
    /// Reads a token made by [`PageToken::encode`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for anything else.
    pub fn decode(token: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidArgument("page_token is invalid".to_owned());
        let (nanos, id) = token.split_once('_').ok_or_else(invalid)?;
        let nanos: i128 = nanos.parse().map_err(|_| invalid())?;
        Ok(Self {
            updated_at: OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?,
            id: Uuid::try_parse(id).map_err(|_| invalid())?,
        })
    }

    /// The opaque token string.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.updated_at.unix_timestamp_nanos(), self.id)
    }
}

/// Returns the direct conversation of `caller` and `peer`, creating it (and its two participant
/// rows) on first use. The caller must have checked that `peer` exists.
///
/// # Errors
/// [`Error::InvalidArgument`] when `peer` is the caller.
pub async fn open_direct(db: &PgPool, caller: UserId, peer: UserId) -> Result<Conversation, Error> {
    if caller == peer {
        return Err(Error::InvalidArgument(
            "a direct conversation needs another user".to_owned(),
        ));
    }
    let (low, high) = if caller < peer {
        (caller, peer)
    } else {
        (peer, caller)
    };
    let mut tx = db.begin().await?;
    // A concurrent open of the same pair waits on the unique index, then does nothing.
    let created: Option<Uuid> = sqlx::query_scalar(
        "insert into chat.conversations (id, kind, direct_user_low, direct_user_high)
         values ($1, 'direct', $2, $3)
         on conflict on constraint conversations_direct_users_key do nothing
         returning id",
    )
    .bind(Uuid::now_v7())
    .bind(low.0)
    .bind(high.0)
    .fetch_optional(&mut *tx)
    .await?;
    let id = match created {
        Some(id) => {
            sqlx::query(
                "insert into chat.conversation_participants (conversation_id, user_id)
                 select $1, user_id from unnest($2::uuid[]) as user_id",
            )
            .bind(id)
            .bind([low.0, high.0].as_slice())
            .execute(&mut *tx)
            .await?;
            id
        }
        None => {
            sqlx::query_scalar(
                "select id from chat.conversations
                 where direct_user_low = $1 and direct_user_high = $2",
            )
            .bind(low.0)
            .bind(high.0)
            .fetch_one(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    let page = select(db, caller, &[], Some(ConversationId(id)), None, 1).await?;
    page.into_iter().next().ok_or(Error::ConversationNotFound)
}

/// The caller's conversations (direct ones, and those of `groups`, the caller's groups),
/// most recent activity first, `page_size` at a time.
///
/// # Errors
/// Database failures.
pub async fn list(
    db: &PgPool,
    caller: UserId,
    groups: &[ConversationId],
    after: Option<PageToken>,
    page_size: u32,
) -> Result<(Vec<Conversation>, Option<PageToken>), Error> {
    let conversations = select(db, caller, groups, None, after, page_size).await?;
    let next = (conversations.len() == page_size as usize)
        .then(|| conversations.last())
        .flatten()
        .map(|last| PageToken {
            updated_at: last.updated_at,
            id: last.id.0,
        });
    Ok((conversations, next))
}

/// The conversations of `caller` (direct, and those of `groups`), optionally one of them only.
async fn select(
    db: &PgPool,
    caller: UserId,
    groups: &[ConversationId],
    only: Option<ConversationId>,
    after: Option<PageToken>,
    limit: u32,
) -> Result<Vec<Conversation>, Error> {
    type Row = (
        Uuid,
        Option<Uuid>,
        Option<Uuid>,
        Option<Uuid>,
        i64,
        OffsetDateTime,
        OffsetDateTime,
        i64,
        i64,
        Option<OffsetDateTime>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select c.id, c.group_id, c.direct_user_low, c.direct_user_high, c.last_sequence,
                c.created_at, c.updated_at, coalesce(pos.read_sequence, 0),
                (select count(*) from chat.messages m
                 where m.conversation_id = c.id and m.sequence > coalesce(pos.read_sequence, 0)
                   and m.sender_user_id <> $1),
                (select m.created_at from chat.messages m
                 where m.conversation_id = c.id and m.sequence = c.last_sequence)
         from chat.conversations c
         left join lateral (
             select max(d.read_sequence) as read_sequence from chat.device_positions d
             where d.user_id = $1 and d.conversation_id = c.id
         ) pos on true
         where (c.id in (select p.conversation_id from chat.conversation_participants p
                         where p.user_id = $1)
                or c.id = any($6))
           and ($2::uuid is null or c.id = $2)
           and ($3::timestamptz is null or (c.updated_at, c.id) < ($3, $4))
         order by c.updated_at desc, c.id desc
         limit $5",
    )
    .bind(caller.0)
    .bind(only.map(|id| id.0))
    .bind(after.map(|token| token.updated_at))
    .bind(after.map(|token| token.id))
    .bind(i64::from(limit))
    .bind(groups.iter().map(|group| group.0).collect::<Vec<_>>())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (id, group_id, low, high, last, created_at, updated_at, read, unread, last_at) =
                row;
            let peer = if low == Some(caller.0) { high } else { low };
            Conversation {
                id: ConversationId(id),
                peer_user_id: peer.map(UserId),
                group_id,
                last_sequence: to_u64(last),
                read_sequence: to_u64(read),
                unread_count: to_u64(unread),
                last_message_at: last_at,
                created_at,
                updated_at,
            }
        })
        .collect())
}

/// Who takes part in each conversation, cached (see the module docs).
#[derive(Clone)]
pub struct Participants {
    db: PgPool,
    cache: Arc<RwLock<HashMap<ConversationId, Arc<[UserId]>>>>,
}

impl Participants {
    /// A cache over `db`.
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            cache: Arc::default(),
        }
    }

    /// The participants of `conversation`; empty for an unknown one.
    ///
    /// # Errors
    /// Database failures.
    pub async fn of(&self, conversation: ConversationId) -> Result<Arc<[UserId]>, Error> {
        if let Some(users) = self.read_cache().get(&conversation) {
            return Ok(users.clone());
        }
        let users: Vec<Uuid> = sqlx::query_scalar(
            "select user_id from chat.conversation_participants where conversation_id = $1
             order by user_id",
        )
        .bind(conversation.0)
        .fetch_all(&self.db)
        .await?;
        let users: Arc<[UserId]> = users.into_iter().map(UserId).collect();
        if !users.is_empty() {
            let mut cache = common::sync::write(&self.cache);
            if cache.len() >= MAX_CACHED_CONVERSATIONS {
                cache.clear();
            }
            cache.insert(conversation, users.clone());
        }
        Ok(users)
    }

    /// The participants of `conversation` if `user` is one of them.
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`] when the conversation is unknown or `user` is not in it.
    pub async fn authorize(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> Result<Arc<[UserId]>, Error> {
        let users = self.of(conversation).await?;
        if users.contains(&user) {
            Ok(users)
        } else {
            Err(Error::ConversationNotFound)
        }
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConversationId, Arc<[UserId]>>> {
        common::sync::read(&self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_survives_its_round_trip() {
        let token = PageToken {
            updated_at: OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_000)
                .unwrap(),
            id: Uuid::now_v7(),
        };

        assert_eq!(PageToken::decode(&token.encode()).unwrap(), token);
    }

    #[test]
    fn a_garbage_page_token_is_an_invalid_argument() {
        for token in ["", "x", "1_x", "x_00000000-0000-0000-0000-000000000000"] {
            assert!(matches!(
                PageToken::decode(token),
                Err(Error::InvalidArgument(_))
            ));
        }
    }
}
