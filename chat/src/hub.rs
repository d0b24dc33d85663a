//! The streams open on this replica, and the one dispatcher that wakes them from the bus.
//!
//! Each stream has an [`Inbox`]: a set of conversations to re-read ("dirty"), a bounded queue of
//! receipts and typing indicators, and a `Notify`. The dispatcher only marks and notifies; it
//! never blocks on a stream, so one slow stream cannot hold back the others. A stream whose
//! event queue overflows is marked and ends with SLOW_CONSUMER.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{Notify, broadcast};

use crate::{
    Error,
    bus::{BusEvent, Receipt, Typing},
    conversations::Participants,
    ids::{ConversationId, DeviceId, UserId},
};

/// The streams of this replica, by user.
pub struct Hub {
    streams: Mutex<HashMap<UserId, Vec<Arc<Inbox>>>>,
    next_id: AtomicU64,
    max_streams_per_device: usize,
    max_events: usize,
}

/// What wakes one stream.
pub struct Inbox {
    id: u64,
    /// The stream's user.
    pub user: UserId,
    /// The stream's device.
    pub device: DeviceId,
    work: Mutex<Work>,
    /// Signalled whenever `work` gains something.
    pub ready: Notify,
}

/// What a stream has to do, taken at once by [`Inbox::take`].
#[derive(Default)]
pub struct Work {
    /// Conversations with new messages, each with the newest sequence announced.
    pub dirty: HashMap<ConversationId, u64>,
    /// Re-read every conversation (events may have been lost).
    pub resync: bool,
    /// Receipts and typing indicators, in arrival order.
    pub events: VecDeque<Ephemeral>,
    /// The event queue overflowed.
    pub overflowed: bool,
}

/// An event that is delivered as is, not re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ephemeral {
    /// A participant's positions moved.
    Receipt(Receipt),
    /// A participant is typing.
    Typing(Typing),
}

/// Removes the stream from the hub when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    inbox: Arc<Inbox>,
}

impl Hub {
    /// A hub allowing `max_streams_per_device`, each with at most `max_events` waiting events.
    pub fn new(max_streams_per_device: usize, max_events: usize) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::default(),
            next_id: AtomicU64::new(0),
            max_streams_per_device,
            max_events,
        })
    }

    /// Registers a stream of `device`. From here on it is woken for every new message of its
    /// user's conversations.
    ///
    /// # Errors
    /// [`Error::TooManyStreams`] when the device has the most streams allowed.
    pub fn register(
        self: &Arc<Self>,
        user: UserId,
        device: DeviceId,
    ) -> Result<Registration, Error> {
        let mut streams = lock(&self.streams);
        let of_user = streams.entry(user).or_default();
        let of_device = of_user
            .iter()
            .filter(|inbox| inbox.device == device)
            .count();
        if of_device >= self.max_streams_per_device {
            return Err(Error::TooManyStreams);
        }
        let inbox = Arc::new(Inbox {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user,
            device,
            work: Mutex::default(),
            ready: Notify::new(),
        });
        of_user.push(inbox.clone());
        Ok(Registration {
            hub: self.clone(),
            inbox,
        })
    }

    /// Routes bus events to the streams until the bus closes.
    pub async fn dispatch(
        self: Arc<Self>,
        mut events: broadcast::Receiver<BusEvent>,
        participants: Participants,
    ) {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => BusEvent::Resync,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Err(error) = self.route(event, &participants).await {
                // Without the participants we cannot tell who to wake: wake everyone.
                tracing::warn!(%error, "cannot route a bus event; resyncing every stream");
                self.resync_all();
            }
        }
    }

    async fn route(&self, event: BusEvent, participants: &Participants) -> Result<(), Error> {
        match event {
            BusEvent::NewMessages {
                conversation,
                last_sequence,
            } => {
                let users = participants.of(conversation).await?;
                self.each_of(
                    &users,
                    |_| true,
                    |work| {
                        let newest = work.dirty.entry(conversation).or_default();
                        *newest = (*newest).max(last_sequence);
                    },
                );
            }
            BusEvent::Receipt(receipt) => {
                let users = participants.of(receipt.conversation).await?;
                self.push(
                    &users,
                    |inbox| inbox.device != receipt.device,
                    Ephemeral::Receipt(receipt),
                );
            }
            BusEvent::Typing(typing) => {
                let users = participants.of(typing.conversation).await?;
                self.push(
                    &users,
                    |inbox| inbox.user != typing.user,
                    Ephemeral::Typing(typing),
                );
            }
            BusEvent::Resync => self.resync_all(),
        }
        Ok(())
    }

    fn push(&self, users: &[UserId], to: impl Fn(&Inbox) -> bool, event: Ephemeral) {
        let max_events = self.max_events;
        self.each_of(users, to, |work| {
            if work.events.len() >= max_events {
                work.overflowed = true;
            } else {
                work.events.push_back(event);
            }
        });
    }

    /// Changes the work of the streams of `users` that pass `to`, and wakes them. Only those
    /// users' streams are visited, so an event costs the same with 10 or 50,000 streams open.
    fn each_of(&self, users: &[UserId], to: impl Fn(&Inbox) -> bool, change: impl Fn(&mut Work)) {
        let streams = lock(&self.streams);
        for inbox in users
            .iter()
            .filter_map(|user| streams.get(user))
            .flatten()
            .filter(|inbox| to(inbox))
        {
            change(&mut lock(&inbox.work));
            inbox.ready.notify_one();
        }
    }

    fn resync_all(&self) {
        let streams = lock(&self.streams);
        for inbox in streams.values().flatten() {
            lock(&inbox.work).resync = true;
            inbox.ready.notify_one();
        }
    }
}

impl Inbox {
    /// Everything to do, leaving the inbox empty.
    pub fn take(&self) -> Work {
        std::mem::take(&mut lock(&self.work))
    }
}

impl Registration {
    /// The stream's inbox.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = lock(&self.hub.streams);
        if let Some(of_user) = streams.get_mut(&self.inbox.user) {
            of_user.retain(|inbox| inbox.id != self.inbox.id);
            if of_user.is_empty() {
                streams.remove(&self.inbox.user);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
