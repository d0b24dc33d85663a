use std::{sync::Arc, time::SystemTime};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use proto::auth::v1 as pb;
use serde_json::Value;
use sqlx::PgPool;
use tonic::{Code, Request};

use crate::helpers::{assert_code, reason, spawn_app, tokens};

fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_access_token_is_an_eddsa_jwt_with_every_required_claim_and_at_most_15_minutes(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    let login = app.signed_up("walter").await;
    let token = &tokens(&login).access_token;

    let header = decode_part(token, 0);
    let claims = decode_part(token, 1);

    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    let jwks = app
        .client
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(header["kid"], jwks.keys[0].kid.as_str());
    assert_eq!(claims["iss"], "chat-auth");
    assert_eq!(claims["aud"], "chat");
    assert_eq!(claims["sub"], login.user.as_ref().unwrap().user_id.as_str());
    assert_eq!(
        claims["did"],
        login.device.as_ref().unwrap().device_id.as_str()
    );
    for claim in ["sid", "jti", "iat", "nbf", "exp"] {
        assert!(!claims[claim].is_null(), "{claim} missing");
    }
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime > 0 && lifetime <= 900, "{lifetime}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_validator_fed_by_auths_key_set_accepts_auths_tokens(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("xena").await;
    let source = Arc::new(token::AuthServiceKeySource::new(app.channel.clone()));
    let validator = token::Validator::with_key_source(
        token::ValidationSettings::new("chat-auth", "chat"),
        source,
    )
    .await
    .unwrap();

    let claims = validator
        .validate(&tokens(&login).access_token)
        .await
        .unwrap();

    assert_eq!(claims.user_id.to_string(), login.user.unwrap().user_id);
    assert_eq!(
        claims.device_id.to_string(),
        login.device.unwrap().device_id
    );
    assert!(claims.expires_at > claims.issued_at);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_call_without_a_token_is_unauthenticated_with_a_reason(db: PgPool) {
    let app = spawn_app(db).await;

    let result = app
        .client
        .clone()
        .get_current_user(pb::GetCurrentUserRequest {})
        .await;

    let status = assert_code(result, Code::Unauthenticated);
    assert_eq!(reason(&status), "ACCESS_TOKEN_INVALID");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_refresh_token_is_not_an_access_token(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("yusuf").await;

    let result = app.current_user(&tokens(&login).refresh_token).await;

    assert_code(result, Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_token_signed_by_a_foreign_key_is_refused(db: PgPool) {
    let app = spawn_app(db).await;
    let login = app.signed_up("zoe").await;
    let claims = decode_part(&tokens(&login).access_token, 1);
    let subject = token::Subject {
        user_id: claims["sub"].as_str().unwrap().parse().unwrap(),
        device_id: claims["did"].as_str().unwrap().parse().unwrap(),
        session_id: claims["sid"].as_str().unwrap().parse().unwrap(),
    };
    let forged = token::SigningKey::generate().sign(&token::AccessClaims::new(
        "chat-auth",
        "chat",
        subject,
        SystemTime::now(),
        std::time::Duration::from_secs(600),
    ));

    let result = app.current_user(&forged).await;

    assert_code(result, Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tampered_payload_is_refused(db: PgPool) {
    let app = spawn_app(db).await;
    let victim = app.signed_up("amy").await;
    let attacker = app.signed_up("bert").await;
    let attacker_token = tokens(&attacker).access_token.clone();
    let mut claims = decode_part(&attacker_token, 1);
    claims["sub"] = victim.user.unwrap().user_id.into();
    let parts: Vec<&str> = attacker_token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );

    let result = app.current_user(&tampered).await;

    assert_code(result, Code::Unauthenticated);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_key_set_needs_no_token(db: PgPool) {
    let app = spawn_app(db).await;

    let jwks = app
        .client
        .clone()
        .get_jwks(Request::new(pb::GetJwksRequest {}))
        .await
        .unwrap();

    let keys = jwks.into_inner().keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (
            keys[0].kty.as_str(),
            keys[0].crv.as_str(),
            keys[0].alg.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA")
    );
}
