//! A PostgreSQL server of the test's own (initdb in the scratch directory, a free port), which
//! the test can stop (fast shutdown), crash (immediate shutdown: no checkpoint, recovery from the
//! WAL at the next start) and start again on the same data directory and port. Durable like
//! production: `fsync` and `synchronous_commit` stay on, so an acknowledged commit survives a
//! crash. Debian's server binaries (`/usr/lib/postgresql/<major>/bin`); run as the `postgres` OS
//! user when the test runs as root, since PostgreSQL refuses to run as root.
//!
//! Shared with the browser tests (`client/tests/web_demo`, the restarts of issue 22 §5), so it
//! depends on nothing else of this suite.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

/// A running (or stopped) server; stopped (immediately) when dropped.
pub struct Postgres {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    bin_dir: PathBuf,
    dir: PathBuf,
    as_postgres_user: bool,
}

impl Postgres {
    /// Creates a cluster in `<dir>/postgres` and starts it.
    pub async fn start(dir: &Path) -> Self {
        let dir = dir.join("postgres");
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres_user = running_as_root();
        if as_postgres_user {
            run(Command::new("chown").args(["postgres:", &dir.display().to_string()]));
        }
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let server = Self {
            addr: SocketAddr::new(loopback, free_port(loopback)),
            bin_dir: bin_dir(),
            dir,
            as_postgres_user,
        };
        let data = server.data_dir();
        // --no-sync: the new cluster's files are not flushed (seconds on a busy disk); the
        // server itself runs with fsync on.
        server.pg(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        server.start_again().await;
        server
    }

    /// The URL of its `postgres` database (the whole cluster is the test's).
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr)
    }

    /// Starts the server again on the same data directory and port; returns once it accepts
    /// connections (after crash recovery, if it crashed).
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on \
             -c synchronous_commit=on",
            self.addr.port(),
            self.dir.display()
        );
        let (data, log) = (self.data_dir(), self.dir.join("server.log"));
        let args = [
            "-D",
            &data,
            "-l",
            &log.display().to_string(),
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "start",
        ]
        .map(str::to_owned);
        self.pg_blocking("pg_ctl", args.to_vec()).await;
    }

    /// Fast shutdown (`pg_ctl stop -m fast`): sessions are ended, then a checkpoint.
    pub async fn stop_fast(&self) {
        self.stop("fast").await;
    }

    /// Crash (`pg_ctl stop -m immediate`): every process quits at once, without a checkpoint.
    pub async fn crash(&self) {
        self.stop("immediate").await;
    }

    async fn stop(&self, mode: &str) {
        let args = ["-D", &self.data_dir(), "-m", mode, "-w", "stop"].map(str::to_owned);
        self.pg_blocking("pg_ctl", args.to_vec()).await;
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    async fn pg_blocking(&self, binary: &str, args: Vec<String>) {
        let command = self.command(binary, &args.iter().map(String::as_str).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || run(&mut { command }))
            .await
            .unwrap();
    }

    fn pg(&self, binary: &str, args: &[&str]) {
        run(&mut self.command(binary, args));
    }

    fn command(&self, binary: &str, args: &[&str]) -> Command {
        let program = self.bin_dir.join(binary);
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(args);
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Runs `command`, panicking with its output when it fails.
fn run(command: &mut Command) {
    let started = Instant::now();
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed after {:?}: {}{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A port that was free a moment ago on `address`.
fn free_port(address: IpAddr) -> u16 {
    let listener = std::net::TcpListener::bind((address, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// The newest installed server's binaries (as `ci/lib.sh` finds them).
fn bin_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    candidates.sort_by_key(|bin| {
        bin.parent()
            .and_then(|major| major.file_name()?.to_str()?.parse::<u32>().ok())
    });
    candidates
        .pop()
        .expect("PostgreSQL's server binaries (run ci/install-tools.sh)")
}
