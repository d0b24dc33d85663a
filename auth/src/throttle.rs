//! Login throttling, in `auth.login_throttles` so that every replica sees the same counts.
//!
//! Brute force is slowed without letting an attacker lock the owner out (issue 18, item 7). One
//! attempt counts against up to three keys:
//! - **pair** (username, client address): the first `failures_before_delay` consecutive failures
//!   are free, then each failure makes the pair wait twice as long as the last (1 s, 2 s, 4 s,
//!   ...) up to `max_delay`. Only that pair waits: the owner's right password from another
//!   address goes through. A successful login from the pair clears it, and marks the address as
//!   one the user logs in from.
//! - **address** (across usernames: password spraying): at most `failures_per_address` failures
//!   per fixed `window`; then the address waits for the window's end.
//! - **account** (username across addresses): at `failures_per_account` consecutive failures
//!   (at most 100, NIST SP 800-63B; any successful login resets the count) the ceiling holds:
//!   addresses without a successful login as this user in the last [`KNOWN_ADDRESS_DAYS`] days
//!   get one attempt per `account_lock`, while the user's own addresses are not held back.
//!
//! Addresses are IPv4 addresses and IPv6 /64 prefixes (one subscriber usually holds a whole /64).
//! Usernames are counted in their canonical form (`accounts::Username`), known or not, so
//! throttling reveals nothing about existence and `BOB` shares the count of `bob`; a string that
//! cannot be a username counts against its address only.
//!
//! An attempt counts as a failure from the moment it is admitted until its password verifies:
//! admission checks and counts in one transaction, so parallel attempts cannot slip past a
//! limit. (So an attempt that fails for another reason, such as busy hashing, counts too.)
//! Blocked attempts change nothing, so hammering a blocked key never extends its wait.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{Error, accounts::Username, config::ThrottleSettings};

/// A pair that logged in successfully within this many days counts as one of the user's
/// addresses; rows untouched for this long are deleted.
pub const KNOWN_ADDRESS_DAYS: u32 = 30;
/// A pair's failures are forgotten this long after its last one.
const PAIR_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// How often old rows are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Throttling for logins.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
}

/// The keys one login attempt counts against.
#[derive(Debug, Clone)]
pub struct AttemptKeys {
    /// Sorted, so that concurrent transactions lock rows in the same order.
    keys: Vec<String>,
}

impl AttemptKeys {
    /// The keys for a login of `username` from `address`. Only a well-formed username can exist;
    /// anything else (`None`) is refused, but counted against its address only, so that
    /// client-chosen junk is never stored as a key. Usernames count in their canonical form, so
    /// `Bob` and `bob` share one count.
    pub fn new(username: Option<&Username>, address: Option<IpAddr>) -> Self {
        let address = address.map(address_key);
        let mut keys: Vec<String> = [
            address.as_ref().map(|address| format!("addr:{address}")),
            username
                .as_ref()
                .map(|name| format!("user:{}", name.canonical())),
            address
                .as_ref()
                .zip(username)
                .map(|(address, name)| format!("pair:{address} {}", name.canonical())),
        ]
        .into_iter()
        .flatten()
        .collect();
        keys.sort();
        Self { keys }
    }
}

impl LoginThrottle {
    /// Throttling with these limits; deletes old rows in the background until `stop`.
    pub fn start(settings: ThrottleSettings, db: PgPool, stop: CancellationToken) -> Self {
        tokio::spawn(prune_periodically(db, stop));
        Self { settings }
    }

    /// Admits the attempt, counting it as a failure until [`Self::record_success`], or refuses it
    /// before any password work is done.
    ///
    /// # Errors
    /// [`Error::LoginThrottled`] with the time to wait.
    pub async fn admit(&self, db: &PgPool, keys: &AttemptKeys) -> Result<(), Error> {
        if keys.keys.is_empty() {
            return Ok(());
        }
        let mut tx = db.begin().await?;
        // Rows must exist to be locked: two first attempts must not both count from zero.
        sqlx::query(
            "insert into auth.login_throttles (throttle_key, failures, window_started_at, updated_at)
             select key, 0, now(), now() from unnest($1::text[]) as key
             on conflict (throttle_key) do nothing",
        )
        .bind(&keys.keys)
        .execute(&mut *tx)
        .await?;
        let mut counters: Vec<Counter> = sqlx::query_as(
            "select throttle_key, failures, window_started_at, blocked_until, last_success_at,
                    updated_at, now() as now
             from auth.login_throttles where throttle_key = any($1)
             order by throttle_key for update",
        )
        .bind(&keys.keys)
        .fetch_all(&mut *tx)
        .await?;
        if let Err(retry_after) = count_attempt(&self.settings, &mut counters) {
            // Dropping the transaction rolls it back: a refused attempt changes nothing.
            return Err(Error::LoginThrottled { retry_after });
        }
        sqlx::query(
            "update auth.login_throttles as t
             set failures = u.failures, window_started_at = u.window_started_at,
                 blocked_until = u.blocked_until, updated_at = now()
             from unnest($1::text[], $2::int[], $3::timestamptz[], $4::timestamptz[])
                  as u(throttle_key, failures, window_started_at, blocked_until)
             where t.throttle_key = u.throttle_key",
        )
        .bind(
            counters
                .iter()
                .map(|c| c.throttle_key.clone())
                .collect::<Vec<_>>(),
        )
        .bind(counters.iter().map(|c| c.failures).collect::<Vec<_>>())
        .bind(
            counters
                .iter()
                .map(|c| c.window_started_at)
                .collect::<Vec<_>>(),
        )
        .bind(counters.iter().map(|c| c.blocked_until).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Undoes the admitted attempt's count after its password verified: clears the pair and the
    /// account, takes the attempt off the address's count, and remembers the address as one the
    /// user logs in from.
    pub async fn record_success(&self, db: &PgPool, keys: &AttemptKeys) -> Result<(), Error> {
        sqlx::query(
            "update auth.login_throttles set
               failures = case when throttle_key like 'addr:%' then greatest(failures - 1, 0)
                          else 0 end,
               blocked_until = null,
               last_success_at = case when throttle_key like 'pair:%' then now()
                                 else last_success_at end,
               updated_at = now()
             where throttle_key = any($1)",
        )
        .bind(&keys.keys)
        .execute(db)
        .await?;
        Ok(())
    }
}

/// One row of `auth.login_throttles`, with the database's clock.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Counter {
    throttle_key: String,
    failures: i32,
    window_started_at: OffsetDateTime,
    blocked_until: Option<OffsetDateTime>,
    last_success_at: Option<OffsetDateTime>,
    updated_at: OffsetDateTime,
    now: OffsetDateTime,
}

/// Checks the attempt against every counter and, when none refuses it, counts it as a failure.
/// On refusal, returns the longest wait among the refusing counters and changes nothing.
fn count_attempt(settings: &ThrottleSettings, counters: &mut [Counter]) -> Result<(), Duration> {
    let known_address = counters.iter().any(|counter| {
        counter.throttle_key.starts_with("pair:")
            && counter.last_success_at.is_some_and(|at| {
                at + Duration::from_secs(u64::from(KNOWN_ADDRESS_DAYS) * 24 * 3600) > counter.now
            })
    });
    let failures_before_delay = i64::from(settings.failures_before_delay);
    let mut wait: Option<Duration> = None;
    let mut refuse_until = |until: OffsetDateTime, now: OffsetDateTime| {
        let left = Duration::try_from(until - now).unwrap_or_default();
        wait = Some(wait.map_or(left, |wait| wait.max(left)));
    };
    for counter in counters.iter_mut() {
        let now = counter.now;
        if counter.throttle_key.starts_with("addr:") {
            if counter.window_started_at + settings.window <= now {
                counter.failures = 0;
                counter.window_started_at = now;
            }
            if counter.failures >= limit(settings.failures_per_address) {
                refuse_until(counter.window_started_at + settings.window, now);
            }
        } else if counter.throttle_key.starts_with("pair:") {
            if counter.failures > 0 && counter.updated_at + PAIR_MEMORY <= now {
                counter.failures = 0;
                counter.blocked_until = None;
            }
            if let Some(until) = counter.blocked_until.filter(|until| *until > now) {
                refuse_until(until, now);
            }
        } else if !known_address
            && counter.failures >= limit(settings.failures_per_account)
            && let Some(until) = counter.blocked_until.filter(|until| *until > now)
        {
            refuse_until(until, now);
        }
    }
    if let Some(wait) = wait {
        // Whole milliseconds, rounded up, so a client that waits exactly this long gets in.
        return Err(Duration::from_millis(
            u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX),
        ));
    }
    for counter in counters.iter_mut() {
        let now = counter.now;
        counter.failures = counter.failures.saturating_add(1);
        if counter.throttle_key.starts_with("pair:") {
            let beyond = i64::from(counter.failures) - failures_before_delay;
            if beyond > 0 {
                counter.blocked_until = Some(now + pair_delay(settings, beyond));
            }
        } else if counter.throttle_key.starts_with("user:")
            && counter.failures >= limit(settings.failures_per_account)
        {
            counter.blocked_until = Some(now + settings.account_lock);
        }
    }
    Ok(())
}

/// The wait after the `beyond`-th failure past the free ones: 1 s, 2 s, 4 s, ... up to the
/// maximum.
fn pair_delay(settings: &ThrottleSettings, beyond: i64) -> Duration {
    let doublings = u32::try_from(beyond - 1).unwrap_or(u32::MAX);
    let seconds = 1_u64.checked_shl(doublings).unwrap_or(u64::MAX);
    Duration::from_secs(seconds).min(settings.max_delay)
}

fn limit(setting: u32) -> i32 {
    i32::try_from(setting).unwrap_or(i32::MAX)
}

/// The address part of the keys: an IPv4 address, or an IPv6 address's /64 prefix.
fn address_key(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64));
            format!("{prefix}/64")
        }
    }
}

async fn prune_periodically(db: PgPool, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let pruned = sqlx::query(
            "delete from auth.login_throttles where updated_at < now() - make_interval(days => $1)",
        )
        .bind(i32::try_from(KNOWN_ADDRESS_DAYS).unwrap_or(i32::MAX))
        .execute(&db)
        .await;
        if let Err(error) = pruned {
            tracing::warn!(%error, "cannot delete old login throttling rows");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ThrottleSettings {
        crate::Config::for_tests().login_throttle
    }

    #[test]
    fn delays_double_from_one_second_up_to_the_maximum() {
        let delays: Vec<u64> = (1..=12)
            .map(|beyond| pair_delay(&settings(), beyond).as_secs())
            .collect();

        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]);
        assert_eq!(pair_delay(&settings(), i64::MAX).as_secs(), 900);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();

        assert_eq!(address_key(a), "2001:db8:1:2::/64");
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key(mapped), "192.0.2.7");
    }

    #[test]
    fn usernames_count_in_canonical_form_and_junk_against_its_address_only() {
        let address = Some("192.0.2.7".parse().unwrap());
        let keys = |name: &str| AttemptKeys::new(Username::parse(name).ok().as_ref(), address).keys;

        assert_eq!(keys(&"x".repeat(10_000)), ["addr:192.0.2.7"]);
        assert_eq!(
            keys("alice"),
            ["addr:192.0.2.7", "pair:192.0.2.7 alice", "user:alice"]
        );
        assert_eq!(keys("ALICE"), keys("alice"));
        assert_eq!(keys("\u{ff41}lice"), keys("alice"), "full-width a");
    }
}
