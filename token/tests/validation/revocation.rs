//! A remote validator follows a revocation feed: it refuses revoked sessions and devices (cached
//! tokens too), resumes after the last event id when the feed reconnects, and fails closed
//! (UNAVAILABLE) when the feed has been silent for longer than its maximum staleness.

use std::sync::Arc;
use std::time::Duration;

use token::{AccessClaims, RemoteValidator, Revoked, Subject};
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::helpers::{
    ScriptedFeed, TestKey, claims, eventually, heartbeat, remote_validator, revocation,
};

const STALENESS: Duration = Duration::from_secs(60);

fn with_token(token: &str) -> Request<()> {
    testkit::with_token((), token)
}

async fn code_of(validator: &RemoteValidator, token: &str) -> Option<Code> {
    validator
        .authenticate(&with_token(token))
        .await
        .err()
        .map(|status| status.code())
}

fn claims_for(subject: Subject) -> AccessClaims {
    AccessClaims {
        user_id: subject.user_id,
        device_id: subject.device_id,
        session_id: subject.session_id,
        ..claims()
    }
}

#[tokio::test]
async fn tokens_are_unavailable_until_the_feed_catches_up_then_accepted() {
    let (key, feed) = (TestKey::generate(), Arc::new(ScriptedFeed::default()));
    let connection = feed.connect();
    let validator = remote_validator(&key, &feed, STALENESS);
    let token = key.key.sign(&claims());
    eventually("the keys arrive", async || validator.get().is_some()).await;

    assert_eq!(code_of(&validator, &token).await, Some(Code::Unavailable));
    assert!(!validator.is_ready());

    connection.send(heartbeat(0)).unwrap();
    eventually("the token is accepted", async || {
        code_of(&validator, &token).await.is_none()
    })
    .await;
    assert!(validator.is_ready());
}

#[tokio::test]
async fn a_revoked_session_or_device_is_refused_even_when_its_token_was_remembered_and_others_are_not()
 {
    let (key, feed) = (TestKey::generate(), Arc::new(ScriptedFeed::default()));
    let connection = feed.connect();
    let validator = remote_validator(&key, &feed, STALENESS);
    connection.send(heartbeat(0)).unwrap();
    let (logged_out, revoked_device, other) = (claims(), claims(), claims());
    let other_session_of_the_same_device = claims_for(Subject {
        session_id: Uuid::new_v4(),
        ..logged_out.subject()
    });
    let tokens = [
        &logged_out,
        &revoked_device,
        &other,
        &other_session_of_the_same_device,
    ]
    .map(|claims| key.key.sign(claims));
    eventually("every token is accepted", async || {
        for token in &tokens {
            if code_of(&validator, token).await.is_some() {
                return false;
            }
        }
        true
    })
    .await;

    connection
        .send(revocation(7, Revoked::Session(logged_out.session_id)))
        .unwrap();
    connection
        .send(revocation(8, Revoked::Device(revoked_device.device_id)))
        .unwrap();
    eventually("both are refused", async || {
        code_of(&validator, &tokens[0]).await == Some(Code::Unauthenticated)
            && code_of(&validator, &tokens[1]).await == Some(Code::Unauthenticated)
    })
    .await;

    let refused = validator
        .authenticate(&with_token(&tokens[0]))
        .await
        .unwrap_err();
    assert_eq!(refused.message(), "access token revoked; sign in again");
    assert_eq!(code_of(&validator, &tokens[2]).await, None);
    assert_eq!(code_of(&validator, &tokens[3]).await, None);
}

#[tokio::test]
async fn the_feed_resumes_after_the_last_event_id_and_restarts_from_zero_after_out_of_range() {
    let (key, feed) = (TestKey::generate(), Arc::new(ScriptedFeed::default()));
    let first = feed.connect();
    let validator = remote_validator(&key, &feed, STALENESS);
    let revoked = claims();
    let token = key.key.sign(&revoked);
    first.send(heartbeat(41)).unwrap();
    first
        .send(revocation(42, Revoked::Session(Uuid::new_v4())))
        .unwrap();
    first
        .send(Err(Status::unavailable("auth is restarting")))
        .unwrap();
    feed.refuse(Status::out_of_range("pruned"));
    let after_restart = feed.connect();

    after_restart
        .send(revocation(3, Revoked::Session(revoked.session_id)))
        .unwrap();
    after_restart.send(heartbeat(3)).unwrap();

    eventually(
        "the revocation from the new connection applies",
        async || code_of(&validator, &token).await == Some(Code::Unauthenticated),
    )
    .await;
    assert_eq!(feed.cursors(), [0, 42, 0]);
}

#[tokio::test]
async fn a_silent_feed_makes_every_token_unavailable_until_it_is_back() {
    let (key, feed) = (TestKey::generate(), Arc::new(ScriptedFeed::default()));
    let connection = feed.connect();
    let validator = remote_validator(&key, &feed, Duration::from_millis(300));
    let token = key.key.sign(&claims());
    connection.send(heartbeat(0)).unwrap();
    eventually("the token is accepted", async || {
        code_of(&validator, &token).await.is_none()
    })
    .await;

    // No heartbeat any more: the list goes stale.
    eventually("the token is unavailable", async || {
        code_of(&validator, &token).await == Some(Code::Unavailable)
    })
    .await;
    let status = validator
        .authenticate(&with_token(&token))
        .await
        .unwrap_err();
    assert_eq!(
        status.message(),
        "cannot check access token revocations right now; retry shortly"
    );

    connection.send(heartbeat(0)).unwrap();
    eventually("the token is accepted again", async || {
        code_of(&validator, &token).await.is_none()
    })
    .await;
}
