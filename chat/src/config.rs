//! The chat service's configuration, from `CHAT_*` environment variables (documented in
//! `chat/local.env.example`, which a test keeps in sync with this file).

use std::{net::SocketAddr, time::Duration};

use common::{
    config::{
        AccessTokenSettings, ConfigError, DatabaseSettings, EnvReader, FromEnv, SecretSource,
        ServerSettings,
    },
    service_credential,
};

/// Where chat listens unless `CHAT_LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 50062);

/// Everything the chat service reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address, logs, shutdown drain.
    pub server: ServerSettings,
    /// `CHAT_METRICS_LISTEN_ADDR`: where `/metrics` is served (plain HTTP); never the API port.
    /// Unset: no metrics port (see `common::config::optional_metrics_listen_addr`).
    pub metrics_listen_addr: Option<SocketAddr>,
    /// The PostgreSQL pool.
    pub database: DatabaseSettings,
    /// Where auth's token keys are and what tokens must say. Auth's `GetActiveDevices` is called
    /// at the same address.
    pub access_tokens: AccessTokenSettings,
    /// `CHAT_GROUP_URL`: the group service (`http://host:port`), asked for group membership,
    /// default `http://127.0.0.1:50063`.
    pub group_url: String,
    /// Every size and rate limit.
    pub limits: Limits,
    /// Group commit of sends.
    pub commit: CommitSettings,
    /// Streams: queues, heartbeats, the bus.
    pub streams: StreamSettings,
    /// The newest messages shared by the streams (see `recent.rs`).
    pub recent: RecentSettings,
    /// The bus between replicas (`delivery/bus.rs`).
    pub bus: BusSettings,
    /// `CHAT_SERVICE_SECRET` or `CHAT_SERVICE_SECRET_FILE` (secret, required): the deployment's
    /// service credential, for following group's membership events
    /// (`common::service_credential`).
    pub service_secret: SecretSource,
}

/// The limits the proto documents; every one is configurable, the defaults are the documented
/// values.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `CHAT_MAX_CIPHERTEXT_BYTES`: largest ciphertext (tag included), default 64 KiB.
    pub max_ciphertext_bytes: usize,
    /// `CHAT_MAX_WRAPPED_KEY_BYTES`: largest wrapped key, default 512 (RSA-4096 is 512 bytes).
    pub max_wrapped_key_bytes: usize,
    /// `CHAT_MAX_WRAPPED_KEYS`: most recipient devices per message, default 10,000.
    pub max_wrapped_keys: usize,
    /// `CHAT_MAX_PAGE_SIZE`: largest history and conversation page, default 200.
    pub max_page_size: u32,
    /// `CHAT_MAX_STREAMS_PER_DEVICE`: open streams per device on one replica, default 16.
    pub max_streams_per_device: usize,
    /// `CHAT_MAX_STREAM_SENDS_IN_FLIGHT`: sends on one OpenStream waiting for their commit at
    /// once; the stream reads no further request until one is answered, default 64.
    pub max_stream_sends_in_flight: usize,
    /// `CHAT_TYPING_INTERVAL_MS`: at most one typing indicator per conversation and device in this
    /// interval, default 2,000 ms.
    pub typing_interval: Duration,
}

/// How sends are group-committed (see `commit.rs`).
#[derive(Debug, Clone)]
pub struct CommitSettings {
    /// `CHAT_COMMIT_WINDOW_MICROS`: how long the committer collects sends after the first one
    /// before committing them together, default 0 (sends that arrive while a batch commits form
    /// the next one anyway; see `commit.rs`).
    pub window: Duration,
    /// `CHAT_COMMIT_MAX_BATCH`: most sends per transaction, default 512.
    pub max_batch: usize,
    /// `CHAT_COMMIT_QUEUE`: sends waiting for the committer before new sends wait their turn,
    /// default 8,192.
    pub queue: usize,
}

/// Streams and the bus that wakes them.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// `CHAT_STREAM_QUEUE`: events waiting to be written to one stream, default 256.
    pub queue: usize,
    /// `CHAT_STREAM_STALL_MS`: how long a live event may wait for room in a full queue before the
    /// stream ends with RESOURCE_EXHAUSTED (SLOW_CONSUMER), default 2,000 ms.
    pub stall_limit: Duration,
    /// `CHAT_STREAM_ACK_TIMEOUT_MS`: how long a stream's messages may wait for the device's
    /// acknowledgement, with its delivered position not moving, before the stream ends with
    /// RESOURCE_EXHAUSTED (SLOW_CONSUMER); only for the conversations the device acknowledges
    /// (see `delivery/stream.rs`), default 10,000 ms.
    pub ack_timeout: Duration,
    /// `CHAT_HEARTBEAT_SECS`: interval of heartbeat events, default 15 s.
    pub heartbeat: Duration,
    /// `CHAT_REPLAY_PAGE`: messages read from the database at a time when a stream catches up,
    /// default 100.
    pub replay_page: u32,
    /// `CHAT_NOTIFY_WINDOW_MICROS`: how long the bus publisher waits for more wake-ups before
    /// one NOTIFY, default 0 (wake-ups that arrive while a NOTIFY is sent go into the next one;
    /// see `bus.rs`).
    pub notify_window: Duration,
}

/// `CHAT_BUS`: which bus wakes the replicas.
#[derive(Debug, Clone)]
pub enum BusSettings {
    /// `postgres` (the default): LISTEN/NOTIFY on the database (`bus/pg.rs`).
    Postgres,
    /// `nats`: core NATS (`bus/nats.rs`).
    Nats(NatsSettings),
}

/// Where the NATS bus connects. Read (and checked) whatever `CHAT_BUS` says.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// `CHAT_NATS_URL`: the servers, comma-separated `nats://host:port` (or `tls://`), default
    /// `nats://127.0.0.1:4222`; the client learns the rest of a cluster from them. No user or
    /// password in the URL: credentials go in a file.
    pub servers: Vec<async_nats::ServerAddr>,
    /// `CHAT_NATS_SUBJECT`: the one subject every replica publishes to and subscribes to,
    /// default `chat.bus`; deployments sharing a NATS account need one each.
    pub subject: String,
    /// `CHAT_NATS_CREDENTIALS_FILE` (or `CHAT_NATS_CREDENTIALS`, secret, optional): a NATS
    /// credentials file (the user's JWT and nkey seed, as `nsc` writes it).
    pub credentials: Option<SecretSource>,
}

/// Bounds of the messages cached for streams (`recent.rs`).
#[derive(Debug, Clone)]
pub struct RecentSettings {
    /// `CHAT_RECENT_BYTES`: bytes of messages and wrapped keys held for all conversations,
    /// default 64 MiB.
    pub budget_bytes: usize,
    /// `CHAT_RECENT_PER_CONVERSATION`: newest messages held per conversation, default 64.
    pub per_conversation: usize,
    /// `CHAT_RECENT_CONVERSATIONS`: conversations held, default 10,000.
    pub max_conversations: usize,
}

impl FromEnv for Config {
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = EnvReader::new("CHAT", lookup);
        let server = ServerSettings::from_env(&env, DEFAULT_LISTEN_ADDR)?;
        let metrics_listen_addr =
            common::config::optional_metrics_listen_addr(&env, server.listen_addr)?;
        Ok(Self {
            server,
            metrics_listen_addr,
            database: database(&env)?,
            access_tokens: AccessTokenSettings::from_env(&env)?,
            group_url: group_url(&env)?,
            limits: Limits {
                max_ciphertext_bytes: env.positive_or("MAX_CIPHERTEXT_BYTES", 64 * 1024)?,
                max_wrapped_key_bytes: env.positive_or("MAX_WRAPPED_KEY_BYTES", 512)?,
                max_wrapped_keys: env.positive_or("MAX_WRAPPED_KEYS", 10_000)?,
                max_page_size: env.positive_or("MAX_PAGE_SIZE", 200)?,
                max_streams_per_device: env.positive_or("MAX_STREAMS_PER_DEVICE", 16)?,
                max_stream_sends_in_flight: env.positive_or("MAX_STREAM_SENDS_IN_FLIGHT", 64)?,
                typing_interval: Duration::from_millis(
                    env.positive_or("TYPING_INTERVAL_MS", 2_000)?,
                ),
            },
            commit: CommitSettings {
                window: Duration::from_micros(env.parse_or("COMMIT_WINDOW_MICROS", 0)?),
                max_batch: env.positive_or("COMMIT_MAX_BATCH", 512)?,
                queue: env.positive_or("COMMIT_QUEUE", 8_192)?,
            },
            streams: StreamSettings {
                queue: env.positive_or("STREAM_QUEUE", 256)?,
                stall_limit: Duration::from_millis(env.positive_or("STREAM_STALL_MS", 2_000)?),
                ack_timeout: Duration::from_millis(
                    env.positive_or("STREAM_ACK_TIMEOUT_MS", 10_000)?,
                ),
                heartbeat: Duration::from_secs(env.positive_or("HEARTBEAT_SECS", 15)?),
                replay_page: env.positive_or("REPLAY_PAGE", 100)?,
                notify_window: Duration::from_micros(env.parse_or("NOTIFY_WINDOW_MICROS", 0)?),
            },
            recent: RecentSettings {
                budget_bytes: env.positive_or("RECENT_BYTES", 64 * 1024 * 1024)?,
                per_conversation: env.positive_or("RECENT_PER_CONVERSATION", 64)?,
                max_conversations: env.positive_or("RECENT_CONVERSATIONS", 10_000)?,
            },
            bus: bus(&env)?,
            service_secret: env.secret_source("SERVICE_SECRET")?,
        })
    }
}

impl Config {
    /// A configuration for tests: an ephemeral loopback port, quiet logs, a short drain, auth
    /// at `auth_url` and the tests' service secret. The database URL is a placeholder: tests pass
    /// their own pool to [`crate::run`].
    pub fn for_tests(auth_url: &str) -> Self {
        let mut config = Self::from_lookup(&|key| match key {
            "CHAT_DATABASE_URL" => Some("postgres://unused-in-tests".to_owned()),
            "CHAT_SERVICE_SECRET" => Some("unused: replaced below".repeat(2)),
            _ => None,
        })
        .expect("the defaults are valid");
        config.service_secret = service_credential::test_secret();
        config.server = ServerSettings::for_tests();
        config.metrics_listen_addr = None;
        config.database = DatabaseSettings::for_tests();
        config.access_tokens = AccessTokenSettings::for_tests(auth_url);
        config
    }
}

/// The bus's listener holds one connection for good and the committer one per batch: a smaller
/// pool leaves no connection for the calls themselves, which would all time out.
const MIN_DATABASE_CONNECTIONS: u32 = 3;

fn database(env: &EnvReader) -> Result<DatabaseSettings, ConfigError> {
    DatabaseSettings::from_env(
        env,
        MIN_DATABASE_CONNECTIONS,
        "the bus's listener and the committer each hold one",
    )
}

/// The bus; the NATS settings are read and checked whichever is chosen, so that a mistake
/// shows before the switch.
fn bus(env: &EnvReader) -> Result<BusSettings, ConfigError> {
    let nats = NatsSettings {
        servers: nats_servers(env)?,
        subject: nats_subject(env)?,
        credentials: env.optional_secret_source("NATS_CREDENTIALS")?,
    };
    match env.string_or("BUS", "postgres").trim() {
        "postgres" => Ok(BusSettings::Postgres),
        "nats" => Ok(BusSettings::Nats(nats)),
        other => Err(ConfigError::Invalid {
            key: env.key("BUS"),
            reason: format!("{other:?}: expected postgres or nats"),
        }),
    }
}

fn nats_servers(env: &EnvReader) -> Result<Vec<async_nats::ServerAddr>, ConfigError> {
    let urls = env.string_or("NATS_URL", "nats://127.0.0.1:4222");
    let invalid = |reason: String| ConfigError::Invalid {
        key: env.key("NATS_URL"),
        reason,
    };
    urls.split(',')
        .map(str::trim)
        .map(|url| {
            let server: async_nats::ServerAddr = url
                .parse()
                .map_err(|error| invalid(format!("{url:?}: {error}")))?;
            if server.has_user_pass() {
                // The configuration is logged; credentials belong in the credentials file.
                return Err(invalid(
                    "no user or password in the URL: use CHAT_NATS_CREDENTIALS_FILE".into(),
                ));
            }
            Ok(server)
        })
        .collect()
}

fn nats_subject(env: &EnvReader) -> Result<String, ConfigError> {
    let subject = env.string_or("NATS_SUBJECT", "chat.bus");
    let valid = subject.split('.').all(|token| {
        !token.is_empty()
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if valid {
        Ok(subject)
    } else {
        Err(ConfigError::Invalid {
            key: env.key("NATS_SUBJECT"),
            reason: format!(
                "{subject:?}: expected dot-separated tokens of letters, digits, _ and - \
                 (no wildcards)"
            ),
        })
    }
}

fn group_url(env: &EnvReader) -> Result<String, ConfigError> {
    let url = env.string_or("GROUP_URL", "http://127.0.0.1:50063");
    let valid =
        url.starts_with("http://") && tonic::transport::Endpoint::from_shared(url.clone()).is_ok();
    if valid {
        Ok(url)
    } else {
        Err(ConfigError::Invalid {
            key: env.key("GROUP_URL"),
            reason: format!("{url:?}: expected http://host:port"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../local.env.example");

    #[test]
    fn the_example_env_file_documents_exactly_what_the_code_reads() {
        common::config::assert_env_file_matches(EXAMPLE, Config::from_lookup);
    }

    #[test]
    fn a_pool_too_small_for_the_listener_and_the_committer_is_refused() {
        let pool = |size: &str| {
            let size = size.to_owned();
            Config::from_lookup(&move |key| match key {
                "CHAT_DATABASE_URL" => Some("postgres://localhost/chat".to_owned()),
                "CHAT_SERVICE_SECRET" => Some("s".repeat(32)),
                "CHAT_DATABASE_MAX_CONNECTIONS" => Some(size.clone()),
                _ => None,
            })
        };

        let error = pool("2").unwrap_err();

        assert!(
            error.to_string().contains("CHAT_DATABASE_MAX_CONNECTIONS"),
            "{error}"
        );
        assert_eq!(pool("3").unwrap().database.max_connections, 3);
    }

    fn with(key: &'static str, value: &'static str) -> Result<Config, ConfigError> {
        Config::from_lookup(&move |asked| match asked {
            "CHAT_DATABASE_URL" => Some("postgres://localhost/chat".to_owned()),
            "CHAT_SERVICE_SECRET" => Some("s".repeat(32)),
            _ if asked == key => Some(value.to_owned()),
            _ => None,
        })
    }

    #[test]
    fn the_bus_is_postgres_unless_nats_is_chosen() {
        assert!(matches!(
            with("CHAT_LOG", "info").unwrap().bus,
            BusSettings::Postgres
        ));
        let BusSettings::Nats(nats) = with("CHAT_BUS", "nats").unwrap().bus else {
            panic!("CHAT_BUS=nats is the NATS bus");
        };
        assert_eq!(nats.subject, "chat.bus");
        assert_eq!(nats.servers.len(), 1);
        assert!(nats.credentials.is_none());
    }

    #[test]
    fn bad_bus_settings_are_refused_with_the_variables_name() {
        for (key, value) in [
            ("CHAT_BUS", "kafka"),
            ("CHAT_NATS_URL", "nats://a:4222,http://"),
            ("CHAT_NATS_URL", "nats://user:secret@a:4222"),
            ("CHAT_NATS_SUBJECT", "chat.*"),
            ("CHAT_NATS_SUBJECT", "chat..bus"),
        ] {
            let error = with(key, value).unwrap_err().to_string();

            assert!(error.contains(key), "{key}={value}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn a_nats_cluster_is_several_urls() {
        let config = with(
            "CHAT_NATS_URL",
            "nats://a:4222, nats://b:4222,nats://c:4222",
        )
        .unwrap();

        let BusSettings::Postgres = config.bus else {
            panic!("the default stays postgres");
        };
        let cluster = Config::from_lookup(&|key| match key {
            "CHAT_DATABASE_URL" => Some("postgres://localhost/chat".to_owned()),
            "CHAT_SERVICE_SECRET" => Some("s".repeat(32)),
            "CHAT_BUS" => Some("nats".to_owned()),
            "CHAT_NATS_URL" => Some("nats://a:4222,nats://b:4222,nats://c:4222".to_owned()),
            _ => None,
        })
        .unwrap();
        let BusSettings::Nats(nats) = cluster.bus else {
            panic!("CHAT_BUS=nats");
        };
        assert_eq!(nats.servers.len(), 3);
    }

    #[test]
    fn a_zero_queue_is_refused_with_the_variables_name() {
        let error = Config::from_lookup(&|key| match key {
            "CHAT_DATABASE_URL" => Some("postgres://localhost/chat".to_owned()),
            "CHAT_SERVICE_SECRET" => Some("s".repeat(32)),
            "CHAT_STREAM_QUEUE" => Some("0".to_owned()),
            _ => None,
        })
        .unwrap_err();

        assert!(error.to_string().contains("CHAT_STREAM_QUEUE"), "{error}");
    }
}
