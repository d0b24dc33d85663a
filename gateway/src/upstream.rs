//! Channels to the upstream services, balanced over every address their name resolves to.
//!
//! A Kubernetes headless Service name resolves to one address per ready pod. A plain ClusterIP
//! would pin each long-lived HTTP/2 connection to one pod; resolving ourselves lets tonic's
//! power-of-two-choices balancer spread calls and streams over all pods. The name is re-resolved
//! periodically, so new pods receive calls and removed ones stop receiving new ones.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

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

fn balanced_channel(uri: &Uri, settings: &UpstreamSettings) -> Channel {
    let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
    let host = uri.host().unwrap_or("localhost").to_owned();
    let port = uri.port_u16().unwrap_or(80);
    tokio::spawn(resolve_forever(host, port, changes, settings.clone()));
    channel
}

/// Keeps the balancer's endpoint set equal to what `host` resolves to, until the channel is gone.
async fn resolve_forever(
    host: String,
    port: u16,
    changes: Sender<Change<SocketAddr, Endpoint>>,
    settings: UpstreamSettings,
) {
    let mut current: HashSet<SocketAddr> = HashSet::new();
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addresses) => {
                let resolved: HashSet<SocketAddr> = addresses.collect();
                for gone in current.difference(&resolved) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in resolved.difference(&current) {
                    if changes
                        .send(Change::Insert(*new, endpoint(*new, &settings)))
                        .await
                        .is_err()
                    {
                        return;
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
