//! What the faults of this binary (`ingress.rs`, `rollout.rs`, `slow_consumers.rs`) set up the
//! same way: a database for the run, and a group conversation whose members registered through
//! the Ingress, each device logged in with the client library.

use std::{path::Path, sync::Arc};

use client::{Server, Session, Target};

use crate::{accounts::register_and_log_in, database::TestDatabase};

/// Runs `test` with the URL of a fresh database, which is dropped afterwards whatever happens
/// (the test's panic is re-raised).
pub async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let database = TestDatabase::create().await;
    let outcome = tokio::spawn(test(database.url.clone())).await;
    database.drop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// A device of a group's member.
pub struct Member {
    /// The device's name (its profile directory).
    pub device: String,
    pub username: String,
    pub session: Arc<Session>,
    pub target: Target,
}

/// Registers `users`, logs in `devices` (device name, username), and lets the first device's
/// user create group `name` with every other user. Profiles go under `scratch`.
pub async fn group_chat(
    server_url: &str,
    scratch: &Path,
    name: &str,
    users: &[&str],
    devices: &[(&str, &str)],
) -> Vec<Member> {
    let server = Server::new(server_url, None).unwrap();
    let sessions = register_and_log_in(&server, scratch, users, devices).await;
    let sessions: Vec<_> = devices
        .iter()
        .zip(sessions)
        .map(|((device, username), session)| (device, username, session))
        .collect();
    let owner = sessions[0].1;
    let others: Vec<String> = users
        .iter()
        .filter(|user| *user != owner)
        .map(|user| (*user).to_owned())
        .collect();
    sessions[0].2.create_group(name, &others).await.unwrap();
    let mut members = Vec::new();
    for (device, username, session) in sessions {
        let target = session.resolve(&format!("#{name}")).await.unwrap();
        members.push(Member {
            device: (*device).to_owned(),
            username: (*username).to_owned(),
            session,
            target,
        });
    }
    members
}
