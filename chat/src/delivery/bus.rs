//! The bus between replicas: wake-ups for new messages, receipts, typing indicators and keys
//! forwarded to a device.
//!
//! [`Bus`] is the one small interface the rest of the crate sees, so NATS (or anything with
//! publish/subscribe) could replace PostgreSQL. Its contract is weak on purpose: events may be
//! lost, duplicated or coalesced. A `NewMessages` event is only a wake-up: streams always re-read
//! from their own cursor, and `Resync` (sent whenever the listener (re)connects, or a local
//! subscriber lagged) makes every stream re-read everything. Receipts, typing indicators and
//! forwarded-key notices are best-effort by nature (positions and forwarded keys are stored and
//! read again by the client's next ListMessages; typing is ephemeral): a `Resync` does not
//! replay them.
//!
//! [`PgBus`] uses LISTEN/NOTIFY on channel [`CHANNEL`]. Publishing never happens inside the
//! message transaction (see `commit.rs`): one task per replica sends one NOTIFY at a time with
//! every event that arrived while the previous one was sent (and, if `CHAT_NOTIFY_WINDOW_MICROS`
//! is above 0, waits that long for more first), coalescing new-message wake-ups per conversation
//! (keeping the highest sequence), in as few NOTIFYs as the 8,000-byte payload limit allows.
//! The window defaults to 0: measured with `bench cross-replica`, the 500 µs it used to be made
//! a message to another replica's stream take 2.05 ms longer than to the sender's replica at
//! p50; with 0, 0.18 ms, and `bench group-fanout` delivered as much.
//! New-message wake-ups also go straight to this replica's own subscribers, so local streams do
//! not wait for the round trip through PostgreSQL.
//!
//! Each new-message line carries when its oldest coalesced wake-up was published (right after
//! its commit), in microseconds since the Unix epoch on the publisher's clock, so a receiving
//! replica can measure the bus lag (`chat_bus_lag_seconds`; across hosts, clock skew adds to it).
//! Replicas that predate the field ignore it, and lines without it are not measured.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use common::sync::lock;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    ids::{ConversationId, DeviceId, UserId},
    metrics::BusMetrics,
};

/// The NOTIFY channel.
pub const CHANNEL: &str = "chat_events";
/// Largest NOTIFY payload we build (PostgreSQL refuses 8,000 bytes and more).
const MAX_PAYLOAD: usize = 7_900;
/// Receipts and typing indicators waiting to be published; older ones are dropped beyond it.
const MAX_PENDING_EPHEMERAL: usize = 10_000;
/// Events buffered for the local subscribers; a slower subscriber gets `Resync`.
const LOCAL_CAPACITY: usize = 16_384;
/// Pause after a failed NOTIFY or LISTEN before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Something every replica should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A conversation's messages up to `last_sequence` are committed.
    NewMessages {
        /// The conversation.
        conversation: ConversationId,
        /// Its newest sequence.
        last_sequence: u64,
    },
    /// A device's positions moved.
    Receipt(Receipt),
    /// Someone is typing.
    Typing(Typing),
    /// Keys were forwarded to a device.
    KeysForwarded(KeysForwarded),
    /// Events may have been lost: re-read everything.
    Resync,
}

/// A device's positions in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The conversation.
    pub conversation: ConversationId,
    /// The device's user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// Highest sequence received.
    pub delivered: u64,
    /// Highest sequence read.
    pub read: u64,
}

/// Someone is typing in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typing {
    /// The conversation.
    pub conversation: ConversationId,
    /// Who.
    pub user: UserId,
    /// On which device.
    pub device: DeviceId,
}

/// Another device of `user` forwarded `count` messages' keys of `conversation` to `device`
/// (ForwardKeys stored them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysForwarded {
    /// The conversation.
    pub conversation: ConversationId,
    /// The recipient device's user.
    pub user: UserId,
    /// The recipient device.
    pub device: DeviceId,
    /// How many messages' keys were stored for it.
    pub count: u32,
}

/// Publish/subscribe between replicas; see the module docs for the (weak) guarantees.
pub trait Bus: Send + Sync {
    /// Queues `event` for every replica, this one included. Never blocks.
    fn publish(&self, event: BusEvent);
    /// Events from every replica.
    fn subscribe(&self) -> broadcast::Receiver<BusEvent>;
}

/// [`Bus`] over PostgreSQL LISTEN/NOTIFY.
pub struct PgBus {
    pending: Arc<Pending>,
    local: broadcast::Sender<BusEvent>,
    metrics: BusMetrics,
}

#[derive(Default)]
struct Pending {
    events: Mutex<PendingEvents>,
    ready: Notify,
}

#[derive(Default)]
struct PendingEvents {
    wakeups: HashMap<ConversationId, Wakeup>,
    ephemeral: VecDeque<BusEvent>,
}

/// A conversation's coalesced wake-ups waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wakeup {
    /// The newest sequence.
    last_sequence: u64,
    /// When the oldest of them was published (after its commit): microseconds since the Unix
    /// epoch.
    since_micros: u64,
}

impl Wakeup {
    /// Merges `other` in: the newest sequence, the oldest time.
    fn merge(&mut self, other: Wakeup) {
        self.last_sequence = self.last_sequence.max(other.last_sequence);
        self.since_micros = self.since_micros.min(other.since_micros);
    }
}

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
fn unix_micros(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

impl PgBus {
    /// Starts the publishing and listening tasks on `db`; they end when `stop` fires. What it
    /// publishes and hears is counted in `metrics`.
    pub fn start(
        db: PgPool,
        window: Duration,
        stop: CancellationToken,
        metrics: BusMetrics,
    ) -> Arc<Self> {
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        let bus = Arc::new(Self {
            pending: Arc::default(),
            local: local.clone(),
            metrics: metrics.clone(),
        });
        let publishing = publish_loop(db.clone(), bus.pending.clone(), window);
        tokio::spawn(stop.clone().run_until_cancelled_owned(publishing));
        tokio::spawn(stop.run_until_cancelled_owned(listen_loop(db, local, metrics)));
        bus
    }
}

impl Bus for PgBus {
    fn publish(&self, event: BusEvent) {
        self.metrics.published.inc();
        if let BusEvent::NewMessages { .. } = event {
            // This replica's own streams are woken at once, without the NOTIFY round trip;
            // the wake-up that comes back over the bus costs them nothing (see `stream.rs`).
            let _ = self.local.send(event.clone());
        }
        let mut pending = lock(&self.pending.events);
        match event {
            BusEvent::NewMessages {
                conversation,
                last_sequence,
            } => {
                let wakeup = Wakeup {
                    last_sequence,
                    since_micros: unix_micros(SystemTime::now()),
                };
                pending
                    .wakeups
                    .entry(conversation)
                    .and_modify(|pending| pending.merge(wakeup))
                    .or_insert(wakeup);
            }
            other => {
                if pending.ephemeral.len() >= MAX_PENDING_EPHEMERAL {
                    pending.ephemeral.pop_front();
                }
                pending.ephemeral.push_back(other);
            }
        }
        drop(pending);
        self.pending.ready.notify_one();
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.local.subscribe()
    }
}

async fn publish_loop(db: PgPool, pending: Arc<Pending>, window: Duration) {
    loop {
        pending.ready.notified().await;
        if !window.is_zero() {
            tokio::time::sleep(window).await;
        }
        let events = std::mem::take(&mut *lock(&pending.events));
        let payloads = encode(&events);
        if payloads.is_empty() {
            continue;
        }
        let result =
            sqlx::query("select pg_notify($1, payload) from unnest($2::text[]) as payload")
                .bind(CHANNEL)
                .bind(&payloads)
                .execute(&db)
                .await;
        if let Err(error) = result {
            tracing::warn!(%error, "cannot publish wake-ups; retrying");
            requeue(&pending, events.wakeups);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Puts wake-ups back (merged with newer ones) so that no conversation is forgotten.
fn requeue(pending: &Pending, wakeups: HashMap<ConversationId, Wakeup>) {
    let mut current = lock(&pending.events);
    for (conversation, wakeup) in wakeups {
        current
            .wakeups
            .entry(conversation)
            .and_modify(|pending| pending.merge(wakeup))
            .or_insert(wakeup);
    }
    drop(current);
    pending.ready.notify_one();
}

async fn listen_loop(db: PgPool, local: broadcast::Sender<BusEvent>, metrics: BusMetrics) {
    loop {
        let mut listener = match PgListener::connect_with(&db).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot connect the bus listener; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::warn!(%error, "cannot LISTEN; retrying");
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        }
        // Anything published before this point was not heard.
        metrics.listener_resync();
        let _ = local.send(BusEvent::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    let heard = unix_micros(SystemTime::now());
                    for (event, since_micros) in decode_timed(notification.payload()) {
                        metrics.received.inc();
                        if let Some(since) = since_micros {
                            // Clocks of two hosts may disagree: never a negative lag.
                            metrics.lagged(Duration::from_micros(heard.saturating_sub(since)));
                        }
                        let _ = local.send(event);
                    }
                }
                // The connection was lost; the next call reconnects, and what was sent in
                // between is lost: everyone re-reads.
                Ok(None) => {
                    metrics.listener_resync();
                    let _ = local.send(BusEvent::Resync);
                }
                Err(error) => {
                    tracing::warn!(%error, "the bus listener failed; reconnecting");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                }
            }
        }
    }
}

/// One line per event, lines packed into payloads of at most [`MAX_PAYLOAD`] bytes.
fn encode(events: &PendingEvents) -> Vec<String> {
    let lines = events
        .wakeups
        .iter()
        .map(|(conversation, wakeup)| {
            format!(
                "m {conversation} {} {}",
                wakeup.last_sequence, wakeup.since_micros
            )
        })
        .chain(events.ephemeral.iter().filter_map(|event| match event {
            BusEvent::Receipt(r) => Some(format!(
                "r {} {} {} {} {}",
                r.conversation, r.user, r.device, r.delivered, r.read
            )),
            BusEvent::Typing(t) => Some(format!("t {} {} {}", t.conversation, t.user, t.device)),
            BusEvent::KeysForwarded(k) => Some(format!(
                "k {} {} {} {}",
                k.conversation, k.user, k.device, k.count
            )),
            BusEvent::NewMessages { .. } | BusEvent::Resync => None,
        }));
    let mut payloads = Vec::new();
    let mut current = String::new();
    for line in lines {
        if !current.is_empty() && current.len() + 1 + line.len() > MAX_PAYLOAD {
            payloads.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// Reads what [`encode`] wrote; lines that do not parse are skipped (logged).
fn decode(payload: &str) -> Vec<BusEvent> {
    decode_timed(payload)
        .into_iter()
        .map(|(event, _)| event)
        .collect()
}

/// As [`decode`], with when each new-message wake-up was published (microseconds since the Unix
/// epoch), when its line says.
fn decode_timed(payload: &str) -> Vec<(BusEvent, Option<u64>)> {
    payload
        .lines()
        .filter_map(|line| {
            let event = decode_line(line);
            if event.is_none() {
                tracing::warn!(line, "unreadable bus event");
            }
            event
        })
        .collect()
}

fn decode_line(line: &str) -> Option<(BusEvent, Option<u64>)> {
    let mut fields = line.split(' ');
    let kind = fields.next()?;
    let mut uuid = || fields.next().and_then(|field| Uuid::try_parse(field).ok());
    let conversation = ConversationId(uuid()?);
    let event = match kind {
        "m" => {
            let last_sequence = fields.next()?.parse().ok()?;
            // Absent from replicas that predate it; a field that does not parse is not measured.
            let since_micros = fields.next().and_then(|field| field.parse().ok());
            return Some((
                BusEvent::NewMessages {
                    conversation,
                    last_sequence,
                },
                since_micros,
            ));
        }
        "r" => {
            let user = UserId(uuid()?);
            let device = DeviceId(uuid()?);
            BusEvent::Receipt(Receipt {
                conversation,
                user,
                device,
                delivered: fields.next()?.parse().ok()?,
                read: fields.next()?.parse().ok()?,
            })
        }
        "t" => {
            let user = UserId(uuid()?);
            let device = DeviceId(uuid()?);
            BusEvent::Typing(Typing {
                conversation,
                user,
                device,
            })
        }
        "k" => {
            let user = UserId(uuid()?);
            let device = DeviceId(uuid()?);
            BusEvent::KeysForwarded(KeysForwarded {
                conversation,
                user,
                device,
                count: fields.next()?.parse().ok()?,
            })
        }
        // Replicas that predate a kind skip its lines (logged): for `k`, the recipient sees the
        // keys at its next ListMessages, as before the event existed.
        _ => return None,
    };
    Some((event, None))
}

/// The fuzz target `bus_payload` (`fuzz/`): reads `payload` as a NOTIFY payload from another
/// replica (anyone who can NOTIFY on the channel can send one) and checks that nothing panics,
/// that every event read is written back as one line that reads as the same event, and that
/// what is written fits PostgreSQL's payload limit.
///
/// # Panics
/// When one of those checks fails: the fuzzer reports it.
#[doc(hidden)]
pub fn fuzz_payload(payload: &str) {
    for event in decode(payload) {
        let mut pending = PendingEvents::default();
        match &event {
            BusEvent::NewMessages {
                conversation,
                last_sequence,
            } => {
                let wakeup = Wakeup {
                    last_sequence: *last_sequence,
                    since_micros: u64::MAX,
                };
                pending.wakeups.insert(*conversation, wakeup);
            }
            BusEvent::Receipt(_) | BusEvent::Typing(_) | BusEvent::KeysForwarded(_) => {
                pending.ephemeral.push_back(event.clone())
            }
            BusEvent::Resync => unreachable!("no line decodes to Resync"),
        }
        let written = encode(&pending);
        assert!(written.iter().all(|payload| payload.len() <= MAX_PAYLOAD));
        assert_eq!(written.len(), 1, "one event is one payload");
        assert_eq!(
            decode(&written[0]),
            vec![event],
            "written back as {written:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_encoding_and_decoding() {
        let conversation = ConversationId(Uuid::now_v7());
        let user = UserId(Uuid::now_v7());
        let device = DeviceId(Uuid::now_v7());
        let receipt = Receipt {
            conversation,
            user,
            device,
            delivered: 7,
            read: 5,
        };
        let typing = Typing {
            conversation,
            user,
            device,
        };
        let wakeup = Wakeup {
            last_sequence: 42,
            since_micros: 1_700_000_000_000_000,
        };
        let forwarded = KeysForwarded {
            conversation,
            user,
            device,
            count: 3,
        };
        let events = PendingEvents {
            wakeups: HashMap::from([(conversation, wakeup)]),
            ephemeral: VecDeque::from([
                BusEvent::Receipt(receipt),
                BusEvent::Typing(typing),
                BusEvent::KeysForwarded(forwarded),
            ]),
        };

        let decoded: Vec<BusEvent> = encode(&events).iter().flat_map(|p| decode(p)).collect();

        assert_eq!(
            decoded,
            [
                BusEvent::NewMessages {
                    conversation,
                    last_sequence: 42
                },
                BusEvent::Receipt(receipt),
                BusEvent::Typing(typing),
                BusEvent::KeysForwarded(forwarded),
            ]
        );
    }

    #[test]
    fn many_wakeups_are_split_into_payloads_under_the_limit() {
        let events = PendingEvents {
            wakeups: (0..500)
                .map(|n| {
                    let wakeup = Wakeup {
                        last_sequence: n,
                        since_micros: u64::MAX,
                    };
                    (ConversationId(Uuid::now_v7()), wakeup)
                })
                .collect(),
            ephemeral: VecDeque::new(),
        };

        let payloads = encode(&events);

        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        assert_eq!(payloads.iter().flat_map(|p| decode(p)).count(), 500);
    }

    #[test]
    fn wakeups_carry_when_they_were_published_and_lines_without_it_still_read() {
        let conversation = ConversationId(Uuid::now_v7());
        let mut wakeup = Wakeup {
            last_sequence: 3,
            since_micros: 2_000,
        };
        wakeup.merge(Wakeup {
            last_sequence: 5,
            since_micros: 3_000,
        });
        let events = PendingEvents {
            wakeups: HashMap::from([(conversation, wakeup)]),
            ephemeral: VecDeque::new(),
        };
        let event = BusEvent::NewMessages {
            conversation,
            last_sequence: 5,
        };

        assert_eq!(
            decode_timed(&encode(&events)[0]),
            [(event.clone(), Some(2_000))]
        );
        // As an older replica writes it.
        assert_eq!(
            decode_timed(&format!("m {conversation} 5")),
            [(event, None)]
        );
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(decode("x\nm nope 1\nm 00000000-0000-0000-0000-000000000000 x").is_empty());
    }
}
