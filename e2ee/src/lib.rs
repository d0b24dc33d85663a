//! End-to-end encryption of chat messages, as specified in the comment of `chat.v1.Envelope`:
//! used by clients to [`seal`] and [`open`] messages, by the chat service to
//! [`verify_signature`]s without any private key, and by tests and benchmarks.
//!
//! **Format (suite V1).** Per message the sender draws a random 32-byte content key and 12-byte
//! nonce. [`recipients_digest`] = SHA-256 over the recipients sorted by device id (UTF-8
//! bytewise), each as length-prefixed device id then length-prefixed key fingerprint (SHA-256 of
//! the device's RSA SubjectPublicKeyInfo DER, as auth publishes it). [`key_commitment`] =
//! HMAC-SHA-256(content key, `"chat-e2ee-v1 key commitment"`). [`canonical_header`] = each item
//! prefixed by its length (u32 big-endian): `"chat-e2ee-v1 header"`, the suite (4 bytes, BE),
//! conversation id, sender user id, sender device id, client message id, recipients digest, key
//! commitment, nonce. Ciphertext = AES-256-GCM-SIV(content key, nonce, plaintext, AAD = canonical
//! header). Signature = Ed25519 of the sender device over the length-prefixed canonical header
//! followed by SHA-256(ciphertext) ([`signed_message`]). The content key is wrapped per recipient
//! device with RSA-OAEP (SHA-256, MGF1-SHA-256, empty label).
//!
//! **Threat model.** The server (and anyone on the network) may read, drop, replay, reorder or
//! alter anything it stores or forwards. It cannot read plaintext or content keys, and cannot
//! forge or alter a message without the signature failing: the signature binds the sender, the
//! conversation, the client message id, the recipient set (as its digest: a device that gets only
//! its own wrapped key verifies with the delivered `Message.recipients_digest`, and can audit the
//! list from `include_all_recipients` with [`Envelope::recipients_digest`]), the nonce, the key
//! commitment and the ciphertext. The key commitment stops a sender from making one ciphertext
//! open to different plaintexts for different recipients. Not covered here: the server can hand
//! out its own public keys for a user (compare [`safety_number`]s to detect it), can replay a
//! message (clients de-duplicate by sender device and client message id) or withhold messages;
//! there is no forward secrecy (a stolen device key opens every message wrapped for it); metadata
//! (who talks to whom, when, sizes) is visible. RSA decryption in the `rsa` crate is not
//! constant-time (RUSTSEC-2023-0071, Marvin): it is blinded, and clients must
//! never report to anyone which [`Error`] an [`open`] failed with.
//!
//! **Reading of the spec where the proto text is terse** (recorded so other implementations
//! agree): the suite is length-prefixed like every item (`00000004` then 4 bytes); the
//! SHA-256 of the ciphertext after the prefixed header is *not* length-prefixed; lengths are in
//! bytes of UTF-8; device ids sort by their UTF-8 bytes, not UTF-16 code units; the HMAC message
//! has no prefix or terminator; the OAEP label is empty; the wrapped plaintext is exactly the 32
//! key bytes; an empty `wrapped_key` means "not delivered"; repeated device ids are invalid (the
//! digest orders them by fingerprint, [`seal`] and [`Envelope::verify_as_sent`] refuse them); an
//! `int32` suite keeps its bits as `u32`; Ed25519 verification is strict (canonical `S`, no
//! small-order keys), which every honest signature passes; the sending device is a recipient too.
//!
//! Start with [`seal`] and [`open`] (`envelope.rs`), then `format.rs`. `testdata/vectors.json`
//! holds vectors for other implementations (schema in `testdata/README.md`).

#![forbid(unsafe_code)]

mod chain;
mod envelope;
mod error;
mod format;
mod ids;
mod keys;
mod padding;
#[doc(hidden)]
pub mod primitives;
mod safety;
mod tree;
#[cfg(feature = "proto")]
pub mod wire;

pub use chain::{
    CHAIN_WINDOW, ChainAnomaly, ChainLink, ChainPosition, ConversationChains, DeviceChain,
    ENVELOPE_HASH_LABEL, MAX_CLOCK_AHEAD_MS, MAX_DELAY_MS, SeenLink, envelope_hash,
};
pub use envelope::{
    Envelope, Opened, ReceivedMessage, RecipientDevice, Sender, SentCheck, WrappedKey, open, seal,
    seal_with, sealed_link, verify_signature,
};
pub use error::Error;
pub use format::{
    CONTENT_KEY_LEN, DIGEST_LEN, HEADER_LABEL, HEADER_LABEL_V2, Header, KEY_COMMITMENT_LABEL,
    KEY_COMMITMENT_LEN, NONCE_LEN, SIGNATURE_LEN, SIGNING_KEY_LEN, SUITE_V1, SUITE_V2, TAG_LEN,
    canonical_header, key_commitment, recipients_digest, signed_message,
};
pub use ids::is_canonical_uuid;
pub use keys::{
    DEFAULT_RSA_BITS, DeviceKeys, PublicDeviceKeys, fingerprint, fingerprint_hex, short_fingerprint,
};
pub use padding::{MIN_PADDED_CIPHERTEXT, pad, padded_ciphertext_len, unpad};
pub use safety::{SAFETY_NUMBER_ITERATIONS, SAFETY_NUMBER_LABEL, safety_number};
pub use tree::{
    Inclusion, RECIPIENTS_LABEL_V2, RecipientsTree, recipient_leaf, recipients_tree,
    verify_inclusion,
};
