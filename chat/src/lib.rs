//! The chat service owns conversations and end-to-end encrypted messages: it validates and stores
//! envelopes (ciphertext, wrapped keys, signatures; never plaintext), assigns gap-free
//! per-conversation sequences, and delivers messages, receipts and typing indicators over streams.
//! It is the only reader and writer of the `chat` database schema.
//!
//! It does not own users, devices, keys or groups: it asks auth over gRPC (`auth.internal.v1`
//! `GetActiveDevices`, and `auth.v1` `LookupUsers` to tell unknown users) and group
//! (`group.internal.v1` `GetMembership`, `ListUserGroups`), forwarding the caller's token, and
//! follows group's `WatchMembershipEvents` and auth's `WatchDeviceChanges` with the deployment's
//! service credential to keep its caches right and tell open streams about changes, and auth's
//! `WatchRevocations` (through `token::RemoteValidator`) to refuse revoked sessions' tokens and
//! end their streams. It never decrypts
//! anything: it checks each envelope's Ed25519 signature with the sender
//! device's published key (the `e2ee` crate) and that the wrapped keys name exactly the current
//! devices.
//!
//! Where to read: the folders are layers, each importing only those below it (checked by
//! `ci/module_cycles.py`), in the order of a message's life:
//! - `api/`: the one place that speaks `chat.v1` (authentication, proto <-> domain);
//!   `service.rs`: the operations it calls; `session.rs`: what an OpenStream session does with
//!   its requests (sends in flight, acknowledgements, typing).
//! - `send/`: `checks.rs`, every check of a send; `commit.rs`, group commit (many sends, one
//!   transaction, sequences from `conversations.last_sequence`).
//! - `delivery/`: `bus.rs`, wake-ups between replicas behind the `Bus` trait (`bus/pg.rs`,
//!   PostgreSQL LISTEN/NOTIFY, the default; `bus/nats.rs`, NATS), published after commit; `hub.rs`, the streams of this replica and the dispatcher
//!   that wakes them; `recent.rs`, each conversation's newest messages; `wire.rs`, a message
//!   encoded once for every stream (the second place that writes `chat.v1`, for that reason);
//!   `stream.rs`, one stream (replay, `CaughtUp`, live, backpressure, heartbeats); `typing.rs`.
//! - `membership/`: `groups.rs` and `devices.rs` (who takes part, with which devices) and their
//!   caches (`followed_cache.rs`), kept right by the event streams `watch.rs` follows
//!   (`group_events.rs`, `device_events.rs`).
//! - `store/`: `conversations.rs`, `history.rs` (ListMessages), `forwarded.rs` (ForwardKeys:
//!   keys one device re-wrapped for another of its user's devices, merged into ListMessages),
//!   `positions.rs` (Acknowledge, resume points).
//! - Below them all: `message.rs` (the message types every layer shares), `ids.rs`, `error.rs`,
//!   `config.rs`. `properties.rs` tests the send and delivery path together against a model.
//!
//! Decisions worth knowing before changing anything:
//! - The recipient set must be exactly the current keyed devices of every participant; the
//!   sending device itself may be included or not (including it lets it read its own messages in
//!   history). A stale entry (right device, old key) is reported as stale, not missing.
//! - Retries are answered before the device check, so a retry after a device change still gets
//!   the original; the same client message id with another envelope (compared by signature) is
//!   ALREADY_EXISTS, reason CLIENT_MESSAGE_ID_REUSED.
//! - A committed send is never undone: a client that disconnects before the answer retries with
//!   the same client message id and gets `duplicate = true`.
//! - Acknowledgements and typing indicators sent on OpenStream have no answer; refused ones are
//!   logged at debug level only.
//! - Every limit is in [`Config`] (`CHAT_*`, documented in `local.env.example`). Fixed internal
//!   bounds (bus buffers, caches) are named constants in their modules.
//! - Group memberships and users' device lists are cached (`followed_cache.rs`), trusted only
//!   while the matching event stream is followed (`watch.rs`: group's `WatchMembershipEvents`,
//!   auth's `WatchDeviceChanges`, with the deployment's service credential, each sending a
//!   heartbeat at least every 5 s: a stream silent for [`EVENT_STREAM_SILENCE_BOUND`] is dropped
//!   and its cache bypassed); the same events reach open streams as `MembershipChange` and
//!   `DevicesChanged`.
//! - Keys stored by ForwardKeys are announced to the recipient device's streams only, on every
//!   replica through the bus (`KeysForwarded`), best-effort: an event the bus loses is not
//!   replayed, and the client sees the keys at its next ListMessages.
//! - The per-device stream limit and the typing rate limit hold per replica, not across replicas.

mod api;
mod config;
mod delivery;
pub mod error;
mod ids;
mod membership;
mod message;
mod metrics;
#[cfg(test)]
mod properties;
mod send;
mod service;
mod session;
mod store;
#[cfg(test)]
mod test_support;

pub use membership::watch::SILENCE_BOUND as EVENT_STREAM_SILENCE_BOUND;

use std::{future::Future, sync::Arc};

use common::service_credential::ServiceCredential;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::Routes};

use delivery::{bus, hub, recent, stream, typing};
use membership::{device_events, devices, group_events, groups, watch};
use send::{checks, commit};
use store::conversations;

pub use api::{ChatApi, ChatServer};
pub use config::{
    BusSettings, CommitSettings, Config, DEFAULT_LISTEN_ADDR, Limits, NatsSettings, StreamSettings,
};
#[doc(hidden)]
pub use delivery::bus::outbox::fuzz_payload as fuzz_bus_payload;
pub use delivery::bus::pg::CHANNEL as BUS_CHANNEL;

/// The bus between replicas, for its contract tests (`tests/api/bus_contract.rs`), which hold
/// both implementations to the same promises; nothing else outside the crate uses it.
#[doc(hidden)]
pub mod bus_contract {
    pub use crate::delivery::bus::{
        Bus, BusEvent, KeysForwarded, Receipt, Typing,
        nats::{NatsBus, PING_INTERVAL, SETTLE},
        outbox::{NATS_MAX_PAYLOAD, POSTGRES_MAX_PAYLOAD},
        pg::{CHANNEL, PgBus},
    };
    pub use crate::ids::{ConversationId, DeviceId, UserId};
    pub use crate::metrics::BusMetrics;
}
pub use error::Error;

/// The gRPC services chat serves (besides health and reflection).
pub const SERVICES: &[&str] = &[ChatServer::NAME];

/// Serves the chat API on `listener` until `shutdown` resolves, then ends every stream with
/// UNAVAILABLE and drains in-flight calls for at most the configured shutdown timeout. Health
/// follows the database's reachability.
///
/// # Errors
/// When the server fails.
pub async fn run(
    config: Config,
    db: PgPool,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_listener =
        common::metrics::bind(config.metrics_listen_addr, "CHAT_METRICS_LISTEN_ADDR").await?;
    run_with_metrics_listener(config, db, listener, metrics_listener, shutdown).await
}

/// As [`run`], with `/metrics` served on `metrics_listener` (bound by the caller; `None`: no
/// metrics port) instead of at `config.metrics_listen_addr`.
///
/// # Errors
/// As [`run`].
pub async fn run_with_metrics_listener(
    config: Config,
    db: PgPool,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut metrics = common::metrics::for_service(SERVICES, &db);
    let tokens = &config.access_tokens;
    let credential = ServiceCredential::new(&config.service_secret.read()?)?;
    // The revocation feed is an event stream from auth like the others: on a channel that pings
    // (`watch.rs`), so that a connection that died without a reset is left, not waited on for
    // ever with the list stale and every call refused.
    let auth = watch::peer_channel(&tokens.auth_url)?;
    let attach: token::AttachCredential = Arc::new({
        let credential = credential.clone();
        move |request| credential.attach(request)
    });
    let validator = token::RemoteValidator::start(
        token::ValidationSettings::new(tokens.issuer.clone(), tokens.audience.clone()),
        Arc::new(token::AuthServiceKeySource::new(auth.clone())),
        Arc::new(token::AuthServiceRevocationSource::new(auth, attach)),
        tokens.revocation_max_staleness,
    );
    let streams_end = CancellationToken::new();
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    let chat = build(
        &config,
        db.clone(),
        credential,
        streams_end.clone(),
        background,
        metrics.registry_mut(),
    )
    .await?;
    let metrics = Arc::new(metrics);
    let _metrics_server = common::metrics::spawn_server(metrics_listener, metrics.clone())?;
    let service = common::service::Service {
        routes: Routes::new(ChatServer::new(ChatApi::new(validator, chat))),
        names: SERVICES,
        db,
        metrics,
    };
    common::service::serve(
        service,
        listener,
        shutdown,
        streams_end,
        config.server.shutdown_timeout,
    )
    .await?;
    Ok(())
}

/// Wires the parts: bus, hub and its dispatcher, committer, send path, delivery, and registers
/// their metrics (`metrics.rs`) into `registry`.
///
/// The bus tasks and the membership-event follower stop when `background` fires (when [`run`] returns); the committer and the
/// dispatcher end by themselves once every handle is dropped.
async fn build(
    config: &Config,
    db: PgPool,
    credential: ServiceCredential,
    streams_end: CancellationToken,
    background: CancellationToken,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<service::Chat> {
    let metrics = crate::metrics::ChatMetrics::default();
    metrics.register(registry);
    let bus: Arc<dyn bus::Bus> = match &config.bus {
        config::BusSettings::Postgres => bus::pg::PgBus::start(
            db.clone(),
            config.streams.notify_window,
            background.clone(),
            metrics.bus.clone(),
        ),
        config::BusSettings::Nats(nats) => {
            bus::nats::NatsBus::start(nats, background.clone(), metrics.bus.clone()).await?
        }
    };
    let participants = conversations::Participants::new(db.clone());
    let hub = hub::Hub::new(config.limits.max_streams_per_device, config.streams.queue);
    tokio::spawn(
        hub.clone()
            .dispatch(bus.subscribe(), participants.clone(), metrics.bus.clone()),
    );
    let directory = devices::Directory::new(&config.access_tokens.auth_url)?;
    let membership = groups::Membership::new(db.clone(), participants.clone(), &config.group_url)?;
    let membership_events = group_events::MembershipEvents {
        channel: membership.channel(),
        credential: credential.clone(),
        cache: membership.cache(),
        user_groups: membership.user_groups_cache(),
        hub: hub.clone(),
    };
    tokio::spawn(watch::follow(
        membership_events,
        background.clone(),
        metrics.watch.clone(),
    ));
    let device_events = device_events::DeviceEvents {
        auth: directory.channel(),
        group: membership.channel(),
        credential,
        cache: directory.cache(),
        hub: hub.clone(),
        db: db.clone(),
    };
    tokio::spawn(watch::follow(
        device_events,
        background.clone(),
        metrics.watch.clone(),
    ));
    let recent = Arc::new(recent::RecentMessages::new(
        db.clone(),
        config.recent.clone(),
    ));
    register_component_metrics(registry, &recent, &membership, &directory);
    let committer = commit::Committer::start(
        db.clone(),
        config.commit.clone(),
        bus.clone(),
        recent.clone(),
        metrics.commit.clone(),
    );
    let sending = checks::Sending::new(
        db.clone(),
        membership.clone(),
        directory.clone(),
        committer,
        config.limits.clone(),
    );
    let delivery = stream::Delivery::new(
        db.clone(),
        hub,
        recent,
        config.streams.clone(),
        streams_end,
        metrics.streams.clone(),
    );
    Ok(service::Chat {
        db,
        membership,
        directory,
        sending,
        delivery,
        bus,
        typing: Arc::new(typing::TypingLimiter::new(config.limits.typing_interval)),
        limits: config.limits.clone(),
        metrics: metrics.sends,
    })
}

/// Registers the counters the recent tails and the caches own.
fn register_component_metrics(
    registry: &mut prometheus_client::registry::Registry,
    recent: &recent::RecentMessages,
    membership: &groups::Membership,
    directory: &devices::Directory,
) {
    let (evictions, bytes) = recent.metrics();
    registry.register(
        "chat_recent_tail_evictions",
        "Recent tails dropped (least recently used) to stay within CHAT_RECENT_* bounds",
        evictions,
    );
    registry.register(
        "chat_recent_tail_bytes",
        "Bytes held by this replica's recent tails",
        bytes,
    );
    membership.cache().lookups().register(
        registry,
        "chat_members_cache_lookups",
        "Group membership cache lookups: hit, miss, bypassed (its event stream is down)",
    );
    membership.user_groups_cache().lookups().register(
        registry,
        "chat_user_groups_cache_lookups",
        "Users' groups cache lookups: hit, miss, bypassed (its event stream is down)",
    );
    directory.cache().lookups().register(
        registry,
        "chat_devices_cache_lookups",
        "Device list cache lookups: hit, miss, bypassed (its event stream is down)",
    );
}
