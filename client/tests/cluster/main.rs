//! The cluster's shape, locally (issue #9): the services started as the Helm chart wires them
//! (`cluster.rs`: the real binaries with the chart's environment, two chat replicas behind the
//! gateway, nginx in front as the Ingress), and a rolling restart of the chat replicas while
//! clients of this crate's library stream and send through nginx (unary sends, and sends on a
//! live stream). No acknowledged message may
//! be lost or shown twice, and the clients of a stopped replica must resume on the other one.
//!
//! The faults of issue #20 that live here too, each in its own file with its own test:
//! `ingress.rs` (one OpenStream carrying more than 5 MiB through nginx), `rollout.rs` (a rolling
//! restart of auth, group and chat as the chart does it, the gateway re-resolving its upstreams)
//! and `slow_consumers.rs` (100 streams that stop reading); they account for sends and what was
//! shown in `accounting.rs`, audited against PostgreSQL.
//!
//! Needs the workspace's binaries built (`cargo build --bins`; ci/test.sh does it), Debian's
//! nginx (`/usr/sbin/nginx`; ci/install-tools.sh installs it) and `DATABASE_URL`. The services'
//! logs go to a scratch directory, kept and named when the test fails.

mod accounting;
mod accounts;
mod cluster;
mod database;
mod ingress;
mod nginx;
mod rollout;
mod services;
mod setup;
mod slow_consumers;
mod traffic;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use client::Session;
use tokio::sync::watch;

use crate::{
    accounts::register_and_log_in,
    cluster::{Cluster, Deadline},
    database::TestDatabase,
    traffic::{Device, Sender, Sends},
};

/// How long the clients may take to resume and catch up after a replica stops.
const RESUME_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_the_chat_replicas_loses_no_acknowledged_message() {
    let database = TestDatabase::create().await;

    // In a task, so that the database is dropped whatever happens (the task's panic is re-raised).
    let outcome = tokio::spawn(rolling_restart(database.url.clone())).await;

    database.drop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn rolling_restart(database_url: String) {
    let started = Instant::now();
    let mut phases = Vec::new();
    let scratch = ScratchDir::new();
    let mut cluster = Cluster::start(scratch.path(), &database_url).await;
    phases.push(("cluster up", started.elapsed()));
    let devices = follow_a_group_conversation(&cluster, scratch.path()).await;
    phases.push(("devices following", started.elapsed()));
    let [alice, alice_phone, bob, carol] = &devices;
    let (stop, stopped) = watch::channel(false);
    let senders = [
        Sender::unary("alice", alice.1.clone(), alice.2.clone(), stopped.clone()),
        Sender::unary("bob", bob.1.clone(), bob.2.clone(), stopped.clone()),
        Sender::unary("carol", carol.1.clone(), carol.2.clone(), stopped.clone()),
        // Sends on the device's own stream, which keeps receiving everyone's messages.
        Sender::on_stream("alice-phone", &alice_phone.0, stopped),
    ];
    let devices: Vec<Arc<Device>> = devices.iter().map(|(device, ..)| device.clone()).collect();
    wait_until_every_device_shows(&devices, &senders, |sequence| sequence >= 10, "traffic").await;

    let mut streams_moved = Vec::new();
    let mut drains = Vec::new();
    for replica in 0..cluster.chat.len() {
        let disconnects_before: Vec<usize> =
            devices.iter().map(|d| d.shown().disconnects).collect();
        drains.push(cluster.stop_chat(replica).await);
        // Everything acknowledged so far, then newer messages, must reach every device while
        // the replica is down: the streams it ended have resumed on the other one.
        let stopped_at = last_acknowledged(&senders);
        wait_until_every_device_shows(
            &devices,
            &senders,
            |sequence| sequence > stopped_at,
            "resume",
        )
        .await;
        let moved = devices
            .iter()
            .zip(&disconnects_before)
            .filter(|(device, before)| device.shown().disconnects > **before)
            .count();
        streams_moved.push(moved);
        phases.push(("resumed", started.elapsed()));
        cluster.start_chat(replica).await;
        phases.push(("restarted", started.elapsed()));
    }
    let after_rollout = last_acknowledged(&senders);
    wait_until_every_device_shows(
        &devices,
        &senders,
        |sequence| sequence > after_rollout + 10,
        "traffic after the rollout",
    )
    .await;
    stop.send(true).unwrap();
    let mut sends = Vec::new();
    for sender in senders {
        sends.push(sender.finish().await);
    }
    let last = alice.1.conversations().await.unwrap()[0].last_sequence;
    wait_until_every_device_shows(
        &devices,
        &[],
        |sequence| sequence >= last,
        "the last message",
    )
    .await;

    let sends: Vec<Sends> = sends
        .iter()
        .map(|sends| std::mem::take(&mut *sends.lock().unwrap()))
        .collect();
    phases.push(("all shown", started.elapsed()));
    report(&devices, &sends, &streams_moved, &drains, last);
    eprintln!("phases: {phases:?}");
    // Each restart ended streams (the gateway had put some on each replica), and they resumed on
    // the other replica while it was down (the waits above).
    assert!(
        streams_moved.iter().all(|moved| *moved > 0),
        "a replica had no stream to end: {streams_moved:?}"
    );
    for device in &devices {
        assert_showed_everything_once_in_order(device, &sends, last);
    }
    drop(devices);
    cluster.stop().await;
}

/// Registers alice, bob and carol, alice on two devices; alice creates a group with the others;
/// every device follows it live. Returns each device with its session and view of the group.
async fn follow_a_group_conversation(
    cluster: &Cluster,
    scratch: &Path,
) -> [(Arc<Device>, Arc<Session>, client::Target); 4] {
    let server = client::Server::new(&cluster.server(), None).unwrap();
    let devices = [
        ("alice", "alice"),
        ("alice-phone", "alice"),
        ("bob", "bob"),
        ("carol", "carol"),
    ];
    let sessions =
        register_and_log_in(&server, scratch, &["alice", "bob", "carol"], &devices).await;
    let sessions: Vec<_> = devices
        .iter()
        .map(|(device, _)| *device)
        .zip(sessions)
        .collect();
    sessions[0]
        .1
        .create_group("rollout", &["bob".to_owned(), "carol".to_owned()])
        .await
        .unwrap();
    let mut targets = Vec::new();
    for (_, session) in &sessions {
        targets.push(session.resolve("#rollout").await.unwrap());
    }
    // The streams open back to back, so that the gateway's round-robin spreads them over both
    // replicas.
    let followed: Vec<_> = sessions
        .into_iter()
        .zip(targets)
        .map(|((name, session), target)| {
            let device = Arc::new(Device::follow(name, &session, target.clone()));
            (device, session, target)
        })
        .collect();
    let deadline = Deadline::after(RESUME_TIMEOUT, "every device to catch up");
    while followed
        .iter()
        .any(|(device, ..)| device.shown().caught_up == 0)
    {
        deadline.tick().await;
    }
    followed
        .try_into()
        .unwrap_or_else(|_| unreachable!("four devices"))
}

/// The highest sequence acknowledged to any sender so far.
fn last_acknowledged(senders: &[Sender]) -> u64 {
    senders
        .iter()
        .filter_map(|sender| {
            let sends = sender.sends.lock().unwrap();
            sends
                .acknowledged
                .iter()
                .map(|(sequence, _)| *sequence)
                .max()
        })
        .max()
        .unwrap_or(0)
}

async fn wait_until_every_device_shows(
    devices: &[Arc<Device>],
    senders: &[Sender],
    reached: impl Fn(u64) -> bool,
    what: &'static str,
) {
    let deadline = Deadline::after(RESUME_TIMEOUT, what);
    while !devices
        .iter()
        .all(|device| reached(device.shown().last_sequence()))
    {
        for device in devices {
            if let Some(error) = &device.shown().ended {
                panic!("{}'s session ended: {error}", device.name);
            }
        }
        if deadline.expired() {
            let shown: Vec<String> = devices
                .iter()
                .map(|device| {
                    let shown = device.shown();
                    format!(
                        "{}: last {}, {} disconnects, {} catch-ups",
                        device.name,
                        shown.last_sequence(),
                        shown.disconnects,
                        shown.caught_up,
                    )
                })
                .collect();
            let sends: Vec<String> = senders
                .iter()
                .map(|sender| {
                    let sends = sender.sends.lock().unwrap();
                    format!(
                        "{} acknowledged (last {:?}), failed {:?}",
                        sends.acknowledged.len(),
                        sends.acknowledged.last(),
                        sends.failed
                    )
                })
                .collect();
            panic!(
                "timed out waiting for {what}:\n{}\n{}",
                shown.join("\n"),
                sends.join("\n")
            );
        }
        deadline.tick().await;
    }
}

/// The device showed the conversation's messages 1..=last, each once and in order, among them
/// every acknowledged send with its text.
fn assert_showed_everything_once_in_order(device: &Device, sends: &[Sends], last: u64) {
    let shown = device.shown();
    let sequences: Vec<u64> = shown
        .messages
        .iter()
        .map(|(sequence, _)| *sequence)
        .collect();
    let missing: Vec<u64> = (1..=last).filter(|s| !sequences.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} never showed {missing:?}",
        device.name
    );
    assert_eq!(
        sequences,
        (1..=last).collect::<Vec<_>>(),
        "{} showed messages out of order or twice",
        device.name
    );
    for sends in sends {
        for (sequence, text) in &sends.acknowledged {
            let shown_text = &shown.messages[*sequence as usize - 1].1;
            assert_eq!(shown_text, text, "{} at {sequence}", device.name);
        }
    }
    let mut texts: Vec<&String> = shown.messages.iter().map(|(_, text)| text).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(
        texts.len(),
        shown.messages.len(),
        "{} showed a text twice",
        device.name
    );
    assert!(
        shown
            .messages
            .iter()
            .all(|(_, text)| !text.starts_with("FAILED")),
        "{}: a message failed verification",
        device.name
    );
}

fn report(
    devices: &[Arc<Device>],
    sends: &[Sends],
    streams_moved: &[usize],
    drains: &[Duration],
    last: u64,
) {
    let acknowledged = sends.iter().map(|s| s.acknowledged.len()).sum::<usize>();
    let failed: Vec<&(String, String)> = sends.iter().flat_map(|s| &s.failed).collect();
    eprintln!(
        "{last} messages, {acknowledged} acknowledged; failed sends {failed:?}; streams moved \
         per restart {streams_moved:?}; drains {drains:?}; disconnects per device {:?}",
        devices
            .iter()
            .map(|d| (d.name, d.shown().disconnects))
            .collect::<Vec<_>>()
    );
}

/// A directory for the run's secrets, logs and client profiles: removed after a success, kept
/// (and named) after a failure.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("chat-cluster-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the services' logs are in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
