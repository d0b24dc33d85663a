//! jsonwebtoken's crypto provider for this process: Ed25519 verification and nothing else.
//!
//! jsonwebtoken 10+ delegates signatures to a process-wide `CryptoProvider`. Its `rust_crypto`
//! feature would link HMAC, RSA and ECDSA verifiers (and the `rsa` crate, whose RUSTSEC-2023-0071
//! has no fix) that access tokens never use. Instead this crate enables no crypto feature and
//! installs the provider below, built on ed25519-dalek (`verify_strict`), before its first call
//! into jsonwebtoken. With it, an `HS256` or `RS256` token cannot be verified in this process even
//! if every other check were wrong. Signing does not go through jsonwebtoken (see `keys.rs`).

use std::sync::Once;

use ed25519_dalek::{Signature, VerifyingKey};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, new_error};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

/// The provider: EdDSA verification only; no signing, no JWK utilities.
static EDDSA_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: refuse_signing,
    verifier_factory: eddsa_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest: |_, _| Err(unsupported()),
    },
};

/// Installs [`EDDSA_ONLY`] as jsonwebtoken's process-wide provider, once. Every path of this
/// crate that reaches jsonwebtoken calls it first.
pub(crate) fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if EDDSA_ONLY.install_default().is_err() {
            // Someone else chose first (no other crate of the workspace should use jsonwebtoken).
            // Validation still pins EdDSA and Ed25519 keys itself, so it stays safe.
            tracing::warn!("another jsonwebtoken crypto provider was installed first");
        }
    });
}

/// An Ed25519 public key that verifies strictly (no small-order `R` or key, canonical `S`).
struct Ed25519Verifier(VerifyingKey);

impl Verifier<Vec<u8>> for Ed25519Verifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let signature = Signature::from_slice(signature).map_err(|_| signature::Error::new())?;
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Ed25519Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

fn eddsa_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if *algorithm != Algorithm::EdDSA || key.family() != AlgorithmFamily::Ed {
        return Err(unsupported());
    }
    let bytes: &[u8; 32] = key
        .try_get_as_bytes()?
        .try_into()
        .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?;
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?;
    Ok(Box::new(Ed25519Verifier(key)))
}

fn refuse_signing(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(unsupported())
}

fn unsupported() -> Error {
    new_error(ErrorKind::UnsupportedAlgorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_provider_refuses_every_algorithm_but_eddsa() {
        install_provider();
        let hmac_key = DecodingKey::from_secret(b"secret");
        let ed_key =
            DecodingKey::from_ed_components("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();

        for (algorithm, key) in [
            (Algorithm::HS256, &hmac_key),
            (Algorithm::RS256, &ed_key),
            (Algorithm::ES256, &ed_key),
            (Algorithm::HS256, &ed_key),
        ] {
            let err = jsonwebtoken::crypto::verify("AA", b"message", key, algorithm).unwrap_err();

            assert!(
                matches!(err.kind(), ErrorKind::UnsupportedAlgorithm),
                "{algorithm:?}: {err:?}"
            );
        }
    }

    #[test]
    fn the_provider_refuses_a_short_ed25519_key_instead_of_panicking() {
        install_provider();
        let short_key = DecodingKey::from_ed_components("AAAA").unwrap();

        let err = jsonwebtoken::crypto::verify("AA", b"message", &short_key, Algorithm::EdDSA)
            .unwrap_err();

        assert!(matches!(err.kind(), ErrorKind::InvalidEddsaKey), "{err:?}");
    }

    #[test]
    fn the_provider_never_signs() {
        install_provider();

        let result = jsonwebtoken::crypto::sign(
            b"message",
            &EncodingKey::from_secret(b"secret"),
            Algorithm::HS256,
        );

        assert!(result.is_err());
    }
}
