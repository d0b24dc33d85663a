//! [`ChaosProxy`]: a TCP proxy a test puts between two components (gateway and chat, chat and
//! PostgreSQL, chat and auth or group) to break the network between them on demand: cut every
//! connection, stall them (sockets stay open, no byte moves), add latency, refuse new
//! connections, or point new connections somewhere else. Every switch applies at once to the
//! connections already open, except [`ChaosProxy::set_targets`], which only concerns new ones
//! (an open TCP connection cannot move).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
    sync::watch,
};

/// Read buffer per direction of a connection.
const CHUNK_BYTES: usize = 16 * 1024;

/// A TCP proxy on a loopback port whose network can be broken during a test. Dropping it
/// stops accepting and resets every connection through it.
pub struct ChaosProxy {
    /// Where clients connect instead of the target.
    pub addr: SocketAddr,
    state: Arc<Shared>,
}

/// The switches, as the connection tasks see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Switches {
    /// Bumped by every cut: a connection opened under an older generation is reset.
    cut_generation: u64,
    stalled: bool,
    refusing: bool,
    latency: Duration,
    stopped: bool,
}

struct Shared {
    switches: watch::Sender<Switches>,
    targets: Mutex<Vec<SocketAddr>>,
    next_target: AtomicUsize,
    open_connections: AtomicUsize,
}

impl ChaosProxy {
    /// Starts proxying connections on a free loopback port to `targets` (round-robin; none: every
    /// connection is reset until [`ChaosProxy::set_targets`] names one). Synchronous, so that it
    /// can be called where a component's address is decided; must be called within a Tokio
    /// runtime.
    ///
    /// # Panics
    /// When no loopback port can be bound, or outside a Tokio runtime.
    #[must_use]
    pub fn start(targets: Vec<SocketAddr>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let addr = listener.local_addr().expect("a bound address");
        let listener = TcpListener::from_std(listener).expect("within a Tokio runtime");
        let state = Arc::new(Shared {
            switches: watch::Sender::new(Switches::default()),
            targets: Mutex::new(targets),
            next_target: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
        });
        tokio::spawn(accept(listener, state.clone()));
        Self { addr, state }
    }

    /// Resets every open connection (as the kernel does for a peer that vanished with unread
    /// data). New connections are accepted as before.
    pub fn cut(&self) {
        self.state
            .switches
            .send_modify(|switches| switches.cut_generation += 1);
    }

    /// Stalls (`true`) or resumes (`false`) every connection, open or new: while stalled, the
    /// sockets stay open and nothing is read or written, so the peers' buffers fill and their
    /// writes block, as behind a dead link that sends no reset.
    pub fn stall(&self, stalled: bool) {
        self.state
            .switches
            .send_modify(|switches| switches.stalled = stalled);
    }

    /// Delays every chunk of bytes, in both directions, by `latency` (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.state
            .switches
            .send_modify(|switches| switches.latency = latency);
    }

    /// Refuses (`true`) new connections: each is reset as soon as it is accepted, which a client
    /// sees as a reset connection (the listening port stays bound, so no other process can take
    /// it meanwhile). Open connections are left alone.
    pub fn refuse(&self, refusing: bool) {
        self.state
            .switches
            .send_modify(|switches| switches.refusing = refusing);
    }

    /// Where new connections go from now on (round-robin). Open connections stay where they are.
    ///
    /// # Panics
    /// If a previous holder of the lock panicked.
    pub fn set_targets(&self, targets: Vec<SocketAddr>) {
        *self.state.targets.lock().expect("not poisoned") = targets;
    }

    /// How many connections are open through the proxy.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.state.open_connections.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.state.switches.send_modify(|switches| {
            switches.stopped = true;
            switches.cut_generation += 1;
        });
    }
}

async fn accept(listener: TcpListener, state: Arc<Shared>) {
    let mut switches = state.switches.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = switches.wait_for(|switches| switches.stopped) => return,
        };
        let Ok((client, _)) = accepted else { continue };
        let now = *state.switches.borrow();
        let target = {
            let targets = state.targets.lock().expect("not poisoned");
            let next = state.next_target.fetch_add(1, Ordering::Relaxed);
            (!targets.is_empty()).then(|| targets[next % targets.len()])
        };
        let (Some(target), false) = (target, now.refusing) else {
            reset(&client);
            continue;
        };
        tokio::spawn(relay(client, target, state.clone(), now.cut_generation));
    }
}

/// Relays one connection until either side closes or a cut resets it.
async fn relay(client: TcpStream, target: SocketAddr, state: Arc<Shared>, generation: u64) {
    let mut switches = state.switches.subscribe();
    let cut = |switches: &Switches| switches.cut_generation != generation;
    let server = tokio::select! {
        connected = TcpStream::connect(target) => connected,
        _ = switches.wait_for(cut) => {
            reset(&client);
            return;
        }
    };
    let Ok(server) = server else {
        reset(&client);
        return;
    };
    let (mut client, mut server) = (client, server);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    state.open_connections.fetch_add(1, Ordering::Relaxed);
    let was_cut = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let upstream = pump(client_read, server_write, state.switches.subscribe());
        let downstream = pump(server_read, client_write, state.switches.subscribe());
        tokio::select! {
            _ = async { tokio::join!(downstream, upstream) } => false,
            _ = switches.wait_for(cut) => true,
        }
    };
    if was_cut {
        // Reset rather than close, as the kernel does for a peer that vanished.
        reset(&client);
        reset(&server);
    }
    state.open_connections.fetch_sub(1, Ordering::Relaxed);
}

/// Copies `from` to `to` while the switches allow, until `from` ends or fails; then shuts
/// `to`'s write side down (passing the end of the stream on).
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mut switches: watch::Receiver<Switches>,
) {
    let mut buffer = vec![0; CHUNK_BYTES];
    loop {
        if switches
            .wait_for(|switches| !switches.stalled)
            .await
            .is_err()
        {
            break;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let latency = switches.borrow().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        // Bytes read before a stall began are held, not written, until it ends.
        if switches
            .wait_for(|switches| !switches.stalled)
            .await
            .is_err()
        {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::ChaosProxy;

    const SHORT: Duration = Duration::from_millis(300);

    /// An echo server on a loopback port.
    async fn echo_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    /// Writes `bytes` and reads as many back within `within`, `None` when they do not come.
    async fn round_trip(stream: &mut TcpStream, bytes: &[u8], within: Duration) -> Option<Vec<u8>> {
        stream.write_all(bytes).await.ok()?;
        let mut answer = vec![0; bytes.len()];
        match tokio::time::timeout(within, stream.read_exact(&mut answer)).await {
            Ok(Ok(_)) => Some(answer),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_stall_holds_the_bytes_until_it_ends_and_a_cut_resets_the_connection() {
        let proxy = ChaosProxy::start(vec![echo_server().await]);
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(
            round_trip(&mut stream, b"one", SHORT).await.unwrap(),
            b"one"
        );

        proxy.stall(true);
        let stalled = round_trip(&mut stream, b"two", SHORT).await;
        proxy.stall(false);
        let mut held = [0; 3];
        stream.read_exact(&mut held).await.unwrap();
        proxy.cut();
        let mut after_cut = [0; 1];
        let read = tokio::time::timeout(SHORT, stream.read(&mut after_cut)).await;

        assert_eq!(stalled, None);
        assert_eq!(&held, b"two");
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        for _ in 0..50 {
            if proxy.open_connections() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(proxy.open_connections(), 0);
    }

    #[tokio::test]
    async fn new_connections_follow_the_targets_unless_refused_and_latency_delays_both_ways() {
        let proxy = ChaosProxy::start(Vec::new());
        let mut without_target = TcpStream::connect(proxy.addr).await.unwrap();
        let no_target = round_trip(&mut without_target, b"x", SHORT).await;

        proxy.set_targets(vec![echo_server().await]);
        proxy.refuse(true);
        let mut refused = TcpStream::connect(proxy.addr).await.unwrap();
        let while_refused = round_trip(&mut refused, b"x", SHORT).await;
        proxy.refuse(false);
        let mut accepted = TcpStream::connect(proxy.addr).await.unwrap();
        proxy.set_latency(SHORT);
        let started = std::time::Instant::now();
        let answer = round_trip(&mut accepted, b"y", SHORT * 4).await;

        assert_eq!(no_target, None);
        assert_eq!(while_refused, None);
        assert_eq!(answer.unwrap(), b"y");
        assert!(started.elapsed() >= SHORT * 2, "{:?}", started.elapsed());
    }
}
