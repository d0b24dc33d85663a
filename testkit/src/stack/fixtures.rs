//! What every suite's users, devices and gateways are made of: the test device keys, the
//! gateway's upstreams, and the token that probes whether a service can check tokens yet.

use std::{
    net::SocketAddr,
    sync::LazyLock,
    time::{Duration, SystemTime},
};

use proto::auth::v1 as auth_pb;
use tonic::transport::Uri;

/// An address where nothing listens: the upstream of a service a stack leaves out.
pub const NOWHERE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// The devices' keys of the e2ee test vectors (`e2ee/testdata/vectors.json`), in its order:
/// index 0, 1, 2, 4 and 5 are 2048-bit RSA, 3 is 3072-bit. Fixed keys, because generating RSA
/// keys is slow.
pub static DEVICE_KEYS: LazyLock<Vec<e2ee::DeviceKeys>> = LazyLock::new(|| {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../../e2ee/testdata/vectors.json"))
            .expect("the e2ee test vectors are JSON");
    vectors["devices"]
        .as_array()
        .expect("the vectors list devices")
        .iter()
        .map(|device| {
            let field = |name: &str| {
                hex::decode(device[name].as_str().expect("a hex field")).expect("valid hex")
            };
            e2ee::DeviceKeys::from_pkcs8_der(
                &field("encryption_private_pkcs8"),
                &field("signing_private_pkcs8"),
            )
            .expect("the vectors' keys are valid")
        })
        .collect()
});

/// The public half of [`DEVICE_KEYS`]`[n]`, as a device uploads it to auth.
pub fn public_device_keys(n: usize) -> auth_pb::DeviceKeys {
    let public = DEVICE_KEYS[n].public_keys();
    auth_pb::DeviceKeys {
        encryption_public_key: public.encryption_spki.clone(),
        signing_public_key: public.signing_public_key.to_vec(),
    }
}

/// `http://<addr>`.
pub fn uri(addr: SocketAddr) -> Uri {
    format!("http://{addr}")
        .parse()
        .expect("a socket address makes a valid URI")
}

/// The gateway's upstreams in every test and in the bench: the given URLs, re-resolved every
/// 10 s, a 500 ms connect timeout, and 2 connections per address (production's default).
pub fn upstreams(auth: &Uri, chat: &Uri, group: &Uri) -> gateway::UpstreamSettings {
    gateway::UpstreamSettings {
        auth: auth.clone().into(),
        chat: chat.clone().into(),
        group: group.clone().into(),
        resolve_interval: Duration::from_secs(10),
        hosts_file: None,
        connect_timeout: Duration::from_millis(500),
        connections_per_address: 2,
    }
}

/// An access token signed with auth's current key, for a user, device and session nobody
/// has: valid for every validator of the stack, so that a call with it answers UNAVAILABLE
/// only until the service has fetched auth's keys and caught up with its revocations. Nothing
/// is written to the database to make it.
///
/// # Errors
/// When the configured signing key cannot be read.
pub fn probe_token(config: &auth::Config) -> anyhow::Result<String> {
    let pem = config.tokens.signing_key.read()?;
    probe_token_signed_with(
        secrecy::ExposeSecret::expose_secret(&pem),
        &config.tokens.issuer,
        &config.tokens.audience,
    )
}

/// [`probe_token`] for auth's signing key as PEM (PKCS#8) and its issuer and audience: for the
/// services' binaries, whose key is a file.
///
/// # Errors
/// When `signing_key_pem` is not a signing key.
pub fn probe_token_signed_with(
    signing_key_pem: &str,
    issuer: &str,
    audience: &str,
) -> anyhow::Result<String> {
    let key = token::SigningKey::from_pkcs8_pem(signing_key_pem)?;
    let subject = token::Subject {
        user_id: uuid::Uuid::new_v4(),
        device_id: uuid::Uuid::new_v4(),
        session_id: uuid::Uuid::new_v4(),
    };
    let claims = token::AccessClaims::new(
        issuer.to_owned(),
        audience.to_owned(),
        subject,
        SystemTime::now(),
        // Whatever the test configured: a probe must outlive the waits it is used for.
        Duration::from_secs(10 * 60),
    );
    Ok(key.sign(&claims))
}
