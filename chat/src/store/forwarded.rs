//! Forwarded keys (`chat.forwarded_keys`): content keys of past messages that one device of a
//! user re-wrapped for another device of the same user (ForwardKeys), and how ListMessages
//! finds them. The server never reads them; it only checks who may store which (see
//! `service.rs`, `forward_keys`).

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Error,
    ids::{ConversationId, DeviceId, UserId},
    message::{DeliveredForwardedKey, DeliveredMessage, to_i64, to_u64},
    store::history::{Direction, MESSAGE_COLUMNS, MessageRow},
};

/// A forwarded key to store, its message already resolved to a sequence.
#[derive(Debug, Clone)]
pub struct NewForwardedKey {
    /// The message's sequence in the conversation.
    pub sequence: u64,
    /// The device it is wrapped for.
    pub recipient: DeviceId,
    /// That device's key fingerprint (32 bytes).
    pub recipient_key_fingerprint: Vec<u8>,
    /// The RSA-OAEP ciphertext.
    pub wrapped_key: Vec<u8>,
    /// The forwarder's signature (64 bytes).
    pub signature: Vec<u8>,
}

/// The sequence and key commitment of each of the messages `message_ids` in `conversation`
/// (ids of other conversations' messages, or unknown ones, are absent from the answer).
///
/// # Errors
/// Database failures.
pub async fn sequences_of(
    db: &PgPool,
    conversation: ConversationId,
    message_ids: &[Uuid],
) -> Result<HashMap<Uuid, (u64, Vec<u8>)>, Error> {
    let rows: Vec<(Uuid, i64, Vec<u8>)> = sqlx::query_as(
        "select id, sequence, key_commitment from chat.messages
         where conversation_id = $1 and id = any($2)",
    )
    .bind(conversation.0)
    .bind(message_ids)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, sequence, commitment)| (id, (to_u64(sequence), commitment)))
        .collect())
}

/// Of `sequences`, those whose content key `device` was given: a wrapped key of its own, or a
/// key forwarded to it.
///
/// # Errors
/// Database failures.
pub async fn held_by(
    db: &PgPool,
    conversation: ConversationId,
    device: DeviceId,
    sequences: &[i64],
) -> Result<HashSet<u64>, Error> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "select sequence from chat.message_keys
         where device_id = $1 and conversation_id = $2 and sequence = any($3)
         union
         select sequence from chat.forwarded_keys
         where recipient_device_id = $1 and conversation_id = $2 and sequence = any($3)",
    )
    .bind(device.0)
    .bind(conversation.0)
    .bind(sequences)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sequence,)| to_u64(sequence))
        .collect())
}

/// Of `(sequence, device)` pairs, those where the device is a recipient of the message (it has
/// a wrapped key of its own, so a forwarded one is not needed).
///
/// # Errors
/// Database failures.
pub async fn direct_recipients(
    db: &PgPool,
    conversation: ConversationId,
    pairs: &[(u64, DeviceId)],
) -> Result<HashSet<(u64, DeviceId)>, Error> {
    let sequences: Vec<i64> = pairs
        .iter()
        .map(|(sequence, _)| to_i64(*sequence))
        .collect();
    let devices: Vec<Uuid> = pairs.iter().map(|(_, device)| device.0).collect();
    let rows: Vec<(i64, Uuid)> = sqlx::query_as(
        "select k.sequence, k.device_id
         from unnest($2::bigint[], $3::uuid[]) as p(sequence, device_id)
         join chat.message_keys k
           on k.conversation_id = $1 and k.sequence = p.sequence and k.device_id = p.device_id",
    )
    .bind(conversation.0)
    .bind(&sequences)
    .bind(&devices)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sequence, device)| (to_u64(sequence), DeviceId(device)))
        .collect())
}

/// Stores `keys` forwarded by `forwarder` of `user`, in one statement (all or nothing); a key
/// the same forwarder stored before for the same message and device is replaced.
///
/// # Errors
/// Database failures.
pub async fn store(
    db: &PgPool,
    conversation: ConversationId,
    user: UserId,
    forwarder: DeviceId,
    keys: &[NewForwardedKey],
) -> Result<u64, Error> {
    let sequences: Vec<i64> = keys.iter().map(|key| to_i64(key.sequence)).collect();
    let recipients: Vec<Uuid> = keys.iter().map(|key| key.recipient.0).collect();
    let fingerprints: Vec<Vec<u8>> = keys
        .iter()
        .map(|key| key.recipient_key_fingerprint.clone())
        .collect();
    let wrapped: Vec<Vec<u8>> = keys.iter().map(|key| key.wrapped_key.clone()).collect();
    let signatures: Vec<Vec<u8>> = keys.iter().map(|key| key.signature.clone()).collect();
    let result = sqlx::query(
        "insert into chat.forwarded_keys (conversation_id, sequence, recipient_device_id,
             forwarder_device_id, user_id, recipient_key_fingerprint, wrapped_key, signature)
         select $1, k.sequence, k.recipient, $2, $3, k.fingerprint, k.wrapped_key, k.signature
         from unnest($4::bigint[], $5::uuid[], $6::bytea[], $7::bytea[], $8::bytea[])
             as k(sequence, recipient, fingerprint, wrapped_key, signature)
         on conflict on constraint forwarded_keys_pkey do update
         set recipient_key_fingerprint = excluded.recipient_key_fingerprint,
             wrapped_key = excluded.wrapped_key,
             signature = excluded.signature,
             created_at = now()",
    )
    .bind(conversation.0)
    .bind(forwarder.0)
    .bind(user.0)
    .bind(&sequences)
    .bind(&recipients)
    .bind(&fingerprints)
    .bind(&wrapped)
    .bind(&signatures)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// Up to `limit` messages of `conversation` that `device` has forwarded keys for (and, as the
/// caller merges them, no wrapped key of its own), from `from` (exclusive) in `direction`, each
/// with every key forwarded to `device`. The caller must have checked participation.
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
) -> Result<Vec<(DeliveredMessage, Vec<DeliveredForwardedKey>)>, Error> {
    #[derive(sqlx::FromRow)]
    struct KeyRow {
        sequence: i64,
        forwarder_device_id: Uuid,
        user_id: Uuid,
        recipient_key_fingerprint: Vec<u8>,
        wrapped_key: Vec<u8>,
        signature: Vec<u8>,
        created_at: OffsetDateTime,
    }
    let (condition, order) = match direction {
        Direction::Forward => ("sequence > $3", "asc"),
        Direction::Backward if from == 0 => ("$3 = 0", "desc"),
        Direction::Backward => ("sequence < $3", "desc"),
    };
    let sql = format!(
        "select sequence, forwarder_device_id, user_id, recipient_key_fingerprint, wrapped_key,
                signature, created_at
         from chat.forwarded_keys
         where recipient_device_id = $1 and conversation_id = $2 and sequence in (
             select distinct sequence from chat.forwarded_keys
             where recipient_device_id = $1 and conversation_id = $2 and {condition}
             order by sequence {order} limit $4)
         order by sequence {order}, forwarder_device_id"
    );
    let keys: Vec<KeyRow> = sqlx::query_as(&sql)
        .bind(device.0)
        .bind(conversation.0)
        .bind(to_i64(from))
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sequences: Vec<i64> = keys.iter().map(|key| key.sequence).collect();
    let messages: Vec<MessageRow> = sqlx::query_as(&format!(
        "select {MESSAGE_COLUMNS} from chat.messages m
         where m.conversation_id = $1 and m.sequence = any($2)"
    ))
    .bind(conversation.0)
    .bind(&sequences)
    .fetch_all(db)
    .await?;
    let mut by_sequence: HashMap<i64, MessageRow> = messages
        .into_iter()
        .map(|message| (message.sequence(), message))
        .collect();
    let mut delivered: Vec<(DeliveredMessage, Vec<DeliveredForwardedKey>)> = Vec::new();
    for key in keys {
        let forwarded = DeliveredForwardedKey {
            recipient: device,
            forwarder_device: DeviceId(key.forwarder_device_id),
            forwarder_user: UserId(key.user_id),
            recipient_key_fingerprint: key.recipient_key_fingerprint,
            wrapped_key: key.wrapped_key,
            signature: key.signature,
            forwarded_at: key.created_at,
        };
        match delivered.last_mut() {
            Some((message, keys)) if message.sequence == to_u64(key.sequence) => {
                keys.push(forwarded);
            }
            _ => {
                // Deleted meanwhile (the keys cascade with it): left out.
                let Some(message) = by_sequence.remove(&key.sequence) else {
                    continue;
                };
                delivered.push((message.delivered(conversation, Vec::new()), vec![forwarded]));
            }
        }
    }
    Ok(delivered)
}
