//! The chat service's operations, wired from the feature modules; `api.rs` calls these after
//! authenticating and parsing, and maps the results to proto.

use std::{collections::HashMap, sync::Arc, time::Instant};

use common::credentials::Credentials;
use sqlx::PgPool;

use crate::{
    Error,
    config::Limits,
    delivery::{
        bus::{Bus, BusEvent, Receipt, Typing},
        stream::{Delivery, EventStream, Outbox, TokenWatch},
        typing::TypingLimiter,
    },
    ids::{ConversationId, UserId},
    membership::{devices::Directory, groups::Membership},
    message::{Caller, Committed, DeliveredMessage},
    metrics::{SendMetrics, StreamKind},
    send::checks::Sending,
    store::{
        conversations::{self, Conversation, PageToken},
        history::{self, Direction},
        positions::{self, Positions},
    },
};

/// Page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Which page of history ListMessages asks for.
#[derive(Debug, Clone, Copy)]
pub struct HistoryPage {
    /// Which way to walk.
    pub direction: Direction,
    /// Exclusive start (0: from the start forward, from the newest backward).
    pub from: u64,
    /// Requested size (0: the default; capped at the limit).
    pub page_size: u32,
    /// Every recipient entry instead of the caller's own.
    pub include_all_recipients: bool,
}

/// Everything the RPCs need; cheap to clone.
#[derive(Clone)]
pub struct Chat {
    /// The database.
    pub db: PgPool,
    /// Who takes part in which conversation.
    pub membership: Membership,
    /// Auth's device directory.
    pub directory: Directory,
    /// The send path.
    pub sending: Sending,
    /// Streams.
    pub delivery: Delivery,
    /// The bus between replicas.
    pub bus: Arc<dyn Bus>,
    /// Typing rate limits.
    pub typing: Arc<TypingLimiter>,
    /// Limits.
    pub limits: Limits,
    /// Sends by outcome.
    pub metrics: SendMetrics,
}

impl Chat {
    /// OpenDirectConversation.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for oneself, [`Error::UserNotFound`] for an unknown peer.
    pub async fn open_direct(
        &self,
        credentials: &Credentials,
        caller: Caller,
        peer: UserId,
    ) -> Result<Conversation, Error> {
        if peer == caller.user {
            return Err(Error::InvalidArgument(
                "a direct conversation needs another user".to_owned(),
            ));
        }
        if !self.directory.user_exists(credentials, peer).await? {
            return Err(Error::UserNotFound);
        }
        conversations::open_direct(&self.db, caller.user, peer).await
    }

    /// ListConversations.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad page token.
    pub async fn list_conversations(
        &self,
        credentials: &Credentials,
        caller: Caller,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Conversation>, Option<PageToken>), Error> {
        let after = (!page_token.is_empty())
            .then(|| PageToken::decode(page_token))
            .transpose()?;
        let groups = self.groups_of(credentials, caller).await;
        let page_size = self.page_size(page_size);
        conversations::list(&self.db, caller.user, &groups, after, page_size).await
    }

    /// The caller's group conversations, or none while the group service fails (logged): direct
    /// conversations keep working when groups do not.
    pub async fn groups_of(
        &self,
        credentials: &Credentials,
        caller: Caller,
    ) -> Vec<ConversationId> {
        match self.membership.groups_of(credentials, caller.user).await {
            Ok(groups) => groups,
            Err(error) => {
                tracing::warn!(%error, "cannot list the caller's groups; showing direct conversations only");
                Vec::new()
            }
        }
    }

    /// SendMessage, and sends on OpenStream.
    ///
    /// # Errors
    /// See [`Sending::send`].
    pub async fn send(
        &self,
        credentials: &Credentials,
        caller: Caller,
        envelope: e2ee::Envelope,
    ) -> Result<Committed, Error> {
        let sent = self.sending.send(credentials, caller, envelope).await;
        self.metrics
            .answered(sent.as_ref().map(|committed| committed.duplicate));
        sent
    }

    /// ListMessages; returns the messages and where the next page starts (0: none).
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`] for a conversation the caller is not in.
    pub async fn list_messages(
        &self,
        credentials: &Credentials,
        caller: Caller,
        conversation: ConversationId,
        page: HistoryPage,
    ) -> Result<(Vec<DeliveredMessage>, u64), Error> {
        let HistoryPage {
            direction,
            from,
            page_size,
            include_all_recipients,
        } = page;
        self.membership
            .authorize(credentials, conversation, caller.user)
            .await?;
        let page_size = self.page_size(page_size);
        let mut messages = history::read_for_device(
            &self.db,
            caller.device,
            conversation,
            direction,
            from,
            page_size,
        )
        .await?;
        if include_all_recipients && !messages.is_empty() {
            history::add_other_recipients(&self.db, conversation, &mut messages).await?;
        }
        let next = if messages.len() == page_size as usize {
            messages.last().map_or(0, |message| message.sequence)
        } else {
            0
        };
        Ok((messages, next))
    }

    /// Acknowledge: moves the positions, then tells the other participants' streams.
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`] for a conversation the caller is not in.
    pub async fn acknowledge(
        &self,
        credentials: &Credentials,
        caller: Caller,
        conversation: ConversationId,
        delivered: u64,
        read: u64,
    ) -> Result<Positions, Error> {
        self.membership
            .authorize(credentials, conversation, caller.user)
            .await?;
        let positions = positions::acknowledge(
            &self.db,
            caller.user,
            caller.device,
            conversation,
            delivered,
            read,
        )
        .await?;
        self.bus.publish(BusEvent::Receipt(Receipt {
            conversation,
            user: caller.user,
            device: caller.device,
            delivered: positions.delivered,
            read: positions.read,
        }));
        Ok(positions)
    }

    /// SendTyping.
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`], [`Error::RateLimited`].
    pub async fn typing(
        &self,
        credentials: &Credentials,
        caller: Caller,
        conversation: ConversationId,
    ) -> Result<(), Error> {
        self.membership
            .authorize(credentials, conversation, caller.user)
            .await?;
        self.typing
            .check(caller.device, conversation, Instant::now())?;
        self.bus.publish(BusEvent::Typing(Typing {
            conversation,
            user: caller.user,
            device: caller.device,
        }));
        Ok(())
    }

    /// Subscribe and OpenStream.
    ///
    /// A stream needs the caller's groups: one opened without them would stay open and never
    /// deliver its group conversations (nothing re-routes it until a membership change), which
    /// the client cannot tell from silence. So when the group service cannot list them the
    /// stream is refused with UNAVAILABLE and the client retries (seen in the fault suite's
    /// database crash, where group answered nothing for seconds).
    ///
    /// # Errors
    /// [`Error::TooManyStreams`]; [`Error::Group`] when the group service fails.
    pub async fn open_stream(
        &self,
        credentials: &Credentials,
        caller: Caller,
        positions: HashMap<ConversationId, u64>,
        token: TokenWatch,
        kind: StreamKind,
    ) -> Result<(Outbox, EventStream), Error> {
        let groups = self
            .membership
            .groups_of_for_stream(credentials, caller.user)
            .await?;
        self.delivery.open(caller, groups, positions, token, kind)
    }

    fn page_size(&self, requested: u32) -> u32 {
        match requested {
            0 => DEFAULT_PAGE_SIZE.min(self.limits.max_page_size),
            n => n.min(self.limits.max_page_size),
        }
    }
}
