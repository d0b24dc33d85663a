//! Fault 6, the reconnect storm: thousands of streams through the Ingress, each following a group
//! conversation that gets messages, all cut at once by a `kill -9` of the gateway, which then
//! starts again. Every stream reconnects with the client library's backoff and jitter
//! ([`client::Backoff`]) and resumes from its cursor (the last sequence it received, sent as its
//! `positions`), as `Live` does. Meanwhile a separate client calls unary RPCs through the same
//! Ingress at a steady rate.
//!
//! What must hold: every stream resumes (caught up again) within [`RESUME_BOUND`] of the restart;
//! every stream shows every stored message of its conversation exactly once, in order, with no gap
//! (nothing lost across the cut, nothing replayed twice at the switch from replay to live); every
//! acknowledged send is stored once (the ledger's audit); every failure anyone saw is UNAVAILABLE
//! (as the client library maps statuses); the probe's calls after the restart all succeed, and
//! their p99 during the storm stays within [`PROBE_P99_BOUND`].
//!
//! Scale: `FAULTS_STORM_STREAMS` streams (default [`DEFAULT_STREAMS`], the 5,000, what
//! CI runs; `FAULTS.md` has the figures), [`STREAMS_PER_DEVICE`] per device (under chat's 16, so that a stream whose
//! end a replica has not noticed yet does not refuse the new one), [`DEVICES_PER_USER`] devices
//! per user, [`USERS_PER_GROUP`] users per group conversation. `FAULTS_STORM_VIA=gateway` connects
//! the clients straight to the gateway instead of through nginx.
//!
//! Devices are made the way the bench makes them (`bench/src/clients/setup.rs`): registered and
//! logged in at auth directly (auth's real argon2 hashing; the gateway's login rate limit is per
//! client address, and every test client shares 127.0.0.1), keys uploaded, one RSA key shared by
//! every receiving device (generating one each would take longer than the test). The streams are
//! raw gRPC (`OpenStream` and `Subscribe`, half each), one HTTP/2 connection per device: they
//! check sequences, not plaintext (opening thousands of envelopes would take the CPUs from the
//! services; the other fault tests open and check every message they show). The one sender is a
//! library [`Session`], member of every group, sending with `send_prepared` and retrying
//! UNAVAILABLE with the same envelope.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use client::{Backoff, Session, Target};
use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::{self as pb, chat_service_client::ChatServiceClient, stream_event::Event},
    group::v1::{self as group_pb, group_service_client::GroupServiceClient},
};
use sqlx::{Connection, PgConnection};
use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::JoinSet,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::{
    accounts::{PASSWORD, register_and_log_in},
    clients::{error_status, send_until_settled},
    cluster::{Cluster, Deadline},
    ledger::{Followed, Ledger},
    postgres::Postgres,
    stack::scratch,
    traffic::paced,
};

/// Streams in a CI run (`FAULTS_STORM_STREAMS` overrides).
const DEFAULT_STREAMS: usize = 5000;
const STREAMS_PER_DEVICE: usize = 10;
const DEVICES_PER_USER: usize = 4;
const USERS_PER_GROUP: usize = 5;
/// Messages delivered per second over all streams: each group conversation gets one message every
/// `streams / DELIVERIES_PER_SECOND` seconds (2 s for 1,000 streams, 10 s for 5,000), so that the
/// load besides the storm is the same at every scale.
const DELIVERIES_PER_SECOND: usize = 500;
/// Setup calls to auth at once (auth hashes 2 passwords at a time).
const SETUP_CONCURRENCY: usize = 8;
/// Streams opening at once before the fault (the first opening is not what is measured).
const OPEN_CONCURRENCY: usize = 64;
/// How long every stream may take to be open and caught up before the fault.
const OPEN_TIMEOUT: Duration = Duration::from_secs(150);
/// Traffic before and after the fault.
const TRAFFIC: Duration = Duration::from_secs(5);
/// The probe's calls per second (alternately chat's ListConversations and group's ListMyGroups,
/// each started on time whether the previous ones answered or not), and each call's deadline.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Every stream must be caught up again within this of the gateway's restart (its `/readyz`
/// answering 200 and its connections to both chat replicas up). Measured: see `FAULTS.md`.
const RESUME_BOUND: Duration = Duration::from_secs(30);
/// The probe's p99 during the storm (from the restart until every stream resumed) may be at most
/// this; it is printed beside its p99 before. Measured at 5,000 streams on the development VM:
/// 5.4-5.7 s, against 0.03 s before (`FAULTS.md`).
const PROBE_P99_BOUND: Duration = Duration::from_secs(10);
/// How long the streams may take to show every stored message once the sender stopped.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reconnect_storm_of_every_stream_through_the_gateway_loses_nothing() {
    let streams: usize = std::env::var("FAULTS_STORM_STREAMS")
        .ok()
        .map_or(DEFAULT_STREAMS, |n| {
            n.parse().expect("FAULTS_STORM_STREAMS")
        });
    let via_nginx = std::env::var("FAULTS_STORM_VIA").as_deref() != Ok("gateway");
    raise_open_files_limit(streams);

    let scratch = scratch();
    let postgres = Postgres::start(scratch.path()).await;
    let mut cluster = Cluster::start(scratch.path(), &postgres.url()).await;
    let server = if via_nginx {
        cluster.server()
    } else {
        format!("http://{}", cluster.gateway)
    };
    let setup = Instant::now();
    let world = World::set_up(&cluster, &server, scratch.path(), streams).await;
    eprintln!(
        "{} users, {} devices, {} groups set up in {:.1} s",
        world.devices.len() / DEVICES_PER_USER,
        world.devices.len(),
        world.targets.len(),
        setup.elapsed().as_secs_f64()
    );

    // Whole devices of whole users: at least the streams asked for.
    let streams = world.devices.len() * STREAMS_PER_DEVICE;
    let (stop, stopped) = watch::channel(false);
    let ledger = Arc::new(Ledger::default());
    let mut tasks = JoinSet::new();
    // One device sends one message at a time (the library's sending turn): one loop over the
    // groups in turn, each getting a message every `streams / DELIVERIES_PER_SECOND` seconds.
    let n_groups = world.targets.len();
    let send_interval =
        Duration::from_micros((streams * 1_000_000 / DELIVERIES_PER_SECOND / n_groups) as u64)
            .max(Duration::from_millis(100));
    let (session, targets, record) = (world.sender.clone(), world.targets.clone(), ledger.clone());
    tasks.spawn(paced(send_interval, stopped.clone(), move |n| {
        let target = targets[n as usize % targets.len()].clone();
        let (session, ledger) = (session.clone(), record.clone());
        async move {
            let (id, text) = (uuid::Uuid::new_v4().to_string(), format!("sender {n}"));
            ledger.sending(&target.conversation_id, &id, &text);
            send_until_settled(&session, &target, &ledger, id, &text).await;
        }
    }));

    let opening = Instant::now();
    let book = Arc::new(Book::default());
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    for device in &world.devices {
        let channel = Endpoint::from_shared(server.clone())
            .unwrap()
            .connect_lazy();
        for index in 0..STREAMS_PER_DEVICE {
            let stream = book.add(&device.conversation_id);
            let follower = Follower {
                kind: if index % 2 == 0 {
                    Kind::OpenStream
                } else {
                    Kind::Subscribe
                },
                chat: ChatServiceClient::new(channel.clone()),
                token: device.token.clone(),
                conversation_id: device.conversation_id.clone(),
                book: book.clone(),
                stream,
            };
            tasks.spawn(follower.run(gate.clone()));
        }
    }
    let deadline = Deadline::after(OPEN_TIMEOUT, "every stream to open and catch up");
    while book.n_caught_up_since(opening) < streams {
        deadline.tick().await;
    }
    eprintln!(
        "{streams} streams open and caught up in {:.1} s, through {}",
        opening.elapsed().as_secs_f64(),
        if via_nginx { "nginx" } else { "the gateway" }
    );

    let probe = Arc::new(Probe::default());
    tasks.spawn(probe.clone().run(world.probe.clone(), server.clone()));
    let before = Usage::sample(&cluster);
    tokio::time::sleep(TRAFFIC).await;
    let killed = Instant::now();
    let during_before = Usage::sample(&cluster);

    // The fault: kill -9, start again (nginx stays up in front, as the Ingress does).
    cluster.kill_and_restart_gateway().await;
    let restarted = Instant::now();
    let (peaks, sampling) = watch_usage(&cluster);
    // Not a panic at the bound: the report says how many resumed, and where the time went.
    let deadline = restarted + RESUME_BOUND;
    while book.n_caught_up_since(killed) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_resumed = Instant::now();
    sampling.abort();
    let after = Usage::sample(&cluster);
    tokio::time::sleep(TRAFFIC).await;

    stop.send(true).unwrap();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while ledger.n_unsettled() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = stored_per_conversation(&postgres.url(), &world.targets).await;
    while !book.all_shown(&stored) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let followed: Vec<Followed> = world
        .targets
        .iter()
        .map(|target| Followed {
            conversation_id: target.conversation_id.clone(),
            followers: Vec::new(),
        })
        .collect();
    let sends = ledger
        .audit("storm", &postgres.url(), &followed, restarted)
        .await;
    tasks.abort_all();

    let report = Report {
        streams,
        via_nginx,
        resumed: book.resume_times(killed, restarted),
        breakdown: book.resume_breakdown(killed),
        probe_outage: probe.calls_between(killed, restarted),
        down: restarted - killed,
        all_resumed: all_resumed - restarted,
        audit: book.audit(&stored),
        stream_failures: book.failures(),
        probe_before: probe.latencies(killed - TRAFFIC, killed),
        probe_during: probe.latencies(restarted, all_resumed),
        probe_failures_outage: probe.failures(killed, restarted),
        probe_failures_after: probe.failures(restarted, Instant::now()),
        usage: (before, during_before, peaks.lock().unwrap().clone(), after),
        storm_seconds: (all_resumed - killed).as_secs_f64(),
        sends_acknowledged: sends.acknowledged,
        send_failures: sends.failures.clone(),
    };
    eprintln!("{report}");
    cluster.stop().await;

    assert!(
        sends.problems.is_empty() && sends.lost == 0 && sends.duplicated == 0,
        "the senders' audit failed:\n{}",
        sends.problems.join("\n")
    );
    report.assert_clean();
}

/// What the test set up: the receiving devices, the groups, the sender and the probe's device.
struct World {
    devices: Vec<Device>,
    targets: Vec<Target>,
    sender: Arc<Session>,
    probe: Device,
}

/// A logged-in device following one conversation.
#[derive(Clone)]
struct Device {
    token: String,
    conversation_id: String,
}

impl World {
    async fn set_up(
        cluster: &Cluster,
        server: &str,
        scratch: &std::path::Path,
        streams: usize,
    ) -> Self {
        let n_devices = streams.div_ceil(STREAMS_PER_DEVICE);
        let n_users = n_devices.div_ceil(DEVICES_PER_USER);
        let n_groups = n_users.div_ceil(USERS_PER_GROUP);
        let client_server = client::Server::new(server, None).unwrap();
        let sender = register_and_log_in(
            &client_server,
            scratch,
            &["storm-sender"],
            &[("storm-sender", "storm-sender")],
        )
        .await
        .remove(0);
        // One RSA key for every receiving device: they never decrypt.
        let keys = tokio::task::spawn_blocking(|| e2ee::DeviceKeys::generate(2048).unwrap())
            .await
            .unwrap();
        let public = keys.public_keys().clone();
        let auth = Endpoint::from_shared(format!("http://{}", cluster.auth))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let mut registering = JoinSet::new();
        for user in 0..=n_users {
            let (auth, gate, public) = (auth.clone(), gate.clone(), public.clone());
            // The last user is the probe's, with one device and no group.
            let devices = if user == n_users { 1 } else { DEVICES_PER_USER };
            registering.spawn(async move {
                let username = format!("storm-{user}");
                let mut auth = AuthServiceClient::new(auth);
                let permit = gate.acquire().await.unwrap();
                auth.register(auth_pb::RegisterRequest {
                    username: username.clone(),
                    password: PASSWORD.to_owned(),
                    display_name: String::new(),
                })
                .await
                .unwrap();
                drop(permit);
                let mut tokens = Vec::new();
                for _ in 0..devices {
                    let _permit = gate.acquire().await.unwrap();
                    tokens.push(log_in(&mut auth, &username, &public).await);
                }
                (user, username, tokens)
            });
        }
        let mut users: Vec<(usize, String, Vec<String>)> = registering.join_all().await;
        users.sort_by_key(|(user, ..)| *user);
        let (_, _, probe_tokens) = users.pop().unwrap();
        let mut targets = Vec::new();
        let mut devices = Vec::new();
        for (group, members) in users.chunks(USERS_PER_GROUP).enumerate() {
            let name = format!("storm-{group}");
            let usernames: Vec<String> = members.iter().map(|(_, name, _)| name.clone()).collect();
            sender.create_group(&name, &usernames).await.unwrap();
            let target = sender.resolve(&format!("#{name}")).await.unwrap();
            for (_, _, tokens) in members {
                devices.extend(tokens.iter().map(|token| Device {
                    token: token.clone(),
                    conversation_id: target.conversation_id.clone(),
                }));
            }
            targets.push(target);
        }
        assert_eq!(targets.len(), n_groups);
        Self {
            devices,
            targets,
            sender,
            probe: Device {
                token: probe_tokens[0].clone(),
                conversation_id: String::new(),
            },
        }
    }
}

/// Logs `username` in as a new device and uploads `keys` for it; returns its access token.
async fn log_in(
    auth: &mut AuthServiceClient<Channel>,
    username: &str,
    keys: &e2ee::PublicDeviceKeys,
) -> String {
    let login = auth
        .login(auth_pb::LoginRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = login.tokens.unwrap().access_token;
    let request = auth_pb::UploadDeviceKeysRequest {
        keys: Some(auth_pb::DeviceKeys {
            encryption_public_key: keys.encryption_spki.clone(),
            signing_public_key: keys.signing_public_key.to_vec(),
        }),
    };
    auth.upload_device_keys(authorized(request, &token))
        .await
        .unwrap();
    token
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Which call a stream uses.
#[derive(Clone, Copy)]
enum Kind {
    OpenStream,
    Subscribe,
}

/// One stream, reconnecting after every drop as the client library does.
struct Follower {
    kind: Kind,
    chat: ChatServiceClient<Channel>,
    token: String,
    conversation_id: String,
    book: Arc<Book>,
    stream: usize,
}

impl Follower {
    /// Opens the stream (the first time only with a permit of `gate`), reads it, and after a drop
    /// waits the library's jittered backoff and opens it again from its cursor. Never returns.
    async fn run(mut self, gate: Arc<Semaphore>) {
        let permit = gate.acquire_owned().await.unwrap();
        let mut permit = Some(permit);
        let mut backoff = Backoff::new();
        loop {
            let (caught_up, status) = self.once(&mut permit).await;
            drop(permit.take());
            if caught_up {
                backoff.reset();
            }
            self.book.failed(self.stream, status);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One stream until it drops: whether it caught up, and the status it ended with (as the
    /// client library maps statuses).
    async fn once(
        &mut self,
        permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> (bool, String) {
        self.book.attempt(self.stream);
        let positions = vec![pb::ConversationPosition {
            conversation_id: self.conversation_id.clone(),
            sequence: self.book.cursor(self.stream),
        }];
        // OpenStream's request side: the start, then nothing (kept open while reading).
        let (requests, outgoing) = mpsc::channel(1);
        let opened = match self.kind {
            Kind::OpenStream => {
                let start = pb::OpenStreamRequest {
                    request: Some(pb::open_stream_request::Request::Start(pb::StartStream {
                        positions,
                    })),
                };
                requests.send(start).await.unwrap();
                let request = authorized(ReceiverStream::new(outgoing), &self.token);
                self.chat.open_stream(request).await.map(|response| {
                    let stream = response.into_inner();
                    Box::pin(futures::StreamExt::map(stream, |item| {
                        item.map(|response| match response.response {
                            Some(pb::open_stream_response::Response::Event(event)) => Some(event),
                            _ => None,
                        })
                    })) as EventStream
                })
            }
            Kind::Subscribe => {
                let request = authorized(pb::SubscribeRequest { positions }, &self.token);
                self.chat.subscribe(request).await.map(|response| {
                    let stream = response.into_inner();
                    Box::pin(futures::StreamExt::map(stream, |item| {
                        item.map(|response| response.event)
                    })) as EventStream
                })
            }
        };
        let mut events = match opened {
            Ok(events) => {
                self.book.opened(self.stream);
                events
            }
            Err(status) => return (false, error_status(&status.into())),
        };
        let mut caught_up = false;
        loop {
            let event = match futures::StreamExt::next(&mut events).await {
                Some(Ok(event)) => event,
                Some(Err(status)) => return (caught_up, error_status(&status.into())),
                None => return (caught_up, "ENDED WITHOUT A STATUS".to_owned()),
            };
            match event.and_then(|event| event.event) {
                Some(Event::Message(message)) => {
                    self.book
                        .shown(self.stream, &message.conversation_id, message.sequence);
                }
                Some(Event::CaughtUp(_)) => {
                    caught_up = true;
                    drop(permit.take());
                    self.book.caught_up(self.stream);
                }
                _ => {}
            }
        }
        // `requests` lives until here, keeping OpenStream's request side open.
    }
}

type EventStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<Option<pb::StreamEvent>, tonic::Status>> + Send>,
>;

/// What every stream showed and when it caught up.
#[derive(Default)]
struct Book {
    streams: Mutex<Vec<StreamLog>>,
}

struct StreamLog {
    conversation_id: String,
    /// Sequences shown, in arrival order (a message of another conversation would be a server
    /// bug: recorded as sequence 0, which no message has).
    shown: Vec<u64>,
    caught_up: Vec<Instant>,
    /// Every attempt to open the stream: when it started, when the server's response headers
    /// arrived (the gateway and chat accepted it), when it ended.
    attempts: Vec<Attempt>,
    /// Drops and failed attempts, by status.
    failures: BTreeMap<String, usize>,
}

#[derive(Clone, Copy)]
struct Attempt {
    started: Instant,
    opened: Option<Instant>,
    ended: Option<Instant>,
}

/// The audit of every stream.
#[derive(Debug, Default)]
struct StreamAudit {
    shown: usize,
    lost: usize,
    duplicated: usize,
    out_of_order: usize,
    problems: Vec<String>,
}

impl Book {
    fn add(&self, conversation_id: &str) -> usize {
        let mut streams = self.streams.lock().unwrap();
        streams.push(StreamLog {
            conversation_id: conversation_id.to_owned(),
            shown: Vec::new(),
            caught_up: Vec::new(),
            attempts: Vec::new(),
            failures: BTreeMap::new(),
        });
        streams.len() - 1
    }

    /// The last sequence `stream` showed: where it resumes.
    fn cursor(&self, stream: usize) -> u64 {
        let streams = self.streams.lock().unwrap();
        streams[stream].shown.iter().copied().max().unwrap_or(0)
    }

    fn shown(&self, stream: usize, conversation_id: &str, sequence: u64) {
        let mut streams = self.streams.lock().unwrap();
        let log = &mut streams[stream];
        let sequence = if log.conversation_id == conversation_id {
            sequence
        } else {
            0
        };
        log.shown.push(sequence);
    }

    fn caught_up(&self, stream: usize) {
        self.streams.lock().unwrap()[stream]
            .caught_up
            .push(Instant::now());
    }

    fn attempt(&self, stream: usize) {
        self.streams.lock().unwrap()[stream].attempts.push(Attempt {
            started: Instant::now(),
            opened: None,
            ended: None,
        });
    }

    fn opened(&self, stream: usize) {
        if let Some(attempt) = self.streams.lock().unwrap()[stream].attempts.last_mut() {
            attempt.opened = Some(Instant::now());
        }
    }

    /// Where the time to resume went, over the streams' first attempt after `killed` that
    /// caught up: when it started after `killed`; from its start to the server's response
    /// headers; from those to the end of the replay (caught up). And how many attempts each
    /// stream made after `killed`, at most.
    fn resume_breakdown(&self, killed: Instant) -> ([Vec<Duration>; 3], usize) {
        let streams = self.streams.lock().unwrap();
        let mut parts: [Vec<Duration>; 3] = Default::default();
        let mut most_attempts = 0;
        for log in streams.iter() {
            let after: Vec<&Attempt> = log
                .attempts
                .iter()
                .filter(|attempt| attempt.started > killed)
                .collect();
            most_attempts = most_attempts.max(after.len());
            let Some(caught_up) = log.caught_up.iter().find(|at| **at > killed) else {
                continue;
            };
            let Some(attempt) = after
                .iter()
                .rev()
                .find(|attempt| attempt.started < *caught_up)
            else {
                continue;
            };
            let opened = attempt.opened.unwrap_or(*caught_up);
            parts[0].push(attempt.started - killed);
            parts[1].push(opened - attempt.started);
            parts[2].push(*caught_up - opened);
        }
        for part in &mut parts {
            part.sort_unstable();
        }
        (parts, most_attempts)
    }

    fn failed(&self, stream: usize, status: String) {
        if let Some(attempt) = self.streams.lock().unwrap()[stream].attempts.last_mut() {
            attempt.ended = Some(Instant::now());
        }
        *self.streams.lock().unwrap()[stream]
            .failures
            .entry(status)
            .or_default() += 1;
    }

    /// Streams that caught up after `since`.
    fn n_caught_up_since(&self, since: Instant) -> usize {
        let streams = self.streams.lock().unwrap();
        streams
            .iter()
            .filter(|log| log.caught_up.last().is_some_and(|at| *at > since))
            .count()
    }

    /// For each stream, from `restarted` until it first caught up after `killed` (zero when it
    /// did before the restart was complete).
    fn resume_times(&self, killed: Instant, restarted: Instant) -> Vec<Duration> {
        let streams = self.streams.lock().unwrap();
        let mut times: Vec<Duration> = streams
            .iter()
            .filter_map(|log| log.caught_up.iter().find(|at| **at > killed))
            .map(|at| at.saturating_duration_since(restarted))
            .collect();
        times.sort_unstable();
        times
    }

    /// Whether every stream showed the last stored message of its conversation.
    fn all_shown(&self, stored: &HashMap<String, (u64, u64)>) -> bool {
        let streams = self.streams.lock().unwrap();
        streams.iter().all(|log| {
            let last = stored
                .get(&log.conversation_id)
                .map_or(0, |(_, last)| *last);
            log.shown.last().copied().unwrap_or(0) >= last
        })
    }

    /// Every stream against what its conversation stored (count, last sequence).
    fn audit(&self, stored: &HashMap<String, (u64, u64)>) -> StreamAudit {
        let streams = self.streams.lock().unwrap();
        let mut audit = StreamAudit::default();
        for (conversation, (count, last)) in stored {
            if count != last {
                audit.problems.push(format!(
                    "{conversation}: {count} messages stored up to sequence {last}: a gap"
                ));
            }
        }
        for (index, log) in streams.iter().enumerate() {
            let last = stored
                .get(&log.conversation_id)
                .map_or(0, |(_, last)| *last);
            let mut unique = log.shown.clone();
            unique.sort_unstable();
            unique.dedup();
            let missing = (1..=last)
                .filter(|sequence| unique.binary_search(sequence).is_err())
                .count();
            let twice = log.shown.len() - unique.len();
            let strays = unique.iter().filter(|s| **s == 0 || **s > last).count();
            let in_order = log.shown.is_sorted();
            audit.shown += log.shown.len();
            audit.lost += missing;
            audit.duplicated += twice;
            audit.out_of_order += usize::from(!in_order);
            if (missing > 0 || twice > 0 || strays > 0 || !in_order) && audit.problems.len() < 20 {
                audit.problems.push(format!(
                    "stream {index} in {}: {missing} of 1..={last} missing, {twice} shown twice, \
                     {strays} not stored there, in order: {in_order}",
                    log.conversation_id
                ));
            }
        }
        audit
    }

    /// Drops and failed attempts of every stream, by status.
    fn failures(&self) -> BTreeMap<String, usize> {
        let streams = self.streams.lock().unwrap();
        let mut all = BTreeMap::new();
        for log in streams.iter() {
            for (status, n) in &log.failures {
                *all.entry(status.clone()).or_default() += n;
            }
        }
        all
    }
}

/// Messages stored per conversation: count and last sequence.
async fn stored_per_conversation(
    database_url: &str,
    targets: &[Target],
) -> HashMap<String, (u64, u64)> {
    let mut db = PgConnection::connect(database_url).await.unwrap();
    let ids: Vec<uuid::Uuid> = targets
        .iter()
        .map(|target| target.conversation_id.parse().unwrap())
        .collect();
    let rows: Vec<(uuid::Uuid, i64, i64)> = sqlx::query_as(
        "select conversation_id, count(*), max(sequence) from chat.messages
         where conversation_id = any($1) group by conversation_id",
    )
    .bind(&ids)
    .fetch_all(&mut db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, count, last)| (id.to_string(), (count as u64, last as u64)))
        .collect()
}

/// A client calling unary RPCs through the Ingress at a steady rate, beside the storm.
#[derive(Default)]
struct Probe {
    /// When each call started, how long it took, and its status (`None`: success).
    calls: Mutex<Vec<(Instant, Duration, Option<String>)>>,
}

impl Probe {
    async fn run(self: Arc<Self>, device: Device, server: String) {
        let channel = Endpoint::from_shared(server).unwrap().connect_lazy();
        let chat = ChatServiceClient::new(channel.clone());
        let groups = GroupServiceClient::new(channel);
        let mut interval = tokio::time::interval(PROBE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Open loop: a call every interval, whether the previous ones have answered or not (a
        // slow answer must not thin out the samples taken while the services are slow).
        for n in 0u64.. {
            interval.tick().await;
            let (probe, chat, groups, token) = (
                self.clone(),
                chat.clone(),
                groups.clone(),
                device.token.clone(),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let call = async {
                    if n % 2 == 0 {
                        let request = pb::ListConversationsRequest::default();
                        let mut chat = chat;
                        chat.list_conversations(authorized(request, &token))
                            .await
                            .map(drop)
                    } else {
                        let request = group_pb::ListMyGroupsRequest::default();
                        let mut groups = groups;
                        groups
                            .list_my_groups(authorized(request, &token))
                            .await
                            .map(drop)
                    }
                };
                let outcome = match tokio::time::timeout(PROBE_TIMEOUT, call).await {
                    Ok(Ok(())) => None,
                    Ok(Err(status)) => Some(error_status(&status.into())),
                    Err(_) => Some("TIMED OUT (client)".to_owned()),
                };
                probe
                    .calls
                    .lock()
                    .unwrap()
                    .push((started, started.elapsed(), outcome));
            });
        }
    }

    /// The calls started between `from` and `to`: start after `from`, latency, outcome.
    fn calls_between(
        &self,
        from: Instant,
        to: Instant,
    ) -> Vec<(Duration, Duration, Option<String>)> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(at, ..)| *at >= from && *at < to)
            .map(|(at, latency, outcome)| (*at - from, *latency, outcome.clone()))
            .collect()
    }

    /// The latencies of the successful calls started between `from` and `to`, sorted.
    fn latencies(&self, from: Instant, to: Instant) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        let mut latencies: Vec<Duration> = calls
            .iter()
            .filter(|(at, _, outcome)| *at >= from && *at < to && outcome.is_none())
            .map(|(_, latency, _)| *latency)
            .collect();
        latencies.sort_unstable();
        latencies
    }

    /// Failed calls started between `from` and `to`, by status.
    fn failures(&self, from: Instant, to: Instant) -> BTreeMap<String, usize> {
        let calls = self.calls.lock().unwrap();
        let mut failures = BTreeMap::new();
        for (at, _, outcome) in calls.iter() {
            if let Some(status) = outcome
                && *at >= from
                && *at < to
            {
                *failures.entry(status.clone()).or_default() += 1;
            }
        }
        failures
    }
}

/// Resident memory (MiB) and CPU time (s) of the gateway and each chat replica.
#[derive(Clone, Debug, Default)]
struct Usage(BTreeMap<String, (f64, f64)>);

impl Usage {
    fn sample(cluster: &Cluster) -> Self {
        Self(
            cluster
                .gateway_and_chat_pids()
                .into_iter()
                .map(|(name, pid)| (name, (rss_mib(pid), cpu_seconds(pid))))
                .collect(),
        )
    }
}

/// Samples every 100 ms until aborted; keeps each process's highest RSS.
fn watch_usage(cluster: &Cluster) -> (Arc<Mutex<Usage>>, tokio::task::JoinHandle<()>) {
    let pids = cluster.gateway_and_chat_pids();
    let peaks = Arc::new(Mutex::new(Usage::default()));
    let record = peaks.clone();
    let task = tokio::spawn(async move {
        loop {
            for (name, pid) in &pids {
                let rss = rss_mib(*pid);
                let mut peaks = record.lock().unwrap();
                let entry = peaks.0.entry(name.clone()).or_default();
                entry.0 = entry.0.max(rss);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (peaks, task)
}

fn rss_mib(pid: u32) -> f64 {
    let kib = testkit::rss_bytes(pid) / 1024;
    u32::try_from(kib).map_or(f64::MAX, f64::from) / 1024.0
}

/// User plus system CPU time of `pid` (`/proc/<pid>/stat` fields 14 and 15, in clock ticks of
/// 1/100 s, Linux's `USER_HZ`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    // Field 3 (state) is rest's index 0, so fields 14 and 15 are 11 and 12.
    ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)
}

/// Raises this process's soft limit of open files towards what the streams need (the services
/// it starts inherit it): one connection per device here, and through nginx one upstream
/// connection per stream there.
fn raise_open_files_limit(streams: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let needed = (2 * streams + 2048) as u64;
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current.unwrap_or(u64::MAX), limit.maximum);
    if soft >= needed {
        return;
    }
    let raised = hard.map_or(needed, |hard| hard.min(needed));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(raised),
            maximum: hard,
        },
    )
    .expect("raising RLIMIT_NOFILE");
    assert!(
        raised >= needed,
        "{streams} streams need about {needed} open files; the hard limit is {hard:?}"
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// The figures of one run (for `FAULTS.md`) and its assertions.
struct Report {
    streams: usize,
    via_nginx: bool,
    resumed: Vec<Duration>,
    breakdown: ([Vec<Duration>; 3], usize),
    /// The probe's calls started while the gateway was down: start after the kill, latency,
    /// outcome.
    probe_outage: Vec<(Duration, Duration, Option<String>)>,
    down: Duration,
    all_resumed: Duration,
    audit: StreamAudit,
    stream_failures: BTreeMap<String, usize>,
    probe_before: Vec<Duration>,
    probe_during: Vec<Duration>,
    probe_failures_outage: BTreeMap<String, usize>,
    probe_failures_after: BTreeMap<String, usize>,
    /// Before, at the kill, peak RSS from the restart until every stream resumed, then.
    usage: (Usage, Usage, Usage, Usage),
    /// From the kill until every stream resumed (the window of the CPU figures).
    storm_seconds: f64,
    sends_acknowledged: usize,
    send_failures: BTreeMap<String, usize>,
}

impl Report {
    fn assert_clean(&self) {
        let mut problems = self.audit.problems.clone();
        if self.resumed.len() != self.streams {
            problems.push(format!(
                "{} of {} streams resumed",
                self.resumed.len(),
                self.streams
            ));
        }
        if self.audit.lost > 0 || self.audit.duplicated > 0 || self.audit.out_of_order > 0 {
            problems.push(format!(
                "streams: {} lost, {} shown twice, {} out of order",
                self.audit.lost, self.audit.duplicated, self.audit.out_of_order
            ));
        }
        let statuses = self
            .stream_failures
            .keys()
            .chain(self.probe_failures_outage.keys())
            .chain(self.send_failures.keys());
        for status in statuses {
            if status != "UNAVAILABLE" {
                problems.push(format!("a call failed with {status}"));
            }
        }
        if !self.probe_failures_after.is_empty() {
            problems.push(format!(
                "the probe's calls failed after the restart: {:?}",
                self.probe_failures_after
            ));
        }
        let p99 = percentile(&self.probe_during, 0.99);
        if p99 > PROBE_P99_BOUND {
            problems.push(format!(
                "the probe's p99 during the storm was {p99:?} (bound {PROBE_P99_BOUND:?})"
            ));
        }
        if self.probe_during.is_empty() {
            problems.push("no probe call succeeded during the storm".to_owned());
        }
        assert!(
            problems.is_empty(),
            "the storm's audit failed:\n{}",
            problems.join("\n")
        );
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        let pcts = |sorted: &[Duration]| {
            format!(
                "p50 {} / p99 {} / max {} (n={})",
                ms(percentile(sorted, 0.5)),
                ms(percentile(sorted, 0.99)),
                ms(sorted.last().copied().unwrap_or_default()),
                sorted.len()
            )
        };
        let (before, at_kill, peaks, after) = &self.usage;
        let mut usage = String::new();
        for (name, (rss, _)) in &before.0 {
            let (rss_kill, _) = at_kill.0.get(name).copied().unwrap_or_default();
            let _ = write!(usage, "{name} {rss:.1} / {rss_kill:.1}; ");
        }
        let mut storm = String::new();
        for (name, (rss_after, cpu_after)) in &after.0 {
            let peak = peaks.0.get(name).map_or(0.0, |(rss, _)| *rss);
            let cpu_before = at_kill.0.get(name).map_or(0.0, |(_, cpu)| *cpu);
            // The new gateway's CPU counts from its start, after the kill.
            let cpu = if name == "gateway" {
                cpu_after / 100.0
            } else {
                (cpu_after - cpu_before) / 100.0
            };
            let _ = write!(
                storm,
                "{name} peak {peak:.1} MiB, after {rss_after:.1} MiB, CPU {cpu:.1} s ({:.0} %); ",
                100.0 * cpu / self.storm_seconds.max(0.001)
            );
        }
        writeln!(
            f,
            "storm of {} streams through {}:",
            self.streams,
            if self.via_nginx {
                "nginx and the gateway"
            } else {
                "the gateway"
            }
        )?;
        writeln!(
            f,
            "  gateway down (kill to ready and connected to chat): {}",
            ms(self.down)
        )?;
        writeln!(
            f,
            "  resumed after the restart: {}; all resumed {} after it",
            pcts(&self.resumed),
            ms(self.all_resumed)
        )?;
        let ([started, to_headers, to_caught_up], most_attempts) = &self.breakdown;
        writeln!(
            f,
            "  the attempt that resumed: started after the kill {}; to response headers {}; \
             to caught up {}; attempts per stream after the kill at most {most_attempts}",
            pcts(started),
            pcts(to_headers),
            pcts(to_caught_up)
        )?;
        let outage: Vec<String> = self
            .probe_outage
            .iter()
            .map(|(at, latency, outcome)| {
                format!(
                    "{} +{} {}",
                    ms(*at),
                    ms(*latency),
                    outcome.as_deref().unwrap_or("OK")
                )
            })
            .collect();
        writeln!(f, "  probe calls while down: {}", outage.join(", "))?;
        writeln!(
            f,
            "  streams: {} messages shown, {} lost, {} shown twice, {} out of order; drops and \
             failed attempts by status: {:?}",
            self.audit.shown,
            self.audit.lost,
            self.audit.duplicated,
            self.audit.out_of_order,
            self.stream_failures
        )?;
        writeln!(
            f,
            "  sends: {} acknowledged; failed attempts by status: {:?}",
            self.sends_acknowledged, self.send_failures
        )?;
        writeln!(
            f,
            "  probe before: {}; during the storm: {}; failures while down {:?}, after the \
             restart {:?}",
            pcts(&self.probe_before),
            pcts(&self.probe_during),
            self.probe_failures_outage,
            self.probe_failures_after
        )?;
        writeln!(f, "  RSS MiB before / at the kill: {usage}")?;
        write!(f, "  storm window: {storm}")
    }
}
