//! Keys from a source: rotation, removal, refetch on unknown `kid`s (rate-limited), failures.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use token::{Jwk, KeyError, KeyRefresh, KeySourceError, TokenError, Validator};

use crate::helpers::{
    CountingSource, REFRESH, TestKey, claims, payload, refreshing_validator, settings,
};

#[tokio::test]
async fn after_rotation_tokens_of_the_old_and_the_new_key_validate() {
    let (old, new) = (TestKey::generate(), TestKey::generate());
    let source = CountingSource::new(vec![old.jwk()]);
    let validator = refreshing_validator(&source).await;
    source.publish(vec![new.jwk(), old.jwk()]);

    let by_new = validator.validate(&new.key.sign(&claims())).await;
    let by_old = validator.validate(&old.key.sign(&claims())).await;

    assert!(by_new.is_ok(), "{by_new:?}");
    assert!(by_old.is_ok(), "{by_old:?}");
    assert_eq!(
        source.fetches(),
        2,
        "one start, one refetch for the new kid"
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_of_a_key_removed_from_the_set_is_refused_after_the_periodic_refresh() {
    let (old, new) = (TestKey::generate(), TestKey::generate());
    let source = CountingSource::new(vec![new.jwk(), old.jwk()]);
    let validator = refreshing_validator(&source).await;
    let by_old = old.key.sign(&claims());
    assert!(validator.validate(&by_old).await.is_ok());

    source.publish(vec![new.jwk()]);
    tokio::time::sleep(REFRESH.interval + Duration::from_secs(1)).await;

    assert_eq!(source.fetches(), 2, "one start, one periodic refresh");
    assert_eq!(
        validator.validate(&by_old).await,
        Err(TokenError::UnknownKey)
    );
    assert!(validator.validate(&new.key.sign(&claims())).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_validations_of_an_unknown_kid_refetch_once_per_window() {
    let (known, stranger) = (TestKey::generate(), TestKey::generate());
    let source = CountingSource::new(vec![known.jwk()]);
    let validator = refreshing_validator(&source).await;
    source.slow_down(Duration::from_secs(1));
    let by_stranger = stranger.key.sign(&claims());

    let mut validations = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (validator, token) = (Arc::clone(&validator), by_stranger.clone());
        validations.spawn(async move { validator.validate(&token).await });
    }
    let results = validations.join_all().await;

    assert!(
        results
            .iter()
            .all(|result| *result == Err(TokenError::UnknownKey))
    );
    assert_eq!(
        source.fetches(),
        2,
        "one start, one refetch for fifty validations"
    );

    assert_eq!(
        validator.validate(&by_stranger).await,
        Err(TokenError::UnknownKey)
    );
    assert_eq!(source.fetches(), 2, "no refetch within the window");

    tokio::time::advance(REFRESH.min_refetch_interval).await;
    assert_eq!(
        validator.validate(&by_stranger).await,
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        source.fetches(),
        3,
        "one refetch once the window has passed"
    );
}

#[tokio::test]
async fn a_kid_that_cannot_be_a_thumbprint_causes_no_refetch() {
    let key = TestKey::generate();
    let source = CountingSource::new(vec![key.jwk()]);
    let validator = refreshing_validator(&source).await;
    let token = key.sign_raw(
        &json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "../../etc/passwd" }),
        &payload(json!({})),
    );

    let err = validator.validate(&token).await.unwrap_err();

    assert_eq!(err, TokenError::UnknownKey);
    assert_eq!(source.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_keeps_the_current_keys() {
    let key = TestKey::generate();
    let source = CountingSource::new(vec![key.jwk()]);
    let validator = refreshing_validator(&source).await;

    source.fail();
    tokio::time::sleep(REFRESH.interval + Duration::from_secs(1)).await;

    assert_eq!(source.fetches(), 2);
    assert!(validator.validate(&key.key.sign(&claims())).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_invalid_key_set_from_the_source_keeps_the_current_keys() {
    let key = TestKey::generate();
    let source = CountingSource::new(vec![key.jwk()]);
    let validator = refreshing_validator(&source).await;

    source.publish(vec![Jwk {
        kid: "key-2".to_owned(),
        ..TestKey::generate().jwk()
    }]);
    tokio::time::sleep(REFRESH.interval + Duration::from_secs(1)).await;

    assert_eq!(source.fetches(), 2);
    assert!(validator.validate(&key.key.sign(&claims())).await.is_ok());
}

#[tokio::test]
async fn a_validator_does_not_start_without_valid_keys() {
    let down = CountingSource::new(vec![TestKey::generate().jwk()]);
    down.fail();
    let empty = CountingSource::new(vec![]);

    let from_down = Validator::with_key_source(settings(), down)
        .await
        .unwrap_err();
    let from_empty = Validator::with_key_source(settings(), empty)
        .await
        .unwrap_err();

    assert!(
        matches!(from_down, KeySourceError::Other(_)),
        "{from_down:?}"
    );
    assert!(
        matches!(
            from_empty,
            KeySourceError::InvalidKeySet(KeyError::EmptyKeySet)
        ),
        "{from_empty:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_source_that_does_not_answer_in_time_is_a_timeout() {
    let source = CountingSource::new(vec![TestKey::generate().jwk()]);
    source.slow_down(Duration::from_secs(60));
    let refresh = KeyRefresh {
        fetch_timeout: Duration::from_secs(5),
        ..KeyRefresh::default()
    };

    let err = Validator::with_key_source_and_refresh(settings(), source, refresh)
        .await
        .unwrap_err();

    assert!(matches!(err, KeySourceError::Timeout), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_validator_stops_refreshing() {
    let source = CountingSource::new(vec![TestKey::generate().jwk()]);
    let validator = refreshing_validator(&source).await;

    drop(validator);
    tokio::time::sleep(REFRESH.interval * 5).await;

    assert_eq!(source.fetches(), 1);
}
