//! What waits to be published, and how it is written: the part of the bus both transports share.
//!
//! [`Outbox::publish`] never blocks: new-message wake-ups are coalesced per conversation
//! (the highest sequence, the oldest publication time) and go at once to this replica's own
//! subscribers, so local streams do not wait for the round trip through the transport; other
//! events queue, the oldest dropped beyond [`MAX_PENDING_EPHEMERAL`]. A transport's publishing
//! task takes everything queued at once ([`Outbox::take`]), writes it with [`encode`] in payloads
//! of at most its bound, and puts wake-ups back ([`Outbox::requeue`]) when it cannot send them.
//! Received payloads are read with [`decode_timed`]; lines that do not parse are skipped.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use common::sync::lock;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use super::{BusEvent, KeysForwarded, Receipt, Typing};
use crate::{ids::ConversationId, ids::DeviceId, ids::UserId, metrics::BusMetrics};

/// Largest NOTIFY payload we build (PostgreSQL refuses 8,000 bytes and more).
pub const POSTGRES_MAX_PAYLOAD: usize = 7_900;
/// Largest NATS payload we build or read. NATS servers accept 1 MiB by default; 64 KiB holds
/// about 750 coalesced wake-ups, more than one publication carries under any load measured, and
/// a server configured with a smaller `max_payload` lowers it (`nats.rs`).
pub const NATS_MAX_PAYLOAD: usize = 64 * 1024;
/// Receipts and typing indicators waiting to be published; older ones are dropped beyond it.
pub const MAX_PENDING_EPHEMERAL: usize = 10_000;
/// Events buffered for the local subscribers; a slower subscriber gets `Resync`.
const LOCAL_CAPACITY: usize = 16_384;

/// The events waiting to be published, and this replica's subscribers.
pub struct Outbox {
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
pub struct PendingEvents {
    /// New-message wake-ups, coalesced per conversation.
    pub wakeups: HashMap<ConversationId, Wakeup>,
    /// Receipts, typing indicators and forwarded-key notices, oldest first.
    pub ephemeral: VecDeque<BusEvent>,
}

/// A conversation's coalesced wake-ups waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    /// The newest sequence.
    pub last_sequence: u64,
    /// When the oldest of them was published (after its commit): microseconds since the Unix
    /// epoch.
    pub since_micros: u64,
}

impl Wakeup {
    /// Merges `other` in: the newest sequence, the oldest time.
    pub fn merge(&mut self, other: Wakeup) {
        self.last_sequence = self.last_sequence.max(other.last_sequence);
        self.since_micros = self.since_micros.min(other.since_micros);
    }
}

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

impl Outbox {
    /// An empty outbox whose publications are counted in `metrics`.
    pub fn new(metrics: BusMetrics) -> Self {
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        Self {
            pending: Arc::default(),
            local,
            metrics,
        }
    }

    /// Queues `event` (see the module docs). Never blocks.
    pub fn publish(&self, event: BusEvent) {
        self.metrics.published.inc();
        if let BusEvent::NewMessages { .. } = event {
            // This replica's own streams are woken at once, without the round trip through the
            // transport; the wake-up that comes back over the bus costs them nothing (see
            // `stream.rs`).
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

    /// This replica's events: those heard from the transport ([`Outbox::deliver`]) and its own
    /// new-message wake-ups.
    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.local.subscribe()
    }

    /// Hands `event` to this replica's subscribers.
    pub fn deliver(&self, event: BusEvent) {
        let _ = self.local.send(event);
    }

    /// Every stream must re-read: events may have been lost (counted as a listener resync).
    pub fn resync(&self) {
        self.metrics.listener_resync();
        self.deliver(BusEvent::Resync);
    }

    /// The events of one received payload, counted and their lag measured, to the subscribers.
    pub fn deliver_payload(&self, payload: &str) {
        let heard = unix_micros(SystemTime::now());
        for (event, since_micros) in decode_timed(payload) {
            self.metrics.received.inc();
            if let Some(since) = since_micros {
                // Clocks of two hosts may disagree: never a negative lag.
                self.metrics
                    .lagged(Duration::from_micros(heard.saturating_sub(since)));
            }
            self.deliver(event);
        }
    }

    /// Waits until something is queued, then takes everything queued.
    pub async fn take(&self, window: Duration) -> PendingEvents {
        self.pending.ready.notified().await;
        if !window.is_zero() {
            tokio::time::sleep(window).await;
        }
        std::mem::take(&mut *lock(&self.pending.events))
    }

    /// Puts wake-ups back (merged with newer ones) so that no conversation is forgotten.
    pub fn requeue(&self, wakeups: HashMap<ConversationId, Wakeup>) {
        let mut current = lock(&self.pending.events);
        for (conversation, wakeup) in wakeups {
            current
                .wakeups
                .entry(conversation)
                .and_modify(|pending| pending.merge(wakeup))
                .or_insert(wakeup);
        }
        drop(current);
        self.pending.ready.notify_one();
    }
}

/// One line per event, lines packed into payloads of at most `max_payload` bytes (one line is
/// under 200 bytes).
pub fn encode(events: &PendingEvents, max_payload: usize) -> Vec<String> {
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
        if !current.is_empty() && current.len() + 1 + line.len() > max_payload {
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
pub fn decode(payload: &str) -> Vec<BusEvent> {
    decode_timed(payload)
        .into_iter()
        .map(|(event, _)| event)
        .collect()
}

/// As [`decode`], with when each new-message wake-up was published (microseconds since the Unix
/// epoch), when its line says.
pub fn decode_timed(payload: &str) -> Vec<(BusEvent, Option<u64>)> {
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

/// The fuzz target `bus_payload` (`fuzz/`): reads `payload` as a payload from another replica
/// (anyone who can NOTIFY on the channel, or publish on the NATS subject, can send one) and checks that nothing panics,
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
        let written = encode(&pending, POSTGRES_MAX_PAYLOAD);
        assert!(
            written
                .iter()
                .all(|payload| payload.len() <= POSTGRES_MAX_PAYLOAD)
        );
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

        let decoded: Vec<BusEvent> = encode(&events, POSTGRES_MAX_PAYLOAD)
            .iter()
            .flat_map(|p| decode(p))
            .collect();

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

        let payloads = encode(&events, POSTGRES_MAX_PAYLOAD);

        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= POSTGRES_MAX_PAYLOAD));
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
            decode_timed(&encode(&events, POSTGRES_MAX_PAYLOAD)[0]),
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
