//! The test users' accounts, shared by the cluster and fault binaries: one password, cheap device
//! keys, and registering users then logging devices in through the client library.

use std::{path::Path, sync::Arc};

use client::{KeyOptions, Profile, Server, Session, keystore::KdfParams};
use secrecy::SecretString;

/// Every test user's password.
pub use testkit::PASSWORD;
/// Small RSA keys and the cheapest argon2 allowed for the devices' own keys.
pub const TEST_KEYS: KeyOptions = KeyOptions {
    rsa_bits: 2048,
    kdf: KdfParams {
        m_cost: KdfParams::MIN_MEMORY_KIB,
        t_cost: KdfParams::MIN_ITERATIONS,
        p_cost: 1,
    },
};

/// Registers `users`, then logs in `devices` (device name, username) in that order, each with a
/// profile of its own under `scratch/profiles/<device>`.
pub async fn register_and_log_in(
    server: &Server,
    scratch: &Path,
    users: &[&str],
    devices: &[(&str, &str)],
) -> Vec<Arc<Session>> {
    let password: SecretString = PASSWORD.to_owned().into();
    for username in users {
        client::register(server, username, &password, "")
            .await
            .unwrap();
    }
    let mut sessions = Vec::new();
    for (device, username) in devices {
        let profile = Profile::open(scratch.join("profiles").join(device)).unwrap();
        let passphrase: SecretString = "a separate device passphrase".to_owned().into();
        let session = Session::login(profile, server, username, &password, &passphrase, TEST_KEYS)
            .await
            .unwrap();
        sessions.push(Arc::new(session));
    }
    sessions
}
