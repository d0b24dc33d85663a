//! The gateway's configuration, from `GATEWAY_*` environment variables (documented in
//! `gateway/local.env.example`, which a test keeps in sync with this file).

use std::net::SocketAddr;

use common::config::{ConfigError, EnvReader, ServerSettings};

/// Where the gateway listens unless `GATEWAY_LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

/// Everything the gateway reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address, logs, shutdown drain.
    pub server: ServerSettings,
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
        let env = EnvReader::new("GATEWAY", lookup);
        Ok(Self {
            server: ServerSettings::from_env(&env, DEFAULT_LISTEN_ADDR)?,
        })
    }

    /// A configuration for tests: an ephemeral loopback port, quiet logs, a short drain.
    pub fn for_tests() -> Self {
        Self {
            server: ServerSettings::for_tests(),
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
