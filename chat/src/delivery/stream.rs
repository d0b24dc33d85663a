//! Stream delivery (Subscribe and OpenStream): replay from the client's positions, `CaughtUp`,
//! then live events, with no gap and no duplicate at the switch.
//!
//! Why there is no gap: the stream registers in the [`Hub`] *before* it reads its resume points,
//! so every commit after that marks its conversation dirty; the replay reads everything committed
//! so far; the live loop re-reads each dirty conversation from the stream's cursor, which only
//! moves forward. Sequences are assigned in commit order under a row lock, so what a read sees is
//! always a prefix: "after the cursor" never skips a message that commits later. No duplicate:
//! the cursor only moves past what was queued. The reads go through the replica's shared tail of
//! recent messages (`recent.rs`) when it holds the stream's cursor, else to the database; both
//! answer "everything after the cursor".
//!
//! Backpressure: each stream has one bounded queue (`CHAT_STREAM_QUEUE`). The replay waits for
//! room as long as it takes (the client is pulling history; reading stops while it does not
//! read). Live items wait for room at most `CHAT_STREAM_STALL_MS`: a burst larger than the queue
//! is fine for a client that reads, but a queue that stays full that long ends the stream with
//! RESOURCE_EXHAUSTED (SLOW_CONSUMER), and the client resumes from its cursor. While the stream
//! task waits, new work collapses into its inbox (a set of conversations to re-read and a
//! bounded list of receipts and typing indicators), so memory per stream is bounded by the queue,
//! one page of reads and the inbox, whatever the sender does.
//!
//! The queue alone cannot see a client that stopped reading behind a proxy: nginx (the Ingress)
//! grants the gateway an unlimited HTTP/2 window and one connection per stream, so megabytes of
//! backlog wait in socket buffers while the queue stays empty. So a stream whose device
//! acknowledges what it receives (the client library's `Live` sends `ack` on OpenStream; the web
//! demo calls Acknowledge for Subscribe) is judged by those acknowledgements, heard from every
//! replica through the bus's receipts: when messages it queued stay unacknowledged and the
//! device's delivered position does not move for `CHAT_STREAM_ACK_TIMEOUT_MS`, it ends with
//! RESOURCE_EXHAUSTED (SLOW_CONSUMER). Its status follows what was already written, so the
//! client reads the backlog, then the status, and resumes from its cursor. Only conversations the
//! device has acknowledged since the stream opened are judged, and acknowledgements are per
//! device: a device with several streams on one conversation is judged by its fastest. A client
//! that never acknowledges (grpcurl) is judged by the queue only. OpenStream's acknowledgements
//! count as soon as they arrive ([`Outbox::acknowledged`]); Acknowledge's once stored and
//! published, so one the bus loses, or the database cannot store, can end a Subscribe that was
//! keeping up: it resumes, as after any SLOW_CONSUMER.
//!
//! A stream lives only as long as the token that opened it is good ([`TokenWatch`]): it ends
//! with UNAUTHENTICATED when the token expires or its session or device is revoked, and with
//! UNAVAILABLE when revocations cannot be checked any more (see `token::Revocations`).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::Stream;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    Error,
    config::StreamSettings,
    delivery::{
        hub::{Ephemeral, Hub, Inbox, Registration},
        recent::RecentMessages,
        wire::DeviceMessage,
    },
    ids::ConversationId,
    message::{Caller, Committed},
    metrics::{OpenStream, StreamKind, StreamMetrics},
    store::{
        history::{self, Direction},
        positions,
    },
};

/// One item written to a stream. Kept small: every stream's queue allocates its first block of
/// slots (32) when it opens, so an idle stream pays for 32 of these.
#[derive(Debug)]
pub enum Outgoing {
    /// A new or replayed message, encoded (`wire.rs`).
    Message(Box<DeviceMessage>),
    /// A receipt, typing indicator or membership or device change.
    Ephemeral(Box<Ephemeral>),
    /// Keep-alive.
    Heartbeat(OffsetDateTime),
    /// The replay is complete.
    CaughtUp,
    /// The answer to a send on OpenStream.
    SendAnswer(Box<SendAnswer>),
}

const _: () = assert!(std::mem::size_of::<Outgoing>() <= 24);

/// The shortest interval between two checks of a stream's acknowledgements.
const MIN_ACK_CHECK: Duration = Duration::from_millis(100);

/// The answer to a send on OpenStream.
#[derive(Debug)]
pub struct SendAnswer {
    /// The client's id for the request.
    pub request_id: String,
    /// Committed, or why not.
    pub outcome: Result<Committed, Error>,
}

/// Opens streams.
#[derive(Clone)]
pub struct Delivery {
    db: PgPool,
    hub: Arc<Hub>,
    recent: Arc<RecentMessages>,
    settings: StreamSettings,
    shutdown: CancellationToken,
    /// Admission of stream replays (see [`replays_admitted`]).
    replays: Arc<Semaphore>,
    metrics: StreamMetrics,
}

/// How many stream replays of this replica may read the database at once (their resume points
/// and what they missed, a page at a time): half the database pool, at least one. A permit is
/// held for one read, never while the stream waits for its client to take a page. When thousands of streams reopen together (the
/// gateway restarted), each replay holds a connection for a few reads; without a bound they took
/// the whole pool, and unary calls (`ListConversations`, sends) waited behind them until the
/// pool's acquire timeout answered UNAVAILABLE, as did the replays themselves, which then
/// reopened and queued again (fault 6 of issue 20 at 5,000 streams: 1,525 openings timed out).
/// A stream waiting for admission is already registered in the hub, so nothing committed
/// meanwhile is missed (see the module docs: it registers before it reads its resume points).
fn replays_admitted(db: &PgPool) -> usize {
    usize::try_from(db.options().get_max_connections() / 2)
        .unwrap_or(1)
        .max(1)
}

/// The writing end of a stream's queue, shared by the delivery task and (for OpenStream) the
/// task answering sends.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Outgoing>,
    inbox: Arc<Inbox>,
    end: Arc<Mutex<Option<oneshot::Sender<Error>>>>,
    stall_limit: Duration,
    metrics: StreamMetrics,
}

/// Until when the token that opened a stream is good.
pub struct TokenWatch {
    /// Its `exp`.
    pub expires_at: OffsetDateTime,
    /// Resolves when its session or device is revoked, or revocations can no longer be checked
    /// (`token::Revocations::ended`).
    pub revoked: Pin<Box<dyn Future<Output = token::TokenError> + Send>>,
}

/// The reading end: what tonic writes to the client. Ends with the error the stream ended with.
pub struct EventStream {
    queue: mpsc::Receiver<Outgoing>,
    end: Option<oneshot::Receiver<Error>>,
    done: bool,
}

impl Delivery {
    /// Streams over `db` (new messages through `recent`), registered in `hub`, all ended with
    /// UNAVAILABLE when `shutdown` fires.
    pub fn new(
        db: PgPool,
        hub: Arc<Hub>,
        recent: Arc<RecentMessages>,
        settings: StreamSettings,
        shutdown: CancellationToken,
        metrics: StreamMetrics,
    ) -> Self {
        Self {
            replays: Arc::new(Semaphore::new(replays_admitted(&db))),
            db,
            hub,
            recent,
            settings,
            shutdown,
            metrics,
        }
    }

    /// Opens a stream for `caller`, whose group conversations are `groups`, resuming from
    /// `positions` (see `positions::resume_points`), that ends when `token` stops being good.
    /// It counts as a stream of `kind` in the metrics.
    ///
    /// # Errors
    /// [`Error::TooManyStreams`].
    pub fn open(
        &self,
        caller: Caller,
        groups: Vec<ConversationId>,
        positions: HashMap<ConversationId, u64>,
        token: TokenWatch,
        kind: StreamKind,
    ) -> Result<(Outbox, EventStream), Error> {
        let registration = self
            .hub
            .register(caller.user, caller.device, groups.clone())?;
        let (queue, receiver) = mpsc::channel(self.settings.queue);
        let (end, ended) = oneshot::channel();
        let outbox = Outbox {
            queue,
            inbox: registration.inbox().clone(),
            end: Arc::new(Mutex::new(Some(end))),
            stall_limit: self.settings.stall_limit,
            metrics: self.metrics.clone(),
        };
        let stream = EventStream {
            queue: receiver,
            end: Some(ended),
            done: false,
        };
        let task = StreamTask {
            replays: self.replays.clone(),
            db: self.db.clone(),
            recent: self.recent.clone(),
            settings: self.settings.clone(),
            shutdown: self.shutdown.clone(),
            caller,
            groups,
            outbox: outbox.clone(),
            cursors: HashMap::new(),
            progress: Progress::default(),
            metrics: self.metrics.clone(),
            _open: self.metrics.opened(kind, queue_depth(&outbox.queue)),
        };
        tokio::spawn(task.run(registration, positions, token));
        Ok((outbox, stream))
    }
}

/// Reads `queue`'s depth and capacity at a scrape, without keeping the queue open.
fn queue_depth(queue: &mpsc::Sender<Outgoing>) -> crate::metrics::QueueDepth {
    let queue = queue.downgrade();
    Box::new(move || {
        let queue = queue.upgrade()?;
        Some((
            queue.max_capacity() - queue.capacity(),
            queue.max_capacity(),
        ))
    })
}

impl Outbox {
    /// Queues a live item. A burst larger than the queue is fine while the client reads: the
    /// item waits for room, up to the stall limit. When the queue stays full that long the stream
    /// ends with SLOW_CONSUMER.
    ///
    /// # Errors
    /// [`Error::SlowConsumer`], or [`Error::ShuttingDown`] when the stream is gone.
    pub async fn push(&self, item: Outgoing) -> Result<(), Error> {
        let item = match self.queue.try_send(item) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::ShuttingDown),
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        match tokio::time::timeout(self.stall_limit, self.queue.send(item)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => {
                self.end(Error::SlowConsumer);
                Err(Error::SlowConsumer)
            }
        }
    }

    /// Queues `item` only if there is room right away (for heartbeats: a stream with a busy queue
    /// is not idle).
    fn offer(&self, item: Outgoing) {
        let _ = self.queue.try_send(item);
    }

    /// Ends the stream with `error` (the first end wins); queued items are dropped.
    pub fn end(&self, error: Error) {
        self.finish(Some(error));
    }

    /// Ends the stream with `error`, or with none when its client closed it; only the first end
    /// counts (in the metrics too).
    fn finish(&self, error: Option<Error>) {
        let end = common::sync::lock(&self.end).take();
        if let Some(end) = end {
            self.metrics.ended(error.as_ref());
            if let Some(error) = error {
                let _ = end.send(error);
            }
        }
    }

    /// The client acknowledged `delivered` in `conversation` on this stream (OpenStream's `ack`):
    /// recorded at once, whether or not the position can be stored.
    pub fn acknowledged(&self, conversation: ConversationId, delivered: u64) {
        self.inbox.acknowledge(conversation, delivered);
    }

    /// Resolves when the client is gone.
    pub async fn closed(&self) {
        self.queue.closed().await;
    }

    /// Queues a replayed item, waiting as long as it takes (the client is pulling history).
    async fn send(&self, item: Outgoing, shutdown: &CancellationToken) -> Result<(), Error> {
        tokio::select! {
            sent = self.queue.send(item) => sent.map_err(|_| Error::ShuttingDown),
            () = shutdown.cancelled() => Err(Error::ShuttingDown),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Outgoing, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(end) = self.end.as_mut() {
            match Pin::new(end).poll(cx) {
                Poll::Ready(Ok(error)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Err(_)) => self.end = None,
                Poll::Pending => {}
            }
        }
        match self.queue.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(None) => {
                self.done = true;
                // The task sends its error before it drops the queue, but it may have done both
                // between the look at `end` above and this read (on another thread): look again,
                // or a stream cut with an empty queue ends as if closed cleanly (OK, no status;
                // seen in CI as a slow consumer's Subscribe ending OK).
                match self.end.take().map(|mut end| end.try_recv()) {
                    Some(Ok(error)) => Poll::Ready(Some(Err(error))),
                    _ => Poll::Ready(None),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The task behind one stream.
struct StreamTask {
    replays: Arc<Semaphore>,
    db: PgPool,
    recent: Arc<RecentMessages>,
    settings: StreamSettings,
    shutdown: CancellationToken,
    caller: Caller,
    groups: Vec<ConversationId>,
    outbox: Outbox,
    cursors: HashMap<ConversationId, u64>,
    progress: Progress,
    metrics: StreamMetrics,
    /// Counts the stream as open while the task runs.
    _open: OpenStream,
}

/// What the stream's client has acknowledged of what was queued for it (see the module docs).
#[derive(Default)]
struct Progress {
    /// Where the stream resumed in each conversation: the client had that much already.
    started_from: HashMap<ConversationId, u64>,
    /// The last message queued in each conversation (not the cursor, which also moves past
    /// messages without a key for this device, which the client never sees to acknowledge).
    queued: HashMap<ConversationId, u64>,
    /// The sum of the acknowledged positions at the last check, and since when it has not moved
    /// while messages waited for acknowledgement.
    stalled: Option<(u64, Instant)>,
}

impl Progress {
    /// `Err(SlowConsumer)` when the device's acknowledgements (`acknowledged`, from the hub)
    /// have not moved for `timeout` while messages queued in the conversations it acknowledges
    /// waited for them.
    fn check(
        &mut self,
        acknowledged: &HashMap<ConversationId, u64>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let (mut waiting, mut positions) = (false, 0u64);
        // Only the conversations the device acknowledges are judged: `Live` acknowledges the one
        // it shows, and a client that acknowledges nothing is judged by the queue alone.
        for (conversation, queued) in &self.queued {
            let Some(position) = acknowledged.get(conversation) else {
                continue;
            };
            let started = self.started_from.get(conversation).copied().unwrap_or(0);
            let position = (*position).max(started);
            waiting |= *queued > position;
            positions = positions.saturating_add(position);
        }
        let now = Instant::now();
        match self.stalled {
            Some((before, since)) if waiting && before == positions => {
                if now.duration_since(since) >= timeout {
                    return Err(Error::SlowConsumer);
                }
            }
            _ => self.stalled = Some((positions, now)),
        }
        Ok(())
    }
}

impl StreamTask {
    async fn run(
        mut self,
        registration: Registration,
        requested: HashMap<ConversationId, u64>,
        token: TokenWatch,
    ) {
        let inbox = registration.inbox().clone();
        let lifetime = (token.expires_at - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        let result = tokio::select! {
            result = self.deliver(&inbox, &requested) => result,
            () = tokio::time::sleep(lifetime) => Err(Error::TokenExpired),
            refused = token.revoked => Err(Error::Token(refused)),
        };
        match result {
            Ok(()) => {
                tracing::debug!(user_id = %self.caller.user, "stream closed by the client");
                self.outbox.finish(None);
            }
            Err(error) => {
                tracing::debug!(user_id = %self.caller.user, %error, "stream ended");
                self.outbox.end(error);
            }
        }
        drop(registration);
    }

    async fn deliver(
        &mut self,
        inbox: &Inbox,
        requested: &HashMap<ConversationId, u64>,
    ) -> Result<(), Error> {
        // The reads are boxed: a stream task waits idle most of its life, and its future is as
        // large as its largest state, which would otherwise be a database read's.
        Box::pin(self.replay(requested)).await?;
        self.outbox.send(Outgoing::CaughtUp, &self.shutdown).await?;

        let mut heartbeat = tokio::time::interval(self.settings.heartbeat);
        // Ticks missed while the task waited for room are not made up in a burst.
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await; // the first tick is immediate
        let ack_timeout = self.settings.ack_timeout;
        let mut progress_check = tokio::time::interval((ack_timeout / 4).max(MIN_ACK_CHECK));
        progress_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Error::ShuttingDown),
                () = self.outbox.closed() => return Ok(()),
                () = inbox.ready.notified() => Box::pin(self.work(inbox.take())).await?,
                _ = heartbeat.tick() => {
                    self.outbox.offer(Outgoing::Heartbeat(OffsetDateTime::now_utc()));
                }
                _ = progress_check.tick() => {
                    self.progress.check(&inbox.acknowledged(), ack_timeout)?;
                }
            }
        }
    }

    async fn replay(&mut self, requested: &HashMap<ConversationId, u64>) -> Result<(), Error> {
        let admitted = self.admit_replay_read().await?;
        let behind = self.resume(requested).await?;
        drop(admitted);
        self.progress.started_from = self.cursors.clone();
        for (conversation, last_sequence) in behind {
            self.catch_up(conversation, last_sequence, true).await?;
        }
        Ok(())
    }

    /// Waits for a replay read's turn (see [`replays_admitted`]). The permit covers one read, not
    /// the wait for the client to take what it returned: a client that stops reading would
    /// otherwise keep its permit, and enough of them would stop every other stream's replay.
    async fn admit_replay_read(&self) -> Result<Option<OwnedSemaphorePermit>, Error> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Error::ShuttingDown),
            permit = self.replays.clone().acquire_owned() => Ok(permit.ok()),
        }
    }

    async fn work(&mut self, work: crate::delivery::hub::Work) -> Result<(), Error> {
        if work.overflowed {
            return Err(Error::SlowConsumer);
        }
        if let Some(groups) = work.groups {
            // A group joined while streaming starts from its beginning (only messages wrapped
            // for this device are read); a group left keeps nothing.
            self.cursors.retain(|conversation, _| {
                groups.contains(conversation) || !self.groups.contains(conversation)
            });
            let cursors = &self.cursors;
            self.progress
                .queued
                .retain(|conversation, _| cursors.contains_key(conversation));
            self.groups = groups;
        }
        let mut dirty: Vec<(ConversationId, u64)> = if work.resync {
            // Conversations may have appeared while events were lost.
            let cursors = self.cursors.clone();
            self.resume(&cursors).await?
        } else {
            work.dirty.into_iter().collect()
        };
        dirty.sort_unstable();
        for (conversation, announced) in dirty {
            // A conversation opened after the stream started (the hub only wakes participants)
            // starts from its beginning.
            let cursor = *self.cursors.entry(conversation).or_insert(0);
            // A duplicate wake-up (one replica hears its own commits twice: directly and over
            // the bus) costs no read.
            if cursor >= announced {
                continue;
            }
            self.catch_up(conversation, announced, false).await?;
            // The read came after `announced` committed, so it saw everything up to it, even the
            // messages without a key for this device.
            let cursor = self.cursors.entry(conversation).or_insert(0);
            *cursor = (*cursor).max(announced);
        }
        for event in work.events {
            self.outbox
                .push(Outgoing::Ephemeral(Box::new(event)))
                .await?;
        }
        Ok(())
    }

    /// Sets the cursors from the resume points; returns the conversations with messages after
    /// their cursor, with their last sequence, in id order (the others need no read).
    async fn resume(
        &mut self,
        requested: &HashMap<ConversationId, u64>,
    ) -> Result<Vec<(ConversationId, u64)>, Error> {
        let points = positions::resume_points(
            &self.db,
            self.caller.user,
            self.caller.device,
            &self.groups,
            requested,
        )
        .await?;
        self.cursors = points
            .iter()
            .map(|point| (point.conversation, point.after))
            .collect();
        let mut behind: Vec<(ConversationId, u64)> = points
            .iter()
            .filter(|point| point.after < point.last_sequence)
            .map(|point| (point.conversation, point.last_sequence))
            .collect();
        behind.sort_unstable();
        Ok(behind)
    }

    /// Queues every message of `conversation` after the cursor, page by page, through at least
    /// `upto` (committed). The shared tail (`recent.rs`) answers when it can; otherwise the
    /// device's messages are read from the database. The replay waits for room in the queue as
    /// long as it takes; live delivery at most the stall limit (see the module docs).
    async fn catch_up(
        &mut self,
        conversation: ConversationId,
        upto: u64,
        replay: bool,
    ) -> Result<(), Error> {
        loop {
            let cursor = self.cursors.get(&conversation).copied().unwrap_or(0);
            let page = self.settings.replay_page;
            // Live catch-ups are bounded by the hub's wake-ups; only replays come in storms.
            let admitted = if replay {
                self.admit_replay_read().await?
            } else {
                None
            };
            let from_tail = self
                .recent
                .read(conversation, self.caller.device, cursor, upto, page)
                .await?;
            self.metrics.tail_read(from_tail.is_some());
            let (messages, through, more) = match from_tail {
                Some(read) => (read.messages, read.through, read.through < upto),
                None => {
                    let messages = history::read_for_device(
                        &self.db,
                        self.caller.device,
                        conversation,
                        Direction::Forward,
                        cursor,
                        page,
                    )
                    .await?;
                    let full_page = messages.len() == page as usize;
                    let messages = messages
                        .into_iter()
                        .map(DeviceMessage::from_delivered)
                        .collect();
                    (messages, cursor, full_page)
                }
            };
            drop(admitted);
            let count = messages.len();
            for message in messages {
                let sequence = message.sequence();
                let item = Outgoing::Message(Box::new(message));
                if replay {
                    self.outbox.send(item, &self.shutdown).await?;
                } else {
                    self.outbox.push(item).await?;
                }
                self.cursors.insert(conversation, sequence);
                self.progress.queued.insert(conversation, sequence);
            }
            // Counted once the page is queued (a stream that ends mid-page delivered less).
            self.metrics.delivered(count, replay);
            let cursor = self.cursors.entry(conversation).or_insert(0);
            *cursor = (*cursor).max(through);
            if !more {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use futures::StreamExt;

    use super::*;

    /// The end of a stream whose task ends it with an error and drops its queue while the
    /// reader is between its two looks (at `end`, then at the queue): the reader must report
    /// the error, never a clean end. The reader polls without pause on one thread while the
    /// task ends the stream on another, many times, to land in that gap.
    #[test]
    fn an_error_sent_as_the_queue_closes_is_never_read_as_a_clean_end() {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10_000 {
            let (queue, receiver) = mpsc::channel::<Outgoing>(1);
            let (end, ended) = oneshot::channel();
            let mut stream = EventStream {
                queue: receiver,
                end: Some(ended),
                done: false,
            };
            let task = std::thread::spawn(move || {
                let _ = end.send(Error::SlowConsumer);
                drop(queue);
            });
            let first = loop {
                if let Poll::Ready(first) = stream.poll_next_unpin(&mut cx) {
                    break first;
                }
                // On a busy machine, let the task's thread run.
                std::thread::yield_now();
            };
            assert!(
                matches!(first, Some(Err(Error::SlowConsumer))),
                "the stream ended without its error"
            );
            task.join().unwrap();
        }
    }
}
