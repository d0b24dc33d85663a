//! What the chat scenarios' simulated clients do, shared by them: `setup.rs` registers users and
//! their devices, opens conversations and subscribes streams the way clients do; `seal.rs` seals
//! real `e2ee` envelopes before they are timed; `tracker.rs` reads streams and stamps every
//! message's arrival; `open_loop.rs` sends at a fixed rate.

pub mod open_loop;
pub mod seal;
pub mod setup;
pub mod tracker;

/// A failed call, as the reports list failures.
pub fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
