//! `cross-replica`: what a second chat replica adds to a direct message's send-to-receive latency.
//! Goal (chat issue): a message sent through replica A reaches a device streaming from replica
//! B with at most 1 ms more at p50 than when both are on A.
//!
//! auth, group, two chat replicas (A and B, one database, so one LISTEN/NOTIFY bus) and a gateway
//! in front of each run in-process (`server::ChatStack` with two replicas: gateway A routes chat
//! calls to A only, gateway B to B only, so the bench chooses each device's replica). Every
//! sender sends through gateway A. Half of the conversations' recipients stream through gateway
//! A (same replica: chat wakes the stream in-process), the other half through gateway B (cross
//! replica: the wake-up goes through PostgreSQL's NOTIFY). Both kinds of conversation take turns
//! in one open loop (`clients::open_loop`) at a modest rate, so the machine's drift affects them
//! alike, and the difference of their percentiles is the replica hop.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::{Context, Outcome, Scenario};
use crate::{
    clients::{
        open_loop,
        seal::{Route, seal_all},
        setup::{self, SharedRsa},
        tracker::{Delivered, Tracker},
    },
    cpu::{self, CpuTime},
    server::{self, ChatStack, POOL_SIZE},
    stats::{Latencies, millis, percent},
};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "cross-replica",
    title: "direct-message latency with sender and receiver on two chat replicas, against one",
    run,
};

/// Messages per second, both kinds of conversation together.
const RATE: f64 = 200.0;
/// HTTP/2 connections the senders use (to gateway A).
const SEND_CONNECTIONS: usize = 2;
/// Streams on one HTTP/2 connection to a gateway.
const STREAMS_PER_CONNECTION: usize = 50;
/// RSA key size of the devices (the server only ever sees the wrapped key's length).
const RSA_BITS: usize = 2048;
/// A message not on its stream this long after the window counts as lost.
const DRAIN: Duration = Duration::from_secs(10);
/// Goal: cross-replica adds at most this at p50.
const GOAL_ADDED_P50: Duration = Duration::from_millis(1);

fn run(context: &Context) -> Outcome<'_> {
    Box::pin(measure(context))
}

/// Sizes, from `--quick` or not.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Conversations of each kind.
    pairs_per_path: usize,
    warmup: Duration,
    rounds: usize,
    window: Duration,
}

/// One round's latencies, by path.
struct Round {
    same: Vec<Duration>,
    cross: Vec<Duration>,
    lost: usize,
    failures: Vec<String>,
    cpu: CpuTime,
}

async fn measure(context: &Context) -> anyhow::Result<String> {
    let plan = Plan {
        pairs_per_path: context.pick(20, 5),
        warmup: Duration::from_millis(context.pick(2_000, 500)),
        rounds: context.pick(5, 1),
        window: Duration::from_secs(context.pick(4, 1)),
    };
    let stack = server::start_chat_stack(&context.database_url, 2).await?;
    let measured = measure_with(&stack, plan, context.nproc).await;
    let stopped = stack.stop().await;
    let (rounds, stream_failures) = measured?;
    stopped?;
    let body = render(plan, &rounds, &stream_failures);
    println!("\n{body}");
    Ok(body)
}

async fn measure_with(
    stack: &ChatStack,
    plan: Plan,
    nproc: usize,
) -> anyhow::Result<(Vec<Round>, Vec<String>)> {
    let pairs = plan.pairs_per_path;
    println!("setup: {pairs} conversations on one replica, {pairs} across the two");
    let rsa = Arc::new(SharedRsa::generate(RSA_BITS)?);
    let users = setup::register_users(stack.auth(), &rsa, "cross-replica", 4 * pairs).await?;
    let [same_senders, same_receivers, cross_senders, cross_receivers] =
        [0, 1, 2, 3].map(|quarter| &users[quarter * pairs..(quarter + 1) * pairs]);
    let (gateway_a, gateway_b) = (&stack.gateways()[0], &stack.gateways()[1]);
    let channel_a = gateway_a.connect().await?;
    let same = setup::direct_routes(&channel_a, &rsa, same_senders, same_receivers).await?;
    let cross = setup::direct_routes(&channel_a, &rsa, cross_senders, cross_receivers).await?;
    let tracker = Arc::new(Tracker::default());
    let mut readers = JoinSet::new();
    for (gateway, receivers) in [(gateway_a, same_receivers), (gateway_b, cross_receivers)] {
        setup::subscribe_all(
            gateway,
            receivers,
            STREAMS_PER_CONNECTION,
            &tracker,
            &mut readers,
        )
        .await?;
    }
    // Even routes are same-replica, odd ones cross-replica (see `is_cross`).
    let routes: Vec<Arc<Route>> = same
        .into_iter()
        .zip(cross)
        .flat_map(|(s, c)| [s, c])
        .collect();
    let mut channels = Vec::with_capacity(SEND_CONNECTIONS);
    for _ in 0..SEND_CONNECTIONS {
        channels.push(gateway_a.connect().await?);
    }

    at_rate(&channels, &routes, &tracker, (plan.warmup, "w"), nproc).await?;
    let mut rounds = Vec::with_capacity(plan.rounds);
    for round in 1..=plan.rounds {
        let run = at_rate(
            &channels,
            &routes,
            &tracker,
            (plan.window, &format!("r{round}")),
            nproc,
        )
        .await?;
        let (cross, same): (Vec<&Delivered>, Vec<&Delivered>) =
            run.delivered.iter().partition(|message| is_cross(message));
        let latency = |messages: Vec<&Delivered>| -> Vec<Duration> {
            messages
                .iter()
                .filter_map(|message| message.after_send.first().copied())
                .collect()
        };
        let measured = Round {
            same: latency(same),
            cross: latency(cross),
            lost: run.undelivered,
            failures: run.failures,
            cpu: run.cpu,
        };
        let (same, cross) = (
            Latencies::new(measured.same.clone()),
            Latencies::new(measured.cross.clone()),
        );
        println!(
            "  round {round}: one replica p50 {} p99 {}; across two p50 {} p99 {}",
            millis(same.median()),
            millis(same.percentile(99.0)),
            millis(cross.median()),
            millis(cross.percentile(99.0)),
        );
        rounds.push(measured);
    }
    let stream_failures = tracker.stream_failures();
    readers.abort_all();
    Ok((rounds, stream_failures))
}

/// Seals what `window` at [`RATE`] needs, then runs it.
async fn at_rate(
    channels: &[Channel],
    routes: &[Arc<Route>],
    tracker: &Arc<Tracker>,
    (window, tag): (Duration, &str),
    nproc: usize,
) -> anyhow::Result<open_loop::Run> {
    let due = (RATE * window.as_secs_f64()).round() as usize;
    let per_route = vec![due.div_ceil(routes.len()); routes.len()];
    let envelopes = seal_all(routes, &per_route, tag, nproc).await?;
    Ok(open_loop::run(channels, routes, envelopes, tracker, (RATE, window), DRAIN).await)
}

/// Whether a message went across replicas: `seal_all` names it `<tag>-<route>-<n>`, and odd
/// routes are the cross-replica ones.
fn is_cross(message: &Delivered) -> bool {
    message
        .client_message_id
        .rsplit('-')
        .nth(1)
        .and_then(|route| route.parse::<usize>().ok())
        .is_some_and(|route| route % 2 == 1)
}

fn render(plan: Plan, rounds: &[Round], stream_failures: &[String]) -> String {
    let all = |pick: fn(&Round) -> &Vec<Duration>| {
        Latencies::new(
            rounds
                .iter()
                .flat_map(|r| pick(r).iter().copied())
                .collect(),
        )
    };
    let (same, cross) = (all(|r| &r.same), all(|r| &r.cross));
    let added_p50 = cross.median().as_secs_f64() - same.median().as_secs_f64();
    let added_p99 = cross.percentile(99.0).as_secs_f64() - same.percentile(99.0).as_secs_f64();
    let lost: usize = rounds.iter().map(|round| round.lost).sum();
    let failures: Vec<&String> = rounds.iter().flat_map(|round| &round.failures).collect();
    let complete = lost == 0 && failures.is_empty() && !same.is_empty() && !cross.is_empty();
    let verdict = if complete && added_p50 <= GOAL_ADDED_P50.as_secs_f64() {
        "PASS"
    } else {
        "FAIL"
    };
    let phases: Vec<(String, &CpuTime)> = rounds
        .iter()
        .enumerate()
        .map(|(index, round)| (format!("round {}", index + 1), &round.cpu))
        .collect();
    let phases: Vec<(&str, &CpuTime)> = phases.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    let mut out = cpu::interference(&phases);
    out.push_str(&format!(
        "auth, group, two chat replicas (A and B: one database, so one LISTEN/NOTIFY bus) and one \
         gateway in front of each (gateway A routes chat calls to A only, B to B) ran in-process, \
         each on its own tokio runtime, with their production settings (pools of {POOL_SIZE}; \
         chat's commit and notify windows at their defaults) and the gateway's `for_tests` \
         limits. {pairs} direct conversations per path, one sending and one receiving device \
         each. Every sender sends through gateway A (replica A, {SEND_CONNECTIONS} HTTP/2 \
         connections); the recipients of the **same-replica** conversations stream through \
         gateway A (A wakes its own streams in-process), those of the **cross-replica** ones \
         through gateway B (B learns of the message from A's NOTIFY). Both kinds take turns in one \
         open loop at {RATE:.0} messages/s in all (each send in its own task), real envelopes \
         sealed before each round; each message is timed from the start of its SendMessage to \
         its arrival on the recipient's stream. {rounds} rounds of {window:?} after a warm-up of \
         {warmup:?}.\n\n\
         | Path | Messages | p50 | p99 | max |\n|---|---|---|---|---|\n\
         | Sender and receiver on replica A | {same_n} | {s50} | {s99} | {smax} |\n\
         | Sender on A, receiver on B | {cross_n} | {c50} | {c99} | {cmax} |\n\
         | **Added by the second replica** | | **{added_p50:+.2} ms** | {added_p99:+.2} ms | |\n\n\
         | Goal | Result |\n|---|---|\n\
         | Cross-replica adds at most {goal} at p50 | {added_p50:+.2} ms — **{verdict}** |\n\n",
        pairs = plan.pairs_per_path,
        rounds = plan.rounds,
        window = plan.window,
        warmup = plan.warmup,
        same_n = same.len(),
        cross_n = cross.len(),
        s50 = millis(same.median()),
        s99 = millis(same.percentile(99.0)),
        smax = millis(same.percentile(100.0)),
        c50 = millis(cross.median()),
        c99 = millis(cross.percentile(99.0)),
        cmax = millis(cross.percentile(100.0)),
        added_p50 = added_p50 * 1e3,
        added_p99 = added_p99 * 1e3,
        goal = millis(GOAL_ADDED_P50),
    ));
    out.push_str(
        "| Round | Same p50 | Cross p50 | Added p50 | Lost | Failed | CPUs busy | Others' share |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (index, round) in rounds.iter().enumerate() {
        let (same, cross) = (
            Latencies::new(round.same.clone()),
            Latencies::new(round.cross.clone()),
        );
        out.push_str(&format!(
            "| {} | {} | {} | {:+.2} ms | {} | {} | {} | {} |\n",
            index + 1,
            millis(same.median()),
            millis(cross.median()),
            (cross.median().as_secs_f64() - same.median().as_secs_f64()) * 1e3,
            round.lost,
            round.failures.len(),
            round
                .cpu
                .machine
                .map_or("?".to_owned(), |machine| percent(machine.busy_share())),
            round.cpu.others_share().map_or("?".to_owned(), percent),
        ));
    }
    if let Some(first) = failures.first() {
        out.push_str(&format!("\nFirst failed send: `{first}`\n"));
    }
    if let Some(first) = stream_failures.first() {
        out.push_str(&format!(
            "\n{} streams ended during the run; the first: `{first}`\n",
            stream_failures.len()
        ));
    }
    out
}
