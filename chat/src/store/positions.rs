//! Delivered and read positions per device (Acknowledge), and where streams resume.

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Error,
    ids::{ConversationId, DeviceId, UserId},
    message::{to_i64, to_u64},
};

/// A device's positions in one conversation after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    /// Highest sequence received.
    pub delivered: u64,
    /// Highest sequence read.
    pub read: u64,
}

/// Moves the device's positions forward: each becomes the greatest of the stored value and the
/// new one, which is first capped at the conversation's last sequence (a position past the end
/// would hide future messages from the unread count). 0 leaves a position unchanged. The caller
/// must have checked participation.
///
/// # Errors
/// [`Error::ConversationNotFound`] when the conversation does not exist.
pub async fn acknowledge(
    db: &PgPool,
    user: UserId,
    device: DeviceId,
    conversation: ConversationId,
    delivered: u64,
    read: u64,
) -> Result<Positions, Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "insert into chat.device_positions
             (device_id, conversation_id, user_id, delivered_sequence, read_sequence)
         select $1, c.id, $3, least($4, c.last_sequence), least($5, c.last_sequence)
         from chat.conversations c where c.id = $2
         on conflict on constraint device_positions_pkey do update set
             delivered_sequence = greatest(device_positions.delivered_sequence,
                                           excluded.delivered_sequence),
             read_sequence = greatest(device_positions.read_sequence, excluded.read_sequence),
             updated_at = now()
         returning delivered_sequence, read_sequence",
    )
    .bind(device.0)
    .bind(conversation.0)
    .bind(user.0)
    .bind(to_i64(delivered))
    .bind(to_i64(read))
    .fetch_optional(db)
    .await?;
    let (delivered, read) = row.ok_or(Error::ConversationNotFound)?;
    Ok(Positions {
        delivered: to_u64(delivered),
        read: to_u64(read),
    })
}

/// Where a stream resumes in one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// The conversation.
    pub conversation: ConversationId,
    /// Delivery continues after this sequence.
    pub after: u64,
    /// The conversation's newest sequence: nothing to read when `after` is not below it.
    pub last_sequence: u64,
}

/// Where a stream of `device` resumes in each of `user`'s conversations (direct ones, and those
/// of `groups`, the user's groups): `requested` where the client gave a position for a
/// conversation it takes part in, else the stored delivered position, else 0. Positions for other
/// conversations are ignored. One query, whatever the number of conversations.
///
/// # Errors
/// Database failures.
pub async fn resume_points(
    db: &PgPool,
    user: UserId,
    device: DeviceId,
    groups: &[ConversationId],
    requested: &HashMap<ConversationId, u64>,
) -> Result<Vec<ResumePoint>, Error> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "select c.id, coalesce(d.delivered_sequence, 0), c.last_sequence
         from chat.conversations c
         left join chat.device_positions d on d.conversation_id = c.id and d.device_id = $2
         where c.id in (select p.conversation_id from chat.conversation_participants p
                        where p.user_id = $1)
            or c.id = any($3)",
    )
    .bind(user.0)
    .bind(device.0)
    .bind(groups.iter().map(|group| group.0).collect::<Vec<_>>())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, stored, last_sequence)| {
            let conversation = ConversationId(id);
            ResumePoint {
                conversation,
                after: requested
                    .get(&conversation)
                    .copied()
                    .unwrap_or(to_u64(stored)),
                last_sequence: to_u64(last_sequence),
            }
        })
        .collect())
}
