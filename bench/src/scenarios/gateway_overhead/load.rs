//! The load generator: `auth.v1.AuthService/GetJwks` over a few HTTP/2 connections, either
//! open-loop at a fixed rate (latency) or closed-loop at a fixed concurrency (throughput).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use proto::auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient};
use tokio::task::JoinSet;
use tonic::{Code, transport::Channel};

/// The longest any one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls one closed-loop worker may make, whatever its deadline.
const MAX_CALLS_PER_WORKER: u64 = 1_000_000;

/// What one slice of load measured.
#[derive(Debug, Default, Clone)]
pub struct Load {
    /// Latency of each successful call, from just before it was sent to its answer.
    pub latencies: Vec<Duration>,
    /// Open loop only: how late each call left compared to its schedule (the generator's own
    /// delay; the latencies above do not include it).
    pub send_lag: Vec<Duration>,
    /// Failed calls by gRPC code.
    pub failures: BTreeMap<String, u64>,
    /// From the first call until the last answer.
    pub elapsed: Duration,
}

impl Load {
    /// Successful calls.
    pub fn successes(&self) -> u64 {
        self.latencies.len() as u64
    }

    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.successes() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Adds another slice's figures (elapsed times add up).
    pub fn extend(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.send_lag.extend(other.send_lag);
        for (code, count) in other.failures {
            *self.failures.entry(code).or_default() += count;
        }
        self.elapsed += other.elapsed;
    }

    fn record(&mut self, latency: Duration, failure: Option<Code>) {
        match failure {
            None => self.latencies.push(latency),
            Some(code) => *self.failures.entry(format!("{code:?}")).or_default() += 1,
        }
    }
}

/// One GetJwks call: its latency, and its gRPC code if it failed (a timeout counts as
/// DEADLINE_EXCEEDED).
pub async fn get_jwks(channel: Channel) -> (Duration, Option<Code>) {
    let mut client = AuthServiceClient::new(channel);
    let sent = Instant::now();
    let answer = tokio::time::timeout(CALL_TIMEOUT, client.get_jwks(GetJwksRequest {})).await;
    let latency = sent.elapsed();
    let failure = match answer {
        Ok(Ok(_)) => None,
        Ok(Err(status)) => Some(status.code()),
        Err(_) => Some(Code::DeadlineExceeded),
    };
    (latency, failure)
}

/// Sends `rate` calls per second for `duration` (at most `rate × duration` calls), spread
/// round-robin over `channels`, each as its own task so that a slow answer never delays the next
/// call (open loop). Waits for every answer.
pub async fn open_loop(channels: &[Channel], rate: u32, duration: Duration) -> Load {
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = Instant::now();
    let mut calls = JoinSet::new();
    let mut load = Load::default();
    for index in 0..total {
        let scheduled = started + interval.mul_f64(index as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let channel = channels[index as usize % channels.len()].clone();
        calls.spawn(async move {
            let lag = Instant::now().saturating_duration_since(scheduled);
            let (latency, failure) = get_jwks(channel).await;
            (lag, latency, failure)
        });
        // Collect finished calls as we go, so the set stays small.
        while let Some(Ok((lag, latency, failure))) = calls.try_join_next() {
            load.send_lag.push(lag);
            load.record(latency, failure);
        }
    }
    // Every call ends within CALL_TIMEOUT, so this ends too.
    while let Some(joined) = calls.join_next().await {
        if let Ok((lag, latency, failure)) = joined {
            load.send_lag.push(lag);
            load.record(latency, failure);
        }
    }
    load.elapsed = started.elapsed();
    load
}

/// `concurrency` workers, spread round-robin over `channels`, each making one call at a time
/// until `duration` has passed (closed loop).
pub async fn closed_loop(channels: &[Channel], concurrency: usize, duration: Duration) -> Load {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let channel = channels[worker % channels.len()].clone();
        workers.spawn(async move {
            let mut load = Load::default();
            let mut calls = 0;
            while calls < MAX_CALLS_PER_WORKER && Instant::now() < deadline {
                let (latency, failure) = get_jwks(channel.clone()).await;
                load.record(latency, failure);
                calls += 1;
            }
            load
        });
    }
    let mut load = Load::default();
    for worker in workers.join_all().await {
        load.extend(worker);
    }
    load.elapsed = started.elapsed();
    load
}
