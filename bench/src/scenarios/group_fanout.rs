//! `group-fanout`: how long one group message takes to reach the last of 1,000 online members,
//! and how many deliveries per second chat sustains with several 1,000-member groups active
//! while direct messages flow. Goals (groups issue): p99 to the last member at most 25 ms; at
//! least 50k deliveries/s with a direct-message p99 under 50 ms.
//!
//! auth, group, chat and the gateway run in-process with their production settings, each on
//! its own runtime (`server.rs`); the load generator and the 999 × N stream readers share the
//! machine. Users register and key their one device at auth (`setup.rs`); everything else goes
//! through the gateway: CreateGroup and AddMembers, Subscribe (`STREAMS_PER_CONNECTION` streams
//! per HTTP/2 connection), SendMessage. Envelopes are real (`seal.rs`: `e2ee`, RSA-2048 wrapping
//! for each of the 999 other members' devices, all sharing one RSA key), sealed before they are
//! timed. Each stream is read by its own task, which stamps every message (`tracker.rs`).
//!
//! 1. `latency.rs`: one group's owner sends messages one after another, each once the previous
//!    one is on every stream: first, median and last arrival after the start of the send.
//! 2. `sustained.rs`: more groups join; all owners send (closed loop, `IN_FLIGHT_PER_GROUP`
//!    messages not yet everywhere) while direct messages flow at a fixed rate: deliveries/s and
//!    the direct messages' send-to-receive latency.

mod latency;
mod render;
mod sustained;

use std::{collections::VecDeque, sync::Arc, time::Duration, time::Instant};

use anyhow::Context as _;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::{Context, Outcome, Scenario};
use crate::{
    clients::{
        seal::{Route, seal_all},
        setup::{self, Identity, SharedRsa},
        tracker::Tracker,
    },
    server::{self, ChatStack},
};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "group-fanout",
    title: "time to the last of 1,000 members, and group deliveries per second beside direct messages",
    run,
};

/// Streams on one HTTP/2 connection to the gateway (its production limit is 100).
pub(super) const STREAMS_PER_CONNECTION: usize = 50;
/// Part 2: messages per group not yet on every member's stream.
pub(super) const IN_FLIGHT_PER_GROUP: usize = 2;
/// Part 2: direct conversations, each with one sender and one subscribed recipient.
const DIRECT_PAIRS: usize = 20;
/// Part 2: direct messages per second in each.
const DIRECT_RATE_PER_PAIR: f64 = 5.0;
/// HTTP/2 connections the senders use (the streams have their own).
const SEND_CONNECTIONS: usize = 4;
/// A message not on every stream after this counts as lost.
pub(super) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Never seal more than this many envelopes per group for part 2.
const MAX_ENVELOPES_PER_GROUP: usize = 3_000;
/// RSA key size of the devices (the server only ever sees the wrapped key's length).
pub(super) const RSA_BITS: usize = 2048;
/// Goal: p99 from the send to the last member's stream.
pub(super) const GOAL_LAST_P99: Duration = Duration::from_millis(25);
/// Goal: group deliveries per second.
pub(super) const GOAL_DELIVERIES_PER_SECOND: f64 = 50_000.0;
/// Goal: direct-message p99 from send to receive, meanwhile.
const GOAL_DIRECT_P99: Duration = Duration::from_millis(50);

fn run(context: &Context) -> Outcome<'_> {
    Box::pin(measure(context))
}

/// Sizes, from `--quick` or not.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Members per group, owner included.
    members: usize,
    /// Part 1: untimed and timed messages.
    warmup_messages: usize,
    timed_messages: usize,
    /// Part 2: groups (the first is part 1's).
    groups: usize,
    warmup_envelopes: usize,
    warmup: Duration,
    settle: Duration,
    rounds: usize,
    slice: Duration,
}

/// Everything measured, for the report.
struct Measured {
    plan: Plan,
    latency: latency::Figures,
    sustained: sustained::Run,
    setup_seconds: f64,
    nproc: usize,
    stream_failures: Vec<String>,
}

async fn measure(context: &Context) -> anyhow::Result<String> {
    let plan = Plan {
        members: context.pick(1_000, 100),
        warmup_messages: context.pick(5, 2),
        timed_messages: context.pick(100, 10),
        groups: context.pick(5, 2),
        warmup_envelopes: context.pick(10, 4),
        warmup: Duration::from_secs(context.pick(2, 1)),
        settle: Duration::from_secs(1),
        rounds: context.pick(3, 1),
        slice: Duration::from_secs(context.pick(4, 1)),
    };
    let services = server::start_chat_stack(&context.database_url, 1).await?;
    let measured = measure_with(&services, plan, context.nproc).await;
    let stopped = services.stop().await;
    let measured = measured?;
    stopped?;
    let body = render::render(&measured);
    println!("\n{body}");
    Ok(body)
}

async fn measure_with(services: &ChatStack, plan: Plan, nproc: usize) -> anyhow::Result<Measured> {
    let mut setup_seconds = 0.0;
    let setup_started = Instant::now();
    let rsa = Arc::new(SharedRsa::generate(RSA_BITS)?);
    let tracker = Arc::new(Tracker::default());
    let mut readers = JoinSet::new();
    let mut senders: Vec<Channel> = Vec::with_capacity(SEND_CONNECTIONS);
    for _ in 0..SEND_CONNECTIONS {
        senders.push(services.gateway().connect().await?);
    }

    println!(
        "part 1: a group of {} members, {} of them streaming",
        plan.members,
        plan.members - 1
    );
    let first = set_up_group(services, &rsa, &tracker, &mut readers, &senders[0], 0, plan).await?;
    setup_seconds += setup_started.elapsed().as_secs_f64();
    let latency = latency::measure(
        &senders[0],
        &first,
        &tracker,
        plan.members - 1,
        (plan.warmup_messages, plan.timed_messages),
        nproc,
    )
    .await?;
    let lasts: Vec<Duration> = latency
        .messages
        .iter()
        .filter_map(|m| m.after_send.last().copied())
        .collect();
    let lasts = crate::stats::Latencies::new(lasts);
    println!(
        "  {} messages: to the last member p50 {}, p99 {}",
        latency.messages.len(),
        crate::stats::millis(lasts.median()),
        crate::stats::millis(lasts.percentile(99.0))
    );

    println!(
        "part 2: {} groups of {} members, {DIRECT_PAIRS} direct conversations",
        plan.groups, plan.members
    );
    let setup_started = Instant::now();
    let mut groups = vec![first];
    for index in 1..plan.groups {
        groups.push(
            set_up_group(
                services,
                &rsa,
                &tracker,
                &mut readers,
                &senders[0],
                index,
                plan,
            )
            .await?,
        );
    }
    let directs = set_up_directs(services, &rsa, &tracker, &mut readers, &senders[0]).await?;
    setup_seconds += setup_started.elapsed().as_secs_f64();
    let sustained = sustain(&senders, &groups, &directs, &tracker, plan, nproc).await?;
    let stream_failures = tracker.stream_failures();
    readers.abort_all();
    Ok(Measured {
        plan,
        latency,
        sustained,
        setup_seconds,
        nproc,
        stream_failures,
    })
}

/// Registers the members of group `index`, creates it, subscribes every member but the owner;
/// returns the owner's route into it.
async fn set_up_group(
    services: &ChatStack,
    rsa: &Arc<SharedRsa>,
    tracker: &Arc<Tracker>,
    readers: &mut JoinSet<()>,
    gateway: &Channel,
    index: usize,
    plan: Plan,
) -> anyhow::Result<Arc<Route>> {
    let started = Instant::now();
    let prefix = format!("group-fanout-g{index}");
    let users = register_users(services, rsa, &prefix, plan.members).await?;
    let (owner, members): (&Identity, &[Identity]) = users.split_first().context("no users")?;
    let group_id = setup::create_group(gateway, owner, members, &prefix).await?;
    setup::subscribe_all(
        services.gateway(),
        members,
        STREAMS_PER_CONNECTION,
        tracker,
        readers,
    )
    .await?;
    println!(
        "  group {index}: {} users registered, the group filled and {} streams subscribed in {:.1} s",
        users.len(),
        members.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Arc::new(Route {
        sender: Arc::new(owner.sending(rsa)?),
        conversation_id: group_id,
        recipients: Arc::new(members.iter().map(|member| member.recipient(rsa)).collect()),
    }))
}

/// `DIRECT_PAIRS` direct conversations, the recipient of each subscribed.
async fn set_up_directs(
    services: &ChatStack,
    rsa: &Arc<SharedRsa>,
    tracker: &Arc<Tracker>,
    readers: &mut JoinSet<()>,
    gateway: &Channel,
) -> anyhow::Result<Vec<Arc<Route>>> {
    let users = register_users(services, rsa, "group-fanout-direct", 2 * DIRECT_PAIRS).await?;
    let (sending, receiving) = users.split_at(DIRECT_PAIRS);
    let routes = setup::direct_routes(gateway, rsa, sending, receiving).await?;
    setup::subscribe_all(
        services.gateway(),
        receiving,
        STREAMS_PER_CONNECTION,
        tracker,
        readers,
    )
    .await?;
    Ok(routes)
}

async fn register_users(
    services: &ChatStack,
    rsa: &Arc<SharedRsa>,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Identity>> {
    setup::register_users(services.auth(), rsa, prefix, count).await
}

/// Part 2: a warm-up that estimates each group's rate, sealing for the measured run, the run.
async fn sustain(
    channels: &[Channel],
    groups: &[Arc<Route>],
    directs: &[Arc<Route>],
    tracker: &Arc<Tracker>,
    plan: Plan,
    nproc: usize,
) -> anyhow::Result<sustained::Run> {
    let direct_count =
        |duration: Duration| (DIRECT_RATE_PER_PAIR * duration.as_secs_f64()).ceil() as usize + 1;
    let warmup = load(
        channels,
        (groups, &vec![plan.warmup_envelopes; groups.len()]),
        (directs, direct_count(plan.warmup)),
        (plan.members - 1, "warmup", nproc),
    )
    .await?;
    let warm = sustained::run(warmup, tracker, Duration::ZERO, 1, plan.warmup).await;
    let per_group_rate =
        warm.group_messages.len() as f64 / groups.len() as f64 / plan.warmup.as_secs_f64();
    println!(
        "  warm-up: {:.0} deliveries/s, {per_group_rate:.1} messages/s per group{}",
        warm.rounds
            .first()
            .map_or(0.0, |round| round.deliveries as f64
                / round.elapsed.as_secs_f64()),
        if warm.ran_out > 0 {
            " (envelopes ran out: a lower bound)"
        } else {
            ""
        },
    );

    let total = plan.settle + plan.slice * plan.rounds as u32;
    // Twice the warm-up's rate (more when it ran out), so that the run does not run out.
    let headroom = if warm.ran_out > 0 { 4.0 } else { 2.0 };
    let per_group = ((per_group_rate * total.as_secs_f64() * headroom) as usize
        + 2 * IN_FLIGHT_PER_GROUP)
        .min(MAX_ENVELOPES_PER_GROUP);
    let sealing = Instant::now();
    let measured = load(
        channels,
        (groups, &vec![per_group; groups.len()]),
        (directs, direct_count(total)),
        (plan.members - 1, "sustained", nproc),
    )
    .await?;
    println!(
        "  sealed {per_group} envelopes per group in {:.1} s",
        sealing.elapsed().as_secs_f64()
    );
    let run = sustained::run(measured, tracker, plan.settle, plan.rounds, plan.slice).await;
    for (index, round) in run.rounds.iter().enumerate() {
        println!(
            "  round {}: {:.0} deliveries/s",
            index + 1,
            round.deliveries as f64 / round.elapsed.as_secs_f64()
        );
    }
    Ok(run)
}

/// Seals what a run of part 2 sends.
async fn load<'a>(
    channels: &'a [Channel],
    (groups, per_group): (&'a [Arc<Route>], &[usize]),
    (directs, per_direct): (&'a [Arc<Route>], usize),
    (expected, tag, workers): (usize, &str, usize),
) -> anyhow::Result<sustained::Load<'a>> {
    let group_envelopes = seal_all(groups, per_group, &format!("{tag}-g"), workers).await?;
    let direct_envelopes: Vec<VecDeque<_>> = seal_all(
        directs,
        &vec![per_direct; directs.len()],
        &format!("{tag}-d"),
        workers,
    )
    .await?;
    Ok(sustained::Load {
        channels,
        groups,
        group_envelopes,
        expected,
        directs,
        direct_envelopes,
        direct_rate: DIRECT_RATE_PER_PAIR,
    })
}
