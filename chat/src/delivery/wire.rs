//! Messages encoded once for every stream that delivers them.
//!
//! A group message reaches up to 1,000 devices, which differ only in the one wrapped key each
//! receives. So the shared part is encoded once, when a replica first reads the message
//! (`recent.rs`): the `chat.v1.Message` fields and the `chat.v1.Envelope` fields without
//! `wrapped_keys`, and each recipient's `chat.v1.WrappedKey` on its own. Delivering to a device
//! copies those bytes behind a few length prefixes ([`DeviceMessage::encode_event`]); nothing is
//! cloned, converted or serialised per recipient.
//!
//! Protobuf allows fields in any order, so "shared fields, then the envelope, then the key"
//! decodes to the same message as prost's own encoding (tested below against prost).

use std::sync::Arc;

use prost::{
    Message as _,
    bytes::{BufMut, Bytes},
    encoding::{encode_varint, encoded_len_varint},
};
use proto::chat::v1 as pb;
use time::OffsetDateTime;

use crate::message::{DeliveredKey, DeliveredMessage};

/// Field 1, length-delimited: `SubscribeResponse.event`, `OpenStreamResponse.event` and
/// `StreamEvent.message` are all field 1.
const FIELD_1: u8 = 1 << 3 | 2;
/// Field 5, length-delimited: `Message.envelope`.
const ENVELOPE_FIELD: u8 = 5 << 3 | 2;
/// Field 8, length-delimited: `Envelope.wrapped_keys`.
const WRAPPED_KEYS_FIELD: u8 = 8 << 3 | 2;

/// The part of a message every recipient shares, encoded.
#[derive(Debug)]
pub struct EncodedMessage {
    sequence: u64,
    /// `chat.v1.Message` without `envelope`.
    message_fields: Bytes,
    /// `chat.v1.Envelope` without `wrapped_keys`.
    envelope_fields: Bytes,
}

/// One recipient's `chat.v1.WrappedKey`, encoded.
#[derive(Debug, Clone)]
pub struct EncodedKey(Bytes);

/// A message as one device receives it: the shared part and the device's own key.
#[derive(Debug, Clone)]
pub struct DeviceMessage {
    message: Arc<EncodedMessage>,
    key: EncodedKey,
}

impl EncodedMessage {
    /// Encodes `message`, leaving out its keys.
    pub fn new(message: DeliveredMessage) -> Self {
        let mut message = message_pb(DeliveredMessage {
            keys: Vec::new(),
            ..message
        });
        let envelope = message.envelope.take().unwrap_or_default();
        Self {
            sequence: message.sequence,
            message_fields: message.encode_to_vec().into(),
            envelope_fields: envelope.encode_to_vec().into(),
        }
    }

    /// The message's sequence in its conversation.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.message_fields.len() + self.envelope_fields.len()
    }
}

impl EncodedKey {
    /// Encodes `key`.
    pub fn new(key: DeliveredKey) -> Self {
        let key = pb::WrappedKey {
            device_id: key.device.to_string(),
            key_fingerprint: key.key_fingerprint,
            wrapped_key: key.wrapped_key,
            leaf_index: key.leaf_index,
            inclusion_proof: key.inclusion_proof,
        };
        Self(key.encode_to_vec().into())
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl DeviceMessage {
    /// `message` with `key`, which must be wrapped for the receiving device.
    pub fn new(message: Arc<EncodedMessage>, key: EncodedKey) -> Self {
        Self { message, key }
    }

    /// Encodes a message read for one device (its own key first, as `history.rs` reads it).
    pub fn from_delivered(mut message: DeliveredMessage) -> Self {
        let key = std::mem::take(&mut message.keys)
            .into_iter()
            .next()
            .map_or(EncodedKey(Bytes::new()), EncodedKey::new);
        Self::new(Arc::new(EncodedMessage::new(message)), key)
    }

    /// The message's sequence in its conversation.
    pub fn sequence(&self) -> u64 {
        self.message.sequence
    }

    /// Writes `SubscribeResponse { event: StreamEvent { message } }`, which is also, byte for
    /// byte, `OpenStreamResponse { event: StreamEvent { message } }`.
    pub fn encode_event(&self, buf: &mut impl BufMut) {
        let key = &self.key.0;
        let envelope_len = self.message.envelope_fields.len() + field_len(key.len());
        let message_len = self.message.message_fields.len() + field_len(envelope_len);
        let event_len = field_len(message_len);
        buf.put_u8(FIELD_1);
        encode_varint(event_len as u64, buf);
        buf.put_u8(FIELD_1);
        encode_varint(message_len as u64, buf);
        buf.put_slice(&self.message.message_fields);
        buf.put_u8(ENVELOPE_FIELD);
        encode_varint(envelope_len as u64, buf);
        buf.put_slice(&self.message.envelope_fields);
        buf.put_u8(WRAPPED_KEYS_FIELD);
        encode_varint(key.len() as u64, buf);
        buf.put_slice(key);
    }

    /// The message as a prost value, decoded from its encoding (for the generated server's
    /// path; the streams write the bytes directly).
    pub fn to_pb(&self) -> pb::Message {
        let mut encoded = Vec::new();
        self.encode_event(&mut encoded);
        pb::SubscribeResponse::decode(encoded.as_slice())
            .ok()
            .and_then(|response| response.event?.event)
            .and_then(|event| match event {
                pb::stream_event::Event::Message(message) => Some(message),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// A time as `google.protobuf.Timestamp`.
pub(crate) fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
    }
}

/// A delivered message as `chat.v1.Message`, through prost: the unary reads (ListMessages)
/// and the tests that compare this module's encoding with prost's.
pub(crate) fn message_pb(message: DeliveredMessage) -> pb::Message {
    pb::Message {
        message_id: message.id.to_string(),
        conversation_id: message.conversation.to_string(),
        sequence: message.sequence,
        sent_at: Some(timestamp(message.sent_at)),
        envelope: Some(pb::Envelope {
            suite: i32::from(message.suite),
            conversation_id: message.conversation.to_string(),
            sender_user_id: message.sender_user.to_string(),
            sender_device_id: message.sender_device.to_string(),
            client_message_id: message.client_message_id,
            nonce: message.nonce,
            ciphertext: message.ciphertext,
            wrapped_keys: message
                .keys
                .into_iter()
                .map(|key| pb::WrappedKey {
                    device_id: key.device.to_string(),
                    key_fingerprint: key.key_fingerprint,
                    wrapped_key: key.wrapped_key,
                    leaf_index: key.leaf_index,
                    inclusion_proof: key.inclusion_proof,
                })
                .collect(),
            key_commitment: message.key_commitment,
            signature: message.signature,
            sender_counter: message.v2.sender_counter,
            previous_envelope_hash: message.v2.previous_envelope_hash,
            sender_time_ms: message.v2.sender_time_ms,
        }),
        recipients_digest: message.recipients_digest,
        recipient_count: message.v2.recipient_count,
        forwarded_keys: Vec::new(),
    }
}

/// Bytes of a length-delimited field with a one-byte tag and a body of `len` bytes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;
    use crate::ids::{ConversationId, DeviceId, UserId};

    fn message(ciphertext_len: usize, keys: Vec<DeliveredKey>) -> DeliveredMessage {
        DeliveredMessage {
            id: Uuid::now_v7(),
            conversation: ConversationId(Uuid::now_v7()),
            sequence: 300,
            sent_at: OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap(),
            sender_user: UserId(Uuid::now_v7()),
            sender_device: DeviceId(Uuid::now_v7()),
            client_message_id: "client-1".to_owned(),
            suite: 2,
            nonce: vec![7; 12],
            ciphertext: (0..ciphertext_len).map(|i| i as u8).collect(),
            key_commitment: vec![8; 32],
            signature: vec![9; 64],
            recipients_digest: vec![10; 32],
            v2: crate::message::V2Fields {
                sender_counter: 300,
                previous_envelope_hash: vec![13; 32],
                sender_time_ms: 1_790_000_000_123,
                recipient_count: 3,
            },
            keys,
        }
    }

    fn key(wrapped_len: usize) -> DeliveredKey {
        DeliveredKey {
            device: DeviceId(Uuid::now_v7()),
            key_fingerprint: vec![11; 32],
            wrapped_key: vec![12; wrapped_len],
            leaf_index: 2,
            inclusion_proof: vec![14; 64],
        }
    }

    fn event(message: pb::Message) -> pb::StreamEvent {
        pb::StreamEvent {
            event: Some(pb::stream_event::Event::Message(message)),
        }
    }

    #[test]
    fn a_device_message_decodes_as_what_prost_encodes_on_both_stream_kinds() {
        // Small and large bodies: one-byte and multi-byte length prefixes at every level.
        for (ciphertext_len, wrapped_len) in [(16, 256), (200, 512), (70_000, 384)] {
            let delivered = message(ciphertext_len, vec![key(wrapped_len)]);
            let expected = message_pb(delivered.clone());
            let mut bytes = Vec::new();
            DeviceMessage::from_delivered(delivered.clone()).encode_event(&mut bytes);

            let subscribe = pb::SubscribeResponse::decode(bytes.as_slice()).unwrap();
            assert_eq!(subscribe.event, Some(event(expected.clone())));
            let open_stream = pb::OpenStreamResponse::decode(bytes.as_slice()).unwrap();
            assert_eq!(
                open_stream.response,
                Some(pb::open_stream_response::Response::Event(event(
                    expected.clone()
                )))
            );
            // Same length as prost's own encoding: nothing extra, nothing missing.
            let prost_len = pb::SubscribeResponse {
                event: Some(event(expected)),
            }
            .encoded_len();
            assert_eq!(bytes.len(), prost_len);
        }
    }

    #[test]
    fn recipients_share_the_message_and_each_gets_only_its_own_key() {
        let keys = vec![key(256), key(256), key(256)];
        let delivered = message(100, keys.clone());
        let shared = Arc::new(EncodedMessage::new(delivered.clone()));
        for own in &keys {
            let for_device = DeviceMessage::new(shared.clone(), EncodedKey::new(own.clone()));
            let expected = message_pb(DeliveredMessage {
                keys: vec![own.clone()],
                ..delivered.clone()
            });
            assert_eq!(for_device.to_pb(), expected);
            assert_eq!(for_device.sequence(), 300);
        }
    }
}
