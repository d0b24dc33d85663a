//! `gateway-overhead`: the latency and throughput the gateway adds to a call, against calling the
//! service directly and against nginx's `grpc_pass` as a reference proxy, all in one run.
//! Goals: at most 50 µs added at p50 at 1,000 calls/s; at least 70 % of the direct maximum
//! throughput; an added p99 no worse than nginx's.
//!
//! The call is `auth.v1.AuthService/GetJwks`: public (the gateway checks no token), no database,
//! a small answer, so it is nearly pure request/response cost. Three targets serve it: auth
//! itself, the gateway in front of auth, and nginx (a child process, `testkit::nginx`) in front of auth.
//! auth and the gateway run in-process, each on its own runtime (`server.rs`). The load generator
//! (`load.rs`) shares the machine with them.
//!
//! 1. Warm-up: every target answers, its connections are open.
//! 2. Latency: open loop at a fixed rate, in rounds that visit every target in turn (the order
//!    rotates), so that the machine's drift affects them alike.
//! 3. Throughput: closed loop at a fixed concurrency, in rounds likewise, with CPU time by
//!    consumer around each slice.
//!
//! `render.rs` writes the section.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use tonic::transport::Channel;

use super::{Context, Outcome, Scenario};
use crate::{
    cpu::{CpuSnapshot, CpuTime},
    server::{self, RunningServer},
};

mod load;
mod render;

use load::Load;
use testkit::nginx::{self, Nginx};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "gateway-overhead",
    title: "what the gateway adds to a call, against calling auth directly and against nginx",
    run,
};

/// The open-loop rate of the latency measurement, calls per second.
const RATE: u32 = 1_000;
/// HTTP/2 connections from the load generator to each target.
const CONNECTIONS: usize = 4;
/// Calls in flight during the throughput measurement.
const CONCURRENCY: usize = 64;
/// Goal: the gateway adds at most this at p50 at [`RATE`].
const GOAL_ADDED_P50: Duration = Duration::from_micros(50);
/// Goal: the gateway reaches at least this share of the direct maximum throughput.
const GOAL_THROUGHPUT_SHARE: f64 = 0.70;
/// The RPC measured.
const METHOD: &str = "/auth.v1.AuthService/GetJwks";

/// What a call goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Gateway,
    Nginx,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct to auth",
            Kind::Gateway => "through the gateway",
            Kind::Nginx => "through nginx",
        }
    }
}

/// How big this run is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    latency_rounds: usize,
    latency_slice: Duration,
    throughput_rounds: usize,
    throughput_slice: Duration,
    warmup: Duration,
}

/// One target and what was measured through it.
#[derive(Debug)]
struct Target {
    kind: Kind,
    channels: Vec<Channel>,
    /// Open loop at [`RATE`], one entry per round.
    latency: Vec<Timed>,
    /// Closed loop at [`CONCURRENCY`], one entry per round.
    throughput: Vec<Timed>,
}

/// A slice of load and the CPU time spent meanwhile.
#[derive(Debug, Clone, Default)]
struct Timed {
    load: Load,
    cpu: CpuTime,
    /// nginx's own CPU seconds (it is not a thread of this process).
    nginx_cpu: f64,
}

/// nginx as run, or why it was not.
#[derive(Debug)]
enum Reference {
    Ran { version: String, config: String },
    Skipped(String),
}

/// Everything measured.
#[derive(Debug)]
struct Figures {
    plan: Plan,
    reference: Reference,
    targets: Vec<Target>,
}

fn run(context: &Context) -> Outcome<'_> {
    Box::pin(measure(context))
}

async fn measure(context: &Context) -> anyhow::Result<String> {
    let plan = Plan {
        latency_rounds: context.pick(5, 2),
        latency_slice: Duration::from_secs(context.pick(2, 1)),
        throughput_rounds: context.pick(5, 2),
        throughput_slice: Duration::from_millis(context.pick(1_000, 500)),
        warmup: Duration::from_millis(context.pick(1_000, 300)),
    };
    let auth = server::start_test_auth(&context.database_url).await?;
    let gateway = match server::start_gateway(gateway_config(&auth)).await {
        Ok(gateway) => gateway,
        Err(error) => {
            let _ = auth.stop().await;
            return Err(error.context("starting the gateway"));
        }
    };
    let (nginx, reference) = match nginx::available() {
        Ok(version) => match server::start_nginx(auth.addr).await {
            Ok(nginx) => {
                let config = nginx.config.clone();
                (Some(nginx), Reference::Ran { version, config })
            }
            Err(error) => {
                let _ = gateway.stop().await;
                let _ = auth.stop().await;
                return Err(error.context("starting nginx"));
            }
        },
        Err(reason) => {
            println!("skipping nginx: {reason}");
            (None, Reference::Skipped(reason))
        }
    };

    let measured = measure_with(&auth, &gateway, nginx.as_ref(), plan).await;
    let nginx_stopped = match nginx {
        Some(nginx) => nginx.stop().await,
        None => Ok(()),
    };
    let gateway_stopped = gateway.stop().await;
    let auth_stopped = auth.stop().await;
    let targets = measured?;
    nginx_stopped.context("nginx did not stop cleanly")?;
    gateway_stopped.context("the gateway did not stop cleanly")?;
    auth_stopped.context("auth did not stop cleanly")?;

    let figures = Figures {
        plan,
        reference,
        targets,
    };
    let body = figures.render();
    println!("\n{body}");
    Ok(body)
}

/// The gateway as configured for tests (production limits where they matter here), with every
/// upstream at auth: only auth is called.
/// Every upstream is auth: only auth is called.
fn gateway_config(auth: &RunningServer) -> gateway::Config {
    server::gateway_config(auth.addr, auth.addr, auth.addr)
}

async fn measure_with(
    auth: &RunningServer,
    gateway: &RunningServer,
    nginx: Option<&Nginx>,
    plan: Plan,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = vec![
        Target::connect(Kind::Direct, auth.addr).await?,
        Target::connect(Kind::Gateway, gateway.addr).await?,
    ];
    if let Some(nginx) = nginx {
        targets.push(Target::connect(Kind::Nginx, nginx.addr).await?);
    }
    check_the_gateway_proxies(&targets[1].channels[0]).await?;

    println!(
        "warm-up: {:?} per target at {CONCURRENCY} in flight",
        plan.warmup
    );
    for target in &targets {
        let warmup = load::closed_loop(&target.channels, CONCURRENCY, plan.warmup).await;
        ensure!(
            warmup.successes() > 0,
            "no call {} succeeded during the warm-up: {:?}",
            target.kind.label(),
            warmup.failures
        );
    }

    println!(
        "latency: {} rounds of {:?} per target, open loop at {RATE} calls/s over {CONNECTIONS} \
         connections",
        plan.latency_rounds, plan.latency_slice
    );
    for round in 0..plan.latency_rounds {
        let mut line = format!("  round {}:", round + 1);
        for index in rotated(targets.len(), round) {
            let target = &mut targets[index];
            let slice = Timed::measure(
                nginx,
                load::open_loop(&target.channels, RATE, plan.latency_slice),
            )
            .await;
            let p50 = crate::stats::Latencies::new(slice.load.latencies.clone()).median();
            line.push_str(&format!(
                " {} p50 {:.0} µs;",
                target.kind.label(),
                p50.as_secs_f64() * 1e6
            ));
            target.latency.push(slice);
        }
        println!("{line}");
    }

    println!(
        "throughput: {} rounds of {:?} per target, closed loop with {CONCURRENCY} in flight over \
         {CONNECTIONS} connections",
        plan.throughput_rounds, plan.throughput_slice
    );
    for round in 0..plan.throughput_rounds {
        let mut line = format!("  round {}:", round + 1);
        for index in rotated(targets.len(), round) {
            let target = &mut targets[index];
            let slice = Timed::measure(
                nginx,
                load::closed_loop(&target.channels, CONCURRENCY, plan.throughput_slice),
            )
            .await;
            line.push_str(&format!(
                " {} {:.0}/s;",
                target.kind.label(),
                slice.load.rate()
            ));
            target.throughput.push(slice);
        }
        println!("{line}");
    }
    Ok(targets)
}

impl Timed {
    /// Runs `load`, and the CPU time spent meanwhile (nginx's too, when it runs).
    async fn measure(nginx: Option<&Nginx>, load: impl Future<Output = Load>) -> Self {
        let cpu_before = CpuSnapshot::take();
        let nginx_before = nginx.and_then(Nginx::cpu_seconds);
        let load = load.await;
        let cpu = cpu_before.until(&CpuSnapshot::take());
        let nginx_cpu = match (nginx_before, nginx.and_then(Nginx::cpu_seconds)) {
            (Some(before), Some(after)) => after - before,
            _ => 0.0,
        };
        Self {
            load,
            cpu,
            nginx_cpu,
        }
    }
}

impl Target {
    async fn connect(kind: Kind, addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let mut channels = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            // One `connect` is one HTTP/2 connection.
            let channel = Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await
                .with_context(|| format!("connecting {} at {addr}", kind.label()))?;
            channels.push(channel);
        }
        Ok(Self {
            kind,
            channels,
            latency: Vec::new(),
            throughput: Vec::new(),
        })
    }
}

/// A call through the gateway really crosses it: the answer carries the request id the gateway
/// sets (auth sets none).
async fn check_the_gateway_proxies(channel: &Channel) -> anyhow::Result<()> {
    let mut client = proto::auth::v1::auth_service_client::AuthServiceClient::new(channel.clone());
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_jwks(proto::auth::v1::GetJwksRequest {}),
    )
    .await
    .context("no answer through the gateway within 10 s")?
    .with_context(|| format!("{METHOD} through the gateway"))?;
    ensure!(
        answer.metadata().contains_key("x-request-id"),
        "the answer through the gateway carries no x-request-id: did it cross the gateway?"
    );
    ensure!(
        !answer.get_ref().keys.is_empty(),
        "auth answered an empty key set"
    );
    Ok(())
}

/// The indices `0..n`, starting at `round % n`: each round starts with the next target.
fn rotated(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |offset| (round + offset) % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_visits_every_target_once_starting_with_the_next() {
        let rounds: Vec<Vec<usize>> = (0..4).map(|round| rotated(3, round).collect()).collect();

        assert_eq!(
            rounds,
            vec![vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1], vec![0, 1, 2]]
        );
    }
}
