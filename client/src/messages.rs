//! Conversations and messages: resolving a target, sealing for every device, sending (with one
//! retry after a device-list mismatch), history, and opening (verifying) delivered messages.

use proto::{
    auth::v1 as auth_pb,
    chat::v1::{self as pb},
    group::v1 as group_pb,
};
use std::sync::Arc;

use serde::Serialize;
use tonic::Code;

use crate::{
    Error, Result, Session, chains,
    contacts::{SenderKey, pinned_sender_key},
    profile::SeenLog,
};

/// Where a message goes: a direct conversation with a user, or a group's conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The conversation id (for a group, the group id).
    pub conversation_id: String,
    /// Who is in it.
    #[serde(flatten)]
    pub kind: TargetKind,
}

/// The two kinds of [`Target`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetKind {
    /// A direct conversation.
    Direct {
        /// The peer's id.
        user_id: String,
        /// The peer's name.
        username: String,
    },
    /// A group conversation.
    Group {
        /// The group id.
        group_id: String,
        /// The group's name.
        name: String,
    },
}

/// A delivered message after verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReceivedText {
    /// The server's message id.
    pub message_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Its sequence in the conversation.
    pub sequence: u64,
    /// When the server accepted it (Unix seconds).
    pub sent_at: i64,
    /// The sender as claimed by the envelope (verified only when `content` is `Verified`).
    pub sender_user_id: String,
    /// The sender's username, when known.
    pub sender_username: String,
    /// The sending device.
    pub sender_device_id: String,
    /// The sender's id for the message (unique per sending device).
    pub client_message_id: String,
    /// The text, or why it is not shown.
    pub content: Content,
    /// What is wrong with the sending device's chain at this message (suite V2; empty when
    /// nothing is, and for V1 messages, which carry no chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<e2ee::ChainAnomaly>,
}

/// The outcome of verifying and decrypting a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Content {
    /// Signature, key commitment and decryption succeeded.
    Verified {
        /// The plaintext.
        text: String,
    },
    /// The message failed verification: its text must not be shown.
    Failed {
        /// Why, without saying which cryptographic check failed.
        reason: String,
    },
    /// A verified envelope this device already showed under another sequence: the server sent
    /// it again. Not shown again as new.
    Replayed {
        /// The sequence it was first shown at.
        first_sequence: u64,
    },
}

impl Content {
    /// Whether the message is not to be trusted as shown: it failed verification or is a
    /// replay.
    #[must_use]
    pub fn is_flagged(&self) -> bool {
        !matches!(self, Content::Verified { .. })
    }
}

/// A sent message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SentMessage {
    /// The sender's id of the message, which makes retries idempotent.
    pub client_message_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The server's message id.
    pub message_id: String,
    /// Its sequence.
    pub sequence: u64,
    /// Whether the server had already stored this client message id.
    pub duplicate: bool,
}

/// A message sealed and not yet acknowledged ([`Session::prepare_text`]).
#[derive(Clone, Debug)]
pub struct PreparedText {
    /// Its client message id.
    pub client_message_id: String,
    text: String,
    envelope: pb::Envelope,
    resealed: bool,
    /// This device's turn to send, held until the message (and every clone of it) is dropped:
    /// the next message takes the next chain position only after this one was answered.
    _turn: Arc<chains::SendingTurn>,
}

/// One conversation with its unread count, the time of its newest message and, when asked for
/// ([`Session::add_previews`]), a preview of that message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConversationSummary {
    /// The conversation id.
    pub conversation_id: String,
    /// `direct` or `group`.
    pub kind: &'static str,
    /// The peer's username, or `#` and the group's name.
    pub with: String,
    /// For a direct conversation, the peer's user id (empty for a group).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer_user_id: String,
    /// For a group conversation, the group id (empty for a direct one).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group_id: String,
    /// The last sequence.
    pub last_sequence: u64,
    /// Messages after this device's read position.
    pub unread_count: u64,
    /// When the server accepted the newest message (Unix seconds); `None` when there is none.
    pub last_message_at: Option<i64>,
    /// When the conversation was created (Unix seconds).
    pub created_at: i64,
    /// The newest message, opened on this device ([`Session::add_previews`]); `None` when
    /// there is no message or no preview was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
}

impl ConversationSummary {
    /// When the conversation last changed: its newest message, else its creation (the order of
    /// [`Session::conversations`]).
    #[must_use]
    pub fn last_activity_at(&self) -> i64 {
        self.last_message_at.unwrap_or(self.created_at)
    }

    fn target(&self) -> Target {
        let kind = if self.group_id.is_empty() {
            TargetKind::Direct {
                user_id: self.peer_user_id.clone(),
                username: self.with.clone(),
            }
        } else {
            TargetKind::Group {
                group_id: self.group_id.clone(),
                name: self.with.trim_start_matches('#').to_owned(),
            }
        };
        Target {
            conversation_id: self.conversation_id.clone(),
            kind,
        }
    }
}

/// The newest message of a conversation as a list shows it: its text only when this device
/// verified it, as for history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Preview {
    /// Verified and decrypted here.
    Verified {
        /// The sender's username (or id when unknown).
        from: String,
        /// The start of the text, on one line (at most [`PREVIEW_CHARS`] characters).
        text: String,
    },
    /// This device cannot show it: it failed verification, is a replay, or was not encrypted
    /// for this device (sent before the device existed: the server lists none of those).
    NotShown,
}

/// Whether opening a message records it in its sender's chain ([`e2ee::ConversationChains`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chain {
    /// Views of the conversation (history, live): in the order they show messages.
    Observe,
    /// A preview: the newest message alone, out of the conversation's order. Observing it would
    /// start a run of sequences there and hide a gap before it from the history view that
    /// follows; the history flags the chain when the conversation is opened.
    Skip,
}

/// How many characters of a message a preview keeps.
pub const PREVIEW_CHARS: usize = 60;

/// How many conversations get a preview by default (each costs a ListMessages call and an RSA
/// decryption): the most recent ones.
pub const DEFAULT_PREVIEWS: usize = 20;

/// Refuses a message with no visible text (empty or only whitespace), as the page does. The
/// server cannot refuse it: it sees only the ciphertext, padded, so it cannot tell an empty
/// message from a short one; every client checks before sealing.
///
/// # Errors
/// [`Error::Usage`] for an empty message.
pub fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::usage(
            "the message is empty: nothing was sent (write some text)".to_owned(),
        ));
    }
    Ok(())
}

/// The start of `text` on one line: control characters (newlines included) become spaces, at
/// most [`PREVIEW_CHARS`] characters, `…` when cut.
fn preview_text(text: &str) -> String {
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > PREVIEW_CHARS {
        let cut: String = line.chars().take(PREVIEW_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        line
    }
}

impl Session {
    /// Resolves `target`: `#name` or `#group-id` is one of the user's groups, anything else a
    /// username (opening the direct conversation if needed).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown user or group; [`Error::Usage`] for an ambiguous
    /// group name.
    pub async fn resolve(&self, target: &str) -> Result<Target> {
        if let Some(group) = target.strip_prefix('#') {
            let group = self.find_group(group).await?;
            return Ok(Target {
                conversation_id: group.group_id.clone(),
                kind: TargetKind::Group {
                    group_id: group.group_id,
                    name: group.name,
                },
            });
        }
        let user = self.user_by_name(target).await?.user.unwrap_or_default();
        let request = pb::OpenDirectConversationRequest {
            peer_user_id: user.user_id.clone(),
        };
        let response = self
            .call(request, |request| {
                let mut chat = self.chat.clone();
                async move { chat.open_direct_conversation(request).await }
            })
            .await?;
        let conversation_id = response.conversation.unwrap_or_default().conversation_id;
        // What `chat send` seals for while the server cannot be reached (`offline.rs`).
        self.remember_direct_conversation(&user.user_id, &conversation_id)?;
        Ok(Target {
            conversation_id,
            kind: TargetKind::Direct {
                user_id: user.user_id,
                username: user.username,
            },
        })
    }

    /// Encrypts `text` for every device of the conversation and sends it. After a device-list
    /// mismatch, refetches the devices and retries once (with the same client message id).
    /// Sends of this device take turns ([`chains::SendingTurn`]).
    ///
    /// # Errors
    /// [`Error::Refused`] (FAILED_PRECONDITION) when the devices changed again; as
    /// otherwise [`Error::Auth`], [`Error::Unavailable`] (also when another send of this
    /// device keeps its turn too long) or another [`Error::Refused`].
    pub async fn send_text(&self, target: &Target, text: &str) -> Result<SentMessage> {
        let mut prepared = self
            .prepare_text(target, uuid::Uuid::new_v4().to_string(), text)
            .await?;
        self.send_prepared(target, &mut prepared).await
    }

    /// Takes this device's turn to send and seals `text` for every device of the conversation
    /// under `client_message_id` (new for this device), without sending it: [`Session::send_prepared`] sends it, as many times as
    /// it takes. Changes of keys or members are reported first, as for [`Session::send_text`].
    ///
    /// # Errors
    /// [`Error::Untrusted`], [`Error::Auth`], [`Error::Unavailable`] or [`Error::Refused`] from
    /// fetching the participants.
    pub async fn prepare_text(
        &self,
        target: &Target,
        client_message_id: String,
        text: &str,
    ) -> Result<PreparedText> {
        check_text(text)?;
        let turn = chains::sending_turn(&self.profile).await?;
        let envelope = self
            .seal_for(target, &client_message_id, text, false)
            .await?;
        Ok(PreparedText {
            client_message_id,
            text: text.to_owned(),
            envelope,
            resealed: false,
            _turn: Arc::new(turn),
        })
    }

    /// Sends a prepared message. Call it again after a retryable failure
    /// ([`Error::is_retryable`]): it sends the same envelope (same client message id, same
    /// ciphertext), which the server stores at most once and answers, when it was stored
    /// already, with the original sequence. After a device-list mismatch the message is sealed
    /// again once for the refetched devices (at the same chain position) and that envelope is
    /// the one sent from then on.
    ///
    /// # Errors
    /// As [`Session::send_text`].
    pub async fn send_prepared(
        &self,
        target: &Target,
        prepared: &mut PreparedText,
    ) -> Result<SentMessage> {
        loop {
            let request = pb::SendMessageRequest {
                envelope: Some(prepared.envelope.clone()),
            };
            let result = self
                .call(request, |request| {
                    let mut chat = self.chat.clone();
                    async move { chat.send_message(request).await }
                })
                .await;
            match result {
                Ok(response) => {
                    return Ok(SentMessage {
                        client_message_id: prepared.client_message_id.clone(),
                        conversation_id: target.conversation_id.clone(),
                        message_id: response.message_id,
                        sequence: response.sequence,
                        duplicate: response.duplicate,
                    });
                }
                Err(Error::Refused {
                    code: Code::FailedPrecondition,
                    ..
                }) if !prepared.resealed => {
                    prepared.envelope = self
                        .seal_for(target, &prepared.client_message_id, &prepared.text, true)
                        .await?;
                    prepared.resealed = true;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The envelope of `text` for every current device of the target's participants (this
    /// device included, so that it can read its own messages), from auth (or the session's
    /// cache unless `fresh`). Changes are reported before sealing (see `contacts.rs`); nothing
    /// is sealed for keys the user has not accepted.
    pub(crate) async fn seal_for(
        &self,
        target: &Target,
        client_message_id: &str,
        text: &str,
        fresh: bool,
    ) -> Result<pb::Envelope> {
        let users = self.participants(target, fresh).await?;
        self.seal_to(target, client_message_id, text, &users)
    }

    /// The envelope of `text` for the devices of `users` (the participants, as
    /// [`Session::participants`] reviewed them: report its warnings first), each of which must
    /// be trusted.
    ///
    /// # Errors
    /// [`Error::Untrusted`] when a participant has keys not accepted yet.
    pub(crate) fn seal_to(
        &self,
        target: &Target,
        client_message_id: &str,
        text: &str,
        users: &[auth_pb::UserWithDevices],
    ) -> Result<pb::Envelope> {
        let position =
            chains::next_position(&self.profile, &target.conversation_id, client_message_id)?;
        let envelope = self.seal_at(target, client_message_id, text, users, &position)?;
        chains::record_sealed(&self.profile, &position, &envelope)?;
        Ok(envelope.into())
    }

    /// [`Session::seal_to`] at a given chain position, recorded by the caller.
    ///
    /// # Errors
    /// As [`Session::seal_to`].
    pub(crate) fn seal_at(
        &self,
        target: &Target,
        client_message_id: &str,
        text: &str,
        users: &[auth_pb::UserWithDevices],
        position: &e2ee::ChainPosition,
    ) -> Result<e2ee::Envelope> {
        // Every send seals here (the live conversation's too): nothing empty is ever sealed.
        check_text(text)?;
        let recipients = self.trusted_recipients(users)?;
        let keys = self.keys()?;
        let sender = e2ee::Sender {
            user_id: &self.account.user_id,
            device_id: &self.account.device_id,
            keys,
        };
        Ok(e2ee::seal(
            &sender,
            &target.conversation_id,
            client_message_id,
            &recipients,
            position,
            text.as_bytes(),
        )?)
    }

    /// The participants of `target` with their devices, reviewed against the pins (see
    /// `contacts.rs`); from the session's cache unless `fresh` (a group's members are always
    /// fetched). Every change found is reported (to the warning sink, when set) before this
    /// returns, so before anything is sealed for it.
    pub(crate) async fn participants(
        &self,
        target: &Target,
        fresh: bool,
    ) -> Result<Vec<auth_pb::UserWithDevices>> {
        Ok(match &target.kind {
            TargetKind::Direct { user_id, .. } => {
                let me = self
                    .user_by_id(&self.account.user_id.clone(), fresh)
                    .await?;
                let peer = self.user_by_id(user_id, fresh).await?;
                vec![me, peer]
            }
            TargetKind::Group { group_id, name } => {
                self.members_with_devices(group_id, name).await?
            }
        })
    }

    /// The group's members with their devices (reviewing their keys and the membership).
    pub(crate) async fn members_with_devices(
        &self,
        group_id: &str,
        group_name: &str,
    ) -> Result<Vec<auth_pb::UserWithDevices>> {
        let members = self.list_members(group_id).await?;
        let users: Vec<auth_pb::UserWithDevices> = members
            .into_iter()
            .map(|member| auth_pb::UserWithDevices {
                user: member.user,
                devices: member.devices,
            })
            .collect();
        self.pin_members(group_id, group_name, &users)?;
        for user in &users {
            self.pin(user)?;
        }
        Ok(users)
    }

    /// The last `limit` messages of the conversation, oldest first, each verified; marks them
    /// read. A message of another conversation is shown as failed; a verified message this
    /// device showed before under another sequence (a replay by the server, even across
    /// restarts) is shown as [`Content::Replayed`].
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user is not in the conversation.
    pub async fn history(&self, target: &Target, limit: u32) -> Result<Vec<ReceivedText>> {
        let request = pb::ListMessagesRequest {
            conversation_id: target.conversation_id.clone(),
            direction: pb::Direction::Backward as i32,
            from_sequence: 0,
            page_size: limit,
            include_all_recipients: false,
        };
        let response = self
            .call(request, |request| {
                let mut chat = self.chat.clone();
                async move { chat.list_messages(request).await }
            })
            .await?;
        // Acknowledge on receipt, before decrypting anything: an acknowledgement whose timing
        // depended on RSA decryptions would give the server a timing oracle (RUSTSEC-2023-0071,
        // see deny.toml). Backward order: the first message is the newest.
        if let Some(newest) = response.messages.first() {
            let sequence = newest.sequence;
            self.acknowledge(&target.conversation_id, sequence, sequence)
                .await?;
            // The live view resumes where the server does (the acknowledged position), and
            // knows it from the cursor: a conversation without one starts at its first message,
            // which tells the messages sent before this device existed from the ones shown here.
            let mut cursors = self.profile.cursors()?;
            let cursor = cursors.entry(target.conversation_id.clone()).or_default();
            if *cursor < sequence {
                *cursor = sequence;
                self.profile.save_cursors(&cursors)?;
            }
        }
        let mut seen = self.profile.seen(&target.conversation_id)?;
        let mut shown = Vec::with_capacity(response.messages.len());
        for message in response.messages.into_iter().rev() {
            shown.push(self.open_in(target, message, &mut seen).await);
        }
        self.profile.save_seen(&target.conversation_id, &seen)?;
        Ok(shown)
    }

    /// Records that this device received and read the conversation up to the given sequences
    /// (0 leaves one unchanged).
    ///
    /// # Errors
    /// [`Error::Auth`] when the session ended, [`Error::Unavailable`], or [`Error::Refused`].
    pub async fn acknowledge(
        &self,
        conversation_id: &str,
        delivered: u64,
        read: u64,
    ) -> Result<()> {
        let request = pb::AcknowledgeRequest {
            ack: Some(pb::Acknowledgement {
                conversation_id: conversation_id.to_owned(),
                delivered_sequence: delivered,
                read_sequence: read,
            }),
        };
        self.call(request, |request| {
            let mut chat = self.chat.clone();
            async move { chat.acknowledge(request).await }
        })
        .await?;
        Ok(())
    }

    /// Every conversation of the user, most recent activity first (the newest message, else
    /// the creation), with unread counts and the time of the newest message. Needs no keys;
    /// previews are [`Session::add_previews`].
    ///
    /// # Errors
    /// [`Error::Auth`] when the session ended, [`Error::Unavailable`], or [`Error::Refused`].
    pub async fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        let mut conversations = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListConversationsRequest {
                page_size: 100,
                page_token: page_token.clone(),
            };
            let response = self
                .call(request, |request| {
                    let mut chat = self.chat.clone();
                    async move { chat.list_conversations(request).await }
                })
                .await?;
            conversations.extend(response.conversations);
            if response.next_page_token.is_empty() {
                break;
            }
            page_token = response.next_page_token;
        }
        let peers: Vec<String> = conversations
            .iter()
            .filter(|c| !c.peer_user_id.is_empty())
            .map(|c| c.peer_user_id.clone())
            .collect();
        let users = self.users_by_id(peers).await?;
        let groups = if conversations.iter().any(|c| !c.group_id.is_empty()) {
            self.groups().await?
        } else {
            Vec::new()
        };
        let group_name = |group_id: &str| {
            groups
                .iter()
                .find(|group| group.group_id == group_id)
                .map_or_else(|| group_id.to_owned(), |group| group.name.clone())
        };
        let name_of = |user_id: &str| {
            users
                .iter()
                .filter_map(|user| user.user.as_ref())
                .find(|user| user.user_id == user_id)
                .map_or_else(|| user_id.to_owned(), |user| user.username.clone())
        };
        Ok(conversations
            .into_iter()
            .map(|c| ConversationSummary {
                kind: if c.group_id.is_empty() {
                    "direct"
                } else {
                    "group"
                },
                with: if c.group_id.is_empty() {
                    name_of(&c.peer_user_id)
                } else {
                    format!("#{}", group_name(&c.group_id))
                },
                conversation_id: c.conversation_id,
                peer_user_id: c.peer_user_id,
                group_id: c.group_id,
                last_sequence: c.last_sequence,
                unread_count: c.unread_count,
                last_message_at: c.last_message_at.map(|t| t.seconds),
                created_at: c.created_at.map_or(0, |t| t.seconds),
                preview: None,
            })
            .collect())
    }

    /// Opens the newest message of the first `max` conversations (the most recent: the cost is
    /// one ListMessages call of one message and one decryption each) and sets their preview.
    /// The messages are opened as history opens them (verified, in their conversation, replays
    /// flagged) but not observed in their sender's chain (see `Chain::Skip`: the history
    /// checks it), and are neither acknowledged nor marked read. A conversation whose newest
    /// message cannot be listed keeps no preview.
    ///
    /// # Errors
    /// [`Error::Auth`] when the session ended; [`Error::Profile`] when the seen log cannot be
    /// written.
    pub async fn add_previews(
        &self,
        conversations: &mut [ConversationSummary],
        max: usize,
    ) -> Result<()> {
        for conversation in conversations
            .iter_mut()
            .filter(|c| c.last_sequence > 0)
            .take(max)
        {
            let request = pb::ListMessagesRequest {
                conversation_id: conversation.conversation_id.clone(),
                direction: pb::Direction::Backward as i32,
                from_sequence: 0,
                page_size: 1,
                include_all_recipients: false,
            };
            let listed = self
                .call(request, |request| {
                    let mut chat = self.chat.clone();
                    async move { chat.list_messages(request).await }
                })
                .await;
            let message = match listed {
                Ok(response) => response.messages.into_iter().next(),
                Err(error @ Error::Auth(..)) => return Err(error),
                // One conversation that cannot be listed (left meanwhile, a busy server) does
                // not hide the others: it is listed without a preview.
                Err(_) => continue,
            };
            // The server lists only the messages encrypted for this device: none when every
            // message was sent before the device existed.
            let Some(message) = message else {
                conversation.preview = Some(Preview::NotShown);
                continue;
            };
            let target = conversation.target();
            let mut seen = self.profile.seen(&target.conversation_id)?;
            let opened = self
                .open_in_view(&target, message, &mut seen, Chain::Skip)
                .await;
            self.profile.save_seen(&target.conversation_id, &seen)?;
            conversation.preview = Some(match opened.content {
                Content::Verified { text } => Preview::Verified {
                    from: if opened.sender_username.is_empty() {
                        opened.sender_user_id
                    } else {
                        opened.sender_username
                    },
                    text: preview_text(&text),
                },
                Content::Failed { .. } | Content::Replayed { .. } => Preview::NotShown,
            });
        }
        Ok(())
    }

    /// Opens a message shown in `target`'s conversation: it must belong to it (and, in a direct
    /// conversation, come from one of its two users), and a verified one is recorded in `seen`,
    /// which flags a replay.
    pub(crate) async fn open_in(
        &self,
        target: &Target,
        message: pb::Message,
        seen: &mut SeenLog,
    ) -> ReceivedText {
        self.open_in_view(target, message, seen, Chain::Observe)
            .await
    }

    /// [`Session::open_in`], observing the sender's chain or not (see [`Chain`]).
    async fn open_in_view(
        &self,
        target: &Target,
        message: pb::Message,
        seen: &mut SeenLog,
        chain: Chain,
    ) -> ReceivedText {
        let sender = message
            .envelope
            .as_ref()
            .map(|envelope| envelope.sender_user_id.clone())
            .unwrap_or_default();
        let misplaced = if message.conversation_id != target.conversation_id {
            Some("the message belongs to another conversation")
        } else {
            match &target.kind {
                TargetKind::Direct { user_id, .. }
                    if sender != *user_id && sender != self.account.user_id =>
                {
                    Some("the sender is not in this conversation")
                }
                _ => None,
            }
        };
        let mut opened = self.open_message_with(message, chain).await;
        if let Some(reason) = misplaced {
            opened.content = Content::Failed {
                reason: reason.to_owned(),
            };
        }
        if matches!(opened.content, Content::Verified { .. })
            && let Some(first_sequence) = seen.record(
                &opened.sender_device_id,
                &opened.client_message_id,
                opened.sequence,
            )
        {
            opened.content = Content::Replayed { first_sequence };
        }
        opened
    }

    /// Verifies and decrypts a delivered message. A message that fails any check is returned
    /// with [`Content::Failed`], never with its text. It does not check which conversation the
    /// message is shown in, nor whether it was shown before: history and live views do.
    pub async fn open_message(&self, message: pb::Message) -> ReceivedText {
        self.open_message_with(message, Chain::Observe).await
    }

    async fn open_message_with(&self, message: pb::Message, observe: Chain) -> ReceivedText {
        let envelope = message.envelope.clone().unwrap_or_default();
        let (content, chain) = match self.decrypt(message.clone(), &envelope, observe).await {
            Ok((text, chain)) => (Content::Verified { text }, chain),
            Err(reason) => (
                Content::Failed {
                    reason: reason.to_owned(),
                },
                Vec::new(),
            ),
        };
        let sender_username = self
            .users
            .lock()
            .expect("not poisoned")
            .get(&envelope.sender_user_id)
            .and_then(|user| user.user.as_ref().map(|user| user.username.clone()))
            .or_else(|| {
                (envelope.sender_user_id == self.account.user_id)
                    .then(|| self.account.username.clone())
            })
            .unwrap_or_default();
        ReceivedText {
            message_id: message.message_id,
            conversation_id: message.conversation_id,
            sequence: message.sequence,
            sent_at: message.sent_at.map_or(0, |t| t.seconds),
            sender_user_id: envelope.sender_user_id,
            sender_username,
            sender_device_id: envelope.sender_device_id,
            client_message_id: envelope.client_message_id,
            content,
            chain,
        }
    }

    async fn decrypt(
        &self,
        message: pb::Message,
        envelope: &pb::Envelope,
        observe: Chain,
    ) -> std::result::Result<(String, Vec<e2ee::ChainAnomaly>), &'static str> {
        let keys = self
            .shared_keys()
            .map_err(|_| "the device keys are not open")?
            .clone();
        if envelope.conversation_id != message.conversation_id {
            return Err("the message was delivered in another conversation");
        }
        let sent_at_seconds = message.sent_at.map_or(0, |t| t.seconds);
        let signing_key = self
            .signing_key(
                &envelope.sender_user_id,
                &envelope.sender_device_id,
                sent_at_seconds,
            )
            .await?;
        let (sequence, sent_at) = (message.sequence, message.sent_at);
        // Without a wrapped key of its own: the keys other devices of the user forwarded.
        let forwarded = self.forwarded_candidates(&message).await;
        if !message.forwarded_keys.is_empty() && forwarded.is_empty() {
            return Err(
                "the key of this message was forwarded by a device this device does not trust",
            );
        }
        let message_id = message.message_id.clone();
        let received =
            e2ee::ReceivedMessage::try_from(message).map_err(|_| "the message is malformed")?;
        // Failures are counted per sending device (V2: only that device can choose its wrapped
        // keys) and together for V1, whose wrapped keys the server can replace; a forwarded
        // key's per forwarding device, which chose it.
        let budget_key = if let Some(first) = forwarded.first() {
            format!("forwarder:{}", first.forwarded.forwarder_device_id)
        } else if received.envelope.suite == e2ee::SUITE_V1 {
            "v1".to_owned()
        } else {
            envelope.sender_device_id.clone()
        };
        if !chains::may_decrypt(&self.profile, &budget_key)
            .map_err(|_| "the decryption failures cannot be read")?
        {
            return Err("too many messages from this sender failed to decrypt: not decrypted");
        }
        let hook = self.decryption_hook.lock().expect("not poisoned").clone();
        let my_device_id = self.account.device_id.clone();
        // On a blocking thread: the task that reads the stream (and acknowledges) goes on while
        // the RSA work runs, on any runtime.
        let opened = tokio::task::spawn_blocking(move || {
            if let Some(hook) = hook {
                hook();
            }
            if forwarded.is_empty() {
                e2ee::open(&received, &my_device_id, &keys, &signing_key)
            } else {
                crate::forwarding::open_with_forwarded(
                    &received,
                    &message_id,
                    &forwarded,
                    &my_device_id,
                    &keys,
                    &signing_key,
                )
            }
        })
        .await
        .map_err(|_| "the decryption was interrupted")?;
        // Never say which check failed (see the e2ee crate's threat model).
        let opened = opened.map_err(|error| {
            if matches!(
                error,
                e2ee::Error::UnwrapFailed
                    | e2ee::Error::KeyCommitmentMismatch
                    | e2ee::Error::DecryptFailed
                    | e2ee::Error::BadPadding
            ) {
                // An unwritable profile loses the count (and fails the view's other saves).
                let _ = chains::record_failure(&self.profile, &budget_key);
            }
            "the signature, key commitment or decryption check failed"
        })?;
        let text =
            String::from_utf8(opened.plaintext).map_err(|_| "the message is not UTF-8 text")?;
        let chain = match opened.link {
            Some(link) if observe == Chain::Observe => {
                let server_time_ms = sent_at.map_or(0, |at| {
                    u64::try_from(at.seconds).unwrap_or(0) * 1000
                        + u64::try_from(at.nanos / 1_000_000).unwrap_or(0)
                });
                chains::observe(
                    &self.profile,
                    &envelope.conversation_id,
                    sequence,
                    &envelope.sender_device_id,
                    &link,
                    server_time_ms,
                )
                .map_err(|_| "the chain state could not be saved")?
            }
            _ => Vec::new(),
        };
        Ok((text, chain))
    }

    /// The Ed25519 key of a sender's device, for a message the server stamped `sent_at`: this
    /// device's own, else the pinned one, after the user's current devices were reviewed (from
    /// the session's cache, then fresh once when the device is not pinned). Refused for a device
    /// revoked before `sent_at`, or a new one not accepted yet.
    pub(crate) async fn signing_key(
        &self,
        user_id: &str,
        device_id: &str,
        sent_at: i64,
    ) -> std::result::Result<Vec<u8>, &'static str> {
        if user_id == self.account.user_id
            && device_id == self.account.device_id
            && let Some(keys) = self.public_keys()
        {
            return Ok(keys.signing_public_key.to_vec());
        }
        for fresh in [false, true] {
            if self.user_by_id(user_id, fresh).await.is_err() {
                continue;
            }
            let contacts = self
                .profile
                .contacts()
                .map_err(|_| "the pinned keys cannot be read")?;
            match pinned_sender_key(&contacts, user_id, device_id, sent_at) {
                SenderKey::Trusted(key) => return Ok(key),
                SenderKey::Refused(reason) => return Err(reason),
                SenderKey::Unknown => {}
            }
        }
        Err("the sender's device is unknown")
    }

    pub(crate) async fn list_members(&self, group_id: &str) -> Result<Vec<group_pb::Member>> {
        let request = group_pb::ListMembersRequest {
            group_id: group_id.to_owned(),
        };
        let response = self
            .call(request, |request| {
                let mut group = self.group.clone();
                async move { group.list_members(request).await }
            })
            .await?;
        Ok(response.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_blank_texts_are_refused_and_any_visible_text_is_not() {
        for text in ["", " ", "\n\t \r\n"] {
            assert!(
                matches!(check_text(text), Err(Error::Usage(..))),
                "{text:?}"
            );
        }
        for text in ["a", " . ", "👋"] {
            assert!(check_text(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn a_preview_is_one_line_cut_at_its_length() {
        assert_eq!(preview_text("  two\nlines\u{1b}[2J  "), "two lines [2J");
        let long = "é".repeat(PREVIEW_CHARS + 1);
        let cut = preview_text(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(PREVIEW_CHARS);
        assert_eq!(preview_text(&exact), exact);
    }
}
