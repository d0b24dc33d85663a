//! The real system on loopback for the browser tests: auth, group and chat on port 0, and the
//! gateway serving the built web demo (`GATEWAY_WEB_ROOT`), all started by `testkit::stack`'s
//! starters (each ready before the next); the gateway and chat can be stopped and started again
//! where they were (their configs then name the address they had).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use client::{KeyOptions, Profile, Session, keystore::KdfParams};
use secrecy::SecretString;
use sqlx::PgPool;
use testkit::stack::{
    Database, Launch, Runtime, Server as Service, Service as Kind, probe_token,
    ready::wait_until_available, start_auth, start_chat, start_gateway, start_group, upstreams,
    uri,
};

use crate::{attacks::MaliciousServer, postgres::Postgres, rewriting_proxy::RewritingProxy};

/// The password of every user, the page's too (`run_scenario` hands it to the script).
pub use testkit::PASSWORD;
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

/// How long chat may take to answer through the gateway once both run (the wait this replaced
/// gave it 400 tries of 25 ms).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A service the tests stop and start again where it was: its config (listening at the address
/// it had) and, while it runs, the running service.
struct Restartable<C> {
    config: C,
    running: Option<Service>,
}

pub struct Stack {
    pub gateway: SocketAddr,
    pub db: PgPool,
    /// With [`Stack::spawn_malicious`]: the proxies in front of every service, which tests make
    /// lie.
    pub malicious: Option<MaliciousServer>,
    launch: Launch,
    /// A token every service of the stack accepts, for the readiness waits.
    probe_token: String,
    gateway_service: Restartable<gateway::Config>,
    chat: Restartable<chat::Config>,
    /// Auth and group: they run until the test's runtime ends.
    _services: [Service; 2],
    profiles: Vec<PathBuf>,
    /// The CLI users' profiles, by username (the last device made for each).
    profile_dirs: HashMap<String, PathBuf>,
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
        let launch = Launch {
            database: Database::Pool(db.clone()),
            runtime: Runtime::Shared,
            metrics: false,
            pool_size: None,
        };
        let mut auth_config = auth::Config::for_tests();
        configure_auth(&mut auth_config);
        let probe_token = probe_token(&auth_config).unwrap();
        let probe = Some(probe_token.as_str());
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
        let chat = start_chat(chat_config.clone(), &launch, probe)
            .await
            .unwrap();
        // Started again, it listens where it did (behind the malicious proxy, if any).
        chat_config.server.listen_addr = chat.addr;
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
        gateway_config.web_root = Some(web_root.to_owned());
        let gateway = start_gateway(gateway_config.clone(), Runtime::Shared, probe)
            .await
            .unwrap();
        gateway_config.server.listen_addr = gateway.addr;
        let stack = Stack {
            gateway: gateway.addr,
            db,
            malicious,
            launch,
            probe_token,
            gateway_service: Restartable {
                config: gateway_config,
                running: Some(gateway),
            },
            chat: Restartable {
                config: chat_config,
                running: Some(chat),
            },
            _services: [auth, group],
            profiles: Vec::new(),
            profile_dirs: HashMap::new(),
            postgres: None,
        };
        stack.wait_until_chat_answers().await;
        stack
    }

    /// Waits until a call to chat through the gateway is no longer UNAVAILABLE (the gateway
    /// reaches chat, and chat checks tokens).
    async fn wait_until_chat_answers(&self) {
        wait_until_available(self.gateway, Kind::Chat, &self.probe_token, ANSWER_TIMEOUT)
            .await
            .expect("chat answers through the gateway");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    fn server(&self) -> client::Server {
        client::Server::new(&self.url(), None).unwrap()
    }

    /// Stops the gateway (its streams end, its port closes) and waits until it has.
    pub async fn stop_gateway(&mut self) {
        if let Some(running) = self.gateway_service.running.take() {
            running.stop().await.unwrap();
        }
    }

    /// Starts the gateway again on the same port, and waits until chat answers through it.
    pub async fn start_gateway(&mut self) {
        let config = self.gateway_service.config.clone();
        let gateway = start_gateway(config, Runtime::Shared, Some(&self.probe_token))
            .await
            .unwrap();
        self.gateway_service.running = Some(gateway);
        self.wait_until_chat_answers().await;
    }

    /// Stops the chat service (its streams end, its port closes): the gateway answers chat's
    /// calls with UNAVAILABLE while auth and group go on.
    pub async fn stop_chat(&mut self) {
        if let Some(running) = self.chat.running.take() {
            running.stop().await.unwrap();
        }
    }

    /// Starts the chat service again on the same port, and waits until it answers through the
    /// gateway.
    pub async fn start_chat(&mut self) {
        let config = self.chat.config.clone();
        let chat = start_chat(config, &self.launch, Some(&self.probe_token))
            .await
            .unwrap();
        self.chat.running = Some(chat);
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
