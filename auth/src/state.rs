//! What every RPC shares, built once in `run`.

use std::sync::Arc;

use common::{outbox::Feed, service_credential::ServiceCredential};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    Config, Error, devices::DeviceEvent, metrics::AuthMetrics, passwords::Passwords,
    sessions::Sessions, throttle::LoginThrottle, tokens::TokenIssuer,
};

/// The auth service's shared state.
pub struct State {
    pub db: PgPool,
    pub passwords: Passwords,
    pub throttle: LoginThrottle,
    pub sessions: Sessions,
    pub issuer: TokenIssuer,
    /// Validates access tokens with auth's own keys and `revocations`.
    pub validator: token::Validator,
    /// The sessions and devices revoked within a token's lifetime (`revocations.rs`).
    pub revocations: Arc<token::Revocations>,
    pub max_devices: u32,
    /// `WatchDeviceChanges` and `WatchRevocations`: wake them after every device change or
    /// revocation commits.
    pub device_events: Arc<Feed<DeviceEvent>>,
    /// What `WatchDeviceChanges`, which acts for no user, requires instead of a token.
    pub service_credential: ServiceCredential,
    /// auth's own metrics (`metrics.rs`), registered by `run`.
    pub metrics: AuthMetrics,
}

impl State {
    /// Reads the key material the configuration names and prepares every component; the device
    /// event streams end at `streams_end`.
    ///
    /// # Errors
    /// When a key or secret cannot be read or is malformed, or argon2's parameters are invalid.
    pub fn new(config: &Config, db: PgPool, streams_end: CancellationToken) -> Result<Self, Error> {
        let issuer = TokenIssuer::load(&config.tokens)?;
        let secret = config
            .tokens
            .refresh_token_secret
            .read()
            .map_err(|error| Error::Internal(format!("AUTH_REFRESH_TOKEN_SECRET: {error}")))?;
        let sessions = Sessions::new(&config.tokens, &crate::sessions::decode_secret(&secret)?)?;
        let service_secret = config
            .service_secret
            .read()
            .map_err(|error| Error::Internal(format!("AUTH_SERVICE_SECRET: {error}")))?;
        let service_credential = ServiceCredential::new(&service_secret)
            .map_err(|error| Error::Internal(format!("AUTH_SERVICE_SECRET: {error}")))?;
        let throttle = LoginThrottle::start(
            config.login_throttle.clone(),
            db.clone(),
            streams_end.clone(),
        );
        let device_events = Feed::start(
            db.clone(),
            config.device_events.clone(),
            streams_end.clone(),
        );
        let validator = issuer.validator();
        let revocations = Arc::new(token::Revocations::new(
            validator.settings(),
            token::DEFAULT_MAX_STALENESS,
        ));
        tokio::spawn(crate::revocations::follow(
            db.clone(),
            device_events.clone(),
            revocations.clone(),
            streams_end,
        ));
        let passwords = Passwords::new(&config.passwords)?;
        let metrics = AuthMetrics::new(passwords.timings(), device_events.metrics());
        Ok(Self {
            db,
            passwords,
            throttle,
            sessions,
            validator: validator.with_revocations(revocations.clone()),
            revocations,
            issuer,
            max_devices: config.max_devices_per_user,
            device_events,
            service_credential,
            metrics,
        })
    }

    /// Call after a transaction that revoked sessions or devices has committed: this replica
    /// refuses their tokens at once, and `WatchRevocations` streams (other replicas, the gateway,
    /// chat, group) are woken.
    pub fn revoked(&self, revocations: impl IntoIterator<Item = token::Revoked>) {
        self.device_events.committed();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for revoked in revocations {
            self.revocations.revoke(token::Revocation {
                revoked,
                revoked_at: now,
            });
        }
    }
}
