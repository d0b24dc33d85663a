//! Why a token, a key or a key source was refused, and the one conversion to `tonic::Status`.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` reason of every refused access token (`auth.v1.ErrorReason`).
pub const ACCESS_TOKEN_INVALID: &str = "ACCESS_TOKEN_INVALID";

/// The `google.rpc.ErrorInfo` domain of [`ACCESS_TOKEN_INVALID`].
pub const ERROR_DOMAIN: &str = "auth.v1";

/// Why an access token was refused.
///
/// Variants name the first rule the token broke, in the order [`crate::Validator`] checks them;
/// the last one says the validator cannot decide now. None of them carries the token or any part
/// of it, so they are safe to log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `authorization` metadata, or no token in it.
    #[error("missing access token")]
    Missing,
    /// Not a compact JWS: wrong shape, bad base64url or JSON, too long, several `authorization`
    /// values, another scheme than `Bearer`, or a `crit` header.
    #[error("malformed access token")]
    Malformed,
    /// The header's `typ` is missing or is not `at+jwt` (RFC 9068), for example an ID token.
    #[error("not an access token")]
    WrongType,
    /// The header's `alg` is missing or is not `EdDSA` (`none`, `HS256`, `ES256`, ...).
    #[error("unsupported access token algorithm")]
    UnsupportedAlgorithm,
    /// The header has no `kid`.
    #[error("access token has no key id")]
    MissingKeyId,
    /// No current key has the header's `kid`, even after refetching the key set.
    #[error("access token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify with the key named by `kid`.
    #[error("invalid access token signature")]
    BadSignature,
    /// `exp` is in the past by more than the leeway.
    #[error("access token expired")]
    Expired,
    /// `nbf` is in the future by more than the leeway.
    #[error("access token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("access token from another issuer")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("access token for another audience")]
    WrongAudience,
    /// A required claim is absent (or `null`).
    #[error("access token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or value (a string `exp`, a non-UUID `sub`, ...).
    #[error("access token has an invalid {0} claim")]
    InvalidClaim(&'static str),
    /// `exp - iat` is above the maximum lifetime plus the leeway: auth never issues such a token,
    /// so its signing key is being misused.
    #[error("access token lifetime exceeds the maximum")]
    LifetimeTooLong,
    /// `iat` is in the future by more than the leeway (which would let a token with a short
    /// `exp - iat` live as long as it likes).
    #[error("access token issued in the future")]
    IssuedInTheFuture,
    /// The token's session or device has been revoked (logout, logout everywhere, device
    /// revocation, refresh-token reuse): sign in again.
    #[error("access token revoked; sign in again")]
    Revoked,
    /// The validator has not heard from auth's revocation feed for longer than its maximum
    /// staleness, so it cannot tell whether the token was revoked. Not the token's fault: the
    /// only variant that maps to UNAVAILABLE, so that clients retry instead of signing in again.
    #[error("cannot check access token revocations right now; retry shortly")]
    RevocationsUnknown,
}

impl TokenError {
    /// The gRPC code of this refusal: UNAUTHENTICATED, except UNAVAILABLE for
    /// [`TokenError::RevocationsUnknown`].
    pub fn code(&self) -> Code {
        match self {
            TokenError::RevocationsUnknown => Code::Unavailable,
            _ => Code::Unauthenticated,
        }
    }
}

/// Why a key or a key set was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The private key is not an Ed25519 key in PKCS#8 PEM. The cause is not kept: it could
    /// quote the key.
    #[error("not an Ed25519 private key in PKCS#8 PEM")]
    InvalidPrivateKey,
    /// A key set with no key would refuse every token.
    #[error("the key set is empty")]
    EmptyKeySet,
    /// `kty` is not `OKP`.
    #[error("key {kid:?}: key type {kty:?} is not OKP")]
    UnsupportedKeyType {
        /// The key's `kid`.
        kid: String,
        /// The key's `kty`.
        kty: String,
    },
    /// `crv` is not `Ed25519`.
    #[error("key {kid:?}: curve {crv:?} is not Ed25519")]
    UnsupportedCurve {
        /// The key's `kid`.
        kid: String,
        /// The key's `crv`.
        crv: String,
    },
    /// `alg` is not `EdDSA`.
    #[error("key {kid:?}: algorithm {alg:?} is not EdDSA")]
    UnsupportedAlgorithm {
        /// The key's `kid`.
        kid: String,
        /// The key's `alg`.
        alg: String,
    },
    /// `use` is not `sig`.
    #[error("key {kid:?}: use {use_:?} is not sig")]
    UnsupportedUse {
        /// The key's `kid`.
        kid: String,
        /// The key's `use`.
        use_: String,
    },
    /// `x` is not the canonical base64url of a valid, non-weak Ed25519 public key.
    #[error("key {kid:?}: x is not a valid Ed25519 public key")]
    InvalidPublicKey {
        /// The key's `kid`.
        kid: String,
    },
    /// `kid` is not the RFC 7638 thumbprint of the key.
    #[error("key {kid:?}: kid is not the key's thumbprint {thumbprint:?}")]
    KidMismatch {
        /// The key's `kid`.
        kid: String,
        /// The thumbprint the `kid` should have been.
        thumbprint: String,
    },
}

/// Why [`crate::KeySource::fetch`] (or installing what it returned) failed.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    /// The RPC failed.
    #[error("fetching the key set failed: {0}")]
    Rpc(#[from] Status),
    /// The source did not answer in time.
    #[error("fetching the key set timed out")]
    Timeout,
    /// The source answered with a key set that [`crate::KeySet::from_jwks`] refused.
    #[error("the fetched key set is invalid: {0}")]
    InvalidKeySet(#[from] KeyError),
    /// Any other failure of a custom source.
    #[error("fetching the key set failed: {0}")]
    Other(String),
}

impl From<TokenError> for Status {
    /// UNAUTHENTICATED with a short message and an `ErrorInfo` {reason `ACCESS_TOKEN_INVALID`,
    /// domain `auth.v1`}, so that clients know to refresh; UNAVAILABLE without details for
    /// [`TokenError::RevocationsUnknown`] (see [`TokenError::code`]). Never echoes the token.
    fn from(err: TokenError) -> Status {
        if err.code() != Code::Unauthenticated {
            return Status::new(err.code(), err.to_string());
        }
        Status::with_error_details(
            Code::Unauthenticated,
            err.to_string(),
            ErrorDetails::with_error_info(ACCESS_TOKEN_INVALID, ERROR_DOMAIN, HashMap::new()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_token_is_unauthenticated_with_the_access_token_invalid_reason() {
        let status = Status::from(TokenError::Expired);

        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "access token expired");
        let info = status
            .get_details_error_info()
            .expect("an ErrorInfo detail");
        assert_eq!(info.reason, "ACCESS_TOKEN_INVALID");
        assert_eq!(info.domain, "auth.v1");
    }

    #[test]
    fn unknown_revocations_are_unavailable_so_that_clients_retry() {
        let status = Status::from(TokenError::RevocationsUnknown);

        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_details_error_info().is_none());
        assert_eq!(
            Status::from(TokenError::Revoked).code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn claim_errors_name_the_claim() {
        assert_eq!(
            Status::from(TokenError::InvalidClaim("sub")).message(),
            "access token has an invalid sub claim"
        );
    }
}
