//! The stack as the bench runs it: every service in a runtime of its own, on a database URL.
//! (The services' suites run it in their own runtime, on a shared pool.) A service started again
//! where it was, and the child-process side (`testkit::stack::process`).

use std::{
    os::unix::process::ExitStatusExt as _,
    time::{Duration, Instant},
};

use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
};
use sqlx::PgPool;
use testkit::{
    PASSWORD,
    stack::{Service, Stack, process::Process},
    with_token,
};

#[sqlx::test(migrations = "../migrations")]
async fn a_stack_in_runtimes_of_its_own_serves_through_each_gateway_and_stops_cleanly(db: PgPool) {
    let stack = Stack::builder()
        .auth()
        .group()
        .chat_replicas(2)
        .gateway_per_chat_replica()
        .own_runtimes()
        .pool_size(4)
        .start(database_url(&db).as_str())
        .await
        .unwrap();
    let mut auth = AuthServiceClient::new(stack.gateway().connect().await.unwrap());

    auth.register(auth_pb::RegisterRequest {
        username: "alice".to_owned(),
        password: PASSWORD.to_owned(),
        display_name: String::new(),
    })
    .await
    .unwrap();
    let login = auth
        .login(auth_pb::LoginRequest {
            username: "alice".to_owned(),
            password: PASSWORD.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = login.tokens.unwrap().access_token;
    let mut listed = Vec::new();
    for gateway in stack.gateways() {
        let mut chat = ChatServiceClient::new(gateway.connect().await.unwrap());
        let request = with_token(chat_pb::ListConversationsRequest::default(), &token);
        let answer = chat.list_conversations(request).await;
        listed.push(answer.map(|_| ()).map_err(|status| status.code()));
    }
    let threads = server_threads();

    assert_eq!(stack.gateways().len(), 2);
    assert_eq!(listed, [Ok(()), Ok(())]);
    for name in [
        "auth-server",
        "group-server",
        "chat-server",
        "gateway-server",
    ] {
        assert!(
            threads.iter().any(|thread| thread == name),
            "no {name} thread in {threads:?}"
        );
    }
    stack.stop().await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_chat_replica_stopped_and_started_again_at_its_address_serves_there(db: PgPool) {
    let stack = Stack::builder().auth().chat().start(&db).await.unwrap();
    let replica = stack.start_chat(|_| {}).await.unwrap();
    let addr = replica.addr;
    replica.stop().await.unwrap();

    let again = stack
        .start_chat(|config| config.server.listen_addr = addr)
        .await
        .unwrap();

    assert_eq!(again.addr, addr);
    let mut chat = ChatServiceClient::new(again.connect().await.unwrap());
    let token = stack.probe_token().unwrap();
    let request = with_token(chat_pb::ListConversationsRequest::default(), token);
    let listed = chat.list_conversations(request).await.unwrap().into_inner();
    assert!(listed.conversations.is_empty());
}

#[tokio::test]
async fn a_process_that_exits_while_awaited_fails_the_wait_at_once_naming_its_log() {
    let dir = scratch_dir();
    let script = executable(&dir, "quits.sh", "#!/bin/sh\necho giving up\nexit 3\n");
    let log = dir.join("quits.log");
    let mut process = Process::spawn(&script, "quitter", [], &log).unwrap();
    let nobody_listens = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let started = Instant::now();

    let waited = process
        .wait_until_ready(nobody_listens, Service::Chat, None, Duration::from_secs(30))
        .await;

    let error = format!("{:#}", waited.unwrap_err());
    assert!(started.elapsed() < Duration::from_secs(10), "{error}");
    assert!(error.contains("exited with exit status: 3"), "{error}");
    assert!(error.contains(&log.display().to_string()), "{error}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "giving up\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_process_gets_exactly_its_environment_and_sigterm_ends_it() {
    let dir = scratch_dir();
    let script = executable(&dir, "waits.sh", "#!/bin/sh\nenv\nexec /bin/sleep 60\n");
    let log = dir.join("waits.log");
    let env = [("GREETING".to_owned(), "hello".to_owned())];
    let mut process = Process::spawn(&script, "sleeper", env, &log).unwrap();
    let deadline = testkit::stack::process::Deadline::after(Duration::from_secs(10), "the env");
    while !std::fs::read_to_string(&log).unwrap().contains("GREETING") {
        deadline.tick().await;
    }

    let status = process.terminate(Duration::from_secs(10)).await.unwrap();

    assert_eq!(status.signal(), Some(15));
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(printed.contains("GREETING=hello"), "{printed}");
    assert!(!printed.contains("DATABASE_URL"), "inherited: {printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("testkit-process-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `text` as an executable file `name` in `dir`.
fn executable(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The URL of `db`'s database on the server `DATABASE_URL` names.
fn database_url(db: &PgPool) -> String {
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL names a PostgreSQL server");
    let database = db.connect_options().get_database().unwrap().to_owned();
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{database}")
}

/// The names of this process's threads.
fn server_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}
