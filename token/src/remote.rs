//! A validator for services that start before (or while) auth is reachable, and that follow its
//! revocations.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use http::HeaderMap;
use tonic::Status;

use crate::revocation_feed::{self, AttachCredential, AuthServiceRevocationSource};
use crate::{
    AccessClaims, KeyRefresh, KeySource, RevocationSource, Revocations, ValidationSettings,
    Validator,
};

/// Longest pause between two attempts to fetch the key set at start.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often [`RemoteValidator::start_with_auth`]'s channel pings auth, and how long it waits
/// for the answer: a dead connection is left within 6 s, before the revocation list goes stale
/// ([`crate::DEFAULT_MAX_STALENESS`], 10 s).
const AUTH_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
/// See [`AUTH_KEEPALIVE_INTERVAL`].
const AUTH_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A [`Validator`] fed by a [`KeySource`] (normally auth) that may not answer yet: the first fetch
/// is retried in the background with backoff, so a service starts in any order relative to auth.
/// It also follows a [`RevocationSource`] (auth's `WatchRevocations`) into a [`Revocations`] list
/// from the start, and refuses the tokens of revoked sessions and devices.
///
/// Until the keys have been fetched and the revocation feed has caught up once, and whenever the
/// feed has been silent for longer than its maximum staleness, authenticated calls answer
/// UNAVAILABLE ("retry shortly") rather than UNAUTHENTICATED, which would make clients drop good
/// tokens. Cheap to clone.
#[derive(Clone)]
pub struct RemoteValidator {
    slot: Arc<OnceLock<Arc<Validator>>>,
    revocations: Arc<Revocations>,
}

impl RemoteValidator {
    /// Starts fetching the key set from `keys` and following `revocations`, each in the
    /// background; the revocation list is trusted for `max_staleness` after each heartbeat. Must
    /// be called inside a Tokio runtime.
    pub fn start(
        settings: ValidationSettings,
        keys: Arc<dyn KeySource>,
        revocations: Arc<dyn RevocationSource>,
        max_staleness: Duration,
    ) -> Self {
        let revocations = Revocations::with_feeder(&settings, max_staleness, |list| {
            revocation_feed::follow(list, revocations)
        });
        let slot = Arc::new(OnceLock::new());
        tokio::spawn(fetch_keys(
            settings,
            keys,
            revocations.clone(),
            Arc::clone(&slot),
        ));
        Self { slot, revocations }
    }

    /// Starts fetching the key set from the auth service at `auth_url` (`http://host:port`) and
    /// following its `WatchRevocations` with the service credential that `credential` attaches,
    /// connecting lazily. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// When `auth_url` is not a valid URI.
    pub fn start_with_auth(
        auth_url: &str,
        settings: ValidationSettings,
        max_staleness: Duration,
        credential: AttachCredential,
    ) -> Result<Self, tonic::transport::Error> {
        // The channel pings: a connection that died without a reset (a dead path, a silent
        // stall) would otherwise hold the revocation feed for ever, with the list stale and every
        // call refused UNAVAILABLE (found by chat's fault suite, which has its own such channel).
        let channel = tonic::transport::Endpoint::from_shared(auth_url.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(AUTH_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(AUTH_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self::start(
            settings,
            Arc::new(crate::AuthServiceKeySource::new(channel.clone())),
            Arc::new(AuthServiceRevocationSource::new(channel, credential)),
            max_staleness,
        ))
    }

    /// The validator, once the key set has been fetched.
    pub fn get(&self) -> Option<&Arc<Validator>> {
        self.slot.get()
    }

    /// The revocation list the validator consults; streams watch it with
    /// [`Revocations::ended`].
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Whether tokens can be checked: the keys have been fetched and the revocation feed has
    /// caught up at least once.
    pub fn is_ready(&self) -> bool {
        self.get().is_some() && self.revocations.has_caught_up()
    }

    /// Validates the request's bearer token.
    ///
    /// # Errors
    /// UNAUTHENTICATED for a missing, invalid or revoked token; UNAVAILABLE for a token that
    /// arrives before the key set has been fetched or while the revocation list is stale.
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

impl std::fmt::Debug for RemoteValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteValidator")
            .field("validator", &self.get())
            .field("revocations", &self.revocations)
            .finish()
    }
}

/// Fetches the key set until it succeeds, then installs a validator consulting `revocations`.
async fn fetch_keys(
    settings: ValidationSettings,
    source: Arc<dyn KeySource>,
    revocations: Arc<Revocations>,
    slot: Arc<OnceLock<Arc<Validator>>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let validator = Validator::from_key_source(
            settings.clone(),
            source.clone(),
            KeyRefresh::default(),
            Some(revocations.clone()),
        )
        .await;
        match validator {
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
}
