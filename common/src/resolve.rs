//! Names resolved again and again, so that calls spread over every pod behind a name.
//!
//! A Kubernetes headless Service name resolves to one address per ready pod; a ClusterIP name to
//! one virtual address, which pins each long-lived HTTP/2 connection to one pod (and pods the HPA
//! adds get none of the calls on it). A client that resolves the headless name itself, and again
//! every few seconds, can keep connections to every pod, open connections to new pods, and retire
//! those to pods that left. [`Resolution`] is that loop's state; the gateway's upstream pools
//! (`gateway/src/upstream.rs`) and the balanced channels between services ([`crate::balance`])
//! both follow their names with it.
//!
//! Where no DNS knows the names (a local run with several replicas), a hosts file
//! ([`hosts_file_then_dns`]) read at each resolution stands in for it.

use std::{
    collections::HashSet, future::Future, io, net::SocketAddr, path::PathBuf, pin::Pin, sync::Arc,
    time::Duration,
};

/// What a [`Resolver`] returns.
pub type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a host and port into addresses: DNS in production ([`dns`]), a list in tests.
pub type Resolver = Arc<dyn Fn(String, u16) -> ResolveFuture + Send + Sync>;

/// The system resolver (`getaddrinfo`, as `tokio::net::lookup_host`).
pub fn dns() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

/// The addresses `file` (the `/etc/hosts` format) gives a name, read again at every resolution;
/// DNS for a name it does not list. An unreadable file is an error: the caller keeps the
/// addresses it had rather than ask DNS for names that exist only in the file.
pub fn hosts_file_then_dns(file: PathBuf) -> Resolver {
    let dns = dns();
    Arc::new(move |host, port| {
        let (file, dns) = (file.clone(), dns.clone());
        Box::pin(async move {
            let hosts = tokio::fs::read_to_string(&file).await.map_err(|error| {
                io::Error::new(error.kind(), format!("{}: {error}", file.display()))
            })?;
            match addresses_in_hosts(&hosts, &host, port) {
                Some(addresses) => Ok(addresses),
                None => dns(host, port).await,
            }
        })
    })
}

/// Every address a line of `hosts` gives `host` (`address name [aliases]`, `#` comments), or
/// `None` when no line names it.
fn addresses_in_hosts(hosts: &str, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let mut addresses = Vec::new();
    let mut listed = false;
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(address) = fields.next() else {
            continue;
        };
        if fields.any(|name| name.eq_ignore_ascii_case(host)) {
            listed = true;
            match address.parse::<std::net::IpAddr>() {
                Ok(ip) => addresses.push(SocketAddr::new(ip, port)),
                Err(_) => tracing::warn!(%address, %host, "not an address in the hosts file"),
            }
        }
    }
    listed.then_some(addresses)
}

/// The host and port of `uri` (port 80 when it names none, as `http://`).
pub fn host_and_port(uri: &http::Uri) -> (String, u16) {
    let host = uri.host().unwrap_or("localhost");
    // An IPv6 literal comes bracketed out of a URI; the resolver wants it bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host.to_owned(), uri.port_u16().unwrap_or(80))
}

/// Following a few names (hosts and ports) as one set of addresses: the union of what each
/// resolves to.
pub struct Resolution {
    names: Vec<(String, u16)>,
    resolve: Resolver,
    interval: Duration,
    /// The last addresses each name resolved to.
    known: Vec<HashSet<SocketAddr>>,
    /// What [`Resolution::changed`] returned last.
    current: HashSet<SocketAddr>,
    first: bool,
}

impl Resolution {
    /// Follows `names`, resolving them with `resolve` every `interval`.
    pub fn new(names: Vec<(String, u16)>, resolve: Resolver, interval: Duration) -> Self {
        Self {
            known: vec![HashSet::new(); names.len()],
            names,
            resolve,
            interval,
            current: HashSet::new(),
            first: true,
        }
    }

    /// Resolves every name (at once the first time, then every interval) until their addresses
    /// differ from what this returned last, and returns them. A name that fails to resolve keeps
    /// its last addresses: a DNS hiccup must not empty a pool. Cancel-safe.
    pub async fn changed(&mut self) -> HashSet<SocketAddr> {
        loop {
            if !self.first {
                tokio::time::sleep(self.interval).await;
            }
            self.first = false;
            for ((host, port), addresses) in self.names.iter().zip(&mut self.known) {
                match (self.resolve)(host.clone(), *port).await {
                    Ok(resolved) => *addresses = resolved.into_iter().collect(),
                    Err(error) => tracing::warn!(%host, %error, "cannot resolve upstream"),
                }
            }
            let resolved: HashSet<SocketAddr> = self.known.iter().flatten().copied().collect();
            if resolved != self.current {
                let hosts: Vec<&str> = self.names.iter().map(|(host, _)| host.as_str()).collect();
                tracing::info!(?hosts, addresses = ?resolved, "upstream addresses changed");
                self.current.clone_from(&resolved);
                return resolved;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_hosts_file_gives_a_name_every_address_of_its_lines() {
        let hosts = "# Kubernetes-like records\n\
                     127.0.0.1 chat-headless chat\n\
                     127.0.0.2   CHAT-HEADLESS # a second pod\n\
                     not-an-address chat-headless\n\
                     127.0.0.9 auth-headless\n";

        let chat = addresses_in_hosts(hosts, "chat-headless", 50062);
        let unknown = addresses_in_hosts(hosts, "group-headless", 50063);

        assert_eq!(
            chat,
            Some(vec![
                "127.0.0.1:50062".parse().unwrap(),
                "127.0.0.2:50062".parse().unwrap()
            ])
        );
        assert_eq!(unknown, None);
    }

    #[test]
    fn a_uri_gives_its_host_and_port_with_ipv6_unbracketed() {
        let named = host_and_port(&"http://auth-headless:50061".parse().unwrap());
        let ipv6 = host_and_port(&"http://[::1]:50061".parse().unwrap());
        let no_port = host_and_port(&"http://auth".parse().unwrap());

        assert_eq!(named, ("auth-headless".to_owned(), 50061));
        assert_eq!(ipv6, ("::1".to_owned(), 50061));
        assert_eq!(no_port, ("auth".to_owned(), 80));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_name_keeps_its_last_addresses_and_only_changes_are_returned() {
        let answers: Arc<Mutex<Vec<io::Result<Vec<SocketAddr>>>>> = Arc::new(Mutex::new(vec![
            Ok(vec!["10.0.0.1:1".parse().unwrap()]),
            Err(io::Error::other("SERVFAIL")),
            Ok(vec!["10.0.0.1:1".parse().unwrap()]),
            Ok(vec![
                "10.0.0.1:1".parse().unwrap(),
                "10.0.0.2:1".parse().unwrap(),
            ]),
        ]));
        let resolve: Resolver = Arc::new({
            let answers = answers.clone();
            move |_, _| {
                let answer = answers.lock().unwrap().remove(0);
                Box::pin(async move { answer })
            }
        });
        let mut resolution = Resolution::new(
            vec![("auth-headless".to_owned(), 1)],
            resolve,
            Duration::from_secs(5),
        );

        let first = resolution.changed().await;
        let second = resolution.changed().await;

        assert_eq!(first, HashSet::from(["10.0.0.1:1".parse().unwrap()]));
        assert_eq!(
            second,
            HashSet::from(["10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap()])
        );
        assert!(
            answers.lock().unwrap().is_empty(),
            "the failure and the unchanged answer were skipped"
        );
    }
}
