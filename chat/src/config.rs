//! The chat service's configuration, from `CHAT_*` environment variables (documented in
//! `chat/local.env.example`, which a test keeps in sync with this file).

use std::net::SocketAddr;

use common::config::{
    AccessTokenSettings, ConfigError, DatabaseSettings, EnvReader, ServerSettings,
};

/// Where chat listens unless `CHAT_LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 50062);

/// Everything the chat service reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address, logs, shutdown drain.
    pub server: ServerSettings,
    /// The PostgreSQL pool.
    pub database: DatabaseSettings,
    /// Where auth's token keys are and what tokens must say.
    pub access_tokens: AccessTokenSettings,
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first missing or invalid variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|key| std::env::var(key).ok())
    }

    /// Reads the configuration through `lookup` (a map in tests).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first missing or invalid variable.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = EnvReader::new("CHAT", lookup);
        Ok(Self {
            server: ServerSettings::from_env(&env, DEFAULT_LISTEN_ADDR)?,
            database: DatabaseSettings::from_env(&env)?,
            access_tokens: AccessTokenSettings::from_env(&env)?,
        })
    }

    /// A configuration for tests: an ephemeral loopback port, quiet logs, a short drain, and
    /// auth at `auth_url`. The database URL is a placeholder: tests pass their own pool to
    /// [`crate::run`].
    pub fn for_tests(auth_url: &str) -> Self {
        Self {
            server: ServerSettings::for_tests(),
            database: DatabaseSettings::for_tests(),
            access_tokens: AccessTokenSettings::for_tests(auth_url),
        }
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
}
