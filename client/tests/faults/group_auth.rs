//! Fault 5 for group: group's link to auth on a dead path (its open connections black-holed for
//! good, new ones reaching auth, as when auth's node vanishes) while bob revokes his second
//! device.
//!
//! Group checks every caller's token itself against auth's key set and revocation feed
//! (`token::RemoteValidator`), and trusts its revocation list only while the feed is heard
//! (`REVOCATION_MAX_STALENESS_SECS`, 10 s in the test cluster); past that it answers every call
//! UNAVAILABLE until the feed is back. So on a dead path group must leave the dead connection by
//! itself (the HTTP/2 keepalive of its channel to auth, 3 s + 3 s) and reopen the feed on a new
//! one before that, or it stops serving everyone. Asserted, with calls straight to group (past
//! the gateway, which checks tokens itself):
//! - alice's calls keep succeeding: any failure is UNAVAILABLE, and none in the last seconds;
//! - bob-2's token is refused UNAUTHENTICATED within [`REVOKED_REFUSED_WITHIN`] of the
//!   revocation, and never accepted after its first refusal.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use client::Session;
use proto::group::v1::{self as pb, group_service_client::GroupServiceClient};
use testkit::ChaosProxy;
use tonic::transport::Channel;

use crate::{accounts::register_and_log_in, clients::status_name, stack::Stack};

/// From the start of the fault to the revocation.
const LEAD: Duration = Duration::from_millis(500);
/// How long the calls go on after the revocation: past group's revocation staleness (10 s), so
/// that a group stuck on the dead connection refuses every call before the end.
const PROBING: Duration = Duration::from_secs(20);
/// The end of the probing in which every call must succeed.
const SETTLED: Duration = Duration::from_secs(5);
/// How soon group must refuse the revoked device: the keepalive notices the dead connection
/// within 6 s, the rest is margin for a loaded machine.
const REVOKED_REFUSED_WITHIN: Duration = Duration::from_secs(15);
const CALL_INTERVAL: Duration = Duration::from_millis(250);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_revoked_on_a_dead_path_from_group_to_auth_is_refused_and_group_keeps_serving() {
    let stack = Stack::start_services().await;
    let proxy = &stack.proxies.group_to_auth;
    // Group's connections to auth run through a detour that will die; kept to the end
    // (dropping it would reset them).
    let detour = ChaosProxy::start(vec![stack.cluster.auth]);
    proxy.set_targets(vec![detour.addr]);
    proxy.cut();

    let server = client::Server::new(&stack.cluster.server(), None).unwrap();
    let sessions = register_and_log_in(
        &server,
        stack.scratch_path(),
        &["alice", "bob"],
        &[("alice", "alice"), ("bob", "bob"), ("bob-2", "bob")],
    )
    .await;
    let [alice, bob, bob_2] = <[Arc<Session>; 3]>::try_from(sessions).unwrap();
    alice
        .create_group("faults", &["bob".to_owned()])
        .await
        .unwrap();
    let group = GroupServiceClient::new(
        Channel::from_shared(format!("http://{}", stack.cluster.group))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let alice_token = alice.access_token_for_tests().await.unwrap();
    let bob_2_token = bob_2.access_token_for_tests().await.unwrap();
    for token in [&alice_token, &bob_2_token] {
        assert_eq!(list_my_groups(&group, token).await, "OK");
    }
    assert!(
        detour.open_connections() > 0,
        "group reaches auth through the detour"
    );

    detour.stall(true);
    proxy.set_targets(vec![stack.cluster.auth]);
    tokio::time::sleep(LEAD).await;
    let revoked = Instant::now();
    bob.revoke_device(&bob_2.account().device_id).await.unwrap();

    let mut alices = Vec::new();
    let mut bob_2s = Vec::new();
    while revoked.elapsed() < PROBING {
        let (alice_call, bob_2_call) = tokio::join!(
            list_my_groups(&group, &alice_token),
            list_my_groups(&group, &bob_2_token),
        );
        alices.push((revoked.elapsed(), alice_call));
        bob_2s.push((revoked.elapsed(), bob_2_call));
        tokio::time::sleep(CALL_INTERVAL).await;
    }
    drop(detour);

    let failed: Vec<_> = alices.iter().filter(|(_, status)| status != "OK").collect();
    println!(
        "group to auth on a dead path, bob-2 revoked: alice's calls {} ({} failed: {failed:?}); \
         bob-2 first refused {:?} after the revocation",
        alices.len(),
        failed.len(),
        bob_2s
            .iter()
            .find(|(_, status)| status == "UNAUTHENTICATED")
            .map(|(at, _)| at),
    );
    assert!(
        failed.iter().all(|(_, status)| status == "UNAVAILABLE"),
        "alice's calls failed otherwise than UNAVAILABLE: {failed:?}"
    );
    assert!(
        failed.iter().all(|(at, _)| *at < PROBING - SETTLED),
        "group did not recover from the dead path: {failed:?}"
    );
    let first_refusal = bob_2s
        .iter()
        .position(|(_, status)| status == "UNAUTHENTICATED")
        .unwrap_or_else(|| panic!("group never refused the revoked device: {bob_2s:?}"));
    assert!(
        bob_2s[first_refusal].0 <= REVOKED_REFUSED_WITHIN,
        "the revoked device was refused too late: {bob_2s:?}"
    );
    assert!(
        bob_2s[first_refusal..]
            .iter()
            .all(|(_, status)| status != "OK"),
        "the revoked device was accepted after a refusal: {bob_2s:?}"
    );
}

/// `ListMyGroups` straight to group as the holder of `token`: the status's name.
async fn list_my_groups(group: &GroupServiceClient<Channel>, token: &str) -> String {
    let mut request = tonic::Request::new(pb::ListMyGroupsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.set_timeout(CALL_TIMEOUT);
    match tokio::time::timeout(CALL_TIMEOUT, group.clone().list_my_groups(request)).await {
        Ok(Ok(_)) => "OK".to_owned(),
        Ok(Err(status)) => status_name(status.code()),
        Err(_) => "TIMED OUT".to_owned(),
    }
}
