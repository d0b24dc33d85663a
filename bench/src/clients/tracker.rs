//! Receiving: every stream is read by its own task, which stamps each message when it arrives and
//! hands the stamp to the [`Tracker`]. A sender registers a message before sending it; the
//! tracker keeps its send time and arrival times, and completes it when the last expected stream
//! has it (releasing the sender's in-flight permit).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use proto::chat::v1 as chat_pb;
use tokio::{
    sync::{OwnedSemaphorePermit, oneshot},
    task::JoinSet,
};
use tonic::Streaming;

/// What kind of message a client message id stands for: group messages count as deliveries,
/// direct messages only for their latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Group,
    Direct,
}

/// The messages in flight and what has arrived.
#[derive(Default)]
pub(crate) struct Tracker {
    messages: Mutex<HashMap<String, Slot>>,
    /// Group-message deliveries so far (every stream that got one counts once).
    group_deliveries: AtomicU64,
    /// Streams that ended or failed, with why.
    stream_failures: Mutex<Vec<String>>,
}

/// One message: when it was sent, how many streams must get it, and when they did.
struct Slot {
    kind: Kind,
    sent: Instant,
    expected: usize,
    arrivals: Vec<Instant>,
    /// Released when the last stream has it.
    permit: Option<OwnedSemaphorePermit>,
    done: Option<oneshot::Sender<()>>,
}

/// A message that reached every stream it was meant for.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    /// The message's client message id.
    pub client_message_id: String,
    /// When its send started.
    pub sent: Instant,
    /// From the start of the send to each arrival, sorted.
    pub after_send: Vec<Duration>,
}

impl Tracker {
    /// Registers `client_message_id`, about to be sent now, for `expected` streams. `permit` is
    /// released and `done` fires when the last of them has it.
    pub(crate) fn expect(
        &self,
        client_message_id: &str,
        kind: Kind,
        expected: usize,
        permit: Option<OwnedSemaphorePermit>,
        done: Option<oneshot::Sender<()>>,
    ) {
        let slot = Slot {
            kind,
            sent: Instant::now(),
            expected,
            arrivals: Vec::with_capacity(expected),
            permit,
            done,
        };
        lock(&self.messages).insert(client_message_id.to_owned(), slot);
    }

    /// Forgets a message whose send failed.
    pub(crate) fn forget(&self, client_message_id: &str) {
        lock(&self.messages).remove(client_message_id);
    }

    /// Group-message deliveries so far.
    pub(crate) fn group_deliveries(&self) -> u64 {
        self.group_deliveries.load(Ordering::Relaxed)
    }

    /// Removes and returns the messages of `kind` that every expected stream has, and counts
    /// those still waiting.
    pub(crate) fn take_delivered(&self, kind: Kind) -> (Vec<Delivered>, usize) {
        let mut messages = lock(&self.messages);
        let complete: Vec<String> = messages
            .iter()
            .filter(|(_, slot)| slot.kind == kind && slot.arrivals.len() >= slot.expected)
            .map(|(id, _)| id.clone())
            .collect();
        let delivered = complete
            .into_iter()
            .filter_map(|id| messages.remove(&id).map(|slot| (id, slot)))
            .map(|(client_message_id, slot)| {
                let mut after_send: Vec<Duration> = slot
                    .arrivals
                    .iter()
                    .map(|arrival| arrival.saturating_duration_since(slot.sent))
                    .collect();
                after_send.sort_unstable();
                Delivered {
                    client_message_id,
                    sent: slot.sent,
                    after_send,
                }
            })
            .collect();
        let waiting = messages.values().filter(|slot| slot.kind == kind).count();
        (delivered, waiting)
    }

    /// Forgets every message still waiting; returns how many there were.
    pub(crate) fn clear(&self) -> usize {
        let mut messages = lock(&self.messages);
        let waiting = messages.len();
        messages.clear();
        waiting
    }

    /// Why streams ended, so far.
    pub(crate) fn stream_failures(&self) -> Vec<String> {
        lock(&self.stream_failures).clone()
    }

    fn arrived(&self, client_message_id: &str, at: Instant) {
        let mut messages = lock(&self.messages);
        let Some(slot) = messages.get_mut(client_message_id) else {
            return;
        };
        slot.arrivals.push(at);
        if slot.kind == Kind::Group {
            self.group_deliveries.fetch_add(1, Ordering::Relaxed);
        }
        if slot.arrivals.len() == slot.expected {
            drop(slot.permit.take());
            if let Some(done) = slot.done.take() {
                let _ = done.send(());
            }
        }
    }
}

/// Reads `stream` in its own task until it ends or the task is aborted, stamping every message.
pub(crate) fn spawn_reader(
    readers: &mut JoinSet<()>,
    tracker: &Arc<Tracker>,
    mut stream: Streaming<chat_pb::SubscribeResponse>,
) {
    let tracker = tracker.clone();
    readers.spawn(async move {
        loop {
            let received = stream.message().await;
            let at = Instant::now();
            let event = match received {
                Ok(Some(response)) => response.event.and_then(|event| event.event),
                Ok(None) => {
                    lock(&tracker.stream_failures).push("a stream ended".to_owned());
                    return;
                }
                Err(status) => {
                    lock(&tracker.stream_failures).push(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    return;
                }
            };
            if let Some(chat_pb::stream_event::Event::Message(message)) = event
                && let Some(envelope) = message.envelope
            {
                tracker.arrived(&envelope.client_message_id, at);
            }
        }
    });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
