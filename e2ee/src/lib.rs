//! End-to-end encryption of chat messages, as specified in the comment of `chat.v1.Envelope`:
//! used by clients to [`seal`] and [`open`] messages, by the chat service to
//! [`verify_signature`]s without any private key, and by tests and benchmarks.
//!
//! **Format (suite V1, still opened).** Per message the sender draws a random 32-byte content key and 12-byte
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
//! **Format (suite V2, what clients seal).** The primitives of V1, and:
//! - the canonical header starts with `"chat-e2ee-v2 header"` and appends the sending device's
//!   chain position: `sender_counter` (u64 BE), `previous_envelope_hash` (32 bytes) and
//!   `sender_time_ms` (u64 BE) (`format.rs`, `chain.rs`);
//! - the recipients digest is a Merkle tree over entries that each bind the device, its key
//!   fingerprint and SHA-256 of its wrapped key ([`recipients_tree`]); the server computes each
//!   entry's inclusion proof when it checks a send and delivers it with the entry, and [`open`]
//!   verifies it before any RSA work: only a sender device can choose what a recipient decrypts;
//! - plaintexts are padded: `u32be(len) || text || zeros`, the ciphertext the smallest power of
//!   two of at least 256 bytes ([`pad`]);
//! - [`envelope_hash`] = SHA-256(`lp("chat-e2ee-v2 envelope hash") || lp(signed message)`) is what
//!   the sender's next envelope in the conversation names; receivers feed each verified link to
//!   [`ConversationChains`], which reports gaps, forks, late arrivals and implausible times;
//! - every id is a UUID in canonical text (lowercase, hyphenated), checked by [`verify_signature`].
//!
//! **Threat model.** Who attacks, and what holds against them. "Server" is anyone who controls
//! the chat, auth or group service or their database (a compromise, or a court order); "member"
//! is a participant of the conversation (or a device of one); "stolen device" is someone holding
//! a device's private keys (its profile and passphrase, or an unlocked browser).
//!
//! | attacker \ property | confidentiality | authenticity | integrity of order | metadata |
//! | --- | --- | --- | --- | --- |
//! | network | holds (TLS, and every message is end-to-end encrypted) | holds (signatures) | holds: replays, drops and reorders of envelopes are flagged by the chains (V2) | TLS hides contents; traffic volume and timing are visible |
//! | server | holds while clients use keys they pinned and compare safety numbers: a substituted key is what the clients' pinning and verification (not this crate) must catch; padding hides lengths within a bucket (V2) | holds: it cannot forge or alter a message (signature, key commitment), move it between conversations (the conversation id is signed) or choose a V2 wrapped key (inclusion proof); it can replace V1 wrapped keys, whose decryption failures clients budget per sender | partly: it can withhold messages, delay them and reorder them; V2 clients flag a gap between two messages they saw in a row, two envelopes with one counter (a fork), a late arrival, and a sender time far from the server's; it can still withhold everything after some point, or show a message's silence as "nothing sent" | does not hold: it sees who talks to whom, when, how often, from which device, and size buckets |
//! | member | not against it: it reads every message of the conversations it is in while it is in them; the RSA keys of the other devices face its chosen ciphertexts only within the clients' failure budget (below) | holds between members: each message is signed by its sender device; a member cannot make one ciphertext open differently for different recipients (key commitment) | a dishonest sender can fork its own chain (seen as a fork by receivers who see both) and lie about its clock within the tolerance | sees the conversation's membership and devices |
//! | stolen device | does not hold: no forward secrecy; every message wrapped for the device, past and future until it is revoked, opens with its keys | does not hold: the thief signs as the device until it is revoked | the thief continues the device's chains | sees what the device sees |
//!
//! What remains, on purpose or for now: RSA decryption in the `rsa` crate is not constant-time
//! (RUSTSEC-2023-0071, Marvin, no fixed version): it is blinded; V2 makes the wrapped keys a
//! sender device's choice only; clients acknowledge a message before any RSA work and do that
//! work off the path that reads and acknowledges the stream (a blocking thread in the CLI, a
//! queue of its own in the page), never report to anyone which [`Error`] an [`open`] failed
//! with, and budget decryption failures per sending device: 5 an hour, kept on the device (the
//! CLI's profile, `chains.rs`; the page's IndexedDB, `core.ts`), past which that device's
//! messages are not decrypted at all. A malicious *member* can still choose the RSA ciphertexts
//! it sends, within that budget: 5 an hour per recipient device for each device it registers
//! (auth caps a user's active devices), observing whatever else the recipient's timing shows
//! (when it replies, say); the server shares one such budget per recipient device for all V1
//! envelopes, whose wrapped keys it can replace. No forward secrecy and no post-compromise
//! security (no ratchet). A device whose chain state is lost (a new profile) starts again at
//! counter 1, which its peers see as a fork; a device sends one envelope at a time (the CLI
//! locks its profile, the page takes a Web Lock), so that its own sends never look like one.
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
//! **History for new devices** is device-to-device key forwarding: a device re-wraps the
//! content keys of messages it can read for a new device of its user and signs them
//! ([`forward_key`], [`open_forwarded`]); the design and its threat model are in
//! `forwarding.rs`.
//!
//! Start with [`seal`] and [`open`] (`envelope.rs`), then `format.rs`. `testdata/vectors.json`
//! holds vectors for other implementations (schema in `testdata/README.md`).

#![forbid(unsafe_code)]

mod chain;
mod envelope;
mod error;
mod format;
mod forwarding;
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
pub use forwarding::{
    FORWARDED_KEY_LABEL, ForwardedKey, Forwarder, forward_forwarded_key, forward_key,
    forwarded_key_signed_message, open_forwarded, verify_forwarded_key,
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
