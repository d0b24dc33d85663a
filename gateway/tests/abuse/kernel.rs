//! What the suite reads from the kernel besides memory (`testkit::rss_bytes`): whether a process
//! still holds a TCP connection, and the CPU time a process has used.

use std::{
    fs,
    net::SocketAddr,
    time::{Duration, Instant},
};

/// Waits up to `within` for the gateway at `gateway` to let go of its end of the connection from
/// `client`; when it did. Read from the kernel's socket table, because a client that reads
/// nothing may never see the close: the gateway's FIN waits behind the data queued for it.
pub async fn released(
    gateway: SocketAddr,
    client: SocketAddr,
    within: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !held_by_a_process(gateway, client) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Whether the socket `local` → `remote` (IPv4) is in `/proc/net/tcp` with an owner (an inode):
/// a socket its process has closed lingers there as an orphan with inode 0.
fn held_by_a_process(local: SocketAddr, remote: SocketAddr) -> bool {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .any(|fields| {
            fields.len() > 9 && fields[1] == local && fields[2] == remote && fields[9] != "0"
        })
}

/// The CPU time (user and system) process `pid` has used so far, in seconds: fields 14 and 15 of
/// `/proc/<pid>/stat`, in clock ticks of 1/100 s (Linux's `USER_HZ` on every usual architecture).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count the fields after it.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the name, field 3 (state) is at index 0: utime (14) is at 11, stime (15) at 12.
    (ticks(11) + ticks(12)) as f64 / 100.0
}
