//! The newest messages of the conversations this replica's streams follow, with every
//! recipient's wrapped key, read from the database once and shared by every stream at the tail.
//!
//! Why: without it each woken stream reads the new message itself, so one message to a group of
//! 1,000 online members costs 1,000 queries. With it the first stream to need a message reads it
//! (one query for the messages, one for their keys) and the others take it from memory, each
//! only with its own device's key (a device never receives another device's wrapped key). What
//! the tail holds is already encoded for the wire (`wire.rs`), so no stream re-serialises it.
//! Messages this replica commits are not even read once: the committer hands them to the tail
//! they continue before it wakes the streams (`offer_committed`); only messages from other
//! replicas are read back.
//!
//! What a tail holds is always every message of its conversation in `(after, end]`: it starts at
//! a stream's cursor and only grows by reading "everything after `end`", which sees a prefix of
//! the conversation because sequences are assigned in commit order (see `stream.rs`). A stream
//! whose cursor is before a tail, or far behind on a conversation nobody cached, reads the
//! database as before: the cache answers only what it holds contiguously, so it never skips.
//!
//! Memory is bounded by `CHAT_RECENT_BYTES` across all conversations (least recently used tails
//! are dropped first; one tail holds at most a sixteenth of it), by
//! `CHAT_RECENT_PER_CONVERSATION` messages per tail and by `CHAT_RECENT_CONVERSATIONS` tails.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Error,
    config::RecentSettings,
    delivery::wire::{DeviceMessage, EncodedKey, EncodedMessage},
    ids::{ConversationId, DeviceId},
    message::{DeliveredKey, DeliveredMessage, to_i64},
    store::history::{MESSAGE_COLUMNS, MessageRow},
};

/// A stream whose cursor is this many messages or more behind does not start a tail: it is
/// replaying history, which is read for its device only (a tail holds every device's key).
const MAX_SPAN_TO_START_A_TAIL: u64 = 32;

/// One tail holds at most this fraction of `CHAT_RECENT_BYTES` (but always its newest message):
/// a busy large group keeps its last few messages (a 1,000-member message is ~400 KB) rather
/// than pushing every other conversation out, which sent their streams back to the database.
const TAILS_PER_BUDGET: usize = 16;

/// Bytes counted for a message or key beyond its byte fields (ids, lengths, map entries).
const OVERHEAD_BYTES: usize = 96;

/// The shared tails of this replica.
pub struct RecentMessages {
    db: PgPool,
    settings: RecentSettings,
    state: Mutex<State>,
    clock: AtomicU64,
    /// Tails dropped to stay within the bounds, for the metrics.
    evictions: Counter,
    /// The bytes every tail holds, for the metrics.
    bytes: Gauge,
}

#[derive(Default)]
struct State {
    tails: HashMap<ConversationId, Arc<Slot>>,
    /// Bytes held by every attached tail.
    bytes: usize,
}

struct Slot {
    conversation: ConversationId,
    tail: tokio::sync::Mutex<Tail>,
    last_used: AtomicU64,
}

#[derive(Default)]
struct Tail {
    /// The messages are every message in `(after, end]`; `None` until a stream starts the tail.
    after: Option<u64>,
    messages: VecDeque<Arc<CachedMessage>>,
    bytes: usize,
    /// Dropped from the cache: whoever still holds it must not use it.
    detached: bool,
}

/// A message with every recipient's key, encoded once for every stream (`wire.rs`).
struct CachedMessage {
    message: Arc<EncodedMessage>,
    keys: HashMap<DeviceId, EncodedKey>,
    bytes: usize,
}

impl CachedMessage {
    /// Encodes `message` and `keys` (every recipient's).
    fn new(message: DeliveredMessage, keys: HashMap<DeviceId, EncodedKey>) -> Self {
        let message = EncodedMessage::new(message);
        let bytes = message_bytes(&message, &keys);
        Self {
            message: Arc::new(message),
            keys,
            bytes,
        }
    }
}

/// What [`RecentMessages::read`] found for one device.
#[derive(Debug)]
pub struct TailRead {
    /// The messages wrapped for the device, in sequence order.
    pub messages: Vec<DeviceMessage>,
    /// Every message of the conversation up to this sequence was looked at: the device's cursor
    /// may move here.
    pub through: u64,
}

impl Tail {
    fn end(&self) -> Option<u64> {
        let after = self.after?;
        Some(self.messages.back().map_or(after, |m| m.message.sequence()))
    }
}

impl RecentMessages {
    /// An empty cache over `db`.
    pub fn new(db: PgPool, settings: RecentSettings) -> Self {
        Self {
            db,
            settings,
            state: Mutex::default(),
            clock: AtomicU64::new(0),
            evictions: Counter::default(),
            bytes: Gauge::default(),
        }
    }

    /// Its eviction counter and its bytes gauge (shared: register them once).
    pub fn metrics(&self) -> (Counter, Gauge) {
        (self.evictions.clone(), self.bytes.clone())
    }

    /// The messages of `conversation` after `cursor` wrapped for `device`, at most `limit`,
    /// reading what the tail lacks up to `upto` (a sequence known to be committed). `None` when
    /// the tail cannot answer from `cursor` (the caller reads the database for its device).
    ///
    /// # Errors
    /// Database failures.
    pub async fn read(
        &self,
        conversation: ConversationId,
        device: DeviceId,
        cursor: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Option<TailRead>, Error> {
        if upto <= cursor || limit == 0 {
            return Ok(None);
        }
        let slot = self.slot(conversation);
        let mut tail = slot.tail.lock().await;
        if tail.detached {
            return Ok(None);
        }
        let after = match tail.after {
            Some(after) => after,
            None if upto - cursor < MAX_SPAN_TO_START_A_TAIL => {
                tail.after = Some(cursor);
                cursor
            }
            None => return Ok(None),
        };
        if cursor < after {
            return Ok(None);
        }
        let end = tail.end().unwrap_or(after);
        if end < upto {
            let wanted = (upto - end).min(u64::from(limit));
            let loaded = self.load(conversation, end, wanted).await?;
            if loaded.is_empty() {
                // `upto` should be visible; never loop on it: the database path decides.
                return Ok(None);
            }
            self.append(&slot, &mut tail, loaded);
            // Trimming may have dropped messages after the cursor that were just loaded.
            if tail.after.is_some_and(|after| cursor < after) {
                return Ok(None);
            }
        }
        Ok(Some(pick(&tail, device, cursor, limit)))
    }

    /// Appends messages this replica has just committed to their conversation's tail where
    /// they continue it without a gap, so the streams at the tail do not read back what the
    /// committer holds (for a group message, every member's key). `messages` carry every
    /// recipient's key and come in sequence order within each conversation.
    ///
    /// Only a tail some stream started, that no stream is loading right now, and whose end is
    /// the sequence just before the message's is extended; in every other case (another replica
    /// committed in between, the tail was dropped) `read` loads from the database as before.
    pub fn offer_committed(&self, messages: impl IntoIterator<Item = DeliveredMessage>) {
        for mut message in messages {
            let slot = {
                let state = common::sync::lock(&self.state);
                state.tails.get(&message.conversation).cloned()
            };
            let Some(slot) = slot else { continue };
            let Ok(mut tail) = slot.tail.try_lock() else {
                continue;
            };
            let continues_it = tail
                .end()
                .is_some_and(|end| end.checked_add(1) == Some(message.sequence));
            if tail.detached || !continues_it {
                continue;
            }
            let keys = std::mem::take(&mut message.keys)
                .into_iter()
                .map(|key| (key.device, EncodedKey::new(key)))
                .collect();
            self.append(&slot, &mut tail, vec![CachedMessage::new(message, keys)]);
        }
    }

    /// The slot of `conversation`, created if needed, marked as just used.
    fn slot(&self, conversation: ConversationId) -> Arc<Slot> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut state = common::sync::lock(&self.state);
        if !state.tails.contains_key(&conversation)
            && state.tails.len() >= self.settings.max_conversations
        {
            // Down to 90 %, so the sort in `evict` is paid once per many new conversations.
            let keep = self.settings.max_conversations * 9 / 10;
            let evicted = evict(&mut state, conversation, |state| state.tails.len() > keep);
            self.evictions.inc_by(evicted);
            self.bytes
                .set(i64::try_from(state.bytes).unwrap_or(i64::MAX));
        }
        let slot = state
            .tails
            .entry(conversation)
            .or_insert_with(|| {
                Arc::new(Slot {
                    conversation,
                    tail: tokio::sync::Mutex::default(),
                    last_used: AtomicU64::new(now),
                })
            })
            .clone();
        slot.last_used.store(now, Ordering::Relaxed);
        slot
    }

    /// Adds `loaded` to `tail`, then trims it and the cache to their bounds.
    fn append(&self, slot: &Arc<Slot>, tail: &mut Tail, loaded: Vec<CachedMessage>) {
        let mut added = 0;
        for message in loaded {
            added += message.bytes;
            tail.messages.push_back(Arc::new(message));
        }
        tail.bytes += added;
        let budget = self.settings.budget_bytes;
        let per_tail = budget / TAILS_PER_BUDGET;
        let freed = trim_front(tail, |tail| {
            tail.messages.len() > self.settings.per_conversation
                || (tail.messages.len() > 1 && tail.bytes > per_tail)
        });
        let mut state = common::sync::lock(&self.state);
        state.bytes = state.bytes + added - freed;
        if state.bytes > budget {
            let evicted = evict(&mut state, slot.conversation, |state| state.bytes > budget);
            self.evictions.inc_by(evicted);
        }
        if state.bytes > budget {
            // This tail alone is over the budget: keep what fits, at least its newest message.
            let excess = state.bytes - budget;
            let start = tail.bytes;
            state.bytes -= trim_front(tail, |tail| {
                tail.messages.len() > 1 && start - tail.bytes < excess
            });
        }
        self.bytes
            .set(i64::try_from(state.bytes).unwrap_or(i64::MAX));
    }

    /// Every message after `end` (at most `count`) with all its keys.
    async fn load(
        &self,
        conversation: ConversationId,
        end: u64,
        count: u64,
    ) -> Result<Vec<CachedMessage>, Error> {
        let sql = format!(
            "select {MESSAGE_COLUMNS} from chat.messages m
             where m.conversation_id = $1 and m.sequence > $2
             order by m.sequence
             limit $3"
        );
        let rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(conversation.0)
            .bind(to_i64(end))
            .bind(to_i64(count))
            .fetch_all(&self.db)
            .await?;
        let Some(last) = rows.last().map(MessageRow::sequence) else {
            return Ok(Vec::new());
        };
        // Keys commit with their message, so every key of these messages is visible now.
        // (sequence, device, fingerprint, wrapped key, leaf index, inclusion proof)
        type KeyRow = (i64, Uuid, Vec<u8>, Vec<u8>, i32, Vec<u8>);
        let keys: Vec<KeyRow> = sqlx::query_as(
            "select sequence, device_id, key_fingerprint, wrapped_key, leaf_index,
                    inclusion_proof
             from chat.message_keys
             where conversation_id = $1 and sequence > $2 and sequence <= $3",
        )
        .bind(conversation.0)
        .bind(to_i64(end))
        .bind(last)
        .fetch_all(&self.db)
        .await?;
        let mut keys_by_sequence: HashMap<i64, HashMap<DeviceId, EncodedKey>> = HashMap::new();
        for (sequence, device, key_fingerprint, wrapped_key, leaf_index, inclusion_proof) in keys {
            let key = DeliveredKey {
                device: DeviceId(device),
                key_fingerprint,
                wrapped_key,
                leaf_index: u32::try_from(leaf_index).unwrap_or(0),
                inclusion_proof,
            };
            keys_by_sequence
                .entry(sequence)
                .or_default()
                .insert(key.device, EncodedKey::new(key));
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let keys = keys_by_sequence.remove(&row.sequence()).unwrap_or_default();
                CachedMessage::new(row.delivered(conversation, Vec::new()), keys)
            })
            .collect())
    }
}

/// The messages after `cursor` wrapped for `device`, at most `limit`.
fn pick(tail: &Tail, device: DeviceId, cursor: u64, limit: u32) -> TailRead {
    let mut through = cursor;
    let mut messages = Vec::new();
    let first = tail
        .messages
        .partition_point(|cached| cached.message.sequence() <= cursor);
    for cached in tail.messages.range(first..) {
        if messages.len() == limit as usize {
            break;
        }
        through = cached.message.sequence();
        if let Some(key) = cached.keys.get(&device) {
            messages.push(DeviceMessage::new(cached.message.clone(), key.clone()));
        }
    }
    TailRead { messages, through }
}

/// Drops the oldest messages of `tail` while `too_big` says so; returns the bytes freed.
fn trim_front(tail: &mut Tail, too_big: impl Fn(&Tail) -> bool) -> usize {
    let mut freed = 0;
    while too_big(tail) {
        let Some(oldest) = tail.messages.pop_front() else {
            break;
        };
        tail.after = Some(oldest.message.sequence());
        tail.bytes -= oldest.bytes;
        freed += oldest.bytes;
    }
    freed
}

/// Drops the least recently used tails other than `keep` while `too_many` says so, and returns
/// how many it dropped. Tails in use right now are skipped (they are not the least recently used
/// anyway).
fn evict(state: &mut State, keep: ConversationId, too_many: impl Fn(&State) -> bool) -> u64 {
    let mut evicted = 0;
    let mut candidates: Vec<(u64, ConversationId)> = state
        .tails
        .values()
        .filter(|slot| slot.conversation != keep)
        .map(|slot| (slot.last_used.load(Ordering::Relaxed), slot.conversation))
        .collect();
    candidates.sort_unstable();
    for (_, conversation) in candidates {
        if !too_many(state) {
            return evicted;
        }
        let Some(slot) = state.tails.get(&conversation) else {
            continue;
        };
        let Ok(mut tail) = slot.tail.try_lock() else {
            continue;
        };
        let freed = tail.bytes;
        *tail = Tail {
            detached: true,
            ..Tail::default()
        };
        drop(tail);
        state.bytes -= freed;
        state.tails.remove(&conversation);
        evicted += 1;
    }
    evicted
}

fn message_bytes(message: &EncodedMessage, keys: &HashMap<DeviceId, EncodedKey>) -> usize {
    let keys: usize = keys.values().map(|key| key.len() + OVERHEAD_BYTES).sum();
    OVERHEAD_BYTES + message.len() + keys
}

#[cfg(test)]
mod tests {
    use proto::chat::v1 as pb;

    use super::*;
    use crate::test_support::{INSERT_MESSAGE, new_conversation};
    use crate::{
        message::to_u64,
        store::history::{Direction, read_for_device},
    };

    const ALICE: DeviceId = DeviceId(Uuid::from_u128(1));
    const BOB: DeviceId = DeviceId(Uuid::from_u128(2));

    fn settings(per_conversation: usize, budget_bytes: usize) -> RecentSettings {
        RecentSettings {
            budget_bytes,
            per_conversation,
            max_conversations: 100,
        }
    }

    /// Appends a message wrapped for `devices` (its sequence is the next one).
    async fn add_message(db: &PgPool, conversation: ConversationId, devices: &[DeviceId]) -> u64 {
        let (sequence,): (i64,) = sqlx::query_as(
            "update chat.conversations set last_sequence = last_sequence + 1 where id = $1
             returning last_sequence",
        )
        .bind(conversation.0)
        .fetch_one(db)
        .await
        .unwrap();
        sqlx::query(&format!(
            "{INSERT_MESSAGE} values ($1, $2, $3, $3, $3, $3::text, 1, $4, $5, $6, $7, $6)",
        ))
        .bind(conversation.0)
        .bind(sequence)
        .bind(Uuid::now_v7())
        .bind(vec![0_u8; 12])
        .bind(format!("ciphertext {sequence}").into_bytes())
        .bind(vec![1_u8; 32])
        .bind(vec![2_u8; 64])
        .execute(db)
        .await
        .unwrap();
        for device in devices {
            sqlx::query(
                "insert into chat.message_keys
                     (conversation_id, sequence, device_id, key_fingerprint, wrapped_key)
                 values ($1, $2, $3, $4, $5)",
            )
            .bind(conversation.0)
            .bind(sequence)
            .bind(device.0)
            .bind(vec![3_u8; 32])
            .bind(format!("key of {} for {sequence}", device.0).into_bytes())
            .execute(db)
            .await
            .unwrap();
        }
        to_u64(sequence)
    }

    /// What the database answers `device` after `cursor`, through `through`.
    async fn from_database(
        db: &PgPool,
        conversation: ConversationId,
        device: DeviceId,
        cursor: u64,
        through: u64,
    ) -> Vec<pb::Message> {
        let mut messages =
            read_for_device(db, device, conversation, Direction::Forward, cursor, 1_000)
                .await
                .unwrap();
        messages.retain(|message| message.sequence <= through);
        messages
            .into_iter()
            .map(crate::delivery::wire::message_pb)
            .collect()
    }

    /// What a stream would decode.
    fn decoded(messages: &[DeviceMessage]) -> Vec<pb::Message> {
        messages.iter().map(DeviceMessage::to_pb).collect()
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn each_device_gets_exactly_what_the_database_gives_it(db: PgPool) {
        let recent = RecentMessages::new(db.clone(), settings(64, 1 << 20));
        let conversation = new_conversation(&db).await;
        add_message(&db, conversation, &[ALICE, BOB]).await;
        add_message(&db, conversation, &[BOB]).await;
        let last = add_message(&db, conversation, &[ALICE, BOB]).await;

        let for_alice = recent
            .read(conversation, ALICE, 0, last, 100)
            .await
            .unwrap()
            .unwrap();
        let for_bob = recent
            .read(conversation, BOB, 0, last, 100)
            .await
            .unwrap()
            .unwrap();

        assert_eq!(for_alice.through, last);
        assert_eq!(
            decoded(&for_alice.messages),
            from_database(&db, conversation, ALICE, 0, last).await
        );
        assert_eq!(for_alice.messages.len(), 2);
        assert_eq!(
            decoded(&for_bob.messages),
            from_database(&db, conversation, BOB, 0, last).await
        );
        assert!(decoded(&for_bob.messages).iter().all(|m| {
            let keys = &m.envelope.as_ref().unwrap().wrapped_keys;
            keys.len() == 1 && keys[0].device_id == BOB.to_string()
        }));
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn the_tail_grows_as_messages_commit_and_never_answers_before_its_start(db: PgPool) {
        let recent = RecentMessages::new(db.clone(), settings(2, 1 << 20));
        let conversation = new_conversation(&db).await;
        let first = add_message(&db, conversation, &[ALICE]).await;
        recent
            .read(conversation, ALICE, 0, first, 100)
            .await
            .unwrap()
            .unwrap();
        for _ in 0..3 {
            add_message(&db, conversation, &[ALICE]).await;
        }
        let last = add_message(&db, conversation, &[ALICE]).await;

        // Four new messages, two per page, two held: a stream at the tail still gets every one.
        let mut cursor = first;
        let mut received = Vec::new();
        while cursor < last {
            let read = recent
                .read(conversation, ALICE, cursor, last, 2)
                .await
                .unwrap()
                .unwrap();
            received.extend(read.messages.iter().map(DeviceMessage::sequence));
            cursor = read.through;
        }
        let behind = recent
            .read(conversation, ALICE, 0, last, 100)
            .await
            .unwrap();

        assert_eq!(received, [2, 3, 4, 5]);
        assert!(behind.is_none(), "the tail no longer holds message 1");
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn a_load_larger_than_the_tail_keeps_never_skips_a_message(db: PgPool) {
        // Regression: a stream at the tail's start fell behind by more than the tail holds; the
        // load was trimmed to the newest messages and the stream was answered from them,
        // skipping the ones in between.
        let recent = RecentMessages::new(db.clone(), settings(4, 1 << 20));
        let conversation = new_conversation(&db).await;
        let first = add_message(&db, conversation, &[ALICE]).await;
        recent
            .read(conversation, ALICE, 0, first, 100)
            .await
            .unwrap()
            .unwrap();
        let mut last = first;
        for _ in 0..10 {
            last = add_message(&db, conversation, &[ALICE]).await;
        }

        let mut cursor = first;
        let mut received = Vec::new();
        while cursor < last {
            let messages = match recent
                .read(conversation, ALICE, cursor, last, 100)
                .await
                .unwrap()
            {
                Some(read) => {
                    cursor = read.through;
                    decoded(&read.messages)
                }
                None => {
                    // What delivery does: read the device's messages from the database.
                    let messages = from_database(&db, conversation, ALICE, cursor, last).await;
                    cursor = last;
                    messages
                }
            };
            received.extend(messages.iter().map(|m| m.sequence));
        }

        assert_eq!(received, (first + 1..=last).collect::<Vec<_>>());
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn a_stream_far_behind_reads_the_database_instead_of_starting_a_tail(db: PgPool) {
        let recent = RecentMessages::new(db.clone(), settings(64, 1 << 20));
        let conversation = new_conversation(&db).await;
        let mut last = 0;
        for _ in 0..MAX_SPAN_TO_START_A_TAIL {
            last = add_message(&db, conversation, &[ALICE]).await;
        }

        let far = recent
            .read(conversation, ALICE, 0, last, 100)
            .await
            .unwrap();
        let near = recent
            .read(conversation, ALICE, last - 1, last, 100)
            .await
            .unwrap();

        assert!(far.is_none());
        assert_eq!(near.unwrap().messages[0].sequence(), last);
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn one_tail_keeps_at_most_its_share_of_the_budget(db: PgPool) {
        let one_message = message_bytes_in(&db).await;
        // A share of the budget is room for two messages, not three. Messages differ by a few
        // bytes (their encoded timestamps and sequences), hence two and a half.
        let budget = one_message * 5 / 2 * TAILS_PER_BUDGET;
        let recent = RecentMessages::new(db.clone(), settings(64, budget));
        let conversation = new_conversation(&db).await;
        let mut last = 0;
        for _ in 0..5 {
            last = add_message(&db, conversation, &[ALICE]).await;
            recent
                .read(conversation, ALICE, last - 1, last, 100)
                .await
                .unwrap()
                .unwrap();
        }

        let kept = recent
            .read(conversation, ALICE, last - 2, last, 100)
            .await
            .unwrap();
        let dropped = recent
            .read(conversation, ALICE, last - 3, last, 100)
            .await
            .unwrap();

        assert_eq!(kept.unwrap().messages.len(), 2);
        assert!(dropped.is_none());
    }

    /// The bytes one message of [`add_message`] with one key counts for.
    async fn message_bytes_in(db: &PgPool) -> usize {
        let recent = RecentMessages::new(db.clone(), settings(64, 1 << 20));
        let conversation = new_conversation(db).await;
        let sequence = add_message(db, conversation, &[ALICE]).await;
        recent
            .read(conversation, ALICE, 0, sequence, 1)
            .await
            .unwrap()
            .unwrap();
        recent.state.lock().unwrap().bytes
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn over_the_budget_the_least_recently_used_tails_go_and_answers_stay_right(db: PgPool) {
        // Room for two messages in all.
        let one_message = message_bytes_in(&db).await;
        let recent = RecentMessages::new(db.clone(), settings(64, 2 * one_message));
        let mut conversations = Vec::new();
        for _ in 0..4 {
            let conversation = new_conversation(&db).await;
            let sequence = add_message(&db, conversation, &[ALICE]).await;
            let read = recent
                .read(conversation, ALICE, 0, sequence, 100)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                decoded(&read.messages),
                from_database(&db, conversation, ALICE, 0, sequence).await
            );
            conversations.push(conversation);
        }

        let state = recent.state.lock().unwrap();
        assert!(state.bytes <= 2 * one_message, "{} bytes held", state.bytes);
        assert!(state.tails.contains_key(&conversations[3]));
        assert!(!state.tails.contains_key(&conversations[0]));
        let counted: usize = state
            .tails
            .values()
            .map(|slot| slot.tail.try_lock().unwrap().bytes)
            .sum();
        assert_eq!(counted, state.bytes);
    }
}
