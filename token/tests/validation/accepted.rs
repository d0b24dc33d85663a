//! Good tokens are accepted, with static keys and with keys from a source.

use serde_json::json;
use token::{KeySet, ValidationSettings, Validator};

use crate::helpers::{
    AUDIENCE, CountingSource, ISSUER, TestKey, claims, now, payload, refreshing_validator,
    static_validator,
};

#[tokio::test]
async fn a_good_token_round_trips_to_the_same_claims() {
    let key = TestKey::generate();
    let claims = claims();
    let token = key.key.sign(&claims);

    let validated = static_validator(&key).validate(&token).await.unwrap();

    assert_eq!(validated, claims);
}

#[tokio::test]
async fn a_good_token_is_accepted_by_a_validator_fed_by_a_key_source() {
    let key = TestKey::generate();
    let source = CountingSource::new(vec![key.jwk()]);
    let validator = refreshing_validator(&source).await;
    let claims = claims();

    let validated = validator.validate(&key.key.sign(&claims)).await.unwrap();

    assert_eq!(validated, claims);
    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_accepted() {
    let key = TestKey::generate();
    let token = key.sign_raw(
        &key.header(),
        &payload(json!({ "iat": now() - 910, "nbf": now() - 910, "exp": now() - 10 })),
    );

    let validated = static_validator(&key).validate(&token).await;

    assert!(validated.is_ok(), "{validated:?}");
}

#[tokio::test]
async fn a_token_valid_soon_within_the_leeway_is_accepted() {
    let key = TestKey::generate();
    let token = key.sign_raw(
        &key.header(),
        &payload(json!({ "iat": now() + 10, "nbf": now() + 10 })),
    );

    let validated = static_validator(&key).validate(&token).await;

    assert!(validated.is_ok(), "{validated:?}");
}

#[tokio::test]
async fn the_leeway_is_configurable() {
    let key = TestKey::generate();
    let settings = ValidationSettings {
        leeway: std::time::Duration::ZERO,
        ..ValidationSettings::new(ISSUER, AUDIENCE)
    };
    let validator = Validator::with_static_keys(settings, KeySet::from_signing_keys(&[&key.key]));
    let token = key.sign_raw(&key.header(), &payload(json!({ "exp": now() - 10 })));

    let err = validator.validate(&token).await.unwrap_err();

    assert_eq!(err, token::TokenError::Expired);
}

#[tokio::test]
async fn the_application_media_type_of_access_tokens_is_accepted_too() {
    let key = TestKey::generate();
    let header = json!({ "alg": "EdDSA", "typ": "application/at+jwt", "kid": key.kid() });
    let token = key.sign_raw(&header, &payload(json!({})));

    let validated = static_validator(&key).validate(&token).await;

    assert!(validated.is_ok(), "{validated:?}");
}

#[tokio::test]
async fn auth_validates_tokens_of_each_of_its_keys() {
    let (old, new) = (TestKey::generate(), TestKey::generate());
    let validator = Validator::with_static_keys(
        ValidationSettings::new(ISSUER, AUDIENCE),
        KeySet::from_signing_keys(&[&new.key, &old.key]),
    );

    for key in [&old, &new] {
        assert!(validator.validate(&key.key.sign(&claims())).await.is_ok());
    }
    assert_eq!(
        validator.key_set().kids().collect::<Vec<_>>(),
        [new.kid(), old.kid()]
    );
}

#[tokio::test]
async fn a_token_living_the_maximum_plus_the_leeway_is_accepted() {
    let key = TestKey::generate();
    let lifetime =
        token::MAX_ACCESS_TOKEN_LIFETIME.as_secs() as i64 + token::DEFAULT_LEEWAY.as_secs() as i64;
    let token = key.sign_raw(
        &key.header(),
        &payload(json!({ "iat": now(), "nbf": now(), "exp": now() + lifetime })),
    );

    let validated = static_validator(&key).validate(&token).await;

    assert!(validated.is_ok(), "{validated:?}");
}

#[tokio::test]
async fn the_maximum_lifetime_is_configurable() {
    let key = TestKey::generate();
    let settings = ValidationSettings {
        max_lifetime: std::time::Duration::from_secs(60),
        ..ValidationSettings::new(ISSUER, AUDIENCE)
    };
    let validator = Validator::with_static_keys(settings, KeySet::from_signing_keys(&[&key.key]));

    let err = validator
        .validate(&key.key.sign(&claims()))
        .await
        .unwrap_err();

    assert_eq!(err, token::TokenError::LifetimeTooLong);
}
