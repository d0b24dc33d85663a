//! Part 2: every group's owner sends in a closed loop with at most `IN_FLIGHT_PER_GROUP`
//! messages not yet on all of its members' streams, while direct messages flow at a fixed rate
//! (open loop, each send in its own task). One continuous run, cut into rounds: the deliveries
//! counter and the CPU are sampled at each round's boundaries.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use proto::chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant as TokioInstant};
use tonic::transport::Channel;

use super::{DELIVERY_TIMEOUT, IN_FLIGHT_PER_GROUP};
use crate::{
    clients::{
        seal::{Route, Sealed},
        setup::with_token,
        tracker::{Delivered, Kind, Tracker},
    },
    cpu::{CpuSnapshot, CpuTime},
};

/// What to run.
pub(super) struct Load<'a> {
    /// One connection per sender task group, shared round-robin.
    pub channels: &'a [Channel],
    pub groups: &'a [Arc<Route>],
    pub group_envelopes: Vec<VecDeque<Sealed>>,
    /// Streams per group message (members but the sender).
    pub expected: usize,
    pub directs: &'a [Arc<Route>],
    pub direct_envelopes: Vec<VecDeque<Sealed>>,
    /// Direct messages per second per conversation.
    pub direct_rate: f64,
}

/// One round's slice of the run.
pub(super) struct Round {
    pub deliveries: u64,
    pub elapsed: Duration,
    pub cpu: CpuTime,
}

/// What a run measured.
pub(super) struct Run {
    pub rounds: Vec<Round>,
    /// Group messages sent within the rounds, with every arrival.
    pub group_messages: Vec<Delivered>,
    /// Direct messages sent within the rounds.
    pub direct_messages: Vec<Delivered>,
    /// Messages sent within the rounds that had not reached every stream by the end of the drain.
    pub undelivered: usize,
    /// Failed sends.
    pub failures: Vec<String>,
    /// Senders whose envelopes ran out before the end.
    pub ran_out: usize,
}

/// Runs `load` for `settle`, then `rounds` of `slice`; then waits (at most `DELIVERY_TIMEOUT`)
/// for what is still on its way.
pub(super) async fn run(
    load: Load<'_>,
    tracker: &Arc<Tracker>,
    settle: Duration,
    rounds: usize,
    slice: Duration,
) -> Run {
    let start = TokioInstant::now();
    let end = start + settle + slice * rounds as u32;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut senders = JoinSet::new();
    for (index, (route, envelopes)) in load.groups.iter().zip(load.group_envelopes).enumerate() {
        let chat = ChatServiceClient::new(load.channels[index % load.channels.len()].clone());
        senders.spawn(send_to_group(
            chat,
            route.clone(),
            envelopes,
            (tracker.clone(), load.expected),
            end,
            failures.clone(),
        ));
    }
    for (index, (route, envelopes)) in load.directs.iter().zip(load.direct_envelopes).enumerate() {
        let chat = ChatServiceClient::new(load.channels[index % load.channels.len()].clone());
        let interval = Duration::from_secs_f64(1.0 / load.direct_rate);
        senders.spawn(send_direct(
            chat,
            route.clone(),
            envelopes,
            (tracker.clone(), interval),
            (start, end),
            failures.clone(),
        ));
    }

    tokio::time::sleep_until(start + settle).await;
    let window_start = Instant::now();
    let mut measured = Vec::with_capacity(rounds);
    let (mut count, mut at, mut cpu) = (
        tracker.group_deliveries(),
        Instant::now(),
        CpuSnapshot::take(),
    );
    for round in 1..=rounds {
        tokio::time::sleep_until(start + settle + slice * round as u32).await;
        let (count_now, at_now, cpu_now) = (
            tracker.group_deliveries(),
            Instant::now(),
            CpuSnapshot::take(),
        );
        measured.push(Round {
            deliveries: count_now - count,
            elapsed: at_now - at,
            cpu: cpu.until(&cpu_now),
        });
        (count, at, cpu) = (count_now, at_now, cpu_now);
    }
    let window_end = Instant::now();
    let ran_out = senders
        .join_all()
        .await
        .into_iter()
        .filter(|ran_out| *ran_out)
        .count();

    // Let what was sent arrive, then keep only what was sent within the rounds.
    let drain_until = Instant::now() + DELIVERY_TIMEOUT;
    let (mut groups, mut directs) = (Vec::new(), Vec::new());
    loop {
        let (delivered, group_waiting) = tracker.take_delivered(Kind::Group);
        groups.extend(delivered);
        let (delivered, direct_waiting) = tracker.take_delivered(Kind::Direct);
        directs.extend(delivered);
        if group_waiting + direct_waiting == 0 || Instant::now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let within = |message: &Delivered| message.sent >= window_start && message.sent < window_end;
    groups.retain(within);
    directs.retain(within);
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    Run {
        rounds: measured,
        group_messages: groups,
        direct_messages: directs,
        undelivered: tracker.clear(),
        failures,
        ran_out,
    }
}

/// Sends `envelopes` to one group until `end`, with at most `IN_FLIGHT_PER_GROUP` not yet on
/// every stream. Returns whether the envelopes ran out first.
async fn send_to_group(
    mut chat: ChatServiceClient<Channel>,
    route: Arc<Route>,
    mut envelopes: VecDeque<Sealed>,
    (tracker, expected): (Arc<Tracker>, usize),
    end: TokioInstant,
    failures: Arc<Mutex<Vec<String>>>,
) -> bool {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_GROUP));
    while TokioInstant::now() < end {
        let permit = match tokio::time::timeout_at(end, in_flight.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return false,
        };
        let Some(sealed) = envelopes.pop_front() else {
            return true;
        };
        let id = sealed.client_message_id;
        tracker.expect(&id, Kind::Group, expected, Some(permit), None);
        let request = with_token(
            chat_pb::SendMessageRequest {
                envelope: Some(sealed.envelope),
            },
            &route.sender.identity.token,
        );
        if let Err(status) = chat.send_message(request).await {
            tracker.forget(&id);
            record(&failures, &status);
        }
    }
    false
}

/// Sends `envelopes` to one direct conversation every `interval` from `start` until `end`, each
/// in its own task (a slow answer does not delay the next send). Returns whether the envelopes
/// ran out first.
async fn send_direct(
    chat: ChatServiceClient<Channel>,
    route: Arc<Route>,
    mut envelopes: VecDeque<Sealed>,
    (tracker, interval): (Arc<Tracker>, Duration),
    (start, end): (TokioInstant, TokioInstant),
    failures: Arc<Mutex<Vec<String>>>,
) -> bool {
    let mut sends = JoinSet::new();
    let mut next = start;
    let mut ran_out = false;
    while next < end {
        tokio::time::sleep_until(next).await;
        next += interval;
        let Some(sealed) = envelopes.pop_front() else {
            ran_out = true;
            break;
        };
        let (mut chat, route, tracker, failures) = (
            chat.clone(),
            route.clone(),
            tracker.clone(),
            failures.clone(),
        );
        sends.spawn(async move {
            let id = sealed.client_message_id;
            tracker.expect(&id, Kind::Direct, 1, None, None);
            let request = with_token(
                chat_pb::SendMessageRequest {
                    envelope: Some(sealed.envelope),
                },
                &route.sender.identity.token,
            );
            if let Err(status) = chat.send_message(request).await {
                tracker.forget(&id);
                record(&failures, &status);
            }
        });
    }
    sends.join_all().await;
    ran_out
}

fn record(failures: &Mutex<Vec<String>>, status: &tonic::Status) {
    if let Ok(mut failures) = failures.lock() {
        failures.push(crate::clients::status_text(status));
    }
}
