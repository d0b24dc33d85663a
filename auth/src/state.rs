//! What every RPC shares, built once in `run`.

use std::sync::Arc;

use common::{outbox::Feed, service_credential::ServiceCredential};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    Config, Error, devices::DeviceEvent, passwords::Passwords, sessions::Sessions,
    throttle::LoginThrottle, tokens::TokenIssuer,
};

/// The auth service's shared state.
pub struct State {
    pub db: PgPool,
    pub passwords: Passwords,
    pub throttle: LoginThrottle,
    pub sessions: Sessions,
    pub issuer: TokenIssuer,
    pub validator: token::Validator,
    pub max_devices: u32,
    /// `WatchDeviceChanges`: wake it after every device change commits.
    pub device_events: Arc<Feed<DeviceEvent>>,
    /// What `WatchDeviceChanges`, which acts for no user, requires instead of a token.
    pub service_credential: ServiceCredential,
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
        let device_events = Feed::start(db.clone(), config.device_events.clone(), streams_end);
        Ok(Self {
            db,
            passwords: Passwords::new(&config.passwords)?,
            throttle,
            sessions,
            validator: issuer.validator(),
            issuer,
            max_devices: config.max_devices_per_user,
            device_events,
            service_credential,
        })
    }
}
