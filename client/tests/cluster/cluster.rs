//! The services as the Helm chart runs them: the real binaries of `target/debug`, each with the
//! environment its Deployment gets (`charts/chat/templates/_env.tpl`: the same names and the
//! same kind of values, secrets as mounted files), the migrations applied by the `migrate`
//! binary first (the chart's Job), and nginx in front as the Ingress.
//!
//! What stands in for Kubernetes: a pod's address is a loopback address (the two chat replicas
//! listen on the same port of 127.0.0.1 and 127.0.0.2); the ClusterIP Services the services use
//! between them are plain URLs; the gateway's headless Service, one name resolving to every chat
//! pod, is the list of both replicas' URLs in `GATEWAY_CHAT_URL` (no name resolves to both
//! addresses here, and tests may not edit /etc/hosts), which the gateway resolves and balances
//! exactly like a name's addresses; readiness probes are the same gRPC health checks and
//! `/readyz`, and a rollout's "the new pod is ready and the gateway sees it" is waited for
//! explicitly, as the chart's preStop sleep and the gateway's re-resolution ensure it there.

use std::{
    collections::HashSet,
    fs::{self, File},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    sync::Arc,
    time::{Duration, Instant},
};

use testkit::{
    nginx::{Nginx, Role},
    stack::{
        Service, probe_token_signed_with,
        process::{Process, binaries_dir, free_port},
    },
};

pub use testkit::stack::process::Deadline;

/// Where the two chat replicas listen (on the same port): their "pod addresses".
pub const CHAT_REPLICAS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
];
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Every component's `<P>_SHUTDOWN_TIMEOUT_SECS` in the chart's default values.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a component may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection between two components that a test may route through a proxy of its own (the
/// fault suite's chaos proxies): [`Route`] gets the link and the real address, and returns the
/// address to connect to instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Chat (both replicas) to auth.
    ChatToAuth,
    /// Chat (both replicas) to group.
    ChatToGroup,
    /// Chat (both replicas) to PostgreSQL.
    ChatToDatabase,
    /// Group to auth (its token validator's key set and revocation feed).
    GroupToAuth,
    /// The gateway to chat replica `n`.
    GatewayToChat(usize),
}

/// See [`Link`].
pub type Route = Arc<dyn Fn(Link, SocketAddr) -> SocketAddr + Send + Sync>;

/// The running system. Dropping it kills every process.
pub struct Cluster {
    /// The Ingress: what clients connect to.
    pub nginx: Nginx,
    /// The chat replicas' addresses.
    pub chat: [SocketAddr; 2],
    /// Auth's address.
    pub auth: SocketAddr,
    /// Group's address.
    pub group: SocketAddr,
    /// The gateway's address (behind nginx).
    #[allow(dead_code)]
    // Used by the fault suite (client/tests/faults), which shares this file.
    pub gateway: SocketAddr,
    // Declared in stopping order: the gateway first, auth last.
    gateway_process: Process,
    chat_processes: [Option<Process>; 2],
    group_process: Process,
    auth_process: Process,
    env: Environment,
}

/// What every process is started from.
pub(crate) struct Environment {
    bin_dir: PathBuf,
    dir: PathBuf,
    database_url: String,
    route: Route,
    /// Signed with the key in the signing-key Secret: what readiness probes with
    /// (`testkit::stack::ready`).
    probe_token: String,
}

/// The token issuer and audience of the chart's default values (`chat.env.token`).
const TOKEN_ISSUER: &str = "chat-auth";
const TOKEN_AUDIENCE: &str = "chat";

impl Cluster {
    /// Applies the migrations to `database_url`, then starts auth, group, both chat replicas,
    /// the gateway and nginx in `dir`, each once the ones it needs are ready.
    pub async fn start(dir: &Path, database_url: &str) -> Self {
        Self::start_routed(dir, database_url, Arc::new(|_, addr| addr)).await
    }

    /// Like [`Cluster::start`], with the connections of [`Link`] made where `route` says.
    pub async fn start_routed(dir: &Path, database_url: &str, route: Route) -> Self {
        let env = Environment::prepare(dir, database_url, route);
        let auth = SocketAddr::new(LOOPBACK, free_port(&[LOOPBACK]));
        let auth_process = env
            .start("auth", "auth", env.auth(auth), Ready::auth(auth))
            .await;
        let group = SocketAddr::new(LOOPBACK, free_port(&[LOOPBACK]));
        let group_env = env.group(group, auth);
        let group_process = env
            .start("group", "group", group_env, Ready::group(group))
            .await;
        let chat_port = free_port(&CHAT_REPLICAS);
        let chat = CHAT_REPLICAS.map(|address| SocketAddr::new(address, chat_port));
        let mut chat_processes = [None, None];
        for (replica, process) in chat_processes.iter_mut().enumerate() {
            let name = format!("chat-{replica}");
            let chat_env = env.chat(chat[replica], auth, group);
            let ready = Ready::chat(chat[replica]);
            *process = Some(env.start("chat-server", &name, chat_env, ready).await);
        }
        let gateway = SocketAddr::new(LOOPBACK, free_port(&[LOOPBACK]));
        let gateway_env = env.gateway(gateway, auth, chat, group);
        let ready = Ready::gateway(gateway);
        let gateway_process = env.start("gateway", "gateway", gateway_env, ready).await;
        let nginx = Nginx::start(&dir.join("nginx"), gateway, Role::Ingress)
            .await
            .expect("nginx starts");
        let cluster = Self {
            nginx,
            chat,
            auth,
            group,
            gateway,
            gateway_process,
            chat_processes,
            group_process,
            auth_process,
            env,
        };
        for replica in 0..chat.len() {
            cluster.wait_until_the_gateway_reaches(replica).await;
        }
        cluster
    }

    /// The URL clients use: the Ingress.
    pub fn server(&self) -> String {
        format!("http://{}", self.nginx.addr)
    }

    /// The process ids of the gateway and the running chat replicas, by name (for their RSS).
    pub fn gateway_and_chat_pids(&self) -> Vec<(String, u32)> {
        let chat = self.chat_processes.iter().flatten();
        [&self.gateway_process]
            .into_iter()
            .chain(chat)
            .map(|process| (process.name().to_owned(), process.id()))
            .collect()
    }

    /// Sends SIGTERM to chat replica `replica` (what the kubelet does) and waits for it to exit,
    /// which must be with success within the shutdown timeout. Returns how long that took.
    pub async fn stop_chat(&mut self, replica: usize) -> Duration {
        let mut process = self.chat_processes[replica]
            .take()
            .expect("the replica is running");
        let started = Instant::now();
        let status = terminate(&mut process).await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM; its log: {}",
            process.name(),
            process.log().display()
        );
        started.elapsed()
    }

    /// Stops every component as a `helm uninstall` does (SIGTERM), the Ingress first (nginx
    /// keeps idle upstream connections open after the gateway's GOAWAY, which would hold the
    /// gateway's drain to its full timeout), then the gateway, chat, group and auth; each must exit
    /// with success.
    pub async fn stop(self) {
        let Self {
            nginx,
            mut gateway_process,
            mut chat_processes,
            mut group_process,
            mut auth_process,
            ..
        } = self;
        drop(nginx);
        let chat = chat_processes.iter_mut().flatten();
        let processes = [&mut gateway_process]
            .into_iter()
            .chain(chat)
            .chain([&mut group_process, &mut auth_process]);
        for process in processes {
            let stopping = Instant::now();
            let status = terminate(process).await;
            assert!(
                status.success(),
                "{} exited with {status} after SIGTERM; its log: {}",
                process.name(),
                process.log().display()
            );
            eprintln!("{} stopped in {:?}", process.name(), stopping.elapsed());
        }
    }

    /// Starts chat replica `replica` again and waits until it is ready and the gateway has
    /// connections to it (on Kubernetes: the pod is ready, in the headless Service's answers, and
    /// the old pod's preStop sleep outlasts the gateway's re-resolution).
    pub async fn start_chat(&mut self, replica: usize) {
        assert!(self.chat_processes[replica].is_none(), "already running");
        let env = self.env.chat(self.chat[replica], self.auth, self.group);
        let name = format!("chat-{replica}");
        let ready = Ready::chat(self.chat[replica]);
        let process = self.env.start("chat-server", &name, env, ready).await;
        self.chat_processes[replica] = Some(process);
        self.wait_until_the_gateway_reaches(replica).await;
    }

    #[allow(dead_code)] // Used by the fault suite (client/tests/faults), which shares this file.
    /// Kills chat replica `replica` with SIGKILL (a crashed pod: no drain, connections reset).
    pub fn kill_chat(&mut self, replica: usize) {
        let process = self.chat_processes[replica]
            .take()
            .expect("the replica is running");
        drop(process);
    }

    #[allow(dead_code)] // Used by the fault suite.
    /// Kills the gateway with SIGKILL, then starts it again on the same port and waits until
    /// it is ready and connected to both chat replicas (nginx in front stays up, as the
    /// Ingress does when a gateway pod crashes and is replaced).
    pub async fn kill_and_restart_gateway(&mut self) {
        self.gateway_process.kill();
        let env = self
            .env
            .gateway(self.gateway, self.auth, self.chat, self.group);
        let ready = Ready::gateway(self.gateway);
        self.gateway_process = self.env.start("gateway", "gateway", env, ready).await;
        for replica in 0..self.chat.len() {
            if self.chat_processes[replica].is_some() {
                self.wait_until_the_gateway_reaches(replica).await;
            }
        }
    }

    /// Waits until the gateway holds an established connection to chat replica `replica`
    /// (to its routed address).
    async fn wait_until_the_gateway_reaches(&self, replica: usize) {
        let deadline = Deadline::after(START_TIMEOUT, "the gateway to connect to a chat replica");
        let peer = (self.env.route)(Link::GatewayToChat(replica), self.chat[replica]);
        while !connected(self.gateway_process.id(), peer) {
            deadline.tick().await;
        }
    }
}

/// When a started process counts as ready: `service` at `addr` SERVING on gRPC health (the
/// chart's readiness probe), then, with `probe`, a call with the environment's probe token that
/// is no longer UNAVAILABLE (`testkit::stack::ready`, as for a service in process).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ready {
    pub(crate) addr: SocketAddr,
    pub(crate) service: Service,
    pub(crate) probe: bool,
}

impl Ready {
    pub(crate) fn auth(addr: SocketAddr) -> Self {
        Self::probed(addr, Service::Auth)
    }

    pub(crate) fn group(addr: SocketAddr) -> Self {
        Self::probed(addr, Service::Group)
    }

    pub(crate) fn chat(addr: SocketAddr) -> Self {
        Self::probed(addr, Service::Chat)
    }

    /// The gateway: health, then the probe through it to auth (what its `/readyz` tells: auth's
    /// key set and revocations read).
    pub(crate) fn gateway(addr: SocketAddr) -> Self {
        Self::probed(addr, Service::Gateway)
    }

    /// Health SERVING only, exactly the chart's readiness probe (a rollout's pods).
    pub(crate) fn serving(addr: SocketAddr, service: Service) -> Self {
        Self {
            addr,
            service,
            probe: false,
        }
    }

    fn probed(addr: SocketAddr, service: Service) -> Self {
        Self {
            addr,
            service,
            probe: true,
        }
    }
}

impl Environment {
    /// The binaries of `target/<profile>`, the chart's Secrets written under `dir`, and the
    /// migrations applied to `database_url` (the chart's Job).
    pub(crate) fn prepare(dir: &Path, database_url: &str, route: Route) -> Self {
        let bin_dir = binaries_dir(&["auth", "chat-server", "group", "gateway", "migrate"])
            .unwrap_or_else(|error| panic!("{error:#}"));
        let mut env = Self {
            bin_dir,
            dir: dir.to_owned(),
            database_url: database_url.to_owned(),
            route,
            probe_token: String::new(),
        };
        env.write_secrets();
        env.migrate();
        let signing_key = fs::read_to_string(env.secret_file("signing-key", "signing-key.pem"))
            .expect("the signing key was written");
        env.probe_token = probe_token_signed_with(&signing_key, TOKEN_ISSUER, TOKEN_AUDIENCE)
            .expect("auth keygen writes a signing key");
        env
    }

    /// The chart's Secrets, mounted as files under `run/secrets/chat/<volume>/<key>`.
    fn write_secrets(&self) {
        let signing_key = Command::new(self.bin_dir.join("auth"))
            .arg("keygen")
            .env_clear()
            .output()
            .expect("auth keygen runs");
        assert!(signing_key.status.success(), "auth keygen failed");
        let random = || hex::encode(uuid::Uuid::new_v4().as_bytes());
        // 64 hex digits are also valid base64 (of 48 bytes), which the refresh-token secret
        // must be; they carry 32 random bytes.
        let refresh_token_secret = format!("{}{}", random(), random());
        let service_secret = format!("{}{}", random(), random());
        for (volume, file, value) in [
            ("signing-key", "signing-key.pem", &signing_key.stdout[..]),
            (
                "refresh-token-secret",
                "refresh-token-secret",
                refresh_token_secret.as_bytes(),
            ),
            (
                "service-secret",
                "service-secret",
                service_secret.as_bytes(),
            ),
        ] {
            let dir = self.secret_dir(volume);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), value).unwrap();
        }
    }

    fn secret_dir(&self, volume: &str) -> PathBuf {
        self.dir.join("run/secrets/chat").join(volume)
    }

    fn secret_file(&self, volume: &str, file: &str) -> String {
        self.secret_dir(volume).join(file).display().to_string()
    }

    /// The migrations Job: `migrate` with `MIGRATE_DATABASE_URL`.
    fn migrate(&self) {
        let log = self.dir.join("migrate.log");
        let status = Command::new(self.bin_dir.join("migrate"))
            .env_clear()
            .env("MIGRATE_DATABASE_URL", &self.database_url)
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(&log).unwrap())
            .status()
            .expect("the migrate binary runs");
        assert!(
            status.success(),
            "migrate failed; its log: {}",
            log.display()
        );
    }

    /// `chat.env.server`, `chat.env.database`, `chat.env.token` and `chat.env.serviceSecret`.
    fn common(&self, prefix: &str, listen: SocketAddr, parts: &[&str]) -> Vec<(String, String)> {
        let mut env = vec![
            ("LISTEN_ADDR", listen.to_string()),
            // `TEST_GATEWAY_LOG=info,h2=debug` and the like, to debug a run.
            (
                "LOG",
                std::env::var(format!("TEST_{prefix}_LOG")).unwrap_or_else(|_| "info".to_owned()),
            ),
            ("LOG_FORMAT", "json".to_owned()),
            (
                "SHUTDOWN_TIMEOUT_SECS",
                SHUTDOWN_TIMEOUT.as_secs().to_string(),
            ),
        ];
        if parts.contains(&"database") {
            env.push(("DATABASE_URL", self.database_url.clone()));
            env.push(("DATABASE_MAX_CONNECTIONS", "10".to_owned()));
        }
        if parts.contains(&"token") {
            env.push(("TOKEN_ISSUER", TOKEN_ISSUER.to_owned()));
            env.push(("TOKEN_AUDIENCE", TOKEN_AUDIENCE.to_owned()));
            env.push(("REVOCATION_MAX_STALENESS_SECS", "10".to_owned()));
        }
        if parts.contains(&"service-secret") {
            let file = self.secret_file("service-secret", "service-secret");
            env.push(("SERVICE_SECRET_FILE", file));
        }
        env.into_iter()
            .map(|(setting, value)| (format!("{prefix}_{setting}"), value))
            .collect()
    }

    /// `chat.env.auth.own`.
    pub(crate) fn auth(&self, listen: SocketAddr) -> Vec<(String, String)> {
        let mut env = self.common("AUTH", listen, &["database", "token", "service-secret"]);
        env.extend([
            ("AUTH_ACCESS_TOKEN_TTL_SECS".to_owned(), "900".to_owned()),
            (
                "AUTH_PASSWORD_HASHING_CONCURRENCY".to_owned(),
                "2".to_owned(),
            ),
            (
                "AUTH_SIGNING_KEY_FILE".to_owned(),
                self.secret_file("signing-key", "signing-key.pem"),
            ),
            (
                "AUTH_REFRESH_TOKEN_SECRET_FILE".to_owned(),
                self.secret_file("refresh-token-secret", "refresh-token-secret"),
            ),
        ]);
        env
    }

    /// `chat.env.group.own`.
    pub(crate) fn group(&self, listen: SocketAddr, auth: SocketAddr) -> Vec<(String, String)> {
        let mut env = self.common("GROUP", listen, &["database", "token", "service-secret"]);
        let auth = (self.route)(Link::GroupToAuth, auth);
        env.push(("GROUP_AUTH_URL".to_owned(), format!("http://{auth}")));
        env
    }

    /// `chat.env.chat.own`.
    pub(crate) fn chat(
        &self,
        listen: SocketAddr,
        auth: SocketAddr,
        group: SocketAddr,
    ) -> Vec<(String, String)> {
        let mut env = self.common("CHAT", listen, &["database", "token", "service-secret"]);
        let auth = (self.route)(Link::ChatToAuth, auth);
        let group = (self.route)(Link::ChatToGroup, group);
        env.push(("CHAT_AUTH_URL".to_owned(), format!("http://{auth}")));
        env.push(("CHAT_GROUP_URL".to_owned(), format!("http://{group}")));
        if let Some(database) = database_addr(&self.database_url) {
            let routed = (self.route)(Link::ChatToDatabase, database);
            let url = self
                .database_url
                .replacen(&database.to_string(), &routed.to_string(), 1);
            for (name, value) in &mut env {
                if name == "CHAT_DATABASE_URL" {
                    value.clone_from(&url);
                }
            }
        }
        env
    }

    /// `chat.env.gateway.own`: every chat replica in `GATEWAY_CHAT_URL` (see the module docs).
    pub(crate) fn gateway(
        &self,
        listen: SocketAddr,
        auth: SocketAddr,
        chat: [SocketAddr; 2],
        group: SocketAddr,
    ) -> Vec<(String, String)> {
        let mut env = self.common("GATEWAY", listen, &["token", "service-secret"]);
        let chat_urls: Vec<String> = chat
            .iter()
            .enumerate()
            .map(|(replica, addr)| (self.route)(Link::GatewayToChat(replica), *addr))
            .map(|addr| format!("http://{addr}"))
            .collect();
        env.extend([
            ("GATEWAY_AUTH_URL".to_owned(), format!("http://{auth}")),
            ("GATEWAY_CHAT_URL".to_owned(), chat_urls.join(",")),
            ("GATEWAY_GROUP_URL".to_owned(), format!("http://{group}")),
            (
                "GATEWAY_UPSTREAM_RESOLVE_INTERVAL_SECS".to_owned(),
                "10".to_owned(),
            ),
            ("GATEWAY_CORS_ALLOWED_ORIGINS".to_owned(), String::new()),
            // /metrics has a port of its own (default 127.0.0.1:9090): any free one here.
            (
                "GATEWAY_METRICS_LISTEN_ADDR".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
        ]);
        env
    }

    /// Starts `binary` with exactly `env` (as in a container: nothing inherited), its output
    /// to `<dir>/<name>.log`, and waits until it is `ready`.
    pub(crate) async fn start(
        &self,
        binary: &str,
        name: &str,
        env: Vec<(String, String)>,
        ready: Ready,
    ) -> Process {
        let log = self.dir.join(format!("{name}.log"));
        let mut process = Process::spawn(&self.bin_dir.join(binary), name, env, &log)
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error:#}"));
        let probe = ready.probe.then_some(self.probe_token.as_str());
        process
            .wait_until_ready(ready.addr, ready.service, probe, START_TIMEOUT)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"));
        process
    }
}

/// SIGTERM, then waits for the exit (the drain may last up to the shutdown timeout).
pub(crate) async fn terminate(process: &mut Process) -> ExitStatus {
    process
        .terminate(SHUTDOWN_TIMEOUT + Duration::from_secs(5))
        .await
        .unwrap_or_else(|error| panic!("{error:#}"))
}

/// The `host:port` of a `postgres://user@host:port/db` URL, when it is an IP address.
fn database_addr(url: &str) -> Option<SocketAddr> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    authority.rsplit('@').next()?.parse().ok()
}

/// Whether process `pid` holds an established TCP connection to `peer`: its socket inodes
/// (`/proc/<pid>/fd`) against the connection table (`/proc/net/tcp`).
pub(crate) fn connected(pid: u32, peer: SocketAddr) -> bool {
    let SocketAddr::V4(peer) = peer else {
        return false;
    };
    let inodes: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    // The table shows an IPv4 address as the hex of its bytes read as a little-endian u32.
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(peer.ip().octets()),
        peer.port()
    );
    const ESTABLISHED: &str = "01";
    fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str())
                && fields.get(3) == Some(&ESTABLISHED)
                && fields.get(9).is_some_and(|inode| inodes.contains(*inode))
        })
}
