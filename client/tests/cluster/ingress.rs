//! Fault 9 of issue #20: the Ingress in front. An `OpenStream` is one HTTP/2 request whose body
//! is every message the client sends on it, so a request body limit at the Ingress
//! (`proxy-body-size: 5m`, as the chart had) cut a long-lived stream after 5 MiB of sends in
//! total. Here one stream carries more than that through nginx configured as the chart's
//! annotations configure ingress-nginx (`testkit::nginx`), and must stay open: every send
//! acknowledged on it and shown once to every device.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    clients::LiveDevice,
    cluster::{Cluster, Deadline},
    ledger::{Followed, Ledger},
    scratch,
    setup::{group_chat, with_database},
};

/// What the stream must carry: above the old limit of 5 MiB.
const MORE_THAN_THE_OLD_LIMIT: usize = 5 * 1024 * 1024 + 512 * 1024;
/// A text that pads to the largest ciphertext chat accepts (64 KiB, `CHAT_MAX_CIPHERTEXT_BYTES`;
/// texts pad to a power of two).
const TEXT_BYTES: usize = 40 * 1024;
/// Well under the gateway's per-user send rate (20/s).
const SEND_INTERVAL: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_open_stream_carries_more_than_five_mib_of_sends_through_the_ingress() {
    with_database(more_than_five_mib_on_one_stream).await;
}

async fn more_than_five_mib_on_one_stream(database_url: String) {
    let scratch = scratch();
    let cluster = Cluster::start(scratch.path(), &database_url).await;
    let members = group_chat(
        &cluster.server(),
        scratch.path(),
        "ingress",
        &["alice", "bob"],
        &[("alice", "alice"), ("bob", "bob")],
    )
    .await;
    let ledger = Arc::new(Ledger::default());
    let [alice, bob] = &members[..] else {
        unreachable!("two members")
    };
    let sender = LiveDevice::open(
        "alice",
        &alice.session,
        alice.target.clone(),
        ledger.clone(),
    );
    let receiver = LiveDevice::open("bob", &bob.session, bob.target.clone(), ledger.clone());
    let conversation_id = alice.target.conversation_id.clone();
    let deadline = Deadline::after(Duration::from_secs(15), "both streams to catch up");
    while ["alice", "bob"]
        .iter()
        .any(|device| ledger.device_log(device).caught_up == 0)
    {
        deadline.tick().await;
    }

    let n_sends = MORE_THAN_THE_OLD_LIMIT.div_ceil(64 * 1024) + 4;
    let mut interval = tokio::time::interval(SEND_INTERVAL);
    for n in 0..n_sends {
        interval.tick().await;
        // Unique texts, so that a message shown twice would be seen.
        let text = format!("alice {n} {}", "x".repeat(TEXT_BYTES));
        sender.send(text).await;
    }
    let sent = Instant::now();
    let deadline = Deadline::after(Duration::from_secs(60), "every send to be shown");
    let shown = |device: &str| ledger.last_shown(device, &conversation_id);
    while ledger.n_acknowledged() < n_sends
        || shown("alice") < n_sends as u64
        || shown("bob") < n_sends as u64
    {
        if deadline.expired() {
            panic!(
                "{} of {n_sends} acknowledged; alice showed {}, bob {}; alice's stream {:?}",
                ledger.n_acknowledged(),
                shown("alice"),
                shown("bob"),
                ledger.device_log("alice"),
            );
        }
        deadline.tick().await;
    }

    let audit = ledger
        .audit(
            "ingress, one stream > 5 MiB",
            &database_url,
            &[Followed {
                conversation_id: conversation_id.clone(),
                followers: vec!["alice".to_owned(), "bob".to_owned()],
            }],
            sent,
        )
        .await;
    let carried = ciphertext_bytes(&database_url, &conversation_id).await;
    eprintln!("{carried} bytes of ciphertext");
    audit.assert_clean();
    assert!(
        carried > MORE_THAN_THE_OLD_LIMIT as i64,
        "the stream carried only {carried} bytes of ciphertext"
    );
    assert_eq!(audit.stored, n_sends);
    let alices = ledger.device_log("alice");
    assert!(
        alices.connects == 1 && alices.disconnects.is_empty(),
        "alice's stream was cut: {:?}",
        alices.disconnects
    );
    drop((sender, receiver, members));
    cluster.stop().await;
}

/// The ciphertext stored in the conversation, in bytes: a lower bound of what the sends carried.
async fn ciphertext_bytes(database_url: &str, conversation_id: &str) -> i64 {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    let conversation_id: uuid::Uuid = conversation_id.parse().unwrap();
    sqlx::query_scalar(
        "select coalesce(sum(octet_length(ciphertext)), 0)::bigint from chat.messages \
         where conversation_id = $1",
    )
    .bind(conversation_id)
    .fetch_one(&mut db)
    .await
    .unwrap()
}
