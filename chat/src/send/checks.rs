//! Sending: everything a send is checked for before the committer (`commit.rs`) makes it durable.
//! SendMessage and sends on OpenStream both go through [`Sending::send`].
//!
//! Order of checks: the envelope's shape and limits, and that it names the caller as sender
//! (cheap, no I/O); participation (NOT_FOUND otherwise); the recipient set against the
//! participants' devices (cached; a send the cache refuses is checked again against auth's
//! current lists); the signature against the sender device's published key.
//!
//! A retry of a stored message is answered with the original: by the committer, which finds it
//! in the same round trip as the insert, or, when the devices changed since and the recipient set
//! no longer matches, by a lookup before the mismatch is reported. Looking it up first on every
//! send cost an idle sender a database round trip (about 0.3 ms of its 5 ms ack on the benchmark
//! machine) to find what is almost never there.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use common::credentials::Credentials;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Error,
    config::Limits,
    error::DeviceListMismatch,
    ids::{ConversationId, DeviceId, UserId, parse_canonical_uuid},
    membership::{
        devices::{ActiveDevice, Directory},
        groups::Membership,
    },
    message::{Caller, Committed, StoredMessage, V2Fields, to_u64},
    send::commit::{Committer, NewMessage, RecipientKey},
};

/// Longest client message id, in characters (the database checks the same).
pub const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 64;

/// The send path: checks, then the committer.
#[derive(Clone)]
pub struct Sending {
    db: PgPool,
    membership: Membership,
    directory: Directory,
    committer: Committer,
    limits: Limits,
}

impl Sending {
    /// The send path over these parts.
    pub fn new(
        db: PgPool,
        membership: Membership,
        directory: Directory,
        committer: Committer,
        limits: Limits,
    ) -> Self {
        Self {
            db,
            membership,
            directory,
            committer,
            limits,
        }
    }

    /// Checks `envelope` and commits it; see the module docs for the order of checks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::ConversationNotFound`], [`Error::SignatureInvalid`],
    /// [`Error::DeviceListMismatch`], [`Error::ClientMessageIdReused`], or a failure of auth or
    /// the database.
    pub async fn send(
        &self,
        credentials: &Credentials,
        caller: Caller,
        envelope: e2ee::Envelope,
    ) -> Result<Committed, Error> {
        let checked = check_envelope(&envelope, caller, &self.limits)?;
        let mut users = self
            .membership
            .authorize(credentials, checked.conversation, caller.user)
            .await?;
        // Cached members and device lists may trail the group service and auth by their event
        // streams' delay: a send they refuse is checked again against current answers before
        // it is refused, so a client that refetched recipients is never refused for our lag.
        let mut devices = self.directory.active_devices(credentials, &users).await?;
        let mut sender_key = check_devices(&checked.recipients, &devices, caller);
        if sender_key.is_err() {
            users = self
                .membership
                .authorize_current(credentials, checked.conversation, caller.user)
                .await?;
            devices = self.directory.current_devices(credentials, &users).await?;
            sender_key = check_devices(&checked.recipients, &devices, caller);
        }
        let sender_key = match sender_key {
            Ok(key) => key,
            Err(mismatch) => {
                return match find_stored(&self.db, caller.device, &envelope.client_message_id)
                    .await?
                {
                    Some(stored) => stored.answer_retry(checked.conversation, &envelope.signature),
                    None => Err(mismatch),
                };
            }
        };
        let mut recipients = checked.recipients;
        let check = envelope
            .verify_as_sent(&sender_key)
            .map_err(|error| match error {
                e2ee::Error::Malformed { what } => Error::InvalidArgument(what.to_owned()),
                other => Error::SignatureInvalid(other.to_string()),
            })?;
        // V2: each entry's place in the recipients tree, delivered with it so that its device
        // can check its wrapped key was signed before decrypting it.
        for (recipient, inclusion) in recipients.iter_mut().zip(check.inclusions) {
            recipient.leaf_index = inclusion.leaf_index;
            recipient.inclusion_proof = inclusion.proof;
        }
        let recipient_count = if envelope.suite == e2ee::SUITE_V2 {
            u32::try_from(recipients.len()).unwrap_or(u32::MAX)
        } else {
            0
        };
        self.committer
            .commit(NewMessage {
                id: Uuid::now_v7(),
                conversation: checked.conversation,
                sender_user: caller.user,
                sender_device: caller.device,
                client_message_id: envelope.client_message_id,
                nonce: envelope.nonce,
                ciphertext: envelope.ciphertext,
                key_commitment: envelope.key_commitment,
                signature: envelope.signature,
                recipients_digest: check.recipients_digest.to_vec(),
                suite: i16::try_from(envelope.suite).unwrap_or(i16::MAX),
                v2: V2Fields {
                    sender_counter: envelope.sender_counter,
                    previous_envelope_hash: envelope.previous_envelope_hash,
                    sender_time_ms: envelope.sender_time_ms,
                    recipient_count,
                },
                recipients,
            })
            .await
    }
}

/// What the shape check learns about an envelope.
#[derive(Debug)]
struct CheckedEnvelope {
    conversation: ConversationId,
    recipients: Vec<RecipientKey>,
}

/// Checks sizes, formats and the sender fields, without I/O.
fn check_envelope(
    envelope: &e2ee::Envelope,
    caller: Caller,
    limits: &Limits,
) -> Result<CheckedEnvelope, Error> {
    let invalid = |message: String| Err(Error::InvalidArgument(message));
    check_suite_fields(envelope)?;
    let conversation = ConversationId(parse_canonical_uuid(
        "envelope.conversation_id",
        &envelope.conversation_id,
    )?);
    let sender_user = parse_canonical_uuid("envelope.sender_user_id", &envelope.sender_user_id)?;
    let sender_device =
        parse_canonical_uuid("envelope.sender_device_id", &envelope.sender_device_id)?;
    if sender_user != caller.user.0 || sender_device != caller.device.0 {
        return Err(Error::SignatureInvalid(
            "the envelope names another sender than the caller's user and device".to_owned(),
        ));
    }
    let id_chars = envelope.client_message_id.chars().count();
    if !(1..=MAX_CLIENT_MESSAGE_ID_CHARS).contains(&id_chars) {
        return invalid(format!(
            "client_message_id must have 1 to {MAX_CLIENT_MESSAGE_ID_CHARS} characters"
        ));
    }
    let fixed = [
        ("nonce", envelope.nonce.len(), e2ee::NONCE_LEN),
        (
            "key_commitment",
            envelope.key_commitment.len(),
            e2ee::KEY_COMMITMENT_LEN,
        ),
        ("signature", envelope.signature.len(), e2ee::SIGNATURE_LEN),
    ];
    for (field, actual, expected) in fixed {
        if actual != expected {
            return invalid(format!("{field} must be {expected} bytes"));
        }
    }
    if !(e2ee::TAG_LEN..=limits.max_ciphertext_bytes).contains(&envelope.ciphertext.len()) {
        return invalid(format!(
            "ciphertext must have {} to {} bytes",
            e2ee::TAG_LEN,
            limits.max_ciphertext_bytes
        ));
    }
    if !(1..=limits.max_wrapped_keys).contains(&envelope.wrapped_keys.len()) {
        return invalid(format!(
            "a message needs 1 to {} wrapped keys",
            limits.max_wrapped_keys
        ));
    }
    let mut recipients = Vec::with_capacity(envelope.wrapped_keys.len());
    let mut seen = HashSet::with_capacity(envelope.wrapped_keys.len());
    for key in &envelope.wrapped_keys {
        let device = DeviceId(parse_canonical_uuid(
            "wrapped_keys.device_id",
            &key.device_id,
        )?);
        if !seen.insert(device) {
            return invalid(format!("device {device} has two wrapped keys"));
        }
        if key.key_fingerprint.len() != e2ee::DIGEST_LEN {
            return invalid("wrapped_keys.key_fingerprint must be 32 bytes".to_owned());
        }
        if !(1..=limits.max_wrapped_key_bytes).contains(&key.wrapped_key.len()) {
            return invalid(format!(
                "wrapped_keys.wrapped_key must have 1 to {} bytes",
                limits.max_wrapped_key_bytes
            ));
        }
        recipients.push(RecipientKey {
            device,
            key_fingerprint: key.key_fingerprint.clone(),
            wrapped_key: key.wrapped_key.clone(),
            leaf_index: 0,
            inclusion_proof: Vec::new(),
        });
    }
    Ok(CheckedEnvelope {
        conversation,
        recipients,
    })
}

/// The suite and the fields only it has: V2's chain fields (a counter from 1, a 32-byte
/// previous hash) and padded ciphertext (a power of two of at least 256 bytes); none of them
/// in V1, whose signature would not cover them.
fn check_suite_fields(envelope: &e2ee::Envelope) -> Result<(), Error> {
    let invalid = |message: &str| Err(Error::InvalidArgument(message.to_owned()));
    match envelope.suite {
        e2ee::SUITE_V1 => {
            if envelope.sender_counter != 0
                || !envelope.previous_envelope_hash.is_empty()
                || envelope.sender_time_ms != 0
            {
                return invalid(
                    "a CIPHER_SUITE_V1 envelope has no sender counter, previous hash or time",
                );
            }
        }
        e2ee::SUITE_V2 => {
            if envelope.sender_counter == 0 {
                return invalid("sender_counter starts at 1");
            }
            if envelope.previous_envelope_hash.len() != e2ee::DIGEST_LEN {
                return invalid("previous_envelope_hash must be 32 bytes");
            }
            let length = envelope.ciphertext.len();
            if length < e2ee::MIN_PADDED_CIPHERTEXT || !length.is_power_of_two() {
                return invalid(
                    "a CIPHER_SUITE_V2 ciphertext is a power of two of at least 256 bytes",
                );
            }
        }
        _ => return invalid("suite must be CIPHER_SUITE_V1 or CIPHER_SUITE_V2"),
    }
    Ok(())
}

/// Checks the recipients against `devices`; returns the sending device's signing key.
fn check_devices(
    recipients: &[RecipientKey],
    devices: &HashMap<UserId, Arc<[ActiveDevice]>>,
    caller: Caller,
) -> Result<Vec<u8>, Error> {
    let sender_key = devices
        .get(&caller.user)
        .and_then(|own| own.iter().find(|device| device.device_id == caller.device))
        .map(|device| device.signing_public_key.clone())
        .ok_or_else(|| {
            Error::SignatureInvalid("the sending device has no published keys".to_owned())
        })?;
    check_recipients(recipients, devices, caller.device)?;
    Ok(sender_key)
}

/// Checks that `recipients` are exactly the current devices of every participant, the sending
/// device excepted: it may wrap for itself (to read its own messages in history) or not.
fn check_recipients(
    recipients: &[RecipientKey],
    devices: &HashMap<UserId, Arc<[ActiveDevice]>>,
    sender_device: DeviceId,
) -> Result<(), Error> {
    let current: HashMap<DeviceId, &[u8]> = devices
        .values()
        .flat_map(|devices| devices.iter())
        .map(|device| {
            (
                device.device_id,
                device.encryption_key_fingerprint.as_slice(),
            )
        })
        .collect();
    let mut mismatch = DeviceListMismatch::default();
    let mut covered = HashSet::with_capacity(recipients.len());
    for recipient in recipients {
        let Some(fingerprint) = current.get(&recipient.device) else {
            mismatch.extra.push(recipient.device.to_string());
            continue;
        };
        // A stale entry is there, with the wrong key: stale, not missing.
        covered.insert(recipient.device);
        if *fingerprint != recipient.key_fingerprint.as_slice() {
            mismatch.stale.push(recipient.device.to_string());
        }
    }
    mismatch.missing = current
        .keys()
        .filter(|device| **device != sender_device && !covered.contains(device))
        .map(ToString::to_string)
        .collect();
    if mismatch.is_empty() {
        return Ok(());
    }
    mismatch.missing.sort();
    mismatch.extra.sort();
    mismatch.stale.sort();
    Err(Error::DeviceListMismatch(mismatch))
}

async fn find_stored(
    db: &PgPool,
    device: DeviceId,
    client_message_id: &str,
) -> Result<Option<StoredMessage>, Error> {
    let row: Option<(Uuid, i64, OffsetDateTime, Uuid, Vec<u8>)> = sqlx::query_as(
        "select id, sequence, created_at, conversation_id, signature from chat.messages
         where sender_device_id = $1 and client_message_id = $2",
    )
    .bind(device.0)
    .bind(client_message_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(
        |(message_id, sequence, sent_at, conversation, signature)| StoredMessage {
            conversation: ConversationId(conversation),
            signature,
            committed: Committed {
                message_id,
                sequence: to_u64(sequence),
                sent_at,
                duplicate: false,
            },
        },
    ))
}

#[cfg(test)]
mod tests;
