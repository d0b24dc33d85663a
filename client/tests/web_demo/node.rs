//! Building the web demo and running its Node scripts (`web-demo/tests/*.ts`, bundled with
//! web-demo's esbuild). A browser script drives Chromium with playwright-core and asks this
//! side for what only the stack can do (CLI users, stopping the gateway or chat) with request lines on
//! its stdout, `@@ {"id":N,"op":...}`, answered by one JSON line on its stdin.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use proto::chat::v1 as chat_pb;

use crate::{
    attacks::{
        Attacker, LIST_MESSAGES, MaliciousServer, add_ghost_device, add_ghost_member,
        substitute_key,
    },
    stack::Stack,
};

const SEND_MESSAGE: &str = "/chat.v1.ChatService/SendMessage";

/// A browser scenario must end within this (each takes a few seconds).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

pub fn web_demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-demo")
}

/// A fresh directory under Cargo's target dir for this test's outputs.
pub fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("web-demo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where screenshots go (kept after the test: they are the test's artifacts).
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-demo/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn check_tools() {
    let modules = web_demo().join("node_modules");
    assert!(
        modules.join(".bin/esbuild").exists() && modules.join("playwright-core").exists(),
        "{} is incomplete: run ci/install-tools.sh (it runs `npm ci --prefix web-demo`)",
        modules.display()
    );
}

/// Builds the app (`web-demo/build.mjs`) into `dir`, the gateway's web root.
pub fn build_app(dir: &Path) {
    check_tools();
    let status = Command::new("node")
        .current_dir(web_demo())
        .arg("build.mjs")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("node runs");
    assert!(status.success(), "building the web demo failed");
}

/// Runs `tests/<script>.ts` under `node --test` (bundled by [`bundle_script`]) and fails with its
/// output unless every test in it passes.
pub fn run_node_test(script: &str) {
    let bundle = bundle_script(script);

    let output = std::process::Command::new("node")
        .current_dir(web_demo())
        .arg("--test")
        .arg(&bundle)
        .output()
        .expect("node runs");

    let _ = std::fs::remove_file(&bundle);
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Bundles `tests/<script>.ts` for Node. The bundle goes into web-demo's node_modules cache so
/// that the packages left external (playwright-core, esbuild) resolve from web-demo/node_modules.
pub fn bundle_script(script: &str) -> PathBuf {
    check_tools();
    let cache = web_demo().join("node_modules/.cache/web-demo-tests");
    std::fs::create_dir_all(&cache).unwrap();
    let bundle = cache.join(format!("{script}-{}.mjs", std::process::id()));
    let status = Command::new(web_demo().join("node_modules/.bin/esbuild"))
        .current_dir(web_demo())
        .arg(format!("tests/{script}.ts"))
        .args([
            "--bundle",
            "--platform=node",
            "--format=esm",
            "--target=node20",
            "--log-level=warning",
            "--external:playwright-core",
            // The vectors scenario bundles its browser runner itself.
            "--external:esbuild",
        ])
        .arg(format!("--outfile={}", bundle.display()))
        .status()
        .expect("esbuild runs");
    assert!(status.success(), "bundling tests/{script}.ts failed");
    bundle
}

/// What the script printed, for the failure message.
type Transcript = Arc<Mutex<Vec<String>>>;

/// Runs a browser scenario against `stack`, answering its requests; panics with its output when
/// it fails.
pub async fn run_scenario(stack: &mut Stack, scenario: &str) {
    let bundle = bundle_script("browser");
    let mut child: Child = Command::new("node")
        .current_dir(web_demo())
        .arg(&bundle)
        .arg(scenario)
        .arg(stack.url())
        .env("SCREENSHOT_DIR", screenshot_dir())
        .env("TEST_PASSWORD", crate::stack::PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().unwrap();
    let transcript: Transcript = Arc::default();
    let (requests, mut incoming) = mpsc::unbounded_channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    let log = transcript.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(request) = line.strip_prefix("@@ ") {
                let _ = requests.send(serde_json::from_str(request).expect("a JSON request"));
            }
            log.lock().unwrap().push(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let log = transcript.clone();
    let errors = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log.lock().unwrap().push(format!("stderr: {line}"));
        }
    });

    let mut cli = Cli::default();
    let served = tokio::time::timeout(SCRIPT_TIMEOUT, async {
        while let Some(request) = incoming.recv().await {
            let answer = match cli.handle(stack, &request).await {
                Ok(value) => json!({ "ok": true, "value": value }),
                Err(error) => json!({ "ok": false, "error": error }),
            };
            answer_request(&mut stdin, &request, answer);
        }
    })
    .await;
    if served.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    errors.join().unwrap();
    let _ = std::fs::remove_file(&bundle);
    let output = transcript.lock().unwrap().join("\n");
    assert!(
        served.is_ok() && status.success(),
        "browser scenario {scenario} failed ({status}{}):\n{output}",
        if served.is_err() { ", timed out" } else { "" }
    );
}

fn answer_request(stdin: &mut ChildStdin, request: &Value, mut answer: Value) {
    answer["id"] = request["id"].clone();
    let _ = writeln!(stdin, "{answer}");
    let _ = stdin.flush();
}

/// The in-process CLI users a scenario asked for, by username, and the attackers of a malicious
/// stack.
#[derive(Default)]
struct Cli {
    users: HashMap<String, Arc<client::Session>>,
    attackers: Vec<Attacker>,
    captured: Arc<Mutex<Option<chat_pb::Message>>>,
    binary: crate::binary::Binary,
}

/// The id of `username` and of their one active device (the stack's database is the truth).
async fn user_and_device(stack: &Stack, username: &str) -> Result<(String, String), String> {
    sqlx::query_as(
        "select u.id::text, d.id::text from auth.users u join auth.devices d on d.user_id = u.id
         where u.username = $1 and d.revoked_at is null order by d.created_at limit 1",
    )
    .bind(username)
    .fetch_one(&stack.db)
    .await
    .map_err(|e| e.to_string())
}

fn malicious(stack: &Stack) -> Result<&MaliciousServer, String> {
    stack
        .malicious
        .as_ref()
        .ok_or_else(|| "not a malicious stack".to_owned())
}

impl Cli {
    async fn handle(&mut self, stack: &mut Stack, request: &Value) -> Result<Value, String> {
        let text = |key: &str| request[key].as_str().unwrap_or_default().to_owned();
        let session = |users: &HashMap<String, Arc<client::Session>>| {
            users
                .get(request["as"].as_str().unwrap_or_default())
                .cloned()
                .ok_or_else(|| "no such CLI user".to_owned())
        };
        if let Some(answer) = self.binary.handle(stack, request).await {
            return answer;
        }
        match request["op"].as_str().unwrap_or_default() {
            "cli_user" => {
                let username = text("username");
                let session = stack.cli_user(&username).await;
                self.users.insert(username, session);
                Ok(Value::Null)
            }
            "cli_send" => {
                let session = session(&self.users)?;
                let target = session
                    .resolve(&text("to"))
                    .await
                    .map_err(|e| e.to_string())?;
                let sent = session
                    .send_text(&target, &text("text"))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!({ "sequence": sent.sequence }))
            }
            "cli_send_many" => {
                let session = session(&self.users)?;
                let target = session
                    .resolve(&text("to"))
                    .await
                    .map_err(|e| e.to_string())?;
                let count = request["count"].as_u64().unwrap_or_default();
                for n in 1..=count {
                    let line = format!("{} {n}", text("prefix"));
                    session
                        .send_text(&target, &line)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(Value::Null)
            }
            "cli_history" => {
                let session = session(&self.users)?;
                let target = session
                    .resolve(&text("to"))
                    .await
                    .map_err(|e| e.to_string())?;
                let messages = session
                    .history(&target, 100)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Value::Array(
                    messages
                        .into_iter()
                        .map(|m| {
                            let text = match m.content {
                                client::Content::Verified { text } => Value::String(text),
                                client::Content::Failed { .. }
                                | client::Content::Replayed { .. } => Value::Null,
                            };
                            let chain: Vec<String> =
                                m.chain.iter().map(client::chains::describe).collect();
                            json!({
                                "sequence": m.sequence,
                                "from": m.sender_username,
                                "text": text,
                                "chain": chain,
                            })
                        })
                        .collect(),
                ))
            }
            "cli_send_bad_wrapped_keys" => {
                // A dishonest CLI device: `count` envelopes it really signs, each with a junk
                // wrapped key for every device of `to`.
                let session = session(&self.users)?;
                let target = session
                    .resolve(&text("to"))
                    .await
                    .map_err(|e| e.to_string())?;
                for n in 0..request["count"].as_u64().unwrap_or_default() as usize {
                    crate::dishonest::send_with_a_bad_wrapped_key(
                        &stack.url(),
                        &session,
                        crate::stack::PASSPHRASE,
                        &target,
                        &text("to"),
                        n,
                    )
                    .await;
                }
                Ok(Value::Null)
            }
            "delivered" => {
                // What chat stored as delivered to the (first) device of `username`.
                let (_, device_id) = user_and_device(stack, &text("username")).await?;
                let conversation_id: uuid::Uuid =
                    text("conversation_id").parse().map_err(|_| "bad id")?;
                let device_id: uuid::Uuid = device_id.parse().map_err(|_| "bad id")?;
                let delivered: i64 = sqlx::query_scalar(
                    "select coalesce(max(delivered_sequence), 0) from chat.device_positions
                     where device_id = $1 and conversation_id = $2",
                )
                .bind(device_id)
                .bind(conversation_id)
                .fetch_one(&stack.db)
                .await
                .map_err(|e| e.to_string())?;
                Ok(json!(delivered))
            }
            "cli_safety_number" => {
                let session = session(&self.users)?;
                let number = session
                    .safety_number(&text("with"), false)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Value::String(number.safety_number))
            }
            "cli_forward_keys" => {
                let session = session(&self.users)?;
                let forwarded = session.forward_keys().await.map_err(|e| e.to_string())?;
                Ok(json!({ "keys": forwarded.keys, "devices": forwarded.devices.len() }))
            }
            "cli_new_device" => {
                let username = text("username");
                let session = stack.cli_device(&username).await;
                self.users.insert(format!("{username}/new-device"), session);
                Ok(Value::Null)
            }
            "tamper" => {
                // Flips a bit of a stored ciphertext, as a malicious server could.
                let conversation_id: uuid::Uuid =
                    text("conversation_id").parse().map_err(|_| "bad id")?;
                let altered = sqlx::query(
                    "update chat.messages
                     set ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)
                     where conversation_id = $1 and sequence = $2",
                )
                .bind(conversation_id)
                .bind(request["sequence"].as_i64().unwrap_or_default())
                .execute(&stack.db)
                .await
                .map_err(|e| e.to_string())?;
                Ok(json!(altered.rows_affected()))
            }
            "drop" => {
                // Deletes a stored message and moves the next one down into its sequence, as a
                // malicious server hiding a message would (V2 chains show the gap).
                let session = session(&self.users)?;
                let target = session
                    .resolve(&text("to"))
                    .await
                    .map_err(|e| e.to_string())?;
                let conversation_id: uuid::Uuid =
                    target.conversation_id.parse().map_err(|_| "bad id")?;
                let sequence = request["sequence"].as_i64().unwrap_or_default();
                let mut deleted = 0;
                for statement in [
                    "delete from chat.messages where conversation_id = $1 and sequence = $2",
                    "update chat.message_keys set sequence = $2
                     where conversation_id = $1 and sequence = $2 + 1",
                    "update chat.messages set sequence = $2
                     where conversation_id = $1 and sequence = $2 + 1",
                    "update chat.conversations set last_sequence = last_sequence - 1
                     where id = $1",
                ] {
                    let result = sqlx::query(statement)
                        .bind(conversation_id)
                        .bind(sequence)
                        .execute(&stack.db)
                        .await
                        .map_err(|e| e.to_string())?;
                    deleted += result.rows_affected();
                }
                Ok(json!(deleted))
            }
            "ghost_device" => {
                let (user_id, _) = user_and_device(stack, &text("username")).await?;
                let attacker = Attacker::new();
                add_ghost_device(malicious(stack)?, &user_id, &attacker);
                self.attackers.push(attacker);
                Ok(json!(self.attackers.len() - 1))
            }
            "substitute_key" => {
                let (user_id, device_id) = user_and_device(stack, &text("username")).await?;
                let attacker = Attacker::new();
                let old_fingerprint = request["old_fingerprint"].as_bool().unwrap_or_default();
                substitute_key(
                    malicious(stack)?,
                    &user_id,
                    &device_id,
                    &attacker,
                    old_fingerprint,
                );
                self.attackers.push(attacker);
                Ok(json!(self.attackers.len() - 1))
            }
            "attacker_reads" => {
                let index = request["attacker"].as_u64().unwrap_or_default() as usize;
                let attacker = self.attackers.get(index).ok_or("no such attacker")?;
                Ok(json!(attacker.reads(&stack.db).await))
            }
            "ghost_member" => {
                // The ghost is a CLI user of the scenario's; every group lists them from now on.
                let ghost = session(&self.users)?
                    .user_by_name(&text("username"))
                    .await
                    .map_err(|e| e.to_string())?;
                add_ghost_member(malicious(stack)?, ghost);
                Ok(Value::Null)
            }
            "replay" => {
                // The server stores a stored envelope again under the next sequence.
                let conversation_id: uuid::Uuid =
                    text("conversation_id").parse().map_err(|_| "bad id")?;
                let sequence = request["sequence"].as_i64().unwrap_or_default();
                let statements = [
                    "alter table chat.messages
                     drop constraint if exists messages_sender_device_id_client_message_id_key",
                    "insert into chat.messages
                     select (jsonb_populate_record(null::chat.messages, to_jsonb(m)
                         || jsonb_build_object('sequence', c.last_sequence + 1,
                                               'id', gen_random_uuid()))).*
                     from chat.messages m join chat.conversations c on c.id = m.conversation_id
                     where m.conversation_id = $1 and m.sequence = $2",
                    "insert into chat.message_keys
                     select (jsonb_populate_record(null::chat.message_keys, to_jsonb(k)
                         || jsonb_build_object('sequence', c.last_sequence + 1))).*
                     from chat.message_keys k join chat.conversations c on c.id = k.conversation_id
                     where k.conversation_id = $1 and k.sequence = $2",
                    "update chat.conversations set last_sequence = last_sequence + 1 where id = $1",
                ];
                for statement in statements {
                    let mut query = sqlx::query(statement);
                    if statement.contains("$1") {
                        query = query.bind(conversation_id);
                    }
                    if statement.contains("$2") {
                        query = query.bind(sequence);
                    }
                    query.execute(&stack.db).await.map_err(|e| e.to_string())?;
                }
                Ok(Value::Null)
            }
            "stamp" => {
                // The server changes when it says a message was sent.
                let conversation_id: uuid::Uuid =
                    text("conversation_id").parse().map_err(|_| "bad id")?;
                let altered = sqlx::query(
                    "update chat.messages
                     set created_at = now() + make_interval(secs => $3)
                     where conversation_id = $1 and sequence = $2",
                )
                .bind(conversation_id)
                .bind(request["sequence"].as_i64().unwrap_or_default())
                .bind(request["shift_seconds"].as_f64().unwrap_or_default())
                .execute(&stack.db)
                .await
                .map_err(|e| e.to_string())?;
                Ok(json!(altered.rows_affected()))
            }
            "cli_revoke" => {
                // `as` revokes the device of the CLI user `device_of`.
                let device_id = self
                    .users
                    .get(&text("device_of"))
                    .ok_or("no such CLI user")?
                    .account()
                    .device_id
                    .clone();
                session(&self.users)?
                    .revoke_device(&device_id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Value::Null)
            }
            "active_devices" => {
                let count: i64 = sqlx::query_scalar(
                    "select count(*) from auth.devices d join auth.users u on u.id = d.user_id
                     where u.username = $1 and d.revoked_at is null",
                )
                .bind(text("username"))
                .fetch_one(&stack.db)
                .await
                .map_err(|e| e.to_string())?;
                Ok(json!(count))
            }
            "capture_history" => {
                // The next history answer's newest message is kept...
                let captured = self.captured.clone();
                malicious(stack)?.chat.rewrite(
                    LIST_MESSAGES,
                    move |response: &mut chat_pb::ListMessagesResponse| {
                        if let Some(newest) = response.messages.first() {
                            captured.lock().unwrap().get_or_insert(newest.clone());
                        }
                    },
                );
                Ok(Value::Null)
            }
            "inject_captured" => {
                // ...and slipped into every history answer from then on.
                let message = self
                    .captured
                    .lock()
                    .unwrap()
                    .clone()
                    .ok_or("nothing captured")?;
                malicious(stack)?.chat.rewrite(
                    LIST_MESSAGES,
                    move |response: &mut chat_pb::ListMessagesResponse| {
                        response.messages.insert(0, message.clone());
                    },
                );
                Ok(Value::Null)
            }
            "gateway_stop" => {
                stack.stop_gateway().await;
                Ok(Value::Null)
            }
            "gateway_start" => {
                stack.start_gateway().await;
                Ok(Value::Null)
            }
            "lose_send_answers" => {
                // Chat stores the next `count` messages sent, but their answers are lost.
                let count = request["count"].as_u64().unwrap_or_default() as usize;
                malicious(stack)?.chat.lose_answers(SEND_MESSAGE, count);
                Ok(Value::Null)
            }
            "send_answers_to_lose" => {
                Ok(json!(malicious(stack)?.chat.answers_to_lose(SEND_MESSAGE)))
            }
            "chat_stop" => {
                stack.stop_chat().await;
                Ok(Value::Null)
            }
            "chat_start" => {
                stack.start_chat().await;
                Ok(Value::Null)
            }
            "conversation_rows" => {
                let conversation_id: uuid::Uuid =
                    text("conversation_id").parse().map_err(|_| "bad id")?;
                let rows: i64 = sqlx::query_scalar(
                    "select count(*) from chat.messages where conversation_id = $1",
                )
                .bind(conversation_id)
                .fetch_one(&stack.db)
                .await
                .map_err(|e| e.to_string())?;
                Ok(json!(rows))
            }
            "forwarded_keys" => {
                // Keys forwarded between the devices of `username`, by forwarder and recipient,
                // each device named by its place in the order they were created (0: the first).
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "with devices as (
                         select d.id, row_number() over (order by d.created_at, d.id) - 1 as place
                         from auth.devices d join auth.users u on u.id = d.user_id
                         where u.username = $1)
                     select f.place, r.place, count(*)
                     from chat.forwarded_keys k
                     join devices f on f.id = k.forwarder_device_id
                     join devices r on r.id = k.recipient_device_id
                     group by f.place, r.place
                     order by f.place, r.place",
                )
                .bind(text("username"))
                .fetch_all(&stack.db)
                .await
                .map_err(|e| e.to_string())?;
                Ok(Value::Array(
                    rows.into_iter()
                        .map(|(forwarder, recipient, keys)| {
                            json!({ "forwarder": forwarder, "recipient": recipient, "keys": keys })
                        })
                        .collect(),
                ))
            }
            "stored_messages" => {
                let rows: i64 = sqlx::query_scalar("select count(*) from chat.messages")
                    .fetch_one(&stack.db)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!(rows))
            }
            "message_rows" => {
                // How many times chat stored a message of this client message id (by any device).
                let rows: i64 = sqlx::query_scalar(
                    "select count(*) from chat.messages where client_message_id = $1",
                )
                .bind(text("client_message_id"))
                .fetch_one(&stack.db)
                .await
                .map_err(|e| e.to_string())?;
                Ok(json!(rows))
            }
            other => Err(format!("unknown op {other}")),
        }
    }
}
