//! Following the outbox: wake-ups between replicas and the task behind each
//! `WatchMembershipEvents` stream.
//!
//! A wake-up is only a hint. After a membership transaction commits, [`Feed::committed`] wakes
//! this replica's streams at once and asks a publishing task to `NOTIFY` channel [`CHANNEL`]
//! (never inside the membership transaction; bursts are coalesced into one NOTIFY). Each replica
//! `LISTEN`s and wakes its streams. A woken stream re-reads the outbox from its own cursor, so a
//! lost, duplicated or coalesced wake-up costs nothing but latency; streams also re-read every
//! `GROUP_EVENTS_POLL_INTERVAL_MS`, and all of them are woken when the listener reconnects.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    Error,
    config::EventSettings,
    events::{self, MembershipEvent},
};

/// The NOTIFY channel (payload empty: it is only a wake-up).
pub const CHANNEL: &str = "groups_membership_events";
/// Events read per query.
const BATCH: i64 = 500;
/// Events queued per stream before its task waits for the client.
const STREAM_QUEUE: usize = 256;
/// Pause after a failed NOTIFY, LISTEN or prune before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Wake-ups for this replica's streams, and the tasks that carry them between replicas.
pub struct Feed {
    db: PgPool,
    settings: EventSettings,
    /// Bumped on every wake-up; streams wait for it to change.
    wake: watch::Sender<u64>,
    /// Asks the publishing task to NOTIFY the other replicas.
    publish: Arc<Notify>,
    /// Cancelled at shutdown: streams end with UNAVAILABLE, tasks stop.
    shutdown: CancellationToken,
}

/// Where a `WatchMembershipEvents` stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this event id; 0 means the oldest event kept.
    After(u64),
    /// After the newest event committed so far.
    Newest,
}

/// What a stream's task sends: an event, or the error that ends the stream.
pub type StreamItem = Result<MembershipEvent, Error>;

impl Feed {
    /// Starts the listening, publishing and pruning tasks on `db`; they stop at `shutdown`.
    pub fn start(db: PgPool, settings: EventSettings, shutdown: CancellationToken) -> Arc<Self> {
        let (wake, _) = watch::channel(0);
        let feed = Arc::new(Self {
            db,
            settings,
            wake,
            publish: Arc::default(),
            shutdown,
        });
        tokio::spawn(feed.clone().listen_loop());
        tokio::spawn(feed.clone().publish_loop());
        tokio::spawn(feed.clone().prune_loop());
        feed
    }

    /// Call after a membership transaction has committed: wakes the streams of every replica.
    pub fn committed(&self) {
        self.wake_local();
        self.publish.notify_one();
    }

    /// Checks where to start, then starts a task that replays the events after it and follows
    /// new ones until the receiver is dropped or the server shuts down; errors end the stream.
    ///
    /// # Errors
    /// [`Error::CursorOutOfRange`] for a cursor before the events kept or past the newest one.
    pub async fn follow(
        self: &Arc<Self>,
        start: Start,
    ) -> Result<mpsc::Receiver<StreamItem>, Error> {
        let (pruned_through, newest) = events::bounds(&self.db).await?;
        let cursor = match start {
            Start::Newest => newest,
            Start::After(0) => pruned_through,
            Start::After(after) => {
                let after = i64::try_from(after).unwrap_or(i64::MAX);
                if after < pruned_through {
                    return Err(Error::CursorOutOfRange(out_of_range(after, pruned_through)));
                }
                if after > newest {
                    return Err(Error::CursorOutOfRange(format!(
                        "after_event_id {after} is past the newest event ({newest}); drop the cache and start from 0"
                    )));
                }
                after
            }
        };
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        let feed = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = feed.stream_to(cursor, &sender) => {}
                () = feed.shutdown.cancelled() => {
                    let _ = sender.try_send(Err(Error::ShuttingDown));
                }
            }
        });
        Ok(receiver)
    }

    /// Sends every event after `cursor`, then waits for wake-ups (or the poll interval) and sends
    /// what is new, until the client goes away or an error (sent as the last item) ends it.
    async fn stream_to(&self, mut cursor: i64, sender: &mpsc::Sender<StreamItem>) {
        let mut wake = self.wake.subscribe();
        loop {
            // Mark the current wake-up seen before reading, so one during the read is not lost.
            wake.borrow_and_update();
            let page = match events::read_after(&self.db, cursor, BATCH).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            if cursor < page.pruned_through {
                let message = out_of_range(cursor, page.pruned_through);
                let _ = sender.send(Err(Error::CursorOutOfRange(message))).await;
                return;
            }
            let full = page.events.len() as i64 == BATCH;
            for event in page.events {
                cursor = event.id;
                if sender.send(Ok(event)).await.is_err() {
                    return; // the client went away
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = wake.changed() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = sender.closed() => return,
            }
        }
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
        loop {
            let mut listener = match PgListener::connect_with(&self.db).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot connect the membership-event listener; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(CHANNEL).await {
                tracing::warn!(%error, "cannot LISTEN for membership events; retrying");
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
                        tracing::warn!(%error, "membership-event listener failed; reconnecting");
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
                .bind(CHANNEL)
                .execute(&self.db)
                .await;
            if let Err(error) = result {
                // Other replicas' streams still poll; try again for the next ones.
                tracing::warn!(%error, "cannot NOTIFY membership events");
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
            match events::prune(&self.db, self.settings.retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned old membership events"),
                Err(error) => tracing::warn!(%error, "cannot prune membership events"),
            }
        }
    }
}

fn out_of_range(cursor: i64, pruned_through: i64) -> String {
    format!(
        "events after {cursor} up to {pruned_through} are no longer kept; drop the cache and start from 0"
    )
}
