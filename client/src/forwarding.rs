//! History for the user's other devices: key forwarding (the design and its threat model are in
//! the `e2ee` crate, `forwarding.rs`).
//!
//! **Forwarding.** [`Session::forward_keys`] looks up the user's own devices (which pins them,
//! with a warning for a new one, as for any user), and for each other device that this device
//! trusts (pinned, not revoked, no pending change: the devices it would seal for), walks every
//! conversation from where it stopped last time (`forwarded.json`: per device and conversation,
//! the last sequence examined), and for each message that this device holds a wrapped key of and
//! the other device does not, re-wraps the content key for the other device, signs it and uploads
//! it (`ForwardKeys`, 500 keys a call). A key that was itself forwarded to this device (by a
//! device it trusts, and verified as for reading) is forwarded on the same way, never back to
//! the device it came from, so that history reaches a third device from any device that reads it. Only messages this device verified are forwarded (the
//! sender's signature is checked with its pinned key first). The CLI runs it before `history`,
//! `conversations` and `chat`, and on `chat forward-keys`; it costs two calls when nothing is new.
//!
//! **Reading.** A message delivered without a wrapped key of this device but with
//! `forwarded_keys` is opened with one of them ([`Session::forwarded_candidates`]): only a key
//! forwarded by another device of this user that this device trusts (its pinned Ed25519 key, not
//! revoked when the key was stored) is tried, then [`e2ee::open_forwarded`] checks the
//! forwarder's signature and everything [`e2ee::open`] checks of the message itself. An open
//! live conversation ([`crate::Live`]) lists again the messages it said it cannot read when its
//! stream says keys were forwarded to this device (`KeysForwarded`; `unreadable.rs`).
//!
//! Not done: a message this device could not verify when it walked past it (its sender's key
//! pending, say, or its forwarded key not there yet) is not forwarded later (the walk's position
//! has moved on).

use std::collections::BTreeMap;

use proto::{auth::v1 as auth_pb, chat::v1 as pb};
use serde::Serialize;

use crate::{
    Result, Session,
    contacts::{SenderKey, pinned_sender_key},
};

/// What the forwarding state file holds: per recipient device, per conversation, the last
/// sequence examined.
type Cursors = BTreeMap<String, BTreeMap<String, u64>>;

const CURSORS: &str = "forwarded.json";
/// Most keys per ForwardKeys call (the service's documented limit).
pub const KEYS_PER_CALL: usize = 500;
const PAGE: u32 = 200;

/// What [`Session::forward_keys`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forwarded {
    /// The devices keys were forwarded to (those trusted, other than this one).
    pub devices: Vec<String>,
    /// Keys stored by the server.
    pub keys: u64,
    /// Messages examined.
    pub examined: u64,
}

/// One key a device was given by another device of its user, with that device's pinned key.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) forwarded: e2ee::ForwardedKey,
    pub(crate) forwarder_signing_key: Vec<u8>,
}

impl Session {
    /// Forwards, to every other device of this user that this device trusts, the keys of the
    /// messages it can read and they were not encrypted for (see the module docs).
    ///
    /// # Errors
    /// [`crate::Error::Auth`] when the session ended, [`crate::Error::Unavailable`], a refusal
    /// of the server, or [`crate::Error::Profile`] when the state cannot be saved.
    pub async fn forward_keys(&self) -> Result<Forwarded> {
        let me = self.user_by_id(&self.account.user_id.clone(), true).await?;
        let targets = self.trusted_own_devices(&me)?;
        let mut done = Forwarded {
            devices: targets.iter().map(|t| t.device_id.clone()).collect(),
            ..Forwarded::default()
        };
        if targets.is_empty() {
            return Ok(done);
        }
        let mut cursors: Cursors = self.profile.read_file(CURSORS)?.unwrap_or_default();
        for conversation in self.conversations().await? {
            for target in &targets {
                let cursor = cursors
                    .get(&target.device_id)
                    .and_then(|c| c.get(&conversation.conversation_id))
                    .copied()
                    .unwrap_or(0);
                if conversation.last_sequence <= cursor {
                    continue;
                }
                let (examined, stored, reached) = self
                    .forward_conversation(&conversation.conversation_id, target, cursor)
                    .await?;
                done.examined += examined;
                done.keys += stored;
                cursors
                    .entry(target.device_id.clone())
                    .or_default()
                    .insert(conversation.conversation_id.clone(), reached);
                self.profile.write_file(CURSORS, &cursors)?;
            }
        }
        Ok(done)
    }

    /// Forwards the keys of one conversation's messages after `from` to `target`; returns the
    /// messages examined, the keys stored and the last sequence examined.
    async fn forward_conversation(
        &self,
        conversation_id: &str,
        target: &e2ee::RecipientDevice,
        mut from: u64,
    ) -> Result<(u64, u64, u64)> {
        let (mut examined, mut stored) = (0, 0);
        let mut batch = Vec::new();
        loop {
            let request = pb::ListMessagesRequest {
                conversation_id: conversation_id.to_owned(),
                direction: pb::Direction::Forward as i32,
                from_sequence: from,
                page_size: PAGE,
                include_all_recipients: true,
            };
            let page = self
                .call(request, |request| {
                    let mut chat = self.chat.clone();
                    async move { chat.list_messages(request).await }
                })
                .await?;
            for message in page.messages {
                examined += 1;
                from = from.max(message.sequence);
                if let Some(key) = self.forward_one(message, target).await {
                    batch.push(key);
                }
                if batch.len() == KEYS_PER_CALL {
                    stored += self
                        .upload(conversation_id, std::mem::take(&mut batch))
                        .await?;
                }
            }
            if page.next_from_sequence == 0 {
                break;
            }
        }
        if !batch.is_empty() {
            stored += self.upload(conversation_id, batch).await?;
        }
        Ok((examined, stored, from))
    }

    /// The key of `message` re-wrapped for `target`, when `target` has none and the message
    /// verifies: from this device's own wrapped key, or else from a key another device of this
    /// user forwarded to it (a device it trusts, checked as for reading; never back to that
    /// device); else nothing.
    async fn forward_one(
        &self,
        mut message: pb::Message,
        target: &e2ee::RecipientDevice,
    ) -> Option<pb::ForwardedKey> {
        let envelope = message.envelope.as_ref()?;
        let device_id = self.account.device_id.clone();
        let target_is_recipient = envelope
            .wrapped_keys
            .iter()
            .any(|key| key.device_id == target.device_id);
        if target_is_recipient {
            return None;
        }
        let holds_own_key = envelope
            .wrapped_keys
            .iter()
            .any(|key| key.device_id == device_id && !key.wrapped_key.is_empty());
        let forwarded_to_me: Vec<Candidate> = if holds_own_key {
            Vec::new()
        } else {
            let candidates = self.forwarded_candidates(&message).await;
            let onward: Vec<Candidate> = candidates
                .into_iter()
                .filter(|candidate| candidate.forwarded.forwarder_device_id != target.device_id)
                .collect();
            if onward.is_empty() {
                return None;
            }
            onward
        };
        let envelope = message.envelope.as_mut()?;
        let sent_at = message.sent_at.map_or(0, |t| t.seconds);
        let sender_key = self
            .signing_key(
                &envelope.sender_user_id,
                &envelope.sender_device_id,
                sent_at,
            )
            .await
            .ok()?;
        // Only this device's own entry, if any: the others carry no wrapped key.
        envelope
            .wrapped_keys
            .retain(|key| key.device_id == device_id);
        let keys = self.shared_keys().ok()?.clone();
        let user_id = self.account.user_id.clone();
        let message_id = message.message_id.clone();
        let target = target.clone();
        let received = e2ee::ReceivedMessage::try_from(message).ok()?;
        // RSA work off the runtime's threads, as for opening.
        tokio::task::spawn_blocking(move || {
            let forwarder = e2ee::Forwarder {
                user_id: &user_id,
                device_id: &device_id,
                keys: &keys,
            };
            if holds_own_key {
                return e2ee::forward_key(&received, &message_id, &forwarder, &sender_key, &target)
                    .ok();
            }
            forwarded_to_me.iter().find_map(|candidate| {
                e2ee::forward_forwarded_key(
                    &received,
                    &message_id,
                    &candidate.forwarded,
                    &candidate.forwarder_signing_key,
                    &forwarder,
                    &sender_key,
                    &target,
                )
                .ok()
            })
        })
        .await
        .ok()?
        .map(forwarded_key_pb)
    }

    async fn upload(&self, conversation_id: &str, keys: Vec<pb::ForwardedKey>) -> Result<u64> {
        let request = pb::ForwardKeysRequest {
            conversation_id: conversation_id.to_owned(),
            keys,
        };
        let response = self
            .call(request, |request| {
                let mut chat = self.chat.clone();
                async move { chat.forward_keys(request).await }
            })
            .await?;
        Ok(u64::from(response.stored_count))
    }

    /// The user's other devices that this device trusts: pinned with exactly the keys listed,
    /// not revoked, no pending change (the devices it would seal for).
    fn trusted_own_devices(
        &self,
        me: &auth_pb::UserWithDevices,
    ) -> Result<Vec<e2ee::RecipientDevice>> {
        let contacts = self.profile.contacts()?;
        let Some(contact) = contacts.get(&self.account.user_id) else {
            return Ok(Vec::new());
        };
        Ok(me
            .devices
            .iter()
            .filter(|device| device.device_id != self.account.device_id)
            .filter(|device| !contact.pending.contains_key(&device.device_id))
            .filter_map(|device| {
                let keys = device.keys.as_ref()?;
                let pin = contact.keys.get(&device.device_id)?;
                let same = pin.revoked_at.is_none()
                    && pin.encryption_fingerprint
                        == hex::encode(e2ee::fingerprint(&keys.encryption_public_key))
                    && pin.signing_key == hex::encode(&keys.signing_public_key);
                same.then(|| e2ee::RecipientDevice {
                    device_id: device.device_id.clone(),
                    encryption_spki: keys.encryption_public_key.clone(),
                })
            })
            .collect())
    }

    /// The keys forwarded to this device with `message` that it may use: each from another
    /// device of its own user whose key it pins, not revoked when the key was stored. Empty
    /// when the message carries a wrapped key of this device (that one is used) or none
    /// qualifies.
    pub(crate) async fn forwarded_candidates(&self, message: &pb::Message) -> Vec<Candidate> {
        let own_key = message.envelope.as_ref().is_some_and(|envelope| {
            envelope
                .wrapped_keys
                .iter()
                .any(|key| key.device_id == self.account.device_id && !key.wrapped_key.is_empty())
        });
        if own_key || message.forwarded_keys.is_empty() {
            return Vec::new();
        }
        let mut candidates = Vec::new();
        for forwarded in &message.forwarded_keys {
            if forwarded.forwarder_user_id != self.account.user_id
                || forwarded.forwarder_device_id == self.account.device_id
            {
                continue;
            }
            let at = forwarded.forwarded_at.map_or(0, |t| t.seconds);
            let Some(key) = self
                .own_device_key(&forwarded.forwarder_device_id, at)
                .await
            else {
                continue;
            };
            candidates.push(Candidate {
                forwarded: forwarded_key_of(message, forwarded),
                forwarder_signing_key: key,
            });
        }
        candidates
    }

    /// The pinned Ed25519 key of another device of this user, refused when it was revoked
    /// before `at` or is not accepted (the user's devices are looked up again once when it is
    /// unknown).
    async fn own_device_key(&self, device_id: &str, at: i64) -> Option<Vec<u8>> {
        let user_id = self.account.user_id.clone();
        for fresh in [false, true] {
            if self.user_by_id(&user_id, fresh).await.is_err() {
                continue;
            }
            let contacts = self.profile.contacts().ok()?;
            match pinned_sender_key(&contacts, &user_id, device_id, at) {
                SenderKey::Trusted(key) => return Some(key),
                SenderKey::Refused(_) => return None,
                SenderKey::Unknown => {}
            }
        }
        None
    }
}

/// Opens `received` with the first of `candidates` that opens it ([`e2ee::open_forwarded`]);
/// the error of the last one tried when none does.
pub(crate) fn open_with_forwarded(
    received: &e2ee::ReceivedMessage,
    message_id: &str,
    candidates: &[Candidate],
    my_device_id: &str,
    my_keys: &e2ee::DeviceKeys,
    sender_signing_key: &[u8],
) -> std::result::Result<e2ee::Opened, e2ee::Error> {
    let mut last = e2ee::Error::NoKeyForThisDevice;
    for candidate in candidates {
        match e2ee::open_forwarded(
            received,
            message_id,
            &candidate.forwarded,
            my_device_id,
            my_keys,
            sender_signing_key,
            &candidate.forwarder_signing_key,
        ) {
            Ok(opened) => return Ok(opened),
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn forwarded_key_pb(key: e2ee::ForwardedKey) -> pb::ForwardedKey {
    pb::ForwardedKey {
        message_id: key.message_id,
        recipient_device_id: key.recipient_device_id,
        recipient_key_fingerprint: key.recipient_key_fingerprint,
        wrapped_key: key.wrapped_key,
        signature: key.signature,
        ..pb::ForwardedKey::default()
    }
}

/// The e2ee form of a delivered forwarded key; the message's own id and conversation are what
/// the signature must cover.
fn forwarded_key_of(message: &pb::Message, key: &pb::ForwardedKey) -> e2ee::ForwardedKey {
    e2ee::ForwardedKey {
        conversation_id: message.conversation_id.clone(),
        message_id: message.message_id.clone(),
        forwarder_user_id: key.forwarder_user_id.clone(),
        forwarder_device_id: key.forwarder_device_id.clone(),
        recipient_device_id: key.recipient_device_id.clone(),
        recipient_key_fingerprint: key.recipient_key_fingerprint.clone(),
        wrapped_key: key.wrapped_key.clone(),
        signature: key.signature.clone(),
    }
}
