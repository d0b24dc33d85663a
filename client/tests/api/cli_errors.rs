//! What a person meets through the real `chat` binary when something goes wrong: every status
//! as a sentence with its documented exit code (the raw status only with `--verbose` or in
//! `--json`), a revoked device, a group name two groups share, and `chat verify`'s question.

use serde_json::Value;
use sqlx::PgPool;

use crate::{
    cli::{Run, chat, chat_custom, chat_in_terminal, chat_on, chat_with_stdin, cli_user, untimed},
    helpers::{PASSPHRASE, spawn_env},
};

/// No gRPC code name, in either spelling, in what a person reads.
fn assert_no_raw_status(run: &Run) {
    for raw in [
        "AlreadyExists",
        "ALREADY_EXISTS",
        "ResourceExhausted",
        "RESOURCE_EXHAUSTED",
        "PermissionDenied",
        "PERMISSION_DENIED",
        "NotFound",
        "Unavailable",
        "Unknown",
        "transport error",
        "device not found",
    ] {
        assert!(!run.stderr.contains(raw), "{raw} in {}", run.stderr);
    }
}

fn json_error(run: &Run) -> Value {
    let line = run.stderr.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {}", run.stderr))
}

#[sqlx::test(migrations = "../migrations")]
async fn cli_errors_are_sentences_with_their_exit_codes_and_the_status_only_on_request(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let port = env.gateway.port();
    let wrong_password = |dir: &std::path::Path| {
        let dir = dir.to_str().unwrap().to_owned();
        let server = env.server();
        async move {
            chat_custom(
                &server,
                &["login", "alice"],
                &[
                    ("CHAT_PROFILE_DIR", &dir),
                    ("CHAT_PASSWORD", "not the password"),
                    ("CHAT_PASSPHRASE", PASSPHRASE),
                ],
                "",
            )
            .await
        }
    };

    let taken = chat(&env, &env.profile_dir(), &["register", "alice"]).await;
    let taken_verbose = chat(
        &env,
        &env.profile_dir(),
        &["--verbose", "register", "alice"],
    )
    .await;
    let taken_json = chat(&env, &env.profile_dir(), &["--json", "register", "alice"]).await;
    let unknown_user = chat(&env, &alice, &["send", "zoe", "hi"]).await;
    let no_scheme = chat_on(
        &format!("127.0.0.1:{port}"),
        &env.profile_dir(),
        &["login", "alice"],
    )
    .await;
    let unreachable = chat_on(
        "http://127.0.0.1:9",
        &env.profile_dir(),
        &["login", "alice"],
    )
    .await;
    let stranger = env.profile_dir();
    let mut failures = Vec::new();
    for _ in 0..8 {
        let run = wrong_password(&stranger).await;
        let throttled = run.stderr.contains("too many failed logins");
        failures.push(run);
        if throttled {
            break;
        }
    }
    let throttled_json = chat_custom(
        &env.server(),
        &["--json", "login", "alice"],
        &[
            ("CHAT_PROFILE_DIR", stranger.to_str().unwrap()),
            ("CHAT_PASSWORD", "not the password"),
            ("CHAT_PASSPHRASE", PASSPHRASE),
        ],
        "",
    )
    .await;

    assert_eq!(taken.code, 8, "{}", taken.stderr);
    assert_eq!(
        taken.stderr,
        "error: that username is already taken: choose another one\n"
    );
    assert_eq!(taken_verbose.code, 8);
    assert!(
        taken_verbose
            .stderr
            .contains("server status: ALREADY_EXISTS: username is already taken"),
        "{}",
        taken_verbose.stderr
    );
    let error = json_error(&taken_json);
    assert_eq!(error["error"]["exit_code"], 8);
    assert_eq!(error["error"]["status"]["code"], "ALREADY_EXISTS");
    assert_eq!(
        error["error"]["message"],
        "that username is already taken: choose another one"
    );
    assert_eq!(unknown_user.code, 4, "{}", unknown_user.stderr);
    assert!(unknown_user.stderr.contains("no user named zoe"));
    assert_eq!(no_scheme.code, 2, "{}", no_scheme.stderr);
    assert!(
        no_scheme
            .stderr
            .contains(&format!("did you mean http://127.0.0.1:{port}?"))
            && no_scheme
                .stderr
                .contains("use http://host:port, or https://"),
        "{}",
        no_scheme.stderr
    );
    assert_eq!(unreachable.code, 5, "{}", unreachable.stderr);
    assert_eq!(
        unreachable.stderr,
        "error: cannot reach the server at http://127.0.0.1:9 (connection refused): is it \
         running, and is the address right?\n"
    );
    let (last, wrong) = failures.split_last().unwrap();
    assert!(!wrong.is_empty());
    for run in wrong {
        assert_eq!(run.code, 3, "{}", run.stderr);
        assert_eq!(run.stderr, "error: wrong username or password\n");
    }
    assert_eq!(last.code, 3, "{}", last.stderr);
    assert!(
        last.stderr
            .starts_with("error: too many failed logins: wait ")
            && last.stderr.ends_with(" before trying again\n")
            && (last.stderr.contains(" second") || last.stderr.contains(" minute")),
        "{}",
        last.stderr
    );
    let error = json_error(&throttled_json);
    assert_eq!(throttled_json.code, 3, "{}", throttled_json.stderr);
    assert_eq!(error["error"]["status"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(error["error"]["status"]["reason"], "LOGIN_THROTTLED");
    assert!(error["error"]["status"]["retry_after_ms"].as_u64().unwrap() > 0);
    for run in [&taken, &unknown_user, &no_scheme, &unreachable, last] {
        assert_no_raw_status(run);
    }
}

/// Within about a second of a revocation the device's access token still works, and the
/// server answers for the device itself (NOT_FOUND on whoami, PERMISSION_DENIED on send); that
/// moment is held open here by revoking the device in the database only. After it, the token is
/// refused, and the refresh too.
#[sqlx::test(migrations = "../migrations")]
async fn a_revoked_device_is_told_to_log_in_again_on_send_and_whoami(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let old = cli_user(&env, "alice").await;
    cli_user(&env, "bob").await;
    let new = env.profile_dir();
    chat(&env, &new, &["login", "alice"]).await;
    let device_id = |dir: &std::path::Path| {
        let account = std::fs::read_to_string(dir.join("account.json")).unwrap();
        serde_json::from_str::<Value>(&account).unwrap()["device_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    sqlx::query("update auth.devices set revoked_at = now() where id = $1::uuid")
        .bind(device_id(&old))
        .execute(&env.db)
        .await
        .unwrap();

    let send = chat(&env, &old, &["send", "bob", "still here?"]).await;
    let whoami = chat(&env, &old, &["whoami"]).await;
    let verbose = chat(&env, &old, &["--verbose", "whoami"]).await;
    let login = chat(&env, &old, &["login", "alice"]).await;
    let revoke = chat(&env, &new, &["devices", "revoke", &device_id(&old)]).await;
    let send_later = chat(&env, &old, &["send", "bob", "still here?"]).await;
    let whoami_later = chat(&env, &old, &["whoami"]).await;
    let login_again = chat(&env, &old, &["login", "alice"]).await;
    let after = chat(&env, &old, &["send", "bob", "back"]).await;

    for run in [&send, &whoami] {
        assert_eq!(run.code, 3, "{}", run.stderr);
        assert!(
            run.stderr
                .starts_with("error: this device was revoked; log in again"),
            "{}",
            run.stderr
        );
        assert_no_raw_status(run);
    }
    assert!(
        verbose
            .stderr
            .contains("server status: NOT_FOUND: device not found"),
        "{}",
        verbose.stderr
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    for run in [&send_later, &whoami_later] {
        assert_eq!(run.code, 3, "{}", run.stderr);
        // Depending on how soon the token is refused: the device's own answer, or the
        // refused refresh, which cannot tell a revocation from a logout elsewhere.
        assert!(
            run.stderr.contains("this device was revoked; log in again")
                || run.stderr.contains(
                    "the session ended (logged out, logged out everywhere, or this device was \
                     revoked): log in again"
                ),
            "{}",
            run.stderr
        );
        assert_no_raw_status(run);
    }
    assert_eq!(login_again.code, 0, "{}", login_again.stderr);
    assert_eq!(after.code, 0, "{}", after.stderr);
}

#[sqlx::test(migrations = "../migrations")]
async fn sending_to_a_name_two_groups_share_lists_them_by_id_with_their_members(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    cli_user(&env, "carol").await;
    let with_bob = chat(
        &env,
        &alice,
        &["--json", "group", "create", "friends", "bob"],
    )
    .await;
    let with_carol = chat(
        &env,
        &alice,
        &["--json", "group", "create", "friends", "carol"],
    )
    .await;
    let (bob_group, carol_group) = (
        with_bob.json()["group_id"].as_str().unwrap().to_owned(),
        with_carol.json()["group_id"].as_str().unwrap().to_owned(),
    );

    let ambiguous = chat(&env, &alice, &["send", "#friends", "hi"]).await;
    let by_id = chat(&env, &alice, &["send", &format!("#{bob_group}"), "hi bob"]).await;
    let unique_for_bob = chat(&env, &bob, &["history", "#friends"]).await;

    assert_eq!(ambiguous.code, 2, "{}", ambiguous.stderr);
    assert!(ambiguous.stdout.is_empty());
    let lines: Vec<&str> = ambiguous.stderr.lines().collect();
    assert_eq!(
        lines[0],
        "error: 2 of your groups are named friends; pick one by its id, as '#<id>':"
    );
    assert!(
        lines.contains(&format!("  #{bob_group}  members: alice, bob").as_str()),
        "{}",
        ambiguous.stderr
    );
    assert!(
        lines.contains(&format!("  #{carol_group}  members: alice, carol").as_str()),
        "{}",
        ambiguous.stderr
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("for example: chat send '#")
    );
    assert_eq!(by_id.code, 0, "{}", by_id.stderr);
    assert_eq!(untimed(&unique_for_bob.stdout), "[1] alice: hi bob\n");
}

#[sqlx::test(migrations = "../migrations")]
async fn chat_verify_shows_the_number_and_marks_only_after_a_yes(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    cli_user(&env, "bob").await;
    cli_user(&env, "carol").await;

    let piped = chat(&env, &alice, &["verify", "bob"]).await;
    let piped_json = chat(&env, &alice, &["--json", "verify", "bob"]).await;
    let yourself = chat(&env, &alice, &["verify", "alice", "--yes"]).await;
    let said_no = chat_in_terminal(&env, &alice, &["verify", "carol"], "n\n").await;
    let carol_after_no = chat(&env, &alice, &["--json", "verify", "carol"]).await;
    let said_yes = chat_in_terminal(&env, &alice, &["verify", "carol"], "y\n").await;
    let carol_after_yes = chat(&env, &alice, &["--json", "verify", "carol"]).await;
    let scripted = chat(&env, &alice, &["--json", "verify", "bob", "--yes"]).await;

    assert_eq!(piped.code, 2, "{}", piped.stderr);
    assert!(
        piped.stdout.starts_with("Safety number with bob:\n"),
        "{}",
        piped.stdout
    );
    assert!(
        piped.stderr.contains("stdin is not a terminal")
            && piped.stderr.contains("chat verify bob --yes"),
        "{}",
        piped.stderr
    );
    assert_eq!(piped_json.code, 2);
    assert_eq!(piped_json.json()["verified"], false);
    assert_eq!(yourself.code, 2, "{}", yourself.stderr);
    assert!(yourself.stderr.contains("you cannot verify yourself"));
    assert_eq!(said_no.code, 1, "{}", said_no.stdout);
    assert!(
        said_no
            .stdout
            .contains("Do the numbers match? Mark carol verified [y/N]")
    );
    assert!(
        said_no.stdout.contains("carol is NOT marked verified"),
        "{}",
        said_no.stdout
    );
    assert_eq!(carol_after_no.json()["verified"], false);
    assert_eq!(said_yes.code, 0, "{}", said_yes.stdout);
    assert!(
        said_yes.stdout.contains("carol is now marked verified"),
        "{}",
        said_yes.stdout
    );
    assert_eq!(carol_after_yes.json()["verified"], true);
    assert_eq!(scripted.code, 0, "{}", scripted.stderr);
    assert_eq!(scripted.json()["verified"], true);
    assert_eq!(
        scripted.json()["safety_number"],
        piped_json.json()["safety_number"]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn chat_chat_says_how_to_leave_and_every_message_has_its_time(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    let bob = cli_user(&env, "bob").await;
    chat(&env, &alice, &["send", "bob", "are you there?"]).await;

    let piped = chat_with_stdin(&env.server(), &bob, &["chat", "alice"], "yes\n").await;
    let at_terminal = chat_in_terminal(&env, &bob, &["chat", "alice"], "").await;
    let whoami = chat(&env, &bob, &["--json", "whoami"]).await;

    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(
        piped.stderr.starts_with(
            "chat with alice: type a message and press Enter to send it; Ctrl-D (end of input) \
             leaves once every line is sent. Times are UTC.\n"
        ),
        "{}",
        piped.stderr
    );
    assert!(!piped.stderr.contains("> "), "no prompt without a terminal");
    let first = piped.stdout.lines().next().unwrap_or_default();
    assert_eq!(untimed(first), "[1] alice: are you there?\n");
    assert!(
        at_terminal.stdout.contains("Ctrl-D"),
        "{}",
        at_terminal.stdout
    );
    assert!(at_terminal.stdout.contains("> "), "{}", at_terminal.stdout);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        whoami.json()["device"]["name"],
        format!("chat cli on {}", host.trim())
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn chat_unlock_opens_the_keys_for_a_while_without_the_passphrase(db: PgPool) {
    let env = spawn_env(db).await;
    env.user("warmup").await;
    let alice = cli_user(&env, "alice").await;
    cli_user(&env, "bob").await;
    let runtime = env.profile_dir();
    let server = env.server();
    // Without CHAT_PASSPHRASE: the passphrase comes from stdin, or from the unlock.
    let run = |args: &'static [&'static str], runtime_dir: bool, stdin: String| {
        let (server, dir, runtime) = (server.clone(), alice.clone(), runtime.clone());
        async move {
            let mut vars = vec![("CHAT_PROFILE_DIR", dir.to_str().unwrap())];
            if runtime_dir {
                vars.push(("XDG_RUNTIME_DIR", runtime.to_str().unwrap()));
            }
            chat_custom(&server, args, &vars, &stdin).await
        }
    };
    let passphrase = || format!("{PASSPHRASE}\n");
    let none = String::new;

    let locked = run(&["send", "bob", "locked"], true, none()).await;
    let no_runtime_dir = run(&["unlock"], false, passphrase()).await;
    let wrong = run(&["unlock"], true, "not the passphrase\n".into()).await;
    let unlock = run(&["unlock", "--minutes", "5"], true, passphrase()).await;
    let files: Vec<_> = std::fs::read_dir(runtime.join("chat-unlock"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    let kept = std::fs::read_to_string(&files[0]).unwrap();
    let mode = |path: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    let modes = (mode(&files[0]), mode(&runtime.join("chat-unlock")));
    let sent = run(&["send", "bob", "while unlocked"], true, none()).await;
    let history = run(&["history", "bob"], true, none()).await;
    let elsewhere = run(&["send", "bob", "no runtime dir"], false, none()).await;
    let lock = run(&["lock"], true, none()).await;
    let after_lock = run(&["send", "bob", "locked again"], true, none()).await;
    run(&["unlock"], true, passphrase()).await;
    let mut expired: Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    expired["expires_at"] = 1.into();
    std::fs::write(&files[0], expired.to_string()).unwrap();
    let after_expiry = run(&["send", "bob", "expired"], true, none()).await;

    assert_eq!(locked.code, 2, "{}", locked.stderr);
    assert!(
        locked.stderr.contains("no secret given"),
        "{}",
        locked.stderr
    );
    assert_eq!(no_runtime_dir.code, 2, "{}", no_runtime_dir.stderr);
    assert!(no_runtime_dir.stderr.contains("XDG_RUNTIME_DIR"));
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert_eq!(unlock.code, 0, "{}", unlock.stderr);
    assert!(
        unlock.stdout.contains("the device keys are open until"),
        "{}",
        unlock.stdout
    );
    assert_eq!(files.len(), 1);
    assert_eq!(modes, (0o600, 0o700));
    assert!(!kept.contains(PASSPHRASE));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(!sent.stderr.contains("Passphrase"), "{}", sent.stderr);
    assert_eq!(history.code, 0, "{}", history.stderr);
    assert!(
        history.stdout.contains("alice: while unlocked"),
        "{}",
        history.stdout
    );
    assert_eq!(elsewhere.code, 2, "{}", elsewhere.stderr);
    assert_eq!(lock.code, 0, "{}", lock.stderr);
    assert_eq!(
        lock.stdout,
        "locked: commands ask for the passphrase again\n"
    );
    assert_eq!(after_lock.code, 2, "{}", after_lock.stderr);
    assert_eq!(after_expiry.code, 2, "{}", after_expiry.stderr);
    assert!(!files[0].exists(), "an expired unlock is removed");
}
