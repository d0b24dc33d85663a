//! `auth-login`: logins per second at the production argon2id parameters, side by side with what
//! raw argon2id verification allows on the same machine in the same run. Goal: logins reach at
//! least 90 % of the raw rate.
//!
//! 1. Sequential probes against auth: a wrong password vs an unknown username (which must cost
//!    the same, or a login's timing tells whether a username exists), and one correct login vs
//!    one bare verification (what a login adds to its hash).
//! 2. Rounds that alternate raw verification (`nproc` OS threads verifying one password against
//!    one PHC hash with the `argon2` crate, in `raw.rs`) and logins under load (`4 × nproc`
//!    clients over a few HTTP/2 connections, each logging in again and again and resuming its
//!    device, so the per-user device limit never interferes). CPU time is sampled around every
//!    phase (`cpu.rs`) to show where a login's time goes. `render.rs` writes the section.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use proto::auth::v1 as pb;
use tokio::task::JoinSet;
use tonic::{Code, Status, transport::Channel};

use super::{Context, Outcome, Scenario};
use crate::{
    cpu::{CpuSnapshot, CpuTime},
    server::{self, RunningServer},
    stats::{Latencies, Throughput},
};

mod raw;
mod render;

use raw::{raw_verification_rate, verification_latencies};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "auth-login",
    title: "logins per second at the production argon2id parameters",
    run,
};

/// The production argon2id cost: the defaults of `AUTH_ARGON2_*` (OWASP's minimum).
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;
/// Logins must reach this share of the raw verification rate.
const GOAL: f64 = 0.90;
/// How far apart the wrong-password and unknown-username medians may be and still be "the same".
const SAME_COST_TOLERANCE: f64 = 0.10;
const N_USERS: usize = 32;
const N_CONNECTIONS: usize = 4;
const CLIENTS_PER_CPU: usize = 4;
/// auth's pool in production: the default of `AUTH_DATABASE_MAX_CONNECTIONS`.
const POOL_SIZE: u32 = 10;
/// The longest any one call may take (auth gives up queueing for a hash after 10 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Operations one worker may do, whatever its deadline.
const MAX_OPERATIONS: u64 = 1_000_000;
use testkit::PASSWORD;
/// The name of the raw verification threads, for the CPU time breakdown.
const RAW_VERIFIER_THREAD: &str = "raw-verifier";

/// How big this run is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    threads: usize,
    clients: usize,
    connections: usize,
    /// Raw verification and logins take turns, each `slice` long, `rounds` times: the machine's
    /// speed drifts (a virtual CPU's share of its host changes), and alternating makes both
    /// sides see the same drift.
    rounds: usize,
    slice: Duration,
    probes: usize,
}

/// Everything measured.
#[derive(Debug)]
struct Figures {
    plan: Plan,
    probes: Probes,
    /// Raw verification and logins, one entry per round.
    raw: Vec<Timed>,
    logins: Vec<Timed>,
    login_latency: Latencies,
    /// Failed logins under load, by gRPC code.
    failures: BTreeMap<String, u64>,
}

/// Sequential latencies, one call at a time.
#[derive(Debug)]
struct Probes {
    one_verification: Latencies,
    one_login: Latencies,
    wrong_password: Latencies,
    unknown_user: Latencies,
}

/// A throughput, and the CPU time spent meanwhile.
#[derive(Debug, Clone)]
struct Timed {
    throughput: Throughput,
    cpu: CpuTime,
}

/// A registered user and the device its logins resume.
#[derive(Debug, Clone)]
struct BenchUser {
    username: String,
    device_id: String,
}

fn run(context: &Context) -> Outcome<'_> {
    Box::pin(measure(context))
}

async fn measure(context: &Context) -> anyhow::Result<String> {
    let clients = CLIENTS_PER_CPU * context.nproc;
    let plan = Plan {
        threads: context.nproc,
        clients,
        connections: N_CONNECTIONS.min(clients),
        rounds: context.pick(5, 2),
        slice: Duration::from_secs(context.pick(2, 1)),
        probes: context.pick(50, 10),
    };
    let server = server::start_auth(auth_config(context)).await?;
    let measured = measure_with(&server, plan).await;
    let stopped = server.stop().await;
    let figures = measured?;
    stopped.context("auth did not stop cleanly")?;
    let body = figures.render();
    println!("\n{body}");
    Ok(body)
}

async fn measure_with(server: &RunningServer, plan: Plan) -> anyhow::Result<Figures> {
    let mut channels = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        channels.push(server.connect().await?);
    }
    println!("registering {N_USERS} users, each with one device");
    let users = set_up_users(&channels[0]).await?;
    println!("sequential probes: {} of each", plan.probes);
    let probes = sequential_probes(&channels[0], &users, plan.probes).await?;

    println!(
        "{} rounds of {:?}: raw verification on {} OS threads, then logins from {} clients over \
         {} connections",
        plan.rounds, plan.slice, plan.threads, plan.clients, plan.connections
    );
    let mut raw = Vec::with_capacity(plan.rounds);
    let mut logins = Vec::with_capacity(plan.rounds);
    let mut login_latency = Vec::new();
    let mut failures = BTreeMap::new();
    for round in 1..=plan.rounds {
        let raw_round = raw_verification_rate(plan).await?;
        let cpu_before = CpuSnapshot::take();
        let load = login_load(&channels, &users, plan).await?;
        let login_round = Timed::since(&cpu_before, load.throughput);
        println!(
            "  round {round}: {:.1} verifications/s, {:.1} logins/s",
            raw_round.throughput.per_second(),
            login_round.throughput.per_second()
        );
        raw.push(raw_round);
        logins.push(login_round);
        login_latency.extend(load.latencies);
        for (code, count) in load.failures {
            *failures.entry(code).or_default() += count;
        }
    }
    Ok(Figures {
        plan,
        probes,
        raw,
        logins,
        login_latency: Latencies::new(login_latency),
        failures,
    })
}

impl Timed {
    fn since(cpu_before: &CpuSnapshot, throughput: Throughput) -> Self {
        let cpu = cpu_before.until(&CpuSnapshot::take());
        Self { throughput, cpu }
    }

    /// The rounds together.
    fn total(rounds: &[Timed]) -> Timed {
        let mut total = Timed {
            throughput: Throughput {
                count: 0,
                elapsed: Duration::ZERO,
            },
            cpu: CpuTime::default(),
        };
        total.cpu.machine = Some(Default::default());
        for round in rounds {
            total.throughput.count += round.throughput.count;
            total.throughput.elapsed += round.throughput.elapsed;
            total.cpu.add(&round.cpu);
        }
        total
    }

    /// `seconds` of CPU time per operation, in milliseconds.
    fn millis_per_operation(&self, seconds: f64) -> f64 {
        seconds * 1000.0 / self.throughput.count.max(1) as f64
    }
}

/// auth as in production, except for a loopback port and throttling limits too high to reach.
fn auth_config(context: &Context) -> auth::Config {
    let mut config = auth::Config::for_tests();
    config.database.url = context.database_url.clone().into();
    config.database.max_connections = POOL_SIZE;
    config.passwords = auth::PasswordSettings {
        memory_kib: MEMORY_KIB,
        iterations: ITERATIONS,
        parallelism: PARALLELISM,
        concurrency: context.nproc,
    };
    config.login_throttle = auth::ThrottleSettings {
        failures_before_delay: u32::MAX,
        failures_per_account: u32::MAX,
        failures_per_address: u32::MAX,
        ..config.login_throttle
    };
    config
}

/// Refused logins (wrong password vs unknown username, interleaved) and correct ones, one at a
/// time, and bare verifications for comparison.
async fn sequential_probes(
    channel: &Channel,
    users: &[BenchUser],
    n: usize,
) -> anyhow::Result<Probes> {
    let mut client = pb::auth_service_client::AuthServiceClient::new(channel.clone());
    let mut wrong_password = Vec::with_capacity(n);
    let mut unknown_user = Vec::with_capacity(n);
    let mut one_login = Vec::with_capacity(n);
    for probe in 0..n {
        let user = &users[probe % users.len()];
        let wrong = pb::LoginRequest {
            password: format!("{PASSWORD} but wrong"),
            ..user.login()
        };
        let unknown = pb::LoginRequest {
            username: format!("auth-login-nobody-{probe:03}"),
            ..user.login()
        };
        // Alternate which goes first, so that neither always runs right after the other.
        if probe % 2 == 0 {
            wrong_password.push(refused_login(&mut client, wrong).await?);
            unknown_user.push(refused_login(&mut client, unknown).await?);
        } else {
            unknown_user.push(refused_login(&mut client, unknown).await?);
            wrong_password.push(refused_login(&mut client, wrong).await?);
        }
        let started = Instant::now();
        call(client.login(user.login())).await?;
        one_login.push(started.elapsed());
    }
    let one_verification = tokio::task::spawn_blocking(move || verification_latencies(n)).await??;
    Ok(Probes {
        one_verification,
        one_login: Latencies::new(one_login),
        wrong_password: Latencies::new(wrong_password),
        unknown_user: Latencies::new(unknown_user),
    })
}

impl BenchUser {
    fn login(&self) -> pb::LoginRequest {
        pb::LoginRequest {
            username: self.username.clone(),
            password: PASSWORD.to_owned(),
            device_id: self.device_id.clone(),
            device_name: String::new(),
        }
    }
}

/// Registers the users concurrently, and logs each in once to create the device it resumes.
async fn set_up_users(channel: &Channel) -> anyhow::Result<Vec<BenchUser>> {
    let mut setups = JoinSet::new();
    for index in 0..N_USERS {
        let mut client = pb::auth_service_client::AuthServiceClient::new(channel.clone());
        setups.spawn(async move {
            let username = format!("auth-login-{index:03}");
            let register = pb::RegisterRequest {
                username: username.clone(),
                password: PASSWORD.to_owned(),
                display_name: String::new(),
            };
            call(client.register(register)).await?;
            let first_login = pb::LoginRequest {
                username: username.clone(),
                password: PASSWORD.to_owned(),
                device_id: String::new(),
                device_name: "bench".to_owned(),
            };
            let device = call(client.login(first_login)).await?.device;
            let device_id = device
                .context("a login answered without a device")?
                .device_id;
            anyhow::Ok((
                index,
                BenchUser {
                    username,
                    device_id,
                },
            ))
        });
    }
    let mut users = setups
        .join_all()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    users.sort_by_key(|(index, _)| *index);
    Ok(users.into_iter().map(|(_, user)| user).collect())
}

/// How long a login that must be refused took.
async fn refused_login(
    client: &mut pb::auth_service_client::AuthServiceClient<Channel>,
    request: pb::LoginRequest,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    match call(client.login(request)).await {
        Err(status) if status.code() == Code::Unauthenticated => Ok(started.elapsed()),
        Err(status) => bail!("a bad login failed the wrong way: {status}"),
        Ok(_) => bail!("a bad login succeeded"),
    }
}

/// One round of logins under load.
#[derive(Debug)]
struct Load {
    /// Successful logins, over the time until the last worker stopped.
    throughput: Throughput,
    latencies: Vec<Duration>,
    /// Failed logins by gRPC code.
    failures: BTreeMap<String, u64>,
}

/// `plan.clients` workers log in, one call at a time each, until `plan.slice` has passed.
async fn login_load(channels: &[Channel], users: &[BenchUser], plan: Plan) -> anyhow::Result<Load> {
    let started = Instant::now();
    let deadline = started + plan.slice;
    let mut workers = JoinSet::new();
    for worker in 0..plan.clients {
        let channel = channels[worker % channels.len()].clone();
        let mut client = pb::auth_service_client::AuthServiceClient::new(channel);
        // Worker k logs in as users k, k + clients, k + 2 × clients, ...: two workers then rarely
        // resume the same device at the same time.
        let requests: Vec<pb::LoginRequest> = users
            .iter()
            .skip(worker % users.len())
            .step_by(plan.clients)
            .map(BenchUser::login)
            .collect();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = BTreeMap::<String, u64>::new();
            let mut done = 0;
            while done < MAX_OPERATIONS && Instant::now() < deadline {
                let request = requests[done as usize % requests.len()].clone();
                let sent = Instant::now();
                match call(client.login(request)).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(status) => {
                        *failures.entry(format!("{:?}", status.code())).or_default() += 1
                    }
                }
                done += 1;
            }
            (latencies, failures)
        });
    }
    let mut latencies = Vec::new();
    let mut failures = BTreeMap::new();
    for (worker_latencies, worker_failures) in workers.join_all().await {
        latencies.extend(worker_latencies);
        for (code, count) in worker_failures {
            *failures.entry(code).or_default() += count;
        }
    }
    let throughput = Throughput {
        count: latencies.len() as u64,
        elapsed: started.elapsed(),
    };
    ensure!(
        throughput.count > 0,
        "no login succeeded under load: {failures:?}"
    );
    Ok(Load {
        throughput,
        latencies,
        failures,
    })
}

/// One call, bounded by [`CALL_TIMEOUT`]; running out of time counts as DEADLINE_EXCEEDED.
async fn call<T>(
    rpc: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, rpc).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(
            "no answer within the bench's call timeout",
        )),
    }
}
