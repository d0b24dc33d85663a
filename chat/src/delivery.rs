//! Everything after commit, up to a recipient's stream: `bus.rs` wakes the replicas
//! (PostgreSQL LISTEN/NOTIFY, or NATS), `hub.rs` holds this replica's open streams and wakes the ones a
//! message concerns, `recent.rs` keeps each conversation's newest messages encoded once
//! (`wire.rs`), and `stream.rs` runs one stream (replay, `CaughtUp`, live, backpressure,
//! heartbeats). `typing.rs` limits typing indicators, which go through the hub unstored.

pub(crate) mod bus;
pub(crate) mod hub;
pub(crate) mod recent;
pub(crate) mod stream;
pub(crate) mod typing;
pub(crate) mod wire;
