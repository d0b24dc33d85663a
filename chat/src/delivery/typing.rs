//! Typing indicators: ephemeral (never stored), published on the bus, rate limited per device
//! and conversation on each replica (a device that spreads its calls over replicas gets the
//! limit once per replica).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    Error,
    ids::{ConversationId, DeviceId},
};

/// Entries kept before old ones are swept.
const SWEEP_AT: usize = 100_000;

/// At most one indicator per (device, conversation) per interval.
pub struct TypingLimiter {
    interval: Duration,
    last: Mutex<HashMap<(DeviceId, ConversationId), Instant>>,
}

impl TypingLimiter {
    /// A limiter allowing one indicator per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::default(),
        }
    }

    /// Counts an indicator at `now`.
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the time left when the last one was too recent.
    pub fn check(
        &self,
        device: DeviceId,
        conversation: ConversationId,
        now: Instant,
    ) -> Result<(), Error> {
        let mut last = common::sync::lock(&self.last);
        if let Some(previous) = last.get(&(device, conversation)) {
            let elapsed = now.saturating_duration_since(*previous);
            if elapsed < self.interval {
                return Err(Error::RateLimited {
                    retry_after: self.interval - elapsed,
                });
            }
        }
        if last.len() >= SWEEP_AT {
            let interval = self.interval;
            last.retain(|_, at| now.saturating_duration_since(*at) < interval);
        }
        last.insert((device, conversation), now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_second_indicator_within_the_interval_is_rate_limited() {
        let limiter = TypingLimiter::new(Duration::from_secs(2));
        let device = DeviceId(Uuid::now_v7());
        let conversation = ConversationId(Uuid::now_v7());
        let start = Instant::now();

        limiter.check(device, conversation, start).unwrap();
        let second = limiter.check(device, conversation, start + Duration::from_millis(500));
        let later = limiter.check(device, conversation, start + Duration::from_secs(2));

        assert!(matches!(
            second,
            Err(Error::RateLimited { retry_after }) if retry_after == Duration::from_millis(1500)
        ));
        assert!(later.is_ok());
    }
}
