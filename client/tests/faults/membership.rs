//! Fault 5: chat's links to group and auth cut (connections reset, new ones refused) or
//! silently stalled while a member is removed from a group or a device is revoked.
//!
//! Chat checks every send against group memberships and users' device lists that it caches,
//! trusted only while it follows group's and auth's change events (`chat/src/membership/watch.rs`). So the
//! window in which chat may still accept a message sealed for the old members or devices, and
//! deliver it to the member removed or the device revoked, is how long it takes chat to learn
//! the change or to stop trusting its cache: at once when the link is reset (the event stream
//! ends), and within its HTTP/2 keepalive (3 s + 3 s) when the link stalls silently. These tests
//! measure that window against PostgreSQL (a late message is one stored with a wrapped key for
//! the departed device after the change committed) and assert its bound ([`STALE_TRUST_BOUND`]).
//!
//! A sender that sealed for the old list is needed for that: the client library's senders
//! fetch the current members before sealing, and reseal after a refusal. Here `alice-laptop`
//! seals by hand (with its own keys, for the devices it saw before the change) and sends each
//! envelope once, five times a second, recording whether chat stored or refused it.
//!
//! Traffic besides it (through nginx, in one group conversation of alice, bob and carol):
//! alice on `OpenStream` (the library's `Live`) and alice-phone and bob with unary sends, ten a
//! second each; alice-phone and bob receive on `Subscribe`; carol's device and bob's second
//! device each receive on `Subscribe` and `OpenStream` through nginx and on `Subscribe` straight
//! to a chat replica (past the gateway, which ends a revoked device's streams by itself), on raw
//! streams that record every message delivered (not what the library would show) and how each
//! stream ended.

mod raw;
mod stale;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use client::Session;
use proto::chat::v1 as pb;
use sqlx::{Connection, PgConnection};
use testkit::ChaosProxy;
use tokio::sync::watch;
use tonic::transport::Channel;

use self::{
    raw::{Receiver, StreamKind, authorized, mapped, raw_receiver},
    stale::{Outcome, StaleSender},
};
use crate::{
    accounts::register_and_log_in,
    clients::{self, Pace, status_name},
    ledger::Followed,
    stack::{Stack, names},
};

/// Traffic before and after the fault.
const TRAFFIC: Duration = Duration::from_secs(3);
/// How long a cut lasts: shorter than chat's revocation staleness (10 s in the test cluster),
/// so that streams are ended by the revocation itself, not by revocations going unknown.
const CUT: Duration = Duration::from_secs(5);
/// From the start of the fault to the removal or revocation.
const LEAD: Duration = Duration::from_millis(500);
/// The bound asserted on the window (see the module docs): the keepalive needs 6 s at most to
/// end a stalled event stream; the rest is margin for a loaded machine (`FAULTS.md` has the
/// measured windows).
const STALE_TRUST_BOUND: Duration = Duration::from_secs(15);
/// How long chat trusts its revocation list without a heartbeat from auth
/// (`REVOCATION_MAX_STALENESS_SECS` in the test cluster), plus a second.
const REVOCATION_STALENESS: Duration = Duration::from_secs(11);
/// How long a revoked device's stream may last: chat's revocation list is trusted for 10 s
/// without a heartbeat (`REVOCATION_MAX_STALENESS_SECS` in the test cluster), then ends every
/// stream with UNAVAILABLE; a cut shorter than that ends it with UNAUTHENTICATED once healed.
const REVOKED_STREAM_ENDS_WITHIN: Duration = Duration::from_secs(30);
/// How often the stale sender sends, and how long it waits for an answer.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a stall is kept after chat stopped accepting stale sends (any acceptance after
/// that would still be caught: the window is measured in the database).
const STALL_AFTER_REFUSAL: Duration = Duration::from_secs(2);

/// How chat's link is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Every connection reset and new ones refused, then accepted again.
    Cut,
    /// No byte moves and no reset comes; ended by a reset, as TCP would eventually.
    Stall,
    /// The open connections stall for good while new ones reach the service (a pod whose node
    /// vanished: its connections are black-holed, the Service routes new ones elsewhere).
    DeadPath,
}

/// What changes while the link is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Departure {
    /// alice removes carol from the group (group service, through the gateway).
    MemberRemoved,
    /// bob revokes his second device (auth, through the gateway).
    DeviceRevoked,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_removed_while_chat_is_cut_from_group_receives_nothing_sent_after() {
    departure_during(Fault::Cut, Departure::MemberRemoved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_removed_while_chat_stalls_on_group_receives_nothing_after_a_bounded_window() {
    departure_during(Fault::Stall, Departure::MemberRemoved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_removed_on_a_dead_path_to_group_receives_nothing_after_a_bounded_window() {
    departure_during(Fault::DeadPath, Departure::MemberRemoved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_revoked_while_chat_is_cut_from_auth_receives_nothing_sent_after() {
    departure_during(Fault::Cut, Departure::DeviceRevoked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_revoked_while_chat_stalls_on_auth_receives_nothing_after_a_bounded_window() {
    departure_during(Fault::Stall, Departure::DeviceRevoked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_revoked_on_a_dead_path_to_auth_is_refused_and_chat_recovers() {
    departure_during(Fault::DeadPath, Departure::DeviceRevoked).await;
}

/// The whole test: traffic, the fault, the change during it, the heal, then the checks.
async fn departure_during(fault: Fault, departure: Departure) {
    let mut stack = Stack::start_services().await;
    let proxies = stack.proxies.clone();
    let (proxy, service) = match departure {
        Departure::MemberRemoved => (&proxies.chat_to_group, stack.cluster.group),
        Departure::DeviceRevoked => (&proxies.chat_to_auth, stack.cluster.auth),
    };
    // For a dead path, chat's connections run through a detour that will die; kept to the end
    // (dropping it would reset them).
    let detour = (fault == Fault::DeadPath).then(|| {
        let detour = ChaosProxy::start(vec![service]);
        proxy.set_targets(vec![detour.addr]);
        proxy.cut();
        detour
    });
    let world = World::start(&mut stack, departure).await;
    stack.wait_until_every_device_shows_more().await;
    stack.traffic_for(TRAFFIC).await;
    // The stale sender's envelopes are good before the change: refusals after it are its doing.
    world.stale.send_until_stored().await;
    let (stop_probing, probing) = watch::channel(false);
    let probes = tokio::spawn(world.stale.clone().keep_sending(probing));

    match (fault, &detour) {
        (Fault::Cut, _) => {
            proxy.refuse(true);
            proxy.cut();
        }
        (Fault::Stall, _) => proxy.stall(true),
        (Fault::DeadPath, Some(detour)) => {
            detour.stall(true);
            proxy.set_targets(vec![service]);
        }
        (Fault::DeadPath, None) => unreachable!("a dead path needs its detour"),
    }
    tokio::time::sleep(LEAD).await;
    let departing = Instant::now();
    world.depart().await;
    match fault {
        Fault::Cut => tokio::time::sleep(CUT).await,
        Fault::Stall | Fault::DeadPath => {
            world.stale.wait_until_refusing(departing).await;
            tokio::time::sleep(STALL_AFTER_REFUSAL).await;
        }
    }
    match fault {
        Fault::Cut => proxy.refuse(false),
        Fault::Stall => {
            proxy.cut();
            proxy.stall(false);
        }
        // Nothing heals: chat must leave the dead connections by itself, before its revocation
        // list goes stale (it then refuses every call until its feed is back).
        Fault::DeadPath => {
            tokio::time::sleep(REVOCATION_STALENESS.saturating_sub(departing.elapsed())).await;
        }
    }
    let healed = Instant::now();
    stack.wait_until_every_device_shows_more().await;
    // Once chat can check again, it refuses the old list itself.
    world.stale.wait_until_mismatch_after(healed).await;
    stop_probing.send_replace(true);
    probes.await.unwrap();
    stack.traffic_for(TRAFFIC).await;

    let report = world.report(&stack, fault, departing).await;
    let name = match (fault, departure) {
        (Fault::Cut, Departure::MemberRemoved) => "chat to group cut 5 s; carol removed meanwhile",
        (Fault::Stall, Departure::MemberRemoved) => {
            "chat to group stalled until it refuses stale sends; carol removed meanwhile"
        }
        (Fault::DeadPath, Departure::MemberRemoved) => {
            "chat to group: open connections dead for good, new ones fine; carol removed meanwhile"
        }
        (Fault::Cut, Departure::DeviceRevoked) => "chat to auth cut 5 s; bob-2 revoked meanwhile",
        (Fault::Stall, Departure::DeviceRevoked) => {
            "chat to auth stalled until it refuses stale sends; bob-2 revoked meanwhile"
        }
        (Fault::DeadPath, Departure::DeviceRevoked) => {
            "chat to auth: open connections dead for good, new ones fine; bob-2 revoked meanwhile"
        }
    };
    eprintln!("{name}: {report}");
    stack.audit(name, healed).await.assert_clean();
    report.assert_holds();
    drop(detour);
}

/// The test's clients.
struct World {
    departure: Departure,
    group_id: String,
    /// Removes carol (alice) or revokes bob-2 (bob).
    alice: Arc<Session>,
    bob: Arc<Session>,
    /// The device that departs: carol's, or bob's second.
    departing: Arc<Session>,
    /// Its raw receivers: Subscribe and OpenStream through nginx, Subscribe straight to chat.
    departing_streams: Vec<Arc<Receiver>>,
    stale: Arc<StaleSender>,
}

impl World {
    /// Registers the users and devices, creates the group, starts the traffic (see the module
    /// docs) and tells the stack what the audit checks: every device but the departing one.
    async fn start(stack: &mut Stack, departure: Departure) -> Self {
        let server_url = stack.cluster.server();
        let server = client::Server::new(&server_url, None).unwrap();
        let sessions = register_and_log_in(
            &server,
            stack.scratch_path(),
            &["alice", "bob", "carol"],
            &[
                ("alice", "alice"),
                ("alice-phone", "alice"),
                ("alice-laptop", "alice"),
                ("bob", "bob"),
                ("bob-2", "bob"),
                ("carol", "carol"),
            ],
        )
        .await;
        let [alice, alice_phone, alice_laptop, bob, bob_2, carol] =
            <[Arc<Session>; 6]>::try_from(sessions).unwrap();
        alice
            .create_group("faults", &["bob".to_owned(), "carol".to_owned()])
            .await
            .unwrap();
        let target =
            |session: Arc<Session>| async move { session.resolve("#faults").await.unwrap() };
        let alice_group = target(alice.clone()).await;
        let group_id = alice_group.conversation_id.clone();
        let ledger = stack.ledger.clone();
        let stop = stack.stop_signal();
        let mut clients = vec![
            clients::live_device(
                "alice",
                &alice,
                alice_group,
                ledger.clone(),
                Some(stop.clone()),
            ),
            clients::unary_sender(
                "alice-phone",
                alice_phone.clone(),
                target(alice_phone.clone()).await,
                ledger.clone(),
                (Pace::DEFAULT, stop.clone()),
            ),
            clients::unary_sender(
                "bob",
                bob.clone(),
                target(bob.clone()).await,
                ledger.clone(),
                (Pace::DEFAULT, stop.clone()),
            ),
        ];
        for (name, session) in [("alice-phone", &alice_phone), ("bob", &bob)] {
            clients.push(clients::subscribe_device(
                name,
                session.clone(),
                &server_url,
                vec![group_id.clone()],
                ledger.clone(),
            ));
        }
        let channel = Channel::from_shared(server_url.clone())
            .unwrap()
            .connect_lazy();
        // Past the gateway too, which ends a revoked device's streams itself (it follows auth's
        // revocations on a link of its own): what chat alone would deliver.
        let direct = Channel::from_shared(format!("http://{}", stack.cluster.chat[0]))
            .unwrap()
            .connect_lazy();
        let mut raw = HashMap::new();
        for (names, session) in [
            (
                [
                    "carol/subscribe",
                    "carol/open-stream",
                    "carol/subscribe-to-chat",
                ],
                &carol,
            ),
            (
                [
                    "bob-2/subscribe",
                    "bob-2/open-stream",
                    "bob-2/subscribe-to-chat",
                ],
                &bob_2,
            ),
        ] {
            let ways = [
                (StreamKind::Subscribe, &channel),
                (StreamKind::OpenStream, &channel),
                (StreamKind::Subscribe, &direct),
            ];
            let streams = ways.into_iter().zip(names).map(|((kind, channel), name)| {
                let (tasks, receiver) = raw_receiver(
                    name,
                    kind,
                    session.clone(),
                    channel.clone(),
                    group_id.clone(),
                    ledger.clone(),
                );
                clients.push(tasks);
                receiver
            });
            raw.insert(names[0], streams.collect::<Vec<_>>());
        }
        // The audit follows every device but the departing one.
        let (departing, departing_streams, staying) = match departure {
            Departure::MemberRemoved => (carol, raw.remove("carol/subscribe"), "bob-2/subscribe"),
            Departure::DeviceRevoked => (bob_2, raw.remove("bob-2/subscribe"), "carol/subscribe"),
        };
        let mut followers = names(&["alice", "alice-phone", "bob"]);
        followers.extend(raw[staying].iter().map(|receiver| receiver.name.to_owned()));
        stack.add_traffic(
            vec![Followed {
                conversation_id: group_id.clone(),
                followers,
            }],
            clients,
        );
        let stale = StaleSender::start(alice_laptop, &group_id, channel).await;
        Self {
            departure,
            group_id,
            alice,
            bob,
            departing,
            departing_streams: departing_streams.unwrap(),
            stale: Arc::new(stale),
        }
    }

    /// Removes carol or revokes bob-2, through the gateway (not through chat's broken link).
    async fn depart(&self) {
        match self.departure {
            Departure::MemberRemoved => {
                self.alice.remove_member("faults", "carol").await.unwrap();
            }
            Departure::DeviceRevoked => {
                let device = &self.departing.account().device_id;
                self.bob.revoke_device(device).await.unwrap();
            }
        }
    }
}

/// What the departed device got, and the window, measured.
struct Report {
    fault: Fault,
    departure: Departure,
    /// Messages stored with a key for the departed device after the change committed:
    /// sequence and seconds after the commit (PostgreSQL's clock).
    late: Vec<(u64, f64)>,
    /// Stale sends begun after the change: stored, refused by status, timed out.
    probes: HashMap<String, usize>,
    /// Messages stored after the change that reached the departed device's streams
    /// (sequence, seconds after the change was asked for, the stream).
    late_deliveries: Vec<(u64, f64, &'static str)>,
    /// The departed device's stream ends after the change: the stream, seconds after, status.
    ends: Vec<(&'static str, f64, String)>,
    /// Streams of the departed device opened after its first end following a revocation.
    reopened: Vec<&'static str>,
    /// What ListMessages answered the departed device after the heal: the status, or the
    /// sequences after the change it listed.
    history: Result<Vec<u64>, String>,
}

impl World {
    async fn report(&self, stack: &Stack, fault: Fault, departing: Instant) -> Report {
        let messages = self.messages_around_departure(&stack.postgres.url()).await;
        let after: HashMap<u64, bool> = messages
            .iter()
            .filter(|(_, seconds, _)| *seconds > 0.0)
            .map(|(sequence, _, keyed)| (*sequence, *keyed))
            .collect();
        let late = messages
            .iter()
            .filter(|(_, seconds, keyed)| *keyed && *seconds > 0.0)
            .map(|(sequence, seconds, _)| (*sequence, *seconds))
            .collect();
        let mut probes = HashMap::new();
        for probe in self.stale.lock_probes().iter() {
            if probe.started > departing {
                let key = match probe.outcome {
                    Outcome::Stored(_) => "stored".to_owned(),
                    Outcome::Refused(code) => status_name(code),
                    Outcome::TimedOut => "timed out".to_owned(),
                };
                *probes.entry(key).or_default() += 1;
            }
        }
        let since = |at: Instant| at.saturating_duration_since(departing).as_secs_f64();
        let (mut late_deliveries, mut ends, mut reopened) = (Vec::new(), Vec::new(), Vec::new());
        for stream in &self.departing_streams {
            let seen = stream.seen();
            for (sequence, at) in &seen.deliveries {
                if after.contains_key(sequence) {
                    late_deliveries.push((*sequence, since(*at), stream.name));
                }
            }
            let stream_ends: Vec<&(Instant, String)> =
                seen.ends.iter().filter(|(at, _)| *at > departing).collect();
            ends.extend(
                stream_ends
                    .iter()
                    .map(|(at, status)| (stream.name, since(*at), status.clone())),
            );
            if let Some((first_end, _)) = stream_ends.first()
                && seen.opened.iter().any(|opened| opened > first_end)
            {
                reopened.push(stream.name);
            }
        }
        let history = self.departed_history().await;
        let history = history.map(|sequences| {
            sequences
                .into_iter()
                .filter(|sequence| after.contains_key(sequence))
                .collect()
        });
        Report {
            fault,
            departure: self.departure,
            late,
            probes,
            late_deliveries,
            ends,
            reopened,
            history,
        }
    }

    /// Every message of the group: sequence, seconds between the change's commit and its
    /// (PostgreSQL's clock, both), and whether it has a key for the departed device.
    async fn messages_around_departure(&self, database_url: &str) -> Vec<(u64, f64, bool)> {
        let mut db = PgConnection::connect(database_url).await.unwrap();
        let changed_at = match self.departure {
            Departure::MemberRemoved => {
                "select created_at from groups.membership_events
                 where group_id = $1 and user_id = $2 and kind = 'member_removed'"
            }
            Departure::DeviceRevoked => "select revoked_at from auth.devices where id = $3",
        };
        let account = self.departing.account();
        let (user, device): (uuid::Uuid, uuid::Uuid) = (
            account.user_id.parse().unwrap(),
            account.device_id.parse().unwrap(),
        );
        let rows: Vec<(i64, f64, bool)> = sqlx::query_as(&format!(
            "with changed as ({changed_at})
             select m.sequence,
                    extract(epoch from m.created_at - (select * from changed))::float8,
                    exists (select 1 from chat.message_keys k
                            where k.conversation_id = m.conversation_id
                              and k.sequence = m.sequence and k.device_id = $3)
             from chat.messages m where m.conversation_id = $1 order by m.sequence"
        ))
        .bind(self.group_id.parse::<uuid::Uuid>().unwrap())
        .bind(user)
        .bind(device)
        .fetch_all(&mut db)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(sequence, seconds, keyed)| (u64::try_from(sequence).unwrap(), seconds, keyed))
            .collect()
    }

    /// ListMessages of the group for the departed device, from the start: the sequences, or
    /// the status it was refused with.
    async fn departed_history(&self) -> Result<Vec<u64>, String> {
        let token = self
            .departing
            .access_token_for_tests()
            .await
            .map_err(mapped)?;
        let mut chat = self.stale.chat.clone();
        let request = pb::ListMessagesRequest {
            conversation_id: self.group_id.clone(),
            direction: pb::Direction::Forward as i32,
            from_sequence: 0,
            page_size: 200,
            include_all_recipients: false,
        };
        let response = chat
            .list_messages(authorized(request, &token))
            .await
            .map_err(|status| mapped(status.into()))?;
        Ok(response
            .into_inner()
            .messages
            .iter()
            .map(|message| message.sequence)
            .collect())
    }
}

impl Report {
    /// The window: from the change's commit to the last message stored for the departed
    /// device.
    fn window(&self) -> Option<f64> {
        self.late
            .iter()
            .map(|(_, seconds)| *seconds)
            .reduce(f64::max)
    }

    fn assert_holds(&self) {
        let late: Vec<u64> = self.late.iter().map(|(sequence, _)| *sequence).collect();
        match self.fault {
            // Chat stops trusting its cache when the reset ends its event stream, before the
            // change: nothing sealed for the old list may be stored after it.
            Fault::Cut => assert!(late.is_empty(), "stored for the departed device: {late:?}"),
            Fault::Stall | Fault::DeadPath => {
                let window = self.window().unwrap_or(0.0);
                assert!(
                    window <= STALE_TRUST_BOUND.as_secs_f64(),
                    "a message was stored for the departed device {window:.1} s after the change"
                );
            }
        }
        for (sequence, after, stream) in &self.late_deliveries {
            assert!(
                late.contains(sequence),
                "{stream} got {sequence}, stored after the change without a key for it"
            );
            // Delivered as it was stored, within the window: never after the heal.
            assert!(
                *after <= STALE_TRUST_BOUND.as_secs_f64(),
                "{stream} got {sequence}, stored after the change, {after:.1} s after it"
            );
        }
        for status in self.probes.keys() {
            assert!(
                ["stored", "UNAVAILABLE", "FAILED_PRECONDITION", "timed out"]
                    .contains(&status.as_str()),
                "a stale send was answered {status}"
            );
        }
        match self.departure {
            Departure::MemberRemoved => {
                assert_eq!(self.history, Err("NOT_FOUND".to_owned()), "carol's history");
            }
            Departure::DeviceRevoked => {
                assert_eq!(
                    self.history,
                    Err("UNAUTHENTICATED".to_owned()),
                    "bob-2's history"
                );
                for stream in [
                    "bob-2/subscribe",
                    "bob-2/open-stream",
                    "bob-2/subscribe-to-chat",
                ] {
                    let ended = self.ends.iter().find(|(name, ..)| *name == stream);
                    assert!(
                        ended.is_some_and(|(_, after, status)| {
                            *after <= REVOKED_STREAM_ENDS_WITHIN.as_secs_f64()
                                && (status == "UNAUTHENTICATED" || status == "UNAVAILABLE")
                        }),
                        "{stream} of the revoked device ended with {ended:?}"
                    );
                }
                assert!(
                    self.reopened.is_empty(),
                    "reopened after the revocation: {:?}",
                    self.reopened
                );
            }
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let window = self
            .window()
            .map_or("none".to_owned(), |seconds| format!("{seconds:.2} s"));
        let last_delivery = self
            .late_deliveries
            .iter()
            .map(|(_, after, _)| *after)
            .reduce(f64::max)
            .map_or("-".to_owned(), |after| format!("{after:.2} s"));
        // Each stream's first end after the change, then how many more attempts ended how.
        let mut ends: Vec<String> = Vec::new();
        for stream in ["/subscribe", "/open-stream", "/subscribe-to-chat"] {
            let of_stream: Vec<&(&str, f64, String)> = self
                .ends
                .iter()
                .filter(|(name, ..)| name.ends_with(stream))
                .collect();
            if let Some((name, after, status)) = of_stream.first() {
                ends.push(format!(
                    "{name} {status} after {after:.2} s, then {} more",
                    of_stream.len() - 1
                ));
            }
        }
        write!(
            f,
            "window (the change's commit to the last message stored with a key for the departed \
             device): {window}, {} such messages; stale sends after the change: {:?}; delivered \
             to the departed device after the change: {} (the last {last_delivery} after it); its \
             streams' ends: {ends:?}; reopened: {:?}; its history: {:?}",
            self.late.len(),
            self.probes,
            self.late_deliveries.len(),
            self.reopened,
            self.history
        )
    }
}
