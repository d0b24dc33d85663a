//! Sealing, opening and verifying envelopes.

use std::collections::HashSet;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{
    DeviceKeys, Error,
    chain::{ChainLink, ChainPosition, envelope_hash},
    format::{
        self, CONTENT_KEY_LEN, DIGEST_LEN, Header, NONCE_LEN, SUITE_V1, SUITE_V2, TAG_LEN,
        canonical_header, key_commitment, recipients_digest, signed_message,
    },
    ids::check_canonical_uuid,
    keys::fingerprint,
    padding, primitives,
    tree::{Inclusion, recipient_leaf, recipients_tree, verify_inclusion},
};

/// An envelope as the sender built it: `chat.v1.Envelope` without prost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The suite number ([`SUITE_V2`], or [`SUITE_V1`] for older messages).
    pub suite: u32,
    /// The conversation.
    pub conversation_id: String,
    /// The sending user.
    pub sender_user_id: String,
    /// The sending device.
    pub sender_device_id: String,
    /// Chosen by the sender, unique per sending device.
    pub client_message_id: String,
    /// The 12-byte nonce.
    pub nonce: Vec<u8>,
    /// AES-256-GCM-SIV ciphertext followed by its 16-byte tag.
    pub ciphertext: Vec<u8>,
    /// The content key wrapped for each recipient device.
    pub wrapped_keys: Vec<WrappedKey>,
    /// HMAC-SHA-256(content key, "chat-e2ee-v1 key commitment").
    pub key_commitment: Vec<u8>,
    /// Ed25519 signature of the sending device.
    pub signature: Vec<u8>,
    /// V2: the sending device's counter in this conversation, from 1.
    pub sender_counter: u64,
    /// V2: the envelope hash of the sending device's previous envelope in this conversation
    /// (32 bytes, zeros for its first).
    pub previous_envelope_hash: Vec<u8>,
    /// V2: the sender's clock when sealing, Unix milliseconds.
    pub sender_time_ms: u64,
}

/// The content key wrapped for one device: `chat.v1.WrappedKey`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WrappedKey {
    /// The recipient device.
    pub device_id: String,
    /// SHA-256 of the recipient's encryption key (DER SubjectPublicKeyInfo).
    pub key_fingerprint: Vec<u8>,
    /// RSA-OAEP ciphertext of the content key; empty in delivered copies of other devices'
    /// entries.
    pub wrapped_key: Vec<u8>,
    /// V2, delivered copies: the entry's position in the recipients tree (set by the server).
    pub leaf_index: u32,
    /// V2, delivered copies: the sibling hashes from the entry to the tree's root (32 bytes
    /// each, set by the server).
    pub inclusion_proof: Vec<u8>,
}

/// A message as one device receives it: the envelope (with at least that device's wrapped key)
/// and the recipients digest the server computed from the full list (`chat.v1.Message`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// `Message.envelope`.
    pub envelope: Envelope,
    /// `Message.recipients_digest`.
    pub recipients_digest: Vec<u8>,
    /// V2: `Message.recipient_count`, the number of entries of the recipients tree.
    pub recipient_count: u32,
}

/// What the server learns from checking a sent envelope ([`Envelope::verify_as_sent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentCheck {
    /// The recipients digest the signature covers (`Message.recipients_digest`).
    pub recipients_digest: [u8; DIGEST_LEN],
    /// V2: each entry's place in the recipients tree, in the order of `wrapped_keys` (empty for
    /// V1). The server stores and delivers each with its entry.
    pub inclusions: Vec<Inclusion>,
}

/// A message opened by [`open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The plaintext (without its padding).
    pub plaintext: Vec<u8>,
    /// V2: the envelope as a link of its sender's chain (`None` for V1).
    pub link: Option<ChainLink>,
}

/// One device to encrypt for, with its encryption key as auth publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientDevice {
    /// The device id.
    pub device_id: String,
    /// `auth.v1.DeviceKeys.encryption_public_key`: canonical DER SubjectPublicKeyInfo.
    pub encryption_spki: Vec<u8>,
}

/// Who sends: the user, the device and the device's keys.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    /// The sending user (must be the caller of SendMessage).
    pub user_id: &'a str,
    /// The sending device (must be the caller's device).
    pub device_id: &'a str,
    /// The sending device's keys.
    pub keys: &'a DeviceKeys,
}

impl Envelope {
    /// The canonical-header items of this envelope, with the given recipients digest.
    #[must_use]
    pub fn header<'a>(&'a self, recipients_digest: &'a [u8]) -> Header<'a> {
        Header {
            suite: self.suite,
            conversation_id: &self.conversation_id,
            sender_user_id: &self.sender_user_id,
            sender_device_id: &self.sender_device_id,
            client_message_id: &self.client_message_id,
            recipients_digest,
            key_commitment: &self.key_commitment,
            nonce: &self.nonce,
            sender_counter: self.sender_counter,
            previous_envelope_hash: &self.previous_envelope_hash,
            sender_time_ms: self.sender_time_ms,
        }
    }

    /// The recipients digest of `wrapped_keys` (all of them: only meaningful on a full list),
    /// as the envelope's suite computes it: [`recipients_digest`] for V1, the root of
    /// [`recipients_tree`] (which binds every wrapped key) otherwise.
    ///
    /// # Errors
    /// As [`recipients_digest`].
    pub fn recipients_digest(&self) -> Result<[u8; DIGEST_LEN], Error> {
        Ok(self.recipients_check()?.recipients_digest)
    }

    /// The message as the server delivers it to `device_id`: only that device's entry, with its
    /// place in the recipients tree, and the digest and count of the full list.
    ///
    /// # Errors
    /// As [`recipients_digest`].
    pub fn delivered_to(&self, device_id: &str) -> Result<ReceivedMessage, Error> {
        let check = self.recipients_check()?;
        let mut envelope = self.clone();
        envelope.wrapped_keys.clear();
        for (index, key) in self.wrapped_keys.iter().enumerate() {
            if key.device_id == device_id {
                let mut key = key.clone();
                if let Some(inclusion) = check.inclusions.get(index) {
                    key.leaf_index = inclusion.leaf_index;
                    key.inclusion_proof.clone_from(&inclusion.proof);
                }
                envelope.wrapped_keys.push(key);
            }
        }
        Ok(ReceivedMessage {
            envelope,
            recipients_digest: check.recipients_digest.to_vec(),
            recipient_count: u32::try_from(self.wrapped_keys.len()).unwrap_or(u32::MAX),
        })
    }

    fn recipients_check(&self) -> Result<SentCheck, Error> {
        if self.suite == SUITE_V1 {
            let digest = recipients_digest(
                self.wrapped_keys
                    .iter()
                    .map(|key| (key.device_id.as_str(), key.key_fingerprint.as_slice())),
            )?;
            return Ok(SentCheck {
                recipients_digest: digest,
                inclusions: Vec::new(),
            });
        }
        let tree = recipients_tree(self.wrapped_keys.iter().map(|key| {
            (
                key.device_id.as_str(),
                key.key_fingerprint.as_slice(),
                key.wrapped_key.as_slice(),
            )
        }))?;
        Ok(SentCheck {
            recipients_digest: tree.digest,
            inclusions: tree.inclusions,
        })
    }

    /// What the server does on a send: checks that the ids are canonical UUIDs (conversation,
    /// sender, recipient devices) and that the device ids of `wrapped_keys` are unique, computes
    /// the recipients digest from them (for V2 with every entry's inclusion proof) and verifies
    /// the signature with [`verify_signature`]. The server stores the result and delivers the
    /// digest as `Message.recipients_digest`, each inclusion with its entry.
    ///
    /// It does not check that the recipients are the conversation's current devices.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a repeated device id or an id that is not a canonical UUID, or
    /// as [`verify_signature`].
    pub fn verify_as_sent(&self, sender_signing_key: &[u8]) -> Result<SentCheck, Error> {
        self.check_ids()?;
        for key in &self.wrapped_keys {
            check_canonical_uuid(
                &key.device_id,
                "a recipient device id must be a canonical UUID",
            )?;
        }
        let mut device_ids = HashSet::with_capacity(self.wrapped_keys.len());
        if !self
            .wrapped_keys
            .iter()
            .all(|key| device_ids.insert(key.device_id.as_str()))
        {
            return Err(Error::Malformed {
                what: "a device id appears twice in the wrapped keys",
            });
        }
        let check = self.recipients_check()?;
        verify_signature(
            &self.header(&check.recipients_digest),
            &self.ciphertext,
            &self.signature,
            sender_signing_key,
        )?;
        Ok(check)
    }

    /// Signs the envelope as it is now with `keys`, for tests that play a dishonest sender
    /// device (one that puts wrapped keys of its choice into envelopes it really signs): the
    /// server and the recipients check only that the sender device signed what they got.
    ///
    /// # Errors
    /// As [`Envelope::recipients_digest`] and [`signed_message`].
    #[doc(hidden)]
    pub fn sign_as_is(&mut self, keys: &DeviceKeys) -> Result<(), Error> {
        let digest = self.recipients_digest()?;
        let signed = signed_message(&self.header(&digest), &self.ciphertext)?;
        self.signature = keys.sign(&signed).to_vec();
        Ok(())
    }

    /// The envelope's chain link (V2), with the delivered recipients digest.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a previous hash that is not 32 bytes, or as [`envelope_hash`].
    pub fn chain_link(&self, recipients_digest: &[u8]) -> Result<ChainLink, Error> {
        Ok(ChainLink {
            counter: self.sender_counter,
            previous_envelope_hash: self.previous_envelope_hash.as_slice().try_into().map_err(
                |_| Error::Malformed {
                    what: "the previous envelope hash must be 32 bytes",
                },
            )?,
            envelope_hash: envelope_hash(&self.header(recipients_digest), &self.ciphertext)?,
            sender_time_ms: self.sender_time_ms,
        })
    }

    /// The conversation and the sender must be named by canonical UUIDs (lowercase, hyphenated):
    /// the server stores ids as UUIDs and delivers their canonical text, so any other spelling
    /// signed by a sender could never be verified by a recipient.
    fn check_ids(&self) -> Result<(), Error> {
        check_canonical_uuid(
            &self.conversation_id,
            "the conversation id must be a canonical UUID",
        )?;
        check_canonical_uuid(
            &self.sender_user_id,
            "the sender user id must be a canonical UUID",
        )?;
        check_canonical_uuid(
            &self.sender_device_id,
            "the sender device id must be a canonical UUID",
        )
    }
}

/// Encrypts `plaintext` for `recipients` with a fresh random content key and nonce, as suite
/// V2 at chain position `position`, and signs it as `sender`. Every recipient gets the content
/// key wrapped with RSA-OAEP under its key.
///
/// The sending device is a recipient only if listed. List it: the proto asks for "every device
/// of every participant", and ListMessages leaves out messages not encrypted for a device, so a
/// device that does not wrap for itself loses its own messages from its history.
///
/// The next envelope of the same device in the conversation takes position
/// `counter + 1` with [`Envelope::chain_link`]`(digest).envelope_hash` as its previous hash
/// (see [`sealed_link`]).
///
/// # Errors
/// [`Error::Malformed`] for an empty recipient list, a repeated device id or an id that is not
/// a canonical UUID; [`Error::InvalidRecipientKey`] for a key auth would not have published;
/// [`Error::EncryptFailed`] or [`Error::Randomness`] when encryption itself fails.
pub fn seal(
    sender: &Sender<'_>,
    conversation_id: &str,
    client_message_id: &str,
    recipients: &[RecipientDevice],
    position: &ChainPosition,
    plaintext: &[u8],
) -> Result<Envelope, Error> {
    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    let mut nonce = [0u8; NONCE_LEN];
    primitives::fill_random(content_key.as_mut())?;
    primitives::fill_random(&mut nonce)?;
    seal_with(
        sender,
        conversation_id,
        client_message_id,
        recipients,
        Some(position),
        plaintext,
        &content_key,
        &nonce,
    )
}

/// The chain link of an envelope this device just sealed ([`seal`]): its envelope hash is the
/// previous hash of the device's next envelope in the conversation.
///
/// # Errors
/// As [`Envelope::recipients_digest`].
pub fn sealed_link(envelope: &Envelope) -> Result<ChainLink, Error> {
    envelope.chain_link(&envelope.recipients_digest()?)
}

/// [`seal`] with a given content key and nonce, for test vectors only: reusing a key or nonce
/// across messages voids the format's guarantees. RSA-OAEP wrapping stays randomized. Without
/// a chain position it seals suite V1 (no padding, digest without the wrapped keys), which only
/// the vectors still need.
///
/// # Errors
/// As [`seal`].
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn seal_with(
    sender: &Sender<'_>,
    conversation_id: &str,
    client_message_id: &str,
    recipients: &[RecipientDevice],
    position: Option<&ChainPosition>,
    plaintext: &[u8],
    content_key: &[u8; CONTENT_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<Envelope, Error> {
    let recipient_keys = checked_recipient_keys(recipients)?;
    let mut envelope = Envelope {
        suite: if position.is_some() {
            SUITE_V2
        } else {
            SUITE_V1
        },
        conversation_id: conversation_id.to_owned(),
        sender_user_id: sender.user_id.to_owned(),
        sender_device_id: sender.device_id.to_owned(),
        client_message_id: client_message_id.to_owned(),
        nonce: nonce.to_vec(),
        key_commitment: key_commitment(content_key).to_vec(),
        ..Envelope::default()
    };
    envelope.check_ids()?;
    if let Some(position) = position {
        envelope.sender_counter = position.counter;
        envelope.previous_envelope_hash = position.previous_envelope_hash.to_vec();
        envelope.sender_time_ms = position.sender_time_ms;
    }
    // The V2 digest binds the wrapped keys, so they come first.
    for (recipient, public_key) in recipients.iter().zip(&recipient_keys) {
        envelope.wrapped_keys.push(WrappedKey {
            device_id: recipient.device_id.clone(),
            key_fingerprint: fingerprint(&recipient.encryption_spki).to_vec(),
            wrapped_key: primitives::rsa_oaep_wrap(public_key, content_key)?,
            ..WrappedKey::default()
        });
    }
    let digest = envelope.recipients_digest()?;
    let header = envelope.header(&digest);
    header.check_lengths()?;
    let padded;
    let plaintext = if position.is_some() {
        padded = Zeroizing::new(padding::pad(plaintext)?);
        padded.as_slice()
    } else {
        plaintext
    };
    let ciphertext =
        primitives::aead_encrypt(content_key, nonce, &canonical_header(&header)?, plaintext)?;
    let signature = sender.keys.sign(&signed_message(&header, &ciphertext)?);
    envelope.ciphertext = ciphertext;
    envelope.signature = signature.to_vec();
    Ok(envelope)
}

/// Decrypts a message received by the device `my_device_id`, whose keys are `my_keys`, from a
/// sender device whose Ed25519 public key (raw 32 bytes, from auth) is `sender_signing_key`.
///
/// Checks, in this order, each failure with its own error: the suite, the ids (canonical UUIDs)
/// and the field lengths; the signature over the canonical header (built with the delivered
/// recipients digest) and the ciphertext; that the envelope has a wrapped key for
/// `my_device_id`, for this device's current encryption key; for V2, that this wrapped key is
/// in the signed recipients tree (its inclusion proof); RSA-OAEP unwrapping to a 32-byte key;
/// the key commitment (in constant time); AES-256-GCM-SIV decryption; for V2, the padding.
/// Nothing is decrypted before the signature verifies, and for V2 no RSA work is done on a
/// wrapped key the sender did not sign.
///
/// The caller must still check that `sender_signing_key` belongs to
/// `envelope.sender_device_id` of `envelope.sender_user_id`, that the conversation is the one
/// the message was delivered in, and (V2) feed [`Opened::link`] to its
/// [`ConversationChains`](crate::ConversationChains).
///
/// # Errors
/// One [`Error`] variant per failed check, as listed above.
pub fn open(
    message: &ReceivedMessage,
    my_device_id: &str,
    my_keys: &DeviceKeys,
    sender_signing_key: &[u8],
) -> Result<Opened, Error> {
    let content_key = unwrap_own_key(message, my_device_id, my_keys, sender_signing_key)?;
    decrypt_with(message, &content_key)
}

/// The first half of [`open`]: the signature, this device's own entry (its fingerprint, and for
/// V2 its inclusion proof), RSA-OAEP unwrapping and the key commitment. What a device forwards
/// to another of its user's devices (`forwarding.rs`) is a key that passed all of these.
pub(crate) fn unwrap_own_key(
    message: &ReceivedMessage,
    my_device_id: &str,
    my_keys: &DeviceKeys,
    sender_signing_key: &[u8],
) -> Result<Zeroizing<[u8; CONTENT_KEY_LEN]>, Error> {
    let envelope = &message.envelope;
    let header = envelope.header(&message.recipients_digest);
    verify_signature(
        &header,
        &envelope.ciphertext,
        &envelope.signature,
        sender_signing_key,
    )?;

    let own_entry = envelope
        .wrapped_keys
        .iter()
        .find(|key| key.device_id == my_device_id && !key.wrapped_key.is_empty())
        .ok_or(Error::NoKeyForThisDevice)?;
    let my_fingerprint = &my_keys.public_keys().encryption_key_fingerprint;
    if !bool::from(own_entry.key_fingerprint.ct_eq(my_fingerprint)) {
        return Err(Error::KeyFingerprintMismatch);
    }
    if envelope.suite == SUITE_V2 {
        let leaf = recipient_leaf(
            &own_entry.device_id,
            &own_entry.key_fingerprint,
            &own_entry.wrapped_key,
        )?;
        let inclusion = Inclusion {
            leaf_index: own_entry.leaf_index,
            proof: own_entry.inclusion_proof.clone(),
        };
        if !verify_inclusion(
            &leaf,
            &inclusion,
            message.recipient_count,
            &message.recipients_digest,
        ) {
            return Err(Error::WrappedKeyNotSigned);
        }
    }
    unwrap_committed(envelope, my_keys, &own_entry.wrapped_key)
}

/// RSA-OAEP unwrapping of `wrapped_key` with this device's key, then the envelope's key
/// commitment (in constant time).
pub(crate) fn unwrap_committed(
    envelope: &Envelope,
    my_keys: &DeviceKeys,
    wrapped_key: &[u8],
) -> Result<Zeroizing<[u8; CONTENT_KEY_LEN]>, Error> {
    let unwrapped = primitives::rsa_oaep_unwrap(my_keys.encryption_key(), wrapped_key)?;
    let content_key: Zeroizing<[u8; CONTENT_KEY_LEN]> = Zeroizing::new(
        unwrapped
            .as_slice()
            .try_into()
            .map_err(|_| Error::UnwrapFailed)?,
    );
    if !bool::from(key_commitment(&content_key).ct_eq(envelope.key_commitment.as_slice())) {
        return Err(Error::KeyCommitmentMismatch);
    }
    Ok(content_key)
}

/// The second half of [`open`]: AES-256-GCM-SIV decryption with a content key that passed the
/// key commitment, then (V2) the padding and the chain link.
pub(crate) fn decrypt_with(
    message: &ReceivedMessage,
    content_key: &[u8; CONTENT_KEY_LEN],
) -> Result<Opened, Error> {
    let envelope = &message.envelope;
    let header = envelope.header(&message.recipients_digest);
    let nonce: &[u8; NONCE_LEN] =
        envelope
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::Malformed {
                what: "the nonce must be 12 bytes",
            })?;
    let plaintext = primitives::aead_decrypt(
        content_key,
        nonce,
        &canonical_header(&header)?,
        &envelope.ciphertext,
    )?;
    if envelope.suite != SUITE_V2 {
        return Ok(Opened {
            plaintext,
            link: None,
        });
    }
    Ok(Opened {
        plaintext: padding::unpad(plaintext)?,
        link: Some(envelope.chain_link(&message.recipients_digest)?),
    })
}

/// Verifies an envelope's signature without any private key: what the chat service does to
/// refuse forged senders, and the first step of [`open`].
///
/// `header` carries the recipients digest: computed from the full recipient list on the server
/// ([`Envelope::verify_as_sent`] does that), `Message.recipients_digest` on a receiving device.
///
/// # Errors
/// [`Error::UnsupportedSuite`] for any suite but V1 and V2; [`Error::Malformed`] for a
/// conversation or sender id that is not a canonical UUID, a recipients digest, key commitment,
/// nonce or (V2) previous envelope hash of the wrong length, a V2 counter of 0, a ciphertext
/// shorter than its tag (V2: not a power of two of at least 256 bytes) or a signature that is
/// not 64 bytes; [`Error::InvalidKey`] when `sender_signing_key` is not a canonical Ed25519 key
/// of large order; [`Error::BadSignature`] when the signature does not verify (strictly).
pub fn verify_signature(
    header: &Header<'_>,
    ciphertext: &[u8],
    signature: &[u8],
    sender_signing_key: &[u8],
) -> Result<(), Error> {
    if header.suite != SUITE_V1 && header.suite != SUITE_V2 {
        return Err(Error::UnsupportedSuite {
            suite: header.suite,
        });
    }
    check_canonical_uuid(
        header.conversation_id,
        "the conversation id must be a canonical UUID",
    )?;
    check_canonical_uuid(
        header.sender_user_id,
        "the sender user id must be a canonical UUID",
    )?;
    check_canonical_uuid(
        header.sender_device_id,
        "the sender device id must be a canonical UUID",
    )?;
    header.check_lengths()?;
    if ciphertext.len() < TAG_LEN {
        return Err(Error::Malformed {
            what: "the ciphertext is shorter than its 16-byte tag",
        });
    }
    if header.suite == SUITE_V2
        && (ciphertext.len() < padding::MIN_PADDED_CIPHERTEXT
            || !ciphertext.len().is_power_of_two())
    {
        return Err(Error::Malformed {
            what: "a V2 ciphertext is a power of two of at least 256 bytes",
        });
    }
    primitives::ed25519_verify(
        sender_signing_key,
        &format::signed_message(header, ciphertext)?,
        signature,
    )
}

/// Parses every recipient key, and refuses empty lists and repeated device ids.
fn checked_recipient_keys(recipients: &[RecipientDevice]) -> Result<Vec<rsa::RsaPublicKey>, Error> {
    if recipients.is_empty() {
        return Err(Error::Malformed {
            what: "a message needs at least one recipient device",
        });
    }
    let mut device_ids = HashSet::with_capacity(recipients.len());
    recipients
        .iter()
        .map(|recipient| {
            if !device_ids.insert(recipient.device_id.as_str()) {
                return Err(Error::Malformed {
                    what: "a recipient device appears twice",
                });
            }
            check_canonical_uuid(
                &recipient.device_id,
                "a recipient device id must be a canonical UUID",
            )?;
            primitives::parse_rsa_public_key(&recipient.encryption_spki).map_err(|_| {
                Error::InvalidRecipientKey {
                    device_id: recipient.device_id.clone(),
                }
            })
        })
        .collect()
}
