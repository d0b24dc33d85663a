//! A tonic [`Channel`] balanced over every address its name resolves to: the calls between
//! services (chat → auth and group, group → auth).
//!
//! A plain `Endpoint::connect_lazy` to a Kubernetes ClusterIP keeps one HTTP/2 connection to one
//! pod behind it: every call of a replica goes to that pod, and pods the HPA adds get none of
//! them. Given a headless Service's name instead, [`channel`] does what the gateway does for its
//! upstreams (`gateway/src/upstream.rs`): it resolves the name, again every
//! [`RESOLVE_INTERVAL`] ([`crate::resolve::Resolution`], the same loop), keeps
//! [`CONNECTIONS_PER_ADDRESS`] lazy connections to every address, and spreads calls over them
//! (tower's power-of-two-choices over in-flight requests, as tonic's `balance_channel`). A pod
//! that leaves the name stops receiving new calls; calls and streams already on it finish there.
//!
//! One difference from the gateway's pools: a connection whose last attempt failed is not skipped.
//! tonic's lazy connections stay "ready" and fail the next call picked for them (UNAVAILABLE, at
//! once: connection refused), then try again. So a pod that dies without leaving DNS first (a
//! crash, a lost node) fails some calls until the name stops listing it: a container exit within
//! seconds (the endpoint turns not ready), a lost node after the node-lifecycle timeouts. A pod
//! that stops normally leaves DNS at its preStop and costs nothing.
//!
//! Until the name first resolves, and whenever it resolves to nothing, the channel connects to the
//! URL itself, as a plain channel would: calls fail as they did (UNAVAILABLE when nothing
//! answers) rather than wait for an address. `https://` URLs are not balanced (a certificate
//! names the host, not the pods' addresses): they get one lazy channel.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use tokio::sync::mpsc::Sender;
use tonic::transport::{Channel, Endpoint, channel::Change};

use crate::resolve::{self, Resolution, Resolver};

/// How often the name is resolved again. A stopping pod leaves DNS when its preStop starts
/// (headless Services list ready pods only); the chart's `preStopSleepSeconds` (15 s) covers this.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// Connections kept to every address: one connection's I/O runs on one thread at a time.
pub const CONNECTIONS_PER_ADDRESS: usize = 2;
/// Room for the changes of one resolution (an insert or a removal per connection) before the
/// resolving task waits for the balancer to take them.
const CHANGES_CAPACITY: usize = 64;

/// A lazily connected channel over every address the host of `url` resolves to, each connection
/// set up by `configure` (timeouts, keepalive). Starts a task that follows the name for as long
/// as a clone of the channel lives. Must run inside a Tokio runtime.
///
/// # Errors
/// When `url` is not a valid URI.
pub fn channel(
    url: &str,
    configure: impl Fn(Endpoint) -> Endpoint + Send + Sync + 'static,
) -> Result<Channel, tonic::transport::Error> {
    balanced(url, configure, resolve::dns(), RESOLVE_INTERVAL)
}

/// What the balancer holds a connection under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// The URL as given, while no address is known.
    Url,
    /// One of the connections to an address.
    Address(SocketAddr, usize),
}

fn balanced(
    url: &str,
    configure: impl Fn(Endpoint) -> Endpoint + Send + Sync + 'static,
    resolver: Resolver,
    interval: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let fallback = configure(Endpoint::from_shared(url.to_owned())?);
    if fallback.uri().scheme_str() != Some("http") {
        return Ok(fallback.connect_lazy());
    }
    let names = vec![resolve::host_and_port(fallback.uri())];
    let (channel, changes) = Channel::balance_channel(CHANGES_CAPACITY);
    let resolution = Resolution::new(names, resolver, interval);
    tokio::spawn(follow(resolution, fallback, configure, changes));
    Ok(channel)
}

/// Keeps the balancer's connections matching the name's addresses until the channel is gone.
async fn follow(
    mut resolution: Resolution,
    fallback: Endpoint,
    configure: impl Fn(Endpoint) -> Endpoint,
    changes: Sender<Change<Key, Endpoint>>,
) {
    let mut current = HashSet::from([Key::Url]);
    if changes
        .send(Change::Insert(Key::Url, fallback.clone()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let addresses = tokio::select! {
            addresses = resolution.changed() => addresses,
            // Every clone of the channel is gone, and with it the balancer.
            () = changes.closed() => return,
        };
        let wanted: HashSet<Key> = if addresses.is_empty() {
            HashSet::from([Key::Url])
        } else {
            addresses
                .iter()
                .flat_map(|address| (0..CONNECTIONS_PER_ADDRESS).map(|n| Key::Address(*address, n)))
                .collect()
        };
        // New connections first, so that the balancer never runs out of them.
        for key in wanted.difference(&current) {
            let endpoint = match key {
                Key::Url => Ok(fallback.clone()),
                Key::Address(address, _) => {
                    Endpoint::from_shared(format!("http://{address}")).map(&configure)
                }
            };
            let Ok(endpoint) = endpoint else { continue };
            if changes
                .send(Change::Insert(key.clone(), endpoint))
                .await
                .is_err()
            {
                return;
            }
        }
        for key in current.difference(&wanted) {
            if changes.send(Change::Remove(key.clone())).await.is_err() {
                return;
            }
        }
        current = wanted;
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tokio::net::TcpListener;
    use tonic::service::Routes;
    use tonic_health::{
        ServingStatus,
        pb::{HealthCheckRequest, health_client::HealthClient},
    };

    use super::*;

    /// A health server on `listener` whose whole-server status tells which replica answered.
    async fn serve_health(listener: TcpListener, status: ServingStatus) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", status).await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(Routes::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }

    async fn replica(status: ServingStatus) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        serve_health(listener, status).await;
        address
    }

    /// The statuses `calls` health checks got, in order.
    async fn answers(channel: &Channel, calls: usize) -> Vec<i32> {
        let mut seen = Vec::new();
        for _ in 0..calls {
            let response = HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await
                .unwrap();
            seen.push(response.into_inner().status);
        }
        seen
    }

    fn listed(addresses: Arc<Mutex<Vec<SocketAddr>>>) -> Resolver {
        Arc::new(move |_, _| {
            let current = addresses.lock().unwrap().clone();
            Box::pin(async move { Ok(current) })
        })
    }

    fn configure(endpoint: Endpoint) -> Endpoint {
        endpoint.connect_timeout(Duration::from_millis(500))
    }

    #[tokio::test]
    async fn calls_spread_over_every_address_and_follow_re_resolution() {
        let first = replica(ServingStatus::Serving).await;
        let second = replica(ServingStatus::NotServing).await;
        let addresses = Arc::new(Mutex::new(vec![first, second]));
        let channel = balanced(
            "http://auth-headless:50061",
            configure,
            listed(addresses.clone()),
            Duration::from_millis(50),
        )
        .unwrap();

        let both: HashSet<i32> = answers(&channel, 50).await.into_iter().collect();
        *addresses.lock().unwrap() = vec![second];
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after: HashSet<i32> = answers(&channel, 20).await.into_iter().collect();

        assert_eq!(both.len(), 2, "both replicas answered: {both:?}");
        assert_eq!(after, HashSet::from([ServingStatus::NotServing as i32]));
    }

    #[tokio::test]
    async fn a_replica_added_under_the_name_gets_calls_without_a_new_channel() {
        let first = replica(ServingStatus::Serving).await;
        let addresses = Arc::new(Mutex::new(vec![first]));
        let channel = balanced(
            "http://group-headless:50063",
            configure,
            listed(addresses.clone()),
            Duration::from_millis(50),
        )
        .unwrap();
        let before: HashSet<i32> = answers(&channel, 20).await.into_iter().collect();

        // What the HPA does: one more pod, under the same name.
        let added = replica(ServingStatus::NotServing).await;
        addresses.lock().unwrap().push(added);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = answers(&channel, 100).await;

        assert_eq!(before, HashSet::from([ServingStatus::Serving as i32]));
        let on_added = after
            .iter()
            .filter(|status| **status == ServingStatus::NotServing as i32)
            .count();
        assert!(
            (20..=80).contains(&on_added),
            "the added replica took {on_added} of 100 calls"
        );
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_fails_calls_at_once_like_a_plain_channel() {
        // The URL itself is a closed port: what a plain channel would try.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let unresolvable: Resolver =
            Arc::new(|_, _| Box::pin(async { Err(io::Error::other("NXDOMAIN")) }));
        let channel = balanced(&url, configure, unresolvable, Duration::from_millis(50)).unwrap();

        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            HealthClient::new(channel).check(HealthCheckRequest::default()),
        )
        .await
        .expect("the call answers rather than waiting for an address");

        assert_eq!(answer.unwrap_err().code(), tonic::Code::Unavailable);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_loopback_name_resolved_by_dns_is_balanced_over_its_replicas() {
        // Two replicas on one port of two loopback addresses, as two pods behind a headless
        // Service; a hosts file gives the name both (what DNS does in the cluster).
        let (first, second) = loop {
            let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = first.local_addr().unwrap().port();
            if let Ok(second) = TcpListener::bind(("127.0.0.2", port)).await {
                break (first, second);
            }
        };
        let port = first.local_addr().unwrap().port();
        serve_health(first, ServingStatus::Serving).await;
        serve_health(second, ServingStatus::NotServing).await;
        let file = std::env::temp_dir().join(format!("balance-hosts-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, "127.0.0.1 auth-headless\n127.0.0.2 auth-headless\n").unwrap();
        let channel = balanced(
            &format!("http://auth-headless:{port}"),
            configure,
            resolve::hosts_file_then_dns(file.clone()),
            Duration::from_millis(50),
        )
        .unwrap();

        let seen: HashSet<i32> = answers(&channel, 50).await.into_iter().collect();
        std::fs::remove_file(&file).unwrap();

        assert_eq!(seen.len(), 2, "both replicas answered: {seen:?}");
    }
}
