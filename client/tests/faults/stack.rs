//! One fault test's world: a PostgreSQL of its own, chaos proxies on chat's links (to
//! PostgreSQL, auth and group, and from the gateway to each chat replica), the services as the
//! chart wires them (`client/tests/cluster`), nginx in front, and live traffic: four devices of
//! three users in a group conversation and a direct one, sending and receiving through nginx.
//!
//! | device | receives | sends |
//! |---|---|---|
//! | alice | the group, on `OpenStream` | on that stream, to the group |
//! | bob | the direct conversation with alice, on `OpenStream` | on that stream |
//! | carol | the group, on `Subscribe` | unary `SendMessage`, to the group |
//! | alice-phone | both, on `Subscribe` | unary `SendMessage`, to bob |
//!
//! Every sender sends 10 messages a second.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use client::{Session, Target};
use testkit::{
    ChaosProxy,
    stack::{Service, process::Scratch, ready::serving_status},
};
use tokio::sync::watch;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    accounts::register_and_log_in,
    clients::{self, Pace, Tasks},
    cluster::{Cluster, Deadline, Link},
    ledger::{AuditRow, Followed, Ledger},
    postgres::Postgres,
};

/// How long the senders may take to settle and the devices to show everything after the
/// senders stop.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The chaos proxies on the services' links.
pub struct Proxies {
    /// Chat (both replicas) to PostgreSQL.
    pub chat_to_database: ChaosProxy,
    /// Chat to auth.
    pub chat_to_auth: ChaosProxy,
    /// Chat to group.
    pub chat_to_group: ChaosProxy,
    /// Group to auth.
    pub group_to_auth: ChaosProxy,
    /// The gateway to each chat replica.
    pub gateway_to_chat: [ChaosProxy; 2],
}

/// See the module docs.
pub struct Stack {
    /// The services.
    pub cluster: Cluster,
    /// Their database.
    pub postgres: Postgres,
    /// The proxies on chat's links.
    pub proxies: Arc<Proxies>,
    /// What the clients did.
    pub ledger: Arc<Ledger>,
    followed: Vec<Followed>,
    stop: watch::Sender<bool>,
    clients: Vec<Tasks>,
    scratch: Scratch,
}

impl Stack {
    /// Starts everything and the traffic, and returns once every device shows messages.
    pub async fn start() -> Self {
        let mut stack = Self::start_services().await;
        let stop = stack.stop.subscribe();
        stack.start_clients(stop).await;
        stack.wait_until_every_device_shows_more().await;
        stack
    }

    /// Starts the database, the proxies and the services, without traffic: for a test that
    /// brings its own clients ([`Stack::add_traffic`]).
    pub async fn start_services() -> Self {
        let scratch = scratch();
        let postgres = Postgres::start(scratch.path()).await;
        let proxies = Arc::new(Proxies {
            chat_to_database: ChaosProxy::start(Vec::new()),
            chat_to_auth: ChaosProxy::start(Vec::new()),
            chat_to_group: ChaosProxy::start(Vec::new()),
            group_to_auth: ChaosProxy::start(Vec::new()),
            gateway_to_chat: [ChaosProxy::start(Vec::new()), ChaosProxy::start(Vec::new())],
        });
        let route = proxies.clone();
        let cluster = Cluster::start_routed(
            scratch.path(),
            &postgres.url(),
            Arc::new(move |link, addr| {
                let proxy = match link {
                    Link::ChatToAuth => &route.chat_to_auth,
                    Link::ChatToGroup => &route.chat_to_group,
                    Link::ChatToDatabase => &route.chat_to_database,
                    Link::GroupToAuth => &route.group_to_auth,
                    Link::GatewayToChat(replica) => &route.gateway_to_chat[replica],
                };
                proxy.set_targets(vec![addr]);
                proxy.addr
            }),
        )
        .await;
        let ledger = Arc::new(Ledger::default());
        let (stop, _) = watch::channel(false);
        Self {
            cluster,
            postgres,
            proxies,
            ledger,
            followed: Vec::new(),
            stop,
            clients: Vec::new(),
            scratch,
        }
    }

    /// Adds a test's own clients: `followed` is what the audit checks they showed; `clients`
    /// run until the audit (senders should stop on [`Stack::stop_signal`]).
    pub fn add_traffic(&mut self, followed: Vec<Followed>, clients: Vec<Tasks>) {
        self.followed.extend(followed);
        self.clients.extend(clients);
    }

    /// Turns true when the audit begins: senders stop then.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// The test's directory (for the clients' profiles).
    pub fn scratch_path(&self) -> &Path {
        self.scratch.path()
    }

    async fn start_clients(&mut self, stop: watch::Receiver<bool>) {
        let server_url = self.cluster.server();
        let server = client::Server::new(&server_url, None).unwrap();
        let sessions = register_and_log_in(
            &server,
            self.scratch.path(),
            &["alice", "bob", "carol"],
            &[
                ("alice", "alice"),
                ("alice-phone", "alice"),
                ("bob", "bob"),
                ("carol", "carol"),
            ],
        )
        .await;
        let [alice, alice_phone, bob, carol] = <[Arc<Session>; 4]>::try_from(sessions).unwrap();
        alice
            .create_group("faults", &["bob".to_owned(), "carol".to_owned()])
            .await
            .unwrap();
        let group = |session: &Arc<Session>| {
            let session = session.clone();
            async move { session.resolve("#faults").await.unwrap() }
        };
        let (alice_group, carol_group) = (group(&alice).await, group(&carol).await);
        let bob_direct: Target = bob.resolve("alice").await.unwrap();
        let phone_direct: Target = alice_phone.resolve("bob").await.unwrap();
        let (group_id, direct_id) = (
            alice_group.conversation_id.clone(),
            bob_direct.conversation_id.clone(),
        );
        self.followed = vec![
            Followed {
                conversation_id: group_id.clone(),
                followers: names(&["alice", "carol", "alice-phone"]),
            },
            Followed {
                conversation_id: direct_id.clone(),
                followers: names(&["bob", "alice-phone"]),
            },
        ];
        let ledger = &self.ledger;
        let on = || Some(stop.clone());
        self.clients = vec![
            clients::live_device("alice", &alice, alice_group, ledger.clone(), on()),
            clients::live_device("bob", &bob, bob_direct, ledger.clone(), on()),
            clients::subscribe_device(
                "carol",
                carol.clone(),
                &server_url,
                vec![group_id.clone()],
                ledger.clone(),
            ),
            clients::subscribe_device(
                "alice-phone",
                alice_phone.clone(),
                &server_url,
                vec![group_id, direct_id],
                ledger.clone(),
            ),
            clients::unary_sender(
                "carol",
                carol,
                carol_group,
                ledger.clone(),
                (Pace::DEFAULT, stop.clone()),
            ),
            clients::unary_sender(
                "alice-phone",
                alice_phone,
                phone_direct,
                ledger.clone(),
                (Pace::DEFAULT, stop),
            ),
        ];
    }

    /// Lets the traffic run for `duration`.
    pub async fn traffic_for(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Waits until every following device has shown at least 10 more messages in each
    /// conversation than now (the traffic flows end to end).
    pub async fn wait_until_every_device_shows_more(&self) {
        let now: Vec<Vec<u64>> = self
            .followed
            .iter()
            .map(|followed| {
                followed
                    .followers
                    .iter()
                    .map(|device| self.ledger.last_shown(device, &followed.conversation_id))
                    .collect()
            })
            .collect();
        let deadline = Deadline::after(SETTLE_TIMEOUT, "every device to show new messages");
        while !self.followed.iter().zip(&now).all(|(followed, before)| {
            followed
                .followers
                .iter()
                .zip(before)
                .all(|(device, before)| {
                    self.ledger.last_shown(device, &followed.conversation_id) >= before + 10
                })
        }) {
            deadline.tick().await;
        }
    }

    /// Polls the health of auth, group and both chat replicas (on their own ports, as the
    /// kubelet does) until each has reported `status` at least once, within `within`.
    pub async fn wait_health(&self, status: ServingStatus, within: Duration) -> Duration {
        let started = Instant::now();
        let targets = [
            (self.cluster.auth, Service::Auth),
            (self.cluster.group, Service::Group),
            (self.cluster.chat[0], Service::Chat),
            (self.cluster.chat[1], Service::Chat),
        ];
        let mut seen = [false; 4];
        let deadline = Deadline::after(within, "the services' health to change");
        while !seen.iter().all(|seen| *seen) {
            for (index, (addr, service)) in targets.iter().enumerate() {
                if !seen[index] && serving_status(*addr, *service).await == Some(status) {
                    seen[index] = true;
                }
            }
            if deadline.expired() {
                panic!("health {status:?} not reported by every service: {seen:?} of {targets:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        started.elapsed()
    }

    /// Stops the senders, waits until every send settled and every device showed every stored
    /// message (or the timeout passed), then audits. `healed` is when the fault ended.
    pub async fn audit(mut self, fault: &'static str, healed: Instant) -> AuditRow {
        self.stop.send_replace(true);
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while self.ledger.n_unsettled() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every device has shown the last stored message, or the deadline passed (the audit
        // then names what is missing).
        let mut row = self
            .ledger
            .audit(fault, &self.postgres.url(), &self.followed, healed)
            .await;
        while row.lost > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            row = self
                .ledger
                .audit(fault, &self.postgres.url(), &self.followed, healed)
                .await;
        }
        drop(self.clients);
        self.cluster.stop().await;
        if !row.problems.is_empty() || row.lost > 0 || row.duplicated > 0 {
            self.scratch.keep();
        }
        row
    }
}

/// The test's directory (secrets, logs, profiles, the database): removed after a success,
/// kept and named after a failure.
pub fn scratch() -> Scratch {
    Scratch::new("chat-faults-test")
}

/// Device names as the ledger keeps them.
pub fn names(devices: &[&str]) -> Vec<String> {
    devices.iter().map(|device| (*device).to_owned()).collect()
}
