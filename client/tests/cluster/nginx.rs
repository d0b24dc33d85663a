//! Debian's nginx (`/usr/sbin/nginx`) in front of the gateway, configured as ingress-nginx
//! configures it from the chart's annotations (`charts/chat/templates/ingress.yaml`): one
//! process (`master_process off`) with a generated configuration in a scratch directory that
//! also holds its pid file, error log and temporary files; nothing is read from or written to
//! /etc/nginx or /var/log/nginx. [`Nginx::start_reloadable`] runs a master process instead, whose
//! list of gateways changes by reload, as the controller reloads when a Service's endpoints
//! change (the rollout of the gateway, `rollout.rs`).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::cluster::{Deadline, free_port};

const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx proxying everything to the gateway.
pub struct Nginx {
    /// Where clients connect (127.0.0.1, a free port).
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Child,
    /// With a master process (reloadable): stopped by SIGQUIT, which stops its workers too.
    master: bool,
}

impl Nginx {
    /// Starts nginx in `dir` in front of `gateway` and waits until it accepts connections.
    pub async fn start(dir: &Path, gateway: SocketAddr) -> Self {
        Self::start_with(dir, &[gateway], false).await
    }

    /// Starts nginx in `dir` in front of `gateways`, with a master process, whose list of
    /// gateways [`Nginx::set_gateways`] changes.
    pub async fn start_reloadable(dir: &Path, gateways: &[SocketAddr]) -> Self {
        Self::start_with(dir, gateways, true).await
    }

    /// Points nginx at `gateways` (a reload: new connections go there; streams already open stay
    /// where they are until they end, in the previous workers).
    pub async fn set_gateways(&mut self, gateways: &[SocketAddr]) {
        assert!(self.master, "only a reloadable nginx changes its gateways");
        let config = configuration(&self.dir, self.addr, gateways, true);
        fs::write(self.dir.join("nginx.conf"), config).unwrap();
        signal(&self.child, "HUP");
        // The reload logs nothing at `warn`: the master has read the configuration and started
        // new workers well within this on an idle machine, and the test only needs new
        // connections to go to the new list eventually.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = self.error_log();
        assert!(
            !log.contains("[emerg]"),
            "nginx refused its new configuration:\n{log}"
        );
    }

    async fn start_with(dir: &Path, gateways: &[SocketAddr], master: bool) -> Self {
        assert!(
            Path::new(NGINX).is_file(),
            "{NGINX} is missing: run ci/install-tools.sh (apt-get install -y nginx)"
        );
        let dir = dir.join("nginx");
        fs::create_dir_all(&dir).unwrap();
        let addr = SocketAddr::new([127, 0, 0, 1].into(), free_port(&[[127, 0, 0, 1].into()]));
        fs::write(
            dir.join("nginx.conf"),
            configuration(&dir, addr, gateways, master),
        )
        .unwrap();
        let child = Command::new(NGINX)
            .args(args(&dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Self {
            addr,
            dir,
            child,
            master,
        };
        let deadline = Deadline::after(Duration::from_secs(10), "nginx to listen");
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited with {status}:\n{log}");
            }
            deadline.tick().await;
        }
        nginx
    }
}

impl Nginx {
    /// What nginx logged so far (warnings and errors).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.master {
            // Killing the master would leave its workers running.
            signal(&self.child, "TERM");
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sends `SIG<name>` to `child`.
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} failed");
}

/// `-p <dir>/ -c <dir>/nginx.conf -e <dir>/error.log` (`-e` covers what nginx logs before it
/// has read its configuration).
fn args(dir: &Path) -> Vec<String> {
    vec![
        "-p".to_owned(),
        format!("{}/", dir.display()),
        "-c".to_owned(),
        dir.join("nginx.conf").display().to_string(),
        "-e".to_owned(),
        dir.join("error.log").display().to_string(),
    ]
}

/// What ingress-nginx generates for the chart's Ingress, reduced to what matters here:
/// `backend-protocol: GRPC` is `grpc_pass` (HTTP/2 to the gateway), `proxy-read-timeout` and
/// `proxy-send-timeout` are the `grpc_*_timeout`s of a gRPC backend, `proxy-body-size` is
/// `client_max_body_size`, the controller's own defaults (ConfigMap) set the client timeouts and
/// HTTP/2 stream limit, and it keeps upstream connections alive. The one
/// difference: the listener speaks HTTP/2 without TLS (prior knowledge), where the production
/// Ingress terminates TLS (ingress-nginx negotiates HTTP/2 only there), as the test client has no
/// certificate to trust.
fn configuration(dir: &Path, listen: SocketAddr, gateways: &[SocketAddr], master: bool) -> String {
    use std::os::unix::fs::MetadataExt;
    // A master process run by root starts its workers as `nobody`, which could not write the
    // scratch directory: as root, the workers stay root.
    let (master_process, user) = match (master, fs::metadata(dir).unwrap().uid()) {
        (false, _) => ("off", ""),
        (true, 0) => ("on", "user root;\n"),
        (true, _) => ("on", ""),
    };
    let servers: String = gateways
        .iter()
        .map(|gateway| format!("        server {gateway};\n"))
        .collect();
    let dir = dir.display();
    format!(
        "\
# Generated by client/tests/cluster: the chart's Ingress as ingress-nginx runs it.
daemon off;
master_process {master_process};
{user}worker_processes 1;
pid {dir}/nginx.pid;
lock_file {dir}/nginx.lock;
error_log {dir}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream gateway {{
{servers}        keepalive 320;
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
}}
"
    )
}
