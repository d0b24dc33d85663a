//! The stack as the bench runs it: every service in a runtime of its own, on a database URL.
//! (The services' suites run it in their own runtime, on a shared pool.)

use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
};
use sqlx::PgPool;
use testkit::{PASSWORD, stack::Stack, with_token};

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
