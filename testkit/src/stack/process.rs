//! The services' binaries as child processes, for the suites that run the system as the chart
//! does (`client/tests/cluster`, `client/tests/faults`): each started with exactly the
//! environment it is given (as in a container), its output in a log file, waited for with the
//! same readiness wait as a service in process ([`super::ready`]), stopped with SIGTERM as the
//! kubelet does, and killed when dropped. Also what such suites wait with ([`Deadline`]) and
//! where the binaries and free ports are.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::ready::{Service, wait_until_ready};

/// How often a [`Deadline`] lets its condition be checked again.
const TICK: Duration = Duration::from_millis(20);

/// One running binary; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Waits for a condition: [`Deadline::tick`] sleeps briefly, or panics once the time is up.
#[derive(Debug)]
pub struct Deadline {
    what: &'static str,
    at: Instant,
}

impl Process {
    /// Starts `binary` with exactly `env` (nothing inherited, as in a container), its output
    /// appended to `log`. `name` names it in errors (a replica's or pod's name).
    ///
    /// # Errors
    /// When the log cannot be opened or the binary cannot be started.
    pub fn spawn(
        binary: &Path,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let output = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(binary)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `service` at `addr` is ready ([`super::ready::wait_until_ready`]: health
    /// SERVING, then, with `probe_token`, a call with it that is no longer UNAVAILABLE).
    ///
    /// # Errors
    /// When the process exits first (its log is named), or it is not ready `within`.
    pub async fn wait_until_ready(
        &mut self,
        addr: SocketAddr,
        service: Service,
        probe_token: Option<&str>,
        within: Duration,
    ) -> anyhow::Result<()> {
        let ended = || self.exited().map(|status| format!("exited with {status}"));
        let waited = wait_until_ready(addr, service, probe_token, within, ended).await;
        waited.with_context(|| format!("{}; its log: {}", self.name, self.log.display()))
    }

    /// Sends SIGTERM (what the kubelet sends) and waits for the exit, which may take the
    /// service's whole drain; `within` bounds the wait.
    ///
    /// # Errors
    /// When the signal cannot be sent, or the process has not exited `within`.
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !sent.success() {
            bail!("kill -TERM {} ({}) failed", self.child.id(), self.name);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {within:?} of SIGTERM; its log: {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// SIGKILL (a crashed pod: no drain, connections reset), then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Deadline {
    /// A deadline `within` from now for `what` (named in the panic).
    pub fn after(within: Duration, what: &'static str) -> Self {
        Self {
            what,
            at: Instant::now() + within,
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Sleeps briefly before the condition is checked again.
    ///
    /// # Panics
    /// Once the deadline has passed.
    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.at,
            "timed out waiting for {}",
            self.what
        );
        tokio::time::sleep(TICK).await;
    }
}

/// The directory of the workspace's binaries for the running test executable (`target/debug`,
/// or whichever profile built it: the directory above its `deps/`), checked to hold each of
/// `binaries`.
///
/// # Errors
/// When one is missing (build them first: `cargo build --bins`, as ci/test.sh does).
pub fn binaries_dir(binaries: &[&str]) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is in no deps/ directory")?
        .to_owned();
    for binary in binaries {
        let path = dir.join(binary);
        if !path.is_file() {
            bail!(
                "{} is missing: build the binaries first (`cargo build --bins`, as ci/test.sh does)",
                path.display()
            );
        }
    }
    Ok(dir)
}

/// A port that was free a moment ago on every one of `addresses` (replicas listening on the same
/// port of several loopback addresses, as pods do).
///
/// # Panics
/// When `addresses` is empty, or the first of them cannot be bound.
pub fn free_port(addresses: &[IpAddr]) -> u16 {
    loop {
        let first = std::net::TcpListener::bind((addresses[0], 0))
            .expect("a loopback address can be bound");
        let port = first
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if addresses[1..]
            .iter()
            .all(|address| std::net::TcpListener::bind((*address, port)).is_ok())
        {
            return port;
        }
    }
}

/// A test's directory (secrets, the services' logs, profiles, a database): removed when
/// dropped, unless the test failed (it is panicking), [`Scratch::keep`] was called, or
/// `CHAT_TEST_KEEP_LOGS` is set; then it stays, and its path is printed.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// A new directory `<prefix>-<uuid>` under the system's temporary directory (which the
    /// postgres user, when a test runs as root, can reach).
    ///
    /// # Panics
    /// When it cannot be created.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("the temporary directory is writable");
        Self { path, keep: false }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory (a check failed without a panic: the logs tell why).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep
            || std::thread::panicking()
            || std::env::var_os("CHAT_TEST_KEEP_LOGS").is_some()
        {
            eprintln!("the services' logs are in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
