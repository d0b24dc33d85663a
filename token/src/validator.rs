//! The validator: current keys, their refresh, and the order of the checks.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use jsonwebtoken::Validation;
use tokio::sync::Mutex;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cache::VerifiedTokens;
use crate::claims::AccessClaims;
use crate::error::{KeySourceError, TokenError};
use crate::keys::KeySet;
use crate::revocation::Revocations;
use crate::source::KeySource;
use crate::verify;

/// The default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The longest access-token lifetime (`exp - iat`) auth may be configured to issue, and the
/// default [`ValidationSettings::max_lifetime`].
pub const MAX_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// What a token must say to be accepted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationSettings {
    /// The exact `iss` required.
    pub issuer: String,
    /// The exact `aud` required.
    pub audience: String,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`, in whole seconds. Keep it small (default
    /// 30 s): it extends the life of every token, stolen ones included.
    pub leeway: Duration,
    /// The longest lifetime (`exp - iat`) accepted, plus the leeway (default
    /// [`MAX_ACCESS_TOKEN_LIFETIME`]); a longer-lived token is refused however it is signed.
    pub max_lifetime: Duration,
}

/// How a [`Validator`] with a [`KeySource`] keeps its keys current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRefresh {
    /// Time between background refreshes (default 5 minutes; at least 1 second).
    pub interval: Duration,
    /// Least time between two refetches caused by unknown `kid`s (default 30 s). Within it,
    /// unknown `kid`s are refused without asking the source.
    pub min_refetch_interval: Duration,
    /// Longest wait for one fetch (default 5 s).
    pub fetch_timeout: Duration,
}

/// Validates access tokens: the one place where "is this token good?" is decided.
///
/// The checks, in order: the JOSE header (`typ` is `at+jwt`; `alg` is `EdDSA`, whatever else the
/// token says; a `kid` is present and names a current key, after at most one rate-limited
/// refetch); then the signature, with that key; only then the claims (`exp` and `nbf` with the
/// leeway, `iss`, `aud`, `sub`, then `did`, `sid`, `jti`, `iat`, with their types; then the
/// lifetime: `iat` not in the future and `exp - iat` at most `max_lifetime`, both with the
/// leeway).
///
/// A token that passed is remembered with its claims while the key set stays the same, so the
/// same token's next validation checks only that it has not expired since (`cache.rs`).
///
/// With a [`Revocations`] list (always, through [`crate::RemoteValidator`]; auth adds its own
/// with [`Validator::with_revocations`]), every validation then refuses a token whose session or
/// device is revoked, the remembered ones included.
pub struct Validator {
    settings: ValidationSettings,
    validation: Validation,
    keys: RwLock<Arc<KeySet>>,
    /// Tokens that passed every check with the current keys (`cache.rs`).
    verified: VerifiedTokens,
    fetcher: Option<Fetcher>,
    refresher: Option<AbortHandle>,
    revocations: Option<Arc<Revocations>>,
}

/// The source of a refreshing validator, and the lock that serializes its fetches.
struct Fetcher {
    source: Arc<dyn KeySource>,
    refresh: KeyRefresh,
    /// Held during every fetch; holds when the last refetch for an unknown `kid` started.
    last_refetch: Mutex<Option<Instant>>,
}

impl ValidationSettings {
    /// Settings for `issuer` and `audience` with the default leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        ValidationSettings {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY,
            max_lifetime: MAX_ACCESS_TOKEN_LIFETIME,
        }
    }
}

impl Default for KeyRefresh {
    fn default() -> Self {
        KeyRefresh {
            interval: Duration::from_secs(5 * 60),
            min_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

impl Validator {
    /// A validator with fixed keys, for the auth service, which validates with its own.
    pub fn with_static_keys(settings: ValidationSettings, keys: KeySet) -> Self {
        Self::new(settings, keys, None, None, None)
    }

    /// This validator, also refusing the tokens of what `revocations` lists (and everything,
    /// with UNAVAILABLE, while the list is stale).
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// A validator that fetches its keys from `source` now, then refreshes them every 5 minutes
    /// and on unknown `kid`s (see [`KeyRefresh::default`]).
    ///
    /// # Errors
    ///
    /// When the first fetch fails, times out or returns a key set that
    /// [`KeySet::from_jwks`] refuses.
    pub async fn with_key_source(
        settings: ValidationSettings,
        source: Arc<dyn KeySource>,
    ) -> Result<Arc<Self>, KeySourceError> {
        Self::with_key_source_and_refresh(settings, source, KeyRefresh::default()).await
    }

    /// Like [`Validator::with_key_source`], with the given refresh timing. The background task
    /// stops when the validator is dropped. Needs a Tokio runtime.
    ///
    /// # Errors
    ///
    /// As for [`Validator::with_key_source`].
    pub async fn with_key_source_and_refresh(
        settings: ValidationSettings,
        source: Arc<dyn KeySource>,
        refresh: KeyRefresh,
    ) -> Result<Arc<Self>, KeySourceError> {
        Self::from_key_source(settings, source, refresh, None).await
    }

    /// The constructor behind the key-source ones, with an optional revocation list.
    pub(crate) async fn from_key_source(
        settings: ValidationSettings,
        source: Arc<dyn KeySource>,
        refresh: KeyRefresh,
        revocations: Option<Arc<Revocations>>,
    ) -> Result<Arc<Self>, KeySourceError> {
        let keys = fetch_key_set(source.as_ref(), refresh.fetch_timeout).await?;
        let fetcher = Fetcher {
            source,
            refresh,
            last_refetch: Mutex::new(None),
        };
        Ok(Arc::new_cyclic(|weak| {
            let interval = refresh.interval.max(Duration::from_secs(1));
            let task = tokio::spawn(refresh_periodically(weak.clone(), interval));
            Self::new(
                settings,
                keys,
                Some(fetcher),
                Some(task.abort_handle()),
                revocations,
            )
        }))
    }

    /// Validates `token` (the compact JWS, without `Bearer`) and returns its claims.
    ///
    /// # Errors
    ///
    /// The first rule the token breaks; see [`TokenError`] and the type's documentation.
    pub async fn validate(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let result = self.check(token).await;
        if let Err(err) = &result {
            // A client's mistake, not an operator's; and never the token itself.
            tracing::debug!(error = %err, "access token refused");
        }
        result
    }

    /// Validates the token of the request's one `authorization: Bearer <token>` metadata.
    ///
    /// # Errors
    ///
    /// [`TokenError::Missing`] without a token, [`TokenError::Malformed`] for several
    /// `authorization` values or another scheme, else as [`Validator::validate`].
    pub async fn authenticate<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<AccessClaims, TokenError> {
        self.authenticate_headers(request.metadata().as_ref()).await
    }

    /// Like [`Validator::authenticate`], for HTTP headers (the gateway's gRPC-Web and HTTP paths).
    ///
    /// # Errors
    ///
    /// As for [`Validator::authenticate`].
    pub async fn authenticate_headers(
        &self,
        headers: &HeaderMap,
    ) -> Result<AccessClaims, TokenError> {
        match verify::bearer_token(headers) {
            Ok(token) => self.validate(token).await,
            Err(err) => {
                tracing::debug!(error = %err, "access token refused");
                Err(err)
            }
        }
    }

    /// The keys in use now; `key_set().jwks()` is what to publish as the JWKS.
    pub fn key_set(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// What tokens must say to be accepted.
    pub fn settings(&self) -> &ValidationSettings {
        &self.settings
    }

    fn new(
        settings: ValidationSettings,
        keys: KeySet,
        fetcher: Option<Fetcher>,
        refresher: Option<AbortHandle>,
        revocations: Option<Arc<Revocations>>,
    ) -> Self {
        let validation = verify::jwt_validation(
            &settings.issuer,
            &settings.audience,
            settings.leeway.as_secs(),
        );
        Validator {
            settings,
            validation,
            keys: RwLock::new(Arc::new(keys)),
            verified: VerifiedTokens::default(),
            fetcher,
            refresher,
            revocations,
        }
    }

    /// The revocation list this validator consults, if any.
    pub fn revocations(&self) -> Option<&Arc<Revocations>> {
        self.revocations.as_ref()
    }

    async fn check(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims = self.check_token(token).await?;
        // After the cache too: a token remembered as good is refused once revoked.
        if let Some(revocations) = &self.revocations {
            revocations.check(&claims)?;
        }
        Ok(claims)
    }

    /// Everything about the token itself: header, signature, claims, lifetime.
    async fn check_token(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let mut keys = self.key_set();
        let now = SystemTime::now();
        if token.len() <= verify::MAX_TOKEN_LEN
            && let Some(known) = self.verified.get(token, &keys, self.settings.leeway, now)
        {
            return known;
        }
        let kid = verify::check_header(token)?;
        if !keys.contains(&kid) {
            keys = self.refetch_for_unknown_kid(&kid).await;
        }
        let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let claims = verify::verify(
            token,
            key,
            &self.validation,
            &self.settings.issuer,
            &self.settings.audience,
        )?;
        verify::check_lifetime(
            &claims,
            self.settings.max_lifetime,
            self.settings.leeway,
            now,
        )?;
        self.verified
            .insert(token, keys, claims.clone(), self.settings.leeway, now);
        Ok(claims)
    }

    /// Refetches the keys for a `kid` we do not know, at most once per `min_refetch_interval`
    /// whatever the number of callers: they queue on the lock, and those after the first find
    /// either the key or a recent refetch.
    async fn refetch_for_unknown_kid(&self, kid: &str) -> Arc<KeySet> {
        let Some(fetcher) = &self.fetcher else {
            return self.key_set();
        };
        if !verify::is_plausible_kid(kid) {
            return self.key_set();
        }
        let mut last_refetch = fetcher.last_refetch.lock().await;
        let keys = self.key_set();
        let recently =
            last_refetch.is_some_and(|at| at.elapsed() < fetcher.refresh.min_refetch_interval);
        if keys.contains(kid) || recently {
            return keys;
        }
        *last_refetch = Some(Instant::now());
        tracing::info!(
            kid,
            "access token names an unknown key: refetching the key set"
        );
        self.fetch_and_install(fetcher).await;
        self.key_set()
    }

    /// Fetches and installs a new key set, keeping the current one on failure. The caller holds
    /// the fetch lock.
    async fn fetch_and_install(&self, fetcher: &Fetcher) {
        match fetch_key_set(fetcher.source.as_ref(), fetcher.refresh.fetch_timeout).await {
            Ok(keys) => {
                tracing::debug!(n_keys = keys.len(), "access token keys refreshed");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
            }
            // Tokens keep validating with the current keys, but a key the source no longer
            // lists stays accepted until a fetch succeeds: someone should look.
            Err(err) => {
                tracing::warn!(error = %err, "refreshing the access token keys failed; keeping the current ones")
            }
        }
    }

    async fn refresh_now(&self) {
        if let Some(fetcher) = &self.fetcher {
            let _fetching = fetcher.last_refetch.lock().await;
            self.fetch_and_install(fetcher).await;
        }
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        if let Some(refresher) = &self.refresher {
            refresher.abort();
        }
    }
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("settings", &self.settings)
            .field("keys", &self.key_set())
            .field("refreshing", &self.fetcher.is_some())
            .field("revocations", &self.revocations)
            .finish()
    }
}

async fn fetch_key_set(
    source: &dyn KeySource,
    timeout: Duration,
) -> Result<KeySet, KeySourceError> {
    let jwks = tokio::time::timeout(timeout, source.fetch())
        .await
        .map_err(|_| KeySourceError::Timeout)??;
    Ok(KeySet::from_jwks(&jwks)?)
}

async fn refresh_periodically(validator: Weak<Validator>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(validator) = validator.upgrade() else {
            return;
        };
        validator.refresh_now().await;
    }
}
