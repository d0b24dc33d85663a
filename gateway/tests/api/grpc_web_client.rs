//! A real gRPC-Web client: `web-demo/tests/grpc-web-client.ts` (the generated TypeScript code,
//! `@connectrpc/connect-web`'s gRPC-Web transport over Node's fetch, HTTP/1.1), bundled with
//! esbuild and run with Node against the gateway in front of real auth, real group and the chat
//! double. Needs `node` on the PATH and `web-demo/node_modules` (`ci/install-tools.sh`).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::helpers::spawn_stack;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn web_demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-demo")
}

/// What one run of a command printed, and how it ended (`None`: killed after the timeout).
struct Output {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    fn explain(&self, what: &str) -> String {
        let ending = match self.status {
            Some(status) => format!("exited with {status}"),
            None => format!("was killed after {CLIENT_TIMEOUT:?}"),
        };
        format!(
            "{what} {ending}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion or for at most `timeout`, its output going to files in `dir`
/// (no pipe to drain, whatever it prints).
fn run(mut command: Command, dir: &Path, name: &str, timeout: Duration) -> Output {
    let stdout_path = dir.join(format!("{name}.stdout"));
    let stderr_path = dir.join(format!("{name}.stderr"));
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |path: &Path| {
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
    };
    Output {
        status,
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
    }
}

/// Bundles the client with web-demo's esbuild into a fresh directory under Cargo's target dir;
/// returns the bundle's path.
fn bundle_client(out_dir: &Path) -> PathBuf {
    let web_demo = web_demo();
    let esbuild = web_demo.join("node_modules/.bin/esbuild");
    assert!(
        esbuild.exists(),
        "{} is missing: run ci/install-tools.sh (it runs `npm ci --prefix web-demo`)",
        esbuild.display()
    );
    let bundle = out_dir.join("grpc-web-client.mjs");
    let mut command = Command::new(&esbuild);
    command.current_dir(&web_demo).args([
        "tests/grpc-web-client.ts",
        "--bundle",
        "--platform=node",
        "--format=esm",
        "--target=node20",
        "--log-level=warning",
    ]);
    command.arg(format!("--outfile={}", bundle.display()));
    let output = run(command, out_dir, "esbuild", CLIENT_TIMEOUT);
    assert!(output.success(), "{}", output.explain("esbuild"));
    bundle
}

#[sqlx::test(migrations = "../migrations")]
async fn a_grpc_web_client_in_node_makes_unary_and_server_streaming_calls_through_the_gateway(
    db: PgPool,
) {
    let stack = spawn_stack(db).await;
    let base_url = format!("http://{}", stack.gateway);
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("grpc-web-client-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();

    let client = {
        let out_dir = out_dir.clone();
        tokio::task::spawn_blocking(move || {
            let bundle = bundle_client(&out_dir);
            let mut node = Command::new("node");
            node.arg(&bundle)
                .arg(&base_url)
                .args(["--timeout-ms", "10000"]);
            run(node, &out_dir, "node", CLIENT_TIMEOUT)
        })
        .await
        .unwrap()
    };

    assert!(
        client.success(),
        "{}",
        client.explain("the gRPC-Web client (node)")
    );
    let summary: serde_json::Value =
        serde_json::from_str(client.stdout.trim()).unwrap_or_else(|error| {
            panic!("{error}: {}", client.explain("the gRPC-Web client (node)"))
        });
    println!("{summary}");
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(
        summary["streamed"],
        serde_json::json!(["c1", "c2", "c3"]),
        "{summary}"
    );
    // Of the client's calls, only the authenticated Subscribe reached chat; aborting its fetch
    // closed the HTTP/1.1 connection, and the gateway must then cancel the upstream stream.
    assert_eq!(
        stack.chat.seen.lock().unwrap().metadata.len(),
        1,
        "calls that reached chat"
    );
    for _ in 0..250 {
        if stack.chat.seen.lock().unwrap().cancelled_streams == 1 {
            let _ = std::fs::remove_dir_all(&out_dir);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the upstream Subscribe stream was not cancelled after the client aborted it ({} cancelled)",
        stack.chat.seen.lock().unwrap().cancelled_streams
    );
}
