//! A cache of another service's answers that is only trusted while that service's change events
//! are followed (`watch.rs`): group memberships (`groups.rs`) and users' devices (`devices.rs`).
//!
//! Each event drops the entries it concerns; losing the event stream empties the cache and
//! bypasses it until the stream is back. So an answer is never staler than the event stream's
//! delay (milliseconds: events are published right after the change commits), and never stale
//! across a missed event. A link that goes silent without a reset looks followed until the
//! channel's keepalive ends the stream (`watch.rs`: 6 s at most), the window the fault suite
//! bounds (`FAULTS.md`, fault 5). An answer fetched while an event arrived is not stored (a generation
//! counter), since it may predate the event.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Mutex, MutexGuard},
};

use crate::metrics::Lookups;

/// Keys cached at most; a full cache is emptied (a bound on memory, not an eviction policy:
/// refilling costs one call per active key).
const MAX_ENTRIES: usize = 10_000;

/// Answers by key, trusted only while events are followed.
pub struct FollowedCache<K, V> {
    state: Mutex<State<K, V>>,
    /// Hits, misses and lookups bypassed (events not followed), for the metrics.
    lookups: Lookups,
}

struct State<K, V> {
    /// Whether events are being followed; the cache is empty and bypassed if not.
    following: bool,
    /// Bumped by every event and every change of `following`.
    generation: u64,
    entries: HashMap<K, V>,
}

impl<K, V> Default for FollowedCache<K, V> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                following: false,
                generation: 0,
                entries: HashMap::new(),
            }),
            lookups: Lookups::default(),
        }
    }
}

impl<K: Eq + Hash + Copy, V: Clone> FollowedCache<K, V> {
    /// The cached answer for `key`, if any (and if trusted).
    pub fn get(&self, key: K) -> Option<V> {
        let state = self.lock();
        if state.following {
            let cached = state.entries.get(&key).cloned();
            self.lookups.looked_up(cached.is_some());
            cached
        } else {
            self.lookups.bypassed();
            None
        }
    }

    /// Its lookup counters (shared: register them once).
    pub fn lookups(&self) -> Lookups {
        self.lookups.clone()
    }

    /// The generation to pass to [`FollowedCache::store`] with answers fetched after this call.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps answers fetched since `generation`, unless an event (or a change of following)
    /// came in between.
    pub fn store(&self, generation: u64, answers: impl IntoIterator<Item = (K, V)>) {
        let mut state = self.lock();
        if !state.following || state.generation != generation {
            return;
        }
        for (key, value) in answers {
            if state.entries.len() >= MAX_ENTRIES {
                state.entries.clear();
            }
            state.entries.insert(key, value);
        }
    }

    /// Drops what is cached for `key` (an event concerns it).
    pub fn invalidate(&self, key: K) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.remove(&key);
    }

    /// Drops every answer (an event concerns keys it does not name, e.g. a group's deletion
    /// for the cache of each user's groups).
    pub fn invalidate_all(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.clear();
    }

    /// Starts (events are followed from now on) or stops (events may be missed) trusting the
    /// cache; either way it starts empty.
    pub fn set_following(&self, following: bool) {
        let mut state = self.lock();
        state.generation += 1;
        state.following = following;
        state.entries.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State<K, V>> {
        common::sync::lock(&self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_only_while_events_are_followed() {
        let cache = FollowedCache::<u32, &str>::default();

        cache.store(cache.generation(), [(1, "a")]);
        assert_eq!(cache.get(1), None, "not following: nothing is kept");

        cache.set_following(true);
        cache.store(cache.generation(), [(1, "a")]);
        assert_eq!(cache.get(1), Some("a"));

        cache.set_following(false);
        assert_eq!(cache.get(1), None, "events may be missed from now on");
    }

    #[test]
    fn an_event_drops_its_key_and_an_answer_fetched_across_it_is_not_stored() {
        let cache = FollowedCache::<u32, &str>::default();
        cache.set_following(true);
        cache.store(cache.generation(), [(1, "a"), (2, "b")]);

        let before_event = cache.generation();
        cache.invalidate(1);
        cache.store(before_event, [(1, "stale")]);

        assert_eq!(cache.get(1), None);
        assert_eq!(cache.get(2), Some("b"));
    }

    #[test]
    fn invalidating_all_drops_every_answer_and_refuses_answers_fetched_across_it() {
        let cache = FollowedCache::<u32, &str>::default();
        cache.set_following(true);
        cache.store(cache.generation(), [(1, "a"), (2, "b")]);

        let before = cache.generation();
        cache.invalidate_all();
        cache.store(before, [(1, "stale")]);

        assert_eq!(cache.get(1), None);
        assert_eq!(cache.get(2), None);
        cache.store(cache.generation(), [(2, "fresh")]);
        assert_eq!(cache.get(2), Some("fresh"));
    }
}
