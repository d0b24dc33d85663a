//! Reading the token from `authorization: Bearer <token>` metadata.

use token::TokenError;
use tonic::Request;
use tonic::metadata::MetadataValue;

use crate::helpers::{TestKey, claims, static_validator};

fn request_with(authorizations: &[&str]) -> Request<()> {
    let mut request = Request::new(());
    for value in authorizations {
        request
            .metadata_mut()
            .append("authorization", MetadataValue::try_from(*value).unwrap());
    }
    request
}

#[tokio::test]
async fn a_bearer_token_in_metadata_is_authenticated() {
    let key = TestKey::generate();
    let claims = claims();
    let request = request_with(&[&format!("Bearer {}", key.key.sign(&claims))]);

    let authenticated = static_validator(&key).authenticate(&request).await.unwrap();

    assert_eq!(authenticated, claims);
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_without_regard_to_case() {
    let key = TestKey::generate();
    let request = request_with(&[&format!("bEaReR {}", key.key.sign(&claims()))]);

    let authenticated = static_validator(&key).authenticate(&request).await;

    assert!(authenticated.is_ok(), "{authenticated:?}");
}

#[tokio::test]
async fn a_request_without_authorization_metadata_is_missing_its_token() {
    let key = TestKey::generate();

    let err = static_validator(&key)
        .authenticate(&request_with(&[]))
        .await
        .unwrap_err();

    assert_eq!(err, TokenError::Missing);
}

#[tokio::test]
async fn empty_authorization_metadata_is_missing_its_token() {
    let key = TestKey::generate();
    for value in ["", "Bearer", "Bearer  "] {
        let err = static_validator(&key)
            .authenticate(&request_with(&[value]))
            .await
            .unwrap_err();

        assert_eq!(err, TokenError::Missing, "{value:?}");
    }
}

#[tokio::test]
async fn a_token_under_another_scheme_is_malformed() {
    let key = TestKey::generate();
    let token = key.key.sign(&claims());
    for value in [
        format!("Basic {token}"),
        format!("DPoP {token}"),
        token.clone(),
    ] {
        let err = static_validator(&key)
            .authenticate(&request_with(&[&value]))
            .await
            .unwrap_err();

        assert_eq!(err, TokenError::Malformed, "{value:.12}");
    }
}

#[tokio::test]
async fn two_authorization_values_are_malformed_even_if_both_are_good() {
    let key = TestKey::generate();
    let bearer = format!("Bearer {}", key.key.sign(&claims()));

    let err = static_validator(&key)
        .authenticate(&request_with(&[&bearer, &bearer]))
        .await
        .unwrap_err();

    assert_eq!(err, TokenError::Malformed);
}

#[tokio::test]
async fn a_refused_token_becomes_unauthenticated_without_echoing_the_token() {
    let key = TestKey::generate();
    let other = TestKey::generate();
    let token = other.key.sign(&claims());

    let err = static_validator(&key)
        .authenticate(&request_with(&[&format!("Bearer {token}")]))
        .await
        .unwrap_err();
    let status = tonic::Status::from(err);

    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "access token signed by an unknown key");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!format!("{status:?}").contains(signature));
}

#[tokio::test]
async fn before_the_keys_arrive_a_call_without_a_token_is_unauthenticated_and_one_with_a_token_unavailable()
 {
    // Nothing listens on port 1: the key set never arrives during this test.
    let remote = token::RemoteValidator::start_with_auth(
        "http://127.0.0.1:1",
        token::ValidationSettings::new("chat-auth", "chat"),
        token::DEFAULT_MAX_STALENESS,
        std::sync::Arc::new(|request| request),
    )
    .unwrap();
    let mut with_token = tonic::Request::new(());
    with_token
        .metadata_mut()
        .insert("authorization", "Bearer a.b.c".parse().unwrap());

    let without = remote
        .authenticate(&tonic::Request::new(()))
        .await
        .unwrap_err();
    let with = remote.authenticate(&with_token).await.unwrap_err();

    assert_eq!(without.code(), tonic::Code::Unauthenticated);
    assert_eq!(with.code(), tonic::Code::Unavailable);
}
