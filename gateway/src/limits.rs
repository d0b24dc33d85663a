//! Rate limits the gateway enforces before calling an upstream: logins (and registrations and
//! refreshes) per client address, message sends and key forwarding (ForwardKeys) per user, and
//! calls to the other public methods
//! (those that need no token) per client address. Exceeding one answers RESOURCE_EXHAUSTED with a
//! `google.rpc.RetryInfo` saying when to retry.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::config::Limits;

/// A user's ForwardKeys burst, as a multiple of the rate: a new device's catch-up sends one call
/// per conversation (and per 500 keys) at once, and `chat history` and the page do it again only
/// for what arrived since.
const FORWARD_KEYS_BURST_FACTOR: NonZeroU32 = NonZeroU32::new(20).expect("20 > 0");

/// The gateway's rate limiters. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    logins: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    sends: Arc<DefaultKeyedRateLimiter<Uuid>>,
    forwarded_keys: Arc<DefaultKeyedRateLimiter<Uuid>>,
    public: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimits {
    /// Limiters with the configured rates (0 is treated as 1).
    pub fn new(limits: &Limits) -> Self {
        let per_minute = NonZeroU32::new(limits.login_rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let per_second = NonZeroU32::new(limits.send_rate_per_second).unwrap_or(NonZeroU32::MIN);
        let twice = NonZeroU32::new(2).expect("2 > 0");
        let send_burst = per_second.saturating_mul(twice);
        let forward_per_second =
            NonZeroU32::new(limits.forward_keys_rate_per_second).unwrap_or(NonZeroU32::MIN);
        let forward_burst = forward_per_second.saturating_mul(FORWARD_KEYS_BURST_FACTOR);
        let public_per_second =
            NonZeroU32::new(limits.public_rate_per_second).unwrap_or(NonZeroU32::MIN);
        Self {
            public: Arc::new(RateLimiter::keyed(
                Quota::per_second(public_per_second)
                    .allow_burst(public_per_second.saturating_mul(twice)),
            )),
            logins: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            sends: Arc::new(RateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(send_burst),
            )),
            forwarded_keys: Arc::new(RateLimiter::keyed(
                Quota::per_second(forward_per_second).allow_burst(forward_burst),
            )),
        }
    }

    /// Counts a login-like call from `address`.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED with RetryInfo when over the limit.
    pub fn check_login(&self, address: IpAddr) -> Result<(), Status> {
        self.logins.check_key(&address).map_err(|not_until| {
            exhausted(
                "too many logins from this address",
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// Counts a message send by `user`.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED with RetryInfo when over the limit.
    pub fn check_send(&self, user: Uuid) -> Result<(), Status> {
        self.sends.check_key(&user).map_err(|not_until| {
            exhausted(
                "sending too fast",
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// Counts a ForwardKeys call by `user`.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED with RetryInfo when over the limit.
    pub fn check_forward_keys(&self, user: Uuid) -> Result<(), Status> {
        self.forwarded_keys.check_key(&user).map_err(|not_until| {
            exhausted(
                "forwarding keys too fast",
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// Counts a call from `address` to a public method with no limit of its own.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED with RetryInfo when over the limit.
    pub fn check_public(&self, address: IpAddr) -> Result<(), Status> {
        self.public.check_key(&address).map_err(|not_until| {
            exhausted(
                "too many calls without a token from this address",
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// Forgets keys whose limits have fully recovered, so memory stays bounded by active clients.
    pub fn forget_idle_keys(&self) {
        self.logins.retain_recent();
        self.sends.retain_recent();
        self.forwarded_keys.retain_recent();
        self.public.retain_recent();
    }
}

fn exhausted(message: &str, retry_after: Duration) -> Status {
    let mut details = ErrorDetails::with_error_info("RATE_LIMITED", "gateway", []);
    details.set_retry_info(Some(retry_after.max(Duration::from_millis(1))));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}
