//! The outbox: sealed envelopes the server has not acknowledged yet, kept in the profile
//! (`outbox.json`) so that no message typed is lost when the server is unreachable or the
//! program ends before an answer. Each is resent as it is (same client message id, same
//! ciphertext): the server stores a client message id at most once and answers a repeat as a
//! duplicate, so a resend never shows a message twice.
//!
//! Only what was sealed is kept, never the text: the sending device seals every message for
//! itself too, so its text is read back by opening the envelope with the device's own keys
//! (`chat pending` shows it), and a kept envelope that the server refuses for a device-list
//! mismatch (the conversation's devices changed meanwhile, or it was sealed offline for the
//! pinned devices, `offline.rs`) is opened and sealed again for the current devices, at its own
//! place in the device's chain, and sent with the same client message id. The file is only
//! changed while this device's sending turn is held (`chains::sending_turn`), so two `chat`
//! processes never lose each other's entries.

use std::collections::BTreeSet;

use prost::Message as _;
use proto::{auth::v1 as auth_pb, chat::v1 as pb};
use serde::{Deserialize, Serialize};

use tonic::Code;

use crate::{Error, Profile, Result, SentMessage, Session, Target, chains, check_text};

/// The file in the profile.
const OUTBOX: &str = "outbox.json";

/// A sealed message waiting for the server's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The conversation.
    pub conversation_id: String,
    /// The client message id (the server's deduplication key).
    pub client_message_id: String,
    /// The live stream's request id it was last sent under.
    pub request_id: String,
    /// When it was sealed (Unix seconds).
    pub queued_at: i64,
    /// How many times `chat send` or `chat flush` sent it without an answer.
    #[serde(default)]
    pub attempts: u32,
    /// Why it waits for the user rather than the server, when it does: the server refused it
    /// for a device-list mismatch and a participant's new keys are not accepted yet, so it
    /// cannot be sealed again until `chat trust` (or `chat verify`) accepts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The envelope, protobuf-encoded, hex.
    envelope: String,
}

impl QueuedMessage {
    pub(crate) fn new(
        conversation_id: &str,
        client_message_id: &str,
        request_id: &str,
        envelope: &pb::Envelope,
    ) -> Self {
        Self {
            conversation_id: conversation_id.to_owned(),
            client_message_id: client_message_id.to_owned(),
            request_id: request_id.to_owned(),
            queued_at: time::OffsetDateTime::now_utc().unix_timestamp(),
            attempts: 0,
            held: None,
            envelope: hex::encode(envelope.encode_to_vec()),
        }
    }

    /// The same message with another envelope (sealed again).
    fn with_envelope(&self, envelope: &pb::Envelope) -> Self {
        Self {
            envelope: hex::encode(envelope.encode_to_vec()),
            ..self.clone()
        }
    }

    /// The sealed envelope.
    ///
    /// # Errors
    /// [`Error::Profile`] when the stored bytes do not decode.
    pub(crate) fn envelope(&self) -> Result<pb::Envelope> {
        let bytes = hex::decode(&self.envelope)
            .map_err(|_| Error::Profile(format!("{OUTBOX}: an envelope is not hex")))?;
        pb::Envelope::decode(bytes.as_slice())
            .map_err(|_| Error::Profile(format!("{OUTBOX}: an envelope does not decode")))
    }
}

/// Every kept message, oldest first.
///
/// # Errors
/// [`Error::Profile`] for an unreadable file.
pub fn queued(profile: &Profile) -> Result<Vec<QueuedMessage>> {
    Ok(profile.read_file(OUTBOX)?.unwrap_or_default())
}

/// Keeps `message` (replacing an entry of the same client message id: a resealed envelope,
/// whose count of attempts goes on).
pub(crate) fn keep(profile: &Profile, mut message: QueuedMessage) -> Result<()> {
    let mut all = queued(profile)?;
    match all
        .iter_mut()
        .find(|m| m.client_message_id == message.client_message_id)
    {
        Some(entry) => {
            message.attempts = message.attempts.max(entry.attempts);
            message.queued_at = entry.queued_at;
            *entry = message;
        }
        None => all.push(message),
    }
    profile.write_file(OUTBOX, &all)
}

/// The kept message of `client_message_id`, if it is still kept.
fn kept_message(profile: &Profile, client_message_id: &str) -> Result<Option<QueuedMessage>> {
    Ok(queued(profile)?
        .into_iter()
        .find(|m| m.client_message_id == client_message_id))
}

/// Marks the kept message of `client_message_id` as waiting for the user to accept new keys
/// (`reason`, an [`Error::Untrusted`] message), so that `chat pending` says why it is not sent.
pub(crate) fn hold(profile: &Profile, client_message_id: &str, reason: &str) -> Result<()> {
    match kept_message(profile, client_message_id)? {
        // Kept held already (a new line of `chat chat`, by `Session::keep_held`).
        Some(message) if message.held.is_none() => {
            keep_held_message(profile, message, reason).map(drop)
        }
        _ => Ok(()),
    }
}

/// Keeps `message` marked as waiting for the user, for the [`Error::Untrusted`] message
/// `untrusted`; returns the reason kept.
fn keep_held_message(profile: &Profile, message: QueuedMessage, untrusted: &str) -> Result<String> {
    let reason = held_reason(untrusted);
    keep(
        profile,
        QueuedMessage {
            held: Some(reason.clone()),
            ..message
        },
    )?;
    Ok(reason)
}

/// An [`Error::Untrusted`] message said of a kept message: it is not "not sent" for good.
fn held_reason(untrusted: &str) -> String {
    untrusted
        .strip_prefix("not sent: ")
        .unwrap_or(untrusted)
        .to_owned()
}

/// Forgets the message of `client_message_id` (acknowledged, or refused for good).
pub(crate) fn forget(profile: &Profile, client_message_id: &str) -> Result<()> {
    let mut all = queued(profile)?;
    let before = all.len();
    all.retain(|m| m.client_message_id != client_message_id);
    if all.len() == before {
        return Ok(());
    }
    profile.write_file(OUTBOX, &all)
}

/// A kept message the server refused for good: dropped from the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotSent {
    /// The conversation.
    pub conversation_id: String,
    /// Its client message id.
    pub client_message_id: String,
    /// Why, as a sentence.
    pub reason: String,
}

/// What [`Session::flush`] did with the kept messages.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Delivered now (or found already stored: `duplicate`).
    pub sent: Vec<SentMessage>,
    /// Refused for good, and dropped.
    pub dropped: Vec<NotSent>,
    /// Kept until the user accepts a participant's new keys (`reason` says whose); the later
    /// kept messages of their conversations stay kept behind them, unsent.
    pub held: Vec<NotSent>,
    /// The server was unreachable: this and every later message stays kept.
    pub stopped: Option<Error>,
}

/// What [`Session::send_kept`] did: the earlier kept messages of the conversation went first.
#[derive(Debug)]
pub struct Delivery {
    /// The conversation's earlier kept messages, flushed first.
    pub earlier: Flushed,
    /// The new message: sent, or kept because the server was unreachable (the error says how).
    pub outcome: std::result::Result<SentMessage, Error>,
}

impl Session {
    /// Keeps `text`, which could not be sealed because a participant's keys are not accepted
    /// yet (`untrusted`, the [`Error::Untrusted`] message), held for the user to decide: sealed
    /// meanwhile for the trusted participants only (so that this device reads it back, and it
    /// keeps its place in the chain), never sent in that form, and sealed again once the keys
    /// are accepted ([`Session::send_held`]). Returns the reason kept.
    ///
    /// # Errors
    /// As [`Session::seal_to`]; [`Error::Profile`] when the outbox cannot be written.
    pub(crate) fn keep_held(
        &self,
        target: &Target,
        client_message_id: &str,
        request_id: &str,
        text: &str,
        users: Vec<auth_pb::UserWithDevices>,
        untrusted: &str,
    ) -> Result<String> {
        // Untrusted users are left out whole; of this user, at least this device stays.
        let trusted: Vec<_> = users
            .into_iter()
            .filter_map(|mut user| {
                if self.trusted_recipients(std::slice::from_ref(&user)).is_ok() {
                    return Some(user);
                }
                let is_me = user
                    .user
                    .as_ref()
                    .is_some_and(|u| u.user_id == self.account.user_id);
                is_me.then(|| {
                    user.devices
                        .retain(|device| device.device_id == self.account.device_id);
                    user
                })
            })
            .collect();
        let envelope = self.seal_to(target, client_message_id, text, &trusted)?;
        let message = QueuedMessage::new(
            &target.conversation_id,
            client_message_id,
            request_id,
            &envelope,
        );
        keep_held_message(&self.profile, message, untrusted)
    }

    /// Sends the kept messages once the user accepted keys (`chat trust`, `chat verify`): those
    /// held for keys not accepted yet are sealed again (for the devices now trusted) and sent,
    /// with every other kept message. One whose participants still have keys not accepted is
    /// held again. Nothing to do when none is held.
    ///
    /// # Errors
    /// As [`Session::flush`].
    pub async fn send_held(&self) -> Result<Option<Flushed>> {
        let turn = chains::sending_turn(&self.profile).await?;
        let mut all = queued(&self.profile)?;
        if all.iter().all(|m| m.held.is_none()) {
            return Ok(None);
        }
        for message in &mut all {
            message.held = None;
        }
        self.profile.write_file(OUTBOX, &all)?;
        Ok(Some(self.flush_with_turn(None, None, &turn).await?.into()))
    }

    /// Seals `text` for the conversation, keeps the envelope in the profile's outbox, and sends
    /// the conversation's kept messages, oldest first, this one last. A message stays kept
    /// while the server is unreachable or asks to wait ([`Error::Unavailable`], [`Error::Tls`]:
    /// `outcome` is that error, and
    /// [`Session::flush`], [`Session::send_kept`] or a live conversation sends it later) and is
    /// dropped once the server stored it or refused it for good. After a device-list mismatch
    /// the new message is sealed again once, as [`Session::send_prepared`] does.
    ///
    /// # Errors
    /// Before anything is kept, as [`Session::prepare_text`] (an [`Error::Unavailable`] only
    /// then: sending the text again cannot store it twice); a final refusal of the new message,
    /// as [`Session::send_text`]; [`Error::Untrusted`] when it stays kept behind (or as) a
    /// message held for keys not accepted yet; [`Error::Profile`] when the outbox cannot be
    /// written.
    pub async fn send_kept(&self, target: &Target, text: &str) -> Result<Delivery> {
        check_text(text)?;
        let turn = chains::sending_turn(&self.profile).await?;
        let client_message_id = uuid::Uuid::new_v4().to_string();
        let request_id = uuid::Uuid::new_v4().to_string();
        let conversation_id = &target.conversation_id;
        let users = self.participants(target, false).await?;
        let envelope = match self.seal_to(target, &client_message_id, text, &users) {
            Err(Error::Untrusted(reason)) => {
                let reason = self.keep_held(
                    target,
                    &client_message_id,
                    &request_id,
                    text,
                    users,
                    &reason,
                )?;
                return Err(Error::Untrusted(format!(
                    "not sent yet, and kept in this profile: {reason}. Once you accept them, that \
                     command sends it"
                )));
            }
            sealed => sealed?,
        };
        keep(
            &self.profile,
            QueuedMessage::new(conversation_id, &client_message_id, &request_id, &envelope),
        )?;
        let fresh = Fresh {
            target,
            client_message_id: &client_message_id,
            text,
        };
        let mut flushed = self
            .flush_with_turn(Some(conversation_id), Some(&fresh), &turn)
            .await?;
        let own = flushed
            .sent
            .iter()
            .position(|sent| sent.client_message_id == client_message_id);
        let outcome = if let Some(own) = own {
            Ok(flushed.sent.remove(own))
        } else if let Some(own) = flushed
            .dropped
            .iter()
            .position(|not_sent| not_sent.client_message_id == client_message_id)
        {
            let not_sent = flushed.dropped.remove(own);
            return Err(flushed
                .final_error
                .take()
                .unwrap_or_else(|| Error::usage(not_sent.reason)));
        } else if let Some(held) = flushed
            .held
            .iter()
            .find(|held| &held.conversation_id == conversation_id)
        {
            return Err(Error::Untrusted(format!(
                "not sent yet, and kept in this profile: {}. Once you accept them, chat trust \
                 sends it",
                held.reason
            )));
        } else {
            Err(flushed
                .stopped
                .take()
                .unwrap_or_else(|| Error::unavailable("the server did not answer".to_owned())))
        };
        Ok(Delivery {
            earlier: flushed.into(),
            outcome,
        })
    }

    /// Sends the kept messages (of one conversation, or all), oldest first, until the server
    /// is unreachable. One that a participant's keys not accepted yet hold back stays kept
    /// ([`Flushed::held`]), and so do the later ones of its conversation.
    ///
    /// # Errors
    /// [`Error::Auth`] when the session ended; [`Error::Profile`] for an unreadable outbox;
    /// [`Error::Unavailable`] when another send of this device keeps its turn too long.
    pub async fn flush(&self, conversation_id: Option<&str>) -> Result<Flushed> {
        let turn = chains::sending_turn(&self.profile).await?;
        Ok(self
            .flush_with_turn(conversation_id, None, &turn)
            .await?
            .into())
    }

    /// [`Session::flush`], with this device's turn held by the caller.
    async fn flush_with_turn(
        &self,
        conversation_id: Option<&str>,
        fresh: Option<&Fresh<'_>>,
        _turn: &chains::SendingTurn,
    ) -> Result<FlushedWithError> {
        let mut flushed = FlushedWithError::default();
        let kept: Vec<(String, String)> = queued(&self.profile)?
            .into_iter()
            .filter(|m| conversation_id.is_none_or(|id| m.conversation_id == id))
            .map(|m| (m.conversation_id, m.client_message_id))
            .collect();
        // Conversations whose earlier kept message waits for the user: the later ones are
        // chained after it, so they wait too.
        let mut waiting = BTreeSet::new();
        for (conversation, client_message_id) in kept {
            if waiting.contains(&conversation) {
                continue;
            }
            // Read again: sealing an earlier message again seals the later ones of its
            // conversation too.
            let Some(message) = kept_message(&self.profile, &client_message_id)? else {
                continue;
            };
            if let Some(reason) = &message.held {
                // Sent only once the user accepted the keys ([`Session::send_held`]).
                flushed.held.push(NotSent {
                    conversation_id: conversation.clone(),
                    client_message_id,
                    reason: reason.clone(),
                });
                waiting.insert(conversation);
                continue;
            }
            let is_fresh = fresh.is_some_and(|f| f.client_message_id == client_message_id);
            let (message, result) = self.deliver_resealing(message, fresh).await;
            match result {
                Ok(sent) => {
                    forget(&self.profile, &client_message_id)?;
                    flushed.sent.push(sent);
                }
                // A local problem (logged out, no keys given, an unreadable profile; a usage
                // error with a server status is the server's refusal): nothing is dropped; the
                // user fixes it and the next flush goes on.
                Err(error @ (Error::Auth(..) | Error::Usage(_, None) | Error::Profile(..))) => {
                    return Err(error);
                }
                // Unreachable, or a rate limit: the same envelope may be accepted later.
                Err(error @ (Error::Unavailable(..) | Error::Tls(..))) => {
                    let mut message = message;
                    message.attempts = message.attempts.saturating_add(1);
                    keep(&self.profile, message)?;
                    flushed.stopped = Some(error);
                    break;
                }
                // Not final: the user decides whether the new keys are accepted.
                Err(Error::Untrusted(reason)) => {
                    let reason = keep_held_message(&self.profile, message, &reason)?;
                    flushed.held.push(NotSent {
                        conversation_id: conversation.clone(),
                        client_message_id,
                        reason,
                    });
                    waiting.insert(conversation);
                }
                Err(error) => {
                    forget(&self.profile, &client_message_id)?;
                    flushed.dropped.push(NotSent {
                        conversation_id: message.conversation_id.clone(),
                        client_message_id,
                        reason: error.to_string(),
                    });
                    if is_fresh {
                        flushed.final_error = Some(error);
                    }
                }
            }
        }
        Ok(flushed)
    }

    /// Delivers a kept message; after a device-list mismatch, seals it (and the later kept
    /// messages of its conversation) again once for the current devices and delivers that.
    /// Returns the message as last kept, with the outcome.
    async fn deliver_resealing(
        &self,
        mut message: QueuedMessage,
        fresh: Option<&Fresh<'_>>,
    ) -> (QueuedMessage, Result<SentMessage>) {
        let mut resealed = false;
        loop {
            match self.deliver(&message).await {
                Err(Error::Refused {
                    code: Code::FailedPrecondition,
                    ..
                }) if !resealed => {
                    resealed = true;
                    let again = self.reseal_from(&message, fresh).await.and_then(|()| {
                        kept_message(&self.profile, &message.client_message_id)?
                            .ok_or_else(|| Error::Profile(format!("{OUTBOX}: a message vanished")))
                    });
                    match again {
                        Ok(again) => message = again,
                        Err(error) => return (message, Err(error)),
                    }
                }
                result => return (message, result),
            }
        }
    }

    /// Seals `first` and every later kept message of its conversation again for the
    /// conversation's current devices, each at its own chain position (none of them reached the
    /// server), `first` after the same predecessor as before and each later one after the one
    /// sealed again before it, so that the chain receivers check has neither gap nor fork; their
    /// texts are the new message's or opened from their envelopes. All are kept in one write,
    /// so the outbox never holds a chain half sealed again.
    ///
    /// # Errors
    /// [`Error::Usage`] when the profile does not know the conversation's participants; as
    /// [`Session::participants`], [`Session::open_own`] and [`Session::seal_at`].
    async fn reseal_from(&self, first: &QueuedMessage, fresh: Option<&Fresh<'_>>) -> Result<()> {
        let conversation_id = &first.conversation_id;
        let known = match fresh.filter(|f| &f.target.conversation_id == conversation_id) {
            Some(fresh) => Some(fresh.target.clone()),
            None => self.known_target(conversation_id)?,
        };
        let Some(target) = known else {
            return Err(Error::usage(
                "the conversation's devices changed, and this profile does not know its \
                 participants to seal the message again for them"
                    .to_owned(),
            ));
        };
        let users = self.participants(&target, true).await?;
        let mut all = queued(&self.profile)?;
        let start = all
            .iter()
            .position(|m| m.client_message_id == first.client_message_id)
            .unwrap_or(all.len());
        let mut previous = None;
        for message in all[start..]
            .iter_mut()
            .filter(|m| &m.conversation_id == conversation_id)
        {
            let original = message.envelope()?;
            let text = match fresh.filter(|f| f.client_message_id == message.client_message_id) {
                Some(fresh) => fresh.text.to_owned(),
                None => self.open_own(original.clone())?,
            };
            let position = chains::resealed_position(&original.into(), previous);
            let id = &message.client_message_id;
            let envelope = self.seal_at(&target, id, &text, &users, &position)?;
            chains::record_resealed(&self.profile, &position, &envelope)?;
            previous = Some(e2ee::sealed_link(&envelope)?.envelope_hash);
            *message = message.with_envelope(&envelope.into());
        }
        self.profile.write_file(OUTBOX, &all)
    }

    /// Sends a kept envelope once (the session's call retries a few times while unavailable).
    async fn deliver(&self, message: &QueuedMessage) -> Result<SentMessage> {
        let request = pb::SendMessageRequest {
            envelope: Some(message.envelope()?),
        };
        let response = self
            .call(request, |request| {
                let mut chat = self.chat.clone();
                async move { chat.send_message(request).await }
            })
            .await?;
        Ok(SentMessage {
            client_message_id: message.client_message_id.clone(),
            conversation_id: message.conversation_id.clone(),
            message_id: response.message_id,
            sequence: response.sequence,
            duplicate: response.duplicate,
        })
    }
}

/// The new message of [`Session::send_kept`], which may be sealed again.
struct Fresh<'a> {
    target: &'a Target,
    client_message_id: &'a str,
    text: &'a str,
}

/// [`Flushed`], with the error that refused the new message of [`Session::send_kept`].
#[derive(Default)]
struct FlushedWithError {
    sent: Vec<SentMessage>,
    dropped: Vec<NotSent>,
    held: Vec<NotSent>,
    stopped: Option<Error>,
    final_error: Option<Error>,
}

impl From<FlushedWithError> for Flushed {
    fn from(flushed: FlushedWithError) -> Self {
        Flushed {
            sent: flushed.sent,
            dropped: flushed.dropped,
            held: flushed.held,
            stopped: flushed.stopped,
        }
    }
}
