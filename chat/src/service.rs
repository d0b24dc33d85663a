//! The chat service's operations, wired from the feature modules; `api.rs` calls these after
//! authenticating and parsing, and maps the results to proto.

use std::{collections::HashMap, sync::Arc, time::Instant};

use common::credentials::Credentials;
use sqlx::PgPool;

use crate::{
    Error,
    config::Limits,
    delivery::{
        bus::{Bus, BusEvent, KeysForwarded, Receipt, Typing},
        stream::{Delivery, EventStream, Outbox, TokenWatch},
        typing::TypingLimiter,
    },
    ids::{ConversationId, UserId},
    membership::{devices::Directory, groups::Membership},
    message::{Caller, Committed, DeliveredForwardedKey, DeliveredMessage},
    metrics::{SendMetrics, SendPath, StreamKind},
    send::checks::Sending,
    store::{
        conversations::{self, Conversation, PageToken},
        forwarded::{self, NewForwardedKey},
        history::{self, Direction},
        positions::{self, Positions},
    },
};

/// Page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Most keys one ForwardKeys request stores (the proto comment documents it): 500 keys of
/// RSA-4096 with their signatures are about 300 KiB, one statement, well within the gateway's
/// 4 MiB; a forwarding client sends a conversation's history in such batches.
pub const MAX_FORWARDED_KEYS_PER_REQUEST: usize = 500;

/// A message of ListMessages, with the keys other devices of the caller's user forwarded to the
/// caller's device when it has no wrapped key of its own.
pub type HistoryMessage = (DeliveredMessage, Vec<DeliveredForwardedKey>);

/// One key of a ForwardKeys request, parsed.
#[derive(Debug, Clone)]
pub struct KeyToForward {
    /// The message (`Message.message_id`).
    pub message_id: uuid::Uuid,
    /// The device it is wrapped for.
    pub recipient: crate::ids::DeviceId,
    /// That device's key fingerprint.
    pub recipient_key_fingerprint: Vec<u8>,
    /// The RSA-OAEP ciphertext.
    pub wrapped_key: Vec<u8>,
    /// The forwarder's signature.
    pub signature: Vec<u8>,
}

/// What ForwardKeys did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardOutcome {
    /// Keys stored (new or replaced).
    pub stored: u32,
    /// Keys skipped: their recipient has a wrapped key of the message.
    pub skipped: u32,
}

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

    /// SendMessage, and sends on OpenStream (`path` says which, for the metrics).
    ///
    /// # Errors
    /// See [`Sending::send`].
    pub async fn send(
        &self,
        credentials: &Credentials,
        caller: Caller,
        envelope: e2ee::Envelope,
        path: SendPath,
    ) -> Result<Committed, Error> {
        let started = Instant::now();
        let sent = self.sending.send(credentials, caller, envelope).await;
        self.metrics.answered(
            path,
            started.elapsed(),
            sent.as_ref().map(|committed| committed.duplicate),
        );
        sent
    }

    /// ListMessages; returns the messages (each with the keys forwarded to the caller's device
    /// when it has no wrapped key of its own) and where the next page starts (0: none).
    ///
    /// # Errors
    /// [`Error::ConversationNotFound`] for a conversation the caller is not in.
    pub async fn list_messages(
        &self,
        credentials: &Credentials,
        caller: Caller,
        conversation: ConversationId,
        page: HistoryPage,
    ) -> Result<(Vec<HistoryMessage>, u64), Error> {
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
        let direct = history::read_for_device(
            &self.db,
            caller.device,
            conversation,
            direction,
            from,
            page_size,
        )
        .await?;
        // Each read is the first `page_size` of its kind in the walk's order, so the first
        // `page_size` of both merged are the page.
        let forwarded = forwarded::read_for_device(
            &self.db,
            caller.device,
            conversation,
            direction,
            from,
            page_size,
        )
        .await?;
        let mut messages = merge_pages(direct, forwarded, direction, page_size as usize);
        if include_all_recipients && !messages.is_empty() {
            let mut plain: Vec<DeliveredMessage> = messages
                .iter()
                .map(|(message, _)| message.clone())
                .collect();
            history::add_other_recipients(&self.db, conversation, &mut plain).await?;
            for ((message, _), with_recipients) in messages.iter_mut().zip(plain) {
                *message = with_recipients;
            }
        }
        let next = if messages.len() == page_size as usize {
            messages.last().map_or(0, |(message, _)| message.sequence)
        } else {
            0
        };
        Ok((messages, next))
    }

    /// ForwardKeys: stores keys of `conversation`'s messages that the caller's device forwards
    /// to other devices of its user, after checking (in this order) the request's shape, that
    /// the caller takes part in the conversation, that the caller's device and every recipient
    /// are active devices of the caller's user (recipients with their current key), that every
    /// message is one of the conversation's, that each key's signature verifies with the
    /// caller's device's published key, and that the caller's device was given each message's
    /// key. Keys for a device that is a recipient of the message are skipped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::ConversationNotFound`], [`Error::ForwardingDenied`],
    /// [`Error::StaleRecipientKey`], [`Error::MessageNotFound`], [`Error::SignatureInvalid`], as
    /// the proto documents.
    pub async fn forward_keys(
        &self,
        credentials: &Credentials,
        caller: Caller,
        conversation: ConversationId,
        keys: Vec<KeyToForward>,
    ) -> Result<ForwardOutcome, Error> {
        self.check_forwarded_shapes(caller, &keys)?;
        self.membership
            .authorize(credentials, conversation, caller.user)
            .await?;
        let devices = self
            .directory
            .active_devices(credentials, &[caller.user])
            .await?
            .remove(&caller.user)
            .unwrap_or_default();
        let Some(forwarder) = devices.iter().find(|d| d.device_id == caller.device) else {
            return Err(Error::ForwardingDenied(
                "this device is not an active device of its user".to_owned(),
            ));
        };
        for key in &keys {
            let Some(recipient) = devices.iter().find(|d| d.device_id == key.recipient) else {
                return Err(Error::ForwardingDenied(format!(
                    "device {} is not an active device of the caller's user",
                    key.recipient.0
                )));
            };
            if recipient.encryption_key_fingerprint != key.recipient_key_fingerprint {
                return Err(Error::StaleRecipientKey(format!(
                    "the key fingerprint for device {} is not its current key; refetch the \
                     user's devices",
                    key.recipient.0
                )));
            }
        }
        let message_ids: Vec<uuid::Uuid> = keys.iter().map(|key| key.message_id).collect();
        let sequences = forwarded::sequences_of(&self.db, conversation, &message_ids).await?;
        let mut resolved = Vec::with_capacity(keys.len());
        for key in keys {
            let (sequence, key_commitment) = sequences
                .get(&key.message_id)
                .ok_or(Error::MessageNotFound(key.message_id))?;
            // As for a send: nothing is stored under a device's name that it did not sign.
            check_forwarder_signature(caller, conversation, &key, key_commitment, forwarder)?;
            resolved.push((key, *sequence));
        }
        let wanted: Vec<i64> = resolved
            .iter()
            .map(|(_, sequence)| crate::message::to_i64(*sequence))
            .collect();
        let held = forwarded::held_by(&self.db, conversation, caller.device, &wanted).await?;
        if let Some((key, _)) = resolved
            .iter()
            .find(|(_, sequence)| !held.contains(sequence))
        {
            return Err(Error::ForwardingDenied(format!(
                "this device was never given the key of message {}",
                key.message_id
            )));
        }
        let pairs: Vec<(u64, crate::ids::DeviceId)> = resolved
            .iter()
            .map(|(key, sequence)| (*sequence, key.recipient))
            .collect();
        let direct = forwarded::direct_recipients(&self.db, conversation, &pairs).await?;
        let to_store: Vec<NewForwardedKey> = resolved
            .into_iter()
            .filter(|(key, sequence)| !direct.contains(&(*sequence, key.recipient)))
            .map(|(key, sequence)| NewForwardedKey {
                sequence,
                recipient: key.recipient,
                recipient_key_fingerprint: key.recipient_key_fingerprint,
                wrapped_key: key.wrapped_key,
                signature: key.signature,
            })
            .collect();
        let skipped = u32::try_from(pairs.len() - to_store.len()).unwrap_or(u32::MAX);
        if to_store.is_empty() {
            return Ok(ForwardOutcome { stored: 0, skipped });
        }
        let stored = forwarded::store(
            &self.db,
            conversation,
            caller.user,
            caller.device,
            &to_store,
        )
        .await?;
        self.announce_forwarded(caller, conversation, &to_store);
        Ok(ForwardOutcome {
            stored: u32::try_from(stored).unwrap_or(u32::MAX),
            skipped,
        })
    }

    /// Tells each recipient device's open streams, on every replica, how many keys it was just
    /// given, so that its open views read them without waiting for their next ListMessages.
    /// Best-effort, as the bus is: a lost event leaves them to that next ListMessages.
    fn announce_forwarded(
        &self,
        caller: Caller,
        conversation: ConversationId,
        stored: &[NewForwardedKey],
    ) {
        let mut per_device: HashMap<crate::ids::DeviceId, u32> = HashMap::new();
        for key in stored {
            *per_device.entry(key.recipient).or_default() += 1;
        }
        for (device, count) in per_device {
            self.bus.publish(BusEvent::KeysForwarded(KeysForwarded {
                conversation,
                user: caller.user,
                device,
                count,
            }));
        }
    }

    /// The checks of ForwardKeys that need nothing but the request.
    fn check_forwarded_shapes(&self, caller: Caller, keys: &[KeyToForward]) -> Result<(), Error> {
        let invalid = |what: &str| Err(Error::InvalidArgument(what.to_owned()));
        if keys.is_empty() {
            return invalid("keys must not be empty");
        }
        if keys.len() > MAX_FORWARDED_KEYS_PER_REQUEST {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_FORWARDED_KEYS_PER_REQUEST} keys per request"
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        for key in keys {
            if key.recipient_key_fingerprint.len() != 32 {
                return invalid("recipient_key_fingerprint must be 32 bytes");
            }
            if key.wrapped_key.is_empty()
                || key.wrapped_key.len() > self.limits.max_wrapped_key_bytes
            {
                return Err(Error::InvalidArgument(format!(
                    "wrapped_key must be 1 to {} bytes",
                    self.limits.max_wrapped_key_bytes
                )));
            }
            if key.signature.len() != 64 {
                return invalid("signature must be 64 bytes");
            }
            if key.recipient == caller.device {
                return invalid("a key cannot be forwarded to the forwarding device itself");
            }
            if !seen.insert((key.message_id, key.recipient)) {
                return invalid("a message and recipient device appear twice");
            }
        }
        Ok(())
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

/// The forwarding device's signature of `key` (e2ee's `verify_forwarded_key`), with its
/// published key.
fn check_forwarder_signature(
    caller: Caller,
    conversation: ConversationId,
    key: &KeyToForward,
    key_commitment: &[u8],
    forwarder: &crate::membership::devices::ActiveDevice,
) -> Result<(), Error> {
    let forwarded = e2ee::ForwardedKey {
        conversation_id: conversation.0.to_string(),
        message_id: key.message_id.to_string(),
        forwarder_user_id: caller.user.0.to_string(),
        forwarder_device_id: caller.device.0.to_string(),
        recipient_device_id: key.recipient.0.to_string(),
        recipient_key_fingerprint: key.recipient_key_fingerprint.clone(),
        wrapped_key: key.wrapped_key.clone(),
        signature: key.signature.clone(),
    };
    e2ee::verify_forwarded_key(&forwarded, key_commitment, &forwarder.signing_public_key).map_err(
        |_| {
            Error::SignatureInvalid(format!(
                "the forwarded key of message {} does not verify with this device's published key",
                key.message_id
            ))
        },
    )
}

/// The first `page_size` of two pages walked in `direction`, by sequence. A message in both
/// (a forwarded key stored just before the device became a recipient cannot be, but a page
/// should not depend on it) keeps its own wrapped key.
fn merge_pages(
    direct: Vec<DeliveredMessage>,
    forwarded: Vec<HistoryMessage>,
    direction: Direction,
    page_size: usize,
) -> Vec<HistoryMessage> {
    let mut merged: Vec<HistoryMessage> = direct
        .into_iter()
        .map(|message| (message, Vec::new()))
        .collect();
    let direct_sequences: std::collections::HashSet<u64> =
        merged.iter().map(|(message, _)| message.sequence).collect();
    merged.extend(
        forwarded
            .into_iter()
            .filter(|(message, _)| !direct_sequences.contains(&message.sequence)),
    );
    merged.sort_by_key(|(message, _)| message.sequence);
    if direction == Direction::Backward {
        merged.reverse();
    }
    merged.truncate(page_size);
    merged
}
