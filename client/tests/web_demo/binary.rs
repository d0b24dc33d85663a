//! The `chat` binary beside the page, for scenarios that need what a person at a terminal meets:
//! commands run to their end (`chat flush`, `chat pending`, `chat history`), and commands running
//! in the background under a name (`chat chat` fed line by line on its stdin, a `chat send`
//! waiting for the server), on the profiles of the stack's CLI users. Also the stack's own
//! PostgreSQL, stopped and started again (`Stack::postgres`).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::stack::{PASSPHRASE, PASSWORD, Stack};

/// How long a background command may take to end once its stdin ends (`chat chat`: once every
/// line is answered).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);

/// A command running in the background, with what it printed so far.
struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// The binaries a scenario runs.
#[derive(Default)]
pub struct Binary {
    background: HashMap<String, Interactive>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        for interactive in self.background.values_mut() {
            let _ = interactive.child.kill();
        }
    }
}

/// `chat` with `args` on `username`'s profile against the stack's gateway.
fn command(stack: &Stack, username: &str, args: &[String]) -> Result<Command, String> {
    let profile = stack
        .profile_dir(username)
        .ok_or_else(|| format!("{username} is not a CLI user of this stack"))?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat"));
    command
        .args(args)
        .env("CHAT_SERVER", stack.url())
        .env("CHAT_PROFILE_DIR", profile)
        .env("CHAT_PASSWORD", PASSWORD)
        .env("CHAT_PASSPHRASE", PASSPHRASE)
        .env("CHAT_RSA_BITS", "2048")
        .env_remove("CHAT_PROFILE")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(command)
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let collected = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = collected.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

impl Binary {
    /// Handles the ops of this module; `None` for any other.
    pub async fn handle(
        &mut self,
        stack: &mut Stack,
        request: &Value,
    ) -> Option<Result<Value, String>> {
        let text = |key: &str| request[key].as_str().unwrap_or_default().to_owned();
        let args: Vec<String> = request["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|arg| arg.as_str().unwrap_or_default().to_owned())
            .collect();
        let name = text("name");
        let answer = match request["op"].as_str().unwrap_or_default() {
            "binary_run" => {
                // One command: {"as", "args": [...]} -> {"code", "stdout", "stderr"}.
                match command(stack, &text("as"), &args) {
                    Ok(mut command) => {
                        let output = tokio::task::spawn_blocking(move || {
                            command.stdin(Stdio::null()).output()
                        })
                        .await
                        .unwrap();
                        output.map_err(|e| e.to_string()).map(|output| {
                            json!({
                                "code": output.status.code().unwrap_or(-1),
                                "stdout": String::from_utf8_lossy(&output.stdout),
                                "stderr": String::from_utf8_lossy(&output.stderr),
                            })
                        })
                    }
                    Err(error) => Err(error),
                }
            }
            // In the background: {"name", "as", "args"}.
            "binary_start" => self.start(stack, name, &text("as"), &args),
            // A line on its stdin: {"name", "text"}.
            "binary_type" => match self
                .background
                .get_mut(&name)
                .and_then(|i| i.stdin.as_mut())
            {
                Some(stdin) => writeln!(stdin, "{}", text("text"))
                    .and_then(|()| stdin.flush())
                    .map(|()| Value::Null)
                    .map_err(|e| e.to_string()),
                None => Err(format!("{name} is not running")),
            },
            // What it printed so far: {"name"} -> {"stdout", "stderr"}.
            "binary_output" => match self.background.get(&name) {
                Some(interactive) => Ok(json!({
                    "stdout": *interactive.stdout.lock().unwrap(),
                    "stderr": *interactive.stderr.lock().unwrap(),
                })),
                None => Err(format!("{name} is not running")),
            },
            // Ends its stdin and waits for it to end: {"name"} -> {"code", "stdout", "stderr"}.
            "binary_end" => self.end(&name).await,
            "postgres_stop" => match &stack.postgres {
                Some(postgres) => {
                    postgres.stop_fast().await;
                    Ok(Value::Null)
                }
                None => Err("this stack has no PostgreSQL of its own".to_owned()),
            },
            "postgres_start" => match &stack.postgres {
                Some(postgres) => {
                    postgres.start_again().await;
                    Ok(Value::Null)
                }
                None => Err("this stack has no PostgreSQL of its own".to_owned()),
            },
            _ => return None,
        };
        Some(answer)
    }

    fn start(
        &mut self,
        stack: &Stack,
        name: String,
        username: &str,
        args: &[String],
    ) -> Result<Value, String> {
        if self.background.contains_key(&name) {
            return Err(format!("{name} is running already"));
        }
        let mut child = command(stack, username, args)?
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let interactive = Interactive {
            child,
            stdin,
            stdout,
            stderr,
        };
        self.background.insert(name, interactive);
        Ok(Value::Null)
    }

    /// Ends stdin and waits until the command ends: {"code", "stdout", "stderr"}.
    async fn end(&mut self, name: &str) -> Result<Value, String> {
        let mut interactive = self
            .background
            .remove(name)
            .ok_or_else(|| format!("{name} is not running"))?;
        drop(interactive.stdin.take());
        let deadline = std::time::Instant::now() + LEAVE_TIMEOUT;
        let status = loop {
            match interactive.child.try_wait().map_err(|e| e.to_string())? {
                Some(status) => break status,
                None if std::time::Instant::now() > deadline => {
                    let _ = interactive.child.kill();
                    return Err(format!(
                        "{name} did not end within {LEAVE_TIMEOUT:?}: {}",
                        interactive.stderr.lock().unwrap()
                    ));
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        // The readers finish once the pipes close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(json!({
            "code": status.code().unwrap_or(-1),
            "stdout": *interactive.stdout.lock().unwrap(),
            "stderr": *interactive.stderr.lock().unwrap(),
        }))
    }
}
