//! A dishonest sender device: it seals and really signs its envelopes, but puts wrapped keys of
//! its choosing into them (chosen RSA ciphertexts, which suite V2 leaves to the sender device
//! alone). The server accepts them: it checks only who signed. Shared by the test binaries of
//! the CLI (`tests/api`) and of the web demo (`tests/web_demo`).

use std::time::{SystemTime, UNIX_EPOCH};

use client::{Session, Target};
use proto::chat::v1::{self as pb, chat_service_client::ChatServiceClient};

/// Sends to `target` (a direct conversation with `recipient`) through the gateway at `server`
/// a signed V2 envelope whose wrapped key for each of `recipient`'s devices is junk below the
/// RSA modulus (so that the RSA decryption runs and then fails), the `n`th of its kind (its
/// chain counter is `n + 1`). `passphrase` opens the sender's keys.
pub async fn send_with_a_bad_wrapped_key(
    server: &str,
    sender: &Session,
    passphrase: &str,
    target: &Target,
    recipient: &str,
    n: usize,
) {
    let sealed = sender.profile().sealed_keys().unwrap().unwrap();
    let keys = client::keystore::open_keys(&sealed, passphrase.as_bytes()).unwrap();
    let them = sender.user_by_name(recipient).await.unwrap();
    let their_devices: Vec<String> = them.devices.iter().map(|d| d.device_id.clone()).collect();
    let mut recipients: Vec<e2ee::RecipientDevice> = them
        .devices
        .iter()
        .map(|device| e2ee::RecipientDevice {
            device_id: device.device_id.clone(),
            encryption_spki: device.keys.clone().unwrap().encryption_public_key,
        })
        .collect();
    recipients.push(e2ee::RecipientDevice {
        device_id: sender.account().device_id.clone(),
        encryption_spki: keys.public_keys().encryption_spki.clone(),
    });
    let account = sender.account();
    let sender_time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let position = e2ee::ChainPosition {
        counter: n as u64 + 1,
        previous_envelope_hash: [0; 32],
        sender_time_ms,
    };
    let mut envelope = e2ee::seal(
        &e2ee::Sender {
            user_id: &account.user_id,
            device_id: &account.device_id,
            keys: &keys,
        },
        &target.conversation_id,
        &uuid::Uuid::new_v4().to_string(),
        &recipients,
        &position,
        b"never readable",
    )
    .unwrap();
    for wrapped in &mut envelope.wrapped_keys {
        if their_devices.contains(&wrapped.device_id) {
            wrapped.wrapped_key[0] = 0;
            wrapped.wrapped_key[1..].fill(0x5a ^ n as u8);
        }
    }
    envelope.sign_as_is(&keys).unwrap();

    let token = sender.profile().tokens().unwrap().unwrap().access_token;
    let mut chat = ChatServiceClient::connect(server.to_owned()).await.unwrap();
    let mut request = tonic::Request::new(pb::SendMessageRequest {
        envelope: Some(envelope.into()),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    chat.send_message(request).await.unwrap();
}
