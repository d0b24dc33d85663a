//! The reconnection backoff of a live stream ([`crate::Live`]): 200 ms doubling up to 10 s, reset
//! once a connection has worked, each delay jittered to between half and all of itself. When a
//! gateway restarts, every client it served loses its stream at the same instant; without jitter
//! they would all come back in the same millisecond, again and again at each doubling (a
//! reconnect storm). Public so that other clients of the API (and the fault suite's storm test,
//! which opens thousands of streams without a [`crate::Session`] each) reconnect the same way.

use std::time::Duration;

/// The first delay after a drop.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Delays between reconnection attempts: see the module docs.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// Starts at [`FIRST_BACKOFF`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection worked (the stream caught up): the next drop waits [`FIRST_BACKOFF`] again.
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    /// The delay this backoff is at, before jitter (what [`Backoff::next_delay`] will draw from).
    pub fn current(&self) -> Duration {
        self.next
    }

    /// The jittered delay to wait before the next attempt; doubles the backoff (up to
    /// [`MAX_BACKOFF`]) for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = with_jitter(self.next);
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }
}

/// Between half and all of `delay`, so that clients cut off together do not return together.
pub(crate) fn with_jitter(delay: Duration) -> Duration {
    use rand_core::RngCore;
    let half = delay / 2;
    let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_millis(rand_core::OsRng.next_u64() % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_delays_stay_between_half_and_all_of_the_backoff() {
        for _ in 0..100 {
            let delay = with_jitter(Duration::from_millis(800));

            assert!(delay >= Duration::from_millis(400) && delay < Duration::from_millis(800));
        }
        assert!(with_jitter(Duration::ZERO) <= Duration::from_millis(1));
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_restarts_after_a_reset() {
        let mut backoff = Backoff::new();
        let mut bases = Vec::new();
        for _ in 0..8 {
            bases.push(backoff.current());
            let delay = backoff.next_delay();
            let base = *bases.last().unwrap();
            assert!(delay >= base / 2 && delay < base, "{delay:?} for {base:?}");
        }
        let millis: Vec<u128> = bases.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);

        backoff.reset();

        assert_eq!(backoff.current(), FIRST_BACKOFF);
    }

    #[test]
    fn clients_cut_off_together_spread_their_first_reconnection() {
        // 1,000 clients dropped at the same instant: their first attempts spread over the
        // whole jitter window (100-200 ms) instead of landing in one millisecond.
        let mut delays: Vec<u128> = (0..1000)
            .map(|_| Backoff::new().next_delay().as_millis())
            .collect();
        delays.sort_unstable();
        delays.dedup();

        assert!(delays.len() >= 80, "only {} distinct delays", delays.len());
        assert!(delays.first().is_some_and(|first| *first >= 100));
        assert!(delays.last().is_some_and(|last| *last < 200));
    }
}
