//! Debian's nginx as a real gRPC proxy in front of a gateway, for the cluster and fault suites
//! (as ingress-nginx runs the chart's Ingress) and for the bench (the reference proxy whose cost
//! the gateway's is compared with).
//!
//! One process (`master_process off`, so stopping it leaves no worker behind) with a generated
//! configuration in a directory of the caller's, which also holds its pid file, error log and
//! temporary files. Nothing is read from or written to /etc/nginx or /var/log/nginx.

use std::{
    fs, io,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Debian's nginx binary (`apt-get install -y nginx`, done by `ci/install-tools.sh`).
const NGINX: &str = "/usr/sbin/nginx";
/// How long nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nginx may take to quit gracefully before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections nginx may hold, clients' and upstream ones together: `grpc_pass` opens one
/// upstream connection per call, so the fault suite's storm and the bench's fan-out (thousands of
/// streams) need as many connections again, and as many open files. It is also ingress-nginx's
/// default (ConfigMap `max-worker-connections`).
const MAX_CONNECTIONS: usize = 16_384;

/// Which configuration nginx runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// What ingress-nginx generates for the chart's Ingress, reduced to what matters to a client:
    /// `backend-protocol: GRPC` is `grpc_pass` (HTTP/2 to the gateway), `proxy-read-timeout` and
    /// `proxy-send-timeout` are the `grpc_*_timeout`s of a gRPC backend, `proxy-body-size` is
    /// `client_max_body_size`, the controller's own defaults (ConfigMap) set the client timeouts
    /// and the HTTP/2 stream limit, and it keeps upstream connections alive. The one difference:
    /// the listener speaks HTTP/2 without TLS (prior knowledge), where the production Ingress
    /// terminates TLS, as the test clients have no certificate to trust.
    Ingress,
    /// The bench's reference proxy: `grpc_pass` and nothing else that costs per call. No access
    /// log (the gateway logs no line per call either), no limit on calls per connection within a
    /// run (nginx's default of 1,000 would make the clients reconnect every second), and enough
    /// kept-alive upstream connections for the bench's concurrency (nginx sends one call per
    /// upstream HTTP/2 connection at a time, or opens a connection per call).
    Reference,
}

/// nginx's version (`nginx/1.22.1`) if it is installed with HTTP/2 and gRPC proxying, or why it
/// cannot be used.
pub fn available() -> Result<String, String> {
    let output = match Command::new(NGINX).arg("-V").output() {
        Ok(output) => output,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "{NGINX} is not installed (on Debian: `apt-get install -y nginx`, which ci/install-tools.sh does)"
            ));
        }
        Err(error) => return Err(format!("`{NGINX} -V` failed: {error}")),
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

/// A running nginx proxying every path to one upstream with `grpc_pass`. Dropping it kills nginx
/// and leaves its directory (and error log) in place; [`Nginx::stop`] quits it gracefully and
/// removes the directory.
#[derive(Debug)]
pub struct Nginx {
    /// Where clients connect (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// The configuration it runs (the bench quotes it in its report).
    pub config: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx in `dir` (created, emptied first) in front of `upstream`, configured for
    /// `role`, and waits until it accepts connections.
    ///
    /// # Errors
    /// When the directory cannot be written, nginx does not start, or it does not listen within
    /// 10 s (its error log is quoted).
    pub async fn start(dir: &Path, upstream: SocketAddr, role: Role) -> io::Result<Self> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)?;
        let addr = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let config = configuration(role, dir, addr, upstream);
        fs::write(dir.join("nginx.conf"), &config)?;
        let child = Command::new(NGINX)
            .args(arguments(dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| io::Error::other(format!("starting {NGINX}: {error}")))?;
        let mut nginx = Self {
            addr,
            config,
            dir: dir.to_owned(),
            child: Some(child),
        };
        nginx.wait_until_listening().await?;
        Ok(nginx)
    }

    /// What nginx logged so far (warnings and errors).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
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
        // USER_HZ is 100 on every architecture Linux supports.
        Some(ticks as f64 / 100.0)
    }

    /// Asks nginx to quit gracefully (`nginx -s quit`), kills it if it has not within 10 s, and
    /// removes its directory.
    ///
    /// # Errors
    /// When nginx cannot be stopped, had to be killed, or had already exited with a failure.
    pub async fn stop(mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new(NGINX)
            .args(arguments(&self.dir))
            .args(["-s", "quit"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let _ = fs::remove_dir_all(&self.dir);
                // Quitting on the signal exits 0.
                return if status.success() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!("nginx exited with {status}")))
                };
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                let _ = fs::remove_dir_all(&self.dir);
                return Err(io::Error::other(format!(
                    "nginx did not quit within {STOP_TIMEOUT:?} and was killed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_until_listening(&mut self) -> io::Result<()> {
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
                return Err(io::Error::other(format!(
                    "nginx did not start listening on {} ({}); its error log:\n{}",
                    self.addr,
                    match exited {
                        Some(status) => format!("it exited with {status}"),
                        None => "timed out".to_owned(),
                    },
                    self.error_log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nginx {
    /// A test or scenario that failed half-way must not leave nginx running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `-p <dir>/ -c <dir>/nginx.conf -e <dir>/error.log`: `-e` also covers what nginx logs before it
/// has read its configuration.
fn arguments(dir: &Path) -> Vec<String> {
    vec![
        "-p".to_owned(),
        format!("{}/", dir.display()),
        "-c".to_owned(),
        dir.join("nginx.conf").display().to_string(),
        "-e".to_owned(),
        dir.join("error.log").display().to_string(),
    ]
}

/// The whole configuration: the process and its files are common to both roles, the `http`
/// block is the role's.
fn configuration(role: Role, dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let dir = dir.display();
    let http = match role {
        Role::Ingress => ingress_http(listen, upstream),
        Role::Reference => reference_http(listen, upstream),
    };
    format!(
        "\
# Generated by testkit::nginx ({role:?}).
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
lock_file {dir}/nginx.lock;
error_log {dir}/error.log warn;

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
{http}}}
"
    )
}

/// [`Role::Ingress`]: `charts/chat/templates/ingress.yaml`'s annotations as ingress-nginx applies
/// them.
fn ingress_http(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "
    upstream gateway {{
        server {upstream};
        keepalive 320;
        keepalive_timeout 60s;
        keepalive_requests 10000;
    }}

    server {{
        listen {listen} http2;
        # ingress-nginx's defaults (ConfigMap http2-max-concurrent-streams,
        # client-header-timeout)
        http2_max_concurrent_streams 128;
        client_header_timeout 60s;
        location / {{
            # nginx.ingress.kubernetes.io/proxy-body-size: 0 (no limit: an OpenStream's
            # request body is every message sent on it; the gateway bounds each message)
            client_max_body_size 0;
            # ingress-nginx's default (ConfigMap client-body-timeout)
            client_body_timeout 60s;
            # nginx.ingress.kubernetes.io/proxy-read-timeout / proxy-send-timeout: 3600
            grpc_connect_timeout 5s;
            grpc_read_timeout 3600s;
            grpc_send_timeout 3600s;
            grpc_set_header X-Forwarded-For $remote_addr;
            grpc_set_header X-Real-IP $remote_addr;
            # nginx.ingress.kubernetes.io/backend-protocol: GRPC
            grpc_pass grpc://gateway;
        }}
    }}
"
    )
}

/// [`Role::Reference`]: the least a gRPC proxy does per call.
fn reference_http(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "
    keepalive_requests 100000000;

    upstream backend {{
        server {upstream};
        keepalive 128;
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
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_listens_on_loopback_and_keeps_its_files_in_its_directory() {
        for role in [Role::Ingress, Role::Reference] {
            let config = configuration(
                role,
                Path::new("/tmp/x"),
                "127.0.0.1:4000".parse().unwrap(),
                "127.0.0.1:5000".parse().unwrap(),
            );

            assert!(config.contains("listen 127.0.0.1:4000 http2;"), "{role:?}");
            assert!(config.contains("server 127.0.0.1:5000;"), "{role:?}");
            assert!(config.contains("grpc_pass grpc://"), "{role:?}");
            for line in config.lines().filter(|line| line.contains('/')) {
                let line = line.trim();
                assert!(
                    line.starts_with('#')
                        || line.starts_with("location /")
                        || line.contains("/tmp/x/")
                        || line.contains("grpc://"),
                    "{role:?}: {line}"
                );
            }
        }
    }

    #[test]
    fn only_the_ingress_has_the_charts_body_and_timeout_settings() {
        let listen = "127.0.0.1:4000".parse().unwrap();
        let upstream = "127.0.0.1:5000".parse().unwrap();

        let ingress = configuration(Role::Ingress, Path::new("/tmp/x"), listen, upstream);
        let reference = configuration(Role::Reference, Path::new("/tmp/x"), listen, upstream);

        assert!(ingress.contains("client_max_body_size 0;"));
        assert!(ingress.contains("http2_max_concurrent_streams 128;"));
        assert!(!reference.contains("client_max_body_size"));
        assert!(reference.contains("keepalive_requests 100000000;"));
    }
}
