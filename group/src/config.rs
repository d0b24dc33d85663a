//! The group service's configuration, from `GROUP_*` environment variables (documented in
//! `group/local.env.example`, which a test keeps in sync with this file).

use std::{net::SocketAddr, time::Duration};

use common::{
    config::{
        AccessTokenSettings, ConfigError, DatabaseSettings, EnvReader, FromEnv, SecretSource,
        ServerSettings,
    },
    outbox::OutboxSettings,
    service_credential,
};

/// Where group listens unless `GROUP_LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 50063);

/// The event feed's listener holds one connection for good: a pool of one would leave none for
/// the calls (or the health probe), which would all wait until they time out.
const MIN_DATABASE_CONNECTIONS: u32 = 2;

/// The longest group name the database accepts (`groups_name_check`).
const NAME_CHARS_CEILING: u32 = 64;

/// Everything the group service reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address, logs, shutdown drain.
    pub server: ServerSettings,
    /// `GROUP_METRICS_LISTEN_ADDR`: where `/metrics` is served (plain HTTP); never the API port.
    /// Unset: no metrics port (see `common::config::optional_metrics_listen_addr`).
    pub metrics_listen_addr: Option<SocketAddr>,
    /// The PostgreSQL pool.
    pub database: DatabaseSettings,
    /// Where auth's token keys are (auth also answers user and device look-ups there) and what
    /// tokens must say.
    pub access_tokens: AccessTokenSettings,
    /// The documented limits of `group.v1`.
    pub limits: Limits,
    /// The membership-event stream of `group.internal.v1`.
    pub events: EventSettings,
    /// `GROUP_SERVICE_SECRET` or `GROUP_SERVICE_SECRET_FILE` (secret, required): the deployment's
    /// service credential, which `WatchMembershipEvents` requires (`common::service_credential`).
    pub service_secret: SecretSource,
}

/// Limits on groups and membership; `group.v1` documents the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `GROUP_MAX_MEMBERS_PER_GROUP`: members a group may have, default 1,000.
    pub max_members_per_group: u32,
    /// `GROUP_MAX_GROUPS_PER_USER`: groups a user may be a member of, default 500.
    pub max_groups_per_user: u32,
    /// `GROUP_MAX_NAME_CHARS`: longest group name in characters, default and at most 64.
    pub max_name_chars: u32,
    /// `GROUP_MAX_USERS_PER_ADD`: users one AddMembers call may name, default 100.
    pub max_users_per_add: u32,
}

/// How membership events are streamed and kept (`GROUP_EVENTS_*`).
pub type EventSettings = OutboxSettings;

impl FromEnv for Config {
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = EnvReader::new("GROUP", lookup);
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
            access_tokens: AccessTokenSettings::from_env(&env)?,
            limits: Limits::from_env(&env)?,
            events: OutboxSettings::from_env(&env, "EVENTS", "WatchMembershipEvents")?,
            service_secret: env.secret_source("SERVICE_SECRET")?,
        })
    }
}

impl Config {
    /// A configuration for tests: an ephemeral loopback port, quiet logs, a short drain, auth at
    /// `auth_url`, the default limits, a quick poll and the tests' service secret. The database URL is a placeholder: tests
    /// pass their own pool to [`crate::run`].
    pub fn for_tests(auth_url: &str) -> Self {
        Self {
            server: ServerSettings::for_tests(),
            metrics_listen_addr: None,
            database: DatabaseSettings::for_tests(),
            access_tokens: AccessTokenSettings::for_tests(auth_url),
            limits: Limits::default(),
            events: EventSettings {
                poll_interval: Duration::from_millis(200),
                ..EventSettings::default()
            },
            service_secret: service_credential::test_secret(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_members_per_group: 1_000,
            max_groups_per_user: 500,
            max_name_chars: NAME_CHARS_CEILING,
            max_users_per_add: 100,
        }
    }
}

impl Limits {
    fn from_env(env: &EnvReader) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let max_name_chars = env.positive_or("MAX_NAME_CHARS", defaults.max_name_chars)?;
        if max_name_chars > NAME_CHARS_CEILING {
            return Err(ConfigError::Invalid {
                key: env.key("MAX_NAME_CHARS"),
                reason: format!("at most {NAME_CHARS_CEILING} (the database's limit)"),
            });
        }
        let max_members_per_group =
            env.positive_or("MAX_MEMBERS_PER_GROUP", defaults.max_members_per_group)?;
        if max_members_per_group < 2 {
            return Err(ConfigError::Invalid {
                key: env.key("MAX_MEMBERS_PER_GROUP"),
                reason: "must be at least 2".into(),
            });
        }
        Ok(Self {
            max_members_per_group,
            max_groups_per_user: env
                .positive_or("MAX_GROUPS_PER_USER", defaults.max_groups_per_user)?,
            max_name_chars,
            max_users_per_add: env.positive_or("MAX_USERS_PER_ADD", defaults.max_users_per_add)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const EXAMPLE: &str = include_str!("../local.env.example");

    fn read(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .chain([
                ("GROUP_DATABASE_URL".to_owned(), "postgres://x".to_owned()),
                ("GROUP_SERVICE_SECRET".to_owned(), "s".repeat(32)),
            ])
            .collect();
        Config::from_lookup(&|key| vars.get(key).cloned())
    }

    #[test]
    fn the_example_env_file_documents_exactly_what_the_code_reads() {
        common::config::assert_env_file_matches(EXAMPLE, Config::from_lookup);
    }

    #[test]
    fn the_example_env_file_states_the_defaults() {
        let documented =
            Config::from_lookup(&|key| common::config::parse_env_file(EXAMPLE).get(key).cloned())
                .unwrap();
        let defaults = read(&[]).unwrap();

        assert_eq!(documented.limits, defaults.limits);
        assert_eq!(documented.events, defaults.events);
        assert_eq!(defaults.limits.max_members_per_group, 1_000);
        assert_eq!(defaults.limits.max_groups_per_user, 500);
    }

    #[test]
    fn a_name_limit_above_what_the_database_accepts_is_refused() {
        let error = read(&[("GROUP_MAX_NAME_CHARS", "65")]).unwrap_err();

        assert!(
            error.to_string().starts_with("GROUP_MAX_NAME_CHARS"),
            "{error}"
        );
    }

    #[test]
    fn a_poll_interval_longer_than_the_heartbeats_allow_is_refused() {
        let error = read(&[("GROUP_EVENTS_POLL_INTERVAL_MS", "5001")]).unwrap_err();

        assert!(
            error
                .to_string()
                .starts_with("GROUP_EVENTS_POLL_INTERVAL_MS"),
            "{error}"
        );
        assert!(read(&[("GROUP_EVENTS_POLL_INTERVAL_MS", "5000")]).is_ok());
    }

    #[test]
    fn a_retention_below_the_promised_24_hours_is_refused() {
        let error = read(&[("GROUP_EVENTS_RETENTION_SECS", "3600")]).unwrap_err();

        assert!(
            error.to_string().starts_with("GROUP_EVENTS_RETENTION_SECS"),
            "{error}"
        );
    }
}
