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
use testkit::stack::{
    Database, Launch, Runtime, Server as Service, probe_token, start_auth, start_chat,
    start_gateway, start_group, upstreams, uri,
};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

pub use testkit::PASSWORD;
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
    /// Auth, group, chat and the gateway: they run until the test's runtime ends.
    _services: [Service; 4],
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

/// The services start one after another through `testkit::stack`'s starters (each ready
/// before the next), with a [`RewritingProxy`] in front of each in a malicious environment.
async fn spawn_env_full(
    db: PgPool,
    configure_auth: impl FnOnce(&mut auth::Config),
    tls: Option<TestCa>,
    malicious: bool,
) -> TestEnv {
    let launch = Launch {
        database: Database::Pool(db.clone()),
        runtime: Runtime::Shared,
        metrics: false,
        pool_size: None,
    };
    let mut auth_config = auth::Config::for_tests();
    configure_auth(&mut auth_config);
    let probe = probe_token(&auth_config).unwrap();
    let probe = Some(probe.as_str());
    let proxied = |addr: SocketAddr| async move {
        if malicious {
            let proxy = RewritingProxy::start(addr).await;
            (proxy.addr, Some(proxy))
        } else {
            (addr, None)
        }
    };
    let auth = start_auth(auth_config, &launch).await.unwrap();
    let (auth_addr, auth_proxy) = proxied(auth.addr).await;
    let auth_url = uri(auth_addr).to_string();
    let group = start_group(group::Config::for_tests(&auth_url), &launch, probe)
        .await
        .unwrap();
    let (group_addr, group_proxy) = proxied(group.addr).await;
    let mut chat_config = chat::Config::for_tests(&auth_url);
    chat_config.group_url = uri(group_addr).to_string();
    let chat = start_chat(chat_config, &launch, probe).await.unwrap();
    let (chat_addr, chat_proxy) = proxied(chat.addr).await;
    let malicious = match (auth_proxy, group_proxy, chat_proxy) {
        (Some(auth), Some(group), Some(chat)) => Some(MaliciousServer { auth, group, chat }),
        _ => None,
    };
    let mut gateway_config = gateway::Config::for_tests(upstreams(
        &uri(auth_addr),
        &uri(chat_addr),
        &uri(group_addr),
    ));
    gateway_config.tls = tls
        .as_ref()
        .map(|ca| (ca.gateway_chain.clone(), ca.gateway_key.clone()));
    let gateway = start_gateway(gateway_config, Runtime::Shared, probe)
        .await
        .unwrap();
    TestEnv {
        gateway: gateway.addr,
        db,
        tls,
        malicious,
        _services: [auth, group, chat, gateway],
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
        // One call to chat as the new device, as a first use would make. (Chat hears of a new
        // device from auth's device events, a moment after the login; a test that needs chat to
        // know it must wait for that itself: see `a_device_added_to_ones_own_account_...`.)
        session.conversations().await.unwrap();
        Arc::new(session)
    }
}

pub fn password() -> SecretString {
    PASSWORD.to_owned().into()
}

pub fn passphrase() -> SecretString {
    PASSPHRASE.to_owned().into()
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
