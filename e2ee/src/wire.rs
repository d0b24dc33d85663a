//! Conversions between this crate's plain structs and the generated `chat.v1` types (feature
//! `proto`, on by default). Nothing else in the crate touches prost types.
//!
//! The suite is an `int32` enum on the wire and a `u32` here (the canonical header encodes it as
//! 32 bits): conversions keep the bits, so a negative number becomes a large unsupported suite.

use proto::chat::v1 as pb;

use crate::{Envelope, Error, ReceivedMessage, WrappedKey};

impl From<pb::WrappedKey> for WrappedKey {
    fn from(key: pb::WrappedKey) -> Self {
        WrappedKey {
            device_id: key.device_id,
            key_fingerprint: key.key_fingerprint,
            wrapped_key: key.wrapped_key,
            leaf_index: key.leaf_index,
            inclusion_proof: key.inclusion_proof,
        }
    }
}

impl From<WrappedKey> for pb::WrappedKey {
    fn from(key: WrappedKey) -> Self {
        pb::WrappedKey {
            device_id: key.device_id,
            key_fingerprint: key.key_fingerprint,
            wrapped_key: key.wrapped_key,
            leaf_index: key.leaf_index,
            inclusion_proof: key.inclusion_proof,
        }
    }
}

impl From<pb::Envelope> for Envelope {
    fn from(envelope: pb::Envelope) -> Self {
        Envelope {
            suite: u32::from_be_bytes(envelope.suite.to_be_bytes()),
            conversation_id: envelope.conversation_id,
            sender_user_id: envelope.sender_user_id,
            sender_device_id: envelope.sender_device_id,
            client_message_id: envelope.client_message_id,
            nonce: envelope.nonce,
            ciphertext: envelope.ciphertext,
            wrapped_keys: envelope.wrapped_keys.into_iter().map(Into::into).collect(),
            key_commitment: envelope.key_commitment,
            signature: envelope.signature,
            sender_counter: envelope.sender_counter,
            previous_envelope_hash: envelope.previous_envelope_hash,
            sender_time_ms: envelope.sender_time_ms,
        }
    }
}

impl From<Envelope> for pb::Envelope {
    fn from(envelope: Envelope) -> Self {
        pb::Envelope {
            suite: i32::from_be_bytes(envelope.suite.to_be_bytes()),
            conversation_id: envelope.conversation_id,
            sender_user_id: envelope.sender_user_id,
            sender_device_id: envelope.sender_device_id,
            client_message_id: envelope.client_message_id,
            nonce: envelope.nonce,
            ciphertext: envelope.ciphertext,
            wrapped_keys: envelope.wrapped_keys.into_iter().map(Into::into).collect(),
            key_commitment: envelope.key_commitment,
            signature: envelope.signature,
            sender_counter: envelope.sender_counter,
            previous_envelope_hash: envelope.previous_envelope_hash,
            sender_time_ms: envelope.sender_time_ms,
        }
    }
}

impl TryFrom<pb::Message> for ReceivedMessage {
    type Error = Error;

    /// # Errors
    /// [`Error::Malformed`] when the message has no envelope.
    fn try_from(message: pb::Message) -> Result<Self, Error> {
        let envelope = message.envelope.ok_or(Error::Malformed {
            what: "the message has no envelope",
        })?;
        Ok(ReceivedMessage {
            envelope: envelope.into(),
            recipients_digest: message.recipients_digest,
            recipient_count: message.recipient_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_survives_the_round_trip_through_the_generated_type() {
        let envelope = Envelope {
            suite: 1,
            conversation_id: "c".into(),
            sender_user_id: "u".into(),
            sender_device_id: "d".into(),
            client_message_id: "m".into(),
            nonce: vec![1; 12],
            ciphertext: vec![2; 20],
            wrapped_keys: vec![WrappedKey {
                device_id: "r".into(),
                key_fingerprint: vec![3; 32],
                wrapped_key: vec![4; 256],
                leaf_index: 7,
                inclusion_proof: vec![8; 64],
            }],
            key_commitment: vec![5; 32],
            signature: vec![6; 64],
            sender_counter: 9,
            previous_envelope_hash: vec![10; 32],
            sender_time_ms: 11,
        };

        let wire = pb::Envelope::from(envelope.clone());

        assert_eq!(wire.suite, pb::CipherSuite::V1 as i32);
        assert_eq!(Envelope::from(wire), envelope);
    }

    #[test]
    fn a_negative_suite_keeps_its_bits() {
        let wire = pb::Envelope {
            suite: -1,
            ..Default::default()
        };

        assert_eq!(Envelope::from(wire).suite, u32::MAX);
    }

    #[test]
    fn a_message_without_an_envelope_is_malformed() {
        let message = pb::Message {
            recipients_digest: vec![0; 32],
            ..Default::default()
        };

        assert!(matches!(
            ReceivedMessage::try_from(message),
            Err(Error::Malformed { .. })
        ));
    }
}
