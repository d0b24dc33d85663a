use common::config::SecretSource;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{assert_code, spawn_app_with, tokens};

fn config_with_keys(current: &token::SigningKey, previous: &[&token::SigningKey]) -> auth::Config {
    let mut config = auth::Config::for_tests();
    config.tokens.signing_key = SecretSource::Inline(current.to_pkcs8_pem().into());
    config.tokens.previous_signing_keys = (!previous.is_empty()).then(|| {
        let pems: Vec<String> = previous.iter().map(|key| key.to_pkcs8_pem()).collect();
        SecretSource::Inline(pems.join("\n").into())
    });
    config
}

#[sqlx::test(migrations = "../migrations")]
async fn after_a_rotation_the_new_key_signs_and_old_tokens_still_verify_until_the_key_is_dropped(
    db: PgPool,
) {
    let (old_key, new_key) = (token::SigningKey::generate(), token::SigningKey::generate());
    let before = spawn_app_with(db.clone(), config_with_keys(&old_key, &[])).await;
    let old_token = tokens(&before.signed_up("carl").await).access_token.clone();

    let during = spawn_app_with(db.clone(), config_with_keys(&new_key, &[&old_key])).await;
    let after = spawn_app_with(db, config_with_keys(&new_key, &[])).await;

    let jwks = during
        .client
        .clone()
        .get_jwks(proto::auth::v1::GetJwksRequest {})
        .await
        .unwrap();
    let kids: Vec<String> = jwks
        .into_inner()
        .keys
        .into_iter()
        .map(|key| key.kid)
        .collect();
    assert_eq!(kids, [new_key.kid(), old_key.kid()]);
    during.current_user(&old_token).await.unwrap();
    let new_token = tokens(
        &during
            .login("carl", crate::helpers::PASSWORD)
            .await
            .unwrap(),
    )
    .access_token
    .clone();
    assert_eq!(kid_of(&new_token), new_key.kid());
    after.current_user(&new_token).await.unwrap();
    assert_code(after.current_user(&old_token).await, Code::Unauthenticated);
}

fn kid_of(token: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}
