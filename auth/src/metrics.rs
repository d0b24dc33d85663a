//! auth's own metrics (besides the gRPC and database pool metrics every service has,
//! `common::metrics`): logins and refreshes by outcome, argon2's queue wait and work.
//! `docs/metrics.md` lists them.

use common::outbox::FeedMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

use crate::{Error, sessions::Refreshed};

/// auth's metric families; clones share the same series.
#[derive(Clone, Debug)]
pub struct AuthMetrics {
    logins: Family<OutcomeLabels, Counter>,
    refreshes: Family<OutcomeLabels, Counter>,
    /// Argon2 timings, recorded by `Passwords`.
    pub passwords: PasswordTimings,
    /// The device-event feed's streams (`WatchDeviceChanges`, `WatchRevocations`).
    device_events: FeedMetrics,
}

/// How long password jobs wait for a hashing thread, and how long argon2 works on them.
#[derive(Clone, Debug)]
pub struct PasswordTimings {
    /// From a job's submission to a thread taking it.
    pub queue_wait: Histogram,
    /// Argon2's work on one job (hashing a new password or verifying one).
    pub work: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl Default for PasswordTimings {
    fn default() -> Self {
        // 100 µs to about 3.3 s: tests' cheap parameters to an overloaded production host.
        let buckets = || exponential_buckets(0.000_1, 2.0, 16);
        Self {
            queue_wait: Histogram::new(buckets()),
            work: Histogram::new(buckets()),
        }
    }
}

impl AuthMetrics {
    /// The families, with `passwords` (the timings `Passwords` records into) and what the
    /// device-event feed counts.
    pub fn new(passwords: PasswordTimings, device_events: FeedMetrics) -> Self {
        Self {
            logins: Family::default(),
            refreshes: Family::default(),
            passwords,
            device_events,
        }
    }

    /// Adds the families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "auth_logins",
            "Login attempts answered, by outcome (ok, invalid_credentials, throttled, refused, error)",
            self.logins.clone(),
        );
        registry.register(
            "auth_refreshes",
            "Refresh-token exchanges, by outcome (ok, invalid, reused, error)",
            self.refreshes.clone(),
        );
        registry.register_with_unit(
            "auth_password_queue_wait",
            "Time password jobs waited for a hashing thread",
            Unit::Seconds,
            self.passwords.queue_wait.clone(),
        );
        registry.register_with_unit(
            "auth_password_hash",
            "Argon2 work per password hashed or verified",
            Unit::Seconds,
            self.passwords.work.clone(),
        );
        self.device_events.register(
            registry,
            "auth_device_events",
            "Device changes and revocations (WatchDeviceChanges, WatchRevocations)",
        );
    }

    /// Counts a `Login` answered with `code`: UNAUTHENTICATED is a wrong username or password,
    /// RESOURCE_EXHAUSTED the throttle, the other client errors (malformed request, unknown device
    /// to resume, too many devices) `refused`.
    pub fn login_answered(&self, code: Code) {
        let outcome = match code {
            Code::Ok => "ok",
            Code::Unauthenticated => "invalid_credentials",
            Code::ResourceExhausted => "throttled",
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => "refused",
            _ => "error",
        };
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a refresh-token exchange: rotated, reuse detected, refused or failed.
    pub fn refresh_answered(&self, refreshed: &Result<Refreshed, Error>) {
        let outcome = match refreshed {
            Ok(Refreshed::Rotated(..)) => "ok",
            Ok(Refreshed::Reused(_)) => "reused",
            Err(Error::RefreshTokenInvalid) => "invalid",
            Err(_) => "error",
        };
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}
