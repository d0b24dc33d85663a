//! The bus between replicas: wake-ups for new messages, receipts, typing indicators and keys
//! forwarded to a device.
//!
//! [`Bus`] is the one small interface the rest of the crate sees. Its contract is weak on
//! purpose: events may be lost, duplicated or coalesced. A `NewMessages` event is only a
//! wake-up: streams always re-read from their own cursor, and `Resync` (sent whenever the bus
//! (re)connects, or a local subscriber lagged) makes every stream re-read everything. Receipts,
//! typing indicators and forwarded-key notices are best-effort by nature (positions and forwarded
//! keys are stored and read again by the client's next ListMessages; typing is ephemeral): a
//! `Resync` does not replay them. `tests/api/bus_contract.rs` holds both implementations to it.
//!
//! Two implementations, chosen by `CHAT_BUS` (`lib.rs` starts the one configured):
//! - `pg.rs`, [`pg::PgBus`] (the default): PostgreSQL LISTEN/NOTIFY, nothing else to run.
//! - `nats.rs`, [`nats::NatsBus`]: core NATS publish/subscribe, for deployments where every
//!   commit taking NOTIFY's global lock, or every replica holding a listening database
//!   connection, is the limit.
//!
//! Both publish the same way (`outbox.rs`): events are queued without blocking, new-message
//! wake-ups coalesced per conversation, one publication at a time with everything that arrived
//! meanwhile, written as lines in payloads of bounded size; new-message wake-ups also go straight
//! to this replica's own subscribers. Publishing never happens inside the message transaction
//! (see `commit.rs`).
//!
//! Each new-message line carries when its oldest coalesced wake-up was published (right after
//! its commit), in microseconds since the Unix epoch on the publisher's clock, so a receiving
//! replica can measure the bus lag (`chat_bus_lag_seconds`; across hosts, clock skew adds to it).
//! Replicas that predate the field ignore it, and lines without it are not measured.

pub mod nats;
pub mod outbox;
pub mod pg;

use tokio::sync::broadcast;

use crate::ids::{ConversationId, DeviceId, UserId};

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
