//! [`NatsBus`]: the bus over core NATS publish/subscribe (`CHAT_BUS=nats`).
//!
//! **One subject for the whole deployment** (`CHAT_NATS_SUBJECT`, default `chat.bus`): every
//! replica publishes its events there and subscribes to it, as every replica LISTENs on the one
//! NOTIFY channel. Interest-based subjects (one per conversation, or per user, subscribed while a
//! stream of this replica follows it) were weighed and refused:
//! - Correctness. NATS forwards a message between cluster nodes only to nodes that already know
//!   of a subscriber, and a new subscription's interest reaches the other nodes asynchronously.
//!   With a subject per conversation, every stream opening would start with a window in which a
//!   message committed elsewhere wakes nobody, and nothing would tell this replica to re-read:
//!   the contract's "lost only across a reconnect, then `Resync`" would no longer hold. With one
//!   subject that every replica holds from its start, interest changes only when a replica
//!   (re)connects, which `Resync` covers.
//! - Cost where it matters. Routing direct conversations needs their participants
//!   (`hub.rs`), so interest per conversation means a subscription per conversation of every
//!   stream's user (a user in 1,000 conversations: 1,000 subscriptions per stream), or per-user
//!   subjects that make the publisher send one message per participant (a 1,000-member group:
//!   1,000 publications per message). A reconnect storm (fault 6 of `FAULTS.md`: 5,000 streams)
//!   would become that many subscription changes propagated to every node.
//! - What one subject costs: every replica hears every wake-up, as with NOTIFY. A wake-up is one
//!   line (~80 bytes), coalesced per conversation and packed into payloads of up to 64 KiB, and
//!   a replica with no stream in the conversation drops it in the hub after one lookup of its
//!   participants (cached for direct conversations; for a group conversation no local stream
//!   follows, a database read, as with NOTIFY today). NATS fans that out without any lock shared
//!   with the committing transactions (NOTIFY's cost), and no replica holds a database
//!   connection to hear it.
//!
//! Per-replica subjects have the first cost of per-user ones (the publisher must know who cares)
//! with nothing gained over one subject. Should the wake-up traffic itself ever be the limit,
//! subjects per conversation hash bucket (`chat.bus.<n>`, every replica subscribed to all) are
//! the step that keeps these properties while letting NATS spread the load.
//!
//! **Losses and `Resync`.** Core NATS is at most once. A replica whose connection breaks hears
//! nothing until it is back, so every (re)connection makes every stream re-read, at once and
//! again [`SETTLE`] later (the subscription is sent again as the client reconnects, and its
//! interest takes a moment to reach the other nodes, as the others' interest takes to reach the
//! node this replica reconnected to). A subscription that falls behind (NATS
//! drops what does not fit in the client's buffer, and says so) resyncs too. A publisher cannot
//! tell whether what it wrote just before its connection broke reached the server, so it
//! publishes again, after every reconnection, the wake-ups it published in the last
//! [`REPUBLISH_WINDOW`] (longer than a dead connection takes to notice, [`PING_INTERVAL`]),
//! at once and again after [`SETTLE`]: a duplicate wake-up costs a re-read at most. Receipts and typing are not published again.
//!
//! Payloads are bounded as NOTIFY's are: [`NATS_MAX_PAYLOAD`] (or the server's `max_payload`, if
//! lower) for what this replica writes, and larger payloads received are dropped unread. Bad
//! lines are skipped, as for `pg.rs`. Credentials come from a NATS credentials file (`.creds`,
//! what `nsc` writes) named by `CHAT_NATS_CREDENTIALS_FILE`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::{Client, ConnectOptions, Event, Subscriber};
use common::sync::lock;
use futures::StreamExt;
use secrecy::ExposeSecret;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::{
    Bus, BusEvent,
    outbox::{NATS_MAX_PAYLOAD, Outbox, Wakeup, encode},
};
use crate::{config::NatsSettings, ids::ConversationId, metrics::BusMetrics};

/// How often the client pings its server; with two pings unanswered the connection is
/// dropped and made again, so a connection that died without a reset is left within about
/// three times this.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
/// How long wake-ups are kept to be published again after a reconnection: longer than a dead
/// connection takes to notice.
pub const REPUBLISH_WINDOW: Duration = Duration::from_secs(10);
/// When the second `Resync` after a (re)connection comes.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Longest pause between two attempts to reconnect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Pause after a failed publication before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Why the NATS bus cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The credentials cannot be read or are not a credentials file.
    #[error("NATS credentials (CHAT_NATS_CREDENTIALS_FILE): {0}")]
    Credentials(std::io::Error),
    /// The client refused the settings.
    #[error("NATS connection: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// The subscription could not be made.
    #[error("NATS subscription: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// [`Bus`] over NATS.
pub struct NatsBus {
    outbox: Arc<Outbox>,
}

/// The wake-ups published lately, by publication, to publish again after a reconnection.
#[derive(Default)]
struct RecentlySent {
    batches: VecDeque<(Instant, HashMap<ConversationId, Wakeup>)>,
}

impl NatsBus {
    /// Connects to the servers of `settings` (in the background: the service starts without
    /// them, and streams re-read once the bus is connected) and starts the publishing and
    /// listening tasks; they end when `stop` fires. What it publishes and hears is counted in
    /// `metrics`.
    ///
    /// # Errors
    /// When the credentials cannot be read or the client refuses the settings; never because
    /// a server is unreachable.
    pub async fn start(
        settings: &NatsSettings,
        stop: CancellationToken,
        metrics: BusMetrics,
    ) -> Result<Arc<Self>, StartError> {
        let outbox = Arc::new(Outbox::new(metrics));
        let connected = Arc::new(Notify::new());
        let options = options(settings, outbox.clone(), connected.clone())?;
        let client = options.connect(settings.servers.clone()).await?;
        let subscriber = client.subscribe(settings.subject.clone()).await?;
        let sent = Arc::new(Mutex::new(RecentlySent::default()));
        let publishing = publish_loop(
            client.clone(),
            settings.subject.clone(),
            outbox.clone(),
            sent.clone(),
        );
        tokio::spawn(stop.clone().run_until_cancelled_owned(publishing));
        let listening = listen_loop(subscriber, outbox.clone());
        tokio::spawn(stop.clone().run_until_cancelled_owned(listening));
        let reconnecting = reconnect_loop(connected, outbox.clone(), sent);
        tokio::spawn(stop.run_until_cancelled_owned(reconnecting));
        Ok(Arc::new(Self { outbox }))
    }
}

impl Bus for NatsBus {
    fn publish(&self, event: BusEvent) {
        self.outbox.publish(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.outbox.subscribe()
    }
}

/// The client's options: credentials, pings, reconnection for ever, and the connection events
/// turned into `Resync`s.
fn options(
    settings: &NatsSettings,
    outbox: Arc<Outbox>,
    connected: Arc<Notify>,
) -> Result<ConnectOptions, StartError> {
    let mut options = ConnectOptions::new();
    if let Some(credentials) = &settings.credentials {
        let credentials = credentials.read().map_err(StartError::Credentials)?;
        // Secrets are read trimmed, and the client's parser wants the line break that ends the
        // seed's closing line.
        let credentials = format!("{}\n", credentials.expose_secret());
        options = options
            .credentials(&credentials)
            .map_err(StartError::Credentials)?;
    }
    Ok(options
        .name("chat")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .ping_interval(PING_INTERVAL)
        .reconnect_delay_callback(|attempts| {
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            (Duration::from_millis(50) * attempts).min(MAX_RECONNECT_DELAY)
        })
        .event_callback(move |event| {
            match event {
                Event::Connected => {
                    tracing::info!("the NATS bus is connected");
                    connected.notify_one();
                }
                Event::SlowConsumer(_) => {
                    // NATS dropped messages this replica did not read in time.
                    tracing::warn!("the NATS bus fell behind; resyncing every stream");
                    outbox.resync();
                }
                Event::Disconnected => tracing::warn!("the NATS bus is disconnected"),
                other => tracing::info!(event = %other, "NATS bus event"),
            }
            std::future::ready(())
        }))
}

async fn publish_loop(
    client: Client,
    subject: String,
    outbox: Arc<Outbox>,
    sent: Arc<Mutex<RecentlySent>>,
) {
    loop {
        let events = outbox.take(Duration::ZERO).await;
        let limit = match client.server_info().max_payload {
            // Not connected yet: the server's bound is not known.
            0 => NATS_MAX_PAYLOAD,
            server => NATS_MAX_PAYLOAD.min(server),
        };
        let mut result = Ok(());
        for payload in encode(&events, limit) {
            result = client.publish(subject.clone(), payload.into()).await;
            if result.is_err() {
                break;
            }
        }
        // Writes everything to the connection before taking more, so that what arrives
        // meanwhile is coalesced into the next publication (while the connection is down,
        // this waits for the next one).
        let flushed = match result {
            Ok(()) => client.flush().await.map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match flushed {
            Ok(()) => lock(&sent).remember(events.wakeups),
            Err(error) => {
                tracing::warn!(%error, "cannot publish wake-ups; retrying");
                outbox.requeue(events.wakeups);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

async fn listen_loop(mut subscriber: Subscriber, outbox: Arc<Outbox>) {
    while let Some(message) = subscriber.next().await {
        if message.payload.len() > NATS_MAX_PAYLOAD {
            // No replica writes one: whoever sent it is not a chat replica.
            tracing::warn!(
                bytes = message.payload.len(),
                "oversized bus payload dropped"
            );
            continue;
        }
        match std::str::from_utf8(&message.payload) {
            Ok(payload) => outbox.deliver_payload(payload),
            Err(_) => tracing::warn!("bus payload that is not UTF-8 dropped"),
        }
    }
}

/// After every (re)connection: every stream re-reads and the wake-ups of the last
/// [`REPUBLISH_WINDOW`] are published again, now and once more after [`SETTLE`].
async fn reconnect_loop(
    connected: Arc<Notify>,
    outbox: Arc<Outbox>,
    sent: Arc<Mutex<RecentlySent>>,
) {
    loop {
        connected.notified().await;
        outbox.resync();
        outbox.requeue(lock(&sent).recent());
        let (outbox, sent) = (outbox.clone(), sent.clone());
        tokio::spawn(async move {
            tokio::time::sleep(SETTLE).await;
            // Once more, now that the other replicas' interest has reached this node (and what
            // was waiting for the connection has been written).
            outbox.resync();
            outbox.requeue(lock(&sent).recent());
        });
    }
}

impl RecentlySent {
    /// Keeps `wakeups`, just published, and forgets those older than [`REPUBLISH_WINDOW`].
    fn remember(&mut self, wakeups: HashMap<ConversationId, Wakeup>) {
        let now = Instant::now();
        while let Some((at, _)) = self.batches.front() {
            if now.duration_since(*at) <= REPUBLISH_WINDOW {
                break;
            }
            self.batches.pop_front();
        }
        if !wakeups.is_empty() {
            self.batches.push_back((now, wakeups));
        }
    }

    /// Every wake-up kept, merged per conversation.
    fn recent(&self) -> HashMap<ConversationId, Wakeup> {
        let mut merged: HashMap<ConversationId, Wakeup> = HashMap::new();
        for (conversation, wakeup) in self.batches.iter().flat_map(|(_, batch)| batch) {
            merged
                .entry(*conversation)
                .and_modify(|kept| kept.merge(*wakeup))
                .or_insert(*wakeup);
        }
        merged
    }
}
