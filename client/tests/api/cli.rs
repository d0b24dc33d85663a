use std::io::{BufRead, BufReader, Write};
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{PASSPHRASE, PASSWORD, TestEnv, spawn_env};

/// What one run of the `chat` binary printed, and its exit code.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|_| panic!("not JSON: {} / {}", self.stdout, self.stderr))
    }
}

/// Runs `chat` with `args` on the profile `dir` against the test gateway (off the runtime's
/// thread, which also runs the services).
pub async fn chat(env: &TestEnv, dir: &Path, args: &[&str]) -> Run {
    let server = env.server();
    chat_on(&server, dir, args).await
}

pub async fn chat_on(server: &str, dir: &Path, args: &[&str]) -> Run {
    chat_with_stdin(server, dir, args, "").await
}

pub async fn chat_with_stdin(server: &str, dir: &Path, args: &[&str], stdin: &str) -> Run {
    let dir = dir.to_str().unwrap();
    let env = [
        ("CHAT_PROFILE_DIR", dir),
        ("CHAT_PASSWORD", PASSWORD),
        ("CHAT_PASSPHRASE", PASSPHRASE),
    ];
    chat_custom(server, args, &env, stdin).await
}

/// Runs `chat` with only the given profile and secret variables (and the test settings).
pub async fn chat_custom(server: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    chat_command(
        server,
        args,
        env,
        stdin,
        Command::new(env!("CARGO_BIN_EXE_chat")),
    )
    .await
}

/// As [`chat`], on a pseudo-terminal (util-linux `script`), so that the program sees a
/// terminal on stdin and stdout; `stdin` is typed into it. Everything it printed, stderr
/// included, is in `Run::stdout`.
pub async fn chat_in_terminal(env: &TestEnv, dir: &Path, args: &[&str], stdin: &str) -> Run {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_chat"))
        .chain(args.iter().copied())
        .map(|arg| format!("'{}'", arg.replace('\'', "'\\''")))
        .collect();
    let mut command = Command::new("script");
    command.args(["-qec", &quoted.join(" "), "/dev/null"]);
    let dir = dir.to_str().unwrap();
    let secrets = [
        ("CHAT_PROFILE_DIR", dir),
        ("CHAT_PASSWORD", PASSWORD),
        ("CHAT_PASSPHRASE", PASSPHRASE),
    ];
    chat_command(&env.server(), &[], &secrets, stdin, command).await
}

/// As [`chat`], with stderr written into stdout (`Run::stdout`), so that the order of what the
/// program printed on both shows: e.g. a warning before or after "sent".
pub async fn chat_merged(env: &TestEnv, dir: &Path, args: &[&str]) -> Run {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("exec \"$0\" \"$@\" 2>&1")
        .arg(env!("CARGO_BIN_EXE_chat"));
    let dir = dir.to_str().unwrap();
    let secrets = [
        ("CHAT_PROFILE_DIR", dir),
        ("CHAT_PASSWORD", PASSWORD),
        ("CHAT_PASSPHRASE", PASSPHRASE),
    ];
    chat_command(&env.server(), args, &secrets, "", command).await
}

async fn chat_command(
    server: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
    mut command: Command,
) -> Run {
    prepare(&mut command, server, args, env);
    let stdin = stdin.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `chat` running in the background (`chat chat`, its stdin left open; a `chat send` waiting
/// for the server), with what it printed so far. Killed when dropped.
pub struct Background {
    /// `None` once [`Background::finish`] took it.
    child: Option<std::process::Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    collectors: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts `chat` with `args` on the profile `dir` against the test gateway.
    pub fn start(env: &TestEnv, dir: &Path, args: &[&str]) -> Self {
        Self::start_on(&env.server(), dir, args)
    }

    /// Starts `chat` with `args` on the profile `dir` against `server`.
    pub fn start_on(server: &str, dir: &Path, args: &[&str]) -> Self {
        let dir = dir.to_str().unwrap();
        let secrets = [
            ("CHAT_PROFILE_DIR", dir),
            ("CHAT_PASSWORD", PASSWORD),
            ("CHAT_PASSPHRASE", PASSPHRASE),
        ];
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat"));
        prepare(&mut command, server, args, &secrets);
        let mut child = command.spawn().unwrap();
        let (stdout, stdout_collector) = collect(child.stdout.take().unwrap());
        let (stderr, stderr_collector) = collect(child.stderr.take().unwrap());
        Self {
            child: Some(child),
            stdout,
            stderr,
            collectors: vec![stdout_collector, stderr_collector],
        }
    }

    /// What it printed on stdout, once it printed `text` there (within 30 s).
    pub async fn printed(&self, text: &str) -> String {
        self.printed_in(&self.stdout, text).await
    }

    /// What it printed on stderr, once it printed `text` there (within 30 s).
    pub async fn printed_on_stderr(&self, text: &str) -> String {
        self.printed_in(&self.stderr, text).await
    }

    async fn printed_in(&self, output: &Mutex<String>, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let printed = output.lock().unwrap().clone();
            if printed.contains(text) {
                return printed;
            }
            let (stdout, stderr) = (self.stdout.lock().unwrap(), self.stderr.lock().unwrap());
            assert!(
                std::time::Instant::now() < deadline,
                "never printed {text:?}: {stdout} / {stderr}"
            );
            drop((stdout, stderr));
            // Polling a process's output, not waiting for time to pass.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits for the program to end by itself (its stdin is closed first).
    pub async fn finish(mut self) -> Run {
        let mut child = self.child.take().unwrap();
        drop(child.stdin.take());
        let collectors = std::mem::take(&mut self.collectors);
        let status = tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            for collector in collectors {
                collector.join().unwrap();
            }
            status
        })
        .await
        .unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let collected = text.clone();
    let collector = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = collected.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    (text, collector)
}

/// Points `command` at `server` with `args` and only the given profile and secret variables.
fn prepare(command: &mut Command, server: &str, args: &[&str], env: &[(&str, &str)]) {
    command
        .args(args)
        .env("CHAT_SERVER", server)
        .env("CHAT_RSA_BITS", "2048")
        .env_remove("CHAT_PROFILE_DIR")
        .env_remove("CHAT_PASSWORD")
        .env_remove("CHAT_PASSPHRASE")
        .env_remove("CHAT_NEW_PASSPHRASE")
        .env_remove("CHAT_KDF_MEMORY_KIB")
        .env_remove("CHAT_PROFILE")
        .env_remove("CHAT_CA_FILE")
        .env_remove("XDG_CONFIG_HOME")
        // `chat unlock` keeps its key there: tests give their own.
        .env_remove("XDG_RUNTIME_DIR")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
}

/// `chat history` text without each message's time (`[1] 2026-12-07 03:31 UTC alice: hi`
/// becomes `[1] alice: hi`), checking that every line has one.
pub fn untimed(history: &str) -> String {
    history
        .lines()
        .map(|line| {
            let (sequence, rest) = line.split_once("] ").expect("a sequence");
            let (time, rest) = rest.split_at(21);
            let digits = |range: std::ops::Range<usize>| {
                time[range].bytes().all(|byte| byte.is_ascii_digit())
            };
            assert!(
                digits(0..4) && &time[4..5] == "-" && digits(11..13) && time.ends_with(" UTC "),
                "no time in {line:?}"
            );
            format!("{sequence}] {rest}\n")
        })
        .collect()
}

/// Registers `username` with the CLI on a new profile; returns the profile directory.
pub async fn cli_user(env: &TestEnv, username: &str) -> PathBuf {
    let dir = env.profile_dir();
    let run = chat(env, &dir, &["--json", "register", username]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["username"], username);
    dir
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_registers_sends_and_reads_history_as_json(db: PgPool) {
    let env = spawn_env(db).await;
    // Let the gateway and chat fetch auth's token keys first.
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;

    let sent = chat(&env, &alice, &["--json", "send", "bob", "hello", "there"]).await;
    let unread = chat(&env, &bob, &["--json", "conversations"]).await;
    let history = chat(&env, &bob, &["--json", "history", "alice"]).await;
    let read = chat(&env, &bob, &["--json", "conversations"]).await;
    let whoami = chat(&env, &bob, &["--json", "whoami"]).await;
    let text_history = chat(&env, &alice, &["history", "bob"]).await;

    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(sent.json()["sequence"], 1);
    assert_eq!(unread.json()[0]["unread_count"], 1);
    assert_eq!(unread.json()[0]["with"], "alice");
    let messages = history.json();
    assert_eq!(messages[0]["content"]["status"], "verified");
    assert_eq!(messages[0]["content"]["text"], "hello there");
    assert_eq!(messages[0]["sender_username"], "alice");
    assert_eq!(read.json()[0]["unread_count"], 0);
    assert_eq!(whoami.json()["username"], "bob");
    assert_eq!(untimed(&text_history.stdout), "[1] alice: hello there\n");
    for run in [&sent, &history, &whoami] {
        assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    }
    for file in ["account.json", "tokens.json", "keys.json", "contacts.json"] {
        let mode = std::fs::metadata(alice.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let keys = std::fs::read_to_string(alice.join("keys.json")).unwrap();
    assert!(keys.contains("argon2id"));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_exit_codes_tell_errors_apart(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    let nobody = env.profile_dir();
    chat(&env, &alice, &["send", "bob", "soon tampered"]).await;
    sqlx::query(
        "update chat.messages set signature = set_byte(signature, 0, get_byte(signature, 0) # 1)",
    )
    .execute(&env.db)
    .await
    .unwrap();

    let usage = chat(&env, &alice, &["send"]).await;
    let not_logged_in = chat(&env, &nobody, &["whoami"]).await;
    let unknown_user = chat(&env, &alice, &["send", "zoe", "hi"]).await;
    let unreachable = chat_on("http://127.0.0.1:9", &nobody, &["login", "alice"]).await;
    let tampered = chat(&env, &bob, &["history", "alice"]).await;
    let logout = chat(&env, &alice, &["logout"]).await;
    let after_logout = chat(&env, &alice, &["whoami"]).await;

    assert_eq!(usage.code, 2, "{}", usage.stderr);
    assert_eq!(not_logged_in.code, 3, "{}", not_logged_in.stderr);
    assert_eq!(unknown_user.code, 4, "{}", unknown_user.stderr);
    assert_eq!(unreachable.code, 5, "{}", unreachable.stderr);
    assert_eq!(tampered.code, 6, "{}", tampered.stderr);
    assert!(tampered.stdout.contains("FAILED VERIFICATION"));
    assert!(!tampered.stdout.contains("soon tampered"));
    assert_eq!(logout.code, 0, "{}", logout.stderr);
    assert_eq!(after_logout.code, 3, "{}", after_logout.stderr);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_documents_every_command_and_prints_completions(db: PgPool) {
    let env = spawn_env(db).await;
    let dir = env.profile_dir();

    let help = chat(&env, &dir, &["--help"]).await;
    let group_help = chat(&env, &dir, &["group", "create", "--help"]).await;
    let completions = chat(&env, &dir, &["completions", "bash"]).await;

    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit codes"));
    for command in [
        "register", "login", "send", "history", "chat", "group", "verify",
    ] {
        assert!(help.stdout.contains(command), "{command}");
    }
    assert!(!help.stdout.contains("rsa-bits"));
    assert_eq!(group_help.code, 0);
    assert!(completions.stdout.contains("_chat"));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_interactive_cli_shows_missed_messages_and_sends_stdin_lines(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    chat(&env, &alice, &["send", "bob", "are you there?"]).await;

    let session = chat_with_stdin(
        &env.server(),
        &bob,
        &["--json", "chat", "alice"],
        "yes, here\n",
    )
    .await;
    let again = chat_with_stdin(&env.server(), &bob, &["--json", "chat", "alice"], "").await;
    let history = chat(&env, &alice, &["history", "bob"]).await;

    assert_eq!(session.code, 0, "{}", session.stderr);
    let lines: Vec<Value> = session
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["content"]["text"] == "are you there?")
    );
    assert!(lines.iter().any(|line| line["caught_up"] == true));
    assert!(
        lines
            .iter()
            .any(|line| line["sequence"] == 2 && line["message_id"].is_string())
    );
    assert!(
        !again.stdout.contains("are you there?"),
        "shown twice: {}",
        again.stdout
    );
    assert_eq!(
        untimed(&history.stdout),
        "[1] alice: are you there?\n[2] bob: yes, here\n"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_verifies_a_contact_and_stops_sending_when_their_keys_change(db: PgPool) {
    // Until the new keys are accepted, what alice writes is kept, not sent (`chat trust` sends it).
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;

    let alice_view = chat(&env, &alice, &["--json", "verify", "bob", "--yes"]).await;
    let bob_view = chat(&env, &bob, &["verify", "alice", "--yes"]).await;
    let bobs_new_profile = env.profile_dir();
    let login = chat(&env, &bobs_new_profile, &["login", "bob"]).await;
    let refused = chat(&env, &alice, &["send", "bob", "still you?"]).await;
    let trust = chat(&env, &alice, &["trust", "bob"]).await;
    let send = chat(&env, &alice, &["send", "bob", "good"]).await;
    let after = chat(&env, &alice, &["--json", "verify", "bob", "--yes"]).await;
    let devices = chat(&env, &bobs_new_profile, &["--json", "devices"])
        .await
        .json();
    let old_device = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|device| device["current"] == false)
        .unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = chat(&env, &bobs_new_profile, &["devices", "revoke", &old_device]).await;
    let remaining = chat(&env, &bobs_new_profile, &["--json", "devices", "list"]).await;
    let third = env.profile_dir();
    chat(&env, &third, &["login", "bob"]).await;
    let json_send = chat(&env, &alice, &["--json", "send", "bob", "and now?"]).await;

    let number = alice_view.json()["safety_number"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(number.len(), 71);
    assert!(bob_view.stdout.contains(&number));
    assert_eq!(login.code, 0, "{}", login.stderr);
    assert_eq!(refused.code, 7, "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("WARNING: the keys of bob CHANGED"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("chat trust bob"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("not sent yet, and kept in this profile"),
        "{}",
        refused.stderr
    );
    assert_eq!(trust.code, 0, "{}", trust.stderr);
    assert!(trust.stdout.contains("accepted"), "{}", trust.stdout);
    // The message kept while bob's keys waited goes first, once they are accepted.
    assert!(trust.stdout.ends_with(" as #1\n"), "{}", trust.stdout);
    assert_eq!(send.code, 0, "{}", send.stderr);
    assert_eq!(send.stdout, "sent #2\n");
    assert_ne!(after.json()["safety_number"], number.as_str());
    assert_eq!(after.json()["verified"], true);
    assert_eq!(json_send.code, 7, "{}", json_send.stderr);
    let warning: Value = serde_json::from_str(json_send.stderr.lines().next().unwrap()).unwrap();
    assert_eq!(warning["key_warning"]["username"], "bob");
    assert_eq!(warning["key_warning"]["blocked"], true);
    assert_eq!(warning["key_warning"]["added"].as_array().unwrap().len(), 1);
    assert_eq!(
        warning["key_warning"]["removed"].as_array().unwrap().len(),
        1
    );
    assert_eq!(devices.as_array().unwrap().len(), 2);
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    assert_eq!(remaining.json().as_array().unwrap().len(), 1);
    assert_eq!(remaining.json()[0]["current"], true);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_default_profile_lives_under_the_config_home_and_keys_need_their_passphrase(
    db: PgPool,
) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    env.user("bob").await;
    let home = env.profile_dir();
    let home = home.to_str().unwrap();
    let server = env.server();
    let with = |passphrase: &'static str| {
        [
            ("HOME", home),
            ("CHAT_PASSWORD", PASSWORD),
            ("CHAT_PASSPHRASE", passphrase),
        ]
    };

    let register = chat_custom(
        &server,
        &["--profile", "work", "register", "carol"],
        &with("p1"),
        "",
    )
    .await;
    let wrong = chat_custom(
        &server,
        &["--profile", "work", "send", "bob", "x"],
        &with("p2"),
        "",
    )
    .await;
    let right = chat_custom(
        &server,
        &["--profile", "work", "send", "bob", "x"],
        &with("p1"),
        "",
    )
    .await;
    let password_on_stdin = chat_custom(
        &server,
        &["--profile", "work", "login", "carol"],
        &[("HOME", home), ("CHAT_PASSPHRASE", "p1")],
        &format!("{PASSWORD}\n"),
    )
    .await;

    assert_eq!(register.code, 0, "{}", register.stderr);
    let dir = Path::new(home).join(".config/chat/work");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(dir.join("keys.json").exists());
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert_eq!(right.code, 0, "{}", right.stderr);
    assert_eq!(password_on_stdin.code, 0, "{}", password_on_stdin.stderr);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_manages_groups_and_sends_to_them(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    let carol = cli_user(&env, "carol").await;

    let create = chat(
        &env,
        &alice,
        &["--json", "group", "create", "friends", "bob"],
    )
    .await;
    let add = chat(&env, &alice, &["group", "add", "friends", "carol"]).await;
    let rename = chat(&env, &alice, &["group", "rename", "friends", "pals"]).await;
    let sent = chat(&env, &alice, &["--json", "send", "#pals", "hello", "pals"]).await;
    let members = chat(&env, &bob, &["--json", "group", "members", "pals"]).await;
    let history = chat(&env, &carol, &["history", "#pals"]).await;
    let leave = chat(&env, &carol, &["group", "leave", "pals"]).await;
    let groups = chat(&env, &carol, &["--json", "group", "list"]).await;

    assert_eq!(create.code, 0, "{}", create.stderr);
    assert_eq!(create.json()["name"], "friends");
    assert_eq!(add.code, 0, "{}", add.stderr);
    assert!(rename.stdout.contains("#pals"), "{}", rename.stdout);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(members.json().as_array().unwrap().len(), 3);
    assert_eq!(untimed(&history.stdout), "[1] alice: hello pals\n");
    assert_eq!(leave.code, 0, "{}", leave.stderr);
    assert_eq!(groups.json(), serde_json::json!([]));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_seals_its_keys_with_a_passphrase_that_is_not_the_password(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let server = env.server();
    let dir = env.profile_dir();
    let profile = dir.to_str().unwrap();
    let register = |passphrase: Option<&'static str>,
                    extra: &'static [(&'static str, &'static str)]| {
        let mut secrets = vec![("CHAT_PROFILE_DIR", profile), ("CHAT_PASSWORD", PASSWORD)];
        secrets.extend(passphrase.map(|p| ("CHAT_PASSPHRASE", p)));
        secrets.extend_from_slice(extra);
        let server = server.clone();
        async move { chat_custom(&server, &["register", "alice"], &secrets, "").await }
    };

    let the_password = register(Some(PASSWORD), &[]).await;
    let none = register(None, &[]).await;
    let cheap = register(Some(PASSPHRASE), &[("CHAT_KDF_MEMORY_KIB", "1024")]).await;
    let registered = register(Some(PASSPHRASE), &[]).await;

    assert_eq!(the_password.code, 2, "{}", the_password.stderr);
    assert!(
        the_password
            .stderr
            .contains("must not be the account password")
    );
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert_eq!(cheap.code, 2, "{}", cheap.stderr);
    assert!(cheap.stderr.contains("19456"), "{}", cheap.stderr);
    assert_eq!(registered.code, 0, "{}", registered.stderr);
    let sealed = client::Profile::open(&dir)
        .unwrap()
        .sealed_keys()
        .unwrap()
        .unwrap();
    assert!(sealed.kdf_params.m_cost >= client::keystore::KdfParams::MIN_MEMORY_KIB);
    assert!(client::keystore::open_keys(&sealed, PASSWORD.as_bytes()).is_err());
    assert!(client::keystore::open_keys(&sealed, PASSPHRASE.as_bytes()).is_ok());
}

#[sqlx::test(migrations = "../migrations")]
async fn chat_passphrase_moves_keys_sealed_with_the_password_to_a_new_passphrase(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    env.user("bob").await;
    let alice = cli_user(&env, "alice").await;
    // A profile of an earlier version: its keys sealed with the account password.
    client::keystore::change_passphrase(
        &client::Profile::open(&alice).unwrap(),
        PASSPHRASE.as_bytes(),
        PASSWORD.as_bytes(),
        client::keystore::KdfParams::default(),
    )
    .unwrap();
    let server = env.server();
    let profile = alice.to_str().unwrap();
    let run = |args: &'static [&'static str], passphrase: &'static str, new: &'static str| {
        let server = server.clone();
        async move {
            let secrets = [
                ("CHAT_PROFILE_DIR", profile),
                ("CHAT_PASSWORD", PASSWORD),
                ("CHAT_PASSPHRASE", passphrase),
                ("CHAT_NEW_PASSPHRASE", new),
            ];
            chat_custom(&server, args, &secrets, "").await
        }
    };

    let with_the_password = run(&["send", "bob", "hi"], PASSWORD, "").await;
    let to_the_password = run(&["passphrase"], PASSWORD, PASSWORD).await;
    let moved = run(&["passphrase"], PASSWORD, "a fresh passphrase").await;
    let old_one = run(&["send", "bob", "hi"], PASSWORD, "").await;
    let new_one = run(&["send", "bob", "hi"], "a fresh passphrase", "").await;

    assert_eq!(with_the_password.code, 0, "{}", with_the_password.stderr);
    assert_eq!(to_the_password.code, 2, "{}", to_the_password.stderr);
    assert_eq!(moved.code, 0, "{}", moved.stderr);
    assert_eq!(old_one.code, 3, "{}", old_one.stderr);
    assert_eq!(new_one.code, 0, "{}", new_one.stderr);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_username_in_other_case_resumes_the_device_which_the_cli_renames(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let bob = cli_user(&env, "bob").await;
    let before = chat(&env, &bob, &["--json", "whoami"]).await;

    let login = chat(&env, &bob, &["--json", "login", "BOB"]).await;
    let after = chat(&env, &bob, &["--json", "whoami"]).await;
    let device_id = after.json()["device"]["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let renamed = chat(
        &env,
        &bob,
        &[
            "--json", "devices", "rename", &device_id, "  work", "laptop ",
        ],
    )
    .await;
    let devices = chat(&env, &bob, &["--json", "devices"]).await;
    let empty = chat(&env, &bob, &["devices", "rename", &device_id, " "]).await;

    assert_eq!(login.code, 0, "{}", login.stderr);
    assert_eq!(
        before.json()["device"]["device_id"],
        after.json()["device"]["device_id"],
        "logging in as BOB made a new device"
    );
    assert_eq!(after.json()["username"], "bob");
    assert_eq!(renamed.code, 0, "{}", renamed.stderr);
    assert_eq!(renamed.json()["name"], "work laptop");
    let listed = devices.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "work laptop");
    assert_ne!(empty.code, 0);
    assert!(empty.stderr.contains("name"), "{}", empty.stderr);
}
