//! `dm-latency`: a direct message's time from the start of its send to its arrival on the
//! recipient's stream, p50/p99/p99.9, at fixed offered rates of 100, 1,000 and 5,000 messages/s,
//! with 10,000 idle streams connected through the gateway beside the measured ones; and one
//! commit's latency (`pgbench -c 1`) right after. Goal (chat issue): p50 within 1 ms of one
//! commit's latency.
//!
//! auth, group, chat and the gateway run in-process (`server::ChatStack`). `PAIRS` pairs of users
//! each get a direct conversation; the second of each pair streams (Subscribe through the
//! gateway), and so do the idle users, who never receive anything. At each rate the senders
//! send real envelopes, sealed before the rate's window (`clients::seal`), in an open loop
//! (`clients::open_loop`): a rate chat cannot sustain shows as an achieved rate below the offered
//! one, and the section says so.

mod render;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;

use super::{Context, Outcome, Scenario};
use crate::{
    clients::{
        open_loop,
        seal::{Route, seal_all},
        setup::{self, SharedRsa},
        tracker::Tracker,
    },
    pgbench,
    server::{self, ChatStack},
    stats::{Latencies, millis},
};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "dm-latency",
    title: "direct-message send-to-receive latency at 100, 1k and 5k messages/s beside 10k idle streams",
    run,
};

/// The offered rates, messages per second.
const RATES: [f64; 3] = [100.0, 1_000.0, 5_000.0];
/// HTTP/2 connections the senders use (the streams have their own).
const SEND_CONNECTIONS: usize = 4;
/// Streams on one HTTP/2 connection to the gateway (its production limit is 100).
const STREAMS_PER_CONNECTION: usize = 50;
/// RSA key size of the devices (the server only ever sees the wrapped key's length).
const RSA_BITS: usize = 2048;
/// A message not on its stream this long after the window counts as lost.
const DRAIN: Duration = Duration::from_secs(10);
/// Goal: p50 at most this much above one commit's latency.
const GOAL_ABOVE_COMMIT: Duration = Duration::from_millis(1);
/// A rate counts as sustained when at least this share of it is achieved (received per second)
/// and nothing was lost.
const SUSTAINED_SHARE: f64 = 0.95;

fn run(context: &Context) -> Outcome<'_> {
    Box::pin(measure(context))
}

/// Sizes, from `--quick` or not.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Direct conversations (senders, and receivers that stream).
    pairs: usize,
    /// Streams of users who receive nothing.
    idle_streams: usize,
    /// How long each rate is offered (long enough for a p99.9 of the slowest rate).
    windows: [Duration; 3],
    /// An untimed run at the first rate first.
    warmup: Duration,
    /// How long pgbench measures one commit.
    commit_seconds: u32,
}

/// Everything measured, for the report.
struct Measured {
    plan: Plan,
    runs: Vec<open_loop::Run>,
    one_commit: Duration,
    setup_seconds: f64,
    stream_failures: Vec<String>,
}

async fn measure(context: &Context) -> anyhow::Result<String> {
    let plan = Plan {
        pairs: context.pick(100, 20),
        idle_streams: context.pick(10_000, 200),
        windows: if context.quick {
            [Duration::from_secs(1); 3]
        } else {
            [20, 10, 5].map(Duration::from_secs)
        },
        warmup: Duration::from_millis(context.pick(2_000, 500)),
        commit_seconds: context.pick(5, 1),
    };
    let stack = server::start_chat_stack(&context.database_url, 1).await?;
    let measured = measure_with(&stack, plan, context.nproc).await;
    let stopped = stack.stop().await;
    let mut measured = measured?;
    stopped?;
    println!(
        "pgbench: one client's commit latency, {}s",
        plan.commit_seconds
    );
    measured.one_commit = pgbench::one_commit(&context.database_url, plan.commit_seconds).await?;
    println!("  one commit: {}", millis(measured.one_commit));
    let body = render::render(&measured);
    println!("\n{body}");
    Ok(body)
}

async fn measure_with(stack: &ChatStack, plan: Plan, nproc: usize) -> anyhow::Result<Measured> {
    let setup_started = Instant::now();
    println!(
        "setup: {} direct conversations whose recipients stream, and {} idle streams",
        plan.pairs, plan.idle_streams
    );
    let rsa = Arc::new(SharedRsa::generate(RSA_BITS)?);
    let users = setup::register_users(
        stack.auth(),
        &rsa,
        "dm-latency",
        2 * plan.pairs + plan.idle_streams,
    )
    .await?;
    let (senders, rest) = users.split_at(plan.pairs);
    let (receivers, idle) = rest.split_at(plan.pairs);
    let gateway = stack.gateway().connect().await?;
    let routes = setup::direct_routes(&gateway, &rsa, senders, receivers).await?;
    let tracker = Arc::new(Tracker::default());
    let mut readers = JoinSet::new();
    setup::subscribe_all(
        stack.gateway(),
        idle,
        STREAMS_PER_CONNECTION,
        &tracker,
        &mut readers,
    )
    .await?;
    setup::subscribe_all(
        stack.gateway(),
        receivers,
        STREAMS_PER_CONNECTION,
        &tracker,
        &mut readers,
    )
    .await?;
    let mut channels = Vec::with_capacity(SEND_CONNECTIONS);
    for _ in 0..SEND_CONNECTIONS {
        channels.push(stack.gateway().connect().await?);
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    println!(
        "  {} streams open after {setup_seconds:.1} s",
        plan.pairs + plan.idle_streams
    );

    let warmup = at_rate(
        &channels,
        &routes,
        &tracker,
        (RATES[0], plan.warmup, "warmup"),
        nproc,
    )
    .await?;
    println!(
        "  warm-up: {} of {} delivered",
        warmup.delivered.len(),
        warmup.started
    );
    let mut runs = Vec::with_capacity(RATES.len());
    for (rate, window) in RATES.into_iter().zip(plan.windows) {
        let run = at_rate(
            &channels,
            &routes,
            &tracker,
            (rate, window, &format!("r{rate}")),
            nproc,
        )
        .await?;
        let latencies = Latencies::new(run.latencies());
        println!(
            "  {rate:.0}/s offered, {:.0}/s achieved: p50 {}, p99 {}, p99.9 {}; {} lost, {} failed",
            run.achieved(),
            millis(latencies.median()),
            millis(latencies.percentile(99.0)),
            millis(latencies.percentile(99.9)),
            run.undelivered,
            run.failures.len()
        );
        runs.push(run);
    }
    let stream_failures = tracker.stream_failures();
    readers.abort_all();
    Ok(Measured {
        plan,
        runs,
        one_commit: Duration::ZERO,
        setup_seconds,
        stream_failures,
    })
}

/// Seals what `window` at `rate` needs, then runs it.
async fn at_rate(
    channels: &[tonic::transport::Channel],
    routes: &[Arc<Route>],
    tracker: &Arc<Tracker>,
    (rate, window, tag): (f64, Duration, &str),
    nproc: usize,
) -> anyhow::Result<open_loop::Run> {
    let due = (rate * window.as_secs_f64()).round() as usize;
    let per_route = vec![due.div_ceil(routes.len()); routes.len()];
    let envelopes = seal_all(routes, &per_route, tag, nproc).await?;
    Ok(open_loop::run(channels, routes, envelopes, tracker, (rate, window), DRAIN).await)
}
