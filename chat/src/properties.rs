//! Property test (proptest) of the send and delivery path against a model (at the crate's top,
//! since it drives both `send/` and `delivery/`): random interleavings of sends through one or
//! two replicas' committers, streams opened on either replica (a client moving between replicas),
//! resumed from any cursor (the last one received, the stored acknowledged position, or any
//! other), closed, acknowledgements, bus resyncs, and streams too slow for their queue
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
//! `PROPTEST_CASES=500 cargo nextest run -p chat --lib properties`.

mod case;
mod world;

use proptest::{prelude::*, sample::Index, test_runner::TestRunner};
use sqlx::PgPool;

use case::{Case, Op, Resume};
use world::World;

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
