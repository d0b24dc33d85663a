//! The gateway's configuration, from `GATEWAY_*` environment variables (documented in
//! `gateway/local.env.example`, which a test keeps in sync with this file).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use http::Uri;

use common::{
    config::{
        ConfigError, DEFAULT_REVOCATION_MAX_STALENESS, EnvReader, FromEnv, SecretSource,
        ServerSettings, revocation_max_staleness,
    },
    service_credential,
};

/// Where the gateway listens unless `GATEWAY_LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

/// Where `/metrics` is served unless `GATEWAY_METRICS_LISTEN_ADDR` says otherwise: loopback, so
/// that a gateway started without configuration exposes its metrics to nobody else.
pub const DEFAULT_METRICS_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// Everything the gateway reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address, logs, shutdown drain.
    pub server: ServerSettings,
    /// Where each upstream service is.
    pub upstreams: UpstreamSettings,
    /// `GATEWAY_TOKEN_ISSUER` / `GATEWAY_TOKEN_AUDIENCE`: what access tokens must say; the same
    /// values as auth's `AUTH_TOKEN_ISSUER` / `AUTH_TOKEN_AUDIENCE` (defaults `chat-auth`, `chat`).
    pub token_issuer: String,
    /// See `token_issuer`.
    pub token_audience: String,
    /// `GATEWAY_SERVICE_SECRET` or `GATEWAY_SERVICE_SECRET_FILE` (secret, required): the
    /// deployment's service credential, with which the gateway follows auth's `WatchRevocations`
    /// (`common::service_credential`). It strips the same header from outside traffic.
    pub service_secret: SecretSource,
    /// `GATEWAY_REVOCATION_MAX_STALENESS_SECS`: see `common::config::revocation_max_staleness`.
    pub revocation_max_staleness: Duration,
    /// `GATEWAY_CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to call gRPC-Web from a
    /// browser page served elsewhere; empty (the default) allows none (same-origin still works).
    pub cors_allowed_origins: Vec<String>,
    /// Connection and stream limits.
    pub limits: Limits,
    /// `GATEWAY_WEB_ROOT`: a directory of static files (the browser demo) served at `/` (its
    /// `index.html`, never cached) and under `/static/` (content-hashed names cached for a year),
    /// with a strict Content-Security-Policy; unset serves none.
    pub web_root: Option<PathBuf>,
    /// `GATEWAY_METRICS_LISTEN_ADDR`: where `/metrics` is served (plain HTTP), default
    /// [`DEFAULT_METRICS_LISTEN_ADDR`]. Never on the public port, which answers 404 there.
    pub metrics_listen_addr: SocketAddr,
    /// `GATEWAY_TLS_CERT_FILE` and `GATEWAY_TLS_KEY_FILE` (PEM): serve TLS when both are set
    /// (HTTP/2 and HTTP/1.1 via ALPN, every answer with `Strict-Transport-Security`); plaintext
    /// otherwise (behind a TLS-terminating Ingress).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Where the upstream services are. A host that resolves to several addresses (a Kubernetes
/// headless Service) is balanced per call and per stream, and re-resolved periodically.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `GATEWAY_AUTH_URL`, default `http://127.0.0.1:50061`.
    pub auth: UpstreamUrls,
    /// `GATEWAY_CHAT_URL`, default `http://127.0.0.1:50062`.
    pub chat: UpstreamUrls,
    /// `GATEWAY_GROUP_URL`, default `http://127.0.0.1:50063`.
    pub group: UpstreamUrls,
    /// `GATEWAY_UPSTREAM_RESOLVE_INTERVAL_SECS`: how often upstream names are re-resolved,
    /// default 10.
    pub resolve_interval: Duration,
    /// `GATEWAY_UPSTREAM_HOSTS_FILE`: a file in the `/etc/hosts` format, read again at every
    /// resolution: a name it lists resolves to the addresses of its lines there, and only there;
    /// other names go to DNS. For machines without DNS-based discovery (the cluster tests
    /// rewrite it as Kubernetes updates a headless Service's records). Unset: DNS only.
    pub hosts_file: Option<PathBuf>,
    /// `GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS`: a dead upstream answers UNAVAILABLE after this,
    /// default 1000.
    pub connect_timeout: Duration,
    /// `GATEWAY_UPSTREAM_CONNECTIONS_PER_ADDRESS`: HTTP/2 connections to each upstream address,
    /// default 2. Calls are balanced over all of them: one connection's I/O runs on one thread
    /// at a time, so a single connection caps the gateway's throughput to that upstream.
    pub connections_per_address: usize,
}

/// Limits on what one client may do. Documented in the README's limits table.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `GATEWAY_MAX_CONCURRENT_STREAMS`: HTTP/2 streams per connection, default 100.
    pub max_concurrent_streams: u32,
    /// `GATEWAY_MAX_HEADER_LIST_BYTES`: request header size, default 16384 (see
    /// `server::ServerLimits::max_header_list_bytes` for what larger requests get).
    pub max_header_list_bytes: u32,
    /// `GATEWAY_MAX_MESSAGE_BYTES`: largest gRPC message a client may send, default 4 MiB.
    pub max_message_bytes: u32,
    /// `GATEWAY_KEEPALIVE_INTERVAL_SECS`: an idle connection is probed (TCP keepalive) after
    /// this long, default 30.
    pub keepalive_interval: Duration,
    /// `GATEWAY_KEEPALIVE_TIMEOUT_SECS`: an idle connection whose probe goes unanswered this
    /// long is closed, default 10.
    pub keepalive_timeout: Duration,
    /// `GATEWAY_IDLE_TIMEOUT_SECS`: a connection with nothing in flight is closed after this,
    /// default 300.
    pub idle_timeout: Duration,
    /// `GATEWAY_HEADER_READ_TIMEOUT_SECS`: an HTTP/1.1 client must send a request's whole head
    /// within this, or the connection is closed (slowloris on the headers; see
    /// `server::ServerLimits::header_read_timeout`), default 30.
    pub header_read_timeout: Duration,
    /// `GATEWAY_SEND_TIMEOUT_SECS`: a connection whose writes have been blocked this long (its
    /// client reads nothing), or whose HTTP/2 client's flow-control windows have held a response
    /// this long with no stream sending, is dropped, default 60 (see
    /// `server::ServerLimits::send_timeout`).
    pub send_timeout: Duration,
    /// `GATEWAY_UNARY_TIMEOUT_SECS`: a unary call (one that streams in neither direction) is
    /// cancelled with DEADLINE_EXCEEDED after this unless the client asked for less, default 30.
    /// The gateway's own services must send their response head within it.
    pub unary_timeout: Duration,
    /// `GATEWAY_LOGIN_RATE_PER_MINUTE`: logins, registrations and refreshes per client address,
    /// default 30 (bursts of that size).
    pub login_rate_per_minute: u32,
    /// `GATEWAY_SEND_RATE_PER_SECOND`: message sends per user, default 20 (bursts of twice that).
    pub send_rate_per_second: u32,
    /// `GATEWAY_FORWARD_KEYS_RATE_PER_SECOND`: ForwardKeys calls per user (each up to 500 keys,
    /// every one a signature chat verifies), default 5, in bursts of 20 times that: a new
    /// device's catch-up is one call per conversation (and per 500 keys), all at once.
    pub forward_keys_rate_per_second: u32,
    /// `GATEWAY_PUBLIC_RATE_PER_SECOND`: calls per client address to the public methods that
    /// need no token and have no limit of their own (GetJwks; the gateway's reflection), default
    /// 10 (bursts of twice that).
    pub public_rate_per_second: u32,
}

/// The replicas of one upstream service: one `http://host:port` URL, or several separated by
/// commas. Every address of every URL's host is a replica, and calls are balanced over all of
/// them. On Kubernetes that is one headless Service name; a list names static replicas where no
/// name resolves to all of them (e.g. `http://127.0.0.1:50062,http://127.0.0.2:50062` on one
/// machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrls(Vec<Uri>);

/// Why an upstream URL list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidUpstreamUrls(String);

impl UpstreamUrls {
    /// The URLs, in the order given (never empty).
    pub fn iter(&self) -> impl Iterator<Item = &Uri> {
        self.0.iter()
    }
}

impl From<Uri> for UpstreamUrls {
    fn from(uri: Uri) -> Self {
        Self(vec![uri])
    }
}

impl FromStr for UpstreamUrls {
    type Err = InvalidUpstreamUrls;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let urls = text
            .split(',')
            .map(|url| {
                let uri: Uri = url
                    .trim()
                    .parse()
                    .map_err(|error| InvalidUpstreamUrls(format!("{url:?}: {error}")))?;
                if uri.scheme_str() != Some("http")
                    || uri.host().is_none()
                    || uri.port_u16().is_none()
                {
                    return Err(InvalidUpstreamUrls(format!(
                        "{url:?}: expected http://host:port"
                    )));
                }
                Ok(uri)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(urls))
    }
}

impl fmt::Display for UpstreamUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, uri) in self.0.iter().enumerate() {
            let separator = if index == 0 { "" } else { "," };
            write!(f, "{separator}{uri}")?;
        }
        Ok(())
    }
}

impl FromEnv for Config {
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = EnvReader::new("GATEWAY", lookup);
        let tls = match (
            env.string_or("TLS_CERT_FILE", ""),
            env.string_or("TLS_KEY_FILE", ""),
        ) {
            (cert, key) if cert.is_empty() && key.is_empty() => None,
            (cert, key) if !cert.is_empty() && !key.is_empty() => {
                Some((PathBuf::from(cert), PathBuf::from(key)))
            }
            _ => {
                return Err(ConfigError::Invalid {
                    key: env.key("TLS_CERT_FILE"),
                    reason: "set both GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE, or neither"
                        .into(),
                });
            }
        };
        let server = ServerSettings::from_env(&env, DEFAULT_LISTEN_ADDR)?;
        let metrics_listen_addr = common::config::metrics_listen_addr(
            &env,
            DEFAULT_METRICS_LISTEN_ADDR,
            server.listen_addr,
        )?;
        Ok(Self {
            server,
            upstreams: UpstreamSettings {
                auth: upstream_url(&env, "AUTH_URL", "http://127.0.0.1:50061")?,
                chat: upstream_url(&env, "CHAT_URL", "http://127.0.0.1:50062")?,
                group: upstream_url(&env, "GROUP_URL", "http://127.0.0.1:50063")?,
                resolve_interval: env
                    .seconds_or("UPSTREAM_RESOLVE_INTERVAL_SECS", Duration::from_secs(10))?,
                hosts_file: Some(env.string_or("UPSTREAM_HOSTS_FILE", ""))
                    .filter(|file| !file.is_empty())
                    .map(PathBuf::from),
                connect_timeout: Duration::from_millis(
                    env.parse_or("UPSTREAM_CONNECT_TIMEOUT_MS", 1000)?,
                ),
                connections_per_address: env.parse_or("UPSTREAM_CONNECTIONS_PER_ADDRESS", 2)?,
            },
            token_issuer: env.string_or("TOKEN_ISSUER", "chat-auth"),
            token_audience: env.string_or("TOKEN_AUDIENCE", "chat"),
            service_secret: env.secret_source("SERVICE_SECRET")?,
            revocation_max_staleness: revocation_max_staleness(&env)?,
            cors_allowed_origins: env
                .string_or("CORS_ALLOWED_ORIGINS", "")
                .split(',')
                .map(str::trim)
                .filter(|origin| !origin.is_empty())
                .map(str::to_owned)
                .collect(),
            limits: Limits {
                max_concurrent_streams: env.parse_or("MAX_CONCURRENT_STREAMS", 100)?,
                max_header_list_bytes: env.parse_or("MAX_HEADER_LIST_BYTES", 16 * 1024)?,
                max_message_bytes: env.parse_or("MAX_MESSAGE_BYTES", 4 * 1024 * 1024)?,
                keepalive_interval: env
                    .seconds_or("KEEPALIVE_INTERVAL_SECS", Duration::from_secs(30))?,
                keepalive_timeout: env
                    .seconds_or("KEEPALIVE_TIMEOUT_SECS", Duration::from_secs(10))?,
                idle_timeout: env.seconds_or("IDLE_TIMEOUT_SECS", Duration::from_secs(300))?,
                header_read_timeout: env
                    .seconds_or("HEADER_READ_TIMEOUT_SECS", Duration::from_secs(30))?,
                send_timeout: env.seconds_or("SEND_TIMEOUT_SECS", Duration::from_secs(60))?,
                unary_timeout: env.seconds_or("UNARY_TIMEOUT_SECS", Duration::from_secs(30))?,
                login_rate_per_minute: env.parse_or("LOGIN_RATE_PER_MINUTE", 30)?,
                send_rate_per_second: env.parse_or("SEND_RATE_PER_SECOND", 20)?,
                forward_keys_rate_per_second: env.parse_or("FORWARD_KEYS_RATE_PER_SECOND", 5)?,
                public_rate_per_second: env.parse_or("PUBLIC_RATE_PER_SECOND", 10)?,
            },
            web_root: Some(env.string_or("WEB_ROOT", ""))
                .filter(|root| !root.is_empty())
                .map(PathBuf::from),
            metrics_listen_addr,
            tls,
        })
    }
}

impl Config {
    /// A configuration for tests: ephemeral loopback ports (metrics included), quiet logs, a short
    /// drain, and upstreams that the test sets itself.
    pub fn for_tests(upstreams: UpstreamSettings) -> Self {
        Self {
            server: ServerSettings::for_tests(),
            upstreams,
            token_issuer: "chat-auth".into(),
            token_audience: "chat".into(),
            service_secret: service_credential::test_secret(),
            revocation_max_staleness: DEFAULT_REVOCATION_MAX_STALENESS,
            cors_allowed_origins: vec!["http://allowed.example".into()],
            limits: Limits {
                max_concurrent_streams: 2000,
                max_header_list_bytes: 16 * 1024,
                max_message_bytes: 4 * 1024 * 1024,
                keepalive_interval: Duration::from_secs(30),
                keepalive_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(300),
                header_read_timeout: Duration::from_secs(30),
                send_timeout: Duration::from_secs(60),
                unary_timeout: Duration::from_secs(30),
                login_rate_per_minute: 1000,
                send_rate_per_second: 1000,
                forward_keys_rate_per_second: 1000,
                public_rate_per_second: 1000,
            },
            web_root: None,
            metrics_listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
        }
    }
}

fn upstream_url(
    env: &EnvReader,
    setting: &str,
    default: &'static str,
) -> Result<UpstreamUrls, ConfigError> {
    env.parse_or(setting, UpstreamUrls::from(Uri::from_static(default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../local.env.example");

    #[test]
    fn the_example_env_file_documents_exactly_what_the_code_reads() {
        common::config::assert_env_file_matches(EXAMPLE, Config::from_lookup);
    }

    fn config_with(key: &str, value: &str) -> Result<Config, ConfigError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        Config::from_lookup(&move |k| match k {
            "GATEWAY_SERVICE_SECRET" => Some("s".repeat(32)),
            _ => (k == key).then(|| value.clone()),
        })
    }

    #[test]
    fn by_default_metrics_are_served_on_a_loopback_port_of_their_own() {
        // Only the one required setting.
        let config = config_with("GATEWAY_SERVICE_SECRET", &"s".repeat(32)).unwrap();

        assert_eq!(config.metrics_listen_addr, DEFAULT_METRICS_LISTEN_ADDR);
        assert!(config.metrics_listen_addr.ip().is_loopback());
        assert_ne!(
            config.metrics_listen_addr.port(),
            config.server.listen_addr.port()
        );
    }

    #[test]
    fn metrics_may_not_share_the_public_port() {
        let lookup = |key: &str| match key {
            "GATEWAY_LISTEN_ADDR" => Some("0.0.0.0:8080".to_owned()),
            "GATEWAY_METRICS_LISTEN_ADDR" => Some("127.0.0.1:8080".to_owned()),
            "GATEWAY_SERVICE_SECRET" => Some("s".repeat(32)),
            _ => None,
        };

        let error = Config::from_lookup(&lookup).unwrap_err();

        assert!(
            error.to_string().contains("GATEWAY_METRICS_LISTEN_ADDR"),
            "{error}"
        );
    }

    #[test]
    fn an_upstream_url_may_list_several_replicas() {
        let config = config_with(
            "GATEWAY_CHAT_URL",
            "http://127.0.0.1:50062, http://127.0.0.2:50062",
        )
        .unwrap();

        let urls: Vec<String> = config.upstreams.chat.iter().map(Uri::to_string).collect();
        assert_eq!(urls, ["http://127.0.0.1:50062/", "http://127.0.0.2:50062/"]);
        assert_eq!(config.upstreams.auth.iter().count(), 1);
    }

    #[test]
    fn every_url_of_a_list_must_be_http_with_a_host_and_a_port() {
        for bad in [
            "http://127.0.0.1:50062,",
            "http://127.0.0.1:50062,https://127.0.0.2:50062",
            "http://127.0.0.1:50062,http://127.0.0.2",
            "http://127.0.0.1:50062,,http://127.0.0.2:50062",
        ] {
            let error = config_with("GATEWAY_CHAT_URL", bad).unwrap_err();

            assert!(
                error.to_string().contains("GATEWAY_CHAT_URL"),
                "{bad:?}: {error}"
            );
        }
    }
}
