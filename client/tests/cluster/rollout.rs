//! Fault 8 of issue #20: a rolling restart of auth, group and chat as the chart does it, while
//! clients send (unary `SendMessage`, and on `OpenStream`) and
//! follow a group conversation through the Ingress, on `OpenStream` (the client library's `Live`)
//! and on `Subscribe` (as the web demo does). No acknowledged message may
//! be lost or shown twice, no send may fail, and a stream may end only with UNAVAILABLE.
//!
//! The shape differs from `cluster.rs` where a rollout needs it: every component runs two pods,
//! each on a loopback address of its own (`127.0.<component>.<n>`, one port per component, as a
//! Deployment's pods share their containerPort); chat and group reach auth, and chat reaches
//! group, through a [`ClusterIp`]; the gateway reaches every pod through names it re-resolves
//! (`<component>-headless`, from the [`Records`] file, not a fixed list of URLs). The gateway
//! runs two pods too (on 127.0.0.1, a port each) and rolls last, the same way (its preStop lets
//! the Ingress drop the pod before it stops accepting). nginx reaches them through a
//! [`ClusterIp`]: ingress-nginx does not reload when endpoints change, its Lua balancer picks a
//! current endpoint for each new upstream connection, which is what the forwarder does. (A reload
//! would not model it: nginx's old workers keep their clients' HTTP/2 connections, which a stream
//! keeps busy, with the old list of gateways; the one run that tried it had 7 sends fail.)
//!
//! Rolling the gateway too is a test of its own. It once looked like a stall (the devices sending
//! on `OpenStream` left 8-36 lines unanswered 20 s after the senders stopped, in 4 runs of 5):
//! it was a backlog. `Live` fetched the group's members for every line, which held each
//! stream's sends to about two lines a second on this loaded machine, below the five a second
//! the senders type; the longer run with the gateway rolled let the backlog outgrow the wait.
//! `Live` now reuses the participants until an event or the server says they changed.
//!
//! Each Deployment rolls as `strategy.rollingUpdate` (maxSurge 25% of 2 pods = 1, maxUnavailable
//! 0) and the pod lifecycle (`deployments.yaml`) make Kubernetes do it: a new pod starts, and
//! once its readiness probe (gRPC health) passes it joins the Services; then an old pod leaves
//! them (it is terminating), sleeps its preStop, gets SIGTERM and must exit with success within
//! its shutdown timeout; then the next. The chart's times are scaled down by 5 to keep CI short
//! (the ratios stay): the gateway re-resolves every 2 s (chart 10 s), chat's preStop sleeps 3 s
//! (chart 15 s, so that every gateway has dropped the pod first), auth's and group's 1 s (5 s).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use testkit::{
    nginx::{Nginx, Role},
    stack::{
        Service,
        process::{Process, free_port},
    },
};
use tokio::sync::watch;

use crate::{
    clients::{self, LiveDevice, Pace, send_on_stream, unary_sender},
    cluster::{Deadline, Environment, Ready, connected, terminate},
    ledger::{Followed, Following, Ledger},
    scratch,
    services::{ClusterIp, Records},
    setup::{group_chat, with_database},
};

/// `components.*.preStopSleepSeconds` and `gateway.upstreamResolveIntervalSeconds`, scaled.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(2);
const CHAT_PRE_STOP: Duration = Duration::from_secs(3);
const AUTH_GROUP_PRE_STOP: Duration = Duration::from_secs(1);
const GATEWAY_PRE_STOP: Duration = Duration::from_secs(2);
/// Between two sends of one sender.
const SEND_INTERVAL: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_every_service_as_the_chart_does_it_loses_and_repeats_nothing() {
    with_database(|url| rolling_restart_of_every_service(url, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_every_service_and_the_gateway_loses_and_repeats_nothing() {
    with_database(|url| rolling_restart_of_every_service(url, true)).await;
}

/// One Deployment's pods.
struct Deployment {
    component: Component,
    port: u16,
    pods: Vec<Pod>,
    /// Pods started so far: the next one's address.
    started: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Component {
    Auth = 1,
    Group = 2,
    Chat = 3,
}

struct Pod {
    addr: SocketAddr,
    process: Process,
}

/// Every pod, the Services, the gateway and nginx.
struct RolloutCluster {
    env: Environment,
    auth: Deployment,
    group: Deployment,
    chat: Deployment,
    auth_service: ClusterIp,
    group_service: ClusterIp,
    records: Records,
    /// The gateway's pods, oldest first, the Service nginx reaches them through, and what each
    /// one's environment starts from.
    gateways: Vec<(SocketAddr, Process)>,
    gateway_service: ClusterIp,
    gateway_env: Vec<(String, String)>,
    gateways_started: usize,
    nginx: Nginx,
}

/// The rollout of auth, group and chat, then of the gateway if `roll_gateway`.
async fn rolling_restart_of_every_service(database_url: String, roll_gateway: bool) {
    let started = Instant::now();
    let scratch = scratch();
    let mut cluster = RolloutCluster::start(scratch.path(), &database_url).await;
    let server = format!("http://{}", cluster.nginx.addr);
    let members = group_chat(
        &server,
        scratch.path(),
        "rollout",
        &["alice", "bob", "carol"],
        &[
            ("alice", "alice"),
            ("alice-phone", "alice"),
            ("bob", "bob"),
            ("carol", "carol"),
            ("bob-web", "bob"),
            ("carol-web", "carol"),
        ],
    )
    .await;
    let conversation_id = members[0].target.conversation_id.clone();
    let ledger = Arc::new(Ledger::default());
    // The first four devices follow on `Live`, the web ones on `Subscribe`.
    let devices: Vec<Arc<LiveDevice>> = members[..4]
        .iter()
        .map(|member| {
            let device = LiveDevice::open(
                &member.device,
                &member.session,
                member.target.clone(),
                ledger.clone(),
            );
            Arc::new(device)
        })
        .collect();
    let subscribers: Vec<clients::Tasks> = members[4..]
        .iter()
        .map(|member| {
            clients::subscribe_device(
                &member.device,
                member.session.clone(),
                &server,
                vec![conversation_id.clone()],
                ledger.clone(),
            )
        })
        .collect();
    let names: Vec<String> = members.iter().map(|member| member.device.clone()).collect();
    let follow = Following {
        ledger: &ledger,
        conversation_id: &conversation_id,
        devices: &names,
        within: Duration::from_secs(20),
        diagnose: Some(Box::new({
            let logs = scratch.path().to_owned();
            move || diagnose(&logs)
        })),
    };
    let (stop, stopped) = watch::channel(false);
    let pace = Pace {
        interval: SEND_INTERVAL,
        text_bytes: 0,
    };
    let senders = [
        unary_sender(
            "alice",
            members[0].session.clone(),
            members[0].target.clone(),
            ledger.clone(),
            (pace, stopped.clone()),
        ),
        // bob and carol send on their live streams (OpenStream), alice unary.
        send_on_stream(devices[2].clone(), pace, stopped.clone()),
        send_on_stream(devices[3].clone(), pace, stopped),
    ];
    let at_least = |sequence: u64| move |shown: u64| shown >= sequence;
    follow.wait_until_shown(at_least(10), "traffic").await;
    eprintln!("traffic flowing after {:?}", started.elapsed());

    let mut steps = Vec::new();
    for component in [Component::Auth, Component::Group, Component::Chat] {
        for _ in 0..2 {
            let (new_pod, drained) = cluster.roll_one_pod(component).await;
            let step = format!(
                "at {:?}: {component:?} -> {new_pod}, the old pod drained in {drained:?}",
                started.elapsed()
            );
            eprintln!("{step}");
            steps.push(step);
            // Everything acknowledged so far reaches every device while the rollout goes on.
            let acknowledged = ledger.last_acknowledged();
            follow
                .wait_until_shown(at_least(acknowledged), "delivery")
                .await;
        }
    }
    for _ in 0..if roll_gateway { 2 } else { 0 } {
        let (new_pod, drained) = cluster.roll_one_gateway().await;
        let step = format!(
            "at {:?}: gateway -> {new_pod}, the old pod drained in {drained:?}",
            started.elapsed()
        );
        eprintln!("{step}");
        steps.push(step);
        let acknowledged = ledger.last_acknowledged();
        follow
            .wait_until_shown(at_least(acknowledged), "delivery")
            .await;
    }
    let rolled_out = started.elapsed();
    let healed = Instant::now();
    // The gateways follow the new chat pods: they re-resolved their upstream names.
    for (_, gateway) in &cluster.gateways {
        for pod in &cluster.chat.pods {
            let deadline = Deadline::after(RESOLVE_INTERVAL * 3, "the gateway to reach a new pod");
            while !connected(gateway.id(), pod.addr) {
                deadline.tick().await;
            }
        }
    }
    let acknowledged = ledger.last_acknowledged();
    follow
        .wait_until_shown(at_least(acknowledged + 10), "traffic after")
        .await;
    stop.send(true).unwrap();
    for sender in senders {
        sender.finish().await;
    }
    // A send that failed for good is answered too (the audit reports it).
    let deadline = Deadline::after(Duration::from_secs(20), "every stream send answered");
    while ledger.n_unsettled() > 0 {
        assert!(
            !deadline.expired(),
            "{} sends unanswered; devices: {:?}",
            ledger.n_unsettled(),
            names
                .iter()
                .map(|device| (device, ledger.device_log(device)))
                .collect::<Vec<_>>()
        );
        deadline.tick().await;
    }
    let last = members[0].session.conversations().await.unwrap()[0].last_sequence;
    follow
        .wait_until_shown(at_least(last), "the last message")
        .await;

    let audit = ledger
        .audit(
            if roll_gateway {
                "rolling restart of auth, group, chat, gateway"
            } else {
                "rolling restart of auth, group, chat"
            },
            &database_url,
            &[Followed {
                conversation_id: conversation_id.clone(),
                followers: names.clone(),
            }],
            healed,
        )
        .await;
    let disconnects: Vec<String> = names
        .iter()
        .flat_map(|device| ledger.device_log(device).disconnects)
        .collect();
    eprintln!(
        "rollout took {rolled_out:?} in all; {steps:#?}\nstreams resumed after: {disconnects:#?}"
    );
    audit.assert_clean();
    // A stream may end only as a draining server ends it: UNAVAILABLE, which the client retries.
    for reason in &disconnects {
        assert!(
            reason.starts_with("UNAVAILABLE"),
            "a stream ended with a status the client should not retry: {reason}"
        );
    }
    drop((devices, subscribers, members));
    cluster.stop().await;
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Auth => "auth",
            Component::Group => "group",
            Component::Chat => "chat",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Component::Chat => "chat-server",
            other => other.name(),
        }
    }

    /// What the readiness probe asks for (its health name).
    fn service(self) -> Service {
        match self {
            Component::Auth => Service::Auth,
            Component::Group => Service::Group,
            Component::Chat => Service::Chat,
        }
    }

    fn pre_stop(self) -> Duration {
        match self {
            Component::Chat => CHAT_PRE_STOP,
            _ => AUTH_GROUP_PRE_STOP,
        }
    }

    /// The address of its `n`th pod (from 1).
    fn pod_ip(self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, self as u8, n))
    }
}

impl RolloutCluster {
    /// Migrates, then starts two pods of auth, group and chat (each once what it needs is
    /// ready), the Services, the gateway and nginx.
    async fn start(dir: &Path, database_url: &str) -> Self {
        // Every link direct: the Services in `services.rs` stand where a proxy would.
        let env = Environment::prepare(dir, database_url, Arc::new(|_, addr| addr));
        let records = Records::new(dir.join("upstream-hosts"));
        let mut cluster_parts = (
            Deployment::new(Component::Auth),
            Deployment::new(Component::Group),
            Deployment::new(Component::Chat),
        );
        let auth_service = ClusterIp::start(Vec::new()).await;
        let group_service = ClusterIp::start(Vec::new()).await;
        let services = (auth_service.addr, group_service.addr);
        for _ in 0..2 {
            cluster_parts.0.start_pod(&env, services).await;
        }
        auth_service.set_endpoints(cluster_parts.0.endpoints());
        for _ in 0..2 {
            cluster_parts.1.start_pod(&env, services).await;
        }
        group_service.set_endpoints(cluster_parts.1.endpoints());
        for _ in 0..2 {
            cluster_parts.2.start_pod(&env, services).await;
        }
        let (auth, group, chat) = cluster_parts;
        let mut records = records;
        for deployment in [&auth, &group, &chat] {
            records.set(&deployment.headless_name(), deployment.ips());
        }
        let gateway_addr = localhost_port();
        let mut gateway_env = env.gateway(gateway_addr, services.0, [services.0; 2], services.1);
        for (key, value) in gateway_env.iter_mut() {
            let deployment = match key.as_str() {
                "GATEWAY_AUTH_URL" => &auth,
                "GATEWAY_CHAT_URL" => &chat,
                "GATEWAY_GROUP_URL" => &group,
                "GATEWAY_UPSTREAM_RESOLVE_INTERVAL_SECS" => {
                    *value = RESOLVE_INTERVAL.as_secs().to_string();
                    continue;
                }
                _ => continue,
            };
            *value = format!("http://{}:{}", deployment.headless_name(), deployment.port);
        }
        gateway_env.push((
            "GATEWAY_UPSTREAM_HOSTS_FILE".to_owned(),
            records.file.display().to_string(),
        ));
        let mut gateways = Vec::new();
        for n in 1..=2 {
            gateways.push(start_gateway(&env, &gateway_env, n).await);
        }
        let addrs: Vec<SocketAddr> = gateways.iter().map(|(addr, _)| *addr).collect();
        let gateway_service = ClusterIp::start(addrs).await;
        let nginx = Nginx::start(&dir.join("nginx"), gateway_service.addr, Role::Ingress)
            .await
            .expect("nginx starts");
        Self {
            env,
            auth,
            group,
            chat,
            auth_service,
            group_service,
            records,
            gateways,
            gateway_service,
            gateway_env,
            gateways_started: 2,
            nginx,
        }
    }

    /// The ready gateway pods are what the Ingress proxies to.
    fn publish_gateways(&self) {
        let addrs: Vec<SocketAddr> = self.gateways.iter().map(|(addr, _)| *addr).collect();
        self.gateway_service.set_endpoints(addrs);
    }

    /// One step of the gateway's rollout: a new pod, ready, joins the Ingress's upstreams; the
    /// oldest leaves them, sleeps its preStop, and drains after SIGTERM (its streams end with
    /// UNAVAILABLE, and their clients resume through the Ingress on the other pods).
    async fn roll_one_gateway(&mut self) -> (SocketAddr, Duration) {
        self.gateways_started += 1;
        let started = start_gateway(&self.env, &self.gateway_env, self.gateways_started).await;
        let new_pod = started.0;
        self.gateways.push(started);
        self.publish_gateways();
        let (_, mut old) = self.gateways.remove(0);
        self.publish_gateways();
        tokio::time::sleep(GATEWAY_PRE_STOP).await;
        let draining = Instant::now();
        let status = terminate(&mut old).await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM; its log: {}",
            old.name(),
            old.log().display()
        );
        (new_pod, draining.elapsed())
    }

    /// One step of the rollout of `component`: a new pod, ready, joins the Services; the oldest
    /// leaves them, sleeps its preStop, and drains after SIGTERM. Returns the new pod's address
    /// and how long the old one took to exit.
    async fn roll_one_pod(&mut self, component: Component) -> (SocketAddr, Duration) {
        let services = (self.auth_service.addr, self.group_service.addr);
        let deployment = match component {
            Component::Auth => &mut self.auth,
            Component::Group => &mut self.group,
            Component::Chat => &mut self.chat,
        };
        let new_pod = deployment.start_pod(&self.env, services).await;
        self.publish(component);
        let mut old = self.deployment(component).pods.remove(0);
        self.publish(component);
        tokio::time::sleep(component.pre_stop()).await;
        let draining = Instant::now();
        let status = terminate(&mut old.process).await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM; its log: {}",
            old.process.name(),
            old.process.log().display()
        );
        (new_pod, draining.elapsed())
    }

    fn deployment(&mut self, component: Component) -> &mut Deployment {
        match component {
            Component::Auth => &mut self.auth,
            Component::Group => &mut self.group,
            Component::Chat => &mut self.chat,
        }
    }

    /// The ready pods of `component` are what its Services answer.
    fn publish(&mut self, component: Component) {
        let deployment = self.deployment(component);
        let (name, ips, endpoints) = (
            deployment.headless_name(),
            deployment.ips(),
            deployment.endpoints(),
        );
        self.records.set(&name, ips);
        match component {
            Component::Auth => self.auth_service.set_endpoints(endpoints),
            Component::Group => self.group_service.set_endpoints(endpoints),
            Component::Chat => {}
        }
    }

    /// SIGTERM to nginx, the gateway, chat, group and auth, in that order; each must exit
    /// with success.
    async fn stop(self) {
        let Self {
            nginx,
            gateways,
            chat,
            group,
            auth,
            ..
        } = self;
        drop(nginx);
        let pods = chat.pods.into_iter().chain(group.pods).chain(auth.pods);
        let mut processes: Vec<Process> = gateways.into_iter().map(|(_, p)| p).collect();
        processes.extend(pods.map(|pod| pod.process));
        for process in &mut processes {
            let status = terminate(process).await;
            assert!(
                status.success(),
                "{} exited with {status}; its log: {}",
                process.name(),
                process.log().display()
            );
        }
    }
}

impl Deployment {
    fn new(component: Component) -> Self {
        let ips: Vec<IpAddr> = (1..=4).map(|n| component.pod_ip(n)).collect();
        Self {
            component,
            port: free_port(&ips),
            pods: Vec::new(),
            started: 0,
        }
    }

    /// `<component>-headless`, as the chart names the Service.
    fn headless_name(&self) -> String {
        format!("{}-headless", self.component.name())
    }

    fn ips(&self) -> Vec<IpAddr> {
        self.pods.iter().map(|pod| pod.addr.ip()).collect()
    }

    fn endpoints(&self) -> Vec<SocketAddr> {
        self.pods.iter().map(|pod| pod.addr).collect()
    }

    /// Starts a pod and waits until its readiness probe passes. Returns its address.
    async fn start_pod(
        &mut self,
        env: &Environment,
        services: (SocketAddr, SocketAddr),
    ) -> SocketAddr {
        self.started += 1;
        let addr = SocketAddr::new(self.component.pod_ip(self.started), self.port);
        let (auth, group) = services;
        let pod_env = match self.component {
            Component::Auth => env.auth(addr),
            Component::Group => env.group(addr, auth),
            Component::Chat => env.chat(addr, auth, group),
        };
        let name = format!("{}-{}", self.component.name(), self.started);
        // The chart's readiness probe, health SERVING, and no more: a pod that serves before it
        // can check tokens is what a rollout meets.
        let ready = Ready::serving(addr, self.component.service());
        let pod_env = with_debug_logs(pod_env);
        let process = env
            .start(self.component.binary(), &name, pod_env, ready)
            .await;
        self.pods.push(Pod { addr, process });
        addr
    }
}

/// Starts gateway pod `n` (from 1) with `env` on a port of its own and waits until it is ready
/// (it has auth's key set).
async fn start_gateway(
    env: &Environment,
    gateway_env: &[(String, String)],
    n: usize,
) -> (SocketAddr, Process) {
    let addr = localhost_port();
    let mut pod_env = gateway_env.to_vec();
    for (key, value) in &mut pod_env {
        if key == "GATEWAY_LISTEN_ADDR" {
            *value = addr.to_string();
        }
    }
    // The first is `gateway.log`, which `gateway_calls_in_flight` reads.
    let name = match n {
        1 => "gateway".to_owned(),
        n => format!("gateway-{n}"),
    };
    let process = env
        .start("gateway", &name, pod_env, Ready::gateway(addr))
        .await;
    (addr, process)
}

/// A free port on 127.0.0.1.
fn localhost_port() -> SocketAddr {
    SocketAddr::new([127, 0, 0, 1].into(), free_port(&[[127, 0, 0, 1].into()]))
}

/// The services' own events at debug level: what a failed rollout needs to be understood.
fn with_debug_logs(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    for (key, value) in &mut env {
        if key.ends_with("_LOG") {
            *value = "info,chat=debug,group=debug,auth=debug".to_owned();
        }
    }
    env
}

/// What a timed-out wait prints (here and in `slow_consumers.rs`): the gateways' open streams by service (from their /metrics,
/// whose address each one logs) and every service's last warnings and errors, from the logs in
/// `dir` (a run in CI leaves nothing else behind).
pub(crate) fn diagnose(dir: &Path) -> String {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    let mut report = String::new();
    for log in logs {
        let name = log.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if name.starts_with("gateway") {
            report.push_str(&format!("{name} open streams:\n{}\n", open_streams(&text)));
        }
        let warnings: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"")
            })
            .collect();
        report.push_str(&format!("{name}: {} warnings, the last:\n", warnings.len()));
        for line in &warnings[warnings.len().saturating_sub(15)..] {
            report.push_str(&format!(
                "  {}\n",
                line.chars().take(400).collect::<String>()
            ));
        }
    }
    report
}

/// A gateway's `grpc_server_open_streams` lines, from the metrics address in its log `text`.
fn open_streams(text: &str) -> String {
    let Some(addr) = text
        .lines()
        .find(|line| line.contains("\"metrics listening\""))
        .and_then(|line| line.split("\"addr\":\"").nth(1))
        .and_then(|rest| rest.split('"').next())
    else {
        return String::new();
    };
    let output = std::process::Command::new("curl")
        .args(["-s", "--max-time", "2", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("grpc_server_open_streams"))
        .collect::<Vec<_>>()
        .join("\n")
}
