//! Sealing, opening and verifying envelopes.

use std::collections::HashSet;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{
    DeviceKeys, Error,
    format::{
        self, CONTENT_KEY_LEN, DIGEST_LEN, Header, NONCE_LEN, SUITE_V1, TAG_LEN, canonical_header,
        key_commitment, recipients_digest, signed_message,
    },
    keys::fingerprint,
    primitives,
};

/// An envelope as the sender built it: `chat.v1.Envelope` without prost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The suite number ([`SUITE_V1`]).
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
}

/// A message as one device receives it: the envelope (with at least that device's wrapped key)
/// and the recipients digest the server computed from the full list (`chat.v1.Message`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// `Message.envelope`.
    pub envelope: Envelope,
    /// `Message.recipients_digest`.
    pub recipients_digest: Vec<u8>,
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
        }
    }

    /// The recipients digest of `wrapped_keys` (all of them: only meaningful on a full list).
    ///
    /// # Errors
    /// As [`recipients_digest`].
    pub fn recipients_digest(&self) -> Result<[u8; DIGEST_LEN], Error> {
        recipients_digest(
            self.wrapped_keys
                .iter()
                .map(|key| (key.device_id.as_str(), key.key_fingerprint.as_slice())),
        )
    }

    /// What the server does on a send: checks that the device ids of `wrapped_keys` are unique,
    /// computes the recipients digest from them and verifies the signature with
    /// [`verify_signature`]. Returns the digest, which the server stores and delivers as
    /// `Message.recipients_digest`.
    ///
    /// It does not check that the recipients are the conversation's current devices.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a repeated device id, or as [`verify_signature`].
    pub fn verify_as_sent(&self, sender_signing_key: &[u8]) -> Result<[u8; DIGEST_LEN], Error> {
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
        let digest = self.recipients_digest()?;
        verify_signature(
            &self.header(&digest),
            &self.ciphertext,
            &self.signature,
            sender_signing_key,
        )?;
        Ok(digest)
    }
}

/// Encrypts `plaintext` for `recipients` with a fresh random content key and nonce, and signs
/// it as `sender`. Every recipient gets the content key wrapped with RSA-OAEP under its key.
///
/// The sending device is a recipient only if listed. List it: the proto asks for "every device
/// of every participant", and ListMessages leaves out messages not encrypted for a device, so a
/// device that does not wrap for itself loses its own messages from its history.
///
/// # Errors
/// [`Error::Malformed`] for an empty recipient list or a repeated device id;
/// [`Error::InvalidRecipientKey`] for a key auth would not have published;
/// [`Error::EncryptFailed`] or [`Error::Randomness`] when encryption itself fails.
pub fn seal(
    sender: &Sender<'_>,
    conversation_id: &str,
    client_message_id: &str,
    recipients: &[RecipientDevice],
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
        plaintext,
        &content_key,
        &nonce,
    )
}

/// [`seal`] with a given content key and nonce, for test vectors only: reusing a key or nonce
/// across messages voids the format's guarantees. RSA-OAEP wrapping stays randomized.
///
/// # Errors
/// As [`seal`].
#[doc(hidden)]
pub fn seal_with(
    sender: &Sender<'_>,
    conversation_id: &str,
    client_message_id: &str,
    recipients: &[RecipientDevice],
    plaintext: &[u8],
    content_key: &[u8; CONTENT_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<Envelope, Error> {
    let recipient_keys = checked_recipient_keys(recipients)?;
    let fingerprints: Vec<[u8; DIGEST_LEN]> = recipients
        .iter()
        .map(|recipient| fingerprint(&recipient.encryption_spki))
        .collect();
    let digest = recipients_digest(
        recipients
            .iter()
            .zip(&fingerprints)
            .map(|(recipient, fingerprint)| (recipient.device_id.as_str(), &fingerprint[..])),
    )?;
    let commitment = key_commitment(content_key);
    let header = Header {
        suite: SUITE_V1,
        conversation_id,
        sender_user_id: sender.user_id,
        sender_device_id: sender.device_id,
        client_message_id,
        recipients_digest: &digest,
        key_commitment: &commitment,
        nonce,
    };
    let ciphertext =
        primitives::aead_encrypt(content_key, nonce, &canonical_header(&header)?, plaintext)?;
    let signature = sender.keys.sign(&signed_message(&header, &ciphertext)?);

    let mut wrapped_keys = Vec::with_capacity(recipients.len());
    for ((recipient, public_key), fingerprint) in
        recipients.iter().zip(&recipient_keys).zip(&fingerprints)
    {
        wrapped_keys.push(WrappedKey {
            device_id: recipient.device_id.clone(),
            key_fingerprint: fingerprint.to_vec(),
            wrapped_key: primitives::rsa_oaep_wrap(public_key, content_key)?,
        });
    }
    Ok(Envelope {
        suite: SUITE_V1,
        conversation_id: conversation_id.to_owned(),
        sender_user_id: sender.user_id.to_owned(),
        sender_device_id: sender.device_id.to_owned(),
        client_message_id: client_message_id.to_owned(),
        nonce: nonce.to_vec(),
        ciphertext,
        wrapped_keys,
        key_commitment: commitment.to_vec(),
        signature: signature.to_vec(),
    })
}

/// Decrypts a message received by the device `my_device_id`, whose keys are `my_keys`, from a
/// sender device whose Ed25519 public key (raw 32 bytes, from auth) is `sender_signing_key`.
///
/// Checks, in this order, each failure with its own error: the suite and the field lengths;
/// the signature over the canonical header (built with the delivered recipients digest) and the
/// ciphertext; that the envelope has a wrapped key for `my_device_id`, for this device's current
/// encryption key; RSA-OAEP unwrapping to a 32-byte key; the key commitment (in constant
/// time); AES-256-GCM-SIV decryption. Nothing is decrypted before the signature verifies.
///
/// The caller must still check that `sender_signing_key` belongs to
/// `envelope.sender_device_id` of `envelope.sender_user_id`, and that the conversation is the
/// one the message was delivered in.
///
/// # Errors
/// One [`Error`] variant per failed check, as listed above.
pub fn open(
    message: &ReceivedMessage,
    my_device_id: &str,
    my_keys: &DeviceKeys,
    sender_signing_key: &[u8],
) -> Result<Vec<u8>, Error> {
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
    let unwrapped = primitives::rsa_oaep_unwrap(my_keys.encryption_key(), &own_entry.wrapped_key)?;
    let content_key: Zeroizing<[u8; CONTENT_KEY_LEN]> = Zeroizing::new(
        unwrapped
            .as_slice()
            .try_into()
            .map_err(|_| Error::UnwrapFailed)?,
    );
    if !bool::from(key_commitment(&content_key).ct_eq(envelope.key_commitment.as_slice())) {
        return Err(Error::KeyCommitmentMismatch);
    }
    let nonce: &[u8; NONCE_LEN] =
        envelope
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::Malformed {
                what: "the nonce must be 12 bytes",
            })?;
    primitives::aead_decrypt(
        &content_key,
        nonce,
        &canonical_header(&header)?,
        &envelope.ciphertext,
    )
}

/// Verifies an envelope's signature without any private key: what the chat service does to
/// refuse forged senders, and the first step of [`open`].
///
/// `header` carries the recipients digest: computed from the full recipient list on the server
/// ([`Envelope::verify_as_sent`] does that), `Message.recipients_digest` on a receiving device.
///
/// # Errors
/// [`Error::UnsupportedSuite`] for any suite but V1; [`Error::Malformed`] for a recipients
/// digest, key commitment or nonce of the wrong length, a ciphertext shorter than its tag or a
/// signature that is not 64 bytes; [`Error::InvalidKey`] when `sender_signing_key` is not a
/// valid Ed25519 key; [`Error::BadSignature`] when the signature does not verify.
pub fn verify_signature(
    header: &Header<'_>,
    ciphertext: &[u8],
    signature: &[u8],
    sender_signing_key: &[u8],
) -> Result<(), Error> {
    if header.suite != SUITE_V1 {
        return Err(Error::UnsupportedSuite {
            suite: header.suite,
        });
    }
    header.check_lengths()?;
    if ciphertext.len() < TAG_LEN {
        return Err(Error::Malformed {
            what: "the ciphertext is shorter than its 16-byte tag",
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
            primitives::parse_rsa_public_key(&recipient.encryption_spki).map_err(|_| {
                Error::InvalidRecipientKey {
                    device_id: recipient.device_id.clone(),
                }
            })
        })
        .collect()
}
