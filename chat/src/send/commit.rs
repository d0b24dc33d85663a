//! Group commit: one task per replica collects concurrent sends and commits them together.
//!
//! One commit per message caps a machine at a few thousand messages per second (every commit
//! waits for its WAL flush); one transaction with multi-row inserts (`unnest` of arrays) carries
//! hundreds. The task commits one batch at a time: while a batch commits, new sends queue and
//! form the next batch (at most `CHAT_COMMIT_MAX_BATCH`), so batches grow with the load by
//! themselves. `CHAT_COMMIT_WINDOW_MICROS` can make the task also wait that long after the first
//! send for more; it defaults to 0 because on this project's benchmark machine a 1 ms window
//! added about 2 ms to an idle sender's ack (5.8 ms against 3.7 ms at 100 messages/s, `bench
//! dm-latency`) and no throughput (3,783 against 3,712 messages/s, `bench chat-send`: within the
//! noise). Each sender's future resolves only after the commit: the ack means durable.
//!
//! A batch is one call of `chat.commit_messages` (one round trip, one transaction; see its
//! migration): lock the batch's conversation rows (in id order, so two replicas cannot
//! deadlock), answer sends already stored (retries racing each other) with the original, bump
//! each `last_sequence` by its number of sends and take the sequences from it (gap-free in
//! commit order, as the row lock serialises writers), insert the messages and their keys. Never
//! NOTIFY here: the notify queue lock is held across the commit's flush, which serialises every
//! committer; wake-ups are published after the commit (`bus.rs`).
//!
//! The function plans its statements once per session (generic plans), with a plan that reaches
//! `chat.messages` and `chat.conversations` only through their unique indexes, whatever the
//! statistics say (migration 20261127140000 explains how). PostgreSQL used to replan its big
//! statement on most calls, and that was a third of an idle sender's commit: one single-message
//! call went from 1.5-2.1 to 1.0-1.1 ms (pgbench, one client, interleaved). Forcing generic plans
//! alone is not enough: a plan made while the statistics say `chat.messages` is empty looks
//! retries up with a full scan, and commits slowed down as the table grew (2,838 to 1,442
//! messages/s over five 3-second rounds of `bench chat-send`). A test plans the function on
//! tables analysed empty, grows them, and counts sequential scans.
//!
//! With traces exported (`common::telemetry`), each batch has a `commit_batch` span: the child
//! of its first send's request span, and following from (an OpenTelemetry link to) every other
//! send's. A span has one parent but a batch serves many requests; a root span with links only
//! would leave every send's trace without its commit, while this way the trace of at least one
//! send shows where its time went, and the others reach that batch through the links. With
//! traces off, no span is kept or made.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{PgPool, Postgres};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    Error,
    config::CommitSettings,
    delivery::{
        bus::{Bus, BusEvent},
        recent::RecentMessages,
    },
    ids::{ConversationId, DeviceId, UserId},
    message::{Committed, DeliveredKey, DeliveredMessage, StoredMessage, V2Fields, to_i64, to_u64},
    metrics::{BatchOutcome, CommitMetrics},
};

/// The unique constraint that makes retries idempotent.
const CLIENT_MESSAGE_ID_KEY: &str = "messages_sender_device_id_client_message_id_key";

/// A checked send, ready to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Server-assigned id.
    pub id: Uuid,
    /// The conversation.
    pub conversation: ConversationId,
    /// The sender.
    pub sender_user: UserId,
    /// The sending device.
    pub sender_device: DeviceId,
    /// The sender's id for retries.
    pub client_message_id: String,
    /// 12 bytes.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
    /// 32 bytes.
    pub key_commitment: Vec<u8>,
    /// 64 bytes.
    pub signature: Vec<u8>,
    /// 32 bytes, from the full recipient list.
    pub recipients_digest: Vec<u8>,
    /// The suite (1 or 2).
    pub suite: i16,
    /// Suite V2's fields.
    pub v2: V2Fields,
    /// One per recipient device.
    pub recipients: Vec<RecipientKey>,
}

impl NewMessage {
    /// The message as stored: `sequence` and `sent_at` come from its commit.
    fn into_delivered(self, sequence: u64, sent_at: OffsetDateTime) -> DeliveredMessage {
        DeliveredMessage {
            id: self.id,
            conversation: self.conversation,
            sequence,
            sent_at,
            sender_user: self.sender_user,
            sender_device: self.sender_device,
            client_message_id: self.client_message_id,
            suite: self.suite,
            nonce: self.nonce,
            ciphertext: self.ciphertext,
            key_commitment: self.key_commitment,
            signature: self.signature,
            recipients_digest: self.recipients_digest,
            v2: self.v2,
            keys: self
                .recipients
                .into_iter()
                .map(|key| DeliveredKey {
                    device: key.device,
                    key_fingerprint: key.key_fingerprint,
                    wrapped_key: key.wrapped_key,
                    leaf_index: key.leaf_index,
                    inclusion_proof: key.inclusion_proof,
                })
                .collect(),
        }
    }
}

/// The content key wrapped for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientKey {
    /// The recipient device.
    pub device: DeviceId,
    /// Its encryption key's fingerprint.
    pub key_fingerprint: Vec<u8>,
    /// The wrapped content key.
    pub wrapped_key: Vec<u8>,
    /// V2: the entry's place in the recipients tree.
    pub leaf_index: u32,
    /// V2: its inclusion proof.
    pub inclusion_proof: Vec<u8>,
}

/// The handle senders use; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Pending>,
}

struct Pending {
    message: NewMessage,
    reply: Reply,
    /// The sender's span, when traces are exported.
    span: Option<tracing::Span>,
}

/// Where a sender waits for its answer.
type Reply = oneshot::Sender<Result<Committed, Error>>;

impl Committer {
    /// Starts the committing task. It ends when every handle is dropped and the queue is empty.
    /// What it commits goes to `recent` (this replica's tails), then wakes streams through `bus`.
    pub fn start(
        db: PgPool,
        settings: CommitSettings,
        bus: Arc<dyn Bus>,
        recent: Arc<RecentMessages>,
        metrics: CommitMetrics,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(settings.queue);
        tokio::spawn(run(db, receiver, settings, bus, recent, metrics));
        Self { queue }
    }

    /// Stores `message`; resolves after its transaction committed.
    ///
    /// # Errors
    /// [`Error::ClientMessageIdReused`] when a concurrent send took the client message id for
    /// another envelope; [`Error::CommitOutcomeUnknown`] when the database was unavailable or
    /// the connection broke (stored or not: a retry settles it); [`Error::Internal`] when the
    /// batch failed otherwise (logged).
    pub async fn commit(&self, message: NewMessage) -> Result<Committed, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                message,
                reply,
                span: common::telemetry::exporting().then(tracing::Span::current),
            })
            .await
            .map_err(|_| Error::Internal("the committer stopped"))?;
        answer
            .await
            .map_err(|_| Error::Internal("the committer dropped a send"))?
    }
}

async fn run(
    db: PgPool,
    mut queue: mpsc::Receiver<Pending>,
    settings: CommitSettings,
    bus: Arc<dyn Bus>,
    recent: Arc<RecentMessages>,
    metrics: CommitMetrics,
) {
    let mut batch = Vec::with_capacity(settings.max_batch);
    while queue.recv_many(&mut batch, settings.max_batch).await > 0 {
        collect_more(&mut queue, &mut batch, &settings).await;
        let pending = std::mem::replace(&mut batch, Vec::with_capacity(settings.max_batch));
        let (size, started) = (pending.len(), Instant::now());
        let span = batch_span(&pending);
        let outcome = commit_batch(&db, pending, bus.as_ref(), &recent)
            .instrument(span)
            .await;
        metrics.committed(size, started.elapsed(), outcome);
    }
}

/// The span of one batch's commit (see the module's docs): none unless traces are exported.
fn batch_span(pending: &[Pending]) -> tracing::Span {
    let mut senders = pending.iter().filter_map(|one| one.span.as_ref());
    let Some(first) = senders.next() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(parent: first, "commit_batch", n_sends = pending.len());
    for other in senders {
        span.follows_from(other);
    }
    span
}

/// Waits up to the window for more sends, without passing the batch limit.
async fn collect_more(
    queue: &mut mpsc::Receiver<Pending>,
    batch: &mut Vec<Pending>,
    settings: &CommitSettings,
) {
    if settings.window == Duration::ZERO {
        return;
    }
    let deadline = tokio::time::Instant::now() + settings.window;
    while batch.len() < settings.max_batch {
        let room = settings.max_batch - batch.len();
        match tokio::time::timeout_at(deadline, queue.recv_many(batch, room)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Commits one batch and answers every sender. When two sends with the same client message id
/// but different conversations race (two replicas, or one replica's consecutive batches), the
/// conversation locks do not order them: the later batch fails on the unique constraint and is
/// retried one send per transaction, where the duplicate check sees the winner.
async fn commit_batch(
    db: &PgPool,
    pending: Vec<Pending>,
    bus: &dyn Bus,
    recent: &RecentMessages,
) -> BatchOutcome {
    // The messages are moved, not copied: a batch may carry megabytes of ciphertext.
    let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = pending
        .into_iter()
        .map(|one| (one.message, one.reply))
        .unzip();
    match try_commit(db, &messages).await {
        Ok(outcome) => {
            settle(messages, replies, outcome, bus, recent);
            BatchOutcome::Ok
        }
        // The conflicting send committed first, so the retries see it as stored.
        Err(error) if is_client_id_conflict(&error) => {
            for (message, reply) in messages.into_iter().zip(replies) {
                let one = vec![message];
                match try_commit(db, &one).await {
                    Ok(outcome) => settle(one, vec![reply], outcome, bus, recent),
                    Err(error) => fail(vec![reply], &error),
                }
            }
            BatchOutcome::ConflictRetried
        }
        Err(error) => {
            fail(replies, &error);
            BatchOutcome::Failed
        }
    }
}

/// What a committed batch answers, in the order of the batch.
struct Outcome {
    answers: Vec<Result<Committed, Error>>,
    wakeups: Vec<(ConversationId, u64)>,
}

/// Hands the stored messages to this replica's tails, wakes the streams, answers the senders.
fn settle(
    messages: Vec<NewMessage>,
    replies: Vec<Reply>,
    outcome: Outcome,
    bus: &dyn Bus,
    recent: &RecentMessages,
) {
    // Before the wake-up, so the woken streams find the messages in memory. A send this batch
    // stored is answered with a committed message that is not a duplicate.
    recent.offer_committed(messages.into_iter().zip(&outcome.answers).filter_map(
        |(message, answer)| match answer {
            Ok(committed) if !committed.duplicate => {
                Some(message.into_delivered(committed.sequence, committed.sent_at))
            }
            _ => None,
        },
    ));
    // Then the wake-up: it must not wait for the senders' tasks to run.
    for (conversation, last_sequence) in outcome.wakeups {
        bus.publish(BusEvent::NewMessages {
            conversation,
            last_sequence,
        });
    }
    for (reply, result) in replies.into_iter().zip(outcome.answers) {
        // A sender that gave up no longer listens; its message is stored all the same.
        let _ = reply.send(result);
    }
}

/// Answers every send of a failed batch. A database that is unreachable or a connection that
/// broke mid-call leaves the outcome unknown (the commit may have happened and its answer been
/// lost): UNAVAILABLE, which clients retry with the same client message id, settling it either
/// way. Never an acknowledgement without a commit, and never INTERNAL for what a retry fixes.
fn fail(replies: Vec<Reply>, error: &sqlx::Error) {
    let unavailable = common::db::is_unavailable(error);
    if unavailable {
        tracing::warn!(%error, n_sends = replies.len(), "a send batch's commit failed: the database is unavailable");
    } else {
        tracing::error!(%error, n_sends = replies.len(), "a send batch failed to commit");
    }
    for reply in replies {
        let error = if unavailable {
            Error::CommitOutcomeUnknown
        } else {
            Error::Internal("the message could not be stored")
        };
        let _ = reply.send(Err(error));
    }
}

fn is_client_id_conflict(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.constraint())
        == Some(CLIENT_MESSAGE_ID_KEY)
}

/// One row of `chat.commit_messages`: a send of the batch, new or stored before.
#[derive(sqlx::FromRow)]
struct CommitRow {
    /// 1-based position in the arrays passed.
    ordinal: i64,
    id: Uuid,
    conversation_id: Uuid,
    sequence: i64,
    created_at: OffsetDateTime,
    signature: Vec<u8>,
    /// Committed before this batch: a retry.
    stored: bool,
}

/// Commits `messages` in one round trip (`chat.commit_messages`, see its migration for the
/// locking and sequencing rules).
async fn try_commit(db: &PgPool, messages: &[NewMessage]) -> Result<Outcome, sqlx::Error> {
    // Within the batch, the first send of a (device, client id) wins; the function gets each
    // (device, client id) once.
    let mut first_of: HashMap<(DeviceId, &str), usize> = HashMap::new();
    let mut unique = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let key = (message.sender_device, message.client_message_id.as_str());
        first_of.entry(key).or_insert_with(|| {
            unique.push(index);
            index
        });
    }
    let rows: Vec<CommitRow> = commit_query(messages, &unique).fetch_all(db).await?;

    let mut by_index: HashMap<usize, &CommitRow> = HashMap::with_capacity(rows.len());
    let mut wakeups: HashMap<ConversationId, u64> = HashMap::new();
    for row in &rows {
        let Some(&index) = usize::try_from(row.ordinal - 1)
            .ok()
            .and_then(|position| unique.get(position))
        else {
            continue;
        };
        by_index.insert(index, row);
        if !row.stored {
            let newest = wakeups
                .entry(ConversationId(row.conversation_id))
                .or_default();
            *newest = (*newest).max(to_u64(row.sequence));
        }
    }
    tracing::debug!(
        n_sends = messages.len(),
        n_new = rows.iter().filter(|row| !row.stored).count(),
        n_conversations = wakeups.len(),
        "send batch committed"
    );

    let answers = messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let key = (message.sender_device, message.client_message_id.as_str());
            // Every key has a first occurrence (set above). The function answers each, unless
            // its conversation was deleted meanwhile (no row to bump).
            let winner = first_of.get(&key).copied().unwrap_or(index);
            let Some(row) = by_index.get(&winner) else {
                return Err(Error::ConversationNotFound);
            };
            let original = StoredMessage {
                conversation: ConversationId(row.conversation_id),
                signature: row.signature.clone(),
                committed: Committed {
                    message_id: row.id,
                    sequence: to_u64(row.sequence),
                    sent_at: row.created_at,
                    duplicate: false,
                },
            };
            if winner == index && !row.stored {
                Ok(original.committed)
            } else {
                original.answer_retry(message.conversation, &message.signature)
            }
        })
        .collect();
    Ok(Outcome {
        answers,
        wakeups: wakeups.into_iter().collect(),
    })
}

/// `chat.commit_messages` over the sends at `unique` (indexes into `messages`).
fn commit_query<'q>(
    messages: &'q [NewMessage],
    unique: &'q [usize],
) -> sqlx::query::QueryAs<'q, Postgres, CommitRow, sqlx::postgres::PgArguments> {
    let sends = || unique.iter().map(|&index| &messages[index]);
    let keys = || {
        sends().enumerate().flat_map(|(position, message)| {
            // Positions are 1-based, as `with ordinality` counts.
            let ordinal = i64::try_from(position + 1).unwrap_or(i64::MAX);
            message.recipients.iter().map(move |key| (ordinal, key))
        })
    };
    sqlx::query_as(
        "select ordinal, id, conversation_id, sequence, created_at, signature, stored
         from chat.commit_messages($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                   $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(sends().map(|m| m.conversation.0).collect::<Vec<_>>())
    .bind(sends().map(|m| m.id).collect::<Vec<_>>())
    .bind(sends().map(|m| m.sender_user.0).collect::<Vec<_>>())
    .bind(sends().map(|m| m.sender_device.0).collect::<Vec<_>>())
    .bind(
        sends()
            .map(|m| m.client_message_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(sends().map(|m| m.nonce.as_slice()).collect::<Vec<_>>())
    .bind(sends().map(|m| m.ciphertext.as_slice()).collect::<Vec<_>>())
    .bind(
        sends()
            .map(|m| m.key_commitment.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(sends().map(|m| m.signature.as_slice()).collect::<Vec<_>>())
    .bind(
        sends()
            .map(|m| m.recipients_digest.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(keys().map(|(ordinal, _)| ordinal).collect::<Vec<_>>())
    .bind(keys().map(|(_, key)| key.device.0).collect::<Vec<_>>())
    .bind(
        keys()
            .map(|(_, key)| key.key_fingerprint.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(
        keys()
            .map(|(_, key)| key.wrapped_key.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(sends().map(|m| m.suite).collect::<Vec<_>>())
    .bind(
        sends()
            .map(|m| to_i64(m.v2.sender_counter))
            .collect::<Vec<_>>(),
    )
    .bind(
        sends()
            .map(|m| m.v2.previous_envelope_hash.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(
        sends()
            .map(|m| to_i64(m.v2.sender_time_ms))
            .collect::<Vec<_>>(),
    )
    .bind(
        sends()
            .map(|m| i32::try_from(m.v2.recipient_count).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(
        keys()
            .map(|(_, key)| i32::try_from(key.leaf_index).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(
        keys()
            .map(|(_, key)| key.inclusion_proof.as_slice())
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{INSERT_MESSAGE, last_sequence, new_conversation};

    fn send(
        conversation: ConversationId,
        device: DeviceId,
        client_id: &str,
        sig: u8,
    ) -> NewMessage {
        NewMessage {
            id: Uuid::now_v7(),
            conversation,
            sender_user: UserId(Uuid::from_u128(1)),
            sender_device: device,
            client_message_id: client_id.to_owned(),
            nonce: vec![0; 12],
            ciphertext: vec![1; 32],
            key_commitment: vec![2; 32],
            signature: vec![sig; 64],
            recipients_digest: vec![3; 32],
            suite: 1,
            v2: V2Fields::default(),
            recipients: vec![RecipientKey {
                device: DeviceId(Uuid::from_u128(9)),
                key_fingerprint: vec![4; 32],
                wrapped_key: vec![5; 256],
                leaf_index: 0,
                inclusion_proof: Vec::new(),
            }],
        }
    }

    async fn stored_keys(db: &PgPool, conversation: ConversationId) -> Vec<(i64, i64)> {
        sqlx::query_as(
            "select m.sequence, count(k.device_id) from chat.messages m
             left join chat.message_keys k
               on k.conversation_id = m.conversation_id and k.sequence = m.sequence
             where m.conversation_id = $1 group by m.sequence order by m.sequence",
        )
        .bind(conversation.0)
        .fetch_all(db)
        .await
        .unwrap()
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn one_batch_numbers_each_conversation_gap_free_and_answers_retries(db: PgPool) {
        let (a, b) = (new_conversation(&db).await, new_conversation(&db).await);
        let device = DeviceId(Uuid::from_u128(7));
        let first = try_commit(&db, &[send(a, device, "stored", 1)])
            .await
            .unwrap();
        let original = first.answers[0].as_ref().unwrap();

        let batch = [
            send(b, device, "b1", 2),
            send(a, device, "a2", 3),
            // A retry of the stored message: the original, whatever the new send's id.
            send(a, device, "stored", 1),
            // The same client id with another envelope.
            send(a, device, "stored", 9),
            send(b, device, "b2", 4),
            // A retry within the batch: the first one wins.
            send(a, device, "a2", 3),
            send(a, device, "a3", 5),
        ];
        let outcome = try_commit(&db, &batch).await.unwrap();

        let answers: Vec<_> = outcome.answers.iter().map(|a| a.as_ref().ok()).collect();
        let sequence = |index: usize| answers[index].map(|c| (c.sequence, c.duplicate));
        assert_eq!(sequence(0), Some((1, false)));
        assert_eq!(sequence(1), Some((2, false)));
        assert_eq!(
            answers[2].copied(),
            Some(Committed {
                duplicate: true,
                ..*original
            })
        );
        assert!(matches!(
            outcome.answers[3],
            Err(Error::ClientMessageIdReused)
        ));
        assert_eq!(sequence(4), Some((2, false)));
        assert_eq!(sequence(5), Some((2, true)));
        assert_eq!(answers[5].unwrap().message_id, batch[1].id);
        assert_eq!(sequence(6), Some((3, false)));
        let mut wakeups = outcome.wakeups.clone();
        wakeups.sort_unstable();
        let mut expected = vec![(a, 3), (b, 2)];
        expected.sort_unstable();
        assert_eq!(wakeups, expected);
        // Every message stored once, with its key; last_sequence matches.
        assert_eq!(stored_keys(&db, a).await, [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(stored_keys(&db, b).await, [(1, 1), (2, 1)]);
        let last = last_sequence(&db, a).await;
        assert_eq!(last, 3);
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn a_client_id_raced_into_another_conversation_fails_on_its_constraint(db: PgPool) {
        // Two replicas racing one client id for two conversations: the batch that loses fails
        // on the unique constraint (the committer then retries its sends one at a time, and the
        // retry sees the winner), and it numbered nothing.
        let (a, b) = (new_conversation(&db).await, new_conversation(&db).await);
        let device = DeviceId(Uuid::from_u128(7));
        let mut winner = db.begin().await.unwrap();
        sqlx::query(&format!(
            "{INSERT_MESSAGE} values ($1, 1, $2, $2, $3, 'raced', 1, $4, $5, $6, $7, $6)",
        ))
        .bind(a.0)
        .bind(Uuid::now_v7())
        .bind(device.0)
        .bind(vec![0_u8; 12])
        .bind(vec![1_u8; 32])
        .bind(vec![2_u8; 32])
        .bind(vec![3_u8; 64])
        .execute(&mut *winner)
        .await
        .unwrap();
        let loser = tokio::spawn({
            let db = db.clone();
            async move { try_commit(&db, &[send(b, device, "raced", 1)]).await }
        });
        // Wait until the loser waits on the winner's unique index entry.
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
                 where datname = current_database() and wait_event_type = 'Lock'
                   and query like '%commit_messages%'",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        winner.commit().await.unwrap();

        let Err(error) = loser.await.unwrap() else {
            panic!("the losing batch committed");
        };
        assert!(is_client_id_conflict(&error), "{error}");
        let last = last_sequence(&db, b).await;
        assert_eq!(last, 0);
        assert!(stored_keys(&db, b).await.is_empty());
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn a_plan_made_on_empty_tables_still_reads_them_only_through_indexes(db: PgPool) {
        // The function plans once per session (migration 20261127140000). Plan it while the
        // statistics say the tables are empty, grow them without ANALYZE, then count its
        // sequential scans.
        let (a, b) = (new_conversation(&db).await, new_conversation(&db).await);
        let crowded = new_conversation(&db).await;
        let device = DeviceId(Uuid::from_u128(7));
        // Statistics that say "empty" (a never-analysed table is assumed to be 10 pages).
        sqlx::query("vacuum analyze chat.messages, chat.conversations")
            .execute(&db)
            .await
            .unwrap();
        let mut session = db.acquire().await.unwrap();
        for n in 0..3 {
            let messages = [send(a, device, &format!("early {n}"), 1)];
            commit_query(&messages, &[0])
                .fetch_all(&mut *session)
                .await
                .unwrap();
        }
        sqlx::query(
            "insert into chat.conversations (id, kind, group_id)
             select id, 'group', id from (select gen_random_uuid() as id
                                          from generate_series(1, 5000)) as new",
        )
        .execute(&db)
        .await
        .unwrap();
        sqlx::query(&format!(
            "{INSERT_MESSAGE}
             select $1, n, gen_random_uuid(), $2, $2, n::text, 1, $3, $4, $4, $5, $4
             from generate_series(1, 20000) as n",
        ))
        .bind(crowded.0)
        .bind(device.0)
        .bind(vec![0_u8; 12])
        .bind(vec![1_u8; 32])
        .bind(vec![2_u8; 64])
        .execute(&db)
        .await
        .unwrap();

        let mut transaction = sqlx::Connection::begin(&mut *session).await.unwrap();
        let batch = [
            send(a, device, "late", 1),
            send(b, device, "late too", 2),
            // A retry: found through the unique index, not a scan.
            send(a, device, "early 0", 1),
        ];
        let rows: Vec<CommitRow> = commit_query(&batch, &[0, 1, 2])
            .fetch_all(&mut *transaction)
            .await
            .unwrap();
        assert_eq!(rows.iter().filter(|row| row.stored).count(), 1);
        let scans: Vec<(String, i64)> = sqlx::query_as(
            "select relname::text, seq_scan from pg_stat_xact_user_tables
             where schemaname = 'chat' and relname in ('messages', 'conversations')
             order by relname",
        )
        .fetch_all(&mut *transaction)
        .await
        .unwrap();
        assert_eq!(
            scans,
            [("conversations".to_owned(), 0), ("messages".to_owned(), 0)]
        );
    }

    /// A bus that drops what is published (no other replica listens).
    struct NoBus;

    impl Bus for NoBus {
        fn publish(&self, _: BusEvent) {}
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BusEvent> {
            tokio::sync::broadcast::channel(1).1
        }
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn a_committed_message_continues_a_started_tail_without_being_read_back(db: PgPool) {
        let (started, unread) = (new_conversation(&db).await, new_conversation(&db).await);
        let (sender, reader) = (DeviceId(Uuid::from_u128(7)), DeviceId(Uuid::from_u128(9)));
        let recent = RecentMessages::new(
            db.clone(),
            crate::config::RecentSettings {
                budget_bytes: 1 << 20,
                per_conversation: 64,
                max_conversations: 100,
            },
        );
        let commit_and_settle = |batch: Vec<NewMessage>| {
            let (db, recent) = (db.clone(), &recent);
            async move {
                let outcome = try_commit(&db, &batch).await.unwrap();
                let replies = batch.iter().map(|_| oneshot::channel().0).collect();
                settle(batch, replies, outcome, &NoBus, recent);
            }
        };
        // A stream starts the tail of `started` (nothing after its cursor yet: sequence 1 is
        // read from the database); `unread` has no tail.
        commit_and_settle(vec![send(started, sender, "first", 1)]).await;
        recent
            .read(started, reader, 0, 1, 10)
            .await
            .unwrap()
            .unwrap();

        let batch = vec![
            send(started, sender, "second", 2),
            send(unread, sender, "elsewhere", 3),
            send(started, sender, "third", 4),
        ];
        commit_and_settle(batch).await;
        let from_database: Vec<_> = crate::store::history::read_for_device(
            &db,
            reader,
            started,
            crate::store::history::Direction::Forward,
            1,
            10,
        )
        .await
        .unwrap()
        .into_iter()
        .map(crate::delivery::wire::message_pb)
        .collect();
        assert_eq!(from_database.len(), 2);
        // Gone from the database: what the tail gives now, it did not read back.
        sqlx::query("delete from chat.messages")
            .execute(&db)
            .await
            .unwrap();

        let read = recent
            .read(started, reader, 1, 3, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.through, 3);
        let delivered: Vec<_> = read.messages.iter().map(|m| m.to_pb()).collect();
        assert_eq!(delivered, from_database);
        // A conversation no stream follows is not cached by a commit.
        assert!(
            recent
                .read(unread, reader, 0, 1, 10)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn deleting_messages_or_their_conversation_deletes_their_keys(db: PgPool) {
        let (a, b) = (new_conversation(&db).await, new_conversation(&db).await);
        let device = DeviceId(Uuid::from_u128(7));
        let batch = [
            send(a, device, "a1", 1),
            send(a, device, "a2", 2),
            send(b, device, "b1", 3),
        ];
        try_commit(&db, &batch).await.unwrap();

        sqlx::query("delete from chat.messages where conversation_id = $1 and sequence = 1")
            .bind(a.0)
            .execute(&db)
            .await
            .unwrap();
        assert_eq!(stored_keys(&db, a).await, [(2, 1)]);
        sqlx::query("delete from chat.conversations where id = $1")
            .bind(b.0)
            .execute(&db)
            .await
            .unwrap();
        let left: Vec<(Uuid, i64)> =
            sqlx::query_as("select conversation_id, sequence from chat.message_keys")
                .fetch_all(&db)
                .await
                .unwrap();
        assert_eq!(left, [(a.0, 2)]);
    }
}
