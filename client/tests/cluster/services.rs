//! What stands in for Kubernetes' Services in `rollout.rs`, where pods come and go:
//!
//! - [`ClusterIp`]: what kube-proxy makes of a ClusterIP Service (chat and group reach auth, chat
//!   reaches group, through one): a TCP forwarder on a fixed address that sends each new
//!   connection to the next ready endpoint, round-robin; a connection stays on its endpoint until
//!   either side closes it (conntrack), even after the endpoint left the list.
//! - [`Records`]: what the cluster DNS answers for the headless Services the gateway resolves
//!   (`<component>-headless`): a file in the `/etc/hosts` format that the gateway reads at each
//!   re-resolution (`GATEWAY_UPSTREAM_HOSTS_FILE`), rewritten whole (write, then rename) whenever
//!   the ready pods change, so that no reader sees half of it.
//!
//! Both list only ready pods, and a pod leaves both as it starts terminating (before its preStop
//! sleep), as Endpoints do.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A ClusterIP Service: one address, forwarding to the current endpoints.
pub struct ClusterIp {
    /// Where clients connect.
    pub addr: SocketAddr,
    endpoints: Arc<Mutex<Vec<SocketAddr>>>,
    accept: JoinHandle<()>,
}

/// The headless Services' records, in a hosts file.
pub struct Records {
    /// The file the gateway reads.
    pub file: PathBuf,
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl ClusterIp {
    /// Listens on a free loopback port and forwards to `endpoints`.
    pub async fn start(endpoints: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = Arc::new(Mutex::new(endpoints));
        let current = endpoints.clone();
        let accept = tokio::spawn(async move {
            let next = AtomicUsize::new(0);
            while let Ok((mut client, _)) = listener.accept().await {
                let endpoint = {
                    let endpoints = current.lock().unwrap();
                    if endpoints.is_empty() {
                        continue;
                    }
                    endpoints[next.fetch_add(1, Ordering::Relaxed) % endpoints.len()]
                };
                tokio::spawn(async move {
                    // A refused connection closes the client's: it sees a reset, as with an
                    // endpoint that just died.
                    if let Ok(mut upstream) = TcpStream::connect(endpoint).await {
                        let _ = upstream.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            addr,
            endpoints,
            accept,
        }
    }

    /// Replaces the endpoints new connections go to.
    pub fn set_endpoints(&self, endpoints: Vec<SocketAddr>) {
        *self.endpoints.lock().unwrap() = endpoints;
    }
}

impl Drop for ClusterIp {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Records {
    /// Records in `file`, empty until [`Records::set`].
    pub fn new(file: PathBuf) -> Self {
        let records = Self {
            file,
            names: BTreeMap::new(),
        };
        records.write();
        records
    }

    /// `name` now resolves to `addresses`.
    pub fn set(&mut self, name: &str, addresses: Vec<IpAddr>) {
        self.names.insert(name.to_owned(), addresses);
        self.write();
    }

    fn write(&self) {
        let mut text = String::from("# The headless Services' records (client/tests/cluster).\n");
        for (name, addresses) in &self.names {
            for address in addresses {
                text.push_str(&format!("{address} {name}\n"));
            }
        }
        let partial = self.file.with_extension("partial");
        fs::write(&partial, text).unwrap();
        fs::rename(&partial, &self.file).unwrap();
    }
}
