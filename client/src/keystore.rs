//! Private keys at rest (`keys.json`): the device's PKCS#8 keys encrypted with AES-256-GCM-SIV
//! under a key derived from a passphrase by argon2id, with a random salt and nonce stored beside
//! the ciphertext.

use aes_gcm_siv::{
    Aes256GcmSiv, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Associated data of the ciphertext: binds it to this format.
const AAD: &[u8] = b"chat-client device keys v1";

/// argon2id costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl KdfParams {
    /// The least memory accepted (KiB): OWASP's first argon2id recommendation, 19 MiB.
    pub const MIN_MEMORY_KIB: u32 = 19 * 1024;
    /// The fewest iterations accepted (with [`KdfParams::MIN_MEMORY_KIB`], OWASP's 2).
    pub const MIN_ITERATIONS: u32 = 2;
    /// The most memory accepted (KiB): 4 GiB, so a tampered file cannot exhaust the machine.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;

    /// Checks the costs against the floor: keys at rest are only as strong as the passphrase
    /// times the cost of each guess, so no setting may make guesses cheap.
    ///
    /// # Errors
    /// [`Error::Usage`] saying which cost is out of range.
    pub fn check(&self) -> Result<()> {
        if !(Self::MIN_MEMORY_KIB..=Self::MAX_MEMORY_KIB).contains(&self.m_cost) {
            return Err(Error::usage(format!(
                "the argon2id memory cost of the device keys must be {} to {} KiB \
                 (CHAT_KDF_MEMORY_KIB), not {}",
                Self::MIN_MEMORY_KIB,
                Self::MAX_MEMORY_KIB,
                self.m_cost
            )));
        }
        if self.t_cost < Self::MIN_ITERATIONS || self.p_cost == 0 {
            return Err(Error::usage(format!(
                "the argon2id costs of the device keys must be at least {} iterations and 1 \
                 lane",
                Self::MIN_ITERATIONS
            )));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    /// OWASP's first argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        KdfParams {
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// The content of `keys.json`. Byte strings are hex.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealedKeys {
    /// Format version (1).
    pub version: u32,
    /// Always `argon2id`.
    pub kdf: String,
    /// The argon2id costs.
    pub kdf_params: KdfParams,
    /// 16 random bytes.
    pub salt: String,
    /// 12 random bytes.
    pub nonce: String,
    /// AES-256-GCM-SIV of: RSA PKCS#8 length (u32 big-endian), RSA PKCS#8, Ed25519 PKCS#8.
    pub ciphertext: String,
}

/// Encrypts `keys` under `passphrase`.
///
/// # Errors
/// [`Error::Usage`] for costs below the floor ([`KdfParams::check`]) or an empty passphrase;
/// [`Error::Crypto`] if key derivation or encryption fails.
pub fn seal_keys(
    keys: &e2ee::DeviceKeys,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<SealedKeys> {
    params.check()?;
    if passphrase.is_empty() {
        return Err(Error::usage(
            "the passphrase of the device keys is empty".to_owned(),
        ));
    }
    seal_unchecked(keys, passphrase, params)
}

/// [`seal_keys`] without the checks of its inputs.
fn seal_unchecked(
    keys: &e2ee::DeviceKeys,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<SealedKeys> {
    let encryption = keys.encryption_pkcs8_der()?;
    let signing = keys.signing_pkcs8_der()?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(encryption.len() + signing.len() + 4));
    let encryption_len = u32::try_from(encryption.len())
        .map_err(|_| Error::Crypto("the RSA key is too large".to_owned()))?;
    plaintext.extend_from_slice(&encryption_len.to_be_bytes());
    plaintext.extend_from_slice(&encryption);
    plaintext.extend_from_slice(&signing);

    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let cipher = cipher(passphrase, &salt, params)?;
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: AAD,
            },
        )
        .map_err(|_| Error::Crypto("encrypting the keys failed".to_owned()))?;
    Ok(SealedKeys {
        version: 1,
        kdf: "argon2id".to_owned(),
        kdf_params: params,
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    })
}

/// Decrypts keys sealed by [`seal_keys`].
///
/// # Errors
/// [`Error::Auth`] for a wrong passphrase (or an altered file); [`Error::Profile`] for a file
/// in another format, or with costs below the floor ([`KdfParams::check`]: seal the keys again
/// with `chat passphrase`).
pub fn open_keys(sealed: &SealedKeys, passphrase: &[u8]) -> Result<e2ee::DeviceKeys> {
    check_format(sealed)?;
    let salt = hex::decode(&sealed.salt)
        .map_err(|_| Error::Profile("keys.json is malformed".to_owned()))?;
    decrypt(sealed, &cipher(passphrase, &salt, sealed.kdf_params)?)
}

/// Seals the keys of `profile` again under `new` (opening them with `old`), with `params`:
/// `chat passphrase`, also the way to move keys sealed with the account password, or with costs
/// below today's floor, to a proper passphrase.
///
/// # Errors
/// [`Error::Auth`] for a wrong `old`; [`Error::Usage`] for costs below the floor, an empty or
/// unchanged passphrase; [`Error::Profile`] when the profile has no keys.
pub fn change_passphrase(
    profile: &crate::Profile,
    old: &[u8],
    new: &[u8],
    params: KdfParams,
) -> Result<()> {
    let sealed = profile
        .sealed_keys()?
        .ok_or_else(|| Error::Profile("this profile has no device keys".to_owned()))?;
    let keys = open_keys(&sealed, old)?;
    if old == new {
        return Err(Error::usage("the new passphrase is the old one".to_owned()));
    }
    profile.save_sealed_keys(&seal_keys(&keys, new, params)?)
}

/// Whether keys sealed with these costs must be sealed again (they are below the floor).
#[must_use]
pub fn below_floor(sealed: &SealedKeys) -> bool {
    sealed.kdf_params.check().is_err()
}

/// The argon2id key that opens `sealed` under `passphrase`, checked by opening it: what
/// `chat unlock` keeps for a while (see `unlock.rs`), so that later commands need neither the
/// passphrase nor argon2.
///
/// # Errors
/// As [`open_keys`].
pub fn unlock_key(sealed: &SealedKeys, passphrase: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let salt = hex::decode(&sealed.salt)
        .map_err(|_| Error::Profile("keys.json is malformed".to_owned()))?;
    check_format(sealed)?;
    let key = derive(passphrase, &salt, sealed.kdf_params)?;
    open_keys_with(sealed, &key)?;
    Ok(key)
}

/// Decrypts keys sealed by [`seal_keys`] with the key [`unlock_key`] derived.
///
/// # Errors
/// [`Error::Auth`] for a key that does not open them (the keys were sealed again since);
/// [`Error::Profile`] for a malformed file.
pub fn open_keys_with(sealed: &SealedKeys, key: &[u8; 32]) -> Result<e2ee::DeviceKeys> {
    check_format(sealed)?;
    let cipher = Aes256GcmSiv::new_from_slice(key)
        .map_err(|_| Error::Crypto("bad key length".to_owned()))?;
    decrypt(sealed, &cipher)
}

fn check_format(sealed: &SealedKeys) -> Result<()> {
    if sealed.version != 1 || sealed.kdf != "argon2id" {
        return Err(Error::Profile(
            "keys.json has an unknown format version".to_owned(),
        ));
    }
    // A file sealed with a cheaper setting (before the floor existed) still opens, so that its
    // owner can seal it again (`chat passphrase`); a tampered cost beyond the ceiling does not.
    if sealed.kdf_params.m_cost > KdfParams::MAX_MEMORY_KIB {
        return Err(Error::Profile(
            "keys.json asks for more argon2id memory than allowed".to_owned(),
        ));
    }
    Ok(())
}

fn decrypt(sealed: &SealedKeys, cipher: &Aes256GcmSiv) -> Result<e2ee::DeviceKeys> {
    let malformed = || Error::Profile("keys.json is malformed".to_owned());
    let nonce = hex::decode(&sealed.nonce).map_err(|_| malformed())?;
    let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| malformed())?;
    if nonce.len() != 12 {
        return Err(malformed());
    }
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: AAD,
                },
            )
            .map_err(|_| Error::auth("wrong passphrase for the device keys".to_owned()))?,
    );
    let (length, rest) = plaintext.split_at_checked(4).ok_or_else(malformed)?;
    let length = u32::from_be_bytes(length.try_into().map_err(|_| malformed())?) as usize;
    let (encryption, signing) = rest.split_at_checked(length).ok_or_else(malformed)?;
    Ok(e2ee::DeviceKeys::from_pkcs8_der(encryption, signing)?)
}

fn derive(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))
        .map_err(|_| Error::Profile("keys.json has invalid argon2 parameters".to_owned()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|_| Error::Crypto("deriving the key failed".to_owned()))?;
    Ok(key)
}

fn cipher(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Aes256GcmSiv> {
    let key = derive(passphrase, salt, params)?;
    Aes256GcmSiv::new_from_slice(key.as_ref())
        .map_err(|_| Error::Crypto("bad key length".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        m_cost: KdfParams::MIN_MEMORY_KIB,
        t_cost: KdfParams::MIN_ITERATIONS,
        p_cost: 1,
    };

    #[test]
    fn keys_sealed_below_the_floor_still_open_and_are_marked_for_sealing_again() {
        let keys = e2ee::DeviceKeys::generate(2048).unwrap();
        let cheap = KdfParams {
            m_cost: 1024,
            t_cost: 1,
            p_cost: 1,
        };

        let old = seal_unchecked(&keys, b"p", cheap).unwrap();
        let current = seal_keys(&keys, b"p", CHEAP).unwrap();

        assert_eq!(
            open_keys(&old, b"p").unwrap().public_keys(),
            keys.public_keys()
        );
        assert!(below_floor(&old));
        assert!(!below_floor(&current));
        let mut greedy = current.clone();
        greedy.kdf_params.m_cost = KdfParams::MAX_MEMORY_KIB + 1;
        assert!(matches!(open_keys(&greedy, b"p"), Err(Error::Profile(_))));
    }

    #[test]
    fn costs_below_the_floor_are_refused() {
        let keys = e2ee::DeviceKeys::generate(2048).unwrap();
        let below = |change: fn(&mut KdfParams)| {
            let mut params = CHEAP;
            change(&mut params);
            seal_keys(&keys, b"p", params)
        };

        assert!(matches!(below(|p| p.m_cost = 1024), Err(Error::Usage(..))));
        assert!(matches!(below(|p| p.t_cost = 1), Err(Error::Usage(..))));
        assert!(matches!(below(|p| p.p_cost = 0), Err(Error::Usage(..))));
        assert!(matches!(
            seal_keys(&keys, b"", CHEAP),
            Err(Error::Usage(..))
        ));
        assert!(below(|_| {}).is_ok());
    }

    #[test]
    fn an_unlock_key_opens_the_keys_as_sealed_then_only() {
        let keys = e2ee::DeviceKeys::generate(2048).unwrap();
        let sealed = seal_keys(&keys, b"right", CHEAP).unwrap();

        let key = unlock_key(&sealed, b"right").unwrap();
        let resealed = seal_keys(&keys, b"right", CHEAP).unwrap();

        assert!(matches!(
            unlock_key(&sealed, b"wrong"),
            Err(Error::Auth(..))
        ));
        let opened = open_keys_with(&sealed, &key).unwrap();
        assert_eq!(opened.public_keys(), keys.public_keys());
        // A new salt: the kept key is useless once the keys are sealed again.
        assert!(matches!(
            open_keys_with(&resealed, &key),
            Err(Error::Auth(..))
        ));
    }

    #[test]
    fn keys_open_with_the_right_passphrase_only() {
        let keys = e2ee::DeviceKeys::generate(2048).unwrap();

        let sealed = seal_keys(&keys, b"right", CHEAP).unwrap();

        let opened = open_keys(&sealed, b"right").unwrap();
        assert_eq!(opened.public_keys(), keys.public_keys());
        assert!(matches!(open_keys(&sealed, b"wrong"), Err(Error::Auth(..))));
        let json = serde_json::to_string(&sealed).unwrap();
        let private_hex = hex::encode(&*keys.signing_pkcs8_der().unwrap());
        assert!(!json.contains(&private_hex));
    }
}
