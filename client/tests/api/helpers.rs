use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use client::{KeyOptions, LiveEvent, Profile, Server, Session, keystore::KdfParams};
use secrecy::SecretString;

use crate::{attacks::MaliciousServer, rewriting_proxy::RewritingProxy};
use sqlx::PgPool;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

pub const PASSWORD: &str = "correct horse battery";
/// The passphrase that seals the test devices' keys (never the password).
pub const PASSPHRASE: &str = "a separate device passphrase";

/// Small RSA keys and the cheapest argon2 allowed for fast tests.
pub const TEST_KEYS: KeyOptions = KeyOptions {
    rsa_bits: 2048,
    kdf: KdfParams {
        m_cost: KdfParams::MIN_MEMORY_KIB,
        t_cost: KdfParams::MIN_ITERATIONS,
        p_cost: 1,
    },
};

/// Real auth, chat and group services and the real gateway in front of them, on loopback.
pub struct TestEnv {
    pub gateway: SocketAddr,
    pub db: PgPool,
    /// When the gateway serves TLS: the CA that signed its certificate.
    pub tls: Option<TestCa>,
    /// In a malicious environment ([`spawn_malicious_env`]): the proxies through which every
    /// call to auth, group and chat goes, which tests make lie.
    pub malicious: Option<MaliciousServer>,
    dirs: Mutex<Vec<TempDir>>,
}

pub async fn spawn_env(db: PgPool) -> TestEnv {
    spawn_env_with(db, |_| {}).await
}

/// As [`spawn_env`], with the gateway serving TLS only, with a certificate for 127.0.0.1 and
/// localhost from a private CA ([`TestEnv::tls`]).
pub async fn spawn_tls_env(db: PgPool) -> TestEnv {
    spawn_env_full(db, |_| {}, Some(TestCa::new()), false).await
}

/// As [`spawn_env`], with auth's configuration adjusted.
pub async fn spawn_env_with(db: PgPool, configure_auth: impl FnOnce(&mut auth::Config)) -> TestEnv {
    spawn_env_full(db, configure_auth, None, false).await
}

/// As [`spawn_env`], with every service behind a proxy that tests can make lie
/// ([`TestEnv::malicious`]).
pub async fn spawn_malicious_env(db: PgPool) -> TestEnv {
    spawn_env_full(db, |_| {}, None, true).await
}

async fn spawn_env_full(
    db: PgPool,
    configure_auth: impl FnOnce(&mut auth::Config),
    tls: Option<TestCa>,
    malicious: bool,
) -> TestEnv {
    let mut auth_config = auth::Config::for_tests();
    configure_auth(&mut auth_config);
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
    let mut chat_addr = spawn_service(|listener| {
        chat::run(
            chat_config(&auth_url, &format!("http://{group_addr}")),
            db.clone(),
            listener,
            std::future::pending(),
        )
    })
    .await;
    let malicious = match (auth_proxy, group_proxy) {
        (Some(auth), Some(group)) => {
            let chat = RewritingProxy::start(chat_addr).await;
            chat_addr = chat.addr;
            Some(MaliciousServer { auth, group, chat })
        }
        _ => None,
    };
    let uri = |addr: SocketAddr| format!("http://{addr}").parse().unwrap();
    let upstreams = gateway::UpstreamSettings {
        auth: uri(auth_addr),
        chat: uri(chat_addr),
        group: uri(group_addr),
        resolve_interval: Duration::from_secs(10),
        hosts_file: None,
        connect_timeout: Duration::from_millis(500),
        connections_per_address: 2,
    };
    let mut gateway_config = gateway::Config::for_tests(upstreams);
    gateway_config.tls = tls
        .as_ref()
        .map(|ca| (ca.gateway_chain.clone(), ca.gateway_key.clone()));
    let gateway =
        spawn_service(|listener| gateway::run(gateway_config, listener, std::future::pending()))
            .await;
    TestEnv {
        gateway,
        db,
        tls,
        malicious,
        dirs: Mutex::new(Vec::new()),
    }
}

/// A private CA, and a certificate for 127.0.0.1 and localhost that it signed, as PEM files.
pub struct TestCa {
    /// The CA's certificate: what a client must trust.
    pub ca_file: PathBuf,
    pub gateway_chain: PathBuf,
    pub gateway_key: PathBuf,
    _dir: TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "chat test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let gateway_key = KeyPair::generate().unwrap();
        let gateway = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&gateway_key, &ca)
            .unwrap();
        let dir = TempDir::new();
        let ca_file = dir.0.join("ca.pem");
        let gateway_chain = dir.0.join("gateway.pem");
        let gateway_key_file = dir.0.join("gateway-key.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&gateway_chain, gateway.pem()).unwrap();
        std::fs::write(&gateway_key_file, gateway_key.serialize_pem()).unwrap();
        TestCa {
            ca_file,
            gateway_chain,
            gateway_key: gateway_key_file,
            _dir: dir,
        }
    }
}

/// Chat's test configuration, naming the group service (which chat asks for group membership).
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

impl TestEnv {
    /// The gateway's URL: `https://` when it serves TLS.
    pub fn server(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.gateway)
    }

    /// The gateway for the `client` library, trusting the test CA when it serves TLS.
    pub fn connection(&self) -> Server {
        self.connection_via(&self.server())
    }

    fn connection_via(&self, url: &str) -> Server {
        Server::new(url, self.tls.as_ref().map(|ca| ca.ca_file.as_path())).unwrap()
    }

    /// A fresh, empty profile directory, removed at the end of the test.
    pub fn profile_dir(&self) -> PathBuf {
        let dir = TempDir::new();
        let path = dir.0.clone();
        self.dirs.lock().unwrap().push(dir);
        path
    }

    /// Registers `username` and logs in on a new profile.
    pub async fn user(&self, username: &str) -> Arc<Session> {
        client::register(&self.connection(), username, &password(), "")
            .await
            .unwrap();
        self.device(username).await
    }

    /// A new device of `username` (a login on a new profile).
    pub async fn device(&self, username: &str) -> Arc<Session> {
        self.device_via(username, &self.server()).await
    }

    /// A new device of `username` that reaches the gateway through `server`.
    pub async fn device_via(&self, username: &str, server: &str) -> Arc<Session> {
        let profile = Profile::open(self.profile_dir()).unwrap();
        let server = self.connection_via(server);
        let session = Session::login(
            profile,
            &server,
            username,
            &password(),
            &passphrase(),
            TEST_KEYS,
        )
        .await
        .unwrap();
        wait_until_chat_answers(&session).await;
        Arc::new(session)
    }
}

pub fn password() -> SecretString {
    PASSWORD.to_owned().into()
}

pub fn passphrase() -> SecretString {
    PASSPHRASE.to_owned().into()
}

/// The gateway and chat fetch auth's token keys in the background after starting.
async fn wait_until_chat_answers(session: &Session) {
    for _ in 0..200 {
        match session.conversations().await {
            Ok(_) => return,
            Err(client::Error::Unavailable(..) | client::Error::Auth(..)) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
    panic!("chat never answered through the gateway");
}

/// The next event of a live conversation that is not a connection notice, within 10 s.
pub async fn next_event(live: &mut client::Live) -> LiveEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), live.events.recv())
            .await
            .expect("an event within 10 s")
            .expect("the conversation is running");
        if !matches!(event, LiveEvent::Connected) {
            return event;
        }
    }
}

/// The texts of the next `n` messages, with their sequences, skipping other events.
pub async fn next_texts(live: &mut client::Live, n: usize) -> Vec<(u64, String)> {
    let mut texts = Vec::new();
    while texts.len() < n {
        if let LiveEvent::Message(message) = next_event(live).await {
            texts.push((message.sequence, text_of(&message)));
        }
    }
    texts
}

/// Waits for `CaughtUp`, returning the texts shown before it.
pub async fn until_caught_up(live: &mut client::Live) -> Vec<(u64, String)> {
    let mut texts = Vec::new();
    loop {
        match next_event(live).await {
            LiveEvent::Message(message) => texts.push((message.sequence, text_of(&message))),
            LiveEvent::CaughtUp => return texts,
            _ => {}
        }
    }
}

/// Waits for `CaughtUp`, returning the messages shown before it, whatever their content.
pub async fn messages_until_caught_up(live: &mut client::Live) -> Vec<client::ReceivedText> {
    let mut messages = Vec::new();
    loop {
        match next_event(live).await {
            LiveEvent::Message(message) => messages.push(message),
            LiveEvent::CaughtUp => return messages,
            _ => {}
        }
    }
}

pub fn text_of(message: &client::ReceivedText) -> String {
    match &message.content {
        client::Content::Verified { text } => text.clone(),
        client::Content::Failed { reason } => panic!("failed verification: {reason}"),
        client::Content::Replayed { first_sequence } => panic!("a replay of {first_sequence}"),
    }
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("chat-client-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP forwarder in front of the gateway whose connections can be cut, to drop streams.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl CuttableProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tracked, refusing) = (connections.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refusing.load(std::sync::atomic::Ordering::SeqCst) {
                    // Reset at once, as a host whose server is not running does.
                    let _ = inbound.set_zero_linger();
                    continue;
                }
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(handle);
            }
        });
        CuttableProxy {
            addr,
            connections,
            down,
        }
    }

    /// While `down`, every connection is reset as soon as it is accepted (and the open ones are
    /// cut): the server looks unreachable from behind the proxy.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            self.cut();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every open connection (new ones are accepted again).
    pub fn cut(&self) {
        for handle in self.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }
}
