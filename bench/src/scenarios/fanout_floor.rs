//! `fanout-floor`: what this machine spends to put one message on one stream when nothing else
//! is done: no database, no envelope check, no chat. It is the floor under `group-fanout`'s
//! figures, measured the same way.
//!
//! A minimal source stands in for chat: a hyper HTTP/2 server (the stack tonic serves with) on
//! its own runtime, one worker per CPU, whose every call is a Subscribe stream fed by a bounded
//! queue of pre-encoded `SubscribeResponse` frames. Fanning a message out to a group is one
//! `try_send` of the same shared `Bytes` per member's stream, on the source's runtime: less than
//! chat can do, which also reads the message once, checks the stream's cursor and encodes each
//! member's own key. The readers are `group-fanout`'s (tonic clients, 50 streams per HTTP/2
//! connection, one task per stream stamping each message), and so is the load: part 1 sends to
//! one group one message at a time, part 2 keeps 2 messages in flight per group.
//!
//! Three paths, each with a fresh source: the readers straight on the source; through the real
//! gateway (tokens checked at Subscribe by auth's key set, then its generic proxy), as every
//! client reaches chat; and through nginx's `grpc_pass` (`testkit::nginx`), the reference proxy, which
//! opens one upstream connection per stream.

use std::{
    convert::Infallible,
    fmt::Write as _,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::bytes::Bytes;
use proto::chat::v1 as chat_pb;
use testkit::nginx::{self, Nginx};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc, oneshot},
    task::JoinSet,
};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

// The same streams, load and goals as `group-fanout`.
use super::{
    Context, Outcome, Scenario,
    group_fanout::{
        DELIVERY_TIMEOUT, GOAL_DELIVERIES_PER_SECOND, GOAL_LAST_P99, IN_FLIGHT_PER_GROUP, RSA_BITS,
        STREAMS_PER_CONNECTION,
    },
};
use crate::{
    clients::{
        seal::MESSAGE_BYTES,
        setup::{self, Identity, SharedRsa},
        tracker::{Kind, Tracker},
    },
    cpu::{self, CpuSnapshot, CpuTime},
    server::{self, RunningServer},
    stats::{Latencies, millis, percent},
};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "fanout-floor",
    title: "the least a delivery costs: a minimal HTTP/2 source in chat's place, fanning out to group-fanout's readers straight, through the gateway and through nginx",
    run,
};

/// Each source stream's queue (chat's `CHAT_STREAM_QUEUE` default).
const STREAM_QUEUE: usize = 64;
/// The wrapped key's length: RSA-OAEP output is the modulus's size.
const WRAPPED_KEY_BYTES: usize = RSA_BITS / 8;
/// nginx's process among the CPU consumers.
const NGINX: &str = "nginx";

fn run(context: &Context) -> Outcome<'_> {
    Box::pin(measure(context))
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Streams per group (`group-fanout`'s members but the owner).
    streams_per_group: usize,
    groups: usize,
    warmup_messages: usize,
    timed_messages: usize,
    settle: Duration,
    rounds: usize,
    slice: Duration,
}

/// How the readers reach the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Gateway,
    Nginx,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "straight to the source",
            Self::Gateway => "through the gateway",
            Self::Nginx => "through nginx",
        }
    }
}

/// One path's figures.
struct PathFigures {
    path: Path,
    /// Part 1: the first, median and last arrival of each timed message.
    first: Latencies,
    median: Latencies,
    last: Latencies,
    single_cpu: CpuTime,
    /// Part 2.
    deliveries: u64,
    elapsed: Duration,
    sustained_cpu: CpuTime,
    lost: usize,
}

async fn measure(context: &Context) -> anyhow::Result<String> {
    let plan = Plan {
        streams_per_group: context.pick(999, 99),
        groups: context.pick(5, 2),
        warmup_messages: context.pick(5, 2),
        timed_messages: context.pick(100, 10),
        settle: Duration::from_secs(1),
        rounds: context.pick(3, 1),
        slice: Duration::from_secs(context.pick(4, 1)),
    };
    let auth = server::start_test_auth(&context.database_url).await?;
    let measured = measure_with(&auth, plan).await;
    auth.stop().await?;
    let paths = measured?;
    let body = render(plan, &paths);
    println!("\n{body}");
    Ok(body)
}

async fn measure_with(auth: &RunningServer, plan: Plan) -> anyhow::Result<Vec<PathFigures>> {
    let rsa = Arc::new(SharedRsa::generate(RSA_BITS)?);
    let started = Instant::now();
    let users = setup::register_users(
        auth,
        &rsa,
        "fanout-floor",
        plan.groups * plan.streams_per_group,
    )
    .await?;
    println!(
        "{} users registered in {:.1} s",
        users.len(),
        started.elapsed().as_secs_f64()
    );
    let mut paths = Vec::new();
    for path in [Path::Direct, Path::Gateway, Path::Nginx] {
        let (source, source_server) = Source::start()?;
        let (mut gateway, mut nginx) = (None, None);
        let entry = match path {
            Path::Direct => RunningServer::elsewhere(source_server.addr),
            Path::Gateway => {
                // Only Subscribe is called: group's upstream is never used.
                let config = server::gateway_config(auth.addr, source_server.addr, auth.addr);
                let started = server::start_gateway(config).await?;
                let entry = RunningServer::elsewhere(started.addr);
                gateway = Some(started);
                entry
            }
            Path::Nginx => match nginx::available() {
                Ok(_) => {
                    let started = server::start_nginx(source_server.addr).await?;
                    let entry = RunningServer::elsewhere(started.addr);
                    nginx = Some(started);
                    entry
                }
                Err(why) => {
                    println!("{}: skipped: {why}", path.name());
                    source_server.stop().await?;
                    continue;
                }
            },
        };
        println!("{}:", path.name());
        let figures = measure_path(path, &source, &entry, nginx.as_ref(), &users, plan).await;
        if let Some(gateway) = gateway {
            gateway.stop().await?;
        }
        if let Some(nginx) = nginx {
            nginx.stop().await?;
        }
        source_server.stop().await?;
        paths.push(figures?);
    }
    Ok(paths)
}

async fn measure_path(
    path: Path,
    source: &Arc<Source>,
    entry: &RunningServer,
    nginx: Option<&Nginx>,
    users: &[Identity],
    plan: Plan,
) -> anyhow::Result<PathFigures> {
    let tracker = Arc::new(Tracker::default());
    let mut readers = JoinSet::new();
    let mut groups = Vec::new();
    for members in users.chunks(plan.streams_per_group).take(plan.groups) {
        let first = source.stream_count();
        setup::subscribe_all(
            entry,
            members,
            STREAMS_PER_CONNECTION,
            &tracker,
            &mut readers,
        )
        .await?;
        let streams = first..source.stream_count();
        anyhow::ensure!(
            streams.len() == members.len(),
            "{} streams opened at the source for {} members",
            streams.len(),
            members.len()
        );
        groups.push(streams);
    }
    let per_group = plan.streams_per_group;
    let mut sequence = 0_u64;
    let mut next_id = || {
        sequence += 1;
        format!("floor-{sequence}")
    };

    // Part 1: one message at a time to the first group.
    let send_and_wait = async |id: String| -> anyhow::Result<()> {
        let (done, arrived) = oneshot::channel();
        tracker.expect(&id, Kind::Group, per_group, None, Some(done));
        source.fan_out(groups[0].clone(), frame(&id));
        tokio::time::timeout(DELIVERY_TIMEOUT, arrived)
            .await
            .context("a message did not reach every stream in time")??;
        Ok(())
    };
    for _ in 0..plan.warmup_messages {
        send_and_wait(next_id()).await?;
    }
    tracker.take_delivered(Kind::Group);
    let nginx_seconds = || nginx.and_then(Nginx::cpu_seconds).unwrap_or(0.0);
    let (before, nginx_before) = (CpuSnapshot::take(), nginx_seconds());
    for _ in 0..plan.timed_messages {
        send_and_wait(next_id()).await?;
    }
    let mut single_cpu = before.until(&CpuSnapshot::take());
    // nginx is not a thread of this process: its own process's time, under its name.
    single_cpu
        .by_consumer
        .insert(NGINX.to_owned(), nginx_seconds() - nginx_before);
    let (delivered, _) = tracker.take_delivered(Kind::Group);
    let pick = |at: fn(&[Duration]) -> Duration| {
        Latencies::new(delivered.iter().map(|m| at(&m.after_send)).collect())
    };
    let (first, median, last) = (
        pick(|after| after[0]),
        pick(|after| after[after.len() / 2]),
        pick(|after| after[after.len() - 1]),
    );
    println!(
        "  one message to {per_group} streams: last p50 {}, p99 {}",
        millis(last.median()),
        millis(last.percentile(99.0))
    );

    // Part 2: every group, IN_FLIGHT_PER_GROUP messages not yet everywhere.
    let deadline = Instant::now() + plan.settle + plan.slice * plan.rounds as u32 + plan.settle;
    let mut loops = JoinSet::new();
    for streams in groups.iter().cloned() {
        let (source, tracker) = (source.clone(), tracker.clone());
        let permits = Arc::new(Semaphore::new(IN_FLIGHT_PER_GROUP));
        let prefix = format!("floor-g{}-", streams.start);
        loops.spawn(async move {
            let mut n = 0_u64;
            while Instant::now() < deadline {
                let Ok(Ok(permit)) =
                    tokio::time::timeout(DELIVERY_TIMEOUT, permits.clone().acquire_owned()).await
                else {
                    return;
                };
                n += 1;
                let id = format!("{prefix}{n}");
                tracker.expect(&id, Kind::Group, streams.len(), Some(permit), None);
                source.fan_out(streams.clone(), frame(&id));
            }
        });
    }
    tokio::time::sleep(plan.settle).await;
    let (before, counted) = (CpuSnapshot::take(), tracker.group_deliveries());
    let nginx_before = nginx_seconds();
    let timed = Instant::now();
    for _ in 0..plan.rounds {
        tokio::time::sleep(plan.slice).await;
        tracker.take_delivered(Kind::Group);
    }
    let elapsed = timed.elapsed();
    let deliveries = tracker.group_deliveries() - counted;
    let mut sustained_cpu = before.until(&CpuSnapshot::take());
    sustained_cpu
        .by_consumer
        .insert(NGINX.to_owned(), nginx_seconds() - nginx_before);
    while loops.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    tracker.take_delivered(Kind::Group);
    let lost = tracker.clear();
    readers.abort_all();
    println!(
        "  {} groups, {IN_FLIGHT_PER_GROUP} in flight each: {:.0} deliveries/s",
        groups.len(),
        deliveries as f64 / elapsed.as_secs_f64()
    );
    Ok(PathFigures {
        path,
        first,
        median,
        last,
        single_cpu,
        deliveries,
        elapsed,
        sustained_cpu,
        lost,
    })
}

/// `SubscribeResponse { event: StreamEvent { message } }` in a gRPC frame, sized like a
/// `group-fanout` delivery (one RSA-2048 wrapped key, a 200-byte plaintext).
fn frame(client_message_id: &str) -> Bytes {
    let id = "0192d3f0-5b1c-7a2e-9c4d-2f1e0a9b8c7d".to_owned();
    let message = chat_pb::Message {
        message_id: id.clone(),
        conversation_id: id.clone(),
        sequence: 1_000,
        sent_at: Some(prost_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 1,
        }),
        envelope: Some(chat_pb::Envelope {
            suite: 1,
            conversation_id: id.clone(),
            sender_user_id: id.clone(),
            sender_device_id: id.clone(),
            client_message_id: client_message_id.to_owned(),
            nonce: vec![1; 12],
            ciphertext: vec![2; MESSAGE_BYTES + 16],
            wrapped_keys: vec![chat_pb::WrappedKey {
                device_id: id,
                key_fingerprint: vec![3; 32],
                wrapped_key: vec![4; WRAPPED_KEY_BYTES],
                ..Default::default()
            }],
            key_commitment: vec![5; 32],
            signature: vec![6; 64],
            ..Default::default()
        }),
        recipients_digest: vec![7; 32],
        ..Default::default()
    };
    grpc_frame(&chat_pb::SubscribeResponse {
        event: Some(chat_pb::StreamEvent {
            event: Some(chat_pb::stream_event::Event::Message(message)),
        }),
    })
}

fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + body.len());
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&body);
    framed.into()
}

/// The minimal source: its open streams' queues, in the order they opened, and a handle on its
/// runtime to fan out there.
struct Source {
    streams: Mutex<Vec<mpsc::Sender<Bytes>>>,
    /// Set when it starts serving.
    runtime: OnceLock<tokio::runtime::Handle>,
}

impl Source {
    /// Starts the source on its own runtime (`server.rs`'s threads, named `source-`).
    fn start() -> anyhow::Result<(Arc<Self>, RunningServer)> {
        let source = Arc::new(Self {
            streams: Mutex::new(Vec::new()),
            runtime: OnceLock::new(),
        });
        let serving = source.clone();
        let server = server::start("source", move |listener, shutdown| {
            serving.serve(listener, shutdown)
        })?;
        Ok((source, server))
    }

    fn stream_count(&self) -> usize {
        self.streams.lock().map_or(0, |streams| streams.len())
    }

    /// Queues `frame` on every stream in `streams`, on the source's runtime.
    fn fan_out(self: &Arc<Self>, streams: std::ops::Range<usize>, frame: Bytes) {
        let Some(runtime) = self.runtime.get() else {
            return;
        };
        let source = self.clone();
        runtime.spawn(async move {
            // After a shutdown the list is empty and there is nothing to do.
            if let Ok(all) = source.streams.lock()
                && let Some(queues) = all.get(streams)
            {
                for queue in queues {
                    // A full queue loses the message, which the scenario reports as lost.
                    let _ = queue.try_send(frame.clone());
                }
            }
        });
    }

    async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: server::Shutdown,
    ) -> anyhow::Result<()> {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        let caught_up = grpc_frame(&chat_pb::SubscribeResponse {
            event: Some(chat_pb::StreamEvent {
                event: Some(chat_pb::stream_event::Event::CaughtUp(chat_pb::CaughtUp {})),
            }),
        });
        // chat's settings (`common::grpc`, through tonic): no limit on concurrent streams (the
        // gateway carries many clients' streams on few connections) and its large windows.
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(None)
            .initial_connection_window_size(16 * 1024 * 1024)
            .initial_stream_window_size(1024 * 1024);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (io, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut shutdown => break,
            };
            io.set_nodelay(true)?;
            let (source, caught_up) = (self.clone(), caught_up.clone());
            let service = hyper::service::service_fn(move |_request| {
                let (queue, frames) = mpsc::channel(STREAM_QUEUE);
                let _ = queue.try_send(caught_up.clone());
                if let Ok(mut streams) = source.streams.lock() {
                    streams.push(queue);
                }
                let body = StreamBody::new(
                    ReceiverStream::new(frames)
                        .map(|frame| Ok::<_, Infallible>(Frame::data(frame))),
                );
                async move {
                    http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(body)
                }
            });
            connections.spawn(builder.serve_connection(TokioIo::new(io), service));
        }
        // Ending the streams ends the connections.
        if let Ok(mut streams) = self.streams.lock() {
            streams.clear();
        }
        connections.abort_all();
        Ok(())
    }
}

fn render(plan: Plan, paths: &[PathFigures]) -> String {
    let mut out = format!(
        "What the machine spends to put one message on one stream when nothing else is done, \
         the floor under `group-fanout`. A minimal source stands in for chat: a hyper HTTP/2 \
         server on its own runtime (one worker per CPU) whose every Subscribe stream is fed by \
         a bounded queue ({STREAM_QUEUE}) of pre-encoded frames; fanning a message out is one \
         `try_send` of the same shared bytes per stream, on the source's runtime. No database, \
         no envelope check, no per-member key. Each frame is a `SubscribeResponse` sized like a \
         `group-fanout` delivery (a {MESSAGE_BYTES}-byte plaintext and one {WRAPPED_KEY_BYTES}-byte \
         wrapped key: {} bytes). The readers are `group-fanout`'s: tonic clients, \
         {STREAMS_PER_CONNECTION} streams per HTTP/2 connection, each stream read by its own task \
         that stamps every message. The load generator and readers share the machine with the \
         source, the proxy and auth (which only issued the tokens). Three paths, each with a fresh \
         source: the readers straight on the source; through the gateway (tokens checked at \
         Subscribe, then its generic proxy, as every client reaches chat); through nginx's \
         `grpc_pass` (one process, which opens one upstream connection per stream).\n\n\
         Part 1: {} messages (after {} untimed) to one group of {} streams, each once the \
         previous one is on every stream, timed from the fan-out's start. Part 2: {} groups of \
         {} streams, {IN_FLIGHT_PER_GROUP} messages in flight per group, {} rounds of {} s after \
         {} s of settling; lost: messages not on every stream 1 s after the last send.\n\n",
        frame("floor-1").len(),
        plan.timed_messages,
        plan.warmup_messages,
        plan.streams_per_group,
        plan.groups,
        plan.streams_per_group,
        plan.rounds,
        plan.slice.as_secs(),
        plan.settle.as_secs(),
    );
    out.push_str(&cpu::interference(
        &paths
            .iter()
            .flat_map(|path| {
                let name = path.path.name();
                [(name, &path.single_cpu), (name, &path.sustained_cpu)]
            })
            .collect::<Vec<_>>(),
    ));
    out.push_str(
        "| Path | Last stream p50 / p99 | Median stream p50 | First stream p50 | \
         Deliveries/s (part 2) | Lost |\n|---|---|---|---|---|---|\n",
    );
    for path in paths {
        let _ = writeln!(
            out,
            "| {} | {} / {} | {} | {} | **{:.0}/s** | {} |",
            path.path.name(),
            millis(path.last.median()),
            millis(path.last.percentile(99.0)),
            millis(path.median.median()),
            millis(path.first.median()),
            path.deliveries as f64 / path.elapsed.as_secs_f64(),
            path.lost,
        );
    }
    out.push_str(
        "\nCPU per delivery by consumer (part 1: per message / streams; part 2: per delivery):\n\n\
         | Path | Part | source | proxy (gateway or nginx) | auth | readers and load (bench) | \
         rest of machine | **whole machine** | CPUs busy |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for path in paths {
        for (part, cpu, deliveries) in [
            (
                "1",
                &path.single_cpu,
                (plan.timed_messages * plan.streams_per_group) as f64,
            ),
            ("2", &path.sustained_cpu, path.deliveries as f64),
        ] {
            let Some(machine) = cpu.machine else { continue };
            let per = |seconds: f64| format!("{:.1} µs", seconds / deliveries.max(1.0) * 1e6);
            let consumer = |prefix: &str| cpu.consumed_by(|name| name.starts_with(prefix));
            let (source, auth) = (consumer("source-"), consumer("auth-"));
            let proxy = consumer("gateway-") + consumer(NGINX);
            let bench = cpu.consumed_by(|name| {
                !["source-", "gateway-", "auth-", NGINX]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
                    && name != cpu::POSTGRES
            });
            let accounted =
                source + proxy + auth + bench + cpu.consumed_by(|name| name == cpu::POSTGRES);
            let _ = writeln!(
                out,
                "| {} | {part} | {} | {} | {} | {} | {} | **{}** | {} |",
                path.path.name(),
                per(source),
                per(proxy),
                per(auth),
                per(bench),
                per((machine.busy - accounted).max(0.0)),
                per(machine.busy),
                percent(machine.busy_share()),
            );
        }
    }
    let _ = writeln!(
        out,
        "\n`group-fanout`'s goals, against this floor: the last of 1,000 members within \
         {} at p99, where here nothing but the streams is timed (no send, no check, no commit); \
         and {GOAL_DELIVERIES_PER_SECOND:.0} deliveries/s, which on this machine's CPUs allows \
         {:.0} µs of the whole machine per delivery, for everything.",
        millis(GOAL_LAST_P99),
        std::thread::available_parallelism().map_or(1, usize::from) as f64
            / GOAL_DELIVERIES_PER_SECOND
            * 1e6
    );
    out
}
