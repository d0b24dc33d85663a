//! Channels to the upstream services, balanced over every address their name resolves to.
//!
//! A Kubernetes headless Service name resolves to one address per ready pod. A plain ClusterIP
//! would pin each long-lived HTTP/2 connection to one pod; resolving ourselves lets tonic's
//! power-of-two-choices balancer spread calls and streams over all pods. The name is re-resolved
//! periodically, so new pods receive calls and removed ones stop receiving new ones.

use std::{collections::HashSet, io, net::SocketAddr, sync::Arc, time::Duration};

use futures::future::BoxFuture;

use http::Uri;
use tokio::sync::mpsc::Sender;
use tonic::transport::{Channel, Endpoint, channel::Change};

use crate::{config::UpstreamSettings, methods::Upstream};

/// HTTP/2 flow-control window of each upstream connection (see `endpoint`).
const UPSTREAM_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of each upstream stream.
const UPSTREAM_STREAM_WINDOW: u32 = 1024 * 1024;

/// One balanced channel per upstream service.
#[derive(Debug, Clone)]
pub struct Upstreams {
    auth: Channel,
    chat: Channel,
    group: Channel,
    /// How long to wait for a ready connection before answering UNAVAILABLE.
    pub connect_timeout: Duration,
}

impl Upstreams {
    /// Starts resolving every upstream name in the background and returns the channels at once.
    /// Must run inside a Tokio runtime.
    pub fn start(settings: &UpstreamSettings) -> Self {
        let balanced = |uri: &Uri| balanced_channel(uri, settings);
        Self {
            auth: balanced(&settings.auth),
            chat: balanced(&settings.chat),
            group: balanced(&settings.group),
            connect_timeout: settings.connect_timeout,
        }
    }

    /// The channel to `upstream`.
    pub fn channel(&self, upstream: Upstream) -> Channel {
        match upstream {
            Upstream::Auth => self.auth.clone(),
            Upstream::Chat => self.chat.clone(),
            Upstream::Group => self.group.clone(),
        }
    }
}

/// Turns a host and port into addresses; DNS in production, a list in tests.
type Resolver =
    Arc<dyn Fn(String, u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

fn dns() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

fn balanced_channel(uri: &Uri, settings: &UpstreamSettings) -> Channel {
    balanced_channel_with(uri, settings, dns())
}

/// One connection in the balancer: an upstream address and which of its connections.
type ConnectionKey = (SocketAddr, usize);

fn balanced_channel_with(uri: &Uri, settings: &UpstreamSettings, resolve: Resolver) -> Channel {
    let (channel, changes) = Channel::balance_channel::<ConnectionKey>(64);
    let host = uri.host().unwrap_or("localhost").to_owned();
    let port = uri.port_u16().unwrap_or(80);
    tokio::spawn(resolve_forever(
        host,
        port,
        changes,
        settings.clone(),
        resolve,
    ));
    channel
}

/// Keeps the balancer's endpoint set equal to what `host` resolves to, until the channel is gone.
async fn resolve_forever(
    host: String,
    port: u16,
    changes: Sender<Change<ConnectionKey, Endpoint>>,
    settings: UpstreamSettings,
    resolve: Resolver,
) {
    let mut current: HashSet<SocketAddr> = HashSet::new();
    loop {
        match resolve(host.clone(), port).await {
            Ok(addresses) => {
                let resolved: HashSet<SocketAddr> = addresses.into_iter().collect();
                let connections = settings.connections_per_address.max(1);
                for gone in current.difference(&resolved) {
                    for index in 0..connections {
                        if changes.send(Change::Remove((*gone, index))).await.is_err() {
                            return;
                        }
                    }
                }
                for new in resolved.difference(&current) {
                    for index in 0..connections {
                        let endpoint = endpoint(*new, &settings);
                        if changes
                            .send(Change::Insert((*new, index), endpoint))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                if resolved != current {
                    tracing::info!(%host, addresses = ?resolved, "upstream addresses changed");
                }
                current = resolved;
            }
            // Keep the last known addresses: a DNS hiccup must not empty the balancer.
            Err(error) => tracing::warn!(%host, %error, "cannot resolve upstream"),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.resolve_interval) => {}
            () = changes.closed() => return,
        }
    }
}

fn endpoint(address: SocketAddr, settings: &UpstreamSettings) -> Endpoint {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("a socket address is a valid authority")
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        // Many client streams share one upstream connection. A large connection window keeps flow
        // control from throttling them, and h2 sizes its budget for small DATA frames (one small
        // message per stream, e.g. a heartbeat) from it: with the default 64 KiB window, a burst
        // of small messages on a thousand streams trips h2's flood protection (GOAWAY
        // ENHANCE_YOUR_CALM "too_many_data_frames").
        .initial_connection_window_size(UPSTREAM_CONNECTION_WINDOW)
        .initial_stream_window_size(UPSTREAM_STREAM_WINDOW)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::net::TcpListener;
    use tonic::service::Routes;
    use tonic_health::{
        ServingStatus,
        pb::{HealthCheckRequest, health_client::HealthClient},
    };

    use super::*;

    /// A health server whose whole-server status tells which replica answered.
    async fn replica(status: ServingStatus) -> SocketAddr {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(Routes::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    async fn answers(channel: &Channel, calls: usize) -> HashSet<i32> {
        let mut seen = HashSet::new();
        for _ in 0..calls {
            let response = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
            seen.insert(response.into_inner().status);
        }
        seen
    }

    #[tokio::test]
    async fn calls_spread_over_every_address_and_follow_re_resolution() {
        let first = replica(ServingStatus::Serving).await;
        let second = replica(ServingStatus::NotServing).await;
        let addresses = Arc::new(Mutex::new(vec![first, second]));
        let resolve: Resolver = {
            let addresses = addresses.clone();
            Arc::new(move |_, _| {
                let current = addresses.lock().unwrap().clone();
                Box::pin(async move { Ok(current) })
            })
        };
        let settings = UpstreamSettings {
            auth: "http://replicas:1".parse().unwrap(),
            chat: "http://replicas:1".parse().unwrap(),
            group: "http://replicas:1".parse().unwrap(),
            resolve_interval: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(500),
            connections_per_address: 2,
        };
        let channel = balanced_channel_with(&settings.chat, &settings, resolve);
        tokio::time::sleep(Duration::from_millis(100)).await;

        let both = answers(&channel, 50).await;
        *addresses.lock().unwrap() = vec![second];
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = answers(&channel, 20).await;

        assert_eq!(both.len(), 2, "both replicas answered: {both:?}");
        assert_eq!(after, HashSet::from([ServingStatus::NotServing as i32]));
    }
}
