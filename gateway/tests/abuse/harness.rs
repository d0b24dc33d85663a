//! The target of every attack: the real gateway binary as a child process (so its RSS is its
//! own), in front of the real auth service (in this process, on a runtime of its own), and a
//! legitimate client calling through the gateway at a steady rate before and during the attack.
//!
//! [`Target::attack`] runs one attack and checks what every attack must leave true: the gateway
//! is still running and answering, the legitimate client's calls all succeeded, their p99 during
//! the attack is within [`max_p99`] (10 times the p99 before, or twice the floor: the p99 under a
//! harmless load as busy as the machine gets, measured just before), and the gateway's RSS grew by
//! less than the attack's bound. Each measured row is appended to `$CARGO_TARGET_TMPDIR/abuse-results.md`
//! (ABUSE.md's table is made from it).

use std::{
    fs::{self, File},
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use proto::auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient};
use sqlx::PgPool;
use tonic::transport::Channel;

use crate::kernel::cpu_seconds;
use crate::processes::{
    gateway_env, listening_addr, register_and_log_in, start_auth, wait_until_ready,
};

/// Calls per second of the legitimate client.
const PROBE_RATE: u32 = 50;
/// How long the legitimate client is measured before an attack.
const BASELINE: Duration = Duration::from_millis(1500);
/// The legitimate client is measured at least this long from an attack's start.
const MIN_DURING: Duration = Duration::from_secs(2);
/// How long the legitimate client is measured under the harmless load (the floor).
const FLOOR_PERIOD: Duration = Duration::from_secs(2);
/// The harmless load: this many callers of GetJwks (public, answered by auth through the
/// gateway), each calling again as soon as it has its answer, on [`HARMLESS_CONNECTIONS`]
/// connections from the attacker's thread. It keeps the gateway, auth and the attacker's thread
/// as busy as the floods do (every core of this 2-core machine).
const HARMLESS_CALLERS: usize = 16;
const HARMLESS_CONNECTIONS: usize = 4;
/// The p99 during an attack may be 10 times the p99 before, or this many times the floor: the p99
/// of the same client during the harmless load. On a loaded 2-core machine, 10 times an idle
/// baseline (15-40 ms) is below what any client calling at full speed does to the others; an
/// attack is held to costing the legitimate client no more than twice that. (Twice, because the
/// p99 of 100-150 calls is their largest or second largest, which the other builds on this
/// machine move by tens of ms from one period to the next: ABUSE.md.)
pub const FLOOR_FACTOR: u32 = 2;

/// The settings the suite gives the gateway: production defaults, except the timeouts, which
/// are shortened so that the bounds that depend on them are checked within CI's time budget
/// (each bound in ABUSE.md is stated in terms of its setting).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
pub const UNARY_TIMEOUT: Duration = Duration::from_secs(4);
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
pub const MAX_MESSAGE_BYTES: u32 = 4 * 1024 * 1024;
pub const ALLOWED_ORIGIN: &str = "http://allowed.example";

/// The gateway process, auth, and a logged-in legitimate user.
pub struct Target {
    /// The gateway's public address.
    pub addr: SocketAddr,
    gateway: Child,
    log: PathBuf,
    token: String,
    auth_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What an attack reports about the attacker's side.
#[derive(Debug)]
pub struct Outcome {
    /// What the gateway did, in words for the table ("GOAWAY ENHANCE_YOUR_CALM after 21 resets").
    pub observed: String,
    /// How long after the attack began the gateway closed the offending connection(s), or reset
    /// the offending streams; `None` when the attack expects neither.
    pub closed_after: Option<Duration>,
}

/// The bounds one attack is held to.
pub struct Bounds {
    /// The attack's name in the table.
    pub name: &'static str,
    /// Largest growth of the gateway's RSS over its value before the attack.
    pub rss_growth: u64,
    /// Latest the offending connection may be closed (checked against [`Outcome::closed_after`]).
    pub closed_within: Option<Duration>,
}

/// The legitimate client's measurements over one period.
struct Measured {
    latencies: Vec<Duration>,
    failures: Vec<String>,
    peak_rss: u64,
    /// The gateway's CPU use over the period, in cores (1.0: one core all the time).
    gateway_cores: f64,
}

impl Target {
    /// Starts auth on `db`, the gateway binary in front of it, and logs the legitimate user in.
    pub async fn start(db: PgPool) -> Self {
        let (auth_addr, auth_stop) = start_auth(db);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abuse");
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("gateway-{}.log", uuid::Uuid::new_v4()));
        let gateway = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env_clear()
            .envs(gateway_env(auth_addr))
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("the gateway binary starts");
        let addr = listening_addr(&log).await;
        wait_until_ready(addr).await;
        let token = register_and_log_in(addr).await;
        Self {
            addr,
            gateway,
            log,
            token,
            auth_stop: Some(auth_stop),
        }
    }

    /// The gateway's resident set size now, in bytes.
    pub fn rss(&self) -> u64 {
        testkit::rss_bytes(self.gateway.id())
    }

    /// Runs `attack` with the legitimate client measured before and during it, asserts the
    /// invariants every attack must keep and the attack's `bounds`, and records the row.
    pub async fn attack<F>(&mut self, bounds: Bounds, attack: F) -> Outcome
    where
        F: Future<Output = Outcome>,
    {
        let before = self.measure(tokio::time::sleep(BASELINE)).await.0;
        let (floor, harmless_calls) = self.measure(harmless_load(self.addr, FLOOR_PERIOD)).await;
        let rss_before = self.rss();
        let (during, outcome) = self
            .measure(async {
                let started = Instant::now();
                let outcome = attack.await;
                // Enough calls for a p99 even when the gateway ends an attack at once.
                if let Some(left) = MIN_DURING.checked_sub(started.elapsed()) {
                    tokio::time::sleep(left).await;
                }
                outcome
            })
            .await;
        self.assert_alive(bounds.name);
        // After the attack: a fresh connection still gets answers.
        let after = probe_once(self.addr, &self.token).await;

        let p99_before = p99(&before.latencies);
        let p99_floor = p99(&floor.latencies);
        let p99_during = p99(&during.latencies);
        let growth = during.peak_rss.saturating_sub(rss_before);
        record(
            &bounds,
            &outcome,
            [p99_before, p99_floor, p99_during],
            (harmless_calls, floor.gateway_cores),
            rss_before,
            growth,
            &during,
        );
        assert!(
            before.failures.is_empty() && floor.failures.is_empty(),
            "{}: calls failed before the attack: {:?}",
            bounds.name,
            [before.failures, floor.failures]
        );
        assert!(
            during.failures.is_empty(),
            "{}: the legitimate client's calls failed during the attack ({} of {}): {:?}",
            bounds.name,
            during.failures.len(),
            during.failures.len() + during.latencies.len(),
            &during.failures[..during.failures.len().min(5)]
        );
        assert!(
            !during.latencies.is_empty(),
            "{}: no call completed",
            bounds.name
        );
        assert!(
            after.is_ok(),
            "{}: a new connection after the attack: {after:?}",
            bounds.name
        );
        assert!(
            p99_during <= max_p99(p99_before, p99_floor),
            "{}: p99 {p99_during:?} during the attack, {p99_before:?} before, {p99_floor:?} \
             under a harmless load",
            bounds.name
        );
        assert!(
            growth <= bounds.rss_growth,
            "{}: RSS grew by {} KiB (bound {} KiB)",
            bounds.name,
            growth / 1024,
            bounds.rss_growth / 1024
        );
        if let Some(within) = bounds.closed_within {
            let closed = outcome.closed_after.unwrap_or_else(|| {
                panic!(
                    "{}: the offending connection was not closed: {}",
                    bounds.name, outcome.observed
                )
            });
            assert!(
                closed <= within,
                "{}: closed after {closed:?} (bound {within:?}): {}",
                bounds.name,
                outcome.observed
            );
        }
        outcome
    }

    /// Runs `work` while the legitimate client calls at [`PROBE_RATE`] on a thread of its own
    /// (so that the attacker's tasks in this process cannot delay its timers), sampling the
    /// gateway's RSS.
    async fn measure<F: Future>(&self, work: F) -> (Measured, F::Output) {
        let stop = Arc::new(AtomicBool::new(false));
        let measured = Arc::new(Mutex::new(Measured {
            latencies: Vec::new(),
            failures: Vec::new(),
            peak_rss: self.rss(),
            gateway_cores: 0.0,
        }));
        let (cpu_before, started) = (cpu_seconds(self.gateway.id()), Instant::now());
        let probe = {
            let (stop, measured) = (stop.clone(), measured.clone());
            let (addr, token, pid) = (self.addr, self.token.clone(), self.gateway.id());
            std::thread::spawn(move || probe(addr, &token, pid, &stop, &measured))
        };
        let output = work.await;
        let cores = (cpu_seconds(self.gateway.id()) - cpu_before) / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || probe.join().unwrap())
            .await
            .unwrap();
        let mut measured = Arc::try_unwrap(measured)
            .ok()
            .expect("the probe thread has ended")
            .into_inner()
            .unwrap();
        measured.gateway_cores = cores;
        (measured, output)
    }

    fn assert_alive(&mut self, attack: &str) {
        if let Ok(Some(status)) = self.gateway.try_wait() {
            panic!(
                "{attack}: the gateway exited with {status}; its log: {}",
                self.log.display()
            );
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.gateway.kill();
        let _ = self.gateway.wait();
        if let Some(stop) = self.auth_stop.take() {
            let _ = stop.send(());
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// The p99 during an attack may be at most this: 10 times the p99 before, or [`FLOOR_FACTOR`]
/// times the p99 under the harmless load.
pub fn max_p99(before: Duration, floor: Duration) -> Duration {
    (before * 10).max(floor * FLOOR_FACTOR)
}

/// Keeps the machine busy without attacking for `period` (see [`HARMLESS_CALLERS`]): how many
/// calls it made.
async fn harmless_load(addr: SocketAddr, period: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + period;
    let mut channels = Vec::new();
    for _ in 0..HARMLESS_CONNECTIONS {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("the gateway answers");
        channels.push(channel);
    }
    let callers = (0..HARMLESS_CALLERS).map(|n| {
        let mut auth = AuthServiceClient::new(channels[n % HARMLESS_CONNECTIONS].clone());
        async move {
            let mut calls = 0;
            while tokio::time::Instant::now() < deadline {
                let call = auth.get_jwks(auth_pb::GetJwksRequest {});
                if tokio::time::timeout_at(deadline, call).await.is_ok() {
                    calls += 1;
                }
            }
            calls
        }
    });
    futures::future::join_all(callers).await.into_iter().sum()
}

fn p99(latencies: &[Duration]) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted
        .get((sorted.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// One authenticated unary call on a fresh connection.
async fn probe_once(addr: SocketAddr, token: &str) -> Result<(), tonic::Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    get_current_user(&mut AuthServiceClient::new(channel), token).await
}

async fn get_current_user(
    auth: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(auth_pb::GetCurrentUserRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.set_timeout(Duration::from_secs(5));
    auth.get_current_user(request).await.map(drop)
}

/// The legitimate client: GetCurrentUser at [`PROBE_RATE`] on one connection until `stop`,
/// and the gateway's RSS sampled at each tick.
fn probe(addr: SocketAddr, token: &str, pid: u32, stop: &AtomicBool, measured: &Mutex<Measured>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut auth = AuthServiceClient::new(channel);
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / PROBE_RATE);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            ticks.tick().await;
            let start = Instant::now();
            let result = get_current_user(&mut auth, token).await;
            let latency = start.elapsed();
            let rss = testkit::rss_bytes(pid);
            let mut measured = measured.lock().unwrap();
            measured.peak_rss = measured.peak_rss.max(rss);
            match result {
                Ok(()) => measured.latencies.push(latency),
                Err(status) => measured.failures.push(format!("{status:?}")),
            }
        }
    });
}

fn record(
    bounds: &Bounds,
    outcome: &Outcome,
    [p99_before, p99_floor, p99_during]: [Duration; 3],
    (harmless_calls, floor_cores): (u64, f64),
    rss_before: u64,
    growth: u64,
    during: &Measured,
) {
    let closed = match (outcome.closed_after, bounds.closed_within) {
        (Some(after), Some(within)) => {
            format!("{} ms (≤ {} ms)", after.as_millis(), within.as_millis())
        }
        (Some(after), None) => format!("{} ms", after.as_millis()),
        (None, _) => "not closed".to_owned(),
    };
    let row = format!(
        "| {} | {} | {} | {} / {} ({} calls/s, gateway {:.0}% CPU) → {} ms (gateway {:.0}% CPU; {} calls, {} failed) | {} MiB + {} KiB (≤ {} MiB) |\n",
        bounds.name,
        outcome.observed,
        closed,
        p99_before.as_millis(),
        p99_floor.as_millis(),
        u128::from(harmless_calls) * 1000 / FLOOR_PERIOD.as_millis(),
        floor_cores * 100.0,
        p99_during.as_millis(),
        during.gateway_cores * 100.0,
        during.latencies.len() + during.failures.len(),
        during.failures.len(),
        rss_before / (1024 * 1024),
        growth / 1024,
        bounds.rss_growth / (1024 * 1024),
    );
    eprint!("{row}");
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abuse-results.md");
    if let Ok(mut file) = File::options().create(true).append(true).open(file) {
        let _ = file.write_all(row.as_bytes());
    }
}

/// Mebibytes, for bounds.
pub const fn mib(n: u64) -> u64 {
    n * 1024 * 1024
}
