//! The real system on loopback for the browser tests: auth, group and chat on port 0, and the
//! gateway serving the built web demo (`GATEWAY_WEB_ROOT`) on a port that stays the same when the
//! gateway is stopped and started again; chat too can be stopped and started again on its port.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use client::{KeyOptions, Profile, Session, keystore::KdfParams};

use crate::{attacks::MaliciousServer, postgres::Postgres, rewriting_proxy::RewritingProxy};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::oneshot,
    task::JoinHandle,
};

pub const PASSWORD: &str = "correct horse battery";
/// What seals the CLI users' keys (never the password).
pub const PASSPHRASE: &str = "a separate device passphrase";

/// Small RSA keys and the cheapest argon2 allowed for the in-process CLI users.
const TEST_KEYS: KeyOptions = KeyOptions {
    rsa_bits: 2048,
    kdf: KdfParams {
        m_cost: KdfParams::MIN_MEMORY_KIB,
        t_cost: KdfParams::MIN_ITERATIONS,
        p_cost: 1,
    },
};

/// A running service (the gateway, chat): stop it by sending on `stop` and awaiting `task`.
struct RunningService {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The chat service as started (behind the malicious proxy, if any, which forwards to its port).
struct ChatService {
    addr: SocketAddr,
    config: chat::Config,
    running: Option<RunningService>,
}

pub struct Stack {
    pub gateway: SocketAddr,
    pub db: PgPool,
    /// With [`Stack::spawn_malicious`]: the proxies in front of every service, which tests make
    /// lie.
    pub malicious: Option<MaliciousServer>,
    config: gateway::Config,
    running: Option<RunningService>,
    chat: ChatService,
    profiles: Vec<PathBuf>,
    /// The CLI users' profiles, by username (the last device made for each).
    profile_dirs: HashMap<String, PathBuf>,
    probe: Option<Arc<Session>>,
    /// The stack's own PostgreSQL, when the test started one (to stop it and start it again);
    /// `None` on a `#[sqlx::test]` database.
    pub postgres: Option<Postgres>,
}

impl Stack {
    pub async fn spawn(db: PgPool, web_root: &Path) -> Stack {
        Stack::spawn_full(db, web_root, |_| {}, false).await
    }

    /// As [`Stack::spawn`], with auth's configuration adjusted.
    pub async fn spawn_with(
        db: PgPool,
        web_root: &Path,
        configure_auth: impl FnOnce(&mut auth::Config),
    ) -> Stack {
        Stack::spawn_full(db, web_root, configure_auth, false).await
    }

    /// As [`Stack::spawn`], with every service behind a proxy that tests can make lie
    /// ([`Stack::malicious`]): auth's answers to the gateway, chat and group, group's to the
    /// gateway and chat, chat's to the gateway.
    pub async fn spawn_malicious(db: PgPool, web_root: &Path) -> Stack {
        Stack::spawn_full(db, web_root, |_| {}, true).await
    }

    async fn spawn_full(
        db: PgPool,
        web_root: &Path,
        configure_auth: impl FnOnce(&mut auth::Config),
        malicious: bool,
    ) -> Stack {
        let mut auth_config = auth::Config::for_tests();
        configure_auth(&mut auth_config);
        let pool = db.clone();
        let mut auth_addr = spawn_service(|listener| {
            auth::run(auth_config, db.clone(), listener, std::future::pending())
        })
        .await;
        let auth_proxy = if malicious {
            let proxy = RewritingProxy::start(auth_addr).await;
            auth_addr = proxy.addr;
            Some(proxy)
        } else {
            None
        };
        let auth_url = format!("http://{auth_addr}");
        let mut group_addr = spawn_service(|listener| {
            group::run(
                group::Config::for_tests(&auth_url),
                db.clone(),
                listener,
                std::future::pending(),
            )
        })
        .await;
        let group_proxy = if malicious {
            let proxy = RewritingProxy::start(group_addr).await;
            group_addr = proxy.addr;
            Some(proxy)
        } else {
            None
        };
        let chat_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut chat_addr = chat_listener.local_addr().unwrap();
        let mut chat = ChatService {
            addr: chat_addr,
            config: chat_config(&auth_url, &format!("http://{group_addr}")),
            running: None,
        };
        chat.running = Some(start_chat_on(&chat.config, &db, chat_listener));
        let malicious = match (auth_proxy, group_proxy) {
            (Some(auth), Some(group)) => {
                let chat_proxy = RewritingProxy::start(chat_addr).await;
                chat_addr = chat_proxy.addr;
                Some(MaliciousServer {
                    auth,
                    group,
                    chat: chat_proxy,
                })
            }
            _ => None,
        };
        let uri = |addr: SocketAddr| format!("http://{addr}").parse().unwrap();
        let mut config = gateway::Config::for_tests(gateway::UpstreamSettings {
            auth: uri(auth_addr),
            chat: uri(chat_addr),
            group: uri(group_addr),
            resolve_interval: Duration::from_secs(10),
            hosts_file: None,
            connect_timeout: Duration::from_millis(500),
            connections_per_address: 2,
        });
        config.web_root = Some(web_root.to_owned());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut stack = Stack {
            gateway: listener.local_addr().unwrap(),
            db: pool,
            malicious,
            config,
            running: None,
            // Kept even when no test stops it: dropping its stop sender would stop it.
            chat,
            profiles: Vec::new(),
            profile_dirs: HashMap::new(),
            probe: None,
            postgres: None,
        };
        stack.start_gateway_on(listener);
        stack.wait_until_chat_answers().await;
        stack
    }

    /// The gateway and chat fetch auth's token keys in the background after starting: waits
    /// until an authenticated call goes through (as a probe user).
    async fn wait_until_chat_answers(&mut self) {
        self.wait_until_gateway_ready().await;
        if self.probe.is_none() {
            self.probe = Some(self.cli_user("web-demo-probe").await);
        }
        let probe = self.probe.clone().unwrap();
        for _ in 0..400 {
            match probe.conversations().await {
                Ok(_) => return,
                Err(client::Error::Unavailable(..) | client::Error::Auth(..)) => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(error) => panic!("{error}"),
            }
        }
        panic!("chat never answered through the gateway");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    fn server(&self) -> client::Server {
        client::Server::new(&self.url(), None).unwrap()
    }

    fn start_gateway_on(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run(self.config.clone(), listener, async {
            let _ = stopped.await;
        }));
        self.running = Some(RunningService { stop, task });
    }

    /// Stops the gateway (its streams end, its port closes) and waits until it has.
    pub async fn stop_gateway(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            running.task.await.unwrap().unwrap();
        }
    }

    /// Waits until the gateway's `/readyz` answers 200 (it has auth's token keys).
    async fn wait_until_gateway_ready(&self) {
        for _ in 0..400 {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(self.gateway).await {
                let request =
                    "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
                let mut answer = Vec::new();
                if stream.write_all(request.as_bytes()).await.is_ok()
                    && stream.read_to_end(&mut answer).await.is_ok()
                    && answer.starts_with(b"HTTP/1.1 200")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the gateway never became ready");
    }

    /// Starts the gateway again on the same port.
    pub async fn start_gateway(&mut self) {
        let listener = TcpListener::bind(self.gateway).await.unwrap();
        self.start_gateway_on(listener);
        self.wait_until_chat_answers().await;
    }

    /// Stops the chat service (its streams end, its port closes): the gateway answers chat's
    /// calls with UNAVAILABLE while auth and group go on.
    pub async fn stop_chat(&mut self) {
        if let Some(running) = self.chat.running.take() {
            let _ = running.stop.send(());
            running.task.await.unwrap().unwrap();
        }
    }

    /// Starts the chat service again on the same port, and waits until it answers through the
    /// gateway.
    pub async fn start_chat(&mut self) {
        let listener = TcpListener::bind(self.chat.addr).await.unwrap();
        self.chat.running = Some(start_chat_on(&self.chat.config, &self.db, listener));
        self.wait_until_chat_answers().await;
    }

    /// Registers `username` and logs in a CLI device (the `client` library) on a new profile.
    pub async fn cli_user(&mut self, username: &str) -> Arc<Session> {
        let password = SecretString::from(PASSWORD.to_owned());
        client::register(&self.server(), username, &password, "")
            .await
            .unwrap();
        self.cli_device(username).await
    }

    /// A new CLI device of `username` (a login on a new profile, with new keys).
    pub async fn cli_device(&mut self, username: &str) -> Arc<Session> {
        let password = SecretString::from(PASSWORD.to_owned());
        let dir = std::env::temp_dir().join(format!("chat-web-demo-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        self.profiles.push(dir.clone());
        self.profile_dirs.insert(username.to_owned(), dir.clone());
        let profile = Profile::open(dir).unwrap();
        let session = Session::login(
            profile,
            &self.server(),
            username,
            &password,
            &SecretString::from(PASSPHRASE.to_owned()),
            TEST_KEYS,
        )
        .await
        .unwrap();
        Arc::new(session)
    }
}

impl Stack {
    /// The profile directory of the CLI user `username` (its newest device).
    pub fn profile_dir(&self, username: &str) -> Option<&Path> {
        self.profile_dirs.get(username).map(PathBuf::as_path)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for dir in &self.profiles {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn start_chat_on(config: &chat::Config, db: &PgPool, listener: TcpListener) -> RunningService {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(chat::run(config.clone(), db.clone(), listener, async {
        let _ = stopped.await;
    }));
    RunningService { stop, task }
}

/// Chat's test configuration, naming the group service (which chat asks for membership).
fn chat_config(auth_url: &str, group_url: &str) -> chat::Config {
    let mut config = chat::Config::for_tests(auth_url);
    config.group_url = group_url.to_owned();
    config
}

async fn spawn_service<F, Fut, E>(run: F) -> SocketAddr
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(run(listener));
    addr
}
