//! The vocabulary of a case (its steps and bounds), shared by the strategies in
//! `properties.rs` and the world in `world.rs` that runs it.

use std::time::Duration;

use proptest::sample::Index;

pub(super) const N_DEVICES: usize = 3;
/// Short, so that `Op::Pause` ends streams as too slow without slowing the test down much.
pub(super) const STALL_LIMIT: Duration = Duration::from_millis(20);
/// How long a stream may take to deliver what was committed before the test calls it stuck.
pub(super) const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// One step of a case.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// Concurrent sends through one replica (one batch, or a few), each to a conversation, for
    /// the devices of a bit mask (possibly none of the streams' devices).
    Send {
        replica: Index,
        sends: Vec<(Index, u8)>,
    },
    /// The device closes its stream, if any, and opens one on `replica` from `from` in each
    /// conversation.
    Open {
        device: Index,
        replica: Index,
        from: Vec<Resume>,
    },
    /// The device's client disconnects.
    Close { device: Index },
    /// The device acknowledges what it last received in a conversation.
    Acknowledge { device: Index, conversation: Index },
    /// The test reads the device's stream until it has everything committed.
    Read { device: Index },
    /// The bus says events may have been lost (every stream re-reads).
    Resync,
    /// The test reads nothing for longer than the stall limit: streams with a full queue end
    /// with SLOW_CONSUMER.
    Pause,
}

/// How far [`World::read`] reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Until {
    /// Until the stream delivered everything committed for its device.
    Everything,
    /// Until its `CaughtUp`.
    CaughtUp,
}

/// Where a reopened stream resumes in a conversation.
#[derive(Debug, Clone)]
pub(super) enum Resume {
    /// No position given: the stored (acknowledged) one.
    Stored,
    /// The last sequence the client received.
    Received,
    /// Any sequence up to the conversation's last.
    Any(Index),
}

/// A case: the bounds of the parts, and the steps.
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) n_replicas: usize,
    pub(super) n_conversations: usize,
    pub(super) recent: (usize, usize, usize),
    pub(super) queue: usize,
    pub(super) replay_page: u32,
    pub(super) ops: Vec<Op>,
}
