//! Following an outbox table: the event streams other services watch to keep their caches right
//! (group's `WatchMembershipEvents`, auth's `WatchDeviceChanges`).
//!
//! A service writes an event row in the same transaction as the change it describes, serialising
//! those inserts with a transaction-scoped advisory lock so that ids become visible in id order
//! (an identity value is assigned at insert, not commit: without the lock a reader resuming
//! "after N" could skip a late commit for good). This module does the rest, the same way for
//! every outbox:
//!
//! - [`Feed::follow`]: one task per watch stream replays the events after the caller's cursor,
//!   then follows new ones. [`Feed::follow_with_progress`] also says when it has caught up
//!   ([`FeedItem::CaughtUp`], after every read that left nothing unsent), for followers that must
//!   know how current they are (auth's `WatchRevocations` heartbeats).
//! - Wake-ups are only hints. After a change commits, [`Feed::committed`] wakes this replica's
//!   streams at once and asks a publishing task to `NOTIFY` the outbox's channel (never inside
//!   the change's transaction; bursts coalesce into one NOTIFY). Each replica `LISTEN`s and wakes
//!   its streams. A woken stream re-reads the table from its own cursor, so a lost, duplicated or
//!   coalesced wake-up costs nothing but latency; streams also re-read every poll interval, and
//!   all of them are woken when the listener reconnects.
//! - Events older than the retention are pruned; a one-row watermark table records how far, so
//!   a cursor pointing into deleted history is told apart from one that is merely up to date
//!   (ids can have gaps) and answered OUT_OF_RANGE.

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use prometheus_client::registry::Registry;
use sqlx::{PgPool, Row, postgres::PgListener, postgres::PgRow};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, EnvReader};

/// Events read per query.
const BATCH: i64 = 500;
/// Events queued per stream before its task waits for the client.
const STREAM_QUEUE: usize = 256;
/// Pause after a failed NOTIFY, LISTEN or prune before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The shortest retention the watch APIs promise ("kept for at least 24 hours").
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The longest poll interval of an outbox: it paces the heartbeats of the stream that follows
/// it, which followers wait for. Validators expect `WatchRevocations`' well within their maximum
/// staleness (`token::DEFAULT_MAX_STALENESS`); chat stops trusting its membership cache after
/// hearing nothing from `WatchMembershipEvents` for twice this.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Where one outbox lives. The names are fixed strings of the service's schema, never input.
#[derive(Debug, Clone, Copy)]
pub struct OutboxTable {
    /// The events, with an increasing `id bigint` and a `created_at timestamptz`.
    pub events: &'static str,
    /// The one-row watermark table (`pruned_through bigint`, `updated_at timestamptz`).
    pub retention: &'static str,
    /// The columns `read_after` selects for [`OutboxEvent::from_row`], besides `id`.
    pub columns: &'static str,
    /// The NOTIFY channel (payload empty: it is only a wake-up).
    pub channel: &'static str,
}

/// A row of an outbox.
pub trait OutboxEvent: Sized + Send + Sync + 'static {
    /// Where the rows are.
    const TABLE: OutboxTable;

    /// The event in `row` (its `id` and [`OutboxTable::columns`]).
    ///
    /// # Errors
    /// When a column is missing or has another type.
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error>;

    /// The event's id, the consumers' cursor.
    fn id(&self) -> i64;
}

/// How an outbox is streamed and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSettings {
    /// `<P>_<EVENTS>_POLL_INTERVAL_MS`: how often an idle stream re-reads the outbox even without
    /// a NOTIFY wake-up (the fallback when one is lost), default 1,000 ms.
    pub poll_interval: Duration,
    /// `<P>_<EVENTS>_RETENTION_SECS`: how long events are kept, default and at least 86,400 (the
    /// 24 hours the watch APIs promise).
    pub retention: Duration,
    /// `<P>_<EVENTS>_PRUNE_INTERVAL_SECS`: how often events older than the retention are
    /// deleted, default 3,600.
    pub prune_interval: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            retention: MIN_RETENTION,
            prune_interval: Duration::from_secs(3600),
        }
    }
}

impl OutboxSettings {
    /// Reads `<P>_<events>_POLL_INTERVAL_MS`, `_RETENTION_SECS` and `_PRUNE_INTERVAL_SECS`
    /// (`events` is `EVENTS` for group, `DEVICE_EVENTS` for auth). The poll interval paces the
    /// heartbeats of `watch` (the RPC that streams the outbox), so it is at most
    /// [`MAX_POLL_INTERVAL`].
    ///
    /// # Errors
    /// When a value is malformed, zero, the poll interval is above [`MAX_POLL_INTERVAL`] or the
    /// retention is below [`MIN_RETENTION`].
    pub fn from_env(env: &EnvReader, events: &str, watch: &str) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let poll_key = format!("{events}_POLL_INTERVAL_MS");
        let poll_millis: u64 = env.parse_or(&poll_key, 1_000)?;
        if poll_millis == 0 {
            return Err(ConfigError::Invalid {
                key: env.key(&poll_key),
                reason: "must be above zero".into(),
            });
        }
        let retention_key = format!("{events}_RETENTION_SECS");
        let retention = env.seconds_or(&retention_key, defaults.retention)?;
        if retention < MIN_RETENTION {
            return Err(ConfigError::Invalid {
                key: env.key(&retention_key),
                reason: "must be at least 86400 (the API promises 24 hours)".into(),
            });
        }
        let prune_key = format!("{events}_PRUNE_INTERVAL_SECS");
        let prune_interval = env.seconds_or(&prune_key, defaults.prune_interval)?;
        if prune_interval.is_zero() {
            return Err(ConfigError::Invalid {
                key: env.key(&prune_key),
                reason: "must be at least 1".into(),
            });
        }
        let poll_interval = Duration::from_millis(poll_millis);
        if poll_interval > MAX_POLL_INTERVAL {
            return Err(ConfigError::Invalid {
                key: env.key(&poll_key),
                reason: format!(
                    "must be at most {}: it paces {watch}' heartbeats",
                    MAX_POLL_INTERVAL.as_millis()
                ),
            });
        }
        Ok(Self {
            poll_interval,
            retention,
            prune_interval,
        })
    }
}

/// Where a watch stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this event id; 0 means the oldest event kept.
    After(u64),
    /// After the newest event committed so far.
    Newest,
}

impl Start {
    /// The start a watch request asks for (`after_event_id`, `start_at_newest`).
    ///
    /// # Errors
    /// When both are set.
    pub fn from_request(after_event_id: u64, start_at_newest: bool) -> Result<Self, FeedError> {
        match (after_event_id, start_at_newest) {
            (0, true) => Ok(Start::Newest),
            (after, false) => Ok(Start::After(after)),
            (_, true) => Err(FeedError::InvalidStart),
        }
    }
}

/// Why a watch stream cannot start or has ended.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The cursor points before the events kept or past the newest one.
    #[error("{0}")]
    CursorOutOfRange(String),
    /// Both a cursor and "start at newest" were asked for.
    #[error("set after_event_id or start_at_newest, not both")]
    InvalidStart,
    /// The server is shutting down; the caller should reconnect (to another replica).
    #[error("the server is shutting down; reconnect and resume after the last event id")]
    ShuttingDown,
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

impl From<FeedError> for tonic::Status {
    fn from(error: FeedError) -> Self {
        let message = error.to_string();
        match error {
            FeedError::CursorOutOfRange(_) => tonic::Status::out_of_range(message),
            FeedError::InvalidStart => tonic::Status::invalid_argument(message),
            FeedError::ShuttingDown => tonic::Status::unavailable(message),
            FeedError::Db(cause) => {
                tracing::error!(%cause, "outbox read failed");
                tonic::Status::unavailable(
                    "the event stream failed; resume after the last event id",
                )
            }
        }
    }
}

/// What a stream's task sends: an event, or the error that ends the stream.
pub type StreamItem<E> = Result<E, FeedError>;

/// What a stream of [`Feed::follow_with_progress`] sends besides errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem<E> {
    /// The next event.
    Event(E),
    /// Every event committed before the stream last read the outbox has been sent; the cursor
    /// (the last event id read, or where the stream started) to resume after.
    CaughtUp(i64),
}

/// Wake-ups for this replica's streams of one outbox, and the tasks that carry them between
/// replicas.
pub struct Feed<E: OutboxEvent> {
    db: PgPool,
    settings: OutboxSettings,
    /// Bumped on every wake-up; streams wait for it to change.
    wake: watch::Sender<u64>,
    /// Asks the publishing task to NOTIFY the other replicas.
    publish: Arc<Notify>,
    /// Cancelled at shutdown: streams end with UNAVAILABLE, tasks stop.
    shutdown: CancellationToken,
    metrics: FeedMetrics,
    _events: std::marker::PhantomData<fn() -> E>,
}

/// What a [`Feed`] counts: events sent to its streams and the streams open on this replica.
/// Clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct FeedMetrics {
    streamed: Counter,
    streams_open: Gauge,
}

impl FeedMetrics {
    /// Registers them as `<prefix>_streamed_total` and `<prefix>_streams_open`; `what` names the
    /// events and their streams in the help texts.
    pub fn register(&self, registry: &mut Registry, prefix: &str, what: &str) {
        registry.register(
            format!("{prefix}_streamed"),
            format!("{what}: events sent to this replica's watch streams"),
            self.streamed.clone(),
        );
        registry.register(
            format!("{prefix}_streams_open"),
            format!("{what}: watch streams open on this replica"),
            self.streams_open.clone(),
        );
    }
}

/// One read of the outbox: events after a cursor, and how far the outbox has been pruned, both
/// from the same snapshot.
struct Page<E> {
    events: Vec<E>,
    pruned_through: i64,
}

impl<E: OutboxEvent> Feed<E> {
    /// Starts the listening, publishing and pruning tasks on `db`; they stop at `shutdown`.
    pub fn start(db: PgPool, settings: OutboxSettings, shutdown: CancellationToken) -> Arc<Self> {
        let (wake, _) = watch::channel(0);
        let feed = Arc::new(Self {
            db,
            settings,
            wake,
            publish: Arc::default(),
            shutdown,
            metrics: FeedMetrics::default(),
            _events: std::marker::PhantomData,
        });
        tokio::spawn(feed.clone().listen_loop());
        tokio::spawn(feed.clone().publish_loop());
        tokio::spawn(feed.clone().prune_loop());
        feed
    }

    /// What it counts (shared: register once).
    pub fn metrics(&self) -> FeedMetrics {
        self.metrics.clone()
    }

    /// Call after a transaction that wrote events has committed: wakes the streams of every
    /// replica.
    pub fn committed(&self) {
        self.wake_local();
        self.publish.notify_one();
    }

    /// Checks where to start, then starts a task that replays the events after it and follows
    /// new ones until the receiver is dropped or the server shuts down; errors end the stream.
    ///
    /// # Errors
    /// [`FeedError::CursorOutOfRange`] for a cursor before the events kept or past the newest
    /// one; [`FeedError::Db`].
    pub async fn follow(
        self: &Arc<Self>,
        start: Start,
    ) -> Result<mpsc::Receiver<StreamItem<E>>, FeedError> {
        self.spawn_stream(start, |item| match item {
            FeedItem::Event(event) => Some(event),
            FeedItem::CaughtUp(_) => None,
        })
        .await
    }

    /// Like [`Feed::follow`], and also sends [`FeedItem::CaughtUp`] after every read that left
    /// nothing unsent: at least once per poll interval, so that a follower can tell a quiet
    /// stream from a stalled one.
    ///
    /// # Errors
    /// As for [`Feed::follow`].
    pub async fn follow_with_progress(
        self: &Arc<Self>,
        start: Start,
    ) -> Result<mpsc::Receiver<Result<FeedItem<E>, FeedError>>, FeedError> {
        self.spawn_stream(start, Some).await
    }

    /// Checks the start, then spawns the stream's task, which sends what `keep` makes of each
    /// item.
    async fn spawn_stream<T: Send + 'static>(
        self: &Arc<Self>,
        start: Start,
        keep: fn(FeedItem<E>) -> Option<T>,
    ) -> Result<mpsc::Receiver<Result<T, FeedError>>, FeedError> {
        let (pruned_through, newest) = self.bounds().await?;
        let cursor = match start {
            Start::Newest => newest,
            Start::After(0) => pruned_through,
            Start::After(after) => {
                let after = i64::try_from(after).unwrap_or(i64::MAX);
                if after < pruned_through {
                    return Err(FeedError::CursorOutOfRange(out_of_range(
                        after,
                        pruned_through,
                    )));
                }
                if after > newest {
                    return Err(FeedError::CursorOutOfRange(format!(
                        "after_event_id {after} is past the newest event ({newest}); drop the cache and start from 0"
                    )));
                }
                after
            }
        };
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        let feed = self.clone();
        // Counted before the caller gets the stream; the task uncounts it when it ends.
        self.metrics.streams_open.inc();
        tokio::spawn(async move {
            tokio::select! {
                () = feed.stream_to(cursor, &sender, keep) => {}
                () = feed.shutdown.cancelled() => {
                    let _ = sender.try_send(Err(FeedError::ShuttingDown));
                }
            }
            feed.metrics.streams_open.dec();
        });
        Ok(receiver)
    }

    /// Sends every event after `cursor`, then waits for wake-ups (or the poll interval) and sends
    /// what is new, until the client goes away or an error (sent as the last item) ends it. After
    /// each read that left nothing unsent it offers `keep` a [`FeedItem::CaughtUp`].
    async fn stream_to<T>(
        &self,
        mut cursor: i64,
        sender: &mpsc::Sender<Result<T, FeedError>>,
        keep: fn(FeedItem<E>) -> Option<T>,
    ) {
        let mut wake = self.wake.subscribe();
        loop {
            // Mark the current wake-up seen before reading, so one during the read is not lost.
            wake.borrow_and_update();
            let page = match self.read_after(cursor).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(FeedError::Db(error))).await;
                    return;
                }
            };
            if cursor < page.pruned_through {
                let message = out_of_range(cursor, page.pruned_through);
                let _ = sender.send(Err(FeedError::CursorOutOfRange(message))).await;
                return;
            }
            let full = page.events.len() as i64 == BATCH;
            for event in page.events {
                cursor = event.id();
                if let Some(item) = keep(FeedItem::Event(event)) {
                    // Counted before the send, so a client that received it sees it counted.
                    self.metrics.streamed.inc();
                    if sender.send(Ok(item)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
            if full {
                continue;
            }
            if let Some(item) = keep(FeedItem::CaughtUp(cursor))
                && sender.send(Ok(item)).await.is_err()
            {
                return;
            }
            tokio::select! {
                _ = wake.changed() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = sender.closed() => return,
            }
        }
    }

    /// At most [`BATCH`] events after `after`, in id order, with the pruning watermark of the
    /// same snapshot (one statement), so that a prune that removed part of the range is always
    /// noticed.
    async fn read_after(&self, after: i64) -> Result<Page<E>, sqlx::Error> {
        let OutboxTable {
            events,
            retention,
            columns,
            ..
        } = E::TABLE;
        let rows = sqlx::query(&format!(
            "select r.pruned_through, e.*
             from {retention} r
             left join lateral (
                 select id, {columns} from {events} where id > $1 order by id limit $2
             ) e on true
             order by e.id"
        ))
        .bind(after)
        .bind(BATCH)
        .fetch_all(&self.db)
        .await?;
        let pruned_through = rows.first().map_or(0, |row| row.get("pruned_through"));
        let mut page = Vec::with_capacity(rows.len());
        for row in rows {
            if row.get::<Option<i64>, _>("id").is_some() {
                page.push(E::from_row(&row)?);
            }
        }
        Ok(Page {
            events: page,
            pruned_through,
        })
    }

    /// The pruning watermark and the newest id a cursor may name (the newest event, or the
    /// watermark when everything has been pruned).
    async fn bounds(&self) -> Result<(i64, i64), sqlx::Error> {
        let OutboxTable {
            events, retention, ..
        } = E::TABLE;
        let row = sqlx::query(&format!(
            "select r.pruned_through,
                    greatest(r.pruned_through, (select coalesce(max(id), 0) from {events})) as newest
             from {retention} r"
        ))
        .fetch_one(&self.db)
        .await?;
        Ok((row.get("pruned_through"), row.get("newest")))
    }

    /// Deletes the events older than the retention and moves the watermark past them. Deletes by
    /// id up to the newest old event, so that what remains is always a suffix of the id sequence.
    async fn prune(&self) -> Result<u64, sqlx::Error> {
        let OutboxTable {
            events, retention, ..
        } = E::TABLE;
        let mut tx = self.db.begin().await?;
        let cutoff: Option<i64> = sqlx::query_scalar(&format!(
            "select max(id) from {events} where created_at < now() - make_interval(secs => $1)"
        ))
        .bind(self.settings.retention.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
        let Some(cutoff) = cutoff else {
            return Ok(0);
        };
        sqlx::query(&format!(
            "update {retention} set pruned_through = greatest(pruned_through, $1), updated_at = now()"
        ))
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query(&format!("delete from {events} where id <= $1"))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    fn wake_local(&self) {
        self.wake
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    async fn listen_loop(self: Arc<Self>) {
        tokio::select! {
            () = self.listen() => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    async fn listen(&self) {
        let channel = E::TABLE.channel;
        loop {
            let mut listener = match PgListener::connect_with(&self.db).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, channel, "cannot connect the outbox listener; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(channel).await {
                tracing::warn!(%error, channel, "cannot LISTEN; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            // Whatever was notified before this point was not heard.
            self.wake_local();
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => self.wake_local(),
                    // The connection was lost (and re-established): wake-ups may be lost.
                    Ok(None) => self.wake_local(),
                    Err(error) => {
                        tracing::warn!(%error, channel, "outbox listener failed; reconnecting");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        break;
                    }
                }
            }
        }
    }

    async fn publish_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.publish.notified() => {}
                () = self.shutdown.cancelled() => return,
            }
            let result = sqlx::query("select pg_notify($1, '')")
                .bind(E::TABLE.channel)
                .execute(&self.db)
                .await;
            if let Err(error) = result {
                // Other replicas' streams still poll; try again for the next ones.
                tracing::warn!(%error, channel = E::TABLE.channel, "cannot NOTIFY");
                self.publish.notify_one();
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    async fn prune_loop(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.settings.prune_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            match self.prune().await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, outbox = E::TABLE.events, "pruned old events")
                }
                Err(error) => {
                    tracing::warn!(%error, outbox = E::TABLE.events, "cannot prune events")
                }
            }
        }
    }
}

fn out_of_range(cursor: i64, pruned_through: i64) -> String {
    format!(
        "events after {cursor} up to {pruned_through} are no longer kept; drop the cache and start from 0"
    )
}
