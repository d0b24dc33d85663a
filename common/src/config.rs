//! Typed settings from `<SERVICE>_<SETTING>` environment variables.
//!
//! Each service's `Config` implements [`FromEnv::from_lookup`]; [`FromEnv::from_env`] only calls it
//! with `|key| std::env::var(key).ok()`, so tests pass a map instead of touching the process
//! environment. Every error names the variable,
//! so a bad deployment fails at start with a message an operator can act on.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    fmt::Display,
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use secrecy::SecretString;

use crate::telemetry::{LogFormat, TraceExport};

/// A setting is missing or malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("{key} is required but not set")]
    Missing {
        /// The variable's name.
        key: String,
    },
    /// A variable is set to something that cannot be used.
    #[error("{key} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        key: String,
        /// What is wrong with it (never contains a secret's value).
        reason: String,
    },
}

/// A service's configuration, read from its `<SERVICE>_*` variables.
pub trait FromEnv: Sized {
    /// Reads the configuration through `lookup` (a map in tests).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first missing or invalid variable.
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError>;

    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first missing or invalid variable.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|key| std::env::var(key).ok())
    }
}

/// Reads the settings of one service: `prefix` `AUTH` turns setting `LISTEN_ADDR` into
/// `AUTH_LISTEN_ADDR`.
pub struct EnvReader<'a> {
    prefix: &'static str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> EnvReader<'a> {
    /// A reader for variables named `<prefix>_<SETTING>`, looked up through `lookup`.
    pub fn new(prefix: &'static str, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { prefix, lookup }
    }

    /// The full variable name of `setting`.
    pub fn key(&self, setting: &str) -> String {
        format!("{}_{setting}", self.prefix)
    }

    /// A standard variable outside the service's prefix (`OTEL_*`), `None` when unset or empty.
    pub fn unprefixed(&self, key: &str) -> Option<String> {
        (self.lookup)(key).filter(|value| !value.trim().is_empty())
    }

    /// The service's own name, the prefix in lowercase (`chat`).
    pub fn service_name(&self) -> String {
        self.prefix.to_ascii_lowercase()
    }

    fn get(&self, setting: &str) -> Option<String> {
        (self.lookup)(&self.key(setting)).filter(|value| !value.trim().is_empty())
    }

    /// A required plain value.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when unset or empty.
    pub fn required(&self, setting: &str) -> Result<String, ConfigError> {
        self.get(setting).ok_or_else(|| ConfigError::Missing {
            key: self.key(setting),
        })
    }

    /// A required secret; its value never appears in errors or logs.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when unset or empty.
    pub fn secret(&self, setting: &str) -> Result<SecretString, ConfigError> {
        self.required(setting).map(SecretString::from)
    }

    /// A required secret given either inline as `<P>_<SETTING>` or as a file path in
    /// `<P>_<SETTING>_FILE` (how Kubernetes mounts Secrets). The file is read later, by
    /// [`SecretSource::read`], so parsing the configuration does no I/O.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when neither is set; [`ConfigError::Invalid`] when both are.
    pub fn secret_source(&self, setting: &str) -> Result<SecretSource, ConfigError> {
        self.optional_secret_source(setting)?
            .ok_or_else(|| ConfigError::Missing {
                key: format!("{} (or {}_FILE)", self.key(setting), self.key(setting)),
            })
    }

    /// Like [`EnvReader::secret_source`], but `None` when neither variable is set.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when both are set.
    pub fn optional_secret_source(
        &self,
        setting: &str,
    ) -> Result<Option<SecretSource>, ConfigError> {
        let file_setting = format!("{setting}_FILE");
        match (self.get(setting), self.get(&file_setting)) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                key: self.key(setting),
                reason: format!("set either it or {}, not both", self.key(&file_setting)),
            }),
            (Some(value), None) => Ok(Some(SecretSource::Inline(SecretString::from(value)))),
            (None, Some(path)) => Ok(Some(SecretSource::File(PathBuf::from(path)))),
            (None, None) => Ok(None),
        }
    }

    /// An optional plain value, `default` when unset.
    pub fn string_or(&self, setting: &str, default: &str) -> String {
        self.get(setting).unwrap_or_else(|| default.to_owned())
    }

    /// An optional value parsed with `FromStr`, `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when set but unparsable; the message quotes the value.
    pub fn parse_or<T>(&self, setting: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(setting) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|error| ConfigError::Invalid {
                key: self.key(setting),
                reason: format!("{value:?}: {error}"),
            }),
        }
    }

    /// An optional number that must be at least 1 (a zero-sized queue, pool or limit would block
    /// everything), `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when set but unparsable, or zero.
    pub fn positive_or<T>(&self, setting: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default,
        T::Err: Display,
    {
        let value = self.parse_or(setting, default)?;
        if value > T::default() {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                key: self.key(setting),
                reason: "must be at least 1".into(),
            })
        }
    }

    /// An optional duration given in whole seconds, `default` when unset.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when set but not a whole number of seconds.
    pub fn seconds_or(&self, setting: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.parse_or(setting, default.as_secs())
            .map(Duration::from_secs)
    }
}

/// Where a secret comes from: the environment itself or a file (a mounted Kubernetes Secret).
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// The value itself (redacted in `Debug`).
    Inline(SecretString),
    /// A file holding the value; surrounding white space is trimmed when read.
    File(PathBuf),
}

impl SecretSource {
    /// The secret's value.
    ///
    /// # Errors
    /// When the file cannot be read; the message names the path, never the content.
    pub fn read(&self) -> Result<SecretString, std::io::Error> {
        match self {
            Self::Inline(value) => Ok(value.clone()),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|content| SecretString::from(content.trim().to_owned()))
                .map_err(|error| {
                    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
                }),
        }
    }
}

/// Settings every server binary has.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `<P>_LISTEN_ADDR`: where to listen.
    pub listen_addr: SocketAddr,
    /// `<P>_LOG`: log filter in `RUST_LOG` syntax, default `info`.
    pub log_filter: String,
    /// `<P>_LOG_FORMAT`: `pretty` (default) or `json`.
    pub log_format: LogFormat,
    /// `<P>_SHUTDOWN_TIMEOUT_SECS`: how long in-flight calls may drain after a shutdown signal,
    /// default 20 s; keep it below the pod's `terminationGracePeriodSeconds`.
    pub shutdown_timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME` (default: the service's name):
    /// where spans are exported; `None` (unset) exports none. See [`TraceExport::from_lookup`].
    pub trace_export: Option<TraceExport>,
}

impl ServerSettings {
    /// Reads the server settings; `default_listen_addr` applies when `<P>_LISTEN_ADDR` is unset.
    ///
    /// # Errors
    /// When a variable is set to an invalid value.
    pub fn from_env(env: &EnvReader, default_listen_addr: SocketAddr) -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: env.parse_or("LISTEN_ADDR", default_listen_addr)?,
            log_filter: env.string_or("LOG", "info"),
            log_format: env.parse_or("LOG_FORMAT", LogFormat::Pretty)?,
            shutdown_timeout: env.seconds_or("SHUTDOWN_TIMEOUT_SECS", Duration::from_secs(20))?,
            trace_export: TraceExport::from_lookup(|key| env.unprefixed(key), &env.service_name()),
        })
    }

    /// Settings for tests: an ephemeral loopback port, quiet logs and a short drain.
    pub fn for_tests() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_filter: "warn".to_owned(),
            log_format: LogFormat::Pretty,
            shutdown_timeout: Duration::from_secs(1),
            trace_export: None,
        }
    }
}

/// `<P>_METRICS_LISTEN_ADDR`: where the server serves `/metrics` (plain HTTP, see
/// [`crate::metrics`]), `default` when unset. The gateway's default is a loopback port, so that
/// one started without configuration exposes its metrics to nobody else.
///
/// # Errors
/// When the variable is malformed, or names the port of `listen_addr` (the API port), which never
/// serves `/metrics`.
pub fn metrics_listen_addr(
    env: &EnvReader,
    default: SocketAddr,
    listen_addr: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    Ok(optional_metrics_listen_addr(env, listen_addr)?.unwrap_or(default))
}

/// As [`metrics_listen_addr`] without a default: `None` (no metrics port) when the variable is
/// unset or empty. The services use it, so that replicas started side by side on one host (tests,
/// local stacks) do not contend for one default port; deployments set it (the Helm chart does).
///
/// # Errors
/// As [`metrics_listen_addr`].
pub fn optional_metrics_listen_addr(
    env: &EnvReader,
    listen_addr: SocketAddr,
) -> Result<Option<SocketAddr>, ConfigError> {
    const SETTING: &str = "METRICS_LISTEN_ADDR";
    if env.get(SETTING).is_none() {
        return Ok(None);
    }
    let metrics_listen_addr: SocketAddr = env.parse_or(SETTING, listen_addr)?;
    if metrics_listen_addr.port() != 0 && metrics_listen_addr.port() == listen_addr.port() {
        return Err(ConfigError::Invalid {
            key: env.key(SETTING),
            reason: format!(
                "must be another port than {}: /metrics is never served on the API port",
                env.key("LISTEN_ADDR")
            ),
        });
    }
    Ok(Some(metrics_listen_addr))
}

/// How a service checks access tokens: where auth's key set and revocations are, and what the
/// tokens must say.
#[derive(Debug, Clone)]
pub struct AccessTokenSettings {
    /// `<P>_AUTH_URL`: the auth service (`http://host:port`), whose `GetJwks` provides the keys,
    /// default `http://127.0.0.1:50061`.
    pub auth_url: String,
    /// `<P>_TOKEN_ISSUER`: the `iss` tokens must carry (auth's `AUTH_TOKEN_ISSUER`), default
    /// `chat-auth`.
    pub issuer: String,
    /// `<P>_TOKEN_AUDIENCE`: the `aud` tokens must carry (auth's `AUTH_TOKEN_AUDIENCE`), default
    /// `chat`.
    pub audience: String,
    /// `<P>_REVOCATION_MAX_STALENESS_SECS`: see [`revocation_max_staleness`].
    pub revocation_max_staleness: Duration,
}

/// The default `<P>_REVOCATION_MAX_STALENESS_SECS` (`token::DEFAULT_MAX_STALENESS`).
pub const DEFAULT_REVOCATION_MAX_STALENESS: Duration = Duration::from_secs(10);

/// Reads `<P>_REVOCATION_MAX_STALENESS_SECS`: how long a validator trusts its list of revoked
/// sessions and devices without a heartbeat from auth's `WatchRevocations` (sent at least every
/// `AUTH_DEVICE_EVENTS_POLL_INTERVAL_MS`, at most 5 s). After that every token is refused with
/// UNAVAILABLE until the feed is back, so this bounds how late a revocation can take effect.
/// Default 10, at least 2; keep it above twice auth's poll interval.
///
/// # Errors
/// When it is malformed or below 2 seconds.
pub fn revocation_max_staleness(env: &EnvReader) -> Result<Duration, ConfigError> {
    let key = "REVOCATION_MAX_STALENESS_SECS";
    let staleness = env.seconds_or(key, DEFAULT_REVOCATION_MAX_STALENESS)?;
    if staleness < Duration::from_secs(2) {
        return Err(ConfigError::Invalid {
            key: env.key(key),
            reason: "must be at least 2 (above twice auth's outbox poll interval)".into(),
        });
    }
    Ok(staleness)
}

impl AccessTokenSettings {
    /// Reads the settings.
    ///
    /// # Errors
    /// When the auth URL is not `http://host:port`.
    pub fn from_env(env: &EnvReader) -> Result<Self, ConfigError> {
        let auth_url = env.string_or("AUTH_URL", "http://127.0.0.1:50061");
        let valid = tonic::transport::Endpoint::from_shared(auth_url.clone()).is_ok()
            && auth_url.starts_with("http://");
        if !valid {
            return Err(ConfigError::Invalid {
                key: env.key("AUTH_URL"),
                reason: format!("{auth_url:?}: expected http://host:port"),
            });
        }
        Ok(Self {
            auth_url,
            issuer: env.string_or("TOKEN_ISSUER", "chat-auth"),
            audience: env.string_or("TOKEN_AUDIENCE", "chat"),
            revocation_max_staleness: revocation_max_staleness(env)?,
        })
    }

    /// Settings for tests: auth at `auth_url`, the default issuer, audience and staleness.
    pub fn for_tests(auth_url: &str) -> Self {
        Self {
            auth_url: auth_url.to_owned(),
            issuer: "chat-auth".into(),
            audience: "chat".into(),
            revocation_max_staleness: DEFAULT_REVOCATION_MAX_STALENESS,
        }
    }
}

/// Settings of a service's PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `<P>_DATABASE_URL` (required, secret): e.g. `postgres://user:password@host:5432/chat`.
    pub url: SecretString,
    /// `<P>_DATABASE_MAX_CONNECTIONS`: pool size, default 10.
    pub max_connections: u32,
}

impl DatabaseSettings {
    /// Reads the database settings of a service whose pool needs at least `minimum` connections;
    /// `why` says what holds them, for the error. A pool smaller than what the service holds for
    /// good (a LISTEN connection, a committer) would leave its calls waiting for a connection
    /// until they time out, and its health probe too.
    ///
    /// # Errors
    /// When the URL is missing or the pool size is not a number of at least `minimum` (and 1).
    pub fn from_env(env: &EnvReader, minimum: u32, why: &str) -> Result<Self, ConfigError> {
        let minimum = minimum.max(1);
        let max_connections = env.parse_or("DATABASE_MAX_CONNECTIONS", 10u32)?;
        if max_connections < minimum {
            return Err(ConfigError::Invalid {
                key: env.key("DATABASE_MAX_CONNECTIONS"),
                reason: format!("must be at least {minimum} ({why})"),
            });
        }
        Ok(Self {
            url: env.secret("DATABASE_URL")?,
            max_connections,
        })
    }

    /// Settings for tests, which pass their own pool: the URL is a placeholder never connected to.
    pub fn for_tests() -> Self {
        Self {
            url: SecretString::from("postgres://unused-in-tests"),
            max_connections: 1,
        }
    }
}

/// Parses an env file (`KEY=value` lines; blank lines and `#` comments skipped) into a map.
/// Used by the tests that keep each service's `local.env.example` in sync with its code.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// Asserts that `env_file` (a service's `local.env.example`) is a valid configuration for `read`
/// (its `Config::from_lookup`) and mentions exactly the variables `read` asks for, so the documented
/// environment cannot drift from the code. For the services' unit tests.
///
/// # Panics
/// When the file is not a valid configuration or the variable sets differ.
pub fn assert_env_file_matches<T, E: std::fmt::Debug>(
    env_file: &str,
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<T, E>,
) {
    let (config, keys_read) = keys_read_from_env_file(env_file, read);
    if let Err(error) = config {
        panic!("the example env file is not a valid configuration: {error:?}");
    }
    assert_eq!(documented_env_keys(env_file), keys_read);
}

/// Every variable an env file mentions: those it sets and those shown commented out as an
/// alternative (`# AUTH_SIGNING_KEY=...`).
pub fn documented_env_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|line| line.trim().trim_start_matches('#').trim())
        .filter_map(|line| line.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// Runs `read` (a service's `Config::from_lookup`) against the variables of an env file and returns
/// the result together with every variable name `read` asked for, so a test can check that the file
/// documents exactly the variables the code reads.
pub fn keys_read_from_env_file<T>(
    env_file: &str,
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> T,
) -> (T, BTreeSet<String>) {
    let values = parse_env_file(env_file);
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |key: &str| {
        asked.borrow_mut().insert(key.to_owned());
        values.get(key).cloned()
    };
    let result = read(&lookup);
    (result, asked.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn reader_over(vars: &HashMap<&str, &str>) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        move |key| vars.get(key).cloned()
    }

    #[test]
    fn unset_settings_take_their_defaults() {
        let lookup = reader_over(&HashMap::new());
        let env = EnvReader::new("CHAT", &lookup);

        let settings = ServerSettings::from_env(&env, "0.0.0.0:1".parse().unwrap()).unwrap();

        assert_eq!(settings.listen_addr, "0.0.0.0:1".parse().unwrap());
        assert_eq!(settings.log_format, LogFormat::Pretty);
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(settings.trace_export, None);
    }

    #[test]
    fn an_otlp_endpoint_exports_traces_under_the_services_own_name() {
        let lookup = reader_over(&HashMap::from([(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4317",
        )]));
        let env = EnvReader::new("GROUP", &lookup);

        let settings = ServerSettings::from_env(&env, "0.0.0.0:1".parse().unwrap()).unwrap();

        let export = settings.trace_export.unwrap();
        assert_eq!(export.endpoint, "http://collector:4317");
        assert_eq!(export.service_name, "group");
    }

    #[test]
    fn a_zero_where_at_least_one_is_needed_is_refused_with_the_variables_name() {
        let lookup = reader_over(&HashMap::from([("CHAT_QUEUE", "0"), ("CHAT_POOL", "3")]));
        let env = EnvReader::new("CHAT", &lookup);

        let zero = env.positive_or("QUEUE", 8_usize).unwrap_err();

        assert_eq!(
            zero.to_string(),
            "CHAT_QUEUE is invalid: must be at least 1"
        );
        assert_eq!(env.positive_or("POOL", 1_u32), Ok(3));
        assert_eq!(env.positive_or("UNSET", 7_u64), Ok(7));
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        let lookup = reader_over(&HashMap::from([("CHAT_LISTEN_ADDR", "localhost")]));
        let env = EnvReader::new("CHAT", &lookup);

        let error = ServerSettings::from_env(&env, "0.0.0.0:1".parse().unwrap()).unwrap_err();

        let message = error.to_string();
        assert!(
            message.starts_with("CHAT_LISTEN_ADDR is invalid"),
            "{message}"
        );
        assert!(message.contains("\"localhost\""), "{message}");
    }

    #[test]
    fn a_missing_database_url_is_reported_and_an_empty_one_counts_as_missing() {
        let lookup = reader_over(&HashMap::from([("AUTH_DATABASE_URL", "  ")]));
        let env = EnvReader::new("AUTH", &lookup);

        let error = DatabaseSettings::from_env(&env, 1, "a test").unwrap_err();

        assert_eq!(
            error,
            ConfigError::Missing {
                key: "AUTH_DATABASE_URL".into()
            }
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let lookup = reader_over(&HashMap::from([(
            "AUTH_DATABASE_URL",
            "postgres://u:hunter2@db/x",
        )]));
        let env = EnvReader::new("AUTH", &lookup);

        let settings = DatabaseSettings::from_env(&env, 1, "a test").unwrap();

        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(settings.url.expose_secret(), "postgres://u:hunter2@db/x");
    }

    #[test]
    fn a_pool_smaller_than_the_services_minimum_is_refused_with_the_reason() {
        for (size, minimum) in [("0", 0), ("1", 2)] {
            let lookup = reader_over(&HashMap::from([
                ("AUTH_DATABASE_URL", "postgres://db/x"),
                ("AUTH_DATABASE_MAX_CONNECTIONS", size),
            ]));
            let env = EnvReader::new("AUTH", &lookup);

            let error =
                DatabaseSettings::from_env(&env, minimum, "its listener holds one").unwrap_err();

            assert!(
                matches!(&error, ConfigError::Invalid { key, reason }
                    if key == "AUTH_DATABASE_MAX_CONNECTIONS" && reason.contains("its listener holds one")),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_secret_comes_from_the_variable_or_its_file_but_not_both() {
        let both = reader_over(&HashMap::from([("AUTH_KEY", "x"), ("AUTH_KEY_FILE", "/k")]));
        let file_only = reader_over(&HashMap::from([("AUTH_KEY_FILE", "/k")]));
        let neither = reader_over(&HashMap::new());

        let from_both = EnvReader::new("AUTH", &both).secret_source("KEY");
        let from_file = EnvReader::new("AUTH", &file_only).secret_source("KEY");
        let from_neither = EnvReader::new("AUTH", &neither).secret_source("KEY");

        assert!(matches!(from_both, Err(ConfigError::Invalid { .. })));
        assert!(
            matches!(from_file, Ok(SecretSource::File(path)) if path == std::path::Path::new("/k"))
        );
        assert_eq!(
            from_neither.unwrap_err().to_string(),
            "AUTH_KEY (or AUTH_KEY_FILE) is required but not set"
        );
    }

    #[test]
    fn documented_keys_include_commented_alternatives_but_not_prose() {
        let keys = documented_env_keys("# Set one:\nA_KEY=1\n# A_KEY_FILE=/path\n# see a=b\n");

        assert_eq!(
            keys,
            BTreeSet::from(["A_KEY".to_owned(), "A_KEY_FILE".to_owned()])
        );
    }

    #[test]
    fn env_files_skip_comments_and_blank_lines() {
        let parsed = parse_env_file("# comment\n\nA_B=1\n  C_D = two words \n");

        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed["C_D"], "two words");
    }
}
