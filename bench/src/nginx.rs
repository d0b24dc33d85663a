//! nginx (Debian's package) as the reference gRPC proxy: one process (`master_process off`,
//! so stopping it leaves no worker behind) with a generated configuration in a scratch directory
//! that also holds its pid file, error log and temporary files. Nothing is read from or written
//! to /etc/nginx or /var/log/nginx.

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// How long nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nginx may take to quit gracefully before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle upstream connections nginx keeps. nginx sends one call per upstream HTTP/2 connection
/// at a time, so this must cover the bench's concurrency, or nginx opens a connection per call.
const UPSTREAM_KEEPALIVE: usize = 128;
/// Connections nginx may hold, clients' and upstream ones together.
const MAX_CONNECTIONS: usize = 16_384;

/// A running nginx proxying gRPC to one upstream.
#[derive(Debug)]
pub struct Nginx {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// The configuration it runs, for the report.
    pub config: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// nginx's version (`nginx/1.22.1`) if it is installed with HTTP/2 and gRPC proxying, or why it
/// cannot be used.
pub fn available() -> Result<String, String> {
    let output = match Command::new("nginx").arg("-V").output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "`nginx` is not installed (on Debian: `apt-get install -y nginx`)".to_owned(),
            );
        }
        Err(error) => return Err(format!("`nginx -V` failed: {error}")),
    };
    // nginx -V prints to stderr.
    let text = String::from_utf8_lossy(&output.stderr);
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("nginx version: "))
        .unwrap_or("nginx (unknown version)")
        .trim()
        .to_owned();
    if !text.contains("--with-http_v2_module") {
        return Err(format!(
            "{version} is built without HTTP/2 (--with-http_v2_module)"
        ));
    }
    if text.contains("--without-http_grpc_module") {
        return Err(format!(
            "{version} is built without gRPC proxying (http_grpc_module)"
        ));
    }
    Ok(version)
}

impl Nginx {
    /// Starts nginx proxying every path to `upstream` with `grpc_pass`, and waits until it
    /// accepts connections.
    ///
    /// # Errors
    /// When the scratch directory cannot be written, nginx does not start, or it does not listen
    /// in time (its error log is quoted).
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("bench-nginx-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing a stale {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let addr = free_loopback_port()?;
        let config = configuration(&dir, addr, upstream);
        let config_path = dir.join("nginx.conf");
        fs::write(&config_path, &config)?;
        let child = Command::new("nginx")
            .args(nginx_args(&dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Self {
            addr,
            config,
            dir,
            child: Some(child),
        };
        nginx.wait_until_listening().await?;
        Ok(nginx)
    }

    /// CPU seconds (user + system) nginx has used so far; `None` where /proc cannot tell.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the parenthesised name: utime is the 12th, stime the 13th.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on every architecture Linux supports (see cpu.rs).
        Some(ticks as f64 / 100.0)
    }

    /// Asks nginx to quit gracefully (`nginx -s quit`), kills it if it has not within
    /// [`STOP_TIMEOUT`], and removes its directory.
    ///
    /// # Errors
    /// When nginx cannot be stopped or had already exited with a failure.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("nginx")
            .args(nginx_args(&self.dir))
            .args(["-s", "quit"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                // Quitting on a signal exits 0; a kill below is reported as a failure.
                let _ = fs::remove_dir_all(&self.dir);
                if !status.success() {
                    bail!("nginx exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                let _ = fs::remove_dir_all(&self.dir);
                bail!("nginx did not quit within {STOP_TIMEOUT:?} and was killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if exited.is_some() || Instant::now() > deadline {
                let log = fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                bail!(
                    "nginx did not start listening on {} ({}); its error log:\n{log}",
                    self.addr,
                    match exited {
                        Some(status) => format!("it exited with {status}"),
                        None => "timed out".to_owned(),
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nginx {
    /// A scenario that failed half-way must not leave nginx running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `-p <dir>/ -c <dir>/nginx.conf -e <dir>/error.log`: `-e` also covers the messages nginx
/// writes before it has read the configuration.
fn nginx_args(dir: &Path) -> Vec<String> {
    vec![
        "-p".to_owned(),
        format!("{}/", dir.display()),
        "-c".to_owned(),
        dir.join("nginx.conf").display().to_string(),
        "-e".to_owned(),
        dir.join("error.log").display().to_string(),
    ]
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(probe.local_addr()?)
}

/// The configuration: one process, HTTP/2 without TLS (prior knowledge, as the gateway serves
/// it), everything to `upstream` through `grpc_pass` with kept-alive upstream connections, no
/// access log (the gateway logs no line per call either), and no limit on calls per connection
/// within a run (nginx's default of 1,000 would make the clients reconnect every second).
fn configuration(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let dir = dir.display();
    let mut config = String::new();
    let _ = write!(
        config,
        "\
# Generated by the bench (nginx.rs).
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
lock_file {dir}/nginx.lock;
error_log {dir}/error.log warn;

# nginx opens one upstream connection per call: fanout-floor's thousands of streams need as
# many connections again, and as many open files.
worker_rlimit_nofile {MAX_CONNECTIONS};
events {{
    worker_connections {MAX_CONNECTIONS};
}}

http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;

    upstream backend {{
        server {upstream};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 100000000;
    }}

    server {{
        listen {listen} http2;
        location / {{
            grpc_pass grpc://backend;
            # Streams stay open, idle, between messages.
            grpc_read_timeout 1h;
            grpc_send_timeout 1h;
        }}
    }}
}}
"
    );
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_listens_on_loopback_and_keeps_everything_in_its_directory() {
        let config = configuration(
            Path::new("/tmp/x"),
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
        );

        assert!(config.contains("listen 127.0.0.1:4000 http2;"));
        assert!(config.contains("server 127.0.0.1:5000;"));
        assert!(config.contains("grpc_pass grpc://backend;"));
        for line in config.lines().filter(|line| line.contains('/')) {
            let line = line.trim();
            assert!(
                line.starts_with('#')
                    || line.starts_with("location /")
                    || line.contains("/tmp/x/")
                    || line.contains("grpc://"),
                "{line}"
            );
        }
    }
}
