//! Locks that outlive a panic. A task that panics while holding a lock poisons it; every service
//! keeps serving with the data as the panicking task left it, rather than turning one panic into
//! a panic in every later caller. The data these locks guard (caches, queues, connection lists)
//! stays usable after a half-done update.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, ignoring poisoning.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `lock`, ignoring poisoning.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `lock`, ignoring poisoning.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_still_hands_out_its_data() {
        let mutex = Mutex::new(1);
        let rw = RwLock::new(2);

        let _ = std::panic::catch_unwind(|| {
            let _mutex = mutex.lock().unwrap();
            let _rw = rw.write().unwrap();
            panic!("poison both");
        });

        assert!(mutex.is_poisoned() && rw.is_poisoned());
        assert_eq!(*lock(&mutex), 1);
        assert_eq!(*read(&rw), 2);
        *write(&rw) = 3;
        assert_eq!(*read(&rw), 3);
    }
}
