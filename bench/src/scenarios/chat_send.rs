//! `chat-send`: the most durable, acknowledged messages per second through the gateway, against
//! what PostgreSQL itself does on this machine in the same minute (`crate::pgbench`: single-row
//! inserts from 32 clients, and 50-row batches). Goals (chat issue): at least 50 % of the batched
//! rate and never below the single-row rate.
//!
//! auth, chat and the gateway run in-process with their production settings, each on its own
//! runtime (`server.rs`); the load generator shares the machine. `PAIRS` pairs of users each get a
//! direct conversation; the first of a pair sends real envelopes (sealed with `e2ee`, sealed
//! before each round so that sealing costs nothing while measured) to the second, whose one
//! device is the only recipient. Every device uses the same RSA key (generating one per device
//! would take longer than the run, and the server never decrypts), each its own Ed25519 key.
//!
//! 1. Setup, then a warm-up that also estimates the rate, to seal enough envelopes per round.
//! 2. Rounds of a closed loop: `CONCURRENCY` sends in flight over `CONNECTIONS` connections to
//!    the gateway, each the next envelope of its pair; an answer is an ack, and an ack means
//!    committed. Sends are SendMessage calls, or with `BENCH_CHAT_SEND_OVER=stream` sends on one
//!    OpenStream per pair (`CONCURRENCY / PAIRS` in flight on each), as a native client sends.
//! 3. The CPU time of the check chat makes of each send (`Envelope::verify_as_sent`, whose
//!    Ed25519 verification dominates), which bounds the rate any code can reach here.
//! 4. pgbench right after, on the same database server.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
};
use testkit::with_token;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{Context, Outcome, Scenario};
use crate::{
    cpu::{self, CpuSnapshot, CpuTime},
    pgbench,
    server::{self, RunningServer},
    stats::{Latencies, Throughput, millis, percent},
};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "chat-send",
    title: "durable acknowledged messages per second through the gateway, against pgbench",
    run,
};

/// Conversations messages are sent in.
const PAIRS: usize = 32;
/// Sends in flight.
const CONCURRENCY: usize = 128;
/// HTTP/2 connections from the load generator to the gateway.
const CONNECTIONS: usize = 4;
/// Plaintext size of every message (a short chat line).
const MESSAGE_BYTES: usize = 200;
/// RSA key size of the devices (the server only ever sees the wrapped key's length).
const RSA_BITS: usize = 2048;
/// Goal: at least this share of pgbench's batched-insert rate.
const GOAL_SHARE_OF_BATCHED: f64 = 0.5;
/// Never seal more than this many envelopes for one round.
const MAX_ENVELOPES_PER_ROUND: usize = 400_000;
/// Each service's pool, as `*_DATABASE_MAX_CONNECTIONS` defaults to.
const POOL_SIZE: u32 = 10;
const PASSWORD: &str = "chat-send bench password";
/// `stream` sends on OpenStream instead of SendMessage calls.
const OVER_VAR: &str = "BENCH_CHAT_SEND_OVER";
/// How long a stream sender waits for an answer before it gives up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn run(context: &Context) -> Outcome<'_> {
    Box::pin(measure(context))
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    rounds: usize,
    slice: Duration,
    warmup: Duration,
    pgbench_seconds: u32,
    over_streams: bool,
    /// How long the server's envelope check is timed.
    check_for: Duration,
}

/// A device that sends, with what it needs to seal.
struct SendingDevice {
    user_id: String,
    device_id: String,
    token: String,
    keys: e2ee::DeviceKeys,
}

/// One conversation and its sender and recipient.
struct Pair {
    conversation_id: String,
    sender: SendingDevice,
    recipient: e2ee::RecipientDevice,
}

/// What one round measured.
struct Round {
    throughput: Throughput,
    latencies: Vec<Duration>,
    failures: Vec<String>,
    cpu: CpuTime,
}

async fn measure(context: &Context) -> anyhow::Result<String> {
    let plan = Plan {
        rounds: context.pick(5, 1),
        slice: Duration::from_secs(context.pick(3, 1)),
        warmup: Duration::from_secs(context.pick(2, 1)),
        pgbench_seconds: context.pick(5, 1),
        check_for: Duration::from_millis(context.pick(1_000, 100)),
        over_streams: std::env::var(OVER_VAR).is_ok_and(|over| over == "stream"),
    };
    let auth = server::start_test_auth(&context.database_url).await?;
    let auth_url = format!("http://{}", auth.addr);
    let mut chat_config = chat::Config::for_tests(&auth_url);
    chat_config.database.url = context.database_url.clone().into();
    chat_config.database.max_connections = POOL_SIZE;
    let chat = server::start_chat(chat_config).await?;
    // No group: chat-send's conversations are direct.
    let gateway =
        server::start_gateway(server::gateway_config(auth.addr, chat.addr, chat.addr)).await?;

    let measured = measure_with(&auth, &gateway, plan).await;
    let stopped = [
        gateway
            .stop()
            .await
            .context("the gateway did not stop cleanly"),
        chat.stop().await.context("chat did not stop cleanly"),
        auth.stop().await.context("auth did not stop cleanly"),
    ];
    let (rounds, check) = measured?;
    for stop in stopped {
        stop?;
    }
    println!("pgbench: {}s per run", plan.pgbench_seconds);
    let reference = pgbench::measure(&context.database_url, plan.pgbench_seconds).await?;
    let ceiling = context.nproc as f64 / check.as_secs_f64().max(f64::EPSILON);
    let body = render(plan, &rounds, &reference, (check, ceiling));
    println!("\n{body}");
    Ok(body)
}

async fn measure_with(
    auth: &RunningServer,
    gateway: &RunningServer,
    plan: Plan,
) -> anyhow::Result<(Vec<Round>, Duration)> {
    println!("setup: {PAIRS} pairs of users, each with one keyed device, and their conversations");
    let pairs = Arc::new(set_up_pairs(auth, gateway).await?);
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(gateway.connect().await?);
    }

    let warmup_envelopes = seal_round(&pairs, 4_000, 0).await?;
    let warmup = closed_loop(&channels, &pairs, warmup_envelopes, plan).await;
    ensure!(
        warmup.throughput.count > 0,
        "no send succeeded during the warm-up: {:?}",
        warmup.failures.first()
    );
    let mut rate = warmup.throughput.per_second();
    println!("warm-up: {rate:.0} messages/s");

    let mut rounds = Vec::with_capacity(plan.rounds);
    for round in 1..=plan.rounds {
        // Twice what the last rate needs, so that a round never runs out.
        let wanted = (rate * plan.slice.as_secs_f64() * 2.0) as usize + CONCURRENCY;
        let envelopes = seal_round(&pairs, wanted.min(MAX_ENVELOPES_PER_ROUND), round).await?;
        let before = CpuSnapshot::take();
        let mut measured = closed_loop(
            &channels,
            &pairs,
            envelopes,
            Plan {
                warmup: plan.slice,
                ..plan
            },
        )
        .await;
        measured.cpu = before.until(&CpuSnapshot::take());
        rate = measured.throughput.per_second().max(1.0);
        let latencies = Latencies::new(measured.latencies.clone());
        println!(
            "  round {round}: {rate:.0} messages/s, p50 {}, p99 {}, {} failed",
            millis(latencies.median()),
            millis(latencies.percentile(99.0)),
            measured.failures.len()
        );
        rounds.push(measured);
    }
    let check = server_check_cost(&pairs[0], plan.check_for).await?;
    println!("the server's check of one envelope (signature included): {check:?}");
    Ok((rounds, check))
}

/// CPU time of the check chat makes of every send it stores, `e2ee::Envelope::verify_as_sent`
/// (recipient digest and Ed25519 `verify_strict`), on one thread over `duration` after the
/// rounds: it bounds what any code can reach on this machine, since every send needs one.
async fn server_check_cost(pair: &Pair, duration: Duration) -> anyhow::Result<Duration> {
    let sender = e2ee::Sender {
        user_id: &pair.sender.user_id,
        device_id: &pair.sender.device_id,
        keys: &pair.sender.keys,
    };
    let envelope = e2ee::seal(
        &sender,
        &pair.conversation_id,
        "check-cost",
        std::slice::from_ref(&pair.recipient),
        // The server does not follow chains: each envelope may be a first one.
        &e2ee::ChainPosition::first(0),
        &[b'x'; MESSAGE_BYTES],
    )?;
    let signing_key = pair.sender.keys.public_keys().signing_public_key;
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut checks = 0_u32;
        while start.elapsed() < duration {
            envelope.verify_as_sent(&signing_key)?;
            checks += 1;
        }
        Ok(start.elapsed() / checks.max(1))
    })
    .await?
}

/// Registers, logs in and keys two users per pair, and opens their conversation (directly at
/// the gateway, as clients would).
async fn set_up_pairs(auth: &RunningServer, gateway: &RunningServer) -> anyhow::Result<Vec<Pair>> {
    let rsa = e2ee::DeviceKeys::generate(RSA_BITS)?;
    let rsa_pkcs8 = rsa.encryption_pkcs8_der()?;
    let auth_client = AuthServiceClient::new(auth.connect().await?);
    let gateway_channel = gateway.connect().await?;
    let mut pairs = Vec::with_capacity(PAIRS);
    for index in 0..PAIRS {
        let sender =
            keyed_device(&auth_client, &format!("chat-send-{index}-a"), &rsa_pkcs8).await?;
        let peer = keyed_device(&auth_client, &format!("chat-send-{index}-b"), &rsa_pkcs8).await?;
        let mut chat = ChatServiceClient::new(gateway_channel.clone());
        let conversation = chat
            .open_direct_conversation(with_token(
                chat_pb::OpenDirectConversationRequest {
                    peer_user_id: peer.user_id.clone(),
                },
                &sender.token,
            ))
            .await
            .context("OpenDirectConversation")?
            .into_inner()
            .conversation
            .context("OpenDirectConversation answered no conversation")?;
        pairs.push(Pair {
            conversation_id: conversation.conversation_id,
            recipient: e2ee::RecipientDevice {
                device_id: peer.device_id.clone(),
                encryption_spki: peer.keys.public_keys().encryption_spki.clone(),
            },
            sender,
        });
    }
    Ok(pairs)
}

async fn keyed_device(
    auth: &AuthServiceClient<Channel>,
    username: &str,
    rsa_pkcs8: &[u8],
) -> anyhow::Result<SendingDevice> {
    let mut auth = auth.clone();
    auth.register(auth_pb::RegisterRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
        display_name: String::new(),
    })
    .await
    .context("Register")?;
    let login = auth
        .login(auth_pb::LoginRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            ..Default::default()
        })
        .await
        .context("Login")?
        .into_inner();
    let token = login.tokens.context("login without tokens")?.access_token;
    let signing = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let signing_pkcs8 = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&signing)?;
    let keys = e2ee::DeviceKeys::from_pkcs8_der(rsa_pkcs8, signing_pkcs8.as_bytes())?;
    auth.upload_device_keys(with_token(
        auth_pb::UploadDeviceKeysRequest {
            keys: Some(auth_pb::DeviceKeys {
                encryption_public_key: keys.public_keys().encryption_spki.clone(),
                signing_public_key: keys.public_keys().signing_public_key.to_vec(),
            }),
        },
        &token,
    ))
    .await
    .context("UploadDeviceKeys")?;
    Ok(SendingDevice {
        user_id: login.user.context("login without user")?.user_id,
        device_id: login.device.context("login without device")?.device_id,
        token,
        keys,
    })
}

/// `count` envelopes spread over the pairs, queued per pair, sealed on every CPU.
async fn seal_round(
    pairs: &Arc<Vec<Pair>>,
    count: usize,
    round: usize,
) -> anyhow::Result<Vec<Mutex<VecDeque<chat_pb::Envelope>>>> {
    let per_pair = count.div_ceil(PAIRS);
    let mut sealing = JoinSet::new();
    for index in 0..PAIRS {
        let pairs = pairs.clone();
        sealing.spawn_blocking(
            move || -> anyhow::Result<(usize, VecDeque<chat_pb::Envelope>)> {
                let pair = &pairs[index];
                let sender = e2ee::Sender {
                    user_id: &pair.sender.user_id,
                    device_id: &pair.sender.device_id,
                    keys: &pair.sender.keys,
                };
                let plaintext = vec![b'x'; MESSAGE_BYTES];
                let recipients = std::slice::from_ref(&pair.recipient);
                let mut envelopes = VecDeque::with_capacity(per_pair);
                for message in 0..per_pair {
                    let client_message_id = format!("r{round}-m{message}");
                    let envelope = e2ee::seal(
                        &sender,
                        &pair.conversation_id,
                        &client_message_id,
                        recipients,
                        // The server does not follow chains: each envelope may be a first one.
                        &e2ee::ChainPosition::first(0),
                        &plaintext,
                    )?;
                    envelopes.push_back(envelope.into());
                }
                Ok((index, envelopes))
            },
        );
    }
    let mut queues: Vec<Mutex<VecDeque<chat_pb::Envelope>>> =
        (0..PAIRS).map(|_| Mutex::new(VecDeque::new())).collect();
    while let Some(sealed) = sealing.join_next().await {
        let (index, envelopes) = sealed??;
        queues[index] = Mutex::new(envelopes);
    }
    Ok(queues)
}

/// The queue of envelopes of each pair.
type Envelopes = Arc<Vec<Mutex<VecDeque<chat_pb::Envelope>>>>;

/// What one sender measured: ack latencies and failures.
type Measured = (Vec<Duration>, Vec<String>);

/// Sends for `plan.warmup` (the length of this loop) in a closed loop, over SendMessage calls or
/// OpenStream (`plan.over_streams`).
async fn closed_loop(
    channels: &[Channel],
    pairs: &Arc<Vec<Pair>>,
    envelopes: Vec<Mutex<VecDeque<chat_pb::Envelope>>>,
    plan: Plan,
) -> Round {
    let envelopes = Arc::new(envelopes);
    let started = Instant::now();
    let deadline = started + plan.warmup;
    let mut workers = JoinSet::new();
    if plan.over_streams {
        for pair in 0..PAIRS {
            let channel = channels[pair % channels.len()].clone();
            let (pairs, envelopes) = (pairs.clone(), envelopes.clone());
            workers.spawn(stream_sender(channel, pairs, envelopes, pair, deadline));
        }
    } else {
        for worker in 0..CONCURRENCY {
            let channel = channels[worker % channels.len()].clone();
            let (pairs, envelopes) = (pairs.clone(), envelopes.clone());
            workers.spawn(unary_sender(channel, pairs, envelopes, worker, deadline));
        }
    }
    let mut round = Round {
        throughput: Throughput {
            count: 0,
            elapsed: Duration::ZERO,
        },
        latencies: Vec::new(),
        failures: Vec::new(),
        cpu: CpuTime::default(),
    };
    for (latencies, failures) in workers.join_all().await {
        round.latencies.extend(latencies);
        round.failures.extend(failures);
    }
    round.throughput = Throughput {
        count: round.latencies.len() as u64,
        elapsed: started.elapsed(),
    };
    round
}

/// Sends one OpenStream's worth: up to `CONCURRENCY / PAIRS` sends of `pair` in flight, each
/// answered by a SendResult (committed) or SendRejected, until `deadline`.
async fn stream_sender(
    channel: Channel,
    pairs: Arc<Vec<Pair>>,
    envelopes: Envelopes,
    pair: usize,
    deadline: Instant,
) -> Measured {
    use chat_pb::{open_stream_request::Request as Kind, open_stream_response::Response as Answer};
    let in_flight = (CONCURRENCY / PAIRS).max(1);
    let (mut latencies, mut failures) = (Vec::new(), Vec::new());
    let (requests, outgoing) = mpsc::channel(in_flight + 1);
    let start = chat_pb::OpenStreamRequest {
        request: Some(Kind::Start(chat_pb::StartStream { positions: vec![] })),
    };
    if requests.send(start).await.is_err() {
        return (latencies, failures);
    }
    let mut chat = ChatServiceClient::new(channel);
    let opened = chat
        .open_stream(with_token(
            ReceiverStream::new(outgoing),
            &pairs[pair].sender.token,
        ))
        .await;
    let mut answers = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => {
            failures.push(crate::clients::status_text(&status));
            return (latencies, failures);
        }
    };
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut next_id = 0_u64;
    loop {
        while pending.len() < in_flight && Instant::now() < deadline {
            let Some(envelope) = next_envelope(&envelopes, pair) else {
                break;
            };
            next_id += 1;
            let send = chat_pb::StreamSend {
                request_id: next_id.to_string(),
                envelope: Some(envelope),
            };
            pending.insert(send.request_id.clone(), Instant::now());
            let request = chat_pb::OpenStreamRequest {
                request: Some(Kind::Send(send)),
            };
            if requests.send(request).await.is_err() {
                failures.push("the stream closed its requests".to_owned());
                return (latencies, failures);
            }
        }
        if pending.is_empty() {
            return (latencies, failures);
        }
        match tokio::time::timeout(ANSWER_TIMEOUT, answers.message()).await {
            Ok(Ok(Some(answer))) => match answer.response {
                Some(Answer::SendResult(result)) => {
                    if let Some(sent) = pending.remove(&result.request_id) {
                        latencies.push(sent.elapsed());
                    }
                }
                Some(Answer::SendRejected(rejected)) => {
                    pending.remove(&rejected.request_id);
                    failures.push(format!("{}: {}", rejected.code, rejected.message));
                }
                // Events (the stream also delivers the conversation's messages): not timed.
                Some(Answer::Event(_)) | None => {}
            },
            Ok(Ok(None)) => {
                failures.push("the stream ended".to_owned());
                return (latencies, failures);
            }
            Ok(Err(status)) => {
                failures.push(crate::clients::status_text(&status));
                return (latencies, failures);
            }
            Err(_) => {
                failures.push(format!("no answer within {ANSWER_TIMEOUT:?}"));
                return (latencies, failures);
            }
        }
    }
}

/// The pair's next sealed envelope, if any is left.
fn next_envelope(envelopes: &Envelopes, pair: usize) -> Option<chat_pb::Envelope> {
    envelopes[pair]
        .lock()
        .ok()
        .and_then(|mut queue| queue.pop_front())
}

/// Sends `worker`'s pair's next envelope with SendMessage, one at a time, until `deadline`.
async fn unary_sender(
    channel: Channel,
    pairs: Arc<Vec<Pair>>,
    envelopes: Envelopes,
    worker: usize,
    deadline: Instant,
) -> Measured {
    let pair = worker % PAIRS;
    let token = pairs[pair].sender.token.clone();
    let mut chat = ChatServiceClient::new(channel);
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while Instant::now() < deadline {
        let Some(envelope) = next_envelope(&envelopes, pair) else {
            break;
        };
        let request = with_token(
            chat_pb::SendMessageRequest {
                envelope: Some(envelope),
            },
            &token,
        );
        let sent = Instant::now();
        match chat.send_message(request).await {
            Ok(_) => latencies.push(sent.elapsed()),
            Err(status) => failures.push(crate::clients::status_text(&status)),
        }
    }
    (latencies, failures)
}

/// CPU time per acknowledged message by consumer: the services' threads by name, PostgreSQL,
/// the load generator (the bench's other threads) and the rest of the machine.
fn render_cpu(out: &mut String, rounds: &[Round], sent: u64) {
    let mut cpu = CpuTime {
        machine: Some(Default::default()),
        ..CpuTime::default()
    };
    for round in rounds {
        cpu.add(&round.cpu);
    }
    let Some(machine) = cpu.machine else { return };
    let per_message = |seconds: f64| seconds / sent.max(1) as f64 * 1e6;
    let service = |prefix: &'static str| move |name: &str| name.starts_with(prefix);
    let rows: [(&str, f64); 5] = [
        ("gateway", cpu.consumed_by(service("gateway-"))),
        ("chat", cpu.consumed_by(service("chat-"))),
        ("auth", cpu.consumed_by(service("auth-"))),
        ("PostgreSQL", cpu.consumed_by(|name| name == cpu::POSTGRES)),
        (
            "load generator (the bench's other threads)",
            cpu.consumed_by(|name| {
                !["gateway-", "chat-", "auth-"]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
                    && name != cpu::POSTGRES
            }),
        ),
    ];
    let accounted: f64 = rows.iter().map(|(_, seconds)| seconds).sum();
    let _ = write!(
        out,
        "\nCPU time per acknowledged message during the rounds, by consumer (from /proc, in 10 ms \
         ticks):\n\n| Consumer | CPU per message |\n|---|---|\n"
    );
    for (name, seconds) in rows {
        let _ = writeln!(out, "| {name} | {:.0} µs |", per_message(seconds));
    }
    let _ = writeln!(
        out,
        "| rest of the machine (kernel, other processes) | {:.0} µs |\n| **whole machine** | {:.0} µs |\n\nCPUs busy: {}.",
        per_message((machine.busy - accounted).max(0.0)),
        per_message(machine.busy),
        percent(machine.busy_share()),
    );
}

fn render(
    plan: Plan,
    rounds: &[Round],
    reference: &pgbench::Reference,
    (check, ceiling): (Duration, f64),
) -> String {
    let sent: u64 = rounds.iter().map(|round| round.throughput.count).sum();
    let elapsed: Duration = rounds.iter().map(|round| round.throughput.elapsed).sum();
    let overall = Throughput {
        count: sent,
        elapsed,
    };
    let latencies = Latencies::new(
        rounds
            .iter()
            .flat_map(|round| round.latencies.iter().copied())
            .collect(),
    );
    let failures: Vec<&String> = rounds.iter().flat_map(|round| &round.failures).collect();
    let rate = overall.per_second();
    let share_of_batched = rate / reference.batched_rows_per_second;
    let verdict = |pass: bool| if pass { "PASS" } else { "FAIL" };
    let (over, load) = if plan.over_streams {
        (
            "sends on OpenStream",
            format!(
                "one OpenStream per conversation with {} sends in flight on each, {CONCURRENCY} \
                 in all (`{OVER_VAR}=stream`)",
                CONCURRENCY / PAIRS
            ),
        )
    } else {
        (
            "SendMessage calls",
            format!("{CONCURRENCY} SendMessage calls in flight"),
        )
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "auth, chat and the gateway ran in-process, each on its own tokio runtime with one worker \
         per CPU, with their production settings (chat: group commit window \
         `CHAT_COMMIT_WINDOW_MICROS` and batch limit at their defaults, a pool of 10 connections), \
         no log output. {PAIRS} direct conversations; in each, one device sends real envelopes \
         ({MESSAGE_BYTES}-byte plaintext, sealed with `e2ee` before each round, RSA-{RSA_BITS} \
         wrapping for the peer's one device, Ed25519 signature) through the gateway. The load \
         generator (a tonic client, {CONNECTIONS} HTTP/2 connections to the gateway, \
         {load}, closed loop) shares the 2 CPUs with the services and \
         PostgreSQL. {rounds} rounds of {slice:?}. An answer is the ack: the message is \
         committed.\n\n\
         | Measurement | Result |\n|---|---|\n\
         | Durable acknowledged messages/s through the gateway, {over} | **{rate:.0}/s** ({sent} in {elapsed:.1} s; {failed} failed) |\n\
         | Ack latency under load, p50 / p99 / p99.9 | {p50} / {p99} / {p999} |\n\
         | pgbench, single-row inserts, 32 clients | {single:.0} rows/s |\n\
         | pgbench, 50-row batches, 32 clients | {batched:.0} rows/s |\n\
         | pgbench, one client, one single-row commit | {commit} |\n\
         | Goal: at least {goal_share} of the batched rate | {share} — **{verdict_share}** |\n\
         | Goal: never below the single-row rate | {single_ratio} of it — **{verdict_single}** |\n\
         | The server's check of one envelope (`verify_as_sent`: recipient digest, Ed25519 \
         `verify_strict`), one CPU | {check:.1} µs |\n\
         | Envelopes all CPUs could check per second if they did nothing else | {ceiling:.0}/s ({ceiling_share} of the batched rate) |\n\n",
        rounds = plan.rounds,
        slice = plan.slice,
        sent = sent,
        elapsed = elapsed.as_secs_f64(),
        failed = failures.len(),
        p50 = millis(latencies.median()),
        p99 = millis(latencies.percentile(99.0)),
        p999 = millis(latencies.percentile(99.9)),
        single = reference.single_rows_per_second,
        batched = reference.batched_rows_per_second,
        commit = millis(reference.one_commit),
        goal_share = percent(GOAL_SHARE_OF_BATCHED),
        share = percent(share_of_batched),
        verdict_share = verdict(share_of_batched >= GOAL_SHARE_OF_BATCHED),
        single_ratio = percent(rate / reference.single_rows_per_second),
        verdict_single = verdict(rate >= reference.single_rows_per_second),
        check = check.as_secs_f64() * 1e6,
        ceiling_share = percent(ceiling / reference.batched_rows_per_second),
    );
    out.push_str("| Round | Messages/s | p50 | p99 | Failed |\n|---|---|---|---|---|\n");
    for (index, round) in rounds.iter().enumerate() {
        let latencies = Latencies::new(round.latencies.clone());
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} |",
            index + 1,
            round.throughput.per_second(),
            millis(latencies.median()),
            millis(latencies.percentile(99.0)),
            round.failures.len()
        );
    }
    if let Some(first) = failures.first() {
        let _ = writeln!(out, "\nFirst failure: `{first}`");
    }
    render_cpu(&mut out, rounds, sent);
    let _ = write!(
        out,
        "\npgbench ran right after the rounds against the same PostgreSQL, on a table shaped like \
         a message row (uuid, bigint, {payload}-byte bytea), {seconds} s per run:\n\n```\n{scripts}```\n",
        payload = pgbench::PAYLOAD_BYTES,
        seconds = plan.pgbench_seconds,
        scripts = pgbench::describe(),
    );
    out
}
