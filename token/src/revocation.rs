//! Revoked sessions and devices, so that a validator refuses their access tokens long before
//! they expire.
//!
//! Access tokens are not looked up anywhere: a signed token is good until `exp` (15 minutes at
//! most). Revocation (logout, logout everywhere, a revoked device, a reused refresh token)
//! therefore needs a list, and auth's `WatchRevocations` feeds it (`revocation_feed.rs`; auth
//! feeds its own from its outbox). An entry is kept until every token it could refuse has
//! expired anyway: the longest lifetime plus twice the leeway (a token may be accepted `leeway`
//! after an `exp` that may be `leeway` past `iat + max_lifetime`), plus [`CLOCK_MARGIN`] for
//! the clocks of auth, its database and this process, after the revocation. So the list holds
//! the last ~17 minutes of revocations, a few bytes each.
//!
//! **Fail closed, after a bound.** A list that has stopped hearing from auth may miss a
//! revocation. Each heartbeat of the feed says "everything committed until now has been sent";
//! when none arrived for `max_staleness`, every check answers
//! [`TokenError::RevocationsUnknown`] (UNAVAILABLE, which clients retry) until the feed is back
//! and has replayed what it missed from its cursor. So a revocation takes effect within about a
//! second while the feed is up, and within `max_staleness` whatever happens; the price is that an
//! auth outage longer than that stops authenticated calls everywhere (they would stop within
//! 15 minutes anyway, when tokens can no longer be refreshed).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::claims::{AccessClaims, Subject, unix_seconds};
use crate::error::TokenError;
use crate::validator::ValidationSettings;

/// The default [`Revocations`] `max_staleness`: how long a list is trusted without a heartbeat.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(10);

/// Added to how long entries are kept, for clock differences between auth (which sets `iat`),
/// its database (which sets `revoked_at`) and the validator.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(60);

/// What was revoked: one session, or a device with every session it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// A session (`sid`): logout, logout everywhere, refresh-token reuse.
    Session(Uuid),
    /// A device (`did`) and all its sessions.
    Device(Uuid),
}

/// One revocation, as auth reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// What was revoked.
    pub revoked: Revoked,
    /// When, in seconds since the Unix epoch.
    pub revoked_at: i64,
}

/// The revoked sessions and devices whose tokens may still be unexpired, and how fresh that
/// knowledge is. Shared by a validator and whoever feeds it.
pub struct Revocations {
    state: RwLock<State>,
    /// Bumped on every new revocation, for [`Revocations::ended`].
    changed: watch::Sender<u64>,
    max_staleness: Duration,
    /// How long after its revocation an entry is kept.
    retention: Duration,
    /// The task feeding this list, stopped when the list is dropped.
    feeder: Option<AbortHandle>,
}

#[derive(Default)]
struct State {
    /// Each revoked thing, and the Unix second after which it is forgotten.
    revoked: HashMap<Revoked, i64>,
    /// When the feed last said it had sent everything; `None` before the first time.
    caught_up_at: Option<Instant>,
}

impl Revocations {
    /// An empty list for tokens validated with `settings`, trusted for `max_staleness` after each
    /// heartbeat, and not before the first.
    pub fn new(settings: &ValidationSettings, max_staleness: Duration) -> Self {
        Self {
            state: RwLock::default(),
            changed: watch::channel(0).0,
            max_staleness,
            retention: settings.max_lifetime + settings.leeway * 2 + CLOCK_MARGIN,
            feeder: None,
        }
    }

    /// Like [`Revocations::new`], with the task that feeds the list, started with a weak
    /// reference to it; the task is aborted when the list is dropped.
    pub(crate) fn with_feeder<F>(
        settings: &ValidationSettings,
        max_staleness: Duration,
        feeder: impl FnOnce(std::sync::Weak<Self>) -> F,
    ) -> Arc<Self>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Arc::new_cyclic(|weak| {
            let task = tokio::spawn(feeder(weak.clone()));
            let mut list = Self::new(settings, max_staleness);
            list.feeder = Some(task.abort_handle());
            list
        })
    }

    /// Records a revocation, unless every token it could refuse has already expired.
    pub fn revoke(&self, revocation: Revocation) {
        let forget_after = revocation
            .revoked_at
            .saturating_add(seconds(self.retention));
        if forget_after < unix_seconds(SystemTime::now()) {
            return;
        }
        let new = self
            .write()
            .revoked
            .insert(revocation.revoked, forget_after)
            .is_none();
        if new {
            self.changed.send_modify(|generation| *generation += 1);
        }
    }

    /// The feed has sent every revocation committed until now: trust the list for
    /// `max_staleness` more. Also forgets the entries that are no longer needed.
    pub fn caught_up(&self) {
        let now = unix_seconds(SystemTime::now());
        let mut state = self.write();
        state.caught_up_at = Some(Instant::now());
        state.revoked.retain(|_, forget_after| *forget_after >= now);
    }

    /// How long after its revocation an entry is kept: the longest token lifetime, twice the
    /// leeway and [`CLOCK_MARGIN`]. A feed need not replay older revocations.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Whether the feed has caught up at least once (a validator that has never heard from it
    /// is not ready).
    pub fn has_caught_up(&self) -> bool {
        self.read().caught_up_at.is_some()
    }

    /// How many revocations are kept now.
    pub fn len(&self) -> usize {
        self.read().revoked.len()
    }

    /// Whether no revocation is kept now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses the token of `claims` if its session or device is revoked.
    ///
    /// # Errors
    /// [`TokenError::Revoked`]; [`TokenError::RevocationsUnknown`] when the list has not heard
    /// from its feed for `max_staleness` (or never).
    pub fn check(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        self.status(claims.subject()).map(drop)
    }

    /// Resolves with the reason when `subject`'s session or device is revoked or the list goes
    /// stale: for streams, which must end then although no new call is checked.
    pub fn ended(
        self: &Arc<Self>,
        subject: Subject,
    ) -> impl Future<Output = TokenError> + Send + use<> {
        let revocations = Arc::clone(self);
        // Subscribed before the first look, so that no revocation falls in between.
        let mut changed = self.changed.subscribe();
        async move {
            loop {
                let stale_at = match revocations.status(subject) {
                    Ok(stale_at) => stale_at,
                    Err(reason) => return reason,
                };
                tokio::select! {
                    _ = changed.changed() => {}
                    () = tokio::time::sleep_until(stale_at) => {}
                }
            }
        }
    }

    /// `Ok` with the instant the list goes stale unless refreshed, or why `subject` is refused.
    fn status(&self, subject: Subject) -> Result<Instant, TokenError> {
        let state = self.read();
        if state
            .revoked
            .contains_key(&Revoked::Session(subject.session_id))
            || state
                .revoked
                .contains_key(&Revoked::Device(subject.device_id))
        {
            return Err(TokenError::Revoked);
        }
        match state.caught_up_at {
            Some(at) if at.elapsed() <= self.max_staleness => Ok(at + self.max_staleness),
            _ => Err(TokenError::RevocationsUnknown),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Revocations {
    fn drop(&mut self) {
        if let Some(feeder) = &self.feeder {
            feeder.abort();
        }
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("Revocations")
            .field("revoked", &state.revoked.len())
            .field("caught_up_at", &state.caught_up_at)
            .field("max_staleness", &self.max_staleness)
            .finish()
    }
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALENESS: Duration = Duration::from_secs(10);

    fn subject() -> Subject {
        Subject {
            user_id: Uuid::new_v4(),
            device_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
        }
    }

    fn claims_of(subject: Subject) -> AccessClaims {
        AccessClaims::new(
            "issuer",
            "audience",
            subject,
            SystemTime::now(),
            Duration::from_secs(900),
        )
    }

    fn fresh_list() -> Revocations {
        let list = Revocations::new(&ValidationSettings::new("issuer", "audience"), STALENESS);
        list.caught_up();
        list
    }

    fn now() -> i64 {
        unix_seconds(SystemTime::now())
    }

    #[test]
    fn a_revoked_session_or_device_refuses_its_tokens_only() {
        let list = fresh_list();
        let (by_session, by_device, other) = (subject(), subject(), subject());

        list.revoke(Revocation {
            revoked: Revoked::Session(by_session.session_id),
            revoked_at: now(),
        });
        list.revoke(Revocation {
            revoked: Revoked::Device(by_device.device_id),
            revoked_at: now(),
        });

        assert_eq!(list.check(&claims_of(by_session)), Err(TokenError::Revoked));
        assert_eq!(list.check(&claims_of(by_device)), Err(TokenError::Revoked));
        let same_device_other_session = Subject {
            session_id: Uuid::new_v4(),
            ..by_session
        };
        assert_eq!(list.check(&claims_of(same_device_other_session)), Ok(()));
        assert_eq!(list.check(&claims_of(other)), Ok(()));
    }

    #[test]
    fn a_revocation_is_forgotten_once_every_token_it_could_refuse_has_expired() {
        let list = fresh_list();
        let (recent, old) = (subject(), subject());
        let retention = 900 + 2 * 30 + 60;

        list.revoke(Revocation {
            revoked: Revoked::Session(old.session_id),
            revoked_at: now() - retention - 1,
        });
        list.revoke(Revocation {
            revoked: Revoked::Session(recent.session_id),
            revoked_at: now() - retention + 5,
        });

        assert_eq!(list.len(), 1, "the old one is not even recorded");
        assert_eq!(list.check(&claims_of(recent)), Err(TokenError::Revoked));
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_never_caught_up_or_silent_for_too_long_refuses_with_unknown() {
        let list = Revocations::new(&ValidationSettings::new("issuer", "audience"), STALENESS);
        let claims = claims_of(subject());
        assert_eq!(list.check(&claims), Err(TokenError::RevocationsUnknown));

        list.caught_up();
        tokio::time::advance(STALENESS).await;
        assert_eq!(list.check(&claims), Ok(()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(list.check(&claims), Err(TokenError::RevocationsUnknown));

        list.caught_up();
        assert_eq!(list.check(&claims), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn ended_resolves_on_the_subjects_revocation_or_when_the_list_goes_stale() {
        let list = Arc::new(fresh_list());
        let (watched, other) = (subject(), subject());
        let ended = tokio::spawn(list.ended(watched));

        list.revoke(Revocation {
            revoked: Revoked::Session(other.session_id),
            revoked_at: now(),
        });
        tokio::task::yield_now().await;
        assert!(!ended.is_finished(), "another session's revocation");
        list.revoke(Revocation {
            revoked: Revoked::Device(watched.device_id),
            revoked_at: now(),
        });
        assert_eq!(ended.await.unwrap(), TokenError::Revoked);

        let stale = tokio::spawn(list.ended(subject()));
        tokio::time::advance(STALENESS / 2).await;
        list.caught_up();
        tokio::time::advance(STALENESS / 2 + Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(!stale.is_finished(), "a heartbeat pushed the deadline back");
        tokio::time::advance(STALENESS).await;
        assert_eq!(stale.await.unwrap(), TokenError::RevocationsUnknown);
    }
}
