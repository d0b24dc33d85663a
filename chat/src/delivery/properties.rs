//! Property test (proptest) of delivery against a model: random interleavings of sends through
//! one or two replicas' committers, streams opened on either replica (a client moving between
//! replicas), resumed from any cursor (the last one received, the stored acknowledged position,
//! or any other), closed, acknowledgements, bus resyncs, and streams too slow for their queue
//! (which end with SLOW_CONSUMER and resume). The replicas run the real parts in process:
//! `Committer`, `RecentMessages` (with bounds small enough that tails are trimmed and evicted
//! all the time), `Hub` and its dispatcher, `Delivery` and its stream tasks, over one real
//! database. Only the bus between replicas is an in-memory broadcast (`bus.rs` has its own
//! tests; its contract is only "a wake-up, maybe late").
//!
//! The property: each stream delivers, per conversation, exactly the messages after its resume
//! point that carry a key for its device, in sequence order, each once, with its own key: never a
//! skip, never a repeat, and it catches up with everything committed.
//!
//! A failure shows what happened, resolved (`World::trace`: which replica committed which
//! sequence, where each stream resumed, what it received). The case is in `world.rs`.
//!
//! Case counts are small to keep CI fast; run more with
//! `PROPTEST_CASES=500 cargo nextest run -p chat --lib delivery::properties`.

mod world;

use std::time::Duration;

use proptest::{prelude::*, sample::Index, test_runner::TestRunner};
use sqlx::PgPool;

use world::World;

const N_DEVICES: usize = 3;
/// Short, so that `Op::Pause` ends streams as too slow without slowing the test down much.
const STALL_LIMIT: Duration = Duration::from_millis(20);
/// How long a stream may take to deliver what was committed before the test calls it stuck.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
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
enum Until {
    /// Until the stream delivered everything committed for its device.
    Everything,
    /// Until its `CaughtUp`.
    CaughtUp,
}

/// Where a reopened stream resumes in a conversation.
#[derive(Debug, Clone)]
enum Resume {
    /// No position given: the stored (acknowledged) one.
    Stored,
    /// The last sequence the client received.
    Received,
    /// Any sequence up to the conversation's last.
    Any(Index),
}

/// A case: the bounds of the parts, and the steps.
#[derive(Debug, Clone)]
struct Case {
    n_replicas: usize,
    n_conversations: usize,
    recent: (usize, usize, usize),
    queue: usize,
    replay_page: u32,
    ops: Vec<Op>,
}

fn resume() -> impl Strategy<Value = Resume> {
    prop_oneof![
        1 => Just(Resume::Stored),
        2 => Just(Resume::Received),
        1 => any::<Index>().prop_map(Resume::Any),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<Index>(), prop::collection::vec((any::<Index>(), any::<u8>()), 1..5))
            .prop_map(|(replica, sends)| Op::Send { replica, sends }),
        2 => (any::<Index>(), any::<Index>(), prop::collection::vec(resume(), 3))
            .prop_map(|(device, replica, from)| Op::Open { device, replica, from }),
        1 => any::<Index>().prop_map(|device| Op::Close { device }),
        1 => (any::<Index>(), any::<Index>())
            .prop_map(|(device, conversation)| Op::Acknowledge { device, conversation }),
        2 => any::<Index>().prop_map(|device| Op::Read { device }),
        1 => Just(Op::Resync),
        1 => Just(Op::Pause),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        1..=2_usize,
        1..=3_usize,
        // Per conversation, bytes (one message is about 1 KB: 1,000 keeps only the newest one
        // per tail), conversations.
        (
            1..=6_usize,
            prop_oneof![Just(1_000), Just(16_000), Just(1 << 20)],
            1..=3_usize,
        ),
        1..=8_usize,
        1..=5_u32,
        prop::collection::vec(op(), 1..40),
    )
        .prop_map(
            |(n_replicas, n_conversations, recent, queue, replay_page, ops)| Case {
                n_replicas,
                n_conversations,
                recent,
                queue,
                replay_page,
                ops,
            },
        )
}

async fn run_case(db: PgPool, case: Case) -> Result<(), TestCaseError> {
    let mut world = World::new(db, &case).await;
    let mut outcome = Ok(());
    for op in &case.ops {
        outcome = world.apply(op).await;
        if outcome.is_err() {
            break;
        }
    }
    if outcome.is_ok() {
        outcome = world.finish().await;
    }
    outcome.map_err(|failure| {
        TestCaseError::fail(format!(
            "{failure}\nwhat happened:\n  {}",
            world.trace.join("\n  ")
        ))
    })
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_never_skips_or_repeats_a_message(db: PgPool) {
    let runtime = tokio::runtime::Handle::current();
    // proptest's runner is synchronous: it runs on a blocking thread and drives each case on
    // this test's runtime, whose thread keeps the I/O and timers going meanwhile.
    let outcome = tokio::task::spawn_blocking(move || {
        let config = testkit::property_config(24, file!());
        let mut runner = TestRunner::new(config);
        runner
            .run(&case(), |case| runtime.block_on(run_case(db.clone(), case)))
            .map_err(|error| error.to_string())
    })
    .await
    .unwrap();

    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
