//! A correctly signed access token that lives longer than auth ever issues (15 minutes plus the
//! leeway) is refused at the gateway, before any upstream call, however it is signed.

use std::time::{Duration, SystemTime};

use proto::{
    chat::v1::{self as chat_pb, chat_service_client::ChatServiceClient},
    group::v1::{self as group_pb, group_service_client::GroupServiceClient},
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{spawn_stack_with, with_token};

const HUNDRED_YEARS: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[sqlx::test(migrations = "../migrations")]
async fn a_token_signed_by_auths_key_for_a_hundred_years_is_refused_and_a_normal_one_is_not(
    db: PgPool,
) {
    // Auth's signing key, as someone who stole it (or a misconfigured signer) would use it.
    let signing_key = token::SigningKey::generate();
    let mut auth_config = auth::Config::for_tests();
    auth_config.tokens.signing_key =
        common::config::SecretSource::Inline(signing_key.to_pkcs8_pem().into());
    let stack = spawn_stack_with(db, auth_config, |config| config).await;
    let subject = token::Subject {
        user_id: uuid::Uuid::new_v4(),
        device_id: uuid::Uuid::new_v4(),
        session_id: uuid::Uuid::new_v4(),
    };
    let sign = |lifetime| {
        signing_key.sign(&token::AccessClaims::new(
            "chat-auth",
            "chat",
            subject,
            SystemTime::now(),
            lifetime,
        ))
    };
    let (forever, normal) = (sign(HUNDRED_YEARS), sign(Duration::from_secs(900)));
    let mut chat = ChatServiceClient::new(stack.channel.clone());
    let mut group = GroupServiceClient::new(stack.channel.clone());

    let to_chat = chat
        .send_message(with_token(chat_pb::SendMessageRequest::default(), &forever))
        .await
        .unwrap_err();
    let to_group = group
        .list_my_groups(with_token(
            group_pb::ListMyGroupsRequest::default(),
            &forever,
        ))
        .await
        .unwrap_err();

    for status in [&to_chat, &to_group] {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(
            status.message(),
            "access token lifetime exceeds the maximum"
        );
    }
    assert!(
        stack.chat.seen.lock().unwrap().metadata.is_empty(),
        "nothing reached chat"
    );
    chat.send_message(with_token(chat_pb::SendMessageRequest::default(), &normal))
        .await
        .unwrap();
}
