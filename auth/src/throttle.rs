//! Failed-login throttling per account and per client address, in `auth.login_throttles` so that
//! every replica sees the same counts.
//!
//! Each key counts failures in a fixed window. Reaching the key's limit blocks it until the window
//! length has passed since that failure; a block never lasts longer, so an attacker can slow a
//! victim down but never lock them out for good. A successful login clears the account's count.

use std::{net::IpAddr, time::Duration};

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{Error, config::ThrottleSettings};

/// Throttling for logins.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
}

/// The keys one login attempt counts against.
#[derive(Debug, Clone)]
pub struct AttemptKeys {
    /// The username as typed (known or not, so that throttling reveals nothing about existence).
    account: String,
    /// The client address, when known.
    address: Option<String>,
}

/// Whether the account had failures counted when its login attempt was checked.
#[derive(Debug, Clone, Copy)]
pub struct AccountFailures(bool);

impl AttemptKeys {
    /// The keys for a login of `username` from `address`.
    pub fn new(username: &str, address: Option<IpAddr>) -> Self {
        Self {
            account: format!("user:{username}"),
            address: address.map(|ip| format!("addr:{ip}")),
        }
    }

    fn all(&self) -> Vec<String> {
        std::iter::once(self.account.clone())
            .chain(self.address.clone())
            .collect()
    }
}

impl LoginThrottle {
    /// Throttling with these limits.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self { settings }
    }

    /// Fails when either key is blocked, before any password work is done. Otherwise tells whether
    /// the account has failures counted, which a successful login then clears.
    ///
    /// # Errors
    /// [`Error::LoginThrottled`] with the time left.
    pub async fn check(&self, db: &PgPool, keys: &AttemptKeys) -> Result<AccountFailures, Error> {
        let (blocked_until, account_failures): (Option<OffsetDateTime>, bool) = sqlx::query_as(
            "select max(blocked_until) filter (where blocked_until > now()),
                    coalesce(bool_or(throttle_key = $2), false)
             from auth.login_throttles where throttle_key = any($1)",
        )
        .bind(keys.all())
        .bind(&keys.account)
        .fetch_one(db)
        .await?;
        match blocked_until {
            None => Ok(AccountFailures(account_failures)),
            Some(until) => {
                let left = (until - OffsetDateTime::now_utc()).max(time::Duration::SECOND);
                Err(Error::LoginThrottled {
                    retry_after: Duration::from_secs(left.whole_seconds().unsigned_abs()),
                })
            }
        }
    }

    /// Counts a failed attempt against both keys, blocking a key that reaches its limit.
    pub async fn record_failure(&self, db: &PgPool, keys: &AttemptKeys) -> Result<(), Error> {
        self.count(db, &keys.account, self.settings.failures_per_account)
            .await?;
        if let Some(address) = &keys.address {
            self.count(db, address, self.settings.failures_per_address)
                .await?;
        }
        Ok(())
    }

    /// Clears the account's failures after a successful login (the address keeps its count).
    pub async fn record_success(
        &self,
        db: &PgPool,
        keys: &AttemptKeys,
        failures: AccountFailures,
    ) -> Result<(), Error> {
        if !failures.0 {
            // Most logins: nothing to clear, so no round trip.
            return Ok(());
        }
        sqlx::query("delete from auth.login_throttles where throttle_key = $1")
            .bind(&keys.account)
            .execute(db)
            .await?;
        Ok(())
    }

    async fn count(&self, db: &PgPool, key: &str, limit: u32) -> Result<(), Error> {
        // One upsert: a window that has passed starts over at 1; reaching the limit blocks the
        // key for one window from now.
        sqlx::query(
            "insert into auth.login_throttles as t
               (throttle_key, failures, window_started_at, blocked_until, updated_at)
             values ($1, 1, now(),
               case when 1 >= $2 then now() + make_interval(secs => $3) end, now())
             on conflict (throttle_key) do update set
               failures = case when t.window_started_at + make_interval(secs => $3) <= now()
                          then 1 else t.failures + 1 end,
               window_started_at = case when t.window_started_at + make_interval(secs => $3) <= now()
                          then now() else t.window_started_at end,
               blocked_until = case
                   when (case when t.window_started_at + make_interval(secs => $3) <= now()
                         then 1 else t.failures + 1 end) >= $2
                   then now() + make_interval(secs => $3)
                   else t.blocked_until end,
               updated_at = now()",
        )
        .bind(key)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(self.settings.window.as_secs_f64())
        .execute(db)
        .await?;
        Ok(())
    }
}
