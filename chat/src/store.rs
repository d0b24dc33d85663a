//! Chat's own tables, read and written directly: `conversations.rs` (direct conversations and
//! their participants), `history.rs` (messages as one device sees them), `forwarded.rs` (keys
//! one device forwarded to another of its user's devices), `positions.rs` (acknowledged
//! positions and resume points).

pub(crate) mod conversations;
pub(crate) mod forwarded;
pub(crate) mod history;
pub(crate) mod positions;
