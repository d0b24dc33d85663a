//! Where validators get the current verification keys from.

use async_trait::async_trait;
use proto::auth::v1 as pb;
use tonic::transport::Channel;

use crate::error::KeySourceError;
use crate::jwk::Jwk;

/// Something that returns the current set of published verification keys.
///
/// [`crate::Validator`] calls it once at start, then periodically, and when a token names an
/// unknown `kid` (rate-limited). It bounds every call with a timeout, and checks what comes back
/// with [`crate::KeySet::from_jwks`].
#[async_trait]
pub trait KeySource: Send + Sync {
    /// Fetches every key that may have signed a still-valid token.
    ///
    /// # Errors
    ///
    /// Any failure to get the keys; the validator keeps the keys it had.
    async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError>;
}

/// Fetches the keys from the auth service's `auth.v1.AuthService/GetJwks`.
#[derive(Clone, Debug)]
pub struct AuthServiceKeySource {
    client: pb::auth_service_client::AuthServiceClient<Channel>,
}

impl AuthServiceKeySource {
    /// A source calling the auth service over `channel` (which needs no access token).
    pub fn new(channel: Channel) -> Self {
        AuthServiceKeySource {
            client: pb::auth_service_client::AuthServiceClient::new(channel),
        }
    }
}

#[async_trait]
impl KeySource for AuthServiceKeySource {
    async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError> {
        let response = self.client.clone().get_jwks(pb::GetJwksRequest {}).await?;
        Ok(response
            .into_inner()
            .keys
            .into_iter()
            .map(Jwk::from)
            .collect())
    }
}
