//! History for a new device: device-to-device key forwarding.
//!
//! A message is wrapped for the devices its sender knew when it sealed it, so a device added
//! later (a fresh browser, a new CLI profile) cannot read what came before it. Instead of a key
//! backup that the server would hold (under a recovery key the user must keep), an existing
//! device of the same user that can read a message re-wraps that message's content key for the
//! new device: it unwraps its own entry (after every check of [`open`](crate::open): the
//! sender's signature, its own entry's inclusion proof, the key commitment), wraps the key with
//! RSA-OAEP under the new device's published key, and signs the result with its own Ed25519
//! device key ([`forward_key`]). The signature covers, length-prefixed after the label
//! `"chat-e2ee-v2 forwarded key"`: the conversation id, the server's message id, the forwarding
//! user and device, the recipient device, the recipient's key fingerprint, the wrapped key and
//! the message's key commitment ([`forwarded_key_signed_message`]). The chat service stores
//! these opaque forwarded keys (`ForwardKeys`), after checking that signature with the
//! forwarder's published key ([`verify_forwarded_key`], as it checks a sent envelope's), and
//! hands the recipient device its own with the message in history (`Message.forwarded_keys`).
//!
//! The new device opens such a message with [`open_forwarded`]: the forwarder's signature (with
//! the forwarder's key as the caller pinned it), that the forwarded key names this message,
//! conversation, device and current key, then the original sender's signature over the
//! envelope, RSA-OAEP unwrapping, the key commitment (which the original sender signed: so the
//! key forwarded is the sender's key, whoever forwarded it) and decryption. The caller must
//! check, before calling it, that the forwarder is a device of its own user that it trusts
//! (pinned, not revoked, not pending), as the clients do (`client/src/forwarding.rs`,
//! `web-demo/src/forwarding.ts`).
//!
//! **Threat model of forwarding** (read with the crate's table):
//!
//! | attacker | what it can do | what it cannot |
//! | --- | --- | --- |
//! | server (chat, its database) | withhold forwarded keys, or serve them late (the new device then shows the message as unreadable, with the reason); see which device forwarded how many keys of which messages to which device, and when | read a forwarded key (RSA-OAEP under the new device's key); inject one: a key needs a forwarder's signature, and a key it could wrap itself (it knows the recipient's public key) would still have to match the key commitment the original sender signed, which only the content key does; move a forwarded key to another message, conversation or device (all signed, and the commitment binds the envelope) |
//! | server (auth) adding a device to the user's list | what it could do for new messages already: the user's devices pin the new device on first sight (with a warning, `KeyWarning` with `own`), and from then on forward history to it; the user sees the device in the list and the warning, and revokes it | nothing more than a device the user added: forwarding follows the same pins as sealing |
//! | a revoked device | nothing from then on: the service refuses its uploads (its token is refused, and it is not an active device), nobody forwards to it (not active, and revoked in every pin), and a key it forwarded after its revocation (as the recipient's pin dates it) is refused by the recipient | |
//! | a lying forwarder (a device of the same user, stolen or buggy) | forward garbage or nothing: the recipient then fails to open that message (counted in its failure budget for the forwarder) and tries another forwarder's key if there is one; it reads what it forwards, which it could read anyway | affect another user: the service accepts forwarded keys only between two active devices of one user, for messages the forwarder was given a key for; make a message say something else (the key commitment and the sender's signature are checked as for any message) |
//!
//! A device that got a key by forwarding forwards it on ([`forward_forwarded_key`]) after the
//! same checks as [`open_forwarded`], so history reaches a third device from any device of the
//! user that can read it; each hop is signed by its own forwarder, and the recipient checks only
//! the last one (the key commitment the original sender signed makes the earlier hops moot).
//!
//! What remains: a forwarded message is as confidential as the least careful of the user's
//! devices (every device of the user reads the whole history); the forwarder's and recipient's
//! RSA keys face the usual RUSTSEC-2023-0071 caveats (the crate's table); there is no key
//! backup, so history reaches a new device only while another device of the user that can read
//! it is online.

use std::fmt;

use subtle::ConstantTimeEq;

use zeroize::Zeroizing;

use crate::{
    DeviceKeys, Error, Opened, ReceivedMessage, RecipientDevice,
    envelope::{decrypt_with, unwrap_committed, unwrap_own_key},
    format::{CONTENT_KEY_LEN, DIGEST_LEN, SIGNATURE_LEN},
    ids::check_canonical_uuid,
    keys::fingerprint,
    primitives,
};

/// The label that starts what a forwarding device signs.
pub const FORWARDED_KEY_LABEL: &[u8] = b"chat-e2ee-v2 forwarded key";

/// A message's content key re-wrapped by one device for another device of the same user:
/// `chat.v1.ForwardedKey` without prost.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ForwardedKey {
    /// The conversation of the message.
    pub conversation_id: String,
    /// The server's id of the message (`Message.message_id`).
    pub message_id: String,
    /// The forwarding device's user (the recipient's user too).
    pub forwarder_user_id: String,
    /// The forwarding device.
    pub forwarder_device_id: String,
    /// The device the key is wrapped for.
    pub recipient_device_id: String,
    /// SHA-256 of the recipient's RSA-OAEP key (DER SubjectPublicKeyInfo).
    pub recipient_key_fingerprint: Vec<u8>,
    /// RSA-OAEP ciphertext of the 32-byte content key.
    pub wrapped_key: Vec<u8>,
    /// Ed25519 signature of the forwarding device over [`forwarded_key_signed_message`].
    pub signature: Vec<u8>,
}

impl fmt::Debug for ForwardedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardedKey")
            .field("conversation_id", &self.conversation_id)
            .field("message_id", &self.message_id)
            .field("forwarder_device_id", &self.forwarder_device_id)
            .field("recipient_device_id", &self.recipient_device_id)
            .finish_non_exhaustive()
    }
}

/// What the forwarding device signs: each item prefixed by its length (u32 big-endian): the
/// label [`FORWARDED_KEY_LABEL`], conversation id, message id, forwarder user id, forwarder
/// device id, recipient device id, recipient key fingerprint, wrapped key, and the message's
/// key commitment (`key_commitment`, from the envelope the key opens).
///
/// # Errors
/// [`Error::Malformed`] for an item longer than 4 GiB.
pub fn forwarded_key_signed_message(
    forwarded: &ForwardedKey,
    key_commitment: &[u8],
) -> Result<Vec<u8>, Error> {
    let items: [&[u8]; 9] = [
        FORWARDED_KEY_LABEL,
        forwarded.conversation_id.as_bytes(),
        forwarded.message_id.as_bytes(),
        forwarded.forwarder_user_id.as_bytes(),
        forwarded.forwarder_device_id.as_bytes(),
        forwarded.recipient_device_id.as_bytes(),
        &forwarded.recipient_key_fingerprint,
        &forwarded.wrapped_key,
        key_commitment,
    ];
    let mut signed = Vec::with_capacity(items.iter().map(|item| 4 + item.len()).sum());
    for item in items {
        let length = u32::try_from(item.len()).map_err(|_| Error::Malformed {
            what: "an item is longer than 4 GiB",
        })?;
        signed.extend_from_slice(&length.to_be_bytes());
        signed.extend_from_slice(item);
    }
    Ok(signed)
}

/// Verifies the forwarding device's signature of `forwarded` (with its raw Ed25519 key
/// `forwarder_signing_key`), for the message whose key commitment is `key_commitment`: what the
/// chat service checks on ForwardKeys (without any private key), and the first step of
/// [`open_forwarded`].
///
/// # Errors
/// [`Error::Malformed`] for a signature that is not 64 bytes; [`Error::InvalidKey`] for a key
/// that is not a canonical Ed25519 key of large order; [`Error::BadSignature`].
pub fn verify_forwarded_key(
    forwarded: &ForwardedKey,
    key_commitment: &[u8],
    forwarder_signing_key: &[u8],
) -> Result<(), Error> {
    if forwarded.signature.len() != SIGNATURE_LEN {
        return Err(Error::Malformed {
            what: "the signature must be 64 bytes",
        });
    }
    primitives::ed25519_verify(
        forwarder_signing_key,
        &forwarded_key_signed_message(forwarded, key_commitment)?,
        &forwarded.signature,
    )
}

/// Who forwards: the user, the device and the device's keys.
#[derive(Clone, Copy, Debug)]
pub struct Forwarder<'a> {
    /// The forwarding user (the recipient device's user).
    pub user_id: &'a str,
    /// The forwarding device (the caller of ForwardKeys).
    pub device_id: &'a str,
    /// Its keys: the RSA key unwraps its own entry, the Ed25519 key signs.
    pub keys: &'a DeviceKeys,
}

/// Re-wraps the content key of `message` (server id `message_id`), which `forwarder` received
/// with its own wrapped key, for `recipient`, and signs the result. Every check of
/// [`open`](crate::open) up to the key commitment passes first (the sender's signature with
/// `sender_signing_key`, the entry's fingerprint and inclusion proof): a device forwards only
/// keys it verified.
///
/// # Errors
/// As [`open`](crate::open) up to the key commitment; [`Error::Malformed`] for ids that are not
/// canonical UUIDs; [`Error::InvalidRecipientKey`] for a key auth would not publish;
/// [`Error::EncryptFailed`] when wrapping fails.
pub fn forward_key(
    message: &ReceivedMessage,
    message_id: &str,
    forwarder: &Forwarder<'_>,
    sender_signing_key: &[u8],
    recipient: &RecipientDevice,
) -> Result<ForwardedKey, Error> {
    check_ids(message_id, recipient)?;
    let content_key = unwrap_own_key(
        message,
        forwarder.device_id,
        forwarder.keys,
        sender_signing_key,
    )?;
    wrap_and_sign(message, message_id, forwarder, &content_key, recipient)
}

/// Forwards again, to `recipient`, a key that was itself forwarded to `forwarder`
/// (`received`, from another device of the same user whose Ed25519 key the caller pinned as
/// `received_from_signing_key`), so that history reaches a third device from a device that got
/// it by forwarding. Every check of [`open_forwarded`] up to the key commitment passes first: a
/// device forwards only keys it verified, whichever way it got them. The caller must check that
/// the device `received` came from is one it trusts, as for [`open_forwarded`].
///
/// # Errors
/// As [`open_forwarded`] up to the key commitment; then as [`forward_key`].
pub fn forward_forwarded_key(
    message: &ReceivedMessage,
    message_id: &str,
    received: &ForwardedKey,
    received_from_signing_key: &[u8],
    forwarder: &Forwarder<'_>,
    sender_signing_key: &[u8],
    recipient: &RecipientDevice,
) -> Result<ForwardedKey, Error> {
    check_ids(message_id, recipient)?;
    let content_key = unwrap_forwarded(
        message,
        message_id,
        received,
        forwarder.device_id,
        forwarder.keys,
        sender_signing_key,
        received_from_signing_key,
    )?;
    wrap_and_sign(message, message_id, forwarder, &content_key, recipient)
}

/// The ids a forwarded key names, checked before any RSA work.
fn check_ids(message_id: &str, recipient: &RecipientDevice) -> Result<(), Error> {
    check_canonical_uuid(message_id, "the message id must be a canonical UUID")?;
    check_canonical_uuid(
        &recipient.device_id,
        "a recipient device id must be a canonical UUID",
    )?;
    Ok(())
}

/// `content_key` of `message` wrapped for `recipient` and signed by `forwarder`.
fn wrap_and_sign(
    message: &ReceivedMessage,
    message_id: &str,
    forwarder: &Forwarder<'_>,
    content_key: &[u8; CONTENT_KEY_LEN],
    recipient: &RecipientDevice,
) -> Result<ForwardedKey, Error> {
    let public_key =
        primitives::parse_rsa_public_key(&recipient.encryption_spki).map_err(|_| {
            Error::InvalidRecipientKey {
                device_id: recipient.device_id.clone(),
            }
        })?;
    let mut forwarded = ForwardedKey {
        conversation_id: message.envelope.conversation_id.clone(),
        message_id: message_id.to_owned(),
        forwarder_user_id: forwarder.user_id.to_owned(),
        forwarder_device_id: forwarder.device_id.to_owned(),
        recipient_device_id: recipient.device_id.clone(),
        recipient_key_fingerprint: fingerprint(&recipient.encryption_spki).to_vec(),
        wrapped_key: primitives::rsa_oaep_wrap(&public_key, content_key.as_slice())?,
        signature: Vec::new(),
    };
    let signed = forwarded_key_signed_message(&forwarded, &message.envelope.key_commitment)?;
    forwarded.signature = forwarder.keys.sign(&signed).to_vec();
    Ok(forwarded)
}

/// Opens `message` (server id `message_id`), delivered to this device (`my_device_id`, keys
/// `my_keys`) without a wrapped key of its own, with a key `forwarded` by another device of its
/// user, whose Ed25519 key (as the caller pinned it) is `forwarder_signing_key`.
///
/// Checks, in this order: the forwarder's signature; that the forwarded key names this message,
/// its conversation, this device and this device's current key; the original sender's
/// signature over the envelope (with `sender_signing_key`); RSA-OAEP unwrapping; the key
/// commitment; decryption and (V2) padding. The caller must check that the forwarder is a
/// trusted device of its own user, and then treat the result as [`open`](crate::open)'s.
///
/// # Errors
/// [`Error::BadSignature`] for either signature; [`Error::Malformed`] for a forwarded key that
/// names another message, conversation or device, or a signature that is not 64 bytes;
/// [`Error::KeyFingerprintMismatch`] for a key wrapped for another key of this device; then as
/// [`open`](crate::open).
pub fn open_forwarded(
    message: &ReceivedMessage,
    message_id: &str,
    forwarded: &ForwardedKey,
    my_device_id: &str,
    my_keys: &DeviceKeys,
    sender_signing_key: &[u8],
    forwarder_signing_key: &[u8],
) -> Result<Opened, Error> {
    let content_key = unwrap_forwarded(
        message,
        message_id,
        forwarded,
        my_device_id,
        my_keys,
        sender_signing_key,
        forwarder_signing_key,
    )?;
    decrypt_with(message, &content_key)
}

/// The content key a forwarded key carries, after every check of [`open_forwarded`] up to the
/// key commitment.
fn unwrap_forwarded(
    message: &ReceivedMessage,
    message_id: &str,
    forwarded: &ForwardedKey,
    my_device_id: &str,
    my_keys: &DeviceKeys,
    sender_signing_key: &[u8],
    forwarder_signing_key: &[u8],
) -> Result<Zeroizing<[u8; CONTENT_KEY_LEN]>, Error> {
    let envelope = &message.envelope;
    verify_forwarded_key(forwarded, &envelope.key_commitment, forwarder_signing_key)?;
    if forwarded.message_id != message_id
        || forwarded.conversation_id != envelope.conversation_id
        || forwarded.recipient_device_id != my_device_id
    {
        return Err(Error::Malformed {
            what: "the forwarded key names another message, conversation or device",
        });
    }
    let my_fingerprint: &[u8; DIGEST_LEN] = &my_keys.public_keys().encryption_key_fingerprint;
    if !bool::from(forwarded.recipient_key_fingerprint.ct_eq(my_fingerprint)) {
        return Err(Error::KeyFingerprintMismatch);
    }
    crate::verify_signature(
        &envelope.header(&message.recipients_digest),
        &envelope.ciphertext,
        &envelope.signature,
        sender_signing_key,
    )?;
    unwrap_committed(envelope, my_keys, &forwarded.wrapped_key)
}
