//! The browser web demo (`web-demo/`) against the real system: its e2ee implementation against
//! the `e2ee` crate's vectors (in Node), and scenarios in real Chromium (playwright-core driving
//! `/usr/bin/chromium`, no browser download) through the real gateway serving the built app, with
//! CLI users from this crate's library in the same conversations.
//!
//! Needs `node`, `web-demo/node_modules` (`ci/install-tools.sh` runs `npm ci` there) and
//! `/usr/bin/chromium` (`apt-get install -y chromium`, also in `ci/install-tools.sh`).
//! Screenshots go to `target/web-demo/screenshots/`.

#[path = "../common/attacks.rs"]
mod attacks;
mod binary;
#[path = "../common/dishonest.rs"]
mod dishonest;
mod node;
#[allow(dead_code)] // Shared with the fault suite, which also crashes it.
#[path = "../faults/postgres.rs"]
mod postgres;
#[path = "../common/rewriting_proxy.rs"]
mod rewriting_proxy;
mod stack;

use std::process::Command;

use sqlx::PgPool;

use crate::{node::run_scenario, stack::Stack};

#[test]
fn the_browser_e2ee_code_passes_the_rust_crates_vectors_in_node() {
    node::run_node_test("e2ee-vectors.test");
}

#[test]
fn the_pages_trust_decisions_follow_the_clis_rules_in_node() {
    node::run_node_test("trust.test");
}

/// The page says what the CLI says about messages it cannot read (`src/unreadable.ts` against
/// the cases of `client/src/unreadable.rs`).
#[test]
fn the_pages_explanations_of_unreadable_messages_are_the_clis_in_node() {
    node::run_node_test("unreadable.test");
}

/// Which messages the page forwards, and a key forwarded on by a device that was forwarded it
/// (`src/forwarding.ts`), refused unless every check of opening passes.
#[test]
fn the_pages_key_forwarding_passes_on_forwarded_keys_only_after_checking_them_in_node() {
    node::run_node_test("forwarding.test");
}

#[test]
fn the_web_demo_typechecks() {
    let output = Command::new(node::web_demo().join("node_modules/.bin/tsc"))
        .current_dir(node::web_demo())
        .arg("--noEmit")
        .output()
        .expect("tsc runs (npm ci --prefix web-demo)");

    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn stack(db: PgPool, name: &str) -> Stack {
    let web_root = node::out_dir(name);
    node::build_app(&web_root);
    Stack::spawn(db, &web_root).await
}

/// The page's e2ee code (strict Ed25519, the checks of recipients' RSA keys, the V1 and V2
/// negative cases, honest envelopes) against the crate's vectors, in real Chromium's WebCrypto.
#[sqlx::test(migrations = "../migrations")]
async fn the_pages_e2ee_code_passes_the_rust_crates_vectors_in_chromium(db: PgPool) {
    let mut stack = stack(db, "vectors").await;

    run_scenario(&mut stack, "vectors").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn two_browsers_register_and_chat_in_real_time(db: PgPool) {
    let mut stack = stack(db, "direct").await;

    run_scenario(&mut stack, "direct").await;
}

/// Every scenario runs under the gateway's Content-Security-Policy and fails on a violation; this
/// one shows that injected scripts do not run (see `policy` in tests/browser.ts).
#[sqlx::test(migrations = "../migrations")]
async fn injected_scripts_do_not_run_under_the_pages_content_security_policy(db: PgPool) {
    let mut stack = stack(db, "policy").await;

    run_scenario(&mut stack, "policy").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_browser_and_the_cli_exchange_direct_and_group_messages(db: PgPool) {
    let mut stack = stack(db, "cli").await;

    run_scenario(&mut stack, "cli").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reload_resumes_without_losing_or_duplicating_messages(db: PgPool) {
    let mut stack = stack(db, "reload").await;

    run_scenario(&mut stack, "reload").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_page_recovers_after_the_gateway_restarts(db: PgPool) {
    let mut stack = stack(db, "restart").await;

    run_scenario(&mut stack, "restart").await;
}

/// Messages written while chat is down are kept (IndexedDB), shown as pending, survive a reload,
/// and are delivered once each when chat is back, with no gap in the sender's chain; one refused
/// for good is shown failed, can be discarded, and leaves no gap either. A page reloaded while the
/// gateway is down seals for the devices and members it kept and queues; messages written while a
/// verified contact's new device waits to be accepted are held (after a reload too), one is
/// discarded, the other sent once the keys are accepted.
#[sqlx::test(migrations = "../migrations")]
async fn messages_written_while_chat_is_down_are_kept_and_delivered_once(db: PgPool) {
    let mut stack = stack(db, "outbox").await;

    run_scenario(&mut stack, "outbox").await;
}

/// Chat stores a message but its answer is lost: the page retries with the same envelope, which
/// chat answers with the stored message: one row, shown once, nothing flagged.
#[sqlx::test(migrations = "../migrations")]
async fn a_send_whose_answer_is_lost_is_retried_and_stored_once(db: PgPool) {
    let web_root = node::out_dir("lost-answer");
    node::build_app(&web_root);
    let mut stack = Stack::spawn_malicious(db, &web_root).await;

    run_scenario(&mut stack, "lostanswer").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn history_loads_page_by_page_when_scrolling_up(db: PgPool) {
    let mut stack = stack(db, "history").await;

    run_scenario(&mut stack, "history").await;
}

/// The list by the newest message (not by message count), with its time and a preview opened in
/// the page; a message that fails verification is a placeholder; an empty message is not sent.
#[sqlx::test(migrations = "../migrations")]
async fn the_list_is_in_order_of_recent_activity_with_times_and_verified_previews(db: PgPool) {
    let mut stack = stack(db, "recent").await;

    run_scenario(&mut stack, "recent").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn short_lived_tokens_are_refreshed_and_the_stream_resumes(db: PgPool) {
    let web_root = node::out_dir("tokens");
    node::build_app(&web_root);
    let mut stack = Stack::spawn_with(db, &web_root, |auth| {
        auth.tokens.access_token_ttl = std::time::Duration::from_secs(3);
    })
    .await;

    run_scenario(&mut stack, "tokens").await;
}

/// A malicious server (proxies rewriting auth's, group's and chat's answers) substitutes keys and
/// adds a ghost device and a ghost member: the page holds the message or shows each before sealing.
#[sqlx::test(migrations = "../migrations")]
async fn the_page_detects_substituted_keys_ghost_devices_and_ghost_members(db: PgPool) {
    let web_root = node::out_dir("attacks");
    node::build_app(&web_root);
    let mut stack = Stack::spawn_malicious(db, &web_root).await;

    run_scenario(&mut stack, "attacks").await;
}

/// A replay after a reload is flagged; a revoked device's later message and a message of another
/// conversation are refused.
#[sqlx::test(migrations = "../migrations")]
async fn the_page_flags_replays_after_a_reload_and_refuses_revoked_and_misplaced_messages(
    db: PgPool,
) {
    let web_root = node::out_dir("replays");
    node::build_app(&web_root);
    let mut stack = Stack::spawn_malicious(db, &web_root).await;

    run_scenario(&mut stack, "replays").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn logging_out_deletes_the_keys_unless_kept_and_keys_can_be_sealed_under_a_passphrase(
    db: PgPool,
) {
    let mut stack = stack(db, "keys").await;

    run_scenario(&mut stack, "keys").await;
}

/// A slow RSA decryption in the page does not hold back the next message's acknowledgement; a
/// dishonest device's messages are no longer decrypted once its failure budget is used up
/// (after a reload too), while another sender's still open.
#[sqlx::test(migrations = "../migrations")]
async fn the_page_acknowledges_before_rsa_work_and_stops_decrypting_a_failing_sender(db: PgPool) {
    let mut stack = stack(db, "decryption").await;

    run_scenario(&mut stack, "decryption").await;
}

/// One device in two tabs sending at once takes turns: the recipient flags nothing.
#[sqlx::test(migrations = "../migrations")]
async fn two_tabs_of_one_device_sending_at_once_raise_no_false_alarm(db: PgPool) {
    let mut stack = stack(db, "turns").await;

    run_scenario(&mut stack, "turns").await;
}

/// The members panel shows roles and offers only what the user's role allows; role changes,
/// rename, removal, leave and delete; two groups of one name told apart.
#[sqlx::test(migrations = "../migrations")]
async fn group_members_see_roles_and_are_offered_only_what_their_role_allows(db: PgPool) {
    let mut stack = stack(db, "groups").await;

    run_scenario(&mut stack, "groups").await;
}

/// Each panel's error in that panel, in the error colour, cleared by the next success; the
/// connection indicator says offline as soon as the network goes.
#[sqlx::test(migrations = "../migrations")]
async fn errors_show_in_their_panel_and_offline_shows_when_the_network_goes(db: PgPool) {
    let mut stack = stack(db, "errors").await;

    run_scenario(&mut stack, "errors").await;
}

/// The devices screen lists the user's devices, named after the browser, and revokes another.
#[sqlx::test(migrations = "../migrations")]
async fn the_devices_screen_lists_devices_named_after_the_browser_and_revokes_one(db: PgPool) {
    let mut stack = stack(db, "devices").await;

    run_scenario(&mut stack, "devices").await;
}

/// A new device opens a conversation whose earlier messages were not encrypted for it: the page
/// says how many and why, in the CLI's words, in their place (issue 22, section 1). A third device
/// gets them from the second, which was forwarded them (the first does not run); a new CLI device
/// reads keys the pages forwarded on.
#[sqlx::test(migrations = "../migrations")]
async fn a_new_device_explains_the_earlier_messages_it_cannot_read(db: PgPool) {
    let mut stack = stack(db, "newdevice").await;

    run_scenario(&mut stack, "newdevice").await;
}

/// No message typed is lost (issue 22, section 5): the page and the `chat` binary (`chat chat` fed
/// line by line, `chat send`) write while PostgreSQL restarts, then while the gateway restarts.
/// Meanwhile each shows what it wrote as pending, never as failed; afterwards every message is
/// delivered exactly once (the recipients' views and chat's rows). On a PostgreSQL of the test's
/// own (`../faults/postgres.rs`), which it stops and starts again, behind the services in process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_message_typed_in_the_page_or_the_cli_is_lost_across_restarts_of_postgresql_and_the_gateway()
 {
    let started = std::time::Instant::now();
    // Under the system's temporary directory, which the postgres user (when the test runs as
    // root) can reach, as in the fault suite.
    let scratch =
        std::env::temp_dir().join(format!("chat-web-demo-restarts-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch).unwrap();
    let postgres = postgres::Postgres::start(&scratch).await;
    // As the services open their pools (common::db::connect_lazy: a connection a restart broke
    // is found when used, and the call answers UNAVAILABLE), but a call waits 1 s rather than 5
    // for a connection while the server is down, so that the outage is seen sooner.
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(std::time::Duration::from_secs(1))
        .test_before_acquire(false)
        .connect(&postgres.url())
        .await
        .unwrap();
    sqlx::migrate!("../migrations").run(&db).await.unwrap();
    let web_root = node::out_dir("restarts");
    node::build_app(&web_root);
    let mut stack = Stack::spawn(db, &web_root).await;
    stack.postgres = Some(postgres);

    run_scenario(&mut stack, "restarts").await;

    eprintln!("the restarts test took {:?}", started.elapsed());
    drop(stack);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// History on a new device: a CLI user logs in on a fresh browser, which cannot read what came
/// before it; once the CLI device forwards their keys (`Session::forward_keys`), the browser shows
/// every earlier message, verified. And back: a browser user's new CLI device reads what came before
/// it once the browser (on its own, told by its stream that its user has a new device) forwarded it.
#[sqlx::test(migrations = "../migrations")]
async fn a_fresh_browser_of_a_cli_user_reads_earlier_messages_the_cli_forwarded(db: PgPool) {
    let mut stack = stack(db, "forwarding").await;

    run_scenario(&mut stack, "forwarding").await;
}
