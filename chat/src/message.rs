//! The message types every layer shares: who sends ([`Caller`]), what a committed send answers
//! ([`Committed`]), a stored message as one device receives it ([`DeliveredMessage`]), and the
//! conversions between the database's and the wire's integers. A leaf: it imports no other
//! module of this crate but `ids` and `error`.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Error,
    ids::{ConversationId, DeviceId, UserId},
};

/// The caller of a send, from its validated access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
}

/// A committed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The message's id.
    pub message_id: Uuid,
    /// Its sequence in its conversation.
    pub sequence: u64,
    /// When it was committed.
    pub sent_at: OffsetDateTime,
    /// True when this answers a retry of a stored message.
    pub duplicate: bool,
}

/// A message already stored under a (sender device, client message id).
#[derive(Debug)]
pub(crate) struct StoredMessage {
    pub(crate) conversation: ConversationId,
    pub(crate) signature: Vec<u8>,
    pub(crate) committed: Committed,
}

impl StoredMessage {
    /// The answer to a send that reuses this message's client message id: the original for the
    /// same envelope (an Ed25519 signature is deterministic, so a retry carries the same bytes),
    /// an error for a different one.
    pub(crate) fn answer_retry(
        self,
        conversation: ConversationId,
        signature: &[u8],
    ) -> Result<Committed, Error> {
        if self.conversation == conversation && self.signature == signature {
            Ok(Committed {
                duplicate: true,
                ..self.committed
            })
        } else {
            Err(Error::ClientMessageIdReused)
        }
    }
}

/// A stored message as one device receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredMessage {
    /// Server-assigned id.
    pub id: Uuid,
    /// The conversation.
    pub conversation: ConversationId,
    /// Its sequence.
    pub sequence: u64,
    /// When it was committed.
    pub sent_at: OffsetDateTime,
    /// The sender.
    pub sender_user: UserId,
    /// The sending device.
    pub sender_device: DeviceId,
    /// The sender's id for the message.
    pub client_message_id: String,
    /// The suite number.
    pub suite: i16,
    /// 12 bytes.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
    /// 32 bytes.
    pub key_commitment: Vec<u8>,
    /// 64 bytes.
    pub signature: Vec<u8>,
    /// 32 bytes.
    pub recipients_digest: Vec<u8>,
    /// Suite V2's fields (defaults for V1).
    pub v2: V2Fields,
    /// The receiving device's entry first; with `include_all_recipients`, every other
    /// recipient's entry follows with an empty wrapped key.
    pub keys: Vec<DeliveredKey>,
}

/// What a suite V2 envelope carries beyond V1, as stored: the sender's chain position (signed,
/// stored as sent) and the size of the recipients tree (computed by the send check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2Fields {
    /// `Envelope.sender_counter`.
    pub sender_counter: u64,
    /// `Envelope.previous_envelope_hash`.
    pub previous_envelope_hash: Vec<u8>,
    /// `Envelope.sender_time_ms`.
    pub sender_time_ms: u64,
    /// `Message.recipient_count`.
    pub recipient_count: u32,
}

/// One recipient entry of a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredKey {
    /// The recipient device.
    pub device: DeviceId,
    /// Its key fingerprint.
    pub key_fingerprint: Vec<u8>,
    /// The wrapped content key; empty for other devices' entries.
    pub wrapped_key: Vec<u8>,
    /// V2: the entry's place in the recipients tree (0 for V1 and for other devices' entries).
    pub leaf_index: u32,
    /// V2: its inclusion proof (empty for V1 and for other devices' entries).
    pub inclusion_proof: Vec<u8>,
}

/// A content key another device of the receiving device's user forwarded to it (ForwardKeys),
/// as ListMessages delivers it with a message the device has no wrapped key of its own for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredForwardedKey {
    /// The receiving device.
    pub recipient: DeviceId,
    /// The forwarding device.
    pub forwarder_device: DeviceId,
    /// The user of both devices.
    pub forwarder_user: UserId,
    /// The receiving device's key fingerprint the key is wrapped for.
    pub recipient_key_fingerprint: Vec<u8>,
    /// The RSA-OAEP ciphertext.
    pub wrapped_key: Vec<u8>,
    /// The forwarder's signature.
    pub signature: Vec<u8>,
    /// When it was stored.
    pub forwarded_at: OffsetDateTime,
}

/// Database counters are never negative (check constraints); clamp instead of panicking.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Sequences from the wire are u64; the database keeps i64. Larger values cannot exist.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
