//! What this device can do about a message without the server: seal it for the devices it
//! pinned (`chat send` during an outage) and open its own kept envelopes again (`chat pending`,
//! and sealing a kept message again after a device-list mismatch).
//!
//! Sealing offline uses only what the profile trusts already: the conversation as last opened
//! (a contact's direct conversation, a group in `groups.json`), the participants' pinned devices
//! that are not revoked, with the key bytes kept beside their pins. Nothing is sealed for a
//! participant with keys not accepted yet, as online. The pins may be stale (a device added
//! meanwhile): the server checks every envelope's recipients and refuses a stale list with a
//! device-list mismatch, and the kept message is then sealed again for the current devices
//! ([`crate::outbox`]), so a stale pin delays a message but never seals it for the wrong devices.

use proto::auth::v1 as auth_pb;
use serde::Serialize;

use crate::{
    Error, Result, Session, Target, TargetKind, chains, check_text,
    outbox::{self, QueuedMessage},
    profile::{Contact, same_username},
};

/// A kept message as `chat pending` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PendingMessage {
    /// The conversation.
    pub conversation_id: String,
    /// Who it goes to, as this profile knows the conversation (`bob`, `#friends`).
    pub to: Option<String>,
    /// Its client message id.
    pub client_message_id: String,
    /// When it was kept (Unix seconds).
    pub queued_at: i64,
    /// How many times it was sent without an answer.
    pub attempts: u32,
    /// Its text, opened from the envelope with this device's keys; `None` when it does not
    /// open here (see `not_opened`).
    pub text: Option<String>,
    /// Why the text is not shown, when it is not.
    pub not_opened: Option<String>,
    /// Why it waits for the user (a participant's new keys are not accepted yet), when it
    /// does; otherwise it waits for the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// What [`Session::keep_offline`] did.
#[derive(Debug)]
pub enum KeptOffline {
    /// Sealed for the pinned devices and kept.
    Kept(QueuedMessage),
    /// Nothing sealed: the profile does not know the participants' devices (why, as the end of
    /// a sentence).
    NotKnown(String),
}

/// Who a message to a target would be sealed for, from the profile alone.
pub(crate) enum KnownParticipants {
    /// The conversation and its participants with their pinned devices.
    Known(Target, Vec<auth_pb::UserWithDevices>),
    /// The profile does not know enough: why, as the end of a sentence.
    Unknown(String),
}

impl Session {
    /// Seals `text` for `name` (a username, `#name` or `#group-id`) without the server, for the
    /// participants' devices this profile pinned (`offline.rs`), and keeps it in the outbox;
    /// [`Session::flush`] or [`Session::send_kept`] sends it once the server answers (sealed
    /// again for the current devices if the pins were stale).
    ///
    /// # Errors
    /// [`Error::Untrusted`] when a participant has keys not accepted yet; [`Error::Usage`] for
    /// an empty text; [`Error::Profile`]; [`Error::Unavailable`] when another send of this
    /// device keeps its turn too long.
    pub async fn keep_offline(&self, name: &str, text: &str) -> Result<KeptOffline> {
        check_text(text)?;
        let (target, users) = match self.known_participants(name)? {
            KnownParticipants::Known(target, users) => (target, users),
            KnownParticipants::Unknown(why) => return Ok(KeptOffline::NotKnown(why)),
        };
        let _turn = chains::sending_turn(&self.profile).await?;
        let client_message_id = uuid::Uuid::new_v4().to_string();
        let envelope = self.seal_to(&target, &client_message_id, text, &users)?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let message = QueuedMessage::new(
            &target.conversation_id,
            &client_message_id,
            &request_id,
            &envelope,
        );
        outbox::keep(&self.profile, message.clone())?;
        Ok(KeptOffline::Kept(message))
    }

    /// The kept messages, oldest first, each with its text opened with this device's keys.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable outbox; [`Error::Usage`] without the keys.
    pub fn pending(&self) -> Result<Vec<PendingMessage>> {
        self.keys()?;
        let mut pending = Vec::new();
        for message in outbox::queued(&self.profile)? {
            let opened = message.envelope().and_then(|e| self.open_own(e));
            let to = self
                .known_target(&message.conversation_id)?
                .map(|target| match target.kind {
                    crate::TargetKind::Direct { username, .. } => username,
                    crate::TargetKind::Group { name, .. } => format!("#{name}"),
                });
            pending.push(PendingMessage {
                conversation_id: message.conversation_id,
                to,
                client_message_id: message.client_message_id,
                queued_at: message.queued_at,
                attempts: message.attempts,
                held: message.held,
                not_opened: opened.as_ref().err().map(ToString::to_string),
                text: opened.ok(),
            });
        }
        Ok(pending)
    }

    /// The target named `name` (as `chat send` takes it: a username, `#name` or `#group-id`)
    /// and its participants, as this profile last saw them.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable profile file.
    pub(crate) fn known_participants(&self, name: &str) -> Result<KnownParticipants> {
        let contacts = self.profile.contacts()?;
        let (target, user_ids) = match name.strip_prefix('#') {
            Some(group) => match self.known_group(group)? {
                Some(found) => found,
                None => {
                    return Ok(KnownParticipants::Unknown(format!(
                        "this profile has not seen the members of #{group} yet"
                    )));
                }
            },
            None => {
                let Some((user_id, contact, conversation_id)) =
                    contacts.iter().find_map(|(user_id, contact)| {
                        let conversation_id = contact.direct_conversation_id.as_ref()?;
                        same_username(&contact.username, name).then_some((
                            user_id,
                            contact,
                            conversation_id,
                        ))
                    })
                else {
                    return Ok(KnownParticipants::Unknown(format!(
                        "this profile has not exchanged a message with {name} yet and knows \
                         none of their devices"
                    )));
                };
                let target = Target {
                    conversation_id: conversation_id.clone(),
                    kind: TargetKind::Direct {
                        user_id: user_id.clone(),
                        username: contact.username.clone(),
                    },
                };
                (target, vec![self.account.user_id.clone(), user_id.clone()])
            }
        };
        let mut users = Vec::with_capacity(user_ids.len());
        for user_id in user_ids {
            match contacts.get(&user_id) {
                Some(contact) => match pinned_user(&user_id, contact) {
                    Some(user) => users.push(user),
                    None => {
                        return Ok(KnownParticipants::Unknown(format!(
                            "this profile has not kept the keys of {}'s devices yet",
                            contact.username
                        )));
                    }
                },
                // Only this device is known of its own user: sealed for itself below
                // (`observed_devices` adds it), as online.
                None if user_id == self.account.user_id => users.push(auth_pb::UserWithDevices {
                    user: Some(auth_pb::User {
                        user_id,
                        username: self.account.username.clone(),
                        ..auth_pb::User::default()
                    }),
                    devices: Vec::new(),
                }),
                None => {
                    return Ok(KnownParticipants::Unknown(
                        "this profile knows none of the devices of a participant".to_owned(),
                    ));
                }
            }
        }
        Ok(KnownParticipants::Known(target, users))
    }

    /// The target of a kept message's conversation, from the profile: a group this device
    /// pinned, or the direct conversation of a contact. `None` when the profile does not know it.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable profile file.
    pub(crate) fn known_target(&self, conversation_id: &str) -> Result<Option<Target>> {
        if let Some((target, _)) = self.known_group(conversation_id)? {
            return Ok(Some(target));
        }
        let contacts = self.profile.contacts()?;
        Ok(contacts.iter().find_map(|(user_id, contact)| {
            (contact.direct_conversation_id.as_deref() == Some(conversation_id)).then(|| Target {
                conversation_id: conversation_id.to_owned(),
                kind: TargetKind::Direct {
                    user_id: user_id.clone(),
                    username: contact.username.clone(),
                },
            })
        }))
    }

    /// Remembers the direct conversation with `user_id` (what [`Session::resolve`] opened).
    pub(crate) fn remember_direct_conversation(
        &self,
        user_id: &str,
        conversation_id: &str,
    ) -> Result<()> {
        let mut contacts = self.profile.contacts()?;
        let Some(contact) = contacts.get_mut(user_id) else {
            return Ok(());
        };
        if contact.direct_conversation_id.as_deref() == Some(conversation_id) {
            return Ok(());
        }
        contact.direct_conversation_id = Some(conversation_id.to_owned());
        self.profile.save_contacts(&contacts)
    }

    /// The text of an envelope this device sealed (it seals for itself too), opened with its
    /// own keys: what `chat pending` shows, and what a kept message is sealed again from.
    ///
    /// # Errors
    /// [`Error::Usage`] without the keys; [`Error::Crypto`] when it does not open (not sealed
    /// by this device with its current keys); [`Error::Profile`] when the text is not UTF-8.
    pub(crate) fn open_own(&self, envelope: proto::chat::v1::Envelope) -> Result<String> {
        let keys = self.keys()?;
        let signing_key = keys.public_keys().signing_public_key;
        let mut envelope = e2ee::Envelope::from(envelope);
        // The server computes the inclusion proofs of the recipients tree; here they are
        // computed from the envelope itself, as the server would.
        let check = envelope.verify_as_sent(&signing_key)?;
        for (wrapped, inclusion) in envelope.wrapped_keys.iter_mut().zip(check.inclusions) {
            wrapped.leaf_index = inclusion.leaf_index;
            wrapped.inclusion_proof = inclusion.proof;
        }
        let recipient_count = u32::try_from(envelope.wrapped_keys.len()).unwrap_or(u32::MAX);
        let received = e2ee::ReceivedMessage {
            envelope,
            recipients_digest: check.recipients_digest.to_vec(),
            recipient_count,
        };
        let opened = e2ee::open(&received, &self.account.device_id, keys, &signing_key)?;
        String::from_utf8(opened.plaintext)
            .map_err(|_| Error::Profile("a kept message is not UTF-8 text".to_owned()))
    }

    /// A group of `groups.json` by id, else by its name if only one has it, with its members.
    fn known_group(&self, group: &str) -> Result<Option<(Target, Vec<String>)>> {
        let groups = self.profile.groups()?;
        let found = groups.get_key_value(group).or_else(|| {
            let mut named = groups.iter().filter(|(_, pin)| pin.name == group);
            match (named.next(), named.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        });
        Ok(found.map(|(group_id, pin)| {
            let target = Target {
                conversation_id: group_id.clone(),
                kind: TargetKind::Group {
                    group_id: group_id.clone(),
                    name: pin.name.clone(),
                },
            };
            (target, pin.members.keys().cloned().collect())
        }))
    }
}

/// A contact as the server would list them: the pinned devices not revoked, with their keys.
/// `None` when a device's key bytes were not kept (a pin older than them).
fn pinned_user(user_id: &str, contact: &Contact) -> Option<auth_pb::UserWithDevices> {
    let mut devices = Vec::new();
    for (device_id, pin) in &contact.keys {
        if pin.revoked_at.is_some() {
            continue;
        }
        let encryption_public_key = hex::decode(&pin.encryption_key).ok()?;
        let signing_public_key = hex::decode(&pin.signing_key).ok()?;
        // The kept bytes must be the pinned ones (the file is the profile's, but a pin is only
        // ever trusted by its fingerprint).
        if encryption_public_key.is_empty()
            || hex::encode(e2ee::fingerprint(&encryption_public_key)) != pin.encryption_fingerprint
        {
            return None;
        }
        devices.push(auth_pb::Device {
            device_id: device_id.clone(),
            keys: Some(auth_pb::DeviceKeys {
                encryption_public_key,
                signing_public_key,
            }),
            ..auth_pb::Device::default()
        });
    }
    Some(auth_pb::UserWithDevices {
        user: Some(auth_pb::User {
            user_id: user_id.to_owned(),
            username: contact.username.clone(),
            ..auth_pb::User::default()
        }),
        devices,
    })
}
