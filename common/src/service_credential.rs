//! The credential one service presents to another for calls made on nobody's behalf, such as the
//! chat service following `group.internal.v1` `WatchMembershipEvents` from a background task.
//!
//! Calls on a user's behalf carry that user's access token instead, so every service keeps
//! checking who a request is for. This credential only says "a service of this deployment": a
//! shared secret (`<SERVICE>_SERVICE_SECRET` or `<SERVICE>_SERVICE_SECRET_FILE`, at least
//! [`MIN_SECRET_CHARS`] characters; the Helm chart generates it once) sent in the
//! [`HEADER`] metadata entry and compared in constant time. The gateway strips the header from
//! outside traffic and never routes internal services, and on Kubernetes NetworkPolicies keep
//! other pods away from the internal ports; TLS between pods is left to a service mesh.

use secrecy::{ExposeSecret, SecretString};

use crate::config::SecretSource;
use subtle::ConstantTimeEq;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataMap},
};

/// The metadata entry carrying the credential.
pub const HEADER: &str = "x-service-credential";

/// The shortest secret accepted: 32 characters, such as the base64 of 24 random bytes.
pub const MIN_SECRET_CHARS: usize = 32;

/// The fixed secret of [`ServiceCredential::for_tests`]: public, so never for a deployment.
const TEST_SECRET: &str = "test-only-service-secret-not-for-deployments";

/// The secret of [`ServiceCredential::for_tests`], for `for_tests` configurations.
pub fn test_secret() -> SecretSource {
    SecretSource::Inline(SecretString::from(TEST_SECRET))
}

/// The deployment's service secret, ready to attach to requests and to check them.
#[derive(Clone)]
pub struct ServiceCredential {
    value: AsciiMetadataValue,
}

/// Why a configured service secret cannot be used (the message never contains it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidServiceSecret {
    /// Too short to resist guessing.
    #[error("the service secret must have at least {MIN_SECRET_CHARS} characters")]
    TooShort,
    /// Not sendable as gRPC metadata.
    #[error("the service secret must be printable ASCII without spaces (base64 works)")]
    NotPrintable,
}

impl ServiceCredential {
    /// The credential made of `secret`.
    ///
    /// # Errors
    /// When the secret is too short or not printable ASCII.
    pub fn new(secret: &SecretString) -> Result<Self, InvalidServiceSecret> {
        let secret = secret.expose_secret();
        if secret.chars().count() < MIN_SECRET_CHARS {
            return Err(InvalidServiceSecret::TooShort);
        }
        if !secret.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(InvalidServiceSecret::NotPrintable);
        }
        let mut value =
            AsciiMetadataValue::try_from(secret).map_err(|_| InvalidServiceSecret::NotPrintable)?;
        value.set_sensitive(true);
        Ok(Self { value })
    }

    /// The credential every `for_tests` configuration shares, so test services trust each other.
    pub fn for_tests() -> Self {
        Self::new(&SecretString::from(TEST_SECRET)).expect("the test secret is valid")
    }

    /// `request` with the credential attached.
    pub fn attach<T>(&self, mut request: Request<T>) -> Request<T> {
        request.metadata_mut().insert(HEADER, self.value.clone());
        request
    }

    /// Whether `metadata` carries this credential.
    ///
    /// # Errors
    /// UNAUTHENTICATED when it is missing or wrong.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let presented = metadata.get(HEADER).ok_or_else(|| {
            Status::unauthenticated(format!("this call needs the {HEADER} of a service"))
        })?;
        if bool::from(presented.as_bytes().ct_eq(self.value.as_bytes())) {
            Ok(())
        } else {
            Err(Status::unauthenticated(format!("{HEADER} is not valid")))
        }
    }
}

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ServiceCredential(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(secret: &str) -> Result<ServiceCredential, InvalidServiceSecret> {
        ServiceCredential::new(&SecretString::from(secret))
    }

    #[test]
    fn the_attached_credential_passes_the_check() {
        let credential = ServiceCredential::for_tests();
        let request = credential.attach(Request::new(()));
        assert!(credential.check(request.metadata()).is_ok());
    }

    #[test]
    fn a_missing_or_different_credential_is_unauthenticated() {
        let ours = ServiceCredential::for_tests();
        let missing = ours.check(Request::new(()).metadata()).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().contains(HEADER), "{}", missing.message());

        let theirs = credential("another-secret-of-at-least-32-characters").unwrap();
        let wrong = ours
            .check(theirs.attach(Request::new(())).metadata())
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert_eq!(wrong.message(), format!("{HEADER} is not valid"));
    }

    #[test]
    fn weak_or_unsendable_secrets_are_refused() {
        assert_eq!(
            credential("short").unwrap_err(),
            InvalidServiceSecret::TooShort
        );
        assert_eq!(
            credential("a secret with spaces that is long enough").unwrap_err(),
            InvalidServiceSecret::NotPrintable
        );
        assert!(credential(&"x".repeat(MIN_SECRET_CHARS)).is_ok());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        assert!(!format!("{:?}", ServiceCredential::for_tests()).contains(TEST_SECRET));
    }
}
