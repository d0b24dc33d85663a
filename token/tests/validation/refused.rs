//! Hostile and broken tokens, each refused with the error naming the rule it breaks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use token::TokenError;

use crate::helpers::{AUDIENCE, ISSUER, TestKey, now, payload, signing_input, static_validator};

async fn refused_with(key: &TestKey, token: &str) -> TokenError {
    static_validator(key)
        .validate(token)
        .await
        .expect_err("the token was accepted")
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let key = TestKey::generate();
    let header = json!({ "alg": "none", "typ": "at+jwt", "kid": key.kid() });
    let unsigned = format!("{}.", signing_input(&header, &payload(json!({}))));

    let err = refused_with(&key, &unsigned).await;

    assert_eq!(err, TokenError::UnsupportedAlgorithm);
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_public_key_is_refused() {
    let key = TestKey::generate();
    let header = json!({ "alg": "HS256", "typ": "at+jwt", "kid": key.kid() });
    let signing_input = signing_input(&header, &payload(json!({})));
    let public_key_bytes = key.raw.verifying_key().to_bytes();
    // The classic confusion: the verifier's public key used as the HMAC secret, raw or as in the JWK.
    for secret in [&public_key_bytes[..], key.jwk().x.as_bytes()] {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signing_input.as_bytes());
        let forged = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );

        let err = refused_with(&key, &forged).await;

        assert_eq!(err, TokenError::UnsupportedAlgorithm);
    }
}

#[tokio::test]
async fn a_good_ed25519_signature_under_another_alg_is_refused() {
    let key = TestKey::generate();
    for alg in ["ES256", "Ed25519", "eddsa", "RS256"] {
        let header = json!({ "alg": alg, "typ": "at+jwt", "kid": key.kid() });
        let token = key.sign_raw(&header, &payload(json!({})));

        let err = refused_with(&key, &token).await;

        assert_eq!(err, TokenError::UnsupportedAlgorithm, "alg {alg}");
    }
}

#[tokio::test]
async fn a_token_expired_beyond_the_leeway_is_refused() {
    let key = TestKey::generate();
    let token = key.sign_raw(
        &key.header(),
        &payload(json!({ "iat": now() - 960, "nbf": now() - 960, "exp": now() - 60 })),
    );

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::Expired);
}

#[tokio::test]
async fn a_token_not_yet_valid_beyond_the_leeway_is_refused() {
    let key = TestKey::generate();
    let token = key.sign_raw(&key.header(), &payload(json!({ "nbf": now() + 120 })));

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::NotYetValid);
}

#[tokio::test]
async fn a_token_from_another_issuer_or_without_one_is_refused() {
    let key = TestKey::generate();
    let wrong = key.sign_raw(
        &key.header(),
        &payload(json!({ "iss": "https://evil.test" })),
    );
    let missing = key.sign_raw(&key.header(), &payload(json!({ "iss": null })));

    assert_eq!(refused_with(&key, &wrong).await, TokenError::WrongIssuer);
    assert_eq!(
        refused_with(&key, &missing).await,
        TokenError::MissingClaim("iss")
    );
}

#[tokio::test]
async fn a_token_for_another_audience_or_without_one_is_refused() {
    let key = TestKey::generate();
    let wrong = key.sign_raw(&key.header(), &payload(json!({ "aud": "billing-api" })));
    let missing = key.sign_raw(&key.header(), &payload(json!({ "aud": null })));
    let several = key.sign_raw(
        &key.header(),
        &payload(json!({ "aud": [AUDIENCE, "billing-api"] })),
    );

    assert_eq!(refused_with(&key, &wrong).await, TokenError::WrongAudience);
    assert_eq!(
        refused_with(&key, &missing).await,
        TokenError::MissingClaim("aud")
    );
    assert_eq!(
        refused_with(&key, &several).await,
        TokenError::InvalidClaim("aud")
    );
}

#[tokio::test]
async fn a_token_without_a_subject_or_with_a_non_uuid_one_is_refused() {
    let key = TestKey::generate();
    let missing = key.sign_raw(&key.header(), &payload(json!({ "sub": null })));
    let not_uuid = key.sign_raw(&key.header(), &payload(json!({ "sub": "alice" })));

    assert_eq!(
        refused_with(&key, &missing).await,
        TokenError::MissingClaim("sub")
    );
    assert_eq!(
        refused_with(&key, &not_uuid).await,
        TokenError::InvalidClaim("sub")
    );
}

#[tokio::test]
async fn a_token_without_device_session_or_token_id_is_refused() {
    let key = TestKey::generate();
    for claim in ["did", "sid", "jti", "iat", "exp", "nbf"] {
        let token = key.sign_raw(&key.header(), &payload(json!({ claim: null })));

        assert_eq!(
            refused_with(&key, &token).await,
            TokenError::MissingClaim(claim),
            "{claim}"
        );
    }
}

#[tokio::test]
async fn a_token_of_another_type_or_without_one_is_refused() {
    let key = TestKey::generate();
    let id_token = key.sign_raw(
        &json!({ "alg": "EdDSA", "typ": "JWT", "kid": key.kid() }),
        &payload(json!({})),
    );
    let untyped = key.sign_raw(
        &json!({ "alg": "EdDSA", "kid": key.kid() }),
        &payload(json!({})),
    );

    assert_eq!(refused_with(&key, &id_token).await, TokenError::WrongType);
    assert_eq!(refused_with(&key, &untyped).await, TokenError::WrongType);
}

#[tokio::test]
async fn a_string_typed_exp_is_refused() {
    let key = TestKey::generate();
    let token = key.sign_raw(&key.header(), &payload(json!({ "exp": "9999999999" })));

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::InvalidClaim("exp"));
}

#[tokio::test]
async fn string_or_fractional_times_are_refused() {
    let key = TestKey::generate();
    let string_nbf = key.sign_raw(&key.header(), &payload(json!({ "nbf": "0" })));
    let fractional_exp = key.sign_raw(
        &key.header(),
        &payload(json!({ "exp": (now() + 600) as f64 + 0.5 })),
    );
    let string_iat = key.sign_raw(&key.header(), &payload(json!({ "iat": now().to_string() })));

    assert_eq!(
        refused_with(&key, &string_nbf).await,
        TokenError::InvalidClaim("nbf")
    );
    assert_eq!(
        refused_with(&key, &fractional_exp).await,
        TokenError::InvalidClaim("exp")
    );
    assert_eq!(
        refused_with(&key, &string_iat).await,
        TokenError::InvalidClaim("iat")
    );
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let key = TestKey::generate();
    let genuine = key.sign_raw(&key.header(), &payload(json!({})));
    let [header, _, signature] = genuine.split('.').collect::<Vec<_>>()[..] else {
        unreachable!()
    };
    let escalated = payload(json!({ "sub": "00000000-0000-4000-8000-000000000001" }));
    let tampered = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&escalated).unwrap())
    );

    let err = refused_with(&key, &tampered).await;

    assert_eq!(err, TokenError::BadSignature);
}

#[tokio::test]
async fn a_signature_by_another_key_claiming_our_kid_is_refused() {
    let key = TestKey::generate();
    let impostor = TestKey::generate();
    let forged = impostor.sign_raw(&key.header(), &payload(json!({})));

    let err = refused_with(&key, &forged).await;

    assert_eq!(err, TokenError::BadSignature);
}

#[tokio::test]
async fn a_truncated_or_empty_signature_is_refused() {
    let key = TestKey::generate();
    let genuine = key.sign_raw(&key.header(), &payload(json!({})));
    let empty_signature = format!("{}.", genuine.rsplit_once('.').unwrap().0);

    let err = refused_with(&key, &empty_signature).await;

    assert_eq!(err, TokenError::BadSignature);
}

#[tokio::test]
async fn a_refresh_token_presented_as_an_access_token_is_refused() {
    let key = TestKey::generate();
    // What auth hands out as a refresh token: 32 random bytes, base64url.
    let refresh_token = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2));

    let err = refused_with(&key, &refresh_token).await;

    assert_eq!(err, TokenError::Malformed);
}

#[tokio::test]
async fn a_token_naming_no_key_is_refused() {
    let key = TestKey::generate();
    let token = key.sign_raw(
        &json!({ "alg": "EdDSA", "typ": "at+jwt" }),
        &payload(json!({})),
    );

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::MissingKeyId);
}

#[tokio::test]
async fn a_token_with_a_critical_extension_is_refused() {
    let key = TestKey::generate();
    let header =
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": key.kid(), "crit": ["exp"], "exp": 1 });
    let token = key.sign_raw(&header, &payload(json!({})));

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::Malformed);
}

#[tokio::test]
async fn a_payload_that_is_not_a_json_object_is_refused_after_its_signature_verifies() {
    let key = TestKey::generate();
    let token = key.sign_raw(&key.header(), &json!([ISSUER, AUDIENCE]));

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::Malformed);
}

#[tokio::test]
async fn the_signature_is_checked_before_any_claim() {
    let key = TestKey::generate();
    let impostor = TestKey::generate();
    let expired_and_forged = impostor.sign_raw(
        &key.header(),
        &payload(json!({ "iss": "https://evil.test", "exp": now() - 3600, "sub": "alice" })),
    );

    let err = refused_with(&key, &expired_and_forged).await;

    assert_eq!(err, TokenError::BadSignature);
}

const HUNDRED_YEARS: i64 = 100 * 365 * 24 * 3600;

#[tokio::test]
async fn a_correctly_signed_token_living_a_hundred_years_is_refused() {
    let key = TestKey::generate();
    let token = key.sign_raw(
        &key.header(),
        &payload(json!({ "iat": now(), "nbf": now(), "exp": now() + HUNDRED_YEARS })),
    );

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::LifetimeTooLong);
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_token_living_just_over_the_maximum_and_its_leeway_is_refused() {
    let key = TestKey::generate();
    let over = token::MAX_ACCESS_TOKEN_LIFETIME.as_secs() as i64
        + token::DEFAULT_LEEWAY.as_secs() as i64
        + 1;
    let token = key.sign_raw(
        &key.header(),
        &payload(json!({ "iat": now(), "nbf": now(), "exp": now() + over })),
    );

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::LifetimeTooLong);
}

#[tokio::test]
async fn a_short_lived_token_claiming_to_be_issued_in_the_future_is_refused() {
    // Otherwise `iat` far ahead with `exp` 15 minutes after it would live as long as it likes.
    let key = TestKey::generate();
    let issued = now() + HUNDRED_YEARS;
    let token = key.sign_raw(
        &key.header(),
        &payload(json!({ "iat": issued, "nbf": now(), "exp": issued + 900 })),
    );

    let err = refused_with(&key, &token).await;

    assert_eq!(err, TokenError::IssuedInTheFuture);
}
