//! Part 1: the owner of a 1,000-member group sends messages one after another, each only once
//! the previous one reached every member's stream, and the tracker times each from the start of
//! its send to its arrival on each stream.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use proto::chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::DELIVERY_TIMEOUT;
use crate::{
    clients::{
        seal::{Route, Sealed, seal_all},
        setup::with_token,
        tracker::{Delivered, Kind, Tracker},
    },
    cpu::{CpuSnapshot, CpuTime},
};

/// What part 1 measured.
pub(super) struct Figures {
    /// Each timed message, with its arrival on every stream.
    pub messages: Vec<Delivered>,
    /// From the start of each send to its ack.
    pub acks: Vec<Duration>,
    /// Messages that did not reach every stream in time, or whose send failed.
    pub failures: Vec<String>,
    /// CPU time during the timed sends.
    pub cpu: CpuTime,
    /// How long the timed sends took.
    pub elapsed: Duration,
}

/// Seals `warmup + count` envelopes for `route`, sends `warmup` untimed (they fill chat's
/// membership and device caches and every pooled connection's statement cache), then `count`
/// timed ones, each to `expected` streams.
pub(super) async fn measure(
    gateway: &Channel,
    route: &Arc<Route>,
    tracker: &Tracker,
    expected: usize,
    (warmup, count): (usize, usize),
    workers: usize,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let mut sealed = seal_all(
        std::slice::from_ref(route),
        &[warmup + count],
        "latency",
        workers,
    )
    .await?
    .pop()
    .context("no envelopes")?;
    println!(
        "  sealed {} envelopes for {expected} devices each in {:.1} s",
        warmup + count,
        started.elapsed().as_secs_f64()
    );
    let chat = ChatServiceClient::new(gateway.clone());
    let token = &route.sender.identity.token;
    for envelope in sealed.drain(..warmup) {
        send_and_wait(&chat, token, tracker, expected, envelope)
            .await
            .context("warm-up message")?;
    }
    tracker.take_delivered(Kind::Group);

    let mut figures = Figures {
        messages: Vec::with_capacity(count),
        acks: Vec::with_capacity(count),
        failures: Vec::new(),
        cpu: CpuTime::default(),
        elapsed: Duration::ZERO,
    };
    let before = CpuSnapshot::take();
    let timed = Instant::now();
    for envelope in sealed {
        match send_and_wait(&chat, token, tracker, expected, envelope).await {
            Ok(ack) => figures.acks.push(ack),
            Err(error) => {
                // A message lost on the way would make every later one wait just as long.
                figures.failures.push(format!("{error:#}"));
                break;
            }
        }
    }
    figures.elapsed = timed.elapsed();
    figures.cpu = before.until(&CpuSnapshot::take());
    let (delivered, _) = tracker.take_delivered(Kind::Group);
    figures.messages = delivered;
    tracker.clear();
    Ok(figures)
}

/// Sends one envelope and waits until every expected stream has it; returns the ack latency.
async fn send_and_wait(
    chat: &ChatServiceClient<Channel>,
    token: &str,
    tracker: &Tracker,
    expected: usize,
    sealed: Sealed,
) -> anyhow::Result<Duration> {
    let (done, all_arrived) = oneshot::channel();
    let id = sealed.client_message_id;
    tracker.expect(&id, Kind::Group, expected, None, Some(done));
    let sent = Instant::now();
    let request = with_token(
        chat_pb::SendMessageRequest {
            envelope: Some(sealed.envelope),
        },
        token,
    );
    if let Err(status) = chat.clone().send_message(request).await {
        tracker.forget(&id);
        anyhow::bail!(
            "SendMessage {id}: {:?}: {}",
            status.code(),
            status.message()
        );
    }
    let ack = sent.elapsed();
    tokio::time::timeout(DELIVERY_TIMEOUT, all_arrived)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{id} did not reach all {expected} streams within {DELIVERY_TIMEOUT:?}; stream \
                 failures: {:?}",
                tracker.stream_failures().first()
            )
        })?
        .context("the tracker dropped the message")?;
    Ok(ack)
}
