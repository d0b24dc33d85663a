//! [`PgBus`]: the bus over PostgreSQL LISTEN/NOTIFY on channel [`CHANNEL`], the default.
//!
//! One task per replica sends one NOTIFY at a time with every event that arrived while the
//! previous one was sent (and, if `CHAT_NOTIFY_WINDOW_MICROS` is above 0, waits that long for
//! more first), in as few NOTIFYs as the 8,000-byte payload limit allows
//! ([`POSTGRES_MAX_PAYLOAD`]). A failed NOTIFY puts its wake-ups back. The window defaults to 0:
//! measured with `bench cross-replica`, the 500 µs it used to be made a message to another
//! replica's stream take 2.05 ms longer than to the sender's replica at p50; with 0, 0.18 ms, and
//! `bench group-fanout` delivered as much.
//!
//! Another task LISTENs on a connection of its own; each time it (re)connects, every stream
//! re-reads (`Resync`), since what was sent meanwhile was not heard.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{
    Bus, BusEvent,
    outbox::{Outbox, POSTGRES_MAX_PAYLOAD, encode},
};
use crate::metrics::BusMetrics;

/// The NOTIFY channel.
pub const CHANNEL: &str = "chat_events";
/// Pause after a failed NOTIFY or LISTEN before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// [`Bus`] over PostgreSQL LISTEN/NOTIFY.
pub struct PgBus {
    outbox: Arc<Outbox>,
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
        let outbox = Arc::new(Outbox::new(metrics));
        let publishing = publish_loop(db.clone(), outbox.clone(), window);
        tokio::spawn(stop.clone().run_until_cancelled_owned(publishing));
        tokio::spawn(stop.run_until_cancelled_owned(listen_loop(db, outbox.clone())));
        Arc::new(Self { outbox })
    }
}

impl Bus for PgBus {
    fn publish(&self, event: BusEvent) {
        self.outbox.publish(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.outbox.subscribe()
    }
}

async fn publish_loop(db: PgPool, outbox: Arc<Outbox>, window: Duration) {
    loop {
        let events = outbox.take(window).await;
        let payloads = encode(&events, POSTGRES_MAX_PAYLOAD);
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
            outbox.requeue(events.wakeups);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

async fn listen_loop(db: PgPool, outbox: Arc<Outbox>) {
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
        outbox.resync();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => outbox.deliver_payload(notification.payload()),
                // The connection was lost; the next call reconnects, and what was sent in
                // between is lost: everyone re-reads.
                Ok(None) => outbox.resync(),
                Err(error) => {
                    tracing::warn!(%error, "the bus listener failed; reconnecting");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                }
            }
        }
    }
}
