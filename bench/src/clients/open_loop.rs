//! Sending direct messages at a fixed offered rate (open loop): send `n` is due at
//! `start + n / rate`, goes to the next route in turn, and runs in its own task, so a slow answer
//! never delays the next send. Each message is timed by the [`Tracker`] from the start of its
//! send to its arrival on the recipient's one stream. Sends start on tokio's timer, whose
//! resolution is 1 ms: above 1,000 messages/s they leave in bursts, every millisecond.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use proto::chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient};
use tokio::{task::JoinSet, time::Instant as TokioInstant};
use tonic::transport::Channel;

use super::{
    seal::{Route, Sealed},
    setup::with_token,
    tracker::{Delivered, Kind, Tracker},
};
use crate::cpu::{CpuSnapshot, CpuTime};

/// What one run at one rate measured.
pub(crate) struct Run {
    /// Messages per second asked for.
    pub offered: f64,
    /// How long sends were due for.
    pub window: Duration,
    /// Sends started.
    pub started: usize,
    /// Messages that reached their recipient's stream, with their timing.
    pub delivered: Vec<Delivered>,
    /// From the start of each successful send to its answer (the ack: committed).
    pub acks: Vec<Duration>,
    /// Sent but not on the recipient's stream by the end of the drain.
    pub undelivered: usize,
    /// Failed sends, as `code: message`.
    pub failures: Vec<String>,
    /// How late the generator started each send against its schedule.
    pub lateness: Vec<Duration>,
    /// Whether the sealed envelopes ran out before the window ended.
    pub ran_out: bool,
    /// CPU time during the window.
    pub cpu: CpuTime,
}

impl Run {
    /// Messages per second received, from the first arrival to the last: the offered rate when
    /// chat keeps up (the arrivals then span the window), lower when a backlog grows (the last
    /// ones arrive late).
    pub(crate) fn achieved(&self) -> f64 {
        let arrivals = self.delivered.iter().filter_map(|message| {
            message
                .after_send
                .first()
                .map(|after| message.sent + *after)
        });
        let (first, last) = arrivals.fold((None, None), |(first, last), at| {
            (
                Some(first.map_or(at, |first: Instant| first.min(at))),
                Some(last.map_or(at, |last: Instant| last.max(at))),
            )
        });
        match first.zip(last) {
            Some((first, last)) if self.delivered.len() > 1 => {
                // n arrivals span n - 1 intervals.
                let span = (last - first).as_secs_f64().max(f64::EPSILON);
                (self.delivered.len() - 1) as f64 / span
            }
            _ => 0.0,
        }
    }

    /// From the start of each send to its arrival.
    pub(crate) fn latencies(&self) -> Vec<Duration> {
        self.delivered
            .iter()
            .filter_map(|message| message.after_send.first().copied())
            .collect()
    }
}

/// Sends `envelopes[i]` (sealed for `routes[i]`, one recipient device each) at `rate` messages/s
/// for `window`, over `channels` (route `i` on channel `i % len`); then waits at most `drain`
/// for what is still on its way.
pub(crate) async fn run(
    channels: &[Channel],
    routes: &[Arc<Route>],
    mut envelopes: Vec<VecDeque<Sealed>>,
    tracker: &Arc<Tracker>,
    (rate, window): (f64, Duration),
    drain: Duration,
) -> Run {
    let due_count = (rate * window.as_secs_f64()).round() as usize;
    let acks = Arc::new(Mutex::new(Vec::with_capacity(due_count)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut lateness = Vec::with_capacity(due_count);
    let mut sends = JoinSet::new();
    let mut ran_out = false;
    let before = CpuSnapshot::take();
    let start = TokioInstant::now();
    for n in 0..due_count {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due).await;
        lateness.push(TokioInstant::now().saturating_duration_since(due));
        let route_index = n % routes.len();
        let Some(sealed) = envelopes[route_index].pop_front() else {
            ran_out = true;
            break;
        };
        let chat = ChatServiceClient::new(channels[route_index % channels.len()].clone());
        let token = routes[route_index].sender.identity.token.clone();
        let (tracker, acks, failures) = (tracker.clone(), acks.clone(), failures.clone());
        sends.spawn(send(chat, token, sealed, tracker, acks, failures));
    }
    tokio::time::sleep_until(start + window).await;
    let cpu = before.until(&CpuSnapshot::take());
    let started = lateness.len() - usize::from(ran_out);
    sends.join_all().await;

    let drain_until = Instant::now() + drain;
    let mut delivered = Vec::with_capacity(started);
    loop {
        let (arrived, waiting) = tracker.take_delivered(Kind::Direct);
        delivered.extend(arrived);
        if waiting == 0 || Instant::now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Run {
        offered: rate,
        window,
        started,
        delivered,
        acks: take(&acks),
        undelivered: tracker.clear(),
        failures: take(&failures),
        lateness,
        ran_out,
        cpu,
    }
}

async fn send(
    mut chat: ChatServiceClient<Channel>,
    token: String,
    sealed: Sealed,
    tracker: Arc<Tracker>,
    acks: Arc<Mutex<Vec<Duration>>>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    let id = sealed.client_message_id;
    tracker.expect(&id, Kind::Direct, 1, None, None);
    let sent = Instant::now();
    let request = with_token(
        chat_pb::SendMessageRequest {
            envelope: Some(sealed.envelope),
        },
        &token,
    );
    match chat.send_message(request).await {
        Ok(_) => push(&acks, sent.elapsed()),
        Err(status) => {
            tracker.forget(&id);
            push(&failures, crate::clients::status_text(&status));
        }
    }
}

fn push<T>(items: &Mutex<Vec<T>>, item: T) {
    items
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(item);
}

fn take<T>(items: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *items.lock().unwrap_or_else(|poison| poison.into_inner()))
}
