//! Messages as one device sees them: ListMessages and the reads behind stream delivery. A device
//! gets only messages that carry a wrapped key for it, and only its own key.

use std::collections::HashMap;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Error,
    ids::{ConversationId, DeviceId, UserId},
    message::{DeliveredKey, DeliveredMessage, V2Fields, to_i64, to_u64},
};

/// Which way to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending sequences above the start.
    Forward,
    /// Descending sequences below the start (0: from the newest).
    Backward,
}

/// Up to `limit` messages of `conversation` for `device`, from `from` (exclusive) in
/// `direction`. The caller must have checked participation.
///
/// # Errors
/// Database failures.
pub async fn read_for_device(
    db: &PgPool,
    device: DeviceId,
    conversation: ConversationId,
    direction: Direction,
    from: u64,
    limit: u32,
) -> Result<Vec<DeliveredMessage>, Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        message: MessageRow,
        key_fingerprint: Vec<u8>,
        wrapped_key: Vec<u8>,
        leaf_index: i32,
        inclusion_proof: Vec<u8>,
    }
    let (condition, order) = match direction {
        Direction::Forward => ("m.sequence > $3", "asc"),
        Direction::Backward if from == 0 => ("$3 = 0", "desc"),
        Direction::Backward => ("m.sequence < $3", "desc"),
    };
    let sql = format!(
        "select {MESSAGE_COLUMNS}, k.key_fingerprint, k.wrapped_key, k.leaf_index,
                k.inclusion_proof
         from chat.message_keys k
         join chat.messages m on m.conversation_id = k.conversation_id and m.sequence = k.sequence
         where k.device_id = $1 and k.conversation_id = $2 and {condition}
         order by k.sequence {order}
         limit $4"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(device.0)
        .bind(conversation.0)
        .bind(to_i64(from))
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.message.delivered(
                conversation,
                vec![DeliveredKey {
                    device,
                    key_fingerprint: row.key_fingerprint,
                    wrapped_key: row.wrapped_key,
                    leaf_index: u32::try_from(row.leaf_index).unwrap_or(0),
                    inclusion_proof: row.inclusion_proof,
                }],
            )
        })
        .collect())
}

/// The columns of `chat.messages` (aliased `m`) that [`MessageRow`] reads.
pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.sequence, m.created_at, m.sender_user_id, \
     m.sender_device_id, m.client_message_id, m.suite, m.nonce, m.ciphertext, m.key_commitment, \
     m.signature, m.recipients_digest, m.sender_counter, m.previous_envelope_hash, \
     m.sender_time_ms, m.recipient_count";

/// A stored message without its keys, selected with [`MESSAGE_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    id: Uuid,
    sequence: i64,
    created_at: OffsetDateTime,
    sender_user_id: Uuid,
    sender_device_id: Uuid,
    client_message_id: String,
    suite: i16,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    key_commitment: Vec<u8>,
    signature: Vec<u8>,
    recipients_digest: Vec<u8>,
    sender_counter: i64,
    previous_envelope_hash: Vec<u8>,
    sender_time_ms: i64,
    recipient_count: i32,
}

impl MessageRow {
    /// Its sequence, as stored.
    pub(crate) fn sequence(&self) -> i64 {
        self.sequence
    }

    /// The message of `conversation` as delivered with `keys`.
    pub(crate) fn delivered(
        self,
        conversation: ConversationId,
        keys: Vec<DeliveredKey>,
    ) -> DeliveredMessage {
        DeliveredMessage {
            id: self.id,
            conversation,
            sequence: to_u64(self.sequence),
            sent_at: self.created_at,
            sender_user: UserId(self.sender_user_id),
            sender_device: DeviceId(self.sender_device_id),
            client_message_id: self.client_message_id,
            suite: self.suite,
            nonce: self.nonce,
            ciphertext: self.ciphertext,
            key_commitment: self.key_commitment,
            signature: self.signature,
            recipients_digest: self.recipients_digest,
            // Stored from u64 and u32 values, so never negative.
            v2: V2Fields {
                sender_counter: to_u64(self.sender_counter),
                previous_envelope_hash: self.previous_envelope_hash,
                sender_time_ms: to_u64(self.sender_time_ms),
                recipient_count: u32::try_from(self.recipient_count).unwrap_or(0),
            },
            keys,
        }
    }
}

/// Adds every other recipient's entry (device and fingerprint, no wrapped key) to `messages`,
/// sorted by device id after the receiving device's own entry.
///
/// # Errors
/// Database failures.
pub async fn add_other_recipients(
    db: &PgPool,
    conversation: ConversationId,
    messages: &mut [DeliveredMessage],
) -> Result<(), Error> {
    let sequences: Vec<i64> = messages.iter().map(|m| to_i64(m.sequence)).collect();
    let rows: Vec<(i64, Uuid, Vec<u8>)> = sqlx::query_as(
        "select sequence, device_id, key_fingerprint from chat.message_keys
         where conversation_id = $1 and sequence = any($2)
         order by sequence, device_id",
    )
    .bind(conversation.0)
    .bind(&sequences)
    .fetch_all(db)
    .await?;
    let mut by_sequence: HashMap<u64, Vec<DeliveredKey>> = HashMap::new();
    for (sequence, device, key_fingerprint) in rows {
        by_sequence
            .entry(to_u64(sequence))
            .or_default()
            .push(DeliveredKey {
                device: DeviceId(device),
                key_fingerprint,
                wrapped_key: Vec::new(),
                leaf_index: 0,
                inclusion_proof: Vec::new(),
            });
    }
    for message in messages {
        let own = message.keys.first().map(|key| key.device);
        if let Some(others) = by_sequence.remove(&message.sequence) {
            message
                .keys
                .extend(others.into_iter().filter(|key| Some(key.device) != own));
        }
    }
    Ok(())
}
