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
//! and `slow_consumers.rs` (100 streams that stop reading). Every test's clients (`clients.rs`)
//! record what they sent and showed in one ledger (`ledger.rs`, shared with the fault suite),
//! audited against PostgreSQL.
//!
//! Needs the workspace's binaries built (`cargo build --bins`; ci/test.sh does it), Debian's
//! nginx (`/usr/sbin/nginx`; ci/install-tools.sh installs it) and `DATABASE_URL`. The services'
//! logs go to a scratch directory, kept and named when the test fails.

mod accounts;
#[allow(dead_code)] // Shared with the fault suite, which uses other parts of it.
mod clients;
mod cluster;
mod database;
mod ingress;
#[allow(dead_code)]
mod ledger;
mod rollout;
mod services;
mod setup;
mod slow_consumers;
mod traffic;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use client::Session;
use testkit::stack::process::Scratch;
use tokio::sync::watch;

use crate::{
    accounts::register_and_log_in,
    clients::{LiveDevice, Pace, send_on_stream, unary_sender},
    cluster::{Cluster, Deadline},
    database::TestDatabase,
    ledger::{Followed, Following, Ledger},
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
    let scratch = scratch();
    let mut cluster = Cluster::start(scratch.path(), &database_url).await;
    phases.push(("cluster up", started.elapsed()));
    let ledger = Arc::new(Ledger::default());
    let devices = follow_a_group_conversation(&cluster, scratch.path(), &ledger).await;
    phases.push(("devices following", started.elapsed()));
    let [alice, alice_phone, bob, carol] = &devices;
    let conversation_id = alice.2.conversation_id.clone();
    let names: Vec<String> = devices
        .iter()
        .map(|(device, ..)| device.name.clone())
        .collect();
    let (stop, stopped) = watch::channel(false);
    let unary = |(_, session, target): &(Arc<LiveDevice>, Arc<Session>, client::Target),
                 name: &str| {
        let pace = (Pace::DEFAULT, stopped.clone());
        unary_sender(name, session.clone(), target.clone(), ledger.clone(), pace)
    };
    let senders = [
        unary(alice, "alice"),
        unary(bob, "bob"),
        unary(carol, "carol"),
        // Sends on the device's own stream, which keeps receiving everyone's messages.
        send_on_stream(alice_phone.0.clone(), Pace::DEFAULT, stopped.clone()),
    ];
    let follow = Following {
        ledger: &ledger,
        conversation_id: &conversation_id,
        devices: &names,
        within: RESUME_TIMEOUT,
        diagnose: None,
    };
    follow
        .wait_until_shown(|sequence| sequence >= 10, "traffic")
        .await;

    let mut streams_moved = Vec::new();
    let mut drains = Vec::new();
    for replica in 0..cluster.chat.len() {
        let disconnects_before: Vec<usize> = follow.disconnects();
        drains.push(cluster.stop_chat(replica).await);
        // Everything acknowledged so far, then newer messages, must reach every device while
        // the replica is down: the streams it ended have resumed on the other one.
        let stopped_at = ledger.last_acknowledged();
        follow
            .wait_until_shown(|sequence| sequence > stopped_at, "resume")
            .await;
        let moved = follow
            .disconnects()
            .iter()
            .zip(&disconnects_before)
            .filter(|(now, before)| now > before)
            .count();
        streams_moved.push(moved);
        phases.push(("resumed", started.elapsed()));
        cluster.start_chat(replica).await;
        phases.push(("restarted", started.elapsed()));
    }
    let rolled_out = Instant::now();
    let after_rollout = ledger.last_acknowledged();
    follow
        .wait_until_shown(
            |sequence| sequence > after_rollout + 10,
            "traffic after the rollout",
        )
        .await;
    stop.send(true).unwrap();
    for sender in senders {
        sender.finish().await;
    }
    let deadline = Deadline::after(RESUME_TIMEOUT, "every send answered");
    while ledger.n_unsettled() > 0 {
        deadline.tick().await;
    }
    let last = alice.1.conversations().await.unwrap()[0].last_sequence;
    follow
        .wait_until_shown(|sequence| sequence >= last, "the last message")
        .await;
    phases.push(("all shown", started.elapsed()));

    let audit = ledger
        .audit(
            "rolling restart of the chat replicas",
            &database_url,
            &[Followed {
                conversation_id: conversation_id.clone(),
                followers: names.clone(),
            }],
            rolled_out,
        )
        .await;
    eprintln!("streams moved per restart {streams_moved:?}; drains {drains:?}; phases: {phases:?}");
    audit.assert_clean();
    // Each restart ended streams (the gateway had put some on each replica), and they resumed on
    // the other replica while it was down (the waits above).
    assert!(
        streams_moved.iter().all(|moved| *moved > 0),
        "a replica had no stream to end: {streams_moved:?}"
    );
    drop(devices);
    cluster.stop().await;
}

/// Registers alice, bob and carol, alice on two devices; alice creates a group with the others;
/// every device follows it live. Returns each device with its session and view of the group.
async fn follow_a_group_conversation(
    cluster: &Cluster,
    scratch: &Path,
    ledger: &Arc<Ledger>,
) -> [(Arc<LiveDevice>, Arc<Session>, client::Target); 4] {
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
            let device = LiveDevice::open(name, &session, target.clone(), ledger.clone());
            (Arc::new(device), session, target)
        })
        .collect();
    let deadline = Deadline::after(RESUME_TIMEOUT, "every device to catch up");
    while devices
        .iter()
        .any(|(device, _)| ledger.device_log(device).caught_up == 0)
    {
        deadline.tick().await;
    }
    followed
        .try_into()
        .unwrap_or_else(|_| unreachable!("four devices"))
}

/// A directory for the run's secrets, logs and client profiles: removed after a success, kept
/// (and named) after a failure.
fn scratch() -> Scratch {
    Scratch::new("chat-cluster-test")
}
