//! A validator for services that start before (or while) auth is reachable.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use http::HeaderMap;
use tonic::Status;

use crate::{AccessClaims, KeySource, ValidationSettings, Validator};

/// Longest pause between two attempts to fetch the key set at start.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A [`Validator`] fed by a [`KeySource`] (normally auth) that may not answer yet: the first fetch
/// is retried in the background with backoff, so a service starts in any order relative to auth.
/// Until it succeeds, authenticated calls answer UNAVAILABLE ("retry shortly") rather than
/// UNAUTHENTICATED, which would make clients drop good tokens. Cheap to clone.
#[derive(Clone, Default)]
pub struct RemoteValidator {
    slot: Arc<OnceLock<Arc<Validator>>>,
}

impl RemoteValidator {
    /// Starts fetching the key set in the background. Must be called inside a Tokio runtime.
    pub fn start(settings: ValidationSettings, source: Arc<dyn KeySource>) -> Self {
        let remote = Self::default();
        let slot = remote.slot.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match Validator::with_key_source(settings.clone(), source.clone()).await {
                    Ok(validator) => {
                        let _ = slot.set(validator);
                        tracing::info!("fetched the access-token key set");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, ?backoff, "cannot fetch the access-token key set yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
        remote
    }

    /// Starts fetching the key set from the auth service at `auth_url` (`http://host:port`),
    /// connecting lazily. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// When `auth_url` is not a valid URI.
    pub fn start_with_auth(
        auth_url: &str,
        settings: ValidationSettings,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(auth_url.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        Ok(Self::start(
            settings,
            Arc::new(crate::AuthServiceKeySource::new(channel)),
        ))
    }

    /// The validator, once the key set has been fetched.
    pub fn get(&self) -> Option<&Arc<Validator>> {
        self.slot.get()
    }

    /// Validates the request's bearer token.
    ///
    /// # Errors
    /// UNAUTHENTICATED for a missing or invalid token; UNAVAILABLE for a token that arrives before
    /// the key set has been fetched.
    pub async fn authenticate<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<AccessClaims, Status> {
        let has_token = request.metadata().contains_key("authorization");
        Ok(self.ready(has_token)?.authenticate(request).await?)
    }

    /// Validates the bearer token in HTTP headers (the gateway's proxy path).
    ///
    /// # Errors
    /// As [`RemoteValidator::authenticate`].
    pub async fn authenticate_headers(&self, headers: &HeaderMap) -> Result<AccessClaims, Status> {
        let has_token = headers.contains_key(http::header::AUTHORIZATION);
        Ok(self.ready(has_token)?.authenticate_headers(headers).await?)
    }

    /// The validator, or the reason a call cannot be checked yet. A call without any token is
    /// UNAUTHENTICATED whether or not the keys have arrived: only a token that might be good is
    /// worth a retry.
    fn ready(&self, has_token: bool) -> Result<&Arc<Validator>, Status> {
        match self.get() {
            Some(validator) => Ok(validator),
            None if !has_token => Err(crate::TokenError::Missing.into()),
            None => Err(Status::unavailable(
                "access-token keys not fetched yet; retry shortly",
            )),
        }
    }
}
