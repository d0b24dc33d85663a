//! The auth service's configuration, from `AUTH_*` environment variables (documented in
//! `auth/local.env.example`, which a test keeps in sync with this file).

use std::net::SocketAddr;

use std::time::Duration;

use common::{
    config::{ConfigError, DatabaseSettings, EnvReader, FromEnv, SecretSource, ServerSettings},
    outbox::OutboxSettings,
    service_credential,
};

/// Where auth listens unless `AUTH_LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 50061);

/// The event feed's listener holds one connection for good: a pool of one would leave none for
/// the calls (or the health probe), which would all wait until they time out.
const MIN_DATABASE_CONNECTIONS: u32 = 2;

/// Everything the auth service reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address, logs, shutdown drain.
    pub server: ServerSettings,
    /// `AUTH_METRICS_LISTEN_ADDR`: where `/metrics` is served (plain HTTP); never the API port.
    /// Unset: no metrics port (see `common::config::optional_metrics_listen_addr`).
    pub metrics_listen_addr: Option<SocketAddr>,
    /// The PostgreSQL pool.
    pub database: DatabaseSettings,
    /// Access and refresh tokens.
    pub tokens: TokenSettings,
    /// Password hashing.
    pub passwords: PasswordSettings,
    /// Failed-login throttling.
    pub login_throttle: ThrottleSettings,
    /// `AUTH_MAX_DEVICES_PER_USER`: active devices a user may have, default 10.
    pub max_devices_per_user: u32,
    /// `AUTH_DEVICE_EVENTS_*`: how `WatchDeviceChanges` and `WatchRevocations` stream and keep
    /// device events and revocations (poll interval at most 5,000 ms).
    pub device_events: OutboxSettings,
    /// `AUTH_SERVICE_SECRET` or `AUTH_SERVICE_SECRET_FILE` (secret, required): the deployment's
    /// service credential, which `WatchDeviceChanges` requires (`common::service_credential`).
    pub service_secret: SecretSource,
}

/// How tokens are issued.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `AUTH_TOKEN_ISSUER`: the `iss` claim, default `chat-auth`. Validators must expect the same.
    pub issuer: String,
    /// `AUTH_TOKEN_AUDIENCE`: the `aud` claim, default `chat`. Validators must expect the same.
    pub audience: String,
    /// `AUTH_ACCESS_TOKEN_TTL_SECS`: access token lifetime, default and maximum 900 (15 minutes).
    pub access_token_ttl: Duration,
    /// `AUTH_SIGNING_KEY` or `AUTH_SIGNING_KEY_FILE` (secret, required): the Ed25519 private key
    /// (PKCS#8 PEM) that signs new access tokens. `auth keygen` prints a fresh one.
    pub signing_key: SecretSource,
    /// `AUTH_PREVIOUS_SIGNING_KEYS` or `AUTH_PREVIOUS_SIGNING_KEYS_FILE` (optional): older private
    /// keys (concatenated PEM blocks) that no longer sign but still verify, published in the JWKS
    /// until the tokens they signed have expired. Rotation: move the current key here, set a new
    /// `AUTH_SIGNING_KEY`, and drop the old one after `AUTH_ACCESS_TOKEN_TTL_SECS`.
    pub previous_signing_keys: Option<SecretSource>,
    /// `AUTH_REFRESH_TOKEN_SECRET` or `AUTH_REFRESH_TOKEN_SECRET_FILE` (secret, required): at least
    /// 32 random bytes, base64. Successor refresh tokens are derived from it (see `sessions.rs`).
    pub refresh_token_secret: SecretSource,
    /// `AUTH_REFRESH_TOKEN_IDLE_TTL_SECS`: an unused refresh token expires after this, default
    /// 14 days.
    pub refresh_token_idle_ttl: Duration,
    /// `AUTH_SESSION_MAX_AGE_SECS`: a session ends this long after login whatever happens,
    /// default 60 days.
    pub session_max_age: Duration,
    /// `AUTH_REFRESH_REUSE_GRACE_SECS`: how long after a rotation the old refresh token may be
    /// presented again (a client that lost the response) and get the same successor, default 30 s.
    pub refresh_reuse_grace: Duration,
}

/// argon2id parameters and the hashing concurrency.
#[derive(Debug, Clone)]
pub struct PasswordSettings {
    /// `AUTH_ARGON2_MEMORY_KIB`: memory per hash, default 19456 (19 MiB, the OWASP minimum).
    pub memory_kib: u32,
    /// `AUTH_ARGON2_ITERATIONS`: passes, default 2.
    pub iterations: u32,
    /// `AUTH_ARGON2_PARALLELISM`: lanes, default 1.
    pub parallelism: u32,
    /// `AUTH_PASSWORD_HASHING_CONCURRENCY`: hashes computed at once, default the number of CPUs.
    /// Bounds the memory (this times `memory_kib`) and keeps threads free for other requests.
    pub concurrency: usize,
}

/// Failed-login throttling, shared by all replicas through the database (see `throttle.rs` for
/// the policy).
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// `AUTH_LOGIN_FAILURES_BEFORE_DELAY`: consecutive failures of one username from one address
    /// before delays start, default 3. Each further failure makes that pair wait twice as long
    /// as the last (1 s, 2 s, 4 s, ...), up to `max_delay`; other addresses are not slowed.
    pub failures_before_delay: u32,
    /// `AUTH_LOGIN_MAX_DELAY_SECS`: the longest such delay, default 900.
    pub max_delay: Duration,
    /// `AUTH_LOGIN_FAILURES_PER_ADDRESS`: failures allowed per client address (IPv6: per /64)
    /// within the window, across usernames (password spraying), default 50.
    pub failures_per_address: u32,
    /// `AUTH_LOGIN_FAILURE_WINDOW_SECS`: that window, default 900; an address over its limit
    /// waits for the window's end.
    pub window: Duration,
    /// `AUTH_LOGIN_FAILURES_PER_ACCOUNT`: consecutive failures of one username across all
    /// addresses (a successful login resets the count) at which the account's ceiling holds,
    /// default 50, at most 100 (NIST SP 800-63B's limit).
    pub failures_per_account: u32,
    /// `AUTH_LOGIN_ACCOUNT_LOCK_SECS`: at the ceiling, addresses from which the user has not
    /// logged in during the last 30 days get one attempt per this period, default 3600.
    /// Addresses with such a success are not held back by the ceiling.
    pub account_lock: Duration,
}

/// Validators refuse longer-lived tokens (`token::ValidationSettings::max_lifetime`).
const MAX_ACCESS_TOKEN_TTL: Duration = token::MAX_ACCESS_TOKEN_LIFETIME;

impl FromEnv for Config {
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = EnvReader::new("AUTH", lookup);
        let server = ServerSettings::from_env(&env, DEFAULT_LISTEN_ADDR)?;
        let metrics_listen_addr =
            common::config::optional_metrics_listen_addr(&env, server.listen_addr)?;
        Ok(Self {
            server,
            metrics_listen_addr,
            database: DatabaseSettings::from_env(
                &env,
                MIN_DATABASE_CONNECTIONS,
                "the event feed's listener holds one",
            )?,
            tokens: TokenSettings::from_env(&env)?,
            passwords: PasswordSettings::from_env(&env)?,
            login_throttle: ThrottleSettings::from_env(&env)?,
            max_devices_per_user: env.positive_or("MAX_DEVICES_PER_USER", 10)?,
            device_events: OutboxSettings::from_env(&env, "DEVICE_EVENTS", "WatchRevocations")?,
            service_secret: env.secret_source("SERVICE_SECRET")?,
        })
    }
}

impl Config {
    /// A configuration for tests: an ephemeral loopback port, quiet logs, a short drain, a fresh
    /// signing key and refresh secret, the tests' service secret, a quick device-event poll, and cheap argon2 parameters (tests check behaviour, the
    /// benchmark checks cost). The database URL is a placeholder: tests pass their own pool to
    /// [`crate::run`].
    pub fn for_tests() -> Self {
        let signing_key = token::SigningKey::generate().to_pkcs8_pem();
        Self {
            server: ServerSettings::for_tests(),
            metrics_listen_addr: None,
            database: DatabaseSettings::for_tests(),
            tokens: TokenSettings {
                issuer: "chat-auth".into(),
                audience: "chat".into(),
                access_token_ttl: MAX_ACCESS_TOKEN_TTL,
                signing_key: SecretSource::Inline(signing_key.into()),
                previous_signing_keys: None,
                refresh_token_secret: SecretSource::Inline(
                    "dGVzdHMtb25seS1yZWZyZXNoLXRva2VuLXNlY3JldC0wMTIzNDU2Nzg5".into(),
                ),
                refresh_token_idle_ttl: Duration::from_secs(14 * 24 * 3600),
                session_max_age: Duration::from_secs(60 * 24 * 3600),
                refresh_reuse_grace: Duration::from_secs(30),
            },
            passwords: PasswordSettings {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
                concurrency: 2,
            },
            login_throttle: ThrottleSettings {
                failures_before_delay: 3,
                max_delay: Duration::from_secs(900),
                failures_per_address: 50,
                window: Duration::from_secs(900),
                failures_per_account: 50,
                account_lock: Duration::from_secs(3600),
            },
            max_devices_per_user: 10,
            device_events: OutboxSettings {
                poll_interval: Duration::from_millis(200),
                ..OutboxSettings::default()
            },
            service_secret: service_credential::test_secret(),
        }
    }
}

impl TokenSettings {
    fn from_env(env: &EnvReader) -> Result<Self, ConfigError> {
        let access_token_ttl = env.seconds_or("ACCESS_TOKEN_TTL_SECS", MAX_ACCESS_TOKEN_TTL)?;
        if access_token_ttl.is_zero() || access_token_ttl > MAX_ACCESS_TOKEN_TTL {
            return Err(ConfigError::Invalid {
                key: env.key("ACCESS_TOKEN_TTL_SECS"),
                reason: "must be between 1 and 900 seconds".into(),
            });
        }
        Ok(Self {
            issuer: env.string_or("TOKEN_ISSUER", "chat-auth"),
            audience: env.string_or("TOKEN_AUDIENCE", "chat"),
            access_token_ttl,
            signing_key: env.secret_source("SIGNING_KEY")?,
            previous_signing_keys: env.optional_secret_source("PREVIOUS_SIGNING_KEYS")?,
            refresh_token_secret: env.secret_source("REFRESH_TOKEN_SECRET")?,
            refresh_token_idle_ttl: env.seconds_or(
                "REFRESH_TOKEN_IDLE_TTL_SECS",
                Duration::from_secs(14 * 24 * 3600),
            )?,
            session_max_age: env
                .seconds_or("SESSION_MAX_AGE_SECS", Duration::from_secs(60 * 24 * 3600))?,
            refresh_reuse_grace: env
                .seconds_or("REFRESH_REUSE_GRACE_SECS", Duration::from_secs(30))?,
        })
    }
}

impl PasswordSettings {
    fn from_env(env: &EnvReader) -> Result<Self, ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let memory_kib = env.positive_or("ARGON2_MEMORY_KIB", 19 * 1024)?;
        let iterations = env.positive_or("ARGON2_ITERATIONS", 2)?;
        if memory_kib < 19 * 1024 || iterations < 2 {
            // Weaker than OWASP's argon2id minimum (m=19 MiB, t=2, p=1): refuse rather than
            // silently store weak hashes.
            return Err(ConfigError::Invalid {
                key: env.key("ARGON2_MEMORY_KIB"),
                reason: "argon2id needs at least 19456 KiB and 2 iterations".into(),
            });
        }
        Ok(Self {
            memory_kib,
            iterations,
            parallelism: env.positive_or("ARGON2_PARALLELISM", 1)?,
            concurrency: env.positive_or("PASSWORD_HASHING_CONCURRENCY", cpus as u32)? as usize,
        })
    }
}

impl ThrottleSettings {
    fn from_env(env: &EnvReader) -> Result<Self, ConfigError> {
        let failures_per_account = env.positive_or("LOGIN_FAILURES_PER_ACCOUNT", 50)?;
        if failures_per_account > MAX_CONSECUTIVE_FAILURES {
            return Err(ConfigError::Invalid {
                key: env.key("LOGIN_FAILURES_PER_ACCOUNT"),
                reason: "must be at most 100 (NIST SP 800-63B)".into(),
            });
        }
        Ok(Self {
            failures_before_delay: env.parse_or("LOGIN_FAILURES_BEFORE_DELAY", 3)?,
            max_delay: throttle_seconds(env, "LOGIN_MAX_DELAY_SECS", 900)?,
            failures_per_address: env.positive_or("LOGIN_FAILURES_PER_ADDRESS", 50)?,
            window: throttle_seconds(env, "LOGIN_FAILURE_WINDOW_SECS", 900)?,
            failures_per_account,
            account_lock: throttle_seconds(env, "LOGIN_ACCOUNT_LOCK_SECS", 3600)?,
        })
    }
}

/// NIST SP 800-63B: at most 100 consecutive failed attempts on one account.
const MAX_CONSECUTIVE_FAILURES: u32 = 100;

/// Throttling periods: from 1 s to 30 days (rows are kept that long).
fn throttle_seconds(env: &EnvReader, setting: &str, default: u64) -> Result<Duration, ConfigError> {
    let value = env.seconds_or(setting, Duration::from_secs(default))?;
    if !(1..=30 * 24 * 3600).contains(&value.as_secs()) {
        return Err(ConfigError::Invalid {
            key: env.key(setting),
            reason: "must be between 1 and 2592000 seconds (30 days)".into(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../local.env.example");

    #[test]
    fn the_example_env_file_documents_exactly_what_the_code_reads() {
        common::config::assert_env_file_matches(EXAMPLE, Config::from_lookup);
    }

    fn example_with(key: &str, value: &str) -> Result<Config, ConfigError> {
        let mut env = common::config::parse_env_file(EXAMPLE);
        env.insert(key.to_owned(), value.to_owned());
        Config::from_lookup(&|key| env.get(key).cloned())
    }

    #[test]
    fn the_example_env_file_states_the_login_throttling_defaults() {
        let example = common::config::parse_env_file(EXAMPLE);
        let documented = Config::from_lookup(&|key| example.get(key).cloned()).unwrap();
        let defaults = Config::from_lookup(&|key| {
            (!key.starts_with("AUTH_LOGIN_"))
                .then(|| example.get(key).cloned())
                .flatten()
        })
        .unwrap();

        let (documented, defaults) = (documented.login_throttle, defaults.login_throttle);
        assert_eq!(format!("{documented:?}"), format!("{defaults:?}"));
        assert_eq!(defaults.failures_per_account, 50);
        assert_eq!(defaults.failures_before_delay, 3);
    }

    #[test]
    fn the_account_ceiling_may_not_pass_nists_100_consecutive_failures() {
        assert!(example_with("AUTH_LOGIN_FAILURES_PER_ACCOUNT", "100").is_ok());

        let error = example_with("AUTH_LOGIN_FAILURES_PER_ACCOUNT", "101").unwrap_err();

        assert!(
            error
                .to_string()
                .contains("AUTH_LOGIN_FAILURES_PER_ACCOUNT"),
            "{error}"
        );
        assert!(example_with("AUTH_LOGIN_FAILURES_PER_ACCOUNT", "0").is_err());
    }

    #[test]
    fn throttling_periods_are_between_a_second_and_thirty_days() {
        for key in [
            "AUTH_LOGIN_MAX_DELAY_SECS",
            "AUTH_LOGIN_FAILURE_WINDOW_SECS",
            "AUTH_LOGIN_ACCOUNT_LOCK_SECS",
        ] {
            assert!(example_with(key, "0").is_err(), "{key}=0");
            assert!(example_with(key, "2592001").is_err(), "{key} above 30 days");
            assert!(example_with(key, "2592000").is_ok(), "{key} of 30 days");
        }
    }

    #[test]
    fn a_device_event_poll_slower_than_the_revocation_heartbeats_need_is_refused() {
        let error = example_with("AUTH_DEVICE_EVENTS_POLL_INTERVAL_MS", "5001").unwrap_err();

        assert!(
            error
                .to_string()
                .contains("AUTH_DEVICE_EVENTS_POLL_INTERVAL_MS"),
            "{error}"
        );
        assert!(example_with("AUTH_DEVICE_EVENTS_POLL_INTERVAL_MS", "5000").is_ok());
    }
}
